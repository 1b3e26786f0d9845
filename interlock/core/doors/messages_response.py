"""Chat Completions answers written back as Anthropic Messages: the ``message``, its usage, errors.

A translated target's ``chat.completion`` becomes a ``message`` whose content is, in
this order, a ``thinking`` block (the chat ``reasoning_content``; its signature is
empty, as no Claude model signed it), a ``text`` block, and one ``tool_use`` block
per tool call (the call's id, its arguments parsed as JSON). ``model`` is the model
that answered, as the upstream named it (a native answer names its model the same
way). Usage is turned from OpenAI semantics back into Anthropic's, where
``input_tokens`` excludes cache reads and writes.

The shapes follow the ``anthropic`` SDK's types (``anthropic.types.Message``,
``Usage``, ``StopReason``, the error envelope).
"""

from __future__ import annotations

from typing import Any

from interlock.core import jsonutil
from interlock.core.errors import GatewayError
from interlock.core.openai_shapes import new_id
from interlock.core.types import Usage

#: chat ``finish_reason`` -> Messages ``stop_reason``
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# the Messages stop reasons a chat answer from a Claude model keeps as ``native_finish_reason``
_NATIVE_STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
                                  "model_context_window_exceeded"})

#: HTTP status -> Anthropic ``error.type`` (anything else: 4xx invalid_request_error, 5xx api_error)
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def message_id() -> str:
    """A fresh ``msg_…`` id for a translated answer."""
    return new_id("msg_")


def stop_reason(finish_reason: str | None, native: Any = None) -> str:
    """The ``stop_reason`` for a chat choice's ``finish_reason`` (a Claude model's own reason kept)."""
    if isinstance(native, str) and native in _NATIVE_STOP_REASONS:
        return native
    return STOP_REASONS.get(finish_reason or "", "end_turn")


def message_usage(usage: Usage | None) -> dict[str, int]:
    """OpenAI-semantics usage as Anthropic's: ``input_tokens`` without the cache reads and writes."""
    if usage is None:
        usage = Usage()
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def tool_input(arguments: Any) -> Any:
    """A tool call's arguments as the ``input`` object (text that is not JSON is kept under ``_raw``)."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = jsonutil.loads(arguments)
    except (jsonutil.JSONDecodeError, TypeError):
        return {"_raw": str(arguments)}
    return value if isinstance(value, dict) else {"_raw": str(arguments)}


def reasoning_of(message: dict[str, Any]) -> str | None:
    """A chat message's or delta's reasoning text (``reasoning_content``, or ``reasoning`` as some APIs name it)."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) and value else None


def to_message(body: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """A ``chat.completion`` body (its first choice) as a Messages ``message``."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reasoning := reasoning_of(message):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):  # content parts, from the rare provider that answers with them
        text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
    if text or message.get("refusal"):
        content.append({"type": "text", "text": str(text or message.get("refusal"))})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({
            "type": "tool_use", "id": str(call.get("id") or new_id("toolu_")), "name": str(fn.get("name") or ""),
            "input": tool_input(fn.get("arguments")),
        })
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model") or ""),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), choice.get("native_finish_reason")),
        "stop_sequence": None,
        "usage": message_usage(usage if usage is not None else Usage.from_openai(body.get("usage"))),
    }


def error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status."""
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(err: GatewayError) -> dict[str, Any]:
    """``err`` in Anthropic's error envelope."""
    return {"type": "error", "error": {"type": error_type(err.status), "message": err.message}}
