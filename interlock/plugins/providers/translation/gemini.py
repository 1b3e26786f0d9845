"""The GenerateContent wire format, translated to and from OpenAI's: shared by Gemini and Vertex AI.

Google's Generative Language API (``generativelanguage.googleapis.com``) and
Vertex AI (``aiplatform.googleapis.com``) take the same ``GenerateContentRequest``
and answer with the same ``GenerateContentResponse`` (whole, or as ``alt=sse``
fragments). Only URLs and auth differ, so the translation lives here and both
providers call it. Stable public API:

- :func:`build_request` — the OpenAI request as a ``generateContent`` body.
- :func:`parse_response` — a ``GenerateContentResponse`` as an OpenAI completion.
- :func:`stream_chunks` — ``alt=sse`` fragments (from :func:`~interlock.core.sse.iter_sse_data`)
  as OpenAI chunks.
- :func:`error_fields`, :func:`retry_after`, :func:`adjust_error` — Google's error body
  (``{"error": {"code", "message", "status", "details"}}``) for the failure classifier.
- :func:`finish_reason`, :func:`usage_of`, :func:`sanitize_schema` — the pieces, for reuse.

Tool calls carry Gemini 3's ``thoughtSignature`` to the client as
``tool_calls[].extra_content.google.thought_signature`` (the convention of Google's
own OpenAI-compatible endpoint) and back again, so multi-turn tool use keeps working.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from interlock.plugins.providers.translation.gemini_schema import sanitize_schema
from interlock.provider_api import (
    ChatResult,
    Chunk,
    ChunkWriter,
    RequestContext,
    ToolCall,
    UpstreamError,
    Usage,
    completion,
    fetch_image,
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
    "SKIP_SIGNATURE",
    "adjust_error",
    "build_request",
    "error_fields",
    "finish_reason",
    "parse_response",
    "retry_after",
    "sanitize_schema",
    "stream_chunks",
    "usage_of",
]

#: Gemini finish reasons that mean the output was blocked (python-genai ``FinishReason``)
FILTERED = frozenset(
    {
        "SAFETY",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "RECITATION",
        "LANGUAGE",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_GEMINI_3 = re.compile(r"(^|/)gemini-[3-9]")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")

# reasoning_effort -> thinking budget (tokens); 0 turns thinking off where the model allows it
_THINKING_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
#: Google's documented placeholder for a replayed Gemini 3 function call whose signature was lost
SKIP_SIGNATURE = "skip_thought_signature_validator"
_AUDIO_MIME = {"mp3": "audio/mp3", "wav": "audio/wav"}


# --------------------------------------------------------------------------- #
# request
# --------------------------------------------------------------------------- #


async def build_request(
    ctx: RequestContext,
    session: aiohttp.ClientSession,
    *,
    stream: bool,
    model: str = "",
    raw_schemas: bool = False,
) -> dict[str, Any]:
    """The ``generateContent`` / ``streamGenerateContent`` body for the client's OpenAI request.

    ``session`` fetches http(s) image URLs (Gemini wants inline bytes; ``gs://`` URIs go
    as ``fileData``). The body is the same for both endpoints; ``stream`` only rejects
    ``n > 1``, which a translated stream cannot carry. ``model`` (optional) enables
    Gemini-3-only fixes: a replayed function call without its thought signature gets
    Google's documented placeholder. ``raw_schemas`` sends tool and response schemas
    untouched as ``parametersJsonSchema`` / ``responseJsonSchema`` instead of converting
    them to the OpenAPI subset of ``parameters`` / ``responseSchema``.
    Raises :class:`UpstreamError` (HTTP 400) for requests Gemini cannot express.
    """
    body = ctx.body
    messages: list[dict[str, Any]] = body.get("messages") or []
    request: dict[str, Any] = {
        "contents": await contents_of(messages, session, gemini_3=bool(_GEMINI_3.search(model)))
    }
    if system := system_text(messages):
        if request["contents"]:
            request["systemInstruction"] = {"parts": [{"text": system}]}
        else:  # OpenAI answers a system-only conversation; Gemini needs at least one content
            request["contents"] = [{"role": "user", "parts": [{"text": system}]}]
    tools = tools_of(body)
    if tools:
        key = "parametersJsonSchema" if raw_schemas else "parameters"
        declarations = []
        for tool in tools:
            decl: dict[str, Any] = {"name": tool.name}
            if tool.description:
                decl["description"] = tool.description
            decl[key] = tool.parameters if raw_schemas else sanitize_schema(tool.parameters)
            declarations.append(decl)
        request["tools"] = [{"functionDeclarations": declarations}]
        choice = tool_choice_of(body)
        if choice == "none":
            request["toolConfig"] = {"functionCallingConfig": {"mode": "NONE"}}
        elif choice == "required":
            request["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
        elif choice is not None:
            request["toolConfig"] = {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice]}
            }
    config = generation_config(body, stream=stream, raw_schemas=raw_schemas)
    if config:
        request["generationConfig"] = config
    return request


def generation_config(body: dict[str, Any], *, stream: bool, raw_schemas: bool) -> dict[str, Any]:
    """``generationConfig`` from the OpenAI sampling, length, stop, ``n``, JSON-mode and reasoning fields.

    ``reasoning_effort`` becomes a ``thinkingBudget`` (which Gemini 3 still accepts next to
    its ``thinkingLevel``); ``logprobs`` has no translation of its response and is not sent.
    """
    config: dict[str, Any] = {}
    for openai_key, gemini_key in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(openai_key) is not None:
            config[gemini_key] = body[openai_key]
    if (limit := max_tokens_of(body)) is not None:
        config["maxOutputTokens"] = limit
    if stop := stop_of(body):
        config["stopSequences"] = stop
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        if stream:
            raise UpstreamError(
                "n > 1 cannot be streamed from Gemini", kind="http", status=400, code="invalid_value"
            )
        config["candidateCount"] = n
    json_mode, schema = json_schema_of(body)
    if json_mode:
        config["responseMimeType"] = "application/json"
        if schema is not None:
            if raw_schemas:
                config["responseJsonSchema"] = schema
            else:
                config["responseSchema"] = sanitize_schema(schema)
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in _THINKING_BUDGET:
        budget = _THINKING_BUDGET[effort]
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config


async def contents_of(
    messages: list[dict[str, Any]], session: aiohttp.ClientSession, *, gemini_3: bool
) -> list[dict[str, Any]]:
    """``contents[]``: roles user/model, consecutive same-role turns merged (Gemini wants them alternating)."""
    names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse
    contents: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        parts: list[dict[str, Any]]
        if role in ("system", "developer"):
            continue  # lifted into systemInstruction
        if role == "assistant":
            gemini_role, parts = "model", _assistant_parts(message, names, gemini_3)
        elif role in ("tool", "function"):
            gemini_role, parts = "user", [_function_response(message, names)]
        else:
            gemini_role, parts = "user", await _user_parts(message.get("content"), session)
        if not parts:
            continue  # Gemini rejects a content without parts
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return contents


async def _user_parts(content: Any, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(await _image_part(part, session))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = _AUDIO_MIME.get(str(audio.get("format")), f"audio/{audio.get('format') or 'wav'}")
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        elif kind == "file":
            parts.append(_file_part(part.get("file") or {}))
    return parts


async def _image_part(part: dict[str, Any], session: aiohttp.ClientSession) -> dict[str, Any]:
    image = parse_image(part)
    if image.url and image.url.startswith("gs://"):
        file_data: dict[str, Any] = {"fileUri": image.url}
        if mime := mimetypes.guess_type(image.url)[0]:
            file_data["mimeType"] = mime
        return {"fileData": file_data}
    image = await fetch_image(session, image)
    return {"inlineData": {"mimeType": image.mime or "image/png", "data": image.data or ""}}


def _file_part(file: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``file`` part; only inline ``file_data`` (a data URL) can reach Gemini."""
    data = file.get("file_data")
    if not isinstance(data, str):
        raise UpstreamError(
            "Gemini needs file content inline (file_data); file_id is not supported",
            kind="http",
            status=400,
            code="invalid_value",
        )
    inline = parse_image({"image_url": {"url": data}})
    if inline.data is None:
        raise UpstreamError(
            "file_data must be a base64 data URL", kind="http", status=400, code="invalid_value"
        )
    mime = inline.mime or mimetypes.guess_type(str(file.get("filename") or ""))[0] or "application/pdf"
    return {"inlineData": {"mimeType": mime, "data": inline.data}}


def _assistant_parts(message: dict[str, Any], names: dict[str, str], gemini_3: bool) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if text := text_of(message.get("content")):
        parts.append({"text": text})
    first_call = True
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        name = str(fn.get("name") or "")
        if call.get("id"):
            names[str(call["id"])] = name
        args = parse_arguments(fn.get("arguments"))
        gemini_part: dict[str, Any] = {
            "functionCall": {"name": name, "args": args if isinstance(args, dict) else {"value": args}}
        }
        signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if isinstance(signature, str) and signature:
            gemini_part["thoughtSignature"] = signature
        elif gemini_3 and first_call:
            # Gemini 3 rejects a replayed call without its signature (only the first of parallel calls has one)
            gemini_part["thoughtSignature"] = SKIP_SIGNATURE
        first_call = False
        parts.append(gemini_part)
    return parts


def _function_response(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A tool result as ``functionResponse``: Gemini matches it to the call by function NAME."""
    name = names.get(str(message.get("tool_call_id"))) or message.get("name")
    if not name:
        raise UpstreamError(
            "a tool message's tool_call_id matches no earlier assistant tool call",
            kind="http",
            status=400,
            code="invalid_value",
        )
    text = text_of(message.get("content"))
    try:
        value = jsonutil.loads(text) if text else None
    except jsonutil.JSONDecodeError:
        value = text
    response = value if isinstance(value, dict) else {"content": value if value is not None else text}
    return {"functionResponse": {"name": name, "response": response}}


# --------------------------------------------------------------------------- #
# response
# --------------------------------------------------------------------------- #


def finish_reason(native: str | None, has_tool_calls: bool) -> str:
    """Gemini ``finishReason`` → OpenAI's: STOP with function calls is ``tool_calls``."""
    if native == "MAX_TOKENS":
        return "length"
    if native in FILTERED:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def usage_of(meta: Any) -> Usage | None:
    """``usageMetadata`` in OpenAI semantics (prompt includes cached, completion includes thoughts)."""
    if not isinstance(meta, dict) or not meta:
        return None

    def n(key: str) -> int:
        value = meta.get(key)
        return value if isinstance(value, int) else 0

    prompt_by_modality = _by_modality(meta.get("promptTokensDetails"))
    return Usage(
        prompt_tokens=n("promptTokenCount") + n("toolUsePromptTokenCount"),
        completion_tokens=n("candidatesTokenCount") + n("thoughtsTokenCount"),
        cached_tokens=n("cachedContentTokenCount"),
        reasoning_tokens=n("thoughtsTokenCount"),
        input_audio_tokens=prompt_by_modality.get("AUDIO", 0),
        input_image_tokens=prompt_by_modality.get("IMAGE", 0),
        output_audio_tokens=_by_modality(meta.get("candidatesTokensDetails")).get("AUDIO", 0),
    )


def _by_modality(details: Any) -> dict[str, int]:
    """``[{"modality": "AUDIO", "tokenCount": 120}, ...]`` as ``{"AUDIO": 120}`` (absent or odd: empty)."""
    out: dict[str, int] = {}
    if isinstance(details, list):
        for entry in details:
            if isinstance(entry, dict) and isinstance(entry.get("tokenCount"), int):
                key = str(entry.get("modality"))
                out[key] = out.get(key, 0) + entry["tokenCount"]
    return out


def blocked_prompt(body: dict[str, Any]) -> UpstreamError | None:
    """The content-policy failure for a response whose prompt was blocked (no candidates)."""
    feedback = body.get("promptFeedback")
    if body.get("candidates") or not isinstance(feedback, dict) or not feedback.get("blockReason"):
        return None
    reason = feedback["blockReason"]
    detail = feedback.get("blockReasonMessage")
    message = f"the prompt was blocked by Gemini ({reason})" + (f": {detail}" if detail else "")
    return UpstreamError(
        message, kind="http", status=400, body=body, code="content_policy_violation", error_type=str(reason)
    )


def _signature_extra(signature: Any) -> dict[str, Any] | None:
    return {"google": {"thought_signature": signature}} if isinstance(signature, str) and signature else None


def _read_parts(parts: Any) -> tuple[str, str, list[tuple[ToolCall, dict[str, Any] | None]]]:
    """``(text, reasoning, tool calls with their signature extras)`` of one candidate's parts.

    Gemini 2.x function calls have no id: one is made up (unique, so ids never repeat
    across the turns of a conversation); an upstream ``id`` (Gemini 3) is kept.
    """
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[tuple[ToolCall, dict[str, Any] | None]] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("functionCall"), dict):
            fc = part["functionCall"]
            call_id = str(fc.get("id") or new_id("call_"))
            calls.append(
                (
                    ToolCall(call_id, str(fc.get("name", "")), jsonutil.dumps(fc.get("args") or {}).decode()),
                    _signature_extra(part.get("thoughtSignature")),
                )
            )
        elif isinstance(part.get("text"), str):
            (reasoning if part.get("thought") else text).append(part["text"])
    return "".join(text), "".join(reasoning), calls


def parse_response(body: dict[str, Any], model: str) -> ChatResult:
    """A ``GenerateContentResponse`` as an OpenAI ``chat.completion`` (one choice per candidate).

    Raises the content-policy :class:`UpstreamError` when the prompt was blocked, and a
    ``stream``-kind one when the response has neither candidates nor a block reason.
    """
    if (blocked := blocked_prompt(body)) is not None:
        raise blocked
    candidates = [c for c in body.get("candidates") or () if isinstance(c, dict)]
    if not candidates:
        raise UpstreamError("Gemini response has no candidates", kind="stream", body=body)
    usage = usage_of(body.get("usageMetadata"))
    response_id = str(body.get("responseId") or new_id())
    response_model = str(body.get("modelVersion") or model)
    choices: list[dict[str, Any]] = []
    base: dict[str, Any] | None = None
    for position, candidate in enumerate(sorted(candidates, key=lambda c: c.get("index") or 0)):
        text, reasoning, calls = _read_parts((candidate.get("content") or {}).get("parts"))
        native = candidate.get("finishReason")
        out = completion(
            response_id=response_id,
            model=response_model,
            content=text,
            tool_calls=[c for c, _ in calls],
            finish_reason=finish_reason(native, bool(calls)),
            usage=usage,
            reasoning=reasoning or None,
            native_finish_reason=str(native) if native else None,
        )
        choice = out["choices"][0]
        choice["index"] = position
        for (_, extra), wire in zip(calls, choice["message"].get("tool_calls") or ()):
            if extra:
                wire["extra_content"] = extra
        if base is None:
            base = out
        choices.append(choice)
    assert base is not None
    base["choices"] = choices
    return ChatResult(base, usage)


async def stream_chunks(datas: AsyncIterator[bytes], model: str, name: str) -> AsyncIterator[Chunk]:
    """OpenAI chunks from ``alt=sse`` fragments (the ``data`` of each event, as ``iter_sse_data`` yields).

    Each fragment is a whole ``GenerateContentResponse`` carrying deltas; ``usageMetadata``
    is cumulative, ``finishReason`` marks the last one and there is no ``[DONE]``. Yields
    the role chunk, content/reasoning/tool-call chunks, the finish chunk and, at the end,
    the usage chunk; every chunk before it carries the fragments' usage so far as
    ``usage_so_far`` (what the attempt is costed by when the stream fails before its end).
    Raises ``UpstreamError(kind="stream")`` for an in-band ``{"error"}``,
    a malformed fragment, a broken connection or a stream that ends without a finish
    reason (``kind="timeout"`` when reading times out); releasing the response is the
    caller's job. ``name`` (the provider instance) prefixes error messages.
    """
    writer: ChunkWriter | None = None
    usage: Usage | None = None
    finished = False
    calls = 0
    try:
        async for data in datas:
            try:
                obj = jsonutil.loads(data)
            except jsonutil.JSONDecodeError:
                raise UpstreamError(f"{name}: malformed stream chunk", kind="stream") from None
            if not isinstance(obj, dict):
                raise UpstreamError(f"{name}: stream chunk is not a JSON object", kind="stream")
            if "error" in obj:
                raise _stream_error(obj, name)
            if (blocked := blocked_prompt(obj)) is not None:
                raise blocked
            usage = usage_of(obj.get("usageMetadata")) or usage
            if writer is None:
                writer = ChunkWriter(
                    str(obj.get("responseId") or new_id()), str(obj.get("modelVersion") or model)
                )
                yield _so_far(writer.role(), usage)
            candidate = next(
                (c for c in obj.get("candidates") or () if isinstance(c, dict) and not c.get("index")), None
            )
            if candidate is None or finished:
                continue
            text, reasoning, new_calls = _read_parts((candidate.get("content") or {}).get("parts"))
            if reasoning:
                yield _so_far(writer.reasoning(reasoning), usage)
            if text:
                yield _so_far(writer.text(text), usage)
            for call, extra in new_calls:
                chunk = writer.tool_call(calls, call.id, call.name, call.arguments)
                if extra:
                    payload = jsonutil.loads(chunk.payload)
                    payload["choices"][0]["delta"]["tool_calls"][0]["extra_content"] = extra
                    chunk.payload = jsonutil.dumps(payload)
                calls += 1
                yield _so_far(chunk, usage)
            if native := candidate.get("finishReason"):
                finished = True
                yield _so_far(writer.finish(finish_reason(native, calls > 0)), usage)
    except TimeoutError:
        raise UpstreamError(f"{name}: stream timed out", kind="timeout") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{name}: stream broken ({type(exc).__name__})", kind="stream") from None
    if not finished or writer is None:
        raise UpstreamError(f"{name}: stream ended without a finish reason", kind="stream")
    if usage is not None:
        yield writer.usage(usage)


def _so_far(chunk: Chunk, usage: Usage | None) -> Chunk:
    """``chunk`` with the usage the stream reported so far (Gemini's usageMetadata is cumulative)."""
    chunk.usage_so_far = usage
    return chunk


def _stream_error(obj: dict[str, Any], name: str) -> UpstreamError:
    message, code, etype = error_fields(obj)
    err = obj.get("error")
    status = err.get("code") if isinstance(err, dict) and isinstance(err.get("code"), int) else None
    if etype == "UNAVAILABLE":
        etype = "overloaded_error"  # the classifier's overloaded signal for in-band errors
    error = UpstreamError(
        f"{name} stream error: {message}", kind="stream", status=status, body=obj, code=code, error_type=etype
    )
    return adjust_error(error)


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #


def _details(body: Any) -> list[dict[str, Any]]:
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    return [d for d in details or () if isinstance(d, dict)]


def error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """``(message, code, type)`` from ``{"error": {"code", "message", "status", "details"}}``.

    ``type`` is the canonical status (``RESOURCE_EXHAUSTED``, ``UNAVAILABLE`` ...); ``code``
    is ``insufficient_quota`` for an exhausted per-day quota (so it classifies as quota,
    not a passing rate limit), else the ``ErrorInfo`` reason, else the status.
    """
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # streamGenerateContent without alt=sse wraps errors in an array
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        status = err.get("status")
        etype = str(status) if status else None
        code = etype
        for detail in _details(body):
            kind = str(detail.get("@type", ""))
            if kind.endswith("google.rpc.ErrorInfo") and detail.get("reason"):
                code = str(detail["reason"])
            elif kind.endswith("google.rpc.QuotaFailure"):
                for violation in detail.get("violations") or ():
                    if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                        return str(err.get("message") or ""), "insufficient_quota", etype
        return str(err.get("message") or ""), code, etype
    if isinstance(body, str):
        return body[:500], None, None
    return "", None, None


def retry_after(body: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "19s"``), if any."""
    if isinstance(body, list) and body:
        body = body[0]
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            match = _DURATION.match(delay) if isinstance(delay, str) else None
            if match:
                return float(match.group(1))
    return None


def adjust_error(error: UpstreamError) -> UpstreamError:
    """Make a Google error classify right (mutates and returns ``error``).

    Adds ``retry-after`` from ``RetryInfo`` when no header gave one. Google reports an
    invalid API key as HTTP 400 ``API_KEY_INVALID`` and account-level preconditions (billing
    off, region unsupported) as 400 ``FAILED_PRECONDITION``: both are this instance's
    problem, not the request's, so they become 401 / 403 (auth: fall back) instead of a
    bad request that would fail fast.
    """
    has_header = any(k.lower() in ("retry-after", "retry-after-ms") for k in error.headers)
    if not has_header and (seconds := retry_after(error.body)) is not None:
        error.headers["retry-after"] = f"{seconds:g}"
    if error.status == 400:
        if error.code == "API_KEY_INVALID":
            error.status = 401
        elif error.error_type == "FAILED_PRECONDITION":
            error.status = 403
    return error
