"""The deterministic "model" behind every fake: what to answer, whatever the wire format.

Each fake turns its provider's request into :func:`plan_reply`'s few inputs
(the last user text, images, tools, a tool result, JSON mode) and renders the
:class:`Reply` in its own protocol, so every provider answers alike and a test
can compare them.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import orjson

# One "token" is a word plus its trailing whitespace; the `\s+` branch only catches leading
# whitespace, so "".join(findall(text)) == text always holds.
WORD_RE = re.compile(r"\S+\s*|\s+")


@dataclass
class Reply:
    """What the answer says: text, or one tool call with JSON ``arguments``."""

    content: str | None
    tool_name: str | None = None
    arguments: str | None = None
    finish_reason: str = "stop"  # "stop", "length" or "tool_calls" (OpenAI's words)

    @property
    def output(self) -> str:
        return self.content if self.content is not None else self.arguments or ""

    @property
    def completion_tokens(self) -> int:
        return max(1 if self.tool_name else 0, len(WORD_RE.findall(self.output)))


class ReplyError(ValueError):
    """The request cannot be answered (e.g. ``tool_choice`` names an unknown function)."""


def plan_reply(
    *,
    prompt: str,
    images: int = 0,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | None = None,
    tool_result: str | None = None,
    json_mode: bool = False,
    schema: dict[str, Any] | None = None,
    max_tokens: int | None = None,
) -> Reply:
    """Decide the answer.

    ``tools`` are ``{"name", "parameters"}`` dicts; ``tool_choice`` is ``None``/``"auto"``,
    ``"none"``, ``"required"`` or a function name; ``tool_result`` is the text of a tool
    result when the conversation ends with one. With tools available and no tool result, the
    answer is a call to the chosen (or first) tool with arguments built from its schema.
    """
    if tools and tool_result is None and tool_choice != "none":
        function = tools[0]
        if tool_choice not in (None, "auto", "required", "any"):
            named = [t for t in tools if t.get("name") == tool_choice]
            if not named:
                raise ReplyError(f"no function named {tool_choice!r} was specified")
            function = named[0]
        params = function.get("parameters") or {"type": "object", "properties": {}}
        args = example(params, params)
        return Reply(None, str(function.get("name", "")), orjson.dumps(args if isinstance(args, dict) else {}).decode(), "tool_calls")
    if tool_result is not None:
        text = "Tool result: " + tool_result[:60]
    else:
        text = f"Fake reply to: {prompt[:60]}"
        if images:
            text += f" ({images} image{'s' if images > 1 else ''})"
    if schema is not None:
        text = orjson.dumps(example(schema, schema)).decode()
    elif json_mode:
        text = orjson.dumps({"reply": text}).decode()
    words = WORD_RE.findall(text)
    if max_tokens is not None and len(words) > max_tokens:
        return Reply("".join(words[:max_tokens]).rstrip(), finish_reason="length")
    return Reply(text)


def prompt_tokens(texts: list[str]) -> int:
    """Roughly 4 characters per token over all prompt text, like tiktoken on English."""
    return max(1, sum(len(t) for t in texts) // 4)


def call_id(seed: str, prefix: str = "call_") -> str:
    """A reproducible tool-call id."""
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:24]


def example(schema: Any, root: Any, depth: int = 0) -> Any:
    """Build a minimal value that validates against a simple JSON schema."""
    if depth > 10 or not isinstance(schema, dict):
        return None  # recursive or unusable schema: stop rather than loop forever
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return example(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # Prefer a non-null branch so Optional[...] fields still get a real value.
            real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example((real or options)[0], root, depth + 1)
    type_ = schema.get("type")
    if isinstance(type_, list):
        type_ = next((t for t in type_ if t != "null"), "null")
    if type_ is None:
        type_ = "object" if "properties" in schema else "array" if "items" in schema else None
    if type_ == "string":
        return "text"
    if type_ in ("number", "integer"):
        return 1
    if type_ == "boolean":
        return True
    if type_ == "array":
        count = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
        return [example(schema.get("items"), root, depth + 1) for _ in range(count)]
    if type_ == "object":
        props = schema.get("properties")
        return {k: example(v, root, depth + 1) for k, v in props.items()} if isinstance(props, dict) else {}
    return None


def split(text: str, parts: int) -> list[str]:
    """Split ``text`` into about ``parts`` pieces whose concatenation is exactly ``text``."""
    units: list[str] = WORD_RE.findall(text)
    if len(units) <= 1 and parts > 1:
        units = list(text)  # no spaces (e.g. tool arguments): split by characters instead
    if not units:
        return []
    k = max(1, min(parts, len(units)))
    size, extra = divmod(len(units), k)
    pieces: list[str] = []
    start = 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        pieces.append("".join(units[start:end]))
        start = end
    return pieces


def embed(text: str, dims: int) -> list[float]:
    """A deterministic unit vector derived from sha256 of ``text``."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range(math.ceil(dims / 8)))
    vec = [n / 2**31 - 1.0 for n in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    # Round-trip through float32 so the "float" and "base64" encodings carry identical values.
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vec))))
