"""The ledger's journal: rows recorded by a process that dies are written by the next one.

A process is killed for real here (SIGKILL, in a child), on SQLite and on PostgreSQL;
the next exporter on the same journal directory must write exactly the rows the
database lacks, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from interlock.accounting import ledger
from interlock.core.types import Attempt, Decision, Usage
from interlock.plugins.exporters import ledger as ledger_exporter
from interlock.plugins.exporters.ledger import LedgerExporter, journal_directory
from interlock.plugins.exporters.ledger_journal import Journal

ROOT = Path(__file__).resolve().parents[2]


def decision(request_id: str, **changes: Any) -> Decision:
    d = Decision(
        request_id=request_id, ts=time.time(), endpoint="chat", requested_model="gpt-4o", route=None,
        strategy="ordered", candidates=["openai/gpt-4o"], stream=False, provider="openai", model="gpt-4o",
        attempts=[Attempt(1, "openai", "openai", "gpt-4o", usage=Usage(3, 4), cost_usd=Decimal("0.0000123456"))],
        usage=Usage(3, 4), latency_ms=1.5, cost_usd=Decimal("0.0000123456"), tags=["a"],
    )
    for key, value in changes.items():
        setattr(d, key, value)
    return d


async def rows(url: str, sql: str = "SELECT id FROM requests ORDER BY id") -> list[tuple[Any, ...]]:
    engine = await ledger.open_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]
    finally:
        await engine.dispose()


def segments(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".jsonl")) if os.path.isdir(directory) else []


CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys, time
    from decimal import Decimal
    from interlock.core.types import Attempt, Decision, Usage
    from interlock.plugins.exporters import ledger_journal
    from interlock.plugins.exporters.ledger import LedgerExporter

    url, journal, first, then, keep = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

    def decision(i):
        return Decision(
            request_id=f"req-{i:04d}", ts=time.time(), endpoint="chat", requested_model="gpt-4o", route=None,
            strategy="ordered", candidates=[], stream=False, provider="openai", model="gpt-4o",
            attempts=[Attempt(1, "openai", "openai", "gpt-4o", usage=Usage(3, 4), cost_usd=Decimal("0.5"))],
            usage=Usage(3, 4), latency_ms=1.0, cost_usd=Decimal("0.5"),
        )

    async def main():
        if keep == "keep":  # as if the process died between a commit and deleting its segments
            ledger_journal.Journal.committed = lambda self: None
        exporter = LedgerExporter(url, flush_interval=3600, journal=journal)
        await exporter.start()
        for i in range(first):
            exporter.record(decision(i))
        if then:
            await exporter.flush()  # these are committed
            for i in range(first, first + then):
                exporter.record(decision(i))
        print("recorded", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no final flush

    asyncio.run(main())
""")


def run_and_kill(url: str, journal: Path, first: int, then: int = 0, keep: str = "") -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(journal), str(first), str(then), keep or "-"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "recorded" in done.stdout


async def start(url: str, journal: Path) -> LedgerExporter:
    exporter = LedgerExporter(url, flush_interval=3600, journal=str(journal))
    await exporter.start()
    return exporter


async def test_rows_of_a_killed_process_are_written_by_the_next_start(database_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    run_and_kill(database_url, journal, 50)
    assert len(segments(str(journal))) == 1  # the dead process's segment, never committed
    exporter = await start(database_url, journal)
    try:
        assert exporter.replayed == 50
        await exporter.flush()
        assert len(await rows(database_url)) == 50
        assert segments(str(journal)) == []  # committed: deleted
        cost = await rows(database_url, "SELECT sum(cost_usd) FROM requests")
        assert Decimal(str(cost[0][0])) == Decimal("25")  # the rows come back whole, costs included
        assert (await rows(database_url, "SELECT count(*) FROM attempts"))[0][0] == 50
    finally:
        await exporter.close()


async def test_a_replay_writes_nothing_twice(database_url: str, tmp_path: Path) -> None:
    # 20 committed whose segment survived (the process died before deleting it), 5 only in the journal
    journal = tmp_path / "journal"
    run_and_kill(database_url, journal, 20, then=5, keep="keep")
    assert len(await rows(database_url)) == 20
    exporter = await start(database_url, journal)
    try:
        assert exporter.replayed == 25
        await exporter.flush()
        assert exporter.dropped == 0
        ids = [r[0] for r in await rows(database_url)]
        assert ids == [f"req-{i:04d}" for i in range(25)]
        assert (await rows(database_url, "SELECT count(*) FROM attempts"))[0][0] == 25
    finally:
        await exporter.close()


async def test_rows_go_to_the_journal_when_recorded_and_leave_it_when_committed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    exporter = LedgerExporter(url, flush_interval=3600)  # the default place: next to the file
    assert exporter.journal_dir == str(tmp_path / "ledger.db") + ".journal"
    await exporter.start()
    try:
        exporter.record(decision("req-1"))
        exporter.record(decision("req-2"))
        [segment] = segments(exporter.journal_dir)
        lines = (Path(exporter.journal_dir) / segment).read_bytes().splitlines()
        assert len(lines) == 3 and b'"interlock_ledger_journal"' in lines[0] and b'"req-2"' in lines[2]
        await exporter.flush()
        assert segments(exporter.journal_dir) == []
        exporter.record(decision("req-3"))  # a new segment after the flush
        assert len(segments(exporter.journal_dir)) == 1
    finally:
        await exporter.close()
    assert segments(str(tmp_path / "ledger.db.journal")) == []  # closed with everything written
    assert len(await rows(url)) == 3


async def test_rows_the_database_did_not_take_at_shutdown_wait_in_the_journal(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"  # the database's directory does not exist: every write fails
    url = f"sqlite+aiosqlite:///{missing / 'ledger.db'}"
    journal = tmp_path / "journal"
    exporter = await start(url, journal)
    for i in range(3):
        exporter.record(decision(f"req-{i}"))
    await exporter.close()  # the final write fails: before the journal, these rows were lost
    assert len(segments(str(journal))) == 1
    missing.mkdir()
    exporter = await start(url, journal)
    try:
        assert exporter.replayed == 3
        await exporter.flush()
    finally:
        await exporter.close()
    assert len(await rows(url)) == 3 and segments(str(journal)) == []


async def test_a_live_process_keeps_its_segments(tmp_path: Path) -> None:
    """Another process on the same directory (serve --workers) does not take a segment still locked."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    journal = tmp_path / "journal"
    live = await start(url, journal)
    try:
        live.record(decision("req-live"))
        other = await start(url, journal)
        try:
            assert other.replayed == 0
            await other.flush()
        finally:
            await other.close()
        assert len(segments(str(journal))) == 1  # still the live one's
        await live.flush()
    finally:
        await live.close()
    assert [r[0] for r in await rows(url)] == ["req-live"]


async def test_another_databases_segments_and_a_torn_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    journal = tmp_path / "journal"
    # what a killed process leaves: a whole row, then a write cut short
    d = decision("req-whole")
    request_values, attempt_values = ledger_exporter._SQLITE_ROWS
    dead = Journal(str(journal), url)
    dead.open()
    dead.append(ledger_exporter._journal_line((request_values(d), [attempt_values(d.request_id, a) for a in d.attempts])))
    dead.append(b'[["req-torn", "2026')
    dead.close(drained=False)
    # a segment of another database in the same directory
    other = Journal(str(journal), "postgresql+asyncpg://elsewhere/db")
    other.open()
    other.append(b'[["req-elsewhere"]]\n')
    other.close(drained=False)
    reader = await start(url, journal)
    try:
        assert reader.replayed == 1
        await reader.flush()
    finally:
        await reader.close()
    assert [r[0] for r in await rows(url)] == ["req-whole"]
    assert len(segments(str(journal))) == 1  # the other database's, left alone


async def test_a_journal_an_older_interlock_left_is_replayed(database_url: str, tmp_path: Path) -> None:
    """Rows journaled before migration 6 (two columns fewer per table) are written, the new columns NULL."""
    journal = tmp_path / "journal"
    d = decision("req-v5", unreported_cost_max_usd=Decimal("0.25"))
    d.attempts[0].unreported_cost_max_usd = Decimal("0.25")
    request_values, attempt_values = LedgerExporter(database_url)._row_values
    request, attempts = request_values(d), [attempt_values(d.request_id, a) for a in d.attempts]
    assert request[-2] == 0 and request[-1] == Decimal("0.25")  # today's rows end with migration 6's columns
    old = (request[:-2], [a[:-2] for a in attempts])  # the layout of schema version 5
    dead = Journal(str(journal), database_url)
    dead.open()
    dead.append(ledger_exporter._journal_line(old))
    dead.close(drained=False)
    reader = await start(database_url, journal)
    try:
        assert reader.replayed == 1
        await reader.flush()
        assert reader.dropped == 0
    finally:
        await reader.close()
    [(rid, cost, cache_write, unreported)] = await rows(
        database_url, "SELECT id, cost_usd, cache_write_tokens, unreported_cost_max_usd FROM requests")
    assert (rid, Decimal(str(cost)), cache_write, unreported) == ("req-v5", Decimal("0.0000123456"), None, None)
    [(tokens, attempt_cache_write, attempt_unreported)] = await rows(
        database_url, "SELECT input_tokens, cache_write_tokens, unreported_cost_max_usd FROM attempts")
    assert (tokens, attempt_cache_write, attempt_unreported) == (3, None, None)


async def test_a_journal_that_cannot_be_opened_does_not_stop_the_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    exporter = LedgerExporter(url, flush_interval=3600, journal=str(blocker / "journal"))
    with caplog.at_level(logging.ERROR, logger="interlock.ledger"):
        await exporter.start()
    try:
        assert "cannot open the journal directory" in caplog.text
        exporter.record(decision("req-1"))
        await exporter.flush()
    finally:
        await exporter.close()
    assert len(await rows(url)) == 1


def test_where_the_journal_lives() -> None:
    assert journal_directory("sqlite+aiosqlite:///data/ledger.db", True) == "data/ledger.db.journal"
    assert journal_directory("sqlite+aiosqlite:///:memory:", True) is None
    assert journal_directory("postgresql+asyncpg://u:p@db/x", True) == "interlock-ledger.journal"
    assert journal_directory("postgresql+asyncpg://u:p@db/x", "/var/lib/j") == "/var/lib/j"
    assert journal_directory("sqlite+aiosqlite:///ledger.db", False) is None


def test_a_segment_names_its_database_by_a_hash(tmp_path: Path) -> None:
    j = Journal(str(tmp_path / "j"), "postgresql+asyncpg://user:s3cret-password@db/x")
    j.open()
    j.append(b"[]\n")
    [segment] = segments(str(tmp_path / "j"))
    assert b"s3cret-password" not in (tmp_path / "j" / segment).read_bytes()
    j.close(drained=True)


async def test_spilled_rows_stay_in_the_journal(tmp_path: Path) -> None:
    """Rows beyond max_buffer leave memory while the database is down, but the journal keeps them."""
    missing = tmp_path / "not-yet"
    url = f"sqlite+aiosqlite:///{missing / 'ledger.db'}"
    journal = tmp_path / "journal"
    exporter = LedgerExporter(url, flush_interval=3600, batch_size=2, max_buffer=4, journal=str(journal))
    await exporter.start()
    for i in range(10):
        exporter.record(decision(f"req-{i}"))
    assert exporter.buffered <= 4  # bounded in memory
    assert exporter.spilled > 0 and exporter.dropped == 0
    missing.mkdir()
    await exporter.flush()  # writes what memory holds; the spilled rows' segments are kept
    await exporter.close()
    assert len(await rows(url)) < 10
    exporter = LedgerExporter(url, flush_interval=3600, journal=str(journal))
    await exporter.start()
    try:
        await exporter.flush()
    finally:
        await exporter.close()
    assert len(await rows(url)) == 10 and segments(str(journal)) == []


async def test_the_journal_is_synced_while_the_database_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    missing = tmp_path / "not-yet"
    exporter = LedgerExporter(f"sqlite+aiosqlite:///{missing / 'ledger.db'}", flush_interval=0.05,
                              journal=str(tmp_path / "journal"))
    await exporter.start()
    try:
        exporter.record(decision("req-1"))
        for _ in range(400):  # the flush loop fails, then syncs what waits (bounded: no hang)
            if synced:
                break
            await asyncio.sleep(0.025)
        assert synced  # the rows wait on disk, not only in the OS's cache
    finally:
        await exporter.close()
