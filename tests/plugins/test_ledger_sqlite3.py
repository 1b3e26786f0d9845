"""The SQLite ledger without SQLAlchemy in the serving process.

A gateway on the default SQLite ledger writes with the standard library's sqlite3
on one thread, and migrates (and compiles its INSERTs) in a child process
(``python -m interlock.plugins.exporters.ledger migrate-json URL``) unless SQLAlchemy is
already imported, as it is in this test process; the other ledger tests run the
same writer with the migration in-process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from interlock.accounting import ledger
from interlock.accounting.database import use_wal
from interlock.core.types import Attempt, Decision, Usage
from interlock.plugins.exporters import ledger as ledger_exporter
from interlock.plugins.exporters.ledger import LedgerExporter

ROOT = Path(__file__).resolve().parents[2]

# a gateway with the SQLite ledger against a fake upstream, in a fresh interpreter: one request,
# a graceful stop (the final flush writes the row), then the SQLAlchemy and aiosqlite modules loaded
SERVE_ONCE = textwrap.dedent('''
    import asyncio, json, sys
    from interlock.testing import FakeOpenAI
    from interlock.testing.gateway import running_gateway

    db = sys.argv[1]
    with FakeOpenAI(models=["gpt-4o"]).run_in_thread() as fake:
        toml = f"""
    [providers.openai]
    base_url = "{fake.base_url}"
    api_key = "sk-test"

    [database]
    url = "sqlite+aiosqlite:///{db}"

    [exporters.ledger]
    flush_interval = 3600
    """

        async def main():
            async with running_gateway(toml) as gw:
                reply = await gw.client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
                return reply.choices[0].message.content

        content = asyncio.run(main())
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"sqlalchemy", "aiosqlite"})
    print(json.dumps({"content": content, "loaded": loaded}))
''')


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def decision(request_id: str) -> Decision:
    return Decision(
        request_id=request_id, ts=1767225600.25, endpoint="chat", requested_model="gpt-4o", route=None,
        strategy="ordered", candidates=["openai/gpt-4o"], stream=False, provider="openai", model="gpt-4o",
        attempts=[Attempt(1, "openai", "openai", "gpt-4o", usage=Usage(3, 4))], usage=Usage(3, 4), latency_ms=1.5,
    )


def test_a_serving_process_never_imports_sqlalchemy(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    for run in range(2):  # a new file, then the existing one (schema up to date, empty api_keys)
        proc = subprocess.run(
            [sys.executable, "-c", SERVE_ONCE, str(db)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out == {"content": "Fake reply to: hi", "loaded": []}, proc.stderr
        assert rows(db, "SELECT count(*) FROM requests") == [(run + 1,)]
        assert rows(db, "SELECT count(*) FROM attempts") == [(run + 1,)]
    assert rows(db, "SELECT max(version) FROM schema_version") == [(ledger.SCHEMA_VERSION,)]
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]


def migrate_json(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlock.plugins.exporters.ledger", "migrate-json", url],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def test_migrate_json_prints_what_the_writer_needs(tmp_path: Path) -> None:
    proc = migrate_json("sqlite+aiosqlite:///ledger.db", tmp_path)  # relative to the working directory
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["version"] == out["schema_version"] == ledger.SCHEMA_VERSION
    assert out["connect"][0] == [str(tmp_path / "ledger.db")]
    assert out["requests_sql"].startswith("INSERT INTO requests (id, ts, ")
    assert out["requests_sql"].endswith("ON CONFLICT DO NOTHING")
    assert out["attempts_sql"].endswith("ON CONFLICT DO NOTHING")
    assert out["alerts_sql"] == (
        "INSERT INTO alerts (ts, kind, scope, message, value_usd, threshold_usd, details) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    assert out["alerts_columns"] == list(ledger_exporter._ALERT_COLUMNS)
    assert [m for _, m in out["log"]] == [f"ledger: applied schema migration {v}" for v in range(1, ledger.SCHEMA_VERSION + 1)]
    assert "error" not in out
    assert rows(tmp_path / "ledger.db", "SELECT max(version) FROM schema_version") == [(ledger.SCHEMA_VERSION,)]
    again = json.loads(migrate_json("sqlite+aiosqlite:///ledger.db", tmp_path).stdout)
    assert again["log"] == [] and again["version"] == ledger.SCHEMA_VERSION


def test_migrate_json_reports_failures(tmp_path: Path) -> None:
    proc = migrate_json(sqlite_url(tmp_path / "missing" / "ledger.db"), tmp_path)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["error_type"] == "OSError"
    assert "the directory of" in out["error"] and "does not exist" in out["error"]
    assert out["requests_sql"]  # the writer can keep the rows and retry the migration later
    assert "does not exist" in proc.stderr

    proc = migrate_json("sqlite:///x.db", tmp_path)  # a synchronous driver: unusable
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["error_type"] == "ValueError" and "async driver" in out["error"] and "requests_sql" not in out

    proc = subprocess.run([sys.executable, "-m", "interlock.plugins.exporters.ledger", "migrate"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.fixture
def child_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the exporter migrate in a child process, as it does when SQLAlchemy is not loaded."""
    monkeypatch.setattr(ledger_exporter, "_sqlalchemy_loaded", lambda: False)


@pytest.mark.usefixtures("child_migrations")
async def test_the_exporter_migrates_in_a_child_process(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    exporter = LedgerExporter(sqlite_url(db), flush_interval=3600)
    await exporter.start()
    try:
        assert exporter._sql is not None and exporter._writer is not None
        exporter.record(decision("r1"))
        await exporter.flush()
        exporter.record(decision("r1"))  # a retried write never duplicates
        exporter.record(decision("r2"))
    finally:
        await exporter.close()
    assert rows(db, "SELECT id FROM requests ORDER BY id") == [("r1",), ("r2",)]
    assert rows(db, "SELECT max(version) FROM schema_version") == [(ledger.SCHEMA_VERSION,)]


@pytest.mark.usefixtures("child_migrations")
async def test_a_failed_child_migration_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    later = tmp_path / "not-yet"
    exporter = LedgerExporter(sqlite_url(later / "ledger.db"), flush_interval=3600)
    with caplog.at_level(logging.WARNING, logger="interlock.ledger"):
        await exporter.start()
    try:
        assert "ledger: cannot prepare the database" in caplog.text
        assert "(OSError: cannot open the SQLite database: the directory of" in caplog.text
        exporter.record(decision("early"))
        with pytest.raises(OSError, match="the directory of .*ledger.db does not exist"):
            await exporter.flush()
        assert exporter.buffered == 2
        later.mkdir()
        await exporter.flush()
        assert exporter.buffered == 0
    finally:
        await exporter.close()
    assert rows(later / "ledger.db", "SELECT id FROM requests") == [("early",)]


@pytest.mark.usefixtures("child_migrations")
async def test_a_newer_schema_is_reported_as_in_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "ledger.db"
    assert migrate_json(sqlite_url(db), tmp_path).returncode == 0
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO schema_version VALUES (99, '2030-01-01 00:00:00')")
    exporter = LedgerExporter(sqlite_url(db), flush_interval=3600)
    with caplog.at_level(logging.WARNING, logger="interlock.ledger"):
        await exporter.start()
    try:
        assert "(RuntimeError: the ledger database is at schema version 99, newer than this interlock's" in caplog.text
        exporter.record(decision("r1"))
        with pytest.raises(RuntimeError, match="upgrade interlock"):
            await exporter.flush()
        assert exporter.buffered == 2
    finally:
        await exporter.close()


def test_the_exporter_agrees_with_the_schema() -> None:
    assert ledger_exporter.MAX_ERROR_CHARS == ledger.MAX_ERROR_CHARS
    assert ledger_exporter._ALERT_COLUMNS == tuple(c.name for c in ledger.alerts.columns if c.name != "id")


def test_the_exporter_module_does_not_import_sqlalchemy() -> None:
    code = (
        "import sys, interlock.core.app, interlock.plugins.exporters.ledger, interlock.accounting.keys, interlock.accounting.spend; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'aiosqlite'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------- #
# the two writer threads: routine batches at idle priority, a backlog at normal priority
# --------------------------------------------------------------------------- #


def test_a_hurried_write_commits_what_it_wrote_and_returns_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        sql = "INSERT OR IGNORE INTO t (n) VALUES (?)"
        pieces = [(sql, [(n,) for n in range(200)])]  # in pieces of 64 rows
        hurry = threading.Event()
        calls = []
        real = conn.executemany

        class Conn:  # sets hurry once the first piece is in, as record() does when rows pile up
            def getlimit(self, category: int) -> int:
                return conn.getlimit(category)

            def execute(self, statement: str, params: list[int] | None = None) -> object:
                if params is None:  # BEGIN / COMMIT
                    return conn.execute(statement)
                calls.append(len(params))  # a multi-row INSERT: one column per row
                result = conn.execute(statement, params)
                hurry.set()
                return result

            def executemany(self, statement: str, rows: list[tuple[int]]) -> object:
                calls.append(len(rows))
                result = real(statement, rows)
                hurry.set()
                return result

        rest = ledger_exporter._write_pieces(Conn(), pieces, hurry)  # type: ignore[arg-type]
        assert calls == [64]
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (64,)  # committed
        assert not conn.in_transaction
        assert [len(rows) for _, rows in rest] == [64, 64, 8]
        assert ledger_exporter._write_pieces(conn, rest) == []
        assert conn.execute("SELECT count(*), min(n), max(n) FROM t").fetchone() == (200, 0, 199)


async def test_routine_batches_go_to_the_idle_thread_until_it_is_found_starved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ledger.db"
    exporter = LedgerExporter(sqlite_url(db), flush_interval=3600)
    threads: list[tuple[str, bool]] = []
    real = ledger_exporter._write_pieces

    def spy(conn: sqlite3.Connection, pieces: list, hurry: threading.Event | None = None) -> list:
        threads.append((threading.current_thread().name, hurry is not None))
        if hurry is not None and len(threads) == 2:
            hurry.set()  # the second idle write finds rows piling up behind it
        return real(conn, pieces, hurry)

    monkeypatch.setattr(ledger_exporter, "_write_pieces", spy)
    await exporter.start()
    try:
        for batch in range(3):
            for i in range(3):
                exporter.record(decision(f"r{batch}-{i}"))
            await exporter.flush()
    finally:
        await exporter.close()
    names = [(name.rsplit("_", 1)[0], hurried) for name, hurried in threads]
    assert names == [
        ("interlock-ledger-idle", True),  # routine
        ("interlock-ledger-idle", True),  # hurried after its first piece ...
        ("interlock-ledger", False),  # ... the rest at normal priority
        ("interlock-ledger", False),  # and the next batch too (backoff)
    ]
    assert len(rows(db, "SELECT id FROM requests")) == 9
    assert len(rows(db, "SELECT request_id FROM attempts")) == 9


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policy")
def test_the_idle_thread_runs_under_sched_idle() -> None:
    from interlock.core.threads import idle_thread

    seen: list[int] = []

    def probe() -> None:
        assert idle_thread(threading.current_thread())
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert seen == [os.SCHED_IDLE]


def test_switching_a_new_file_to_wal_waits_for_another_process_lock(tmp_path: Path) -> None:
    """SQLite refuses the switch at once ("database is locked") while another connection writes a
    new file; two ``serve --workers`` migrating one new ledger hit that. use_wal waits instead."""
    db = tmp_path / "new.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # a migration in another process
    holder.execute("CREATE TABLE t (x)")
    waiter = sqlite3.connect(db, isolation_level=None, timeout=5)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        waiter.execute("PRAGMA journal_mode=WAL")  # what SQLite does without the retry
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    use_wal(waiter.execute, timeout=10)
    release.join()
    assert waiter.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.close()
    waiter.close()
