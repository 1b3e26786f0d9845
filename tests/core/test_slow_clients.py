"""Slow, idle, broken and excess clients are bounded ([server] header_timeout, body_timeout,
keepalive_timeout, max_connections; core/http_server.py, core/http_json.py).

Driven with raw sockets against the real ``interlock serve`` (one process, and ``--workers 2``).
The limits are set to a second or so; every wait below is bounded by ``WAIT``, far above them,
so a connection the server never closes fails the test instead of hanging it. Nothing here
asserts how fast anything happens.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from interlock.core import config as config_mod
from interlock.core.config import ConfigError
from interlock.core.http_server import ConnectionLimits
from interlock.core.provider import PoolSettings
from interlock.testing import FakeOpenAI, Fault
from tests.conftest import GatewayFactory, ServeProcess, openai_config
from tests.servers import RedisServer, redis_binary, unique_prefix

Serve = Callable[..., ServeProcess]
WAIT = 15.0  # seconds: the bound on any one wait below (the limits under test are 1s)
LIMITS = """
[server]
header_timeout = 1
body_timeout = 1
keepalive_timeout = 3
max_connections = 3
"""
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
BODY = json.dumps({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini"]).run_in_thread() as fake:
        yield fake


@pytest.fixture
def gateway(serve: Serve, tmp_path: Path, upstream: FakeOpenAI) -> ServeProcess:
    path = tmp_path / "interlock.toml"
    path.write_text(openai_config(upstream.base_url, LIMITS))
    return serve("--config", str(path))


def connect(sp: ServeProcess) -> socket.socket:
    url = urlsplit(sp.base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=WAIT)
    return sock


def read_to_close(sock: socket.socket, within: float = WAIT) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open after ``within``s."""
    deadline = time.monotonic() + within
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection is still open after {within}s; got {data[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def health(sock: socket.socket) -> bytes:
    """One keep-alive GET /health on ``sock``; its status line."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n", 1)[0]


def status_and_body(answer: bytes) -> tuple[bytes, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], json.loads(body)


# --------------------------------------------------------------------------- #
# request headers
# --------------------------------------------------------------------------- #


def trickle_until_closed(sock: socket.socket) -> bytes:
    """Send one header line every 0.2s (the block never ends) until the server answers or closes."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            return read_to_close(sock)
        try:
            sock.sendall(b"X-Slow: one more line\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return read_to_close(sock)
    raise AssertionError(f"still trickling headers after {WAIT}s: the server never closed the connection")


def test_trickled_headers_are_cut_off_at_the_header_deadline(gateway: ServeProcess) -> None:
    with connect(gateway) as sock:
        answer = trickle_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    status, body = status_and_body(answer)
    assert body["error"] == {"message": "the request headers were not complete within 1s",
                             "type": "invalid_request_error", "param": None, "code": "request_timeout"}
    assert "its request headers were not complete within 1s" in gateway.output()


def test_partial_headers_that_stop_coming_are_closed(gateway: ServeProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")  # no blank line: the block is unfinished
        assert read_to_close(sock).startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_never_sends_a_request_is_closed(gateway: ServeProcess) -> None:
    with connect(gateway) as sock:
        assert read_to_close(sock).startswith(b"HTTP/1.1 408 ")


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not(gateway: ServeProcess) -> None:
    with connect(gateway) as sock:
        for _ in range(4):  # requests 0.5s apart: each restarts the idle timer (3s), the connection stays
            assert health(sock) == b"HTTP/1.1 200 OK"
            time.sleep(0.5)
        assert read_to_close(sock) == b""  # then idle: closed, without an answer


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.startswith(b"content-length:")))
    return head.split(b"\r\n", 1)[0], json.loads(await reader.readexactly(length))


async def test_a_slow_answer_and_a_body_sent_in_pieces_are_not_header_timeouts(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    """The header deadline ends with the header block: body bytes and a long answer are not headers."""
    gw = await make_gateway(openai_config(fake.base_url, "[server]\nheader_timeout = 1\nbody_timeout = 10\n"))
    fake.add_fault(Fault(latency=1.5, times=2))  # the upstream takes longer than header_timeout
    url = urlsplit(gw.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        async with asyncio.timeout(WAIT):
            for _ in range(2):  # twice on one connection: the keep-alive after a long request still works
                writer.write(CHAT + f"Content-Length: {len(BODY)}\r\n\r\n".encode())
                for i in range(0, len(BODY), len(BODY) // 3 + 1):  # the body in pieces over 1.5s
                    await asyncio.sleep(0.5)
                    writer.write(BODY[i:i + len(BODY) // 3 + 1])
                status, answer = await read_answer(reader)
                assert status == b"HTTP/1.1 200 OK"
                assert answer["choices"][0]["message"]["content"] == "Fake reply to: hi"
    finally:
        writer.close()


async def test_a_connection_idle_after_a_body_sent_apart_from_its_headers_is_kept_alive(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    """Body bytes in a chunk of their own are not the start of a next header block."""
    gw = await make_gateway(openai_config(fake.base_url, "[server]\nheader_timeout = 1\nkeepalive_timeout = 30\n"))
    url = urlsplit(gw.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        async with asyncio.timeout(WAIT):
            writer.write(CHAT + f"Content-Length: {len(BODY)}\r\n\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.2)  # the body as a chunk of its own, as many clients send it
            writer.write(BODY)
            assert (await read_answer(reader))[0] == b"HTTP/1.1 200 OK"
            await asyncio.sleep(2.5)  # idle: past header_timeout, well within keepalive_timeout
            writer.write(CHAT + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
            status, answer = await read_answer(reader)  # the same connection still serves
            assert status == b"HTTP/1.1 200 OK"
            assert answer["choices"][0]["message"]["content"] == "Fake reply to: hi"
    finally:
        writer.close()


# --------------------------------------------------------------------------- #
# request bodies, disconnects
# --------------------------------------------------------------------------- #


def test_a_body_shorter_than_its_content_length_gets_a_408_and_others_are_served(
    gateway: ServeProcess,
) -> None:
    with connect(gateway) as stalled:
        stalled.sendall(CHAT + b"Content-Length: 100\r\n\r\n" + b'{"model":')  # 9 of 100 bytes, then silence
        with openai.OpenAI(base_url=gateway.base_url, api_key="k", max_retries=0) as client:  # meanwhile
            reply = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "Fake reply to: hi"
        # answered, then closed: not after aiohttp's 10s of lingering for the rest of a body that stopped
        answer = read_to_close(stalled, within=8.0)
    status, body = status_and_body(answer)
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert body["error"]["code"] == "request_timeout"
    assert "got 9 of 100 bytes" in body["error"]["message"]
    with connect(gateway) as sock:  # the handler was released: the gateway still answers
        assert health(sock) == b"HTTP/1.1 200 OK"


def wait_for_lines(sp: ServeProcess, text: str, count: int) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        output = sp.output()
        if output.count(text) >= count:
            return output
        time.sleep(0.05)
    raise AssertionError(f"expected {count} x {text!r} in the output:\n{sp.output()}")


def test_a_client_that_goes_away_is_one_info_line_without_a_traceback(
    gateway: ServeProcess, upstream: FakeOpenAI
) -> None:
    # 1. the body stops short and the client closes
    with connect(gateway) as sock:
        sock.sendall(CHAT + b"Content-Length: 100\r\n\r\n" + b'{"model":')
        time.sleep(0.2)
    # 2. a stream whose client leaves before the first token: the gateway's write finds it gone
    upstream.add_fault(Fault(ttft=1.0))
    with connect(gateway) as sock:
        body = json.dumps({"model": "smart", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        sock.sendall(CHAT + f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        time.sleep(0.2)
    output = wait_for_lines(gateway, "INFO interlock.app: client disconnected during POST /v1/chat/completions", 2)
    assert "Traceback" not in output
    assert "ERROR" not in output
    assert "unhandled error" not in output
    with connect(gateway) as sock:
        assert health(sock) == b"HTTP/1.1 200 OK"


# --------------------------------------------------------------------------- #
# max_connections
# --------------------------------------------------------------------------- #


def test_connections_beyond_max_connections_get_a_503_until_one_closes(gateway: ServeProcess) -> None:
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + WAIT
        while len(held) < 3:  # the start-up health check's connection may not be closed yet: retry
            assert time.monotonic() < deadline, "could not open 3 connections"
            sock = connect(gateway)
            if health(sock) == b"HTTP/1.1 200 OK":
                held.append(sock)
            else:
                sock.close()
        with connect(gateway) as fourth:
            fourth.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
            answer = read_to_close(fourth)
        status, body = status_and_body(answer)
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert b"\r\nRetry-After: 1\r\n" in answer
        assert body["error"]["code"] == "too_many_connections"
        for sock in held:
            time.sleep(0.3)
            assert health(sock) == b"HTTP/1.1 200 OK"  # the open ones are served as before
        held.pop().close()
        while True:  # once the server has seen the close, a new connection is served
            assert time.monotonic() < deadline + WAIT, "no connection was served after one closed"
            with connect(gateway) as sock:
                if health(sock) == b"HTTP/1.1 200 OK":
                    break
            time.sleep(0.1)
    finally:
        for sock in held:
            sock.close()
    assert "WARNING interlock.http: refused" in gateway.output()


# --------------------------------------------------------------------------- #
# serve --workers: each worker runs the same server
# --------------------------------------------------------------------------- #


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if redis_binary() is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_workers_cut_off_trickled_headers_too(
    serve: Serve, tmp_path: Path, upstream: FakeOpenAI, redis_server: RedisServer
) -> None:
    path = tmp_path / "interlock.toml"
    path.write_text(openai_config(upstream.base_url, LIMITS + f'\n[store]\nurl = "{redis_server.url}"\n'
                                                              f'prefix = "{unique_prefix()}"\n'))
    sp = serve("--config", str(path), "--workers", "2")
    for _ in range(4):  # the kernel spreads connections over both workers
        with connect(sp) as sock:
            assert trickle_until_closed(sock).startswith(b"HTTP/1.1 408 ")


# --------------------------------------------------------------------------- #
# the [server] keys
# --------------------------------------------------------------------------- #


def parse(toml: str) -> config_mod.Config:
    return config_mod.parse(tomllib.loads(toml), environ={})


def test_server_limits_have_documented_defaults_and_can_be_set() -> None:
    cfg = parse("")
    assert cfg.limits == ConnectionLimits(header_timeout=10.0, body_timeout=30.0, keepalive_timeout=75.0,
                                          max_connections=10_000)
    assert cfg.pool == PoolSettings(connections_per_host=1024, keepalive_timeout=15.0)
    cfg = parse("[server]\nheader_timeout = 2\nbody_timeout = 5.5\nkeepalive_timeout = 30\nmax_connections = 50\n"
                "upstream_connections_per_host = 8\nupstream_keepalive_timeout = 2.5\n")
    assert cfg.limits == ConnectionLimits(2.0, 5.5, 30.0, 50)
    assert cfg.pool == PoolSettings(8, 2.5)


@pytest.mark.parametrize("line, problem", [
    ("header_timeout = 0", "server.header_timeout: must be a positive number of seconds, not 0.0"),
    ("body_timeout = -1", "server.body_timeout: must be a positive number of seconds, not -1.0"),
    ("keepalive_timeout = nan", "server.keepalive_timeout: must be a positive number of seconds"),
    ("max_connections = 0", "server.max_connections: must be a positive number of connections, not 0"),
    ("max_connections = 1.5", "server.max_connections: must be int, not float"),
    ("upstream_connections_per_host = -2", "server.upstream_connections_per_host: must be a positive number"),
    ("upstream_keepalive_timeout = inf", "server.upstream_keepalive_timeout: must be a positive number"),
    ("header_timeout = \"10s\"", "server.header_timeout: must be float, not str"),
])
def test_bad_server_limits_are_config_errors_naming_the_key(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"[server]\n{line}\n")
    assert problem in str(info.value)
