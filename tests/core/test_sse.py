"""The SSE reader and writer helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from interlock.core.sse import DONE, encode_event, iter_sse, iter_sse_data


async def _lines(raw: bytes) -> AsyncIterator[bytes]:
    """Split like aiohttp's ``StreamReader`` iteration: one item per ``\\n``-terminated line."""
    for line in raw.splitlines(keepends=True):
        yield line


async def events(raw: bytes) -> list[tuple[str, bytes]]:
    return [e async for e in iter_sse(_lines(raw))]


async def datas(raw: bytes) -> list[bytes]:
    return [d async for d in iter_sse_data(_lines(raw))]


async def test_plain_events() -> None:
    raw = b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    assert await datas(raw) == [b'{"a":1}', b'{"a":2}', b"[DONE]"]
    assert await events(raw) == [("message", b'{"a":1}'), ("message", b'{"a":2}'), ("message", b"[DONE]")]


async def test_comments_are_skipped() -> None:
    raw = b": OPENROUTER PROCESSING\n\ndata: one\n: keep-alive\ndata: two\n\n:\n\n"
    assert await datas(raw) == [b"one\ntwo"]
    assert await events(raw) == [("message", b"one\ntwo")]


async def test_crlf_line_endings() -> None:
    raw = b"event: delta\r\ndata: x\r\n\r\ndata: y\r\n\r\n"
    assert await datas(raw) == [b"x", b"y"]
    assert await events(raw) == [("delta", b"x"), ("message", b"y")]


async def test_multi_line_data_is_joined_with_newlines() -> None:
    raw = b'data: {\ndata:   "a": 1\ndata: }\n\n'
    assert await datas(raw) == [b'{\n  "a": 1\n}']
    assert await events(raw) == [("message", b'{\n  "a": 1\n}')]


async def test_only_one_leading_space_is_stripped() -> None:
    raw = b"data:no-space\n\ndata:  two-spaces\n\ndata: \n\n"
    assert await datas(raw) == [b"no-space", b" two-spaces", b""]
    assert await events(raw) == [("message", b"no-space"), ("message", b" two-spaces"), ("message", b"")]


async def test_event_names() -> None:
    raw = b'event: message_start\ndata: {"type":"message_start"}\n\nevent:ping\ndata: {}\n\ndata: unnamed\n\n'
    assert await events(raw) == [
        ("message_start", b'{"type":"message_start"}'),
        ("ping", b"{}"),
        ("message", b"unnamed"),  # the name does not leak into the next event
    ]
    assert await datas(raw) == [b'{"type":"message_start"}', b"{}", b"unnamed"]


async def test_event_without_data_is_not_dispatched() -> None:
    raw = b"event: ping\n\nid: 7\nretry: 1000\n\ndata: x\n\n"
    assert await events(raw) == [("message", b"x")]
    assert await datas(raw) == [b"x"]


async def test_id_and_retry_fields_are_ignored() -> None:
    raw = b"id: 1\nretry: 50\ndata: x\n\n"
    assert await events(raw) == [("message", b"x")]
    assert await datas(raw) == [b"x"]


async def test_trailing_event_without_blank_line() -> None:
    raw = b"data: first\n\nevent: last\ndata: second"
    assert await datas(raw) == [b"first", b"second"]
    assert await events(raw) == [("message", b"first"), ("last", b"second")]
    assert await datas(b"data: [DONE]\n") == [b"[DONE]"]


async def test_blank_lines_between_events_are_harmless() -> None:
    raw = b"\n\n\r\ndata: x\n\n\n\ndata: y\n\n"
    assert await datas(raw) == [b"x", b"y"]
    assert await events(raw) == [("message", b"x"), ("message", b"y")]


async def test_empty_stream() -> None:
    assert await datas(b"") == []
    assert await events(b"") == []


def test_writer_helpers() -> None:
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"


async def test_reader_over_a_real_http_stream_with_awkward_chunk_boundaries() -> None:
    # what providers actually hand the reader: aiohttp's response content, lines split across writes
    pieces = [
        b"da",
        b'ta: {"n":',
        b"1}\r",
        b"\n\r\n: ping\r\n",
        b"event: e\r\ndata: a\r\nda",
        b"ta: b\r\n\r\n",
        b"data: end",
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                got = [e async for e in iter_sse(resp.content)]
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                got_data = [d async for d in iter_sse_data(resp.content)]
    finally:
        await runner.cleanup()
    assert got == [("message", b'{"n":1}'), ("e", b"a\nb"), ("message", b"end")]
    assert got_data == [b'{"n":1}', b"a\nb", b"end"]
