"""The SQL store of Responses API responses: pending map, batched writes, retention, team scope, restarts.

Runs on a SQLite file and on a fresh PostgreSQL database (tests/servers.py: the run's server
from ``INTERLOCK_TEST_POSTGRES_URL``; skipped without one, failed in CI).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from interlock.accounting.stored_responses import SqlResponseStore
from interlock.core.doors.stored_responses import StoredResponse
from interlock.core.errors import GatewayError

class Clock:
    """A clock tests move by hand: records expire without waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def record(n: int, *, team: str | None = "search", created_at: float | None = None, **extra: Any) -> StoredResponse:
    rid = f"resp_{n:04d}"
    fields: dict[str, Any] = dict(
        id=rid, created_at=round(time.time(), 3) if created_at is None else created_at, team=team,
        api_key_id="cfg_search" if team else None, request_id=f"req_{n}", model="gpt-4o",
        input=[{"role": "user", "content": f"question {n}"}, {"type": "message", "role": "assistant",
               "content": [{"type": "output_text", "text": "earlier answer"}]}],
        response={"id": rid, "object": "response", "model": "gpt-4o", "status": "completed",
                  "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}]},
    )
    return StoredResponse(**{**fields, **extra})


@pytest.fixture
def db_url(database_url: str) -> str:
    """A SQLite file, then a fresh PostgreSQL database (the ``database_url`` fixture, tests/conftest.py)."""
    return database_url


StoreFactory = Callable[..., Awaitable[SqlResponseStore]]


@pytest.fixture
async def make_store(db_url: str) -> AsyncIterator[StoreFactory]:
    """Started stores on ``db_url`` (or another URL), closed after the test."""
    stores: list[SqlResponseStore] = []

    async def make(url: str | None = None, **kwargs: Any) -> SqlResponseStore:
        store = SqlResponseStore(url or db_url, **kwargs)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def _fields(s: StoredResponse | None) -> tuple[Any, ...]:
    assert s is not None
    # records are made on whole milliseconds, so a database's microsecond rounding never moves a boundary
    return (s.id, round(s.created_at, 3), s.team, s.api_key_id, s.request_id, s.model, s.input, s.response)


async def test_a_put_is_readable_at_once_and_only_by_its_team(make_store: StoreFactory) -> None:
    store = await make_store()
    mine, open_one = record(1), record(2, team=None)
    store.put(mine)
    store.put(open_one)
    assert await store.get(mine.id, "search") is mine  # from memory, before any write
    assert store.pending == 2
    assert await store.get(mine.id, "billing") is None
    assert await store.get(mine.id, None) is None  # the teamless scope is a scope of its own
    assert await store.get(open_one.id, None) is open_one
    assert await store.get(open_one.id, "search") is None
    assert await store.get("resp_unknown", "search") is None


async def test_a_flush_writes_one_batch_and_empties_the_pending_map(make_store: StoreFactory) -> None:
    store = await make_store(batch_size=2)
    originals = [record(n) for n in range(5)]
    for r in originals:
        store.put(r)
    await store.flush()
    assert store.pending == 0
    reader = await make_store()  # nothing in its memory: every read goes to the database
    for r in originals:
        assert _fields(await reader.get(r.id, "search")) == _fields(r)
        assert await reader.get(r.id, "billing") is None  # the team is checked in SQL too
        assert await reader.get(r.id, None) is None


async def test_the_flush_task_writes_without_being_asked(make_store: StoreFactory) -> None:
    store = await make_store(batch_size=1)  # a full batch wakes the task at once
    r = record(1)
    store.put(r)
    await until(lambda: store.pending == 0, "the flush task never wrote the record")
    assert _fields(await (await make_store()).get(r.id, "search")) == _fields(r)


async def until(predicate: Callable[[], bool], message: str) -> None:
    """Wait for the background task to reach a state (polled; the deadline only catches a hang)."""
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.01)


async def test_close_writes_what_is_pending_and_a_new_store_reads_it(db_url: str) -> None:
    first = SqlResponseStore(db_url)
    await first.start()
    r = record(7)
    first.put(r)
    await first.close()  # graceful shutdown: nothing lost
    second = SqlResponseStore(db_url)  # a restarted gateway
    await second.start()
    try:
        assert _fields(await second.get(r.id, "search")) == _fields(r)
        assert await second.delete(r.id, "search") is True
    finally:
        await second.close()
    third = SqlResponseStore(db_url)
    try:
        assert await third.get(r.id, "search") is None  # the delete reached the database
    finally:
        await third.close()


async def test_expired_records_are_not_returned_and_are_purged(make_store: StoreFactory) -> None:
    clock = Clock()
    store = await make_store(retention=timedelta(hours=1), clock=clock)
    short, forever_store = record(1, created_at=clock.now), await make_store(retention=None, clock=clock)
    kept = record(2, created_at=clock.now)
    store.put(short)
    forever_store.put(kept)
    clock.now += 1800
    assert await store.get(short.id, "search") is short
    await store.flush()
    await forever_store.flush()
    assert _fields(await store.get(short.id, "search")) == _fields(short)  # from the database, not expired yet
    clock.now += 3600  # past the hour
    assert await store.get(short.id, "search") is None
    assert await store.delete(short.id, "search") is False  # expired: as if gone
    assert await store.purge() == 1  # the expired row; the one kept until deleted stays
    assert await store.purge() == 0
    clock.now += 10 * 365 * 86400
    assert _fields(await store.get(kept.id, "search")) == _fields(kept)


async def test_an_expired_pending_record_is_not_returned(make_store: StoreFactory) -> None:
    clock = Clock()
    store = await make_store(retention=timedelta(minutes=5), clock=clock)
    store.put(record(1, created_at=clock.now))
    clock.now += 301
    assert await store.get("resp_0001", "search") is None


async def test_the_purge_is_bounded(make_store: StoreFactory) -> None:
    clock = Clock()
    store = await make_store(retention=timedelta(minutes=1), clock=clock, purge_batch=3)
    for n in range(5):
        store.put(record(n, created_at=clock.now))
    await store.flush()
    clock.now += 120
    assert [await store.purge() for _ in range(3)] == [3, 2, 0]


async def test_delete_is_scoped_to_the_team_in_memory_and_in_the_database(make_store: StoreFactory) -> None:
    store = await make_store()
    store.put(record(1))
    store.put(record(2))
    assert await store.delete("resp_0001", "billing") is False
    assert await store.delete("resp_0001", None) is False
    assert await store.delete("resp_0001", "search") is True  # still pending: removed from memory
    assert await store.get("resp_0001", "search") is None
    await store.flush()
    reader = await make_store()
    assert await reader.get("resp_0001", "search") is None  # never written
    assert await reader.delete("resp_0002", "billing") is False  # from the database now
    assert await reader.delete("resp_0002", "search") is True
    assert await reader.delete("resp_0002", "search") is False
    assert await store.get("resp_0002", "search") is None


async def test_a_delete_while_its_record_is_being_written_does_not_resurrect_it(make_store: StoreFactory) -> None:
    store = await make_store()
    store.put(record(1))
    flushing = asyncio.create_task(store.flush())
    await asyncio.sleep(0)  # one turn of the loop: the flush takes the lock and the record, then waits on the database
    assert store.pending == 1 and store._lock.locked()
    assert await store.delete("resp_0001", "search") is True
    await flushing
    assert await (await make_store()).get("resp_0001", "search") is None


async def test_an_unreachable_database_keeps_records_in_memory_up_to_a_cap(
    tmp_path: Path, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "not-yet"
    url = f"sqlite+aiosqlite:///{missing / 'interlock.db'}"
    store = await make_store(url, max_pending=3)
    with caplog.at_level(logging.WARNING, logger="interlock.responses"):
        for n in range(5):
            store.put(record(n))
    assert store.pending == 3 and store.dropped == 2
    assert await store.get("resp_0000", "search") is None  # the oldest went first
    assert (await store.get("resp_0004", "search")) is not None  # requests still see what is pending
    assert len([r for r in caplog.records if "dropping the oldest" in r.message]) == 1  # once, not per record
    with pytest.raises(OSError):
        await store.flush()
    assert store.pending == 3
    with pytest.raises(GatewayError) as err:  # a read that needs the database says it is unavailable
        await store.get("resp_9999", "search")
    assert err.value.status == 503 and err.value.code == "response_store_unavailable"
    missing.mkdir()  # the database becomes reachable
    await store.flush()
    assert store.pending == 0
    reader = await make_store(url)
    assert [n for n in range(5) if await reader.get(f"resp_{n:04d}", "search")] == [2, 3, 4]


async def test_the_flush_task_warns_once_while_the_database_is_unreachable(
    tmp_path: Path, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store(f"sqlite+aiosqlite:///{tmp_path / 'nope' / 'x.db'}", batch_size=1)
    with caplog.at_level(logging.WARNING, logger="interlock.responses"):
        for n in range(3):
            store.put(record(n))  # each put wakes the task: one failed write each
            await until(lambda: store.failed_writes > n, "the flush task did not try to write")
    warnings = [r for r in caplog.records if "cannot write stored responses" in r.message]
    assert len(warnings) == 1 and store.pending == 3
    assert "x.db" in warnings[0].message


async def test_a_record_the_database_cannot_take_is_dropped_and_the_rest_written(make_store: StoreFactory) -> None:
    store = await make_store()
    store.put(record(1))
    store.put(record(2, response={"id": "resp_0002", "unencodable": {1, 2}}))  # a set is not JSON
    store.put(record(3))
    await store.flush()
    assert store.pending == 0 and store.dropped == 1
    reader = await make_store()
    assert [n for n in (1, 2, 3) if await reader.get(f"resp_{n:04d}", "search")] == [1, 3]


async def test_a_retried_write_of_a_stored_id_is_a_no_op(make_store: StoreFactory) -> None:
    a, b = await make_store(), await make_store()
    a.put(record(1))
    await a.flush()
    b.put(record(1, model="changed"))  # e.g. a write that committed but was not acknowledged
    await b.flush()
    assert b.pending == 0
    assert (await (await make_store()).get("resp_0001", "search")).model == "gpt-4o"  # type: ignore[union-attr]


async def test_reads_do_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    store = SqlResponseStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        assert await store.get("resp_x", None) is None
        assert await store.delete("resp_x", None) is False
    finally:
        await store.close()
    assert not path.exists()


async def test_rows_hold_json_text_and_utc_times(tmp_path: Path) -> None:
    path = tmp_path / "rows.db"
    clock = Clock()
    store = SqlResponseStore(f"sqlite+aiosqlite:///{path}", retention=timedelta(days=30), clock=clock)
    await store.start()
    store.put(record(1, created_at=1_800_000_000.0))
    await store.close()
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT id, created_at, expires_at, team, api_key_id, request_id, model, input, response "
                           "FROM stored_responses").fetchone()
    assert row[:7] == ("resp_0001", "2027-01-15 08:00:00.000000", "2027-02-14 08:00:00.000000", "search",
                       "cfg_search", "req_1", "gpt-4o")
    assert row[7].startswith('[{"role":"user"') and row[8].startswith('{"id":"resp_0001"')
