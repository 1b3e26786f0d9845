"""An Anthropic Messages request read into the internal Chat Completions request.

:func:`validate` checks what the Messages API requires of every request (400s as
:class:`~interlock.core.errors.GatewayError`, written in Anthropic's error shape by
the door); :func:`translate` turns the body into a Chat Completions body and says
what a target that only takes that body would miss. The client's own body is kept
beside it (``ctx.native``) and sent untouched to targets that speak Messages, so
nothing here limits them. ``docs/messages.md`` is the table of every feature.

What a chat target cannot carry comes back in two lists, because the door does not
know the target when it reads the request:

* ``dropped``: hints and settings the answer's shape does not depend on (``top_k``,
  thinking blocks of earlier turns, ``service_tier``, tool ``cache_control``): left
  out, and named in ``x-interlock-dropped`` when a translated target answers;
* ``refused``: features whose results the client would wait for in vain (server
  tools such as web search, MCP servers, containers, search-result blocks): a
  translated attempt fails fast with a 400 naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interlock.core import jsonutil
from interlock.core.errors import GatewayError
from interlock.core.validate import model_problem

#: ``thinking.budget_tokens`` up to this many tokens asks a chat target for ``reasoning_effort: low``
LOW_EFFORT_BUDGET = 4096
#: and up to this many for ``medium``; a larger budget is ``high``
MEDIUM_EFFORT_BUDGET = 16384

# top-level parameters a chat target goes without: hints and account settings
_DROPPED_PARAMS = (
    "top_k", "service_tier", "inference_geo", "speed", "diagnostics", "context_management", "cache_control",
)
# top-level parameters naming server-side features a chat target does not have
_REFUSED_PARAMS = ("container", "mcp_servers")
# parameters translate() reads itself
_READ_PARAMS = frozenset({
    "model", "max_tokens", "messages", "system", "stream", "stop_sequences", "temperature", "top_p",
    "metadata", "tools", "tool_choice", "thinking", "output_config",
    *_DROPPED_PARAMS, *_REFUSED_PARAMS,
})
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


@dataclass(slots=True)
class Translation:
    """A Messages request as a Chat Completions body, and what a chat target would not get."""

    body: dict[str, Any]
    dropped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def drop(self, name: str) -> None:
        if name not in self.dropped:
            self.dropped.append(name)

    def refuse(self, name: str) -> None:
        if name not in self.refused:
            self.refused.append(name)


def _invalid(message: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request_error")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(body: dict[str, Any], *, count: bool = False) -> None:
    """What the Messages API requires of a request (``count``: a ``count_tokens`` body, no ``max_tokens``)."""
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise _invalid("model: Field required")
    problem = model_problem(body["model"])
    if problem is not None:
        raise _invalid(f"model: {problem}")
    if not count:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise _invalid("max_tokens: Field required")
        if not _is_int(max_tokens) or max_tokens < 1:
            raise _invalid("max_tokens: must be a positive integer")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
            raise _invalid(f"messages.{n}.role: Input should be 'user', 'assistant' or 'system'")
        content = message.get("content")
        if message["role"] == "system" and isinstance(content, list) and any(b.get("type") != "text" for b in content
                                                                             if isinstance(b, dict)):
            raise _invalid(f"messages.{n}.content: system messages take text blocks only")
        if isinstance(content, list):
            for m, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise _invalid(f"messages.{n}.content.{m}: a content block is an object with a type")
        elif not isinstance(content, str):
            raise _invalid(f"messages.{n}.content: a string or a list of content blocks")
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not (
        isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system)
    ):
        raise _invalid("system: a string or a list of text blocks")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("stream: must be a boolean")
    for name in ("tools", "stop_sequences"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise _invalid(f"{name}: must be a list")
    for name in ("tool_choice", "thinking", "metadata", "output_config"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _invalid(f"{name}: must be an object")


def translate(body: dict[str, Any]) -> Translation:
    """The Chat Completions body for a validated Messages body (the model name kept as the client's)."""
    out: dict[str, Any] = {"model": body["model"]}
    tr = Translation(out)
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        messages.append({"role": "system", "content": [_text_part(b) for b in system]})
    for message in body["messages"]:
        if message["role"] == "system":  # instructions from this point of the conversation on
            content = message["content"]
            parts = content if isinstance(content, str) else [_text_part(b) for b in content]
            messages.append({"role": "system", "content": parts})
        elif message["role"] == "user":
            messages.extend(_user(message["content"], tr))
        else:
            messages.append(_assistant(message["content"], tr))
    out["messages"] = messages
    if _is_int(body.get("max_tokens")):
        out["max_tokens"] = body["max_tokens"]
    if body.get("stream") is True:
        out["stream"] = True
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user
    _tools(body, out, tr)
    _thinking(body, out)
    _output_config(body, out, tr)
    for name in _DROPPED_PARAMS:
        if body.get(name) is not None:
            tr.drop(name)
    for name in _REFUSED_PARAMS:
        if body.get(name) is not None:
            tr.refuse(name)
    for name in body:
        if name not in _READ_PARAMS:
            tr.drop(name)  # a parameter newer than this door: only a Messages target can take it
    return tr


# -- content ---------------------------------------------------------------- #


def _text_part(block: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": str(block.get("text") or "")}
    if isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]  # the Anthropic chat translation honours it on parts
    return part


def _source(block: dict[str, Any]) -> dict[str, Any]:
    """A block's ``source`` object; anything else (a string, a list) reads as no source."""
    source = block.get("source")
    return source if isinstance(source, dict) else {}


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = _source(block)
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url") or "")
    else:
        return None  # a file-API id: only Anthropic knows the file
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]
    return part


def _document_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = _source(block)
    part: dict[str, Any]
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        file: dict[str, Any] = {"file_data": f"data:application/pdf;base64,{source.get('data')}"}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        part = {"type": "file", "file": file}
    elif source.get("type") == "text":
        part = {"type": "text", "text": str(source.get("data") or "")}
    else:
        return None  # a PDF by URL, a file id, or content blocks: no chat counterpart
    if isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]
    return part


def _parts(blocks: list[dict[str, Any]], tr: Translation, where: str) -> list[dict[str, Any]]:
    """Text, image and document blocks as chat content parts; anything else refused for chat targets."""
    parts: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        part: dict[str, Any] | None
        if kind == "text":
            part = _text_part(block)
        elif kind == "image":
            part = _image_part(block)
        elif kind == "document":
            part = _document_part(block)
        else:
            part = None
        if part is None:
            source = _source(block).get("type")
            tr.refuse(f"{where}.{kind}" + (f" ({source} source)" if source else ""))
        else:
            parts.append(part)
    return parts


def _user(content: str | list[dict[str, Any]], tr: Translation) -> list[dict[str, Any]]:
    """One user turn: its tool results become ``tool`` messages first, the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for block in content:
        if block.get("type") == "tool_result":
            out.append(_tool_result(block, tr))
        else:
            rest.append(block)
    if rest:
        out.append({"role": "user", "content": _parts(rest, tr, "messages.content")})
    return out


def _tool_result(block: dict[str, Any], tr: Translation) -> dict[str, Any]:
    content = block.get("content")
    result: str | list[dict[str, Any]]
    if isinstance(content, list):
        parts = _parts([b for b in content if isinstance(b, dict)], tr, "tool_result.content")
        if any(p["type"] != "text" for p in parts):
            tr.refuse("tool_result.content.image")  # chat tool messages carry text only
            parts = [p for p in parts if p["type"] == "text"]
        result = parts
    else:
        result = str(content or "")
    if block.get("is_error") is True:
        # chat has no error flag on a tool result: say it in the result, where the model reads it
        prefix = "Error: "
        result = prefix + result if isinstance(result, str) else [{"type": "text", "text": prefix}, *result]
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": result}


def _assistant(content: str | list[dict[str, Any]], tr: Translation) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            arguments = jsonutil.dumps_str(block.get("input") if block.get("input") is not None else {})
            calls.append({
                "id": str(block.get("id") or ""), "type": "function",
                "function": {"name": str(block.get("name") or ""), "arguments": arguments},
            })
        elif kind in ("thinking", "redacted_thinking"):
            # a thinking signature is only valid for the Claude family that signed it
            tr.drop("thinking blocks in history")
        else:
            tr.refuse(f"messages.content.{kind}")  # server tool calls and their results
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


# -- tools, thinking, output ----------------------------------------------- #


def _tools(body: dict[str, Any], out: dict[str, Any], tr: Translation) -> None:
    tools: list[dict[str, Any]] = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        if tool.get("type") not in (None, "custom"):
            tr.refuse(f"tools.{tool.get('type')}")  # a server or Anthropic-defined tool
            continue
        function: dict[str, Any] = {"name": str(tool.get("name") or "")}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        if tool.get("strict") is True:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
        if tool.get("cache_control") is not None:
            tr.drop("tools.cache_control")
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice") or {}
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": str(choice.get("name") or "")}}
    if choice.get("disable_parallel_tool_use") is True and tools:
        out["parallel_tool_calls"] = False


def reasoning_effort(budget_tokens: Any) -> str:
    """The chat ``reasoning_effort`` for a thinking budget (see :data:`LOW_EFFORT_BUDGET`)."""
    budget = budget_tokens if _is_int(budget_tokens) else 0
    if budget <= LOW_EFFORT_BUDGET:
        return "low"
    return "medium" if budget <= MEDIUM_EFFORT_BUDGET else "high"


def _thinking(body: dict[str, Any], out: dict[str, Any]) -> None:
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        out["reasoning_effort"] = reasoning_effort(thinking.get("budget_tokens"))
    elif thinking.get("type") == "adaptive":
        out["reasoning_effort"] = "medium"
    # ``thinking`` itself stays out of the chat body: every Claude host takes a Messages request
    # natively, and an OpenAI-compatible upstream would receive (and may refuse) a field it does not know


def _output_config(body: dict[str, Any], out: dict[str, Any], tr: Translation) -> None:
    config = body.get("output_config") or {}
    effort = config.get("effort")
    if isinstance(effort, str) and effort in _EFFORTS:
        out["reasoning_effort"] = _EFFORTS[effort]
    fmt = config.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema") or {}
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    for name in config:
        if name not in ("effort", "format"):
            tr.drop(f"output_config.{name}")
