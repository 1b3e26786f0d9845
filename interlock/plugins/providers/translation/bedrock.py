"""OpenAI <-> Bedrock Converse translation, both ways, plus the InvokeModel bodies (embeddings, Claude).

Request (OpenAI -> Converse):

* ``system``/``developer`` messages -> ``system: [{"text"}]``; ``user``/``assistant`` keep their
  role; ``tool`` messages become ``toolResult`` blocks in a ``user`` message; consecutive
  messages of one role are merged (Converse wants the roles to alternate).
* text parts -> ``{"text"}`` (empty ones dropped: Converse rejects blank text); images ->
  ``{"image": {"format", "source": {"bytes": <base64>}}}`` (URLs are fetched, only
  png/jpeg/gif/webp); assistant ``tool_calls`` -> ``{"toolUse": {"toolUseId", "name", "input"}}``;
  tool results are sent as text (every model family takes text; ``json`` blocks are not).
* ``tools`` -> ``toolConfig.tools[].toolSpec``; ``tool_choice`` ``auto`` -> omitted (the
  default), ``required`` -> ``{"any": {}}``, a named function -> ``{"tool": {"name"}}``,
  ``none`` -> no ``toolConfig`` at all, unless the history holds tool calls or results:
  Converse rejects those without a ``toolConfig``, so the tools stay (without a choice).
* ``max_tokens``/``max_completion_tokens`` -> ``inferenceConfig.maxTokens`` (omitted when
  absent: the model's maximum), ``temperature``, ``top_p`` -> ``topP``, ``stop`` ->
  ``stopSequences``. ``seed``, ``n``, penalties and logprobs have no Converse equivalent and
  are ignored. A client's ``additionalModelRequestFields`` object (e.g. Claude's
  ``thinking``) is passed through as is.
* JSON mode: Converse has no model-independent JSON mode (``outputConfig.textFormat`` exists
  for a few models only), so ``response_format`` becomes a system instruction:
  :data:`JSON_INSTRUCTION`, plus the schema for ``json_schema``. The model is asked, not forced.

Response (Converse -> OpenAI): text blocks -> ``content``, ``toolUse`` -> ``tool_calls``
(arguments re-encoded as JSON text), ``reasoningContent`` -> ``reasoning_content``;
``stopReason`` -> :data:`FINISH_REASONS` (kept as ``native_finish_reason``); usage per
:func:`usage_of`.

Anthropic Messages clients reach Claude through InvokeModel untranslated (:func:`speaks_messages`):
:func:`claude_invoke_body` is their body with ``model`` and ``stream`` removed (the URL and the
operation say them), ``"anthropic_version": "bedrock-2023-05-31"`` and the client's
``anthropic-beta`` header as the ``anthropic_beta`` list; :func:`claude_event` unwraps one event
of InvokeModelWithResponseStream (``{"bytes": <base64 Anthropic event JSON>}``);
:func:`claude_count_payload` wraps that body for CountTokens.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import aiohttp

from interlock.plugins.providers.translation.anthropic_events import client_headers, request_body
from interlock.provider_api import (
    ChatResult,
    Chunk,
    ChunkWriter,
    ToolCall,
    UpstreamError,
    Usage,
    completion,
    fetch_image,
    image_bytes,
    json_schema_of,
    jsonutil,
    max_tokens_of,
    parse_arguments,
    parse_image,
    stop_of,
    text_of,
    tool_choice_of,
    tools_of,
)

JSON_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose before or after it, no code fences."
)
#: Converse stopReason -> OpenAI finish_reason
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "stop",
    "malformed_tool_use": "stop",
}
_TOOL_ID_INVALID = re.compile(r"[^a-zA-Z0-9_.:-]")
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _bad_request(message: str) -> UpstreamError:
    return UpstreamError(message, kind="http", status=400, code="invalid_request")


def tool_use_id(call_id: Any) -> str:
    """A tool-call id Converse accepts (``[a-zA-Z0-9_.:-]{1,64}``); ids minted elsewhere may not be."""
    return _TOOL_ID_INVALID.sub("_", str(call_id or ""))[:64] or "call"


def json_instruction(schema: dict[str, Any] | None) -> str:
    """The system instruction that asks for JSON (with the schema spelled out for ``json_schema``)."""
    if schema is None:
        return JSON_INSTRUCTION
    return f"{JSON_INSTRUCTION} The object must conform to this JSON Schema: {jsonutil.dumps_str(schema)}"


async def _image_block(part: dict[str, Any], session: aiohttp.ClientSession) -> dict[str, Any]:
    image = await fetch_image(session, parse_image(part))
    fmt = _IMAGE_FORMATS.get((image.mime or "").lower())
    if fmt is None:
        raise _bad_request(f"Bedrock takes png, jpeg, gif or webp images, not {image.mime!r}")
    # re-encoded so stray whitespace or URL-safe characters in the client's base64 never reach AWS
    data = base64.b64encode(image_bytes(image)).decode()
    return {"image": {"format": fmt, "source": {"bytes": data}}}


async def _content_blocks(content: Any, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            blocks.append(await _image_block(part, session))
    return blocks


def _tool_uses(message: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        args = parse_arguments(fn.get("arguments"))
        out.append(
            {
                "toolUse": {
                    "toolUseId": tool_use_id(call.get("id")),
                    "name": fn.get("name") or "",
                    "input": args,
                }
            }
        )
    return out


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    text = text_of(message.get("content"))
    content = [{"text": text}] if text else []  # blank text blocks are rejected; no content is fine
    return {"toolResult": {"toolUseId": tool_use_id(message.get("tool_call_id")), "content": content}}


async def converse_messages(
    messages: list[dict[str, Any]], session: aiohttp.ClientSession
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """``(system blocks, messages, history has tool blocks)`` from OpenAI ``messages``."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    has_tools = False
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            if text := text_of(message.get("content")):
                system.append({"text": text})
            continue
        if role == "user":
            blocks = await _content_blocks(message.get("content"), session)
        elif role == "assistant":
            blocks = [{"text": text}] if (text := text_of(message.get("content"))) else []
            blocks += _tool_uses(message)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message)]
        else:
            raise _bad_request(f"unsupported message role {role!r}")
        has_tools = has_tools or any("toolUse" in b or "toolResult" in b for b in blocks)
        if not blocks:
            continue  # Converse rejects empty content; an empty turn carries nothing anyway
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out, has_tools


async def converse_body(body: dict[str, Any], session: aiohttp.ClientSession) -> dict[str, Any]:
    """The Converse request body (without ``modelId``, which goes in the path)."""
    system, messages, has_tool_history = await converse_messages(body.get("messages") or [], session)
    json_mode, schema = json_schema_of(body)
    if json_mode:
        system.append({"text": json_instruction(schema)})
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    if (max_tokens := max_tokens_of(body)) is not None:
        config["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    if stop := stop_of(body):
        config["stopSequences"] = stop
    if config:
        out["inferenceConfig"] = config
    tools = tools_of(body)
    choice = tool_choice_of(body)
    if tools and (choice != "none" or has_tool_history):
        specs = []
        for tool in tools:
            spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
            if tool.description:
                spec["description"] = tool.description
            specs.append({"toolSpec": spec})
        tool_config: dict[str, Any] = {"tools": specs}
        if choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif choice not in (None, "none"):
            tool_config["toolChoice"] = {"tool": {"name": choice}}
        out["toolConfig"] = tool_config
    if isinstance(body.get("additionalModelRequestFields"), dict):
        out["additionalModelRequestFields"] = body["additionalModelRequestFields"]
    return out


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) else 0


def usage_of(usage: Any) -> Usage | None:
    """OpenAI-semantics usage from a Converse ``TokenUsage``.

    ``inputTokens`` excludes cache reads and writes (Claude's semantics), so the prompt is all
    three; cache reads are the cached tokens. Converse reports no reasoning-token count.
    """
    if not isinstance(usage, dict):
        return None
    read, write = _int(usage, "cacheReadInputTokens"), _int(usage, "cacheWriteInputTokens")
    return Usage(
        prompt_tokens=_int(usage, "inputTokens") + read + write,
        completion_tokens=_int(usage, "outputTokens"),
        cached_tokens=read,
        cache_write_tokens=write,
    )


def finish_reason(native: str | None, has_tool_calls: bool) -> str:
    reason = FINISH_REASONS.get(native or "", "stop")
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


def chat_result(data: dict[str, Any], *, response_id: str, model: str) -> ChatResult:
    """A Converse response as an OpenAI ``chat.completion``."""
    message = (data.get("output") or {}).get("message") or {}
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(use := block.get("toolUse"), dict):
            args = jsonutil.dumps_str(use.get("input") if use.get("input") is not None else {})
            calls.append(ToolCall(str(use.get("toolUseId") or ""), str(use.get("name") or ""), args))
        elif isinstance(thought := block.get("reasoningContent"), dict):
            reasoning.append(str((thought.get("reasoningText") or {}).get("text") or ""))
    native = data.get("stopReason")
    usage = usage_of(data.get("usage"))
    body = completion(
        response_id=response_id,
        model=model,
        content="".join(texts),
        tool_calls=calls,
        finish_reason=finish_reason(native, bool(calls)),
        usage=usage,
        reasoning="".join(reasoning) or None,
        native_finish_reason=native if isinstance(native, str) else None,
    )
    return ChatResult(body, usage)


class StreamTranslator:
    """Turns ConverseStream events into OpenAI chunks, one event at a time.

    Tool-call indices count tool calls (0, 1, ...), mapped from Converse content-block indices.
    :attr:`stopped` is set by ``messageStop``: a stream that ends without it was cut short.
    """

    def __init__(self, writer: ChunkWriter) -> None:
        self.writer = writer
        self.stopped = False
        self._started = False
        self._tools: dict[int, int] = {}  # content-block index -> tool-call index

    def _opening(self) -> list[Chunk]:
        if self._started:
            return []
        self._started = True
        return [self.writer.role()]

    def event(self, event_type: str | None, payload: dict[str, Any]) -> list[Chunk]:
        """The chunks for one event (unknown events give none: AWS adds event types over time)."""
        w = self.writer
        if event_type == "messageStart":
            return self._opening()
        if event_type == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return []
            index = self._tools[payload.get("contentBlockIndex", -1)] = len(self._tools)
            return [
                *self._opening(),
                w.tool_call(index, str(use.get("toolUseId") or ""), str(use.get("name") or "")),
            ]
        if event_type == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return [*self._opening(), w.text(delta["text"])]
            if isinstance(delta.get("toolUse"), dict):
                tool = self._tools.get(payload.get("contentBlockIndex", -1))
                if tool is None:
                    raise UpstreamError(
                        "tool input delta for a content block that never started", kind="stream"
                    )
                return [*self._opening(), w.tool_arguments(tool, str(delta["toolUse"].get("input") or ""))]
            thought = delta.get("reasoningContent")
            if isinstance(thought, dict) and isinstance(thought.get("text"), str):
                return [*self._opening(), w.reasoning(thought["text"])]
            return []  # signatures, redacted reasoning, citations: nothing OpenAI-shaped to say
        if event_type == "messageStop":
            self.stopped = True
            reason = finish_reason(payload.get("stopReason"), bool(self._tools))
            return [*self._opening(), w.finish(reason)]
        if event_type == "metadata":
            usage = usage_of(payload.get("usage"))
            return [w.usage(usage)] if usage is not None else []
        return []


# --------------------------------------------------------------------------- #
# embeddings (InvokeModel)
# --------------------------------------------------------------------------- #

#: texts per Cohere-on-Bedrock request (the model's documented limit)
COHERE_BATCH = 96


def embedding_family(model: str) -> str | None:
    """``"titan"``, ``"cohere"`` or None for a model id, ARN or inference-profile id."""
    lowered = model.lower()
    if "amazon.titan-embed" in lowered:
        return "titan"
    if "cohere.embed" in lowered:
        return "cohere"
    return None


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    """The ``input`` strings; Bedrock models take text only (no token arrays)."""
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise _bad_request("Bedrock embeddings take 'input' as a string or a non-empty array of strings")
    return items


def titan_body(text: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"inputText": text}
    if isinstance(body.get("dimensions"), int):
        out["dimensions"] = body["dimensions"]
    return out


def cohere_body(texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    """Cohere's ``input_type`` is required; OpenAI has none, so ``search_document`` unless the client says."""
    out: dict[str, Any] = {"texts": texts, "input_type": body.get("input_type") or "search_document"}
    if body.get("truncate"):
        out["truncate"] = body["truncate"]
    return out


def cohere_vectors(data: dict[str, Any]) -> list[list[float]]:
    embeddings = data.get("embeddings")
    if isinstance(embeddings, dict):  # requested with embedding_types: {"float": [...]}
        embeddings = embeddings.get("float")
    if not isinstance(embeddings, list):
        raise UpstreamError("Cohere embedding response has no 'embeddings'", kind="stream")
    return embeddings


# --------------------------------------------------------------------------- #
# Claude through InvokeModel: the Anthropic Messages body, passed through
# --------------------------------------------------------------------------- #

#: ``anthropic_version`` Claude on Bedrock's InvokeModel takes in the body
ANTHROPIC_BEDROCK_VERSION = "bedrock-2023-05-31"
# base model ids (anthropic.claude-...) and cross-region inference profiles (us., eu., apac., global. ...)
_CLAUDE_ID = re.compile(r"^(?:[a-z]+\.)?anthropic\.claude-")


def speaks_messages(model: str) -> bool:
    """Whether ``model`` is a Claude model id InvokeModel answers in the Messages format.

    ARNs (provisioned throughput, application inference profiles) do not say what they serve:
    those stay on the Converse translation.
    """
    return _CLAUDE_ID.match(model) is not None


def claude_invoke_body(
    native: dict[str, Any], headers: dict[str, str], configured: str | None = None
) -> dict[str, Any]:
    """A Messages client's body for ``invoke`` / ``invoke-with-response-stream``; only the top level changes.

    ``model`` and ``stream`` go (the URL and the operation say them). Betas: Bedrock reads them
    from the body's ``anthropic_beta`` list, so the client's ``anthropic-beta`` header (after a
    beta header ``configured`` on the provider) becomes that list; a list the client put in the
    body itself is sent as it is.
    """
    body = request_body(native, None, stream=False)
    body["anthropic_version"] = ANTHROPIC_BEDROCK_VERSION
    if "anthropic_beta" not in body:
        header = ",".join(b for b in (configured, client_headers(headers).get("anthropic-beta")) if b)
        if betas := [b.strip() for b in header.split(",") if b.strip()]:
            body["anthropic_beta"] = betas
    return body


def claude_count_payload(body: dict[str, Any]) -> dict[str, Any]:
    """The CountTokens request for an InvokeModel body (a blob in a JSON request: base64)."""
    return {"input": {"invokeModel": {"body": base64.b64encode(jsonutil.dumps(body)).decode()}}}


def claude_event(raw: bytes, name: str) -> tuple[dict[str, Any], bytes]:
    """The Anthropic event one ``chunk`` frame carries: parsed, and its JSON as sent."""
    try:
        data = base64.b64decode(jsonutil.loads(raw)["bytes"], validate=True)
        event = jsonutil.loads(data)
    except (TypeError, KeyError, ValueError):  # ValueError covers bad JSON and bad base64 alike
        raise UpstreamError(f"{name}: malformed stream chunk", kind="stream") from None
    if not isinstance(event, dict):
        raise UpstreamError(f"{name}: stream event is not a JSON object", kind="stream")
    return event, data
