"""Anthropic Messages answers passed through untranslated: reading them for the router.

When a client speaks the Messages API and the target does too (Anthropic itself,
Claude on Vertex AI or Bedrock), the upstream's answer goes to the client as it is:
this module only *reads* it, so the router can commit, account and record the
request. Not a registered plugin: a helper every Claude provider shares. Pure, no I/O.
The stable public API:

* :func:`request_body` — the client's Messages body (``ctx.native``) for one target:
  a copy with the target's ``model`` (or none, for platforms that put the model in the
  URL) and ``stream`` set as the call needs it.
* :func:`client_headers` — the ``anthropic-version`` / ``anthropic-beta`` headers the
  client sent (``ctx.headers``), to forward with the call.
* :func:`message_usage` — a Messages ``message``'s usage in OpenAI semantics.
* :class:`EventReader` — one stream's events, each turned into a native :class:`Chunk`
  (payload: the event re-encoded as ``event: …\\ndata: …\\n\\n``); raises
  ``UpstreamError(kind="stream")`` on an in-band ``error`` event or a malformed one.
  Its :attr:`EventReader.finished` says whether ``message_stop`` was seen.
* :func:`native_chunks` — the whole loop over ``(event, data)`` pairs from
  :func:`interlock.core.sse.iter_sse`; a stream that ends before ``message_stop`` is a
  broken stream.

Usage in a stream is split: ``message_start`` carries the input side (fresh input,
cache reads, cache writes) and ``message_delta`` the cumulative output (and, in newer
API versions, updated input counts). The reader merges them, later values winning,
and sets the merged :class:`Usage` on the ``message_delta`` chunk only, so the
attempt's usage is complete once and is never counted twice. The ``message_start``
chunk carries its input side as ``usage_so_far``, which the attempt keeps (and
is costed by) when the stream fails before ``message_delta``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from interlock.plugins.providers.translation.anthropic import error_fields, finish_reason, usage_of
from interlock.provider_api import Chunk, UpstreamError, Usage, encode_named_event, jsonutil

__all__ = [
    "FORWARDED_HEADERS",
    "EventReader",
    "client_headers",
    "counted_tokens",
    "message_usage",
    "native_chunks",
    "request_body",
]

#: request headers of the client's that a Messages-protocol upstream is sent as they came
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

# the deltas that carry generated content (text, thinking, tool input, citations); the
# first one is the commit point of a passed-through stream, as content is for a chat stream
_CONTENT_DELTAS = frozenset({"text_delta", "thinking_delta", "input_json_delta", "citations_delta", "signature_delta"})


def request_body(native: Mapping[str, Any], model: str | None, *, stream: bool) -> dict[str, Any]:
    """A copy of the client's Messages body for one call: ``model`` replaced (None: removed), ``stream`` set.

    The copy is shallow: the client's messages are sent as they are, never modified.
    """
    body = dict(native)
    if model is None:
        body.pop("model", None)
    else:
        body["model"] = model
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def client_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's ``anthropic-version`` and ``anthropic-beta`` headers (``headers`` has lower-case names)."""
    return {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}


def message_usage(body: Mapping[str, Any]) -> Usage | None:
    """A Messages ``message``'s ``usage`` in OpenAI semantics (None when it has none)."""
    usage = body.get("usage")
    return usage_of(usage) if isinstance(usage, dict) else None


def counted_tokens(answer: Mapping[str, Any], key: str, source: str) -> int:
    """The token count ``answer[key]`` of a count endpoint (``source`` names it in the error when missing)."""
    tokens = answer.get(key)
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        raise UpstreamError(f"{source} answered without {key}", kind="stream")
    return tokens


class EventReader:
    """Reads one passed-through Messages stream, event by event.

    ``name`` (the provider instance) prefixes error messages. Feed every event with
    :meth:`chunk`; each comes back as the native chunk to hand to the router.
    """

    __slots__ = ("name", "finished", "_usage", "_response_id", "_model")

    def __init__(self, name: str) -> None:
        self.name = name
        #: whether ``message_stop`` was read (a stream that ends before it is broken)
        self.finished = False
        self._usage: dict[str, Any] = {}
        self._response_id: str | None = None
        self._model: str | None = None

    def chunk(self, event: str, data: bytes) -> Chunk:
        """The native chunk for one event (``event`` as named on the wire, ``data`` its JSON).

        Raises ``UpstreamError(kind="stream")`` for an ``error`` event or data that is not
        a JSON object.
        """
        try:
            obj = jsonutil.loads(data)
        except jsonutil.JSONDecodeError:
            raise UpstreamError(f"{self.name}: malformed stream event", kind="stream") from None
        if not isinstance(obj, dict):
            raise UpstreamError(f"{self.name}: stream event is not a JSON object", kind="stream")
        return self.chunk_of(obj, event, data)

    def chunk_of(self, obj: dict[str, Any], event: str | None = None, data: bytes | None = None) -> Chunk:
        """The native chunk for one already-parsed event (Bedrock delivers them as JSON objects).

        ``event`` defaults to the object's ``type``; ``data`` to the object re-encoded.
        """
        kind = str(obj.get("type") or event or "")
        name = event if event and event != "message" else kind
        if kind == "error" or name == "error":
            message, code, etype = error_fields(obj)
            raise UpstreamError(
                f"{self.name} stream error: {message}", kind="stream", body=obj, code=code, error_type=etype
            )
        payload = encode_named_event(name, data if data is not None else jsonutil.dumps(obj))
        if kind == "content_block_delta":
            return Chunk(payload, content=_object(obj.get("delta")).get("type") in _CONTENT_DELTAS, native=True)
        if kind == "message_start":
            shell = _object(obj.get("message"))
            self._merge(shell.get("usage"))
            self._response_id = str(shell["id"]) if shell.get("id") else None
            self._model = str(shell["model"]) if shell.get("model") else None
            return Chunk(
                payload, native=True, response_id=self._response_id, response_model=self._model,
                usage_so_far=usage_of(self._usage) if self._usage else None,
            )
        if kind == "message_delta":
            self._merge(obj.get("usage"))
            stop = _object(obj.get("delta")).get("stop_reason")
            return Chunk(
                payload,
                usage=usage_of(self._usage),
                # in OpenAI's words, as every attempt records it; tool_use is a client tool call here
                finish_reason=finish_reason(str(stop), tool_calls=True) if stop else None,
                native=True,
            )
        if kind == "message_stop":
            self.finished = True
        return Chunk(payload, native=True)

    def _merge(self, usage: Any) -> None:
        # message_delta counts are cumulative: a later value replaces an earlier one; null ones are left out
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def native_chunks(events: AsyncIterator[tuple[str, bytes]], name: str) -> AsyncIterator[Chunk]:
    """Every event of a Messages SSE stream (``iter_sse`` output) as a native chunk, through ``message_stop``.

    Raises ``UpstreamError(kind="stream")`` on an in-band error, a malformed event, or a
    stream that ends without ``message_stop``. Transport errors from ``events`` propagate.
    """
    reader = EventReader(name)
    async for event, data in events:
        yield reader.chunk(event, data)
        if reader.finished:
            return
    raise UpstreamError(f"{name}: stream ended without message_stop", kind="stream")
