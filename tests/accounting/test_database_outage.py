"""A PostgreSQL ledger database that is down, then back: the gateway's keys and its ledger.

Each test starts a PostgreSQL cluster of its own (tests/servers.PostgresServer), so it can
stop and start it without disturbing the run's shared server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from interlock.accounting import keys as keys_mod
from interlock.accounting import ledger
from interlock.plugins.exporters.ledger import LedgerExporter
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import RunningGateway, running_gateway
from tests.conftest import openai_config
from tests.servers import PostgresServer

HI = {"model": "smart", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()  # initialised, not started
    try:
        yield server
    finally:
        server.close()


def config(fake: FakeOpenAI, url: str) -> str:
    return openai_config(fake.base_url, f'[database]\nurl = "{url}"\n\n[exporters.ledger]\nflush_interval = 0.2\n')


async def chat(gw: RunningGateway, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gw.base_url}/chat/completions", json=HI, headers=headers or {}) as resp:
            return resp.status, await resp.json()


def ledger_of(gw: RunningGateway) -> LedgerExporter:
    [exporter] = [e for e in gw.gateway.exporters if isinstance(e, LedgerExporter)]
    return exporter


async def until(predicate: Any, timeout: float, what: str) -> float:
    """Seconds until ``await predicate()`` is true; fails after ``timeout``."""
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < timeout, f"{what} not within {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def stored_request_ids(url: str) -> set[str]:
    engine = await ledger.open_engine(url)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(select(ledger.requests.c.id))).scalars())
    finally:
        await engine.dispose()


async def test_a_gateway_started_while_postgresql_is_down_resumes_within_seconds(
    fake: FakeOpenAI, pg: PostgresServer
) -> None:
    """No [[keys]], database down at startup: 503 key_store_unavailable (it cannot know whether keys
    are stored, and must not open up because it cannot read them); requests resume within seconds
    of the database answering, not a 30 s refresh interval later."""
    assert keys_mod.REFRESH_INTERVAL == 30.0  # the real interval: the retry must not wait for it
    async with running_gateway(config(fake, pg.url)) as gw:
        status, body = await chat(gw)
        assert status == 503 and body["error"]["code"] == "key_store_unavailable"
        await asyncio.sleep(3)  # a few failed retries: the backoff has grown
        status, _ = await chat(gw)
        assert status == 503

        pg.start()

        async def served() -> bool:
            return (await chat(gw))[0] == 200

        waited = await until(served, 15, "requests served after the database came back")
        assert waited < keys_mod.RETRY_MAX + 3, waited
        assert gw.gateway.keys.loaded and not gw.gateway.keys.enforced  # no stored keys: open


async def test_keys_read_once_keep_serving_and_the_ledger_buffers_through_an_outage(
    fake: FakeOpenAI, pg: PostgresServer
) -> None:
    pg.start()
    async with running_gateway(config(fake, pg.url)) as gw:
        exporter = ledger_of(gw)
        assert (await chat(gw, {"x-request-id": "before"}))[0] == 200
        await exporter.flush()
        assert await stored_request_ids(pg.url) == {"before"}

        pg.stop()
        for i in range(3):  # the database is down: requests are served, their rows kept in memory
            status, _ = await chat(gw, {"x-request-id": f"during-{i}"})
            assert status == 200
        await asyncio.sleep(0.6)  # a few failed flushes
        assert exporter.buffered >= 3 * 2 and exporter.dropped == 0

        pg.start()

        async def written() -> bool:
            return exporter.buffered == 0

        await until(written, 15, "the buffered rows written after the database came back")
        assert await stored_request_ids(pg.url) == {"before", "during-0", "during-1", "during-2"}
        assert exporter.dropped == 0


async def test_stored_keys_stay_enforced_while_the_database_is_down(pg: PostgresServer) -> None:
    """A gateway with stored keys never opens up for an outage: 503 until it can read them."""
    pg.start()
    writer = keys_mod.KeyStore([], pg.url, refresh_interval=60)
    await writer.start()
    key, _ = await writer.create("ci", "platform", ())
    await writer.close()
    pg.stop()

    store = keys_mod.KeyStore([], pg.url, refresh_interval=60)
    await store.start()
    try:
        for headers in ({}, {"Authorization": f"Bearer {key}"}):
            with pytest.raises(keys_mod.GatewayError) as exc:
                store.authenticate(headers)
            assert exc.value.status == 503 and exc.value.code == "key_store_unavailable"
        pg.start()

        async def loaded() -> bool:
            return store.loaded

        await until(loaded, 15, "the stored keys read after the database came back")
        record = store.authenticate({"Authorization": f"Bearer {key}"})
        assert record is not None and record.team == "platform"
        with pytest.raises(keys_mod.GatewayError) as missing:
            store.authenticate({})
        assert missing.value.status == 401
    finally:
        await store.close()


def test_the_retry_backs_off_from_half_a_second_to_five_until_the_keys_are_read() -> None:
    store = keys_mod.KeyStore([], "sqlite+aiosqlite:///unused.db")
    delays = []
    delay = None
    for _ in range(6):
        delay = store._next_delay(delay)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    store.loaded = True
    assert store._next_delay(5.0) == keys_mod.REFRESH_INTERVAL


async def test_a_gateway_that_had_no_stored_keys_is_not_blocked_by_an_outage(fake: FakeOpenAI, pg: PostgresServer) -> None:
    """The store (Redis in production: it outlives the gateway processes) remembers that the database
    held no stored keys; a gateway started while PostgreSQL is down serves instead of answering 503."""
    from interlock.core.store import MemoryStore

    store = MemoryStore()  # shared by both gateways, as one Redis is by replicas
    pg.start()
    async with running_gateway(config(fake, pg.url), store=store) as first:
        assert (await chat(first))[0] == 200
    assert await store.get(keys_mod.STORED_COUNT) == 0
    pg.stop()
    async with running_gateway(config(fake, pg.url), store=store) as second:
        status, body = await chat(second)
        assert status == 200, body
    # and a store that knows of stored keys does not open up
    await store.set(keys_mod.STORED_COUNT, 2)
    async with running_gateway(config(fake, pg.url), store=store) as third:
        status, body = await chat(third)
        assert status == 503 and body["error"]["code"] == "key_store_unavailable"
