"""The upstream connection pool is bounded ([server] upstream_connections_per_host,
upstream_keepalive_timeout; core/provider.py HttpPool).

The fake upstream here counts the connections it has open (aiohttp's server keeps the list),
so the bound is observed from the upstream's side, as an upstream would see it. Waits are
bounded by ``WAIT``, far above the limits under test; nothing asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.conftest import GatewayFactory

WAIT = 15.0
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


@dataclass
class CountingUpstream:
    """A Chat Completions upstream that records how many connections it had open at each request."""

    runner: web.AppRunner
    url: str
    hold: float = 0.0  # seconds each answer waits
    release: asyncio.Event = field(default_factory=asyncio.Event)  # model "hold" waits for it
    open_at_request: list[int] = field(default_factory=list)
    peers: list[int] = field(default_factory=list)  # the client port of each request

    @property
    def open(self) -> int:
        assert self.runner.server is not None
        return len(self.runner.server.connections)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.open_at_request.append(self.open)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(peer[1] if peer else -1)
        body = await request.json()
        if body["model"] == "hold":
            await self.release.wait()
        await asyncio.sleep(self.hold)
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for piece in ({"role": "assistant", "content": ""}, {"content": "pooled"}):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": piece, "finish_reason": None}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.json_response({
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "pooled"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })


@pytest.fixture
async def upstream() -> AsyncIterator[CountingUpstream]:
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    holder: list[CountingUpstream] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        return await holder[0].chat(request)

    app.router.add_post("/v1/chat/completions", chat)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up = CountingUpstream(runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1")
    holder.append(up)
    try:
        yield up
    finally:
        up.release.set()
        await runner.cleanup()


def config(url: str, server: str, extra: str = "") -> str:
    return f"""
[server]
{server}

[providers.openai]
base_url = "{url}"
api_key = "sk-upstream"

[providers.quick]
type = "openai"
base_url = "{url}"
api_key = "sk-upstream"
timeout = 1
{extra}
"""


async def test_no_more_than_the_per_host_limit_of_connections_are_open_at_once(
    make_gateway: GatewayFactory, upstream: CountingUpstream
) -> None:
    gw = await make_gateway(config(upstream.url, "upstream_connections_per_host = 3"))
    upstream.hold = 0.3  # long enough that 10 concurrent requests would need 10 connections

    async def ask() -> str:
        reply = await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO)
        return reply.choices[0].message.content or ""

    async with asyncio.timeout(WAIT):
        answers = await asyncio.gather(*(ask() for _ in range(10)))
    assert answers == ["pooled"] * 10  # the requests over the limit waited for a connection, then went through
    assert len(upstream.open_at_request) == 10
    assert max(upstream.open_at_request) == 3  # the limit was reached, never exceeded
    assert len(set(upstream.peers)) == 3  # the same three connections carried all ten


async def test_idle_upstream_connections_are_closed_after_the_keepalive(
    make_gateway: GatewayFactory, upstream: CountingUpstream
) -> None:
    gw = await make_gateway(config(upstream.url, "upstream_keepalive_timeout = 1"))
    for _ in range(3):
        reply = await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO)
        assert reply.choices[0].message.content == "pooled"
    assert len(set(upstream.peers)) == 1  # kept alive between requests: one connection carried all three
    deadline = time.monotonic() + WAIT
    while upstream.open:  # then idle: the gateway closes it
        assert time.monotonic() < deadline, "the idle upstream connection is still open"
        await asyncio.sleep(0.05)
    reply = await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO)
    assert reply.choices[0].message.content == "pooled"  # a new one when needed
    assert len(set(upstream.peers)) == 2


@pytest.mark.parametrize("model, stream", [
    ("quick/gpt-4o", True),  # a stream on a provider with timeout = 1: the pool wait counts against it
    ("quick/gpt-4o", False),  # the same, non-stream (a total timeout)
    ("capped", False),  # a route timeout (1s) on a provider with the default 600s
], ids=["provider-timeout-stream", "provider-timeout", "route-timeout"])
async def test_waiting_for_a_pooled_connection_is_bounded_by_the_request_timeouts(
    make_gateway: GatewayFactory, upstream: CountingUpstream, model: str, stream: bool
) -> None:
    gw = await make_gateway(config(upstream.url, "upstream_connections_per_host = 1",
                                   '\n[routes.capped]\nchain = "openai/gpt-4o"\ntimeout = 1\n'))
    # the one connection to the upstream is busy until `release` is set
    holding = asyncio.create_task(gw.client.chat.completions.create(model="openai/hold", messages=HELLO))
    while not upstream.open_at_request:
        await asyncio.sleep(0.01)
    async with asyncio.timeout(WAIT):  # without a bound this would wait for the held request
        with pytest.raises(openai.APIStatusError) as info:
            if stream:
                async with await gw.client.chat.completions.create(
                    model=model, messages=HELLO, stream=True
                ) as chunks:
                    async for _ in chunks:
                        pass
            else:
                await gw.client.chat.completions.create(model=model, messages=HELLO)
    assert info.value.status_code in (502, 504)
    assert gw.log.last.attempts and all(a.outcome == "timeout" for a in gw.log.last.attempts)
    assert not holding.done()  # it was the wait that ended, not the held request
    upstream.release.set()
    reply = await holding
    assert reply.choices[0].message.content == "pooled"
    assert len(upstream.open_at_request) == 1  # the timed-out request never reached the upstream


# --------------------------------------------------------------------------- #
# what a burst leaves behind: serve gives freed memory back once requests stop
# --------------------------------------------------------------------------- #


async def test_serve_collects_and_trims_once_requests_have_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    from interlock.core import http_server

    calls: list[str] = []

    def collect() -> int:
        calls.append("collect")
        return 0

    monkeypatch.setattr(http_server, "QUIET_CHECK_INTERVAL", 0.01)
    monkeypatch.setattr(http_server, "_malloc_trim", lambda: lambda pad: calls.append(f"trim {pad}"))
    monkeypatch.setattr(gc, "collect", collect)

    class Server:
        requests_count = 0

    server = Server()
    task = asyncio.create_task(http_server._give_memory_back_when_quiet(server))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.1)
        assert calls == []  # no request since the start: nothing was freed, nothing to give back
        for _ in range(10):  # a burst: requests keep starting, so the process is not quiet
            server.requests_count += 50
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + WAIT
        while not calls:
            assert time.monotonic() < deadline, "no collection after the requests stopped"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert calls == ["collect", "trim 0"]  # once per quiet period, not on every check
        server.requests_count += 1  # the next burst: once more after it
        while len(calls) < 4:
            assert time.monotonic() < deadline, "no collection after the second burst"
            await asyncio.sleep(0.01)
        assert calls == ["collect", "trim 0"] * 2
    finally:
        task.cancel()
