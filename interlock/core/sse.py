"""Server-sent events: a tolerant reader for upstream streams and the writer helpers.

The reader follows the SSE spec closely enough for every provider we speak to:
comment lines (``: keep-alive``, ``: OPENROUTER PROCESSING``) are skipped,
``\\r\\n`` and ``\\n`` both end lines, multi-line ``data:`` fields are joined with
``\\n``, and ``event:`` names are reported for providers that use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from interlock.core.types import UpstreamError

#: the longest single line accepted from an upstream (a whole tool call can be one line)
MAX_LINE_BYTES = 16 * 1024 * 1024


async def iter_lines(source: Any, limit: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
    """Every line of a response body (empty ones included), without its ``\\n``.

    Splits raw chunks itself (``source.iter_any()``): aiohttp's own line
    iteration refuses lines longer than twice its read buffer. A source without
    ``iter_any`` (an async iterable of lines, as in tests) is passed through.
    A last line without a newline (a cut stream) is yielded as is.
    """
    if not hasattr(source, "iter_any"):
        async for line in source:
            yield line
        return
    buffer = bytearray()
    async for data in source.iter_any():
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            yield bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
        if len(buffer) > limit:
            raise UpstreamError(f"stream line longer than {limit} bytes", kind="stream")
    if buffer:
        yield bytes(buffer)


async def iter_sse(source: AsyncIterable[bytes] | Any) -> AsyncIterator[tuple[str, bytes]]:
    """Yield ``(event, data)`` for each event; ``event`` is ``"message"`` when unnamed."""
    event = "message"
    data: list[bytes] = []
    async for raw in iter_lines(source):
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = "message", []
            continue
        if line[:1] == b":":
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace")
        # id: and retry: are irrelevant to a proxy reading one response
    if data:  # a final event without the blank line (stream cut or sloppy upstream)
        yield event, b"\n".join(data)


async def iter_sse_data(source: AsyncIterable[bytes] | Any) -> AsyncIterator[bytes]:
    """Only the ``data`` of each event: the OpenAI wire format has no event names.

    Cheaper than :func:`iter_sse` because it never decodes field names it
    does not need; an event is yielded at its terminating blank line.
    """
    pending: list[bytes] = []
    async for raw in iter_lines(source):
        line = raw.rstrip(b"\r\n")
        if not line:
            if pending:
                yield b"\n".join(pending)
                pending = []
            continue
        if line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
            pending.append(value)
        # comments, event:, id:, retry: are ignored
    if pending:
        yield b"\n".join(pending)


def encode_event(payload: bytes) -> bytes:
    """One ``data:`` event for the client."""
    return b"data: " + payload + b"\n\n"


def encode_named_event(event: str, data: bytes) -> bytes:
    """One named event (``event:`` then ``data:``), as the Responses and Messages protocols write them."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"
