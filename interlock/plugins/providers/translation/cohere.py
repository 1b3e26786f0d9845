"""Cohere v2 <-> OpenAI translation: the request body, the response message, usage and finish reasons.

Pure functions over JSON-shaped dicts, kept apart from :mod:`interlock.plugins.providers.cohere`
(which does the HTTP, the stream and the errors) so each stays small and testable.
Wire format facts come from the official ``cohere`` SDK's v2 types (``ChatMessageV2``,
``ToolContent``, ``ResponseFormatV2``, ``V2ChatResponse``, ``Usage``).
"""

from __future__ import annotations

from typing import Any

from interlock.provider_api import (
    ToolCall,
    UpstreamError,
    Usage,
    json_schema_of,
    jsonutil,
    max_tokens_of,
    stop_of,
    system_text,
    text_of,
    tool_choice_of,
    tools_of,
)

#: Cohere finish reasons that end a generation normally, in OpenAI's words. ``ERROR`` and
#: ``TIMEOUT`` are not here: they are failures, raised so the router can retry or fall back.
FINISH_REASONS: dict[str, str] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}

#: request fields that only Cohere understands, passed through untouched when a client sends them
PASSTHROUGH = ("documents", "citation_options", "safety_mode", "thinking", "priority", "strict_tools")

#: scalar parameters with the same name and meaning on both sides
_SAME_NAME = ("temperature", "seed", "frequency_penalty", "presence_penalty")


def _bad_request(message: str, code: str = "invalid_value") -> UpstreamError:
    """A request Cohere cannot express: fails like Cohere's own 400 would."""
    return UpstreamError(message, kind="http", status=400, code=code)


# --------------------------------------------------------------------------- #
# OpenAI request -> Cohere v2 request
# --------------------------------------------------------------------------- #


def chat_body(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """The ``POST /v2/chat`` body for an OpenAI chat request."""
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise _bad_request("cohere returns one choice per request; 'n' greater than 1 is not supported")
    out: dict[str, Any] = {"model": model, "messages": messages(body.get("messages") or [])}
    tools, choice = _tools(body)
    if tools:
        out["tools"] = tools
        if any((t.get("function") or {}).get("strict") for t in body.get("tools") or ()):
            out["strict_tools"] = True
    if choice:
        out["tool_choice"] = choice
    json_mode, schema = json_schema_of(body)
    if json_mode:
        out["response_format"] = {"type": "json_object", **({"json_schema": schema} if schema else {})}
    if (limit := max_tokens_of(body)) is not None:
        out["max_tokens"] = limit
    if stop := stop_of(body):
        out["stop_sequences"] = stop
    if body.get("top_p") is not None:
        out["p"] = body["top_p"]
    if body.get("top_k") is not None:  # not OpenAI's, but a common extra that Cohere calls k
        out["k"] = body["top_k"]
    for key in _SAME_NAME:
        if body.get(key) is not None:
            out[key] = body[key]
    for key in PASSTHROUGH:
        if body.get(key) is not None:
            out[key] = body[key]
    if stream:
        out["stream"] = True
    return out


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Cohere's ``tools`` and ``tool_choice``.

    Cohere's ``tool_choice`` is only ``REQUIRED`` or ``NONE``; a named function is expressed by
    offering only that function and requiring a call, which forces exactly that call.
    """
    tools: list[dict[str, Any]] = []
    for t in tools_of(body):
        function: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
        if t.description:
            function["description"] = t.description
        tools.append({"type": "function", "function": function})
    choice = tool_choice_of(body)
    if choice is None or not tools:
        return tools, None
    if choice == "none":
        return tools, "NONE"
    if choice == "required":
        return tools, "REQUIRED"
    named = [t for t in tools if t["function"]["name"] == choice]
    if not named:
        raise _bad_request(f"tool_choice names the function {choice!r}, which is not in 'tools'")
    return named, "REQUIRED"


def messages(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as Cohere v2 messages; system and developer turns are lifted to the front.

    Cohere rejects a system turn that is not the first one, so all of them become one leading
    system message, as with the other providers that take a single system prompt.
    """
    out: list[dict[str, Any]] = []
    if (system := system_text(msgs)) is not None:
        out.append({"role": "system", "content": system})
    for msg in msgs:
        role = msg.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            out.append({"role": "user", "content": user_content(msg.get("content"))})
        elif role == "assistant":
            out.append(assistant_message(msg))
        elif role == "tool":
            out.append(tool_message(str(msg.get("tool_call_id") or ""), msg.get("content")))
        elif role == "function":  # the legacy function-calling result: its name is the only id it has
            out.append(tool_message(str(msg.get("name") or ""), msg.get("content")))
        else:
            raise _bad_request(f"cohere has no equivalent of the message role {role!r}")
    return out


def user_content(content: Any) -> str | list[dict[str, Any]]:
    """A user message's content: a string, or Cohere's ``text`` / ``image_url`` parts."""
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            # Cohere takes the URL as OpenAI sends it: a data URI or a web URL it fetches itself
            image = part.get("image_url") or {}
            url = {k: image[k] for k in ("url", "detail") if k in image}
            parts.append({"type": "image_url", "image_url": url})
        else:
            raise _bad_request(f"cohere does not accept '{kind}' content parts", code="unsupported_content")
    return parts


def assistant_message(msg: dict[str, Any]) -> dict[str, Any]:
    """An assistant turn: its text, its tool calls (same shape as OpenAI's), and any ``tool_plan``."""
    out: dict[str, Any] = {"role": "assistant"}
    content = msg.get("content")
    text = content if isinstance(content, str) else "".join(
        p.get("text") or p.get("refusal") or "" for p in content or () if isinstance(p, dict)
    )
    calls = [
        {"id": str(c.get("id", "")), "type": "function",
         "function": {"name": c["function"]["name"], "arguments": c["function"].get("arguments") or "{}"}}
        for c in msg.get("tool_calls") or ()
    ]
    legacy = msg.get("function_call")
    if isinstance(legacy, dict) and legacy.get("name"):
        calls.append({"id": legacy["name"], "type": "function",
                      "function": {"name": legacy["name"], "arguments": legacy.get("arguments") or "{}"}})
    if msg.get("tool_plan"):  # what this gateway returned on the earlier turn; Cohere wants it back
        out["tool_plan"] = msg["tool_plan"]
    if calls:
        out["tool_calls"] = calls
    if text or not calls:
        out["content"] = text
    return out


def tool_message(call_id: str, content: Any) -> dict[str, Any]:
    """A tool result. A JSON object (or array of objects) becomes Cohere documents it can cite."""
    text = text_of(content)
    documents: list[dict[str, Any]] = []
    if text[:1] in ("{", "["):
        try:
            parsed = jsonutil.loads(text)
        except jsonutil.JSONDecodeError:
            parsed = None
        items = parsed if isinstance(parsed, list) else [parsed]
        if items and all(isinstance(i, dict) for i in items):
            documents = [{"type": "document", "document": {"data": i}} for i in items]
    return {"role": "tool", "tool_call_id": call_id, "content": documents or text}


def embed_body(body: dict[str, Any], model: str, input_type: str) -> dict[str, Any]:
    """The ``POST /v2/embed`` body: texts only (Cohere embeds no token arrays), float vectors."""
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise _bad_request("cohere embeds text only; token-array inputs are not supported")
    out: dict[str, Any] = {
        "model": model,
        "texts": texts,
        "input_type": body.get("input_type") or input_type,  # a client may pick it per request
        "embedding_types": ["float"],  # base64 is packed here, in OpenAI's little-endian float32 layout
    }
    if body.get("dimensions") is not None:
        out["output_dimension"] = body["dimensions"]
    if body.get("truncate") is not None:
        out["truncate"] = body["truncate"]
    return out


# --------------------------------------------------------------------------- #
# Cohere v2 response -> OpenAI
# --------------------------------------------------------------------------- #


def _count(value: Any) -> int:
    """Cohere types token counts as numbers (floats on the wire); OpenAI's are integers."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def usage_of(usage: Any) -> Usage | None:
    """OpenAI usage from Cohere's: ``billed_units`` (what Cohere charges for) over ``tokens``.

    ``tokens`` counts everything the model processed, including the prompt template Cohere
    wraps around the messages, which is not billed; usage is what interlock costs, so the
    billed counts win and ``tokens`` only stands in when a response has no ``billed_units``.
    """
    if not isinstance(usage, dict):
        return None
    tokens = usage.get("tokens") or {}
    billed = usage.get("billed_units") or {}
    prompt = billed.get("input_tokens", tokens.get("input_tokens"))
    completion = billed.get("output_tokens", tokens.get("output_tokens"))
    if prompt is None and completion is None:
        return None
    return Usage(prompt_tokens=_count(prompt), completion_tokens=_count(completion),
                 cached_tokens=_count(usage.get("cached_tokens")))


def object_of(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: nested fields of Cohere's bodies are optional."""
    return value if isinstance(value, dict) else {}


def split_content(content: Any) -> tuple[str, str]:
    """``(text, thinking)`` of a response message's content blocks."""
    if isinstance(content, str):
        return content, ""
    text, thinking = [], []
    for block in content or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking":
            thinking.append(block.get("thinking") or "")
        elif block.get("type") == "text":
            text.append(block.get("text") or "")
    return "".join(text), "".join(thinking)


def tool_calls_of(message: dict[str, Any]) -> list[ToolCall]:
    """A response message's tool calls; an empty argument string becomes ``{}`` so it parses."""
    calls = []
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        arguments = fn.get("arguments") or "{}"
        calls.append(ToolCall(str(call.get("id") or ""), str(fn.get("name") or ""), arguments))
    return calls


def finish_reason(native: str | None, *, tool_calls: bool) -> str:
    """OpenAI's finish reason for a successful generation.

    A turn that produced tool calls is ``tool_calls`` whatever Cohere says (some models report
    ``COMPLETE`` there), so clients that branch on it run their tools.
    """
    if tool_calls and native in (None, "COMPLETE", "TOOL_CALL"):
        return "tool_calls"
    return FINISH_REASONS.get(native or "", "stop")
