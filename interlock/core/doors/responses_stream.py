"""The Responses door's stream writer: chat chunks as Responses events, native events written through.

A translated stream becomes the Responses event sequence: ``response.created``,
``response.in_progress``, each output item's ``added``/part/delta/``done`` events
(built by :class:`~interlock.core.doors.responses_output.OutputBuilder`), then
``response.completed`` (or ``response.incomplete``) carrying the whole response
with its usage; every event has the next ``sequence_number``. A failure after
the start ends the stream with ``response.failed``.

A target that speaks Responses natively streams its own events, which are written
as they are. The writer still reads a little of them: the ``sequence_number`` of
each (a regular-expression search, no JSON parse) and, once each, the
``response.created`` and final events (two JSON parses per stream), so that a
failure can be reported as a ``response.failed`` the SDK accepts (same response
id, the next sequence number) and a finished response can be stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from interlock.core import jsonutil
from interlock.core.doors.responses_output import OutputBuilder, response_object, status_of
from interlock.core.errors import GatewayError
from interlock.core.responses_wire import sequence_number
from interlock.core.routing_headers import cost_comment
from interlock.core.sse import encode_named_event
from interlock.core.types import Chunk, Decision, Usage

#: called with the finished response object (to store it)
OnDone = Callable[[dict[str, Any]], None]


#: the events whose data carries the whole ``response`` object (checked on the encoded event's first line)
_LIFECYCLE_EVENTS = tuple(
    f"event: response.{name}\n".encode()
    for name in ("created", "in_progress", "completed", "incomplete", "failed", "queued")
)


def _data(payload: bytes) -> Any:
    """The JSON of one encoded event (``event: …`` then ``data: …``)."""
    _, _, rest = payload.partition(b"data:")
    return jsonutil.loads(rest.strip())


class ResponsesStream:
    """One streamed Responses answer (a :class:`~interlock.core.lifecycle.StreamWriter`)."""

    content_type = "text/event-stream"
    extra_headers: Mapping[str, str] = MappingProxyType({})  # none beyond the routing headers

    def __init__(
        self, request: dict[str, Any], response_id: str, created_at: float, model: str, on_done: OnDone,
        echoed: dict[str, Any] | None = None,
    ) -> None:
        self.request = request
        #: fields set back on a native target's response objects (see ResponsesContext.echoed)
        self.echoed = echoed or {}
        self.response_id = response_id
        self.created_at = created_at
        self.model = model
        self.on_done = on_done
        self._seq = -1
        self._out: list[bytes] = []
        self._builder = OutputBuilder(self._emit)
        self._started = False
        self._finish: str | None = None
        self._usage: Usage | None = None
        # native pass-through
        self._native = False
        self._native_created: dict[str, Any] | None = None
        self._native_final: dict[str, Any] | None = None

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        self._seq += 1
        event = {"type": kind, **fields, "sequence_number": self._seq}
        self._out.append(encode_named_event(kind, jsonutil.dumps(event)))

    def _flush(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def _response(self, **kwargs: Any) -> dict[str, Any]:
        return response_object(self.request, self.response_id, self.created_at, self.model, **kwargs)

    def _begin(self) -> None:
        self._started = True
        self._emit("response.created", {"response": self._response()})
        self._emit("response.in_progress", {"response": self._response()})

    # -- StreamWriter ------------------------------------------------------------ #

    def start(self) -> bytes:
        return b""  # response.created waits for the first chunk: it names the model that answers

    def chunk(self, chunk: Chunk) -> bytes:
        if chunk.native:
            return self._native_chunk(chunk)
        if not self._started:
            if chunk.response_model:
                self.model = chunk.response_model
            self._begin()
        if chunk.usage is not None:
            self._usage = chunk.usage
        obj = jsonutil.loads(chunk.payload)
        for choice in obj.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # Responses has one output: n > 1 is not asked for by this door
            self._builder.delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return self._flush()

    def end(self, decision: Decision) -> bytes:
        trailer = cost_comment(decision)
        if self._native:
            if self._native_final is not None:
                self.on_done(self._native_final)
            return trailer
        if not self._started:
            self._begin()
        status, incomplete = status_of(self._finish)
        output = self._builder.finish(status if status == "completed" else "incomplete")
        final = self._response(status=status, output=output, usage=self._usage or decision.usage, incomplete=incomplete)
        self._emit("response.completed" if status == "completed" else "response.incomplete", {"response": final})
        self.on_done(final)
        return self._flush() + trailer

    def error(self, err: GatewayError) -> bytes:
        code = "rate_limit_exceeded" if err.code == "rate_limited" else "server_error"
        error = {"code": code, "message": err.message}
        if self._native and self._native_created is not None:
            failed = {**self._native_created, "status": "failed", "error": error, "output": [], "usage": None}
        else:
            if not self._started:
                self._begin()
            # the items under way end as incomplete (their done events first), so the failed response holds the text so far
            failed = self._response(status="failed", output=self._builder.finish("incomplete"))
            failed["error"] = error
        self._emit("response.failed", {"response": failed})
        return self._flush()

    # -- native events ------------------------------------------------------- #

    def _native_chunk(self, chunk: Chunk) -> bytes:
        self._native = True
        seq = sequence_number(chunk.payload)
        if seq is not None:
            self._seq = seq
        if self._native_created is None and chunk.response_id is not None:
            self._native_created = self._lifecycle(chunk.payload)
        elif chunk.finish_reason is not None:
            self._native_final = self._lifecycle(chunk.payload)
        if self.echoed and chunk.payload.startswith(_LIFECYCLE_EVENTS):
            return self._echo(chunk.payload)
        return chunk.payload

    def _echo(self, payload: bytes) -> bytes:
        """A response lifecycle event re-encoded with the client's own ``echoed`` fields (chained requests only)."""
        try:
            event = _data(payload)
            response = event["response"]
        except (jsonutil.JSONDecodeError, KeyError, TypeError):
            return payload
        if not isinstance(response, dict):
            return payload
        response.update(self.echoed)
        for kept in (self._native_created, self._native_final):
            if kept is not None:
                kept.update(self.echoed)
        return encode_named_event(str(event.get("type") or ""), jsonutil.dumps(event))

    @staticmethod
    def _lifecycle(payload: bytes) -> dict[str, Any] | None:
        try:
            response = _data(payload).get("response")
        except (jsonutil.JSONDecodeError, AttributeError):
            return None
        return response if isinstance(response, dict) else None
