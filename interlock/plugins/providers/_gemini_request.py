"""The request half of the GenerateContent translation: OpenAI messages → ``contents[]`` and config.

Used through :func:`interlock.plugins.providers.gemini_format.build_request`; kept apart
so each module stays readable.
"""

from __future__ import annotations

import mimetypes
from typing import Any

import aiohttp

from interlock.core import jsonutil
from interlock.core.types import UpstreamError
from interlock.plugins.providers._gemini_schema import sanitize_schema
from interlock.core.openai_shapes import (
    fetch_image,
    json_schema_of,
    max_tokens_of,
    parse_arguments,
    parse_image,
    stop_of,
    text_of,
)

# reasoning_effort -> thinking budget (tokens); 0 turns thinking off where the model allows it
_THINKING_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
#: Google's documented placeholder for a replayed Gemini 3 function call whose signature was lost
SKIP_SIGNATURE = "skip_thought_signature_validator"
_AUDIO_MIME = {"mp3": "audio/mp3", "wav": "audio/wav"}


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
