"""A misbehaving OpenAI-wire upstream for the chaos suite: the model name picks the fault.

It is a raw asyncio socket server, not an aiohttp app, so every fault is exact at the byte
level: a TCP reset (``SO_LINGER`` 0) before the status line or after it, a body cut at a
chosen byte, a chunked stream that ends cleanly without ``[DONE]``, a stall anywhere. Each
connection carries one request (``Connection: close``).

A request for model ``<kind>--<anything>`` gets fault ``<kind>`` (one of :data:`KINDS`), so one
upstream serves every cell of the fault matrix and each cell's model is its own breaker target.
Kind ``ok`` answers correctly: ``tests/chaos/test_fault_matrix.py`` checks that answer with the
official ``openai`` SDK, so every fault is a deviation from a valid baseline.

The 401, 500 and error-event faults echo the ``Authorization`` header they received in
their error message, as careless upstreams do: the secret-leak tests rely on that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "REPLY", "ChaosUpstream", "Kind", "Received"]

#: the content every full answer from this upstream carries, streamed one piece per chunk
REPLY_PIECES = ("chaos ", "reply: ", "one ", "two ", "three")
REPLY = "".join(REPLY_PIECES)


@dataclass(frozen=True)
class Kind:
    """One fault: what the upstream does to a non-stream and to a stream request."""

    name: str
    non_stream: str
    stream: str
    #: in stream mode the fault comes after the first content, when the gateway has committed the stream
    after_commit: bool = False
    #: the upstream does answer in full in the end (only slowly)
    answers: bool = False
    #: a request error: the gateway must fail fast instead of falling back
    fails_fast: bool = False


KINDS: tuple[Kind, ...] = (
    Kind("refused", "nothing listens on the port", "same"),
    Kind("reset_before_headers", "TCP reset after reading the request", "same"),
    Kind("reset_after_headers", "200 status line and headers (Content-Length set), then a reset",
         "200 text/event-stream headers, then a reset"),
    Kind("status_500", "500, OpenAI error body echoing the Authorization header", "same"),
    Kind("status_502", "502, OpenAI error body", "same"),
    Kind("status_503", "503, OpenAI error body", "same"),
    Kind("status_504", "504, OpenAI error body", "same"),
    Kind("status_429", "429 without Retry-After", "same"),
    Kind("status_429_retry_after", "429 with Retry-After: 1", "same"),
    Kind("status_400", "400 invalid_request_error", "same", fails_fast=True),
    Kind("status_401", "401 invalid_api_key echoing the key it got", "same"),
    Kind("malformed_json", "200 application/json, invalid JSON", "200 event stream whose first event is invalid JSON"),
    Kind("truncated_json", "200 application/json, the body cut in half (clean end)",
         "role chunk, then a chunk cut in half and a clean end"),
    Kind("wrong_content_type", "200 text/html: a proxy's error page",
         "200 application/json: a whole non-stream completion instead of a stream"),
    Kind("empty_body", "200 application/json, empty body", "200 text/event-stream, empty body"),
    Kind("empty_answer", "200 JSON completion with an empty choices list", "role chunk, then [DONE]: nothing said"),
    Kind("hang_before_headers", "reads the request, never answers", "same"),
    Kind("hang_mid_body", "headers and half the body, then silence", "role chunk (no content yet), then silence"),
    Kind("slow_trickle", "the whole body, a few bytes every 60 ms", "every chunk 100 ms apart", answers=True),
    Kind("reset_after_content", "headers and all but 10 bytes of the body, then a reset",
         "two content chunks, then a reset", after_commit=True),
    Kind("no_done", "200 JSON object without choices", "every chunk incl. finish_reason and usage, clean end, no [DONE]",
         after_commit=True),
    Kind("malformed_sse", "200 JSON that is not an object", "two content chunks, then 'data: {not json'",
         after_commit=True),
    Kind("error_event", "200 with an OpenAI error object as the body (echoing the Authorization header)",
         "two content chunks, then an error event (echoing it too)", after_commit=True),
    Kind("hang_mid_stream", "200 headers, then silence", "two content chunks, then silence", after_commit=True),
    Kind("garbage", "200 application/json, random binary bytes", "two content chunks, then random binary bytes",
         after_commit=True),
)

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(frozen=True)
class Received:
    """A request as the upstream read it."""

    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any


def _error(message: str, type_: str, code: str | None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def _usage() -> dict[str, Any]:
    return {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_LAST_CHUNK = b"0\r\n\r\n"


class ChaosUpstream:
    """Start with ``async with ChaosUpstream() as up``; point an ``openai``-type provider at :attr:`base_url`."""

    def __init__(self, seed: int = 18) -> None:
        self.requests: list[Received] = []
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> ChaosUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # releases every stalled handler
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    # -- one connection, one request ------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            raw = await reader.readexactly(int(headers.get("content-length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            self.requests.append(Received(path, headers, body))
            if method != "POST" or not path.endswith("/chat/completions") or not isinstance(body, dict):
                await self._send(writer, 404, _error("unknown request", "invalid_request_error", "not_found"))
                return
            await self._answer(reader, writer, headers, body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str], body: dict[str, Any]
    ) -> None:
        model = str(body.get("model"))
        kind = model.split("--", 1)[0]
        stream = body.get("stream") is True
        options = body.get("stream_options")
        usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        self._counter += 1
        rid = f"chatcmpl-chaos-{self._counter}"
        complete = self._completion(rid, model)
        events = self._events(rid, model, usage)
        auth = headers.get("authorization", "")

        if kind.startswith("status_"):
            status = int(kind.split("_")[1])
            extra = {"Retry-After": "1"} if kind == "status_429_retry_after" else {}
            message = {
                400: "Invalid value for 'messages'.",
                401: f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.",
                500: f"Internal error while handling a request with headers Authorization: {auth}",
            }.get(status, f"upstream says {status}")
            type_ = "invalid_request_error" if status < 500 and status != 429 else "server_error"
            code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
            await self._send(writer, status, _error(message, type_, code), extra)
            return

        match kind, stream:
            case "ok" | "slow_trickle", False:
                if kind == "ok":
                    await self._send(writer, 200, complete)
                    return
                writer.write(self._head(200, "application/json", len(complete)))
                for i in range(0, len(complete), 40):
                    writer.write(complete[i : i + 40])
                    await writer.drain()
                    await asyncio.sleep(0.06)
                writer.close()
            case "ok" | "slow_trickle", True:
                await self._open_stream(writer)
                for event in events:
                    await self._chunk(writer, event)
                    if kind == "slow_trickle":
                        await asyncio.sleep(0.1)
                await self._chunk(writer, b"data: [DONE]\n\n")
                await self._end(writer)
            case "reset_before_headers", _:
                self._reset(writer)
            case "reset_after_headers", False:
                writer.write(self._head(200, "application/json", len(complete)))
                await writer.drain()
                self._reset(writer)
            case "reset_after_headers", True:
                await self._open_stream(writer)
                self._reset(writer)
            case "malformed_json", False:
                await self._send(writer, 200, b'{"id": "' + rid.encode() + b'", "choices": [{"message": {"content": "chaos}')
            case "malformed_json", True:
                await self._open_stream(writer)
                await self._chunk(writer, b'data: {"id": "' + rid.encode() + b'", "choices": [\n\n')
                for event in events:
                    await self._chunk(writer, event)
                await self._chunk(writer, b"data: [DONE]\n\n")
                await self._end(writer)
            case "truncated_json", False:
                await self._send(writer, 200, complete[: len(complete) // 2])
            case "truncated_json", True:
                await self._open_stream(writer)
                await self._chunk(writer, events[0])
                await self._chunk(writer, events[1][: len(events[1]) // 2])
                await self._end(writer)
            case "wrong_content_type", False:
                page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
                await self._send(writer, 200, page, content_type="text/html")
            case "wrong_content_type", True:
                await self._send(writer, 200, complete)
            case "empty_body", False:
                await self._send(writer, 200, b"")
            case "empty_body", True:
                await self._open_stream(writer)
                await self._end(writer)
            case "empty_answer", False:
                empty = json.loads(complete)
                empty["choices"] = []
                await self._send(writer, 200, json.dumps(empty).encode())
            case "empty_answer", True:
                await self._open_stream(writer)
                await self._chunk(writer, events[0])
                await self._chunk(writer, b"data: [DONE]\n\n")
                await self._end(writer)
            case "hang_before_headers", _:
                await self._stall(reader)
            case "hang_mid_body", False:
                writer.write(self._head(200, "application/json", len(complete)) + complete[: len(complete) // 2])
                await writer.drain()
                await self._stall(reader)
            case "hang_mid_body", True:
                await self._open_stream(writer)
                await self._chunk(writer, events[0])
                await self._stall(reader)
            case "reset_after_content", False:
                writer.write(self._head(200, "application/json", len(complete)) + complete[:-10])
                await writer.drain()
                self._reset(writer)
            case "no_done", False:
                headless = json.loads(complete)
                del headless["choices"]
                await self._send(writer, 200, json.dumps(headless).encode())
            case "no_done", True:
                await self._open_stream(writer)
                for event in events:
                    await self._chunk(writer, event)
                await self._end(writer)
            case "malformed_sse", False:
                await self._send(writer, 200, b'["chaos", "reply"]')
            case "error_event", False:
                await self._send(writer, 200, _error(f"Server error; request had Authorization: {auth}", "server_error",
                                                     "internal_error"))
            case "hang_mid_stream", False:
                writer.write(self._head(200, "application/json", len(complete)))
                await writer.drain()
                await self._stall(reader)
            case "garbage", False:
                await self._send(writer, 200, self._garbage())
            case ("reset_after_content" | "malformed_sse" | "error_event" | "hang_mid_stream" | "garbage"), True:
                await self._open_stream(writer)
                for event in events[:3]:  # the role chunk and two content chunks
                    await self._chunk(writer, event)
                if kind == "reset_after_content":
                    self._reset(writer)
                elif kind == "hang_mid_stream":
                    await self._stall(reader)
                else:
                    tail = {
                        "malformed_sse": b"data: {not json\n\n",
                        "error_event": _sse(json.loads(_error(f"Server error; request had Authorization: {auth}",
                                                              "server_error", "internal_error"))),
                        "garbage": self._garbage(),
                    }[kind]
                    await self._chunk(writer, tail)
                    for event in events[3:]:
                        await self._chunk(writer, event)
                    await self._chunk(writer, b"data: [DONE]\n\n")
                    await self._end(writer)
            case _:
                await self._send(writer, 404, _error(f"The model `{model}` does not exist", "invalid_request_error",
                                                     "model_not_found"))

    # -- bodies ----------------------------------------------------------------------------

    @staticmethod
    def _completion(rid: str, model: str) -> bytes:
        return json.dumps({
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(),
        }).encode()

    @staticmethod
    def _events(rid: str, model: str, usage: bool) -> list[bytes]:
        base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if usage:
                data["usage"] = None
            return _sse(data)

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in REPLY_PIECES]
        events.append(chunk({}, "stop"))
        if usage:
            events.append(_sse({**base, "choices": [], "usage": _usage()}))
        return events

    def _garbage(self) -> bytes:
        noise = bytes(self._rng.randrange(256) for _ in range(300))
        return b"\xff\xfe\x00" + noise + b"\n\ndata: \xc3\x28\x00\xff\n\n"

    # -- wire ------------------------------------------------------------------------------

    @staticmethod
    def _head(status: int, content_type: str, length: int | None, extra: dict[str, str] | None = None) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
                 "Connection: close"]
        lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        writer.write(self._head(status, content_type, len(body), extra) + body)
        await writer.drain()
        writer.close()

    async def _open_stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(self._head(200, "text/event-stream", None, {"Cache-Control": "no-cache"}))
        await writer.drain()

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(_chunked(data))
        await writer.drain()

    @staticmethod
    async def _end(writer: asyncio.StreamWriter) -> None:
        writer.write(_LAST_CHUNK)
        await writer.drain()
        writer.close()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        """Abort the connection with a TCP RST rather than a FIN."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    @staticmethod
    async def _stall(reader: asyncio.StreamReader) -> None:
        """Say nothing more until the client gives up (closes the connection) or the server stops."""
        await reader.read()
