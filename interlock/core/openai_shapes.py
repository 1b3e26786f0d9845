"""Building blocks for providers that translate another wire format into OpenAI's.

A translating provider reads the client's OpenAI request with the helpers at
the top (text of a message, images, tools, tool choice), and writes OpenAI
responses, stream chunks and embeddings with :func:`completion`,
:func:`usage_dict`, :class:`ChunkWriter` and :func:`embeddings_body`, so every
provider emits exactly the same shapes. Public through :mod:`interlock.provider_api`.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from interlock.core import jsonutil
from interlock.core.types import Chunk, UpstreamError, Usage

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S)
MAX_IMAGE_BYTES = 20 * 1024 * 1024

# --------------------------------------------------------------------------- #
# reading the client's request
# --------------------------------------------------------------------------- #


def text_of(content: Any) -> str:
    """All text of an OpenAI message ``content`` (a string, or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def system_text(messages: list[dict[str, Any]]) -> str | None:
    """The ``system`` and ``developer`` messages joined, or None when there are none."""
    parts = [text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    return "\n\n".join(p for p in parts if p) or None


@dataclass(frozen=True, slots=True)
class Image:
    """An image part: inline bytes (base64 text kept as sent) or a URL to fetch."""

    mime: str | None
    data: str | None  # base64, when inline
    url: str | None  # http(s) URL, when not inline


def parse_image(part: dict[str, Any]) -> Image:
    """An ``image_url`` part as inline base64 or a remote URL."""
    url = (part.get("image_url") or {}).get("url", "")
    m = _DATA_URL.match(url)
    if m:
        return Image(m.group("mime") or "image/png", m.group("data"), None)
    return Image(None, None, url)


async def fetch_image(session: aiohttp.ClientSession, image: Image) -> Image:
    """Inline a remote image (for APIs that only take base64); inline ones are returned as is."""
    if image.data is not None or not image.url:
        return image
    try:
        async with session.get(image.url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            if resp.status >= 400:
                raise UpstreamError(f"could not fetch image {image.url!r}: HTTP {resp.status}", kind="http", status=400)
            raw = await resp.content.read(MAX_IMAGE_BYTES + 1)
            if len(raw) > MAX_IMAGE_BYTES:
                raise UpstreamError(f"image {image.url!r} is larger than {MAX_IMAGE_BYTES} bytes", kind="http", status=400)
            mime = resp.headers.get("Content-Type", "image/png").split(";")[0].strip()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"could not fetch image {image.url!r} ({type(exc).__name__})", kind="http", status=400) from None
    return Image(mime, base64.b64encode(raw).decode(), None)


def image_bytes(image: Image) -> bytes:
    """Decoded bytes of an inline image (for APIs that take raw bytes, like Bedrock)."""
    try:
        return base64.b64decode(image.data or "", validate=False)
    except binascii.Error as exc:
        raise UpstreamError(f"invalid base64 image data ({exc})", kind="http", status=400) from None


@dataclass(frozen=True, slots=True)
class Tool:
    """A function tool the client offers: its name, description and JSON Schema parameters."""

    name: str
    description: str | None
    parameters: dict[str, Any]


def tools_of(body: dict[str, Any]) -> list[Tool]:
    """The request's function tools."""
    out = []
    for t in body.get("tools") or ():
        fn = t.get("function") or {}
        out.append(Tool(fn["name"], fn.get("description"), fn.get("parameters") or {"type": "object", "properties": {}}))
    return out


def tool_choice_of(body: dict[str, Any]) -> str | None:
    """``None`` (auto/absent), ``"none"``, ``"required"``, or the name of a forced function."""
    choice = body.get("tool_choice")
    if choice is None or choice == "auto":
        return None
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name")
    return str(choice)


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """The output limit: ``max_completion_tokens``, else the older ``max_tokens``."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) else None


def stop_of(body: dict[str, Any]) -> list[str] | None:
    """``stop`` as a list (OpenAI also takes a single string), or None when absent."""
    stop = body.get("stop")
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def json_schema_of(body: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """``(json_mode, schema)`` from ``response_format``."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        return True, None
    if fmt.get("type") == "json_schema":
        return True, (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    return False, None


def parse_arguments(arguments: str | None) -> Any:
    """A tool call's JSON arguments string as an object (``{}`` when empty)."""
    if not arguments:
        return {}
    try:
        return jsonutil.loads(arguments)
    except jsonutil.JSONDecodeError:
        raise UpstreamError("tool call arguments are not valid JSON", kind="http", status=400, code="invalid_value") from None


# --------------------------------------------------------------------------- #
# writing OpenAI responses
# --------------------------------------------------------------------------- #


def usage_dict(usage: Usage) -> dict[str, Any]:
    """An OpenAI ``usage`` object (prompt includes cached; completion includes reasoning)."""
    prompt_details: dict[str, Any] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


@dataclass(slots=True)
class ToolCall:
    """A tool call in an answer: id, function name and the arguments as JSON text."""

    id: str
    name: str
    arguments: str  # JSON text


def completion(
    *,
    response_id: str,
    model: str,
    content: str | None,
    tool_calls: Iterable[ToolCall] = (),
    finish_reason: str,
    usage: Usage | None,
    reasoning: str | None = None,
    native_finish_reason: str | None = None,
    created: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A non-stream ``chat.completion`` body with one choice."""
    calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in tool_calls]
    message: dict[str, Any] = {"role": "assistant", "content": content if (content or not calls) else None}
    if message["content"] is None and not calls:
        message["content"] = ""
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = reasoning
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    if native_finish_reason is not None:
        choice["native_finish_reason"] = native_finish_reason
    body: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if usage is not None:
        body["usage"] = usage_dict(usage)
    if extra:
        body.update(extra)
    return body


class ChunkWriter:
    """Makes the OpenAI ``chat.completion.chunk`` s of one translated stream.

    Call :meth:`role` first, then :meth:`text` / :meth:`reasoning` / :meth:`tool_call`
    / :meth:`tool_arguments` as the upstream produces them, then :meth:`finish`, then
    :meth:`usage`. Tool-call ``index`` is the position among tool calls (0, 1, ...),
    not the upstream's content-block index.
    """

    __slots__ = ("response_id", "model", "created")

    def __init__(self, response_id: str, model: str, created: int | None = None) -> None:
        self.response_id = response_id
        self.model = model
        self.created = created or int(time.time())

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return jsonutil.dumps(
            {
                "id": self.response_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
        )

    def role(self) -> Chunk:
        """The first chunk: the assistant role (it also carries the response id and model)."""
        return Chunk(self._chunk({"role": "assistant", "content": ""}), response_id=self.response_id, response_model=self.model)

    def text(self, text: str) -> Chunk:
        """A fragment of the answer's text."""
        return Chunk(self._chunk({"content": text}), content=bool(text))

    def reasoning(self, text: str) -> Chunk:
        """A fragment of the model's reasoning, as ``reasoning_content``."""
        return Chunk(self._chunk({"reasoning_content": text}), content=bool(text))

    def tool_call(self, index: int, call_id: str, name: str, arguments: str = "") -> Chunk:
        """The start of tool call number ``index`` (and its first arguments, if any)."""
        fn = {"name": name, "arguments": arguments}
        return Chunk(self._chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": fn}]}), content=True)

    def tool_arguments(self, index: int, fragment: str) -> Chunk:
        """More JSON text of tool call ``index``'s arguments."""
        return Chunk(self._chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}), content=bool(fragment))

    def finish(self, reason: str) -> Chunk:
        """The chunk with the OpenAI ``finish_reason``."""
        return Chunk(self._chunk({}, reason), finish_reason=reason)

    def usage(self, usage: Usage) -> Chunk:
        """The ``choices: []`` usage chunk; the router forwards it only if the client asked."""
        payload = jsonutil.dumps(
            {
                "id": self.response_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_dict(usage),
            }
        )
        return Chunk(payload, usage=usage, usage_only=True)


def embedding_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: "base64"``: the vector as little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embeddings_body(
    vectors: list[list[float]], model: str, tokens: int, encoding_format: Any
) -> dict[str, Any]:
    """An OpenAI embeddings ``list`` body; ``encoding_format`` is the client's (``"base64"`` packs)."""
    as_base64 = encoding_format == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": embedding_base64(v) if as_base64 else v}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def new_id(prefix: str = "chatcmpl-") -> str:
    """A fresh response id for providers whose API returns none."""
    return prefix + uuid.uuid4().hex[:24]
