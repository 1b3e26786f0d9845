"""A streamed answer written as Anthropic Messages events.

Chunks from a target that speaks Messages itself (``chunk.native``) are complete
events already and are written through untouched. Chat chunks from a translated
target become the Messages event sequence the ``anthropic`` SDK's accumulator
(``MessageStream``) rebuilds a ``message`` from:

``message_start`` (the message shell), ``ping``, then per content block
``content_block_start`` / ``content_block_delta`` … / ``content_block_stop``
(``thinking`` from ``reasoning_content`` with ``thinking_delta``, ``text`` with
``text_delta``, one ``tool_use`` per tool call with ``input_json_delta``), then
``message_delta`` (``stop_reason`` and the usage) and ``message_stop``.

A chat stream reports its usage only at the end, so ``message_start`` carries zero
input tokens and ``message_delta`` the real counts, input and cache fields included:
the SDK's accumulator takes them from there (message_delta usage is cumulative).
Blocks are written one after another: a chunk of another kind closes the open block.
A stream that succeeded ends with the cost (and a fallback's cost delta) as SSE comments, which clients ignore;
one that failed after it started ends with an ``error`` event in Anthropic's error
shape, which the SDK raises.
"""

from __future__ import annotations

from typing import Any

from interlock.core import jsonutil
from interlock.core.doors.messages_response import (
    error_body,
    message_id,
    message_usage,
    reasoning_of,
    stop_reason,
)
from interlock.core.errors import GatewayError
from interlock.core.openai_shapes import new_id
from interlock.core.routing_headers import cost_comment
from interlock.core.sse import encode_named_event
from interlock.core.types import Chunk, Decision, Usage


def event(name: str, data: dict[str, Any]) -> bytes:
    """One Messages server-sent event."""
    return encode_named_event(name, jsonutil.dumps(data))


class MessagesStream:
    """Writes one streamed answer in the Messages protocol; see the module docstring."""

    __slots__ = ("extra_headers", "_started", "_native", "_open", "_next", "_tools", "_stop", "_usage")
    content_type = "text/event-stream"

    def __init__(self, request_id: str = "") -> None:
        #: the anthropic SDK reads a response's request id from ``request-id``
        self.extra_headers = {"request-id": request_id} if request_id else {}
        self._started = False  # message_start written (translated chunks only)
        self._native = False  # the answer came from a Messages target: its events are the stream
        self._open: tuple[str, int | None] | None = None  # the open block: its kind and, for a tool, the call index
        self._next = 0  # the next content-block index
        self._tools: dict[int, int] = {}  # tool-call index -> content-block index
        self._stop: str | None = None
        self._usage: Usage | None = None

    def start(self) -> bytes:
        # whether the answer is native is only known from the first chunk: message_start waits for it
        return b""

    def chunk(self, chunk: Chunk) -> bytes:
        if chunk.native:
            self._native = True
            return chunk.payload
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.usage_only:
            return b""
        obj = jsonutil.loads(chunk.payload)
        out = bytearray()
        if not self._started:
            out += self._message_start(str(obj.get("model") or ""))
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # a Messages answer has one choice
            delta = choice.get("delta") or {}
            if reasoning := reasoning_of(delta):
                out += self._block("thinking", None, {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta({"type": "thinking_delta", "thinking": reasoning})
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                out += self._block("text", None, {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                out += self._close()
                self._stop = stop_reason(choice["finish_reason"], choice.get("native_finish_reason"))
        return bytes(out)

    def end(self, decision: Decision) -> bytes:
        out = bytearray()
        if not self._native:
            if not self._started:
                out += self._message_start(decision.model or decision.requested_model)
            out += self._close()
            out += event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                "usage": message_usage(self._usage),
            })
            out += event("message_stop", {"type": "message_stop"})
        out += cost_comment(decision)
        return bytes(out)

    def error(self, err: GatewayError) -> bytes:
        return event("error", error_body(err))

    # -- the event sequence ------------------------------------------------ #

    def _message_start(self, model: str) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(), "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": message_usage(None),
        }
        return event("message_start", {"type": "message_start", "message": message}) + event("ping", {"type": "ping"})

    def _block(self, kind: str, tool: int | None, block: dict[str, Any]) -> bytes:
        """Open a block of ``kind`` unless it is the open one (closing the one before)."""
        if self._open == (kind, tool):
            return b""
        out = self._close()
        self._open = (kind, tool)
        index = self._next
        self._next += 1
        if tool is not None:
            self._tools[tool] = index
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return out + event("content_block_start", start)

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        return event("content_block_delta", {
            "type": "content_block_delta", "index": self._next - 1 if index is None else index, "delta": delta,
        })

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._next - 1})

    def _tool_call(self, call: Any) -> bytes:
        if not isinstance(call, dict):
            return b""
        index = call.get("index")
        position = index if isinstance(index, int) else 0
        fn = call.get("function") or {}
        out = b""
        if position not in self._tools:
            out += self._block("tool", position, {
                "type": "tool_use", "id": str(call.get("id") or new_id("toolu_")), "name": str(fn.get("name") or ""),
                "input": {},
            })
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            # fragments of a call whose block is closed (a provider interleaving calls) still go to its index
            out += self._delta({"type": "input_json_delta", "partial_json": arguments}, self._tools[position])
        return out
