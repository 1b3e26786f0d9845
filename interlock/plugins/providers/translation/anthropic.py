"""The Anthropic Messages wire format, translated to and from OpenAI Chat Completions.

Pure translation, no I/O: the ``anthropic`` provider and Anthropic-on-Vertex
(same request, response and stream bodies at another URL) both build on it.
The stable public API:

* :func:`build_request` — an OpenAI request (``ctx.body``) as a Messages API body.
  Vertex callers drop ``model`` and add ``"anthropic_version": "vertex-2023-10-16"``.
* :func:`json_tool_of` — the name of the tool that carries a ``json_schema`` answer
  (or None); pass it to :func:`parse_response` / :func:`stream_chunks`.
* :func:`parse_response` — a Messages response as an OpenAI ``chat.completion``.
* :func:`stream_chunks` — ``(event, data)`` pairs from :func:`interlock.core.sse.iter_sse`
  as OpenAI chunks; raises ``UpstreamError(kind="stream")`` on an in-band ``error``
  event, a malformed event, or a stream that ends without ``message_stop``.
* :func:`error_fields` — ``(message, code, type)`` from an Anthropic error body.
* :func:`finish_reason`, :func:`usage_of` — the two mapping tables, for reuse.

JSON mode (Anthropic has no ``response_format``):

* ``json_schema`` — a forced tool named :data:`JSON_TOOL` whose ``input_schema`` is the
  client's schema. Forcing a tool makes the model emit exactly one ``tool_use`` whose
  ``input`` validates against the schema on every Claude model and platform (unlike
  ``output_config``, which only newer models accept). The tool's input comes back as the
  message *content* (JSON text), never as a tool call, and ``tool_use`` maps to ``stop``.
  With client tools too, the JSON tool is added to them and ``auto``/``required`` become
  ``any``: the model either calls a real tool or answers through the JSON tool.
* ``json_object`` — there is no schema to force, so :data:`JSON_INSTRUCTION` is appended
  to the system prompt and the model's text is the answer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from interlock.provider_api import (
    ChatResult,
    Chunk,
    ChunkWriter,
    RequestContext,
    ToolCall,
    UpstreamError,
    Usage,
    completion,
    error_fields as generic_error_fields,
    json_schema_of,
    jsonutil,
    max_tokens_of,
    new_id,
    parse_arguments,
    parse_image,
    stop_of,
    system_text,
    text_of,
    tool_choice_of,
    tools_of,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "FINISH_REASONS",
    "JSON_INSTRUCTION",
    "JSON_TOOL",
    "build_request",
    "error_fields",
    "finish_reason",
    "json_tool_of",
    "parse_response",
    "stream_chunks",
    "usage_of",
]

#: the ``anthropic-version`` header value of the first-party API
ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` is required by Anthropic; sent when the client gives none
DEFAULT_MAX_TOKENS = 4096
#: the forced tool that carries a ``json_schema`` answer
JSON_TOOL = "json_response"
_JSON_TOOL_DESCRIPTION = "Give the final answer as a JSON value matching this tool's input schema."
#: appended to the system prompt for ``response_format: json_object``
JSON_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose before or after it, no code fences."
)

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (``tool_use`` is decided per response)
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",  # a server-tool turn paused; the client may continue it
    "model_context_window_exceeded": "length",
}

# Anthropic's context-overflow messages; the older one ("... exceed context limit") escapes
# the generic classifier regex, so these are tagged with OpenAI's code instead.
_CONTEXT_MESSAGE = re.compile(r"prompt is too long|exceed context limit|context window", re.IGNORECASE)

# OpenAI parameters passed under the same name; Anthropic-only extensions (sent by clients
# through ``extra_body``) pass through verbatim.
_PASSTHROUGH = ("top_p", "top_k", "thinking")


# --------------------------------------------------------------------------- #
# request
# --------------------------------------------------------------------------- #


def build_request(
    ctx: RequestContext, model: str, *, stream: bool, max_tokens_default: int
) -> dict[str, Any]:
    """The Messages API body for the client's OpenAI request in ``ctx.body``.

    System and developer messages become ``system``; the rest become alternating
    ``user``/``assistant`` turns (consecutive same-role turns merged, tool results
    grouped into one ``user`` turn). Unsupported OpenAI parameters (``n``, ``seed``,
    penalties, ``logprobs``) are dropped. Raises ``UpstreamError`` (HTTP 400) for
    content Anthropic cannot take, so the router fails fast instead of guessing.
    """
    body = ctx.body
    json_mode, schema = json_schema_of(body)
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens_of(body) or max_tokens_default}
    system = system_text(body.get("messages") or [])
    if json_mode and schema is None:
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
    if system:
        out["system"] = system
    out["messages"] = _messages(body.get("messages") or [])
    tools, tool_choice = _tools(body, schema if json_mode else None)
    if tools:
        out["tools"] = tools
        out["tool_choice"] = tool_choice
    if stop := stop_of(body):
        out["stop_sequences"] = stop
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(float(temperature), 1.0)  # OpenAI allows 0-2, Anthropic 0-1
    for key in _PASSTHROUGH:
        if body.get(key) is not None:
            out[key] = body[key]
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if stream:
        out["stream"] = True
    return out


def json_tool_of(body: dict[str, Any]) -> str | None:
    """:data:`JSON_TOOL` when the OpenAI request asks for a ``json_schema`` answer, else None."""
    json_mode, schema = json_schema_of(body)
    return JSON_TOOL if json_mode and schema is not None else None


def _bad_request(message: str) -> UpstreamError:
    return UpstreamError(
        message, kind="http", status=400, code="invalid_value", error_type="invalid_request_error"
    )


def _tools(
    body: dict[str, Any], schema: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``tools`` and ``tool_choice`` (including the JSON tool for ``json_schema`` mode)."""
    tools: list[dict[str, Any]] = []
    for tool in tools_of(body):
        entry: dict[str, Any] = {"name": tool.name}
        if tool.description:
            entry["description"] = tool.description
        entry["input_schema"] = tool.parameters
        tools.append(entry)
    choice = tool_choice_of(body)
    if choice is None:
        native: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        native = {"type": "none"}
    elif choice == "required":
        native = {"type": "any"}
    else:
        native = {"type": "tool", "name": choice}
    if schema is not None:
        if any(t["name"] == JSON_TOOL for t in tools):
            raise _bad_request(
                f"the tool name {JSON_TOOL!r} is reserved for JSON-schema answers on Anthropic"
            )
        if not tools or native["type"] == "none":
            native = {"type": "tool", "name": JSON_TOOL}
        elif native["type"] == "auto":
            native = {"type": "any"}  # answer through a tool: a real one, or the JSON one
        if schema.get("type", "object") != "object":
            raise _bad_request(
                "Anthropic JSON-schema answers must be objects (a tool's input_schema has type 'object')"
            )
        schema = {"type": "object", **schema}
        tools.append({"name": JSON_TOOL, "description": _JSON_TOOL_DESCRIPTION, "input_schema": schema})
    if body.get("parallel_tool_calls") is False and native["type"] in ("auto", "any", "tool"):
        native["disable_parallel_tool_use"] = True
    return tools, native


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages (system ones excluded) as alternating Anthropic turns."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue  # lifted to the top-level ``system``
        if role == "user":
            _append(turns, "user", _user_content(message.get("content")))
        elif role == "assistant":
            blocks = _assistant_blocks(message)
            if blocks:
                _append(turns, "assistant", blocks)
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or ""),
                "content": text_of(message.get("content")),
            }
            _append(turns, "user", [result])
        else:
            raise _bad_request(f"message role {role!r} is not supported by Anthropic")
    return turns


def _append(turns: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Add a turn, merging it into the previous one when the role repeats (Anthropic alternates)."""
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]["content"]
        turns[-1]["content"] = _as_blocks(previous) + _as_blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    """A user message's content: a string stays a string, parts become blocks."""
    if content is None or isinstance(content, str):
        return content or ""
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        block: dict[str, Any]
        if kind == "text":
            if not part.get("text"):
                continue  # Anthropic rejects empty text blocks
            block = {"type": "text", "text": part["text"]}
        elif kind == "image_url":
            image = parse_image(part)
            if image.data is not None:
                source = {"type": "base64", "media_type": image.mime, "data": image.data}
            elif image.url:
                source = {"type": "url", "url": image.url}
            else:
                raise _bad_request("an image_url part has no URL")
            block = {"type": "image", "source": source}
        elif kind == "file":
            block = _document(part)
        else:
            raise _bad_request(f"content part type {kind!r} is not supported by Anthropic")
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]  # prompt-caching breakpoints survive
        blocks.append(block)
    return blocks


def _document(part: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``file`` part carrying an inline PDF as an Anthropic ``document`` block."""
    image = parse_image({"image_url": {"url": (part.get("file") or {}).get("file_data") or ""}})
    if image.data is None or image.mime != "application/pdf":
        raise _bad_request(
            "only inline PDF files (file_data as a base64 data URL) are supported by Anthropic"
        )
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": image.data},
    }


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if text := text_of(message.get("content")):
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": parse_arguments(fn.get("arguments")),
            }
        )
    return blocks


# --------------------------------------------------------------------------- #
# response
# --------------------------------------------------------------------------- #


def finish_reason(native: str | None, *, tool_calls: bool) -> str:
    """OpenAI's finish reason for a ``stop_reason``; ``tool_use`` without client calls is ``stop``.

    (The only ``tool_use`` without client tool calls is a JSON-tool answer.)
    """
    if native == "tool_use" and not tool_calls:
        return "stop"
    return FINISH_REASONS.get(native or "", "stop")


def usage_of(usage: dict[str, Any] | None) -> Usage:
    """Anthropic usage in OpenAI semantics: ``input_tokens`` excludes cache reads and writes.

    ``cache_creation`` splits the writes by lifetime (``ephemeral_1h_input_tokens`` are billed
    at the hour rate) and ``server_tool_use.web_search_requests`` counts billed searches.
    """
    usage = usage or {}
    fresh = int(usage.get("input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    write = int(usage.get("cache_creation_input_tokens") or 0)
    details = usage.get("output_tokens_details") or {}
    out = Usage(
        fresh + read + write,
        int(usage.get("output_tokens") or 0),
        read,
        int(details.get("thinking_tokens") or 0) if isinstance(details, dict) else 0,
        write,
    )
    if write and isinstance(creation := usage.get("cache_creation"), dict):
        out.cache_write_1h_tokens = min(int(creation.get("ephemeral_1h_input_tokens") or 0), write)
    if isinstance(tools := usage.get("server_tool_use"), dict):
        out.web_search_requests = int(tools.get("web_search_requests") or 0)
    return out


def parse_response(body: dict[str, Any], model: str, *, json_tool: str | None = None) -> ChatResult:
    """A Messages API response as an OpenAI ``chat.completion`` (``native_finish_reason`` kept).

    Text blocks are joined into ``content``, ``tool_use`` blocks become ``tool_calls``
    and ``thinking`` blocks ``reasoning_content``. With ``json_tool`` (from
    :func:`json_tool_of`) that tool's input is the content. (A forced tool choice makes
    Claude call the tool without any text first; text only comes without a JSON answer,
    e.g. a refusal, and is then kept as the content.)
    """
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    json_answer: str | None = None
    for block in body.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            arguments = jsonutil.dumps_str(block.get("input") if block.get("input") is not None else {})
            if json_tool is not None and block.get("name") == json_tool:
                json_answer = arguments
            else:
                calls.append(
                    ToolCall(
                        str(block.get("id") or new_id("toolu_")), str(block.get("name") or ""), arguments
                    )
                )
        # redacted_thinking and server-tool blocks have no OpenAI counterpart
    native = body.get("stop_reason")
    usage = usage_of(body.get("usage")) if body.get("usage") is not None else None
    content = json_answer if json_answer is not None else "".join(texts)
    result = completion(
        response_id=str(body.get("id") or new_id()),
        model=str(body.get("model") or model),
        content=content,
        tool_calls=calls,
        finish_reason=finish_reason(native, tool_calls=bool(calls)),
        usage=usage,
        reasoning="".join(reasoning) or None,
        native_finish_reason=native,
    )
    return ChatResult(result, usage)


# --------------------------------------------------------------------------- #
# stream
# --------------------------------------------------------------------------- #


async def stream_chunks(
    events: AsyncIterator[tuple[str, bytes]], name: str, *, model: str = "", json_tool: str | None = None
) -> AsyncIterator[Chunk]:
    """Translate a Messages SSE stream (``iter_sse`` output) into OpenAI chunks.

    Yields the role chunk at ``message_start`` (with its input usage as ``usage_so_far``,
    what the attempt is costed by if the stream fails before the end), content/reasoning/tool-call chunks as
    blocks arrive (tool-call ``index`` is the position among client tool calls, not the
    content-block index), then at ``message_stop`` the finish chunk and the usage chunk,
    and stops reading. ``name`` (the provider instance) prefixes error messages; ``model``
    is used if ``message_start`` names none. Transport errors from ``events`` propagate.
    """
    writer: ChunkWriter | None = None
    usage: dict[str, Any] = {}
    # keyed by the events' content-block "index" (None if an event left it out, which then matches alike)
    tool_positions: dict[int | None, int] = {}  # content-block index -> tool-call position
    json_blocks: set[int | None] = set()
    native: str | None = None
    async for event, data in events:
        if event == "ping":
            continue
        try:
            obj = jsonutil.loads(data)
        except jsonutil.JSONDecodeError:
            raise UpstreamError(f"{name}: malformed stream event", kind="stream") from None
        if not isinstance(obj, dict):
            raise UpstreamError(f"{name}: stream event is not a JSON object", kind="stream")
        kind = obj.get("type") or event
        if event == "error" or kind == "error":
            message, code, etype = error_fields(obj)
            raise UpstreamError(
                f"{name} stream error: {message}", kind="stream", body=obj, code=code, error_type=etype
            )
        if kind == "message_start":
            message_obj = obj.get("message") or {}
            writer = ChunkWriter(
                str(message_obj.get("id") or new_id()), str(message_obj.get("model") or model)
            )
            usage.update({k: v for k, v in (message_obj.get("usage") or {}).items() if v is not None})
            role = writer.role()
            if usage:  # the input side is billed from here on, even if the stream fails before message_delta
                role.usage_so_far = usage_of(usage)
            yield role
            continue
        if kind not in (
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ):
            continue  # an event type added after this was written: nothing to translate
        if writer is None:
            raise UpstreamError(f"{name}: stream event {kind!r} before message_start", kind="stream")
        index = obj.get("index")
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            btype = block.get("type")
            if btype == "tool_use":
                if json_tool is not None and block.get("name") == json_tool:
                    json_blocks.add(index)
                else:
                    position = tool_positions[index] = len(tool_positions)
                    yield writer.tool_call(
                        position, str(block.get("id") or new_id("toolu_")), str(block.get("name") or "")
                    )
            elif btype == "text" and block.get("text"):
                yield writer.text(str(block["text"]))
            elif btype == "thinking" and block.get("thinking"):
                yield writer.reasoning(str(block["thinking"]))
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                yield writer.text(str(delta["text"]))
            elif dtype == "input_json_delta" and delta.get("partial_json"):
                fragment = str(delta["partial_json"])
                if index in json_blocks:
                    yield writer.text(fragment)
                elif index in tool_positions:
                    yield writer.tool_arguments(tool_positions[index], fragment)
            elif dtype == "thinking_delta" and delta.get("thinking"):
                yield writer.reasoning(str(delta["thinking"]))
            # signature_delta and citations_delta have no OpenAI counterpart
        elif kind == "message_delta":
            native = (obj.get("delta") or {}).get("stop_reason") or native
            # message_delta usage is cumulative: later values replace earlier ones
            usage.update({k: v for k, v in (obj.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            yield writer.finish(finish_reason(native, tool_calls=bool(tool_positions)))
            yield writer.usage(usage_of(usage))
            return
    raise UpstreamError(f"{name}: stream ended without message_stop", kind="stream")


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #


def error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """``(message, code, type)`` from ``{"type": "error", "error": {"type", "message"}}``.

    Anthropic has no error codes; a context-overflow message gets OpenAI's
    ``context_length_exceeded`` so every wording is classified alike. Other shapes
    (a proxy's text or OpenAI-like body) fall back to the generic reader.
    """
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        message = str(err.get("message") or "")
        etype = str(err["type"]) if err.get("type") else None
        code = "context_length_exceeded" if _CONTEXT_MESSAGE.search(message) else None
        return message, code, etype
    return generic_error_fields(body)
