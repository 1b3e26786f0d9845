"""Ollama's native wire format, both ways: OpenAI requests to ``/api/chat`` bodies, and back.

Kept apart from the provider class so the translation rules can be read (and
tested) on their own. Sources: Ollama's ``docs/api.md``, ``docs/api/errors.mdx``,
``api/types.go`` and its own OpenAI-compatibility layer (``openai/openai.go``),
which this translation follows where the two APIs meet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from interlock.provider_api import (
    ToolCall,
    UpstreamError,
    Usage,
    embedding_base64,
    fetch_image,
    iter_lines as body_lines,
    json_schema_of,
    jsonutil,
    max_tokens_of,
    new_id,
    parse_arguments,
    parse_image,
    stop_of,
    text_of,
    tool_choice_of,
    tools_of,
)

DEFAULT_PORT = 11434
#: one NDJSON line may carry a whole tool call; beyond this the upstream is broken, not verbose
MAX_LINE_BYTES = 64 * 1024 * 1024

#: OpenAI ``reasoning_effort`` -> Ollama ``think`` (Ollama's compat layer accepts high/medium/low/none)
THINK_LEVELS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}
#: OpenAI request fields that are Ollama ``options`` under the same name
SAME_NAME_OPTIONS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
#: Ollama-only sampling knobs a client may send in the body (``extra_body``); passed on as options
EXTRA_OPTIONS = ("top_k", "min_p", "repeat_penalty", "num_ctx")


def bad_request(message: str, code: str = "invalid_value") -> UpstreamError:
    """A request Ollama cannot express: fails fast as ``bad_request`` rather than reaching the upstream."""
    return UpstreamError(message, kind="http", status=400, code=code)


def native_code(message: str) -> str | None:
    """An OpenAI-style error code for the Ollama errors that only say what happened in words.

    Ollama's error bodies are a bare ``{"error": "..."}``; naming the two that
    matter for routing keeps their class independent of message matching.
    """
    if "exceeds the context length" in message:
        return "context_length_exceeded"
    if "not found, try pulling it first" in message:
        return "model_not_found"
    return None


# --------------------------------------------------------------------------- #
# the base URL
# --------------------------------------------------------------------------- #


def normalise_host(value: str | None) -> str:
    """A base URL from ``OLLAMA_HOST``-style values (``127.0.0.1:11434``, ``0.0.0.0``, ``:8080``, a URL).

    Follows the Ollama CLI's reading of ``OLLAMA_HOST``: no scheme means ``http``
    and port 11434; a bind-all address (``0.0.0.0``, ``::``) is what a server
    listens on, so a client connects to loopback instead. A trailing ``/api``
    is dropped, because the paths this provider appends already start with it
    (Ollama's cloud documents its base as ``https://ollama.com/api``).
    """
    raw = (value or "").strip()
    if not raw:
        return f"http://127.0.0.1:{DEFAULT_PORT}"
    has_scheme = "://" in raw
    parts = urlsplit(raw if has_scheme else f"http://{raw}")
    scheme = parts.scheme or "http"
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("::", "0:0:0:0:0:0:0:0"):
        host = "::1"
    try:
        port = parts.port
    except ValueError:  # a non-numeric port: keep the text and let the connection attempt report it
        return raw.rstrip("/")
    if port is None and not has_scheme:
        port = DEFAULT_PORT
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username:  # user:pass@ for a proxy in front of Ollama
        auth = parts.username + (f":{parts.password}" if parts.password else "")
        netloc = f"{auth}@{netloc}"
    path = parts.path.rstrip("/").removesuffix("/api")
    return f"{scheme}://{netloc}{path}"


# --------------------------------------------------------------------------- #
# OpenAI request -> /api/chat body
# --------------------------------------------------------------------------- #


async def chat_body(
    body: Mapping[str, Any],
    model: str,
    *,
    stream: bool,
    session: aiohttp.ClientSession,
    defaults: Mapping[str, Any],
    keep_alive: Any = None,
) -> dict[str, Any]:
    """The ``/api/chat`` request for an OpenAI chat request.

    ``defaults`` are model options from the provider's config (``num_ctx``, the
    ``options`` table); the client's own parameters override them. ``stream`` is
    always sent explicitly because Ollama streams unless told not to.
    """
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("Ollama returns one choice per request: 'n' must be 1")
    out: dict[str, Any] = {"model": model, "messages": await messages_of(body, session), "stream": stream}
    if (tools := tools_payload(body)) is not None:
        out["tools"] = tools
    json_mode, schema = json_schema_of(dict(body))
    if schema is not None:
        out["format"] = schema
    elif json_mode:
        out["format"] = "json"
    if options := options_payload(body, defaults):
        out["options"] = options
    if (think := think_of(body)) is not None:
        out["think"] = think
    if keep_alive is not None:
        out["keep_alive"] = keep_alive
    return out


async def messages_of(body: Mapping[str, Any], session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """OpenAI messages as Ollama messages, in order (system messages stay where they are)."""
    names: dict[str, str] = {}  # tool_call_id -> function name, for the tool results that follow
    out: list[dict[str, Any]] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            raise bad_request("each message must be an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": text_of(content)})
        elif role == "user":
            out.append(await _user_message(content, session))
        elif role == "assistant":
            out.append(_assistant_message(message, names))
        elif role in ("tool", "function"):
            result: dict[str, Any] = {"role": "tool", "content": text_of(content)}
            # Ollama pairs a result with its call by function name, not by id
            name = names.get(str(message.get("tool_call_id") or "")) or message.get("name")
            if name:
                result["tool_name"] = name
            out.append(result)
        else:
            raise bad_request(f"message role {role!r} is not supported by Ollama")
    return out


async def _user_message(content: Any, session: aiohttp.ClientSession) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": text_of(content)}
    if isinstance(content, list):
        images: list[str] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                continue
            if kind != "image_url":
                raise bad_request(
                    f"content part type {kind!r} is not supported by Ollama (text and image_url are)"
                )
            image = await fetch_image(session, parse_image(part))  # Ollama takes bare base64 only
            images.append(image.data or "")
        if images:
            message["images"] = images
    return message


def _assistant_message(message: Mapping[str, Any], names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": text_of(message.get("content"))}
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        if call.get("id"):
            names[str(call["id"])] = name
        # Ollama wants the arguments as an object, OpenAI sends them as JSON text
        calls.append({"function": {"name": name, "arguments": parse_arguments(function.get("arguments"))}})
    if calls:
        out["tool_calls"] = calls
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out["thinking"] = reasoning
    return out


def tools_payload(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The tools to offer; Ollama has no ``tool_choice``, so it is expressed through the list.

    ``none`` offers no tools; a named function offers only that one; ``required``
    cannot be enforced and offers them all (the model may still answer in text).
    """
    tools = tools_of(dict(body))
    choice = tool_choice_of(dict(body))
    if not tools or choice == "none":
        return None
    if choice not in (None, "required"):
        tools = [t for t in tools if t.name == choice]
        if not tools:
            raise bad_request(f"tool_choice names function {choice!r}, which is not in 'tools'")
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = tool.parameters
        out.append({"type": "function", "function": function})
    return out


def options_payload(body: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama ``options``: configured defaults, then the client's sampling parameters."""
    options = dict(defaults)
    for key in (*SAME_NAME_OPTIONS, *EXTRA_OPTIONS):
        if body.get(key) is not None:
            options[key] = body[key]
    if (limit := max_tokens_of(dict(body))) is not None:
        options["num_predict"] = limit
    if stop := stop_of(dict(body)):
        options["stop"] = stop
    return options


def think_of(body: Mapping[str, Any]) -> object:
    """Ollama's ``think`` from ``reasoning_effort`` (True, or a level), or None to leave it out.

    A ``think`` the client sent itself passes through as sent, whatever its JSON type:
    Ollama, not the gateway, decides what it accepts.
    """
    if (think := body.get("think")) is not None:
        return think
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    if effort not in THINK_LEVELS:
        known = ", ".join(THINK_LEVELS)
        raise bad_request(f"reasoning_effort {effort!r} is not supported by Ollama (one of: {known})")
    return THINK_LEVELS[effort]


# --------------------------------------------------------------------------- #
# /api/chat response -> OpenAI
# --------------------------------------------------------------------------- #


def tool_calls_of(message: Mapping[str, Any]) -> list[ToolCall]:
    """A response message's tool calls, OpenAI-shaped; ids are made up when Ollama sends none."""
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        args = function.get("arguments")
        text = args if isinstance(args, str) else jsonutil.dumps(args if args is not None else {}).decode()
        calls.append(ToolCall(str(call.get("id") or new_id("call_")), str(function.get("name") or ""), text))
    return calls


def finish_reason(done_reason: Any, tool_calls: bool) -> str:
    """OpenAI's finish reason: ``length`` stays, anything else is ``stop`` or, with calls, ``tool_calls``.

    Ollama reports ``stop`` after a tool call (its own compat layer rewrites it the
    same way); ``load``/``unload`` only answer empty requests.
    """
    if done_reason == "length":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def usage_of(obj: Mapping[str, Any]) -> Usage:
    """``prompt_eval_count``/``eval_count`` as usage; a count Ollama omits (cached prompt) is 0."""
    return Usage(
        prompt_tokens=_count(obj.get("prompt_eval_count")), completion_tokens=_count(obj.get("eval_count"))
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def created_of(obj: Mapping[str, Any]) -> int | None:
    """Unix seconds from ``created_at`` (RFC 3339 with nanoseconds), or None if unreadable."""
    value = obj.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def embedding_item(index: int, vector: Any, base64_format: bool) -> dict[str, Any]:
    """One OpenAI embedding object; ``base64`` is little-endian float32, as OpenAI encodes it."""
    if not isinstance(vector, list) or not all(isinstance(v, int | float) for v in vector):
        raise UpstreamError("ollama: an embedding is not a list of numbers", kind="stream")
    embedding = embedding_base64(vector) if base64_format else vector
    return {"object": "embedding", "index": index, "embedding": embedding}


# --------------------------------------------------------------------------- #
# the NDJSON stream
# --------------------------------------------------------------------------- #


async def iter_lines(
    content: aiohttp.StreamReader, name: str, limit: int = MAX_LINE_BYTES
) -> AsyncIterator[bytes]:
    """Non-empty lines of an NDJSON body, however the bytes arrive (one line can carry a whole
    tool call, so the shared reader's no-length-cap splitting matters here)."""
    try:
        async for raw in body_lines(content, limit):
            if line := raw.strip():
                yield line
    except UpstreamError as exc:
        raise UpstreamError(f"{name}: {exc.message}", kind="stream") from None
