"""Wire facts of the OpenAI Responses API shared by its front door and the providers that speak it.

The Responses door (:mod:`interlock.core.doors.openai_responses`) writes usage in
this shape; a provider that takes Responses requests natively
(:class:`~interlock.core.openai_compatible.OpenAICompatible` with ``responses``)
reads usage out of it and turns each upstream server-sent event into a native
:class:`~interlock.core.types.Chunk`. Responses usage counts the same way as the
gateway's :class:`~interlock.core.types.Usage` (input includes cached tokens,
output includes reasoning tokens), so the conversion is a renaming.
"""

from __future__ import annotations

import re
from typing import Any

from interlock.core import jsonutil
from interlock.core.sse import encode_named_event
from interlock.core.types import Chunk, UpstreamError, Usage

#: events that carry generated output: the first of them is the stream's commit point
_CONTENT_SUFFIXES = (".delta", ".done")
_CONTENT_PREFIXES = (
    "response.output_text.", "response.refusal.", "response.function_call_arguments.", "response.reasoning",
    "response.custom_tool_call_input.", "response.output_item.done",
)
#: lifecycle events whose ``response`` object is parsed (ids, usage, status); others are passed on unparsed
_LIFECYCLE = frozenset({"response.created", "response.completed", "response.incomplete", "response.failed"})
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


def usage_from_responses(usage: Any, output: Any = None) -> Usage | None:
    """A Responses ``usage`` object in the gateway's :class:`Usage` (None when absent); the response's
    ``output`` items count the web searches its built-in tool ran (billed per call)."""
    if not isinstance(usage, dict):
        return None
    searches = sum(1 for item in output if isinstance(item, dict) and item.get("type") == "web_search_call") \
        if isinstance(output, list) else 0
    details = usage.get("input_tokens_details") or {}
    out_details = usage.get("output_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        reasoning_tokens=int(out_details.get("reasoning_tokens") or 0),
        cache_write_tokens=int(details.get("cache_write_tokens") or 0),
        web_search_requests=searches,
    )


def usage_to_responses(usage: Usage | None) -> dict[str, Any] | None:
    """The gateway's :class:`Usage` as a Responses ``usage`` object (None when unknown)."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def finish_reason(response: dict[str, Any]) -> str:
    """The Chat Completions finish reason a finished response object amounts to (for the decision record)."""
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    output = response.get("output") or ()
    if any(isinstance(item, dict) and item.get("type") == "function_call" for item in output):
        return "tool_calls"
    return "stop"


def sequence_number(payload: bytes) -> int | None:
    """The ``sequence_number`` of an encoded event, found without parsing the JSON (None when absent)."""
    match = _SEQUENCE.search(payload)
    return int(match.group(1)) if match else None


def native_chunk(name: str, event: str, data: bytes) -> Chunk | None:
    """One upstream Responses event as a native chunk; raises for ``error`` and ``response.failed``.

    ``event`` is the SSE event name (``"message"`` when the upstream sent none: then the
    JSON's ``type`` names it). Only lifecycle events are parsed. Returns None for an
    event that carries nothing to forward (a keep-alive without data).
    """
    if not data:
        return None
    obj: Any = None
    if event == "message" or event in _LIFECYCLE or event == "error":
        try:
            obj = jsonutil.loads(data)
        except jsonutil.JSONDecodeError:
            raise UpstreamError(f"{name}: malformed stream event", kind="stream") from None
        if not isinstance(obj, dict):
            raise UpstreamError(f"{name}: stream event is not a JSON object", kind="stream")
        event = str(obj.get("type") or event)
    if event == "error" or event == "response.failed":
        err = obj.get("error") if event == "error" else (obj.get("response") or {}).get("error")
        err = err if isinstance(err, dict) else obj  # an "error" event carries code/message at its top level
        message = str(err.get("message") or "the upstream response failed")
        code = err.get("code")
        raise UpstreamError(f"{name} stream error: {message}", kind="stream", body=obj, code=str(code) if code else None)
    chunk = Chunk(payload=encode_named_event(event, data), native=True)
    if event.startswith(_CONTENT_PREFIXES) and event.endswith(_CONTENT_SUFFIXES):
        chunk.content = True
    elif event in _LIFECYCLE:
        response = obj.get("response") if isinstance(obj, dict) else None
        if isinstance(response, dict):
            chunk.response_id = response.get("id")
            chunk.response_model = response.get("model")
            if event != "response.created":
                chunk.usage = usage_from_responses(response.get("usage"), response.get("output"))
                chunk.finish_reason = finish_reason(response)
    return chunk
