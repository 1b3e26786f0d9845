"""The ledger's SQLite fast path stores exactly what SQLAlchemy's Core inserts store.

On SQLite the exporter builds each row already in stored form (text timestamps, float
decimals, 0/1 booleans) and hands plain tuples to the driver's ``executemany``; on other
databases rows go through SQLAlchemy Core inserts. These tests write the same decisions both
ways and compare what is in the database, value by value and storage class by storage class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from interlock.accounting import ledger
from interlock.core.types import Alert, Attempt, Decision, Usage
from interlock.plugins.exporters import ledger as ledger_exporter
from interlock.plugins.exporters.ledger import LedgerExporter, attempt_row, request_row

LONG = "é🚀" * 700  # 1400 characters, longer than MAX_ERROR_CHARS, multi-byte in UTF-8


def decisions() -> list[Decision]:
    """Decisions covering NULLs, many-digit decimals, unicode, JSON lists, odd times, fallbacks."""
    out = []
    # a plain success, as most rows are
    out.append(Decision(
        request_id="req-plain", ts=1767225600.123456, endpoint="chat", requested_model="gpt-4o", route=None,
        strategy="ordered", candidates=["openai/gpt-4o"], stream=False, provider="openai", model="gpt-4o",
        attempts=[Attempt(1, "openai", "openai", "gpt-4o", usage=Usage(12, 34), latency_ms=0.8,
                          response_id="chatcmpl-1", cost_usd=Decimal("0.0003700000"), start_ms=0.1)],
        usage=Usage(12, 34), latency_ms=1.1, cost_usd=Decimal("0.0003700000"), tags=["a", "b"], user="alice",
    ))
    # everything that may be NULL is: no attempt was possible, no usage, no price, a whole-second time
    out.append(Decision(
        request_id="req-nulls", ts=1767225600.0, endpoint="embeddings", requested_model="nope", route=None,
        strategy=None, candidates=[], attempts=[], stream=False, status=404, error_type="model_not_found",
        error_message="model 'nope' not found",
    ))
    # a fallback chain: a timeout, a retried 500, a hedge, then an answer on another model; unicode
    # everywhere, NUL characters, over-long texts, decimals with more digits than the column keeps
    out.append(Decision(
        request_id="req-fallback-ü", ts=946684799.9999995, endpoint="chat", requested_model="smart 🚀",
        route="smart", strategy="weighted", candidates=["openai/gpt-4o", "backup/gpt-4o-mini"], stream=True,
        provider="backup", model="gpt-4o-mini", latency_ms=1234, ttft_ms=7, usage=Usage(1000, 20, 900, 5, cache_write_tokens=60),
        api_key_id="key_ab12", team="équipe-搜索", user="Zoë\x00", tags=["späti", "🔥", 'quote"d', "back\\slash", ""],
        rule="rule 'long-context': prompt_tokens >= 32000 → großes Modell", hedged=True,
        events=["retry openai/gpt-4o after timeout", "fallback → backup", "nul\x00here", LONG],
        cost_usd=Decimal("0.12345678901234567890123"), cost_delta_usd=Decimal("-0.0000000001234567"),
        unreported_cost_max_usd=Decimal("0.00062500000000000001"),
        attempts=[
            Attempt(1, "openai", "openai", "gpt-4o", outcome="timeout", action="retry", latency_ms=30000.5,
                    error="timed out after 30 s", start_ms=0.0, unreported_cost_max_usd=Decimal("0.000625")),
            Attempt(2, "openai", "openai", "gpt-4o", outcome="server_error", action="fallback", status=500,
                    latency_ms=12.25, error=LONG + "\x00", usage=Usage(1000, 0), start_ms=30001,
                    cost_usd=Decimal("99999999.9999999999")),
            Attempt(3, "openai", "openai", "gpt-4o", outcome="connection", action="fallback", latency_ms=41.0,
                    hedge=True, usage=Usage(0, 0), start_ms=30014, cost_usd=Decimal("0")),
            Attempt(4, "backup", "openai", "gpt-4o-mini\x00", outcome="ok", latency_ms=40, ttft_ms=3,
                    usage=Usage(1000, 20, 900, 5, cache_write_tokens=60), response_id="chatcmpl-ß" + "x" * 1200, start_ms=30013.75,
                    cost_usd=Decimal("1E-10")),
        ],
    ))
    # times: before 1970, the far future, microsecond rounding on both sides of .5
    for i, ts in enumerate((0.0, -1.5, 1e9 + 0.0000005, 1e9 + 0.0000015, 253402300799.999, 1767225600.999999)):
        out.append(Decision(
            request_id=f"req-time-{i}", ts=ts, endpoint="chat", requested_model="gpt-4o", route=None,
            strategy="ordered", candidates=[], attempts=[Attempt(1, "openai", "openai", "gpt-4o")], stream=bool(i % 2),
            provider="openai", model="gpt-4o", usage=Usage(), cost_usd=Decimal("123.4567890123"),
        ))
    return out


def alerts() -> list[Alert]:
    return [
        Alert("anomaly", "team:équipe", "spend 🚀 up", value_usd=Decimal("1.23456789012"),
              threshold_usd=None, details={"window": "1h", "ü": [1, 2.5, None]}, ts=1767225600.5),
    ]


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def write_through(exporter: LedgerExporter, ds: list[Decision], als: list[Alert], *, fast: bool) -> None:
    """Record everything through ``exporter`` and flush; ``fast``: the SQLite fast path must be the one in use."""
    await exporter.start()
    try:
        assert (exporter._sql is not None) is fast  # the path under test
        for d in ds:
            exporter.record(d)
        for alert in als:
            exporter.alert(alert)
        await exporter.flush()
        assert exporter.buffered == 0 and exporter.dropped == 0
    finally:
        await exporter.close()


async def write_fast(db: Path, ds: list[Decision], als: list[Alert]) -> LedgerExporter:
    """Through the exporter, which on SQLite takes the fast path."""
    exporter = LedgerExporter(sqlite_url(db), flush_interval=3600)
    await write_through(exporter, ds, als, fast=True)
    return exporter


async def write_core(db: Path, ds: list[Decision], als: list[Alert]) -> None:
    """The reference: SQLAlchemy Core inserts of the row dicts, bind processing and all."""
    engine = await ledger.open_engine(sqlite_url(db))
    try:
        await ledger.migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(
                sqlite_insert(ledger.requests).on_conflict_do_nothing(), [request_row(d) for d in ds]
            )
            await conn.execute(
                sqlite_insert(ledger.attempts).on_conflict_do_nothing(),
                [attempt_row(d.request_id, a) for d in ds for a in d.attempts],
            )
            await conn.execute(ledger.alerts.insert(), [ledger_exporter.alert_row(a) for a in als])
    finally:
        await engine.dispose()


def raw_rows(db: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row as the stdlib driver returns it, each value paired with its SQLite storage class."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        pairs = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
        order = {"requests": "id", "attempts": "request_id, n", "alerts": "id"}[table]
        return list(conn.execute(f"SELECT {pairs} FROM {table} ORDER BY {order}"))


async def sqlalchemy_rows(db: Path, table: Any) -> list[tuple[Any, ...]]:
    """Every row read back through SQLAlchemy's types (datetime, Decimal, bool)."""
    engine = await ledger.open_engine(sqlite_url(db))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(table).order_by(*table.primary_key.columns))
            return [tuple(row) for row in result]
    finally:
        await engine.dispose()


async def test_fast_path_stores_what_sqlalchemy_stores(tmp_path: Path) -> None:
    ds, als = decisions(), alerts()
    fast, core = tmp_path / "fast.db", tmp_path / "core.db"
    await write_fast(fast, ds, als)
    await write_core(core, ds, als)

    for table in ("requests", "attempts", "alerts"):
        stored = raw_rows(fast, table)
        assert stored == raw_rows(core, table), table
        assert len(stored) == {"requests": len(ds), "attempts": sum(len(d.attempts) for d in ds), "alerts": 1}[table]
    for table in (ledger.requests, ledger.attempts, ledger.alerts):
        assert await sqlalchemy_rows(fast, table) == await sqlalchemy_rows(core, table), table.name

    # and the documented forms, spelled out for a few values
    with contextlib.closing(sqlite3.connect(fast)) as conn:
        conn.row_factory = sqlite3.Row
        r = dict(conn.execute("SELECT * FROM requests WHERE id = 'req-fallback-ü'").fetchone())
        assert r["ts"] == "2000-01-01 00:00:00.000000"  # .9999995 s rounds up, as datetime.fromtimestamp does
        assert (r["stream"], r["fallback_used"], r["hedged"]) == (1, 1, 1)
        assert r["tags"] == '["späti","🔥","quote\\"d","back\\\\slash",""]'
        assert r["user"] == "Zoë\ufffd" and r["error_message"] is None
        assert len(r["events"]) > ledger.MAX_ERROR_CHARS and "nul\ufffdhere" in r["events"]
        assert r["cost_usd"] == float(Decimal("0.12345678901234567890123"))
        assert r["ttft_ms"] == 7.0 and isinstance(r["ttft_ms"], float)
        nulls = dict(conn.execute("SELECT * FROM requests WHERE id = 'req-nulls'").fetchone())
        assert nulls["ts"] == "2026-01-01 00:00:00.000000"
        assert all(nulls[c] is None for c in ("input_tokens", "cost_usd", "ttft_ms", "strategy", "events", "team"))
        assert nulls["tags"] == "[]" and nulls["attempts"] == 0


def test_sqlite_rows_are_sqlalchemys_bound_values() -> None:
    """Each fast-path value is what the SQLite dialect's bind processor makes of the Core row's value."""
    dialect = sqlite_dialect.dialect()
    request_values, attempt_values = ledger_exporter._SQLITE_ROWS

    def bound(table: Any, row: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for column in table.columns:
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            value = row[column.name]
            out.append(process(value) if process is not None else value)
        return tuple(out)

    for d in decisions():
        fast = request_values(d)
        assert fast == bound(ledger.requests, request_row(d))
        assert [type(v) for v in fast] == [type(v) for v in bound(ledger.requests, request_row(d))]
        for a in d.attempts:
            fast = attempt_values(d.request_id, a)
            reference = bound(ledger.attempts, attempt_row(d.request_id, a))
            assert fast == reference and [type(v) for v in fast] == [type(v) for v in reference]


def test_timestamps_are_formatted_as_sqlalchemy_formats_them() -> None:
    """The fast timestamp text equals DATETIME's bind processor applied to datetime.fromtimestamp(ts, UTC),
    microsecond rounding (half to even) and the carry into the next second included."""
    dialect = sqlite_dialect.dialect()
    process = ledger.requests.c.ts.type.dialect_impl(dialect).bind_processor(dialect)
    rnd = random.Random(20260101)
    values: list[float] = [0.0, 1.0, 0.5e-6, 1.5e-6, 2.5e-6, 0.9999995, 1e9 + 0.9999995, 4102444799.9999995,
                           253402300799.0, 253402300799.5, -0.0, -1.5, -1e-7, 1767225600]
    values += [rnd.uniform(0, 4e9) for _ in range(5000)] + [rnd.uniform(1.7e9, 1.9e9) for _ in range(5000)]
    for _ in range(3000):  # a half microsecond, and the floats either side of it
        half = rnd.randrange(0, 2**32) + (rnd.randrange(0, 10**6) + 0.5) / 1e6
        values += [half, math.nextafter(half, 0.0), math.nextafter(half, math.inf)]
    values += [k / 2**21 for k in range(0, 2**21, 97)]  # fractions whose microseconds are exactly .5
    for ts in values:
        assert ledger_exporter._sqlite_timestamp(ts) == process(datetime.fromtimestamp(ts, UTC)), repr(ts)


def test_row_tuples_follow_the_table_columns() -> None:
    # a column added to the schema must be added to the row builders (and so to the fast path's INSERT)
    assert ledger_exporter._REQUEST_COLUMNS == tuple(c.name for c in ledger.requests.columns)
    assert ledger_exporter._ATTEMPT_COLUMNS == tuple(c.name for c in ledger.attempts.columns)
    d = decisions()[2]
    assert len(ledger_exporter._SQLITE_ROWS[0](d)) == len(ledger.requests.columns)
    assert len(ledger_exporter._SQLITE_ROWS[1](d.request_id, d.attempts[0])) == len(ledger.attempts.columns)


async def test_the_generic_path_stores_the_same_rows(tmp_path: Path) -> None:
    """The Core path other databases take, run on SQLite: same rows as the fast path."""
    ds, als = decisions(), alerts()
    fast, generic = tmp_path / "fast.db", tmp_path / "generic.db"
    await write_fast(fast, ds, als)
    exporter = LedgerExporter(sqlite_url(generic), flush_interval=3600)
    exporter._sqlite, exporter._row_values = False, ledger_exporter._GENERIC_ROWS  # as for PostgreSQL
    await write_through(exporter, ds, als, fast=False)
    for table in ("requests", "attempts", "alerts"):
        assert raw_rows(fast, table) == raw_rows(generic, table), table


@pytest.mark.parametrize("bad_at", [0, 70, 149])
async def test_a_large_batch_is_one_transaction(tmp_path: Path, bad_at: int) -> None:
    """More rows than one executemany takes: a refused row anywhere rolls the whole batch back,
    then the rest is written decision by decision, nothing twice."""
    db = tmp_path / "ledger.db"
    exporter = LedgerExporter(sqlite_url(db), flush_interval=3600)
    await exporter.start()
    try:
        ds = []
        for i in range(150):
            d = decisions()[2]
            d.request_id = f"req-{i:03d}"
            if i == bad_at:
                d.requested_model = None  # type: ignore[assignment]  # violates NOT NULL
            ds.append(d)
        for d in ds:
            exporter.record(d)
        await exporter.flush()
        assert exporter.buffered == 0 and exporter.dropped == 1 + 4
    finally:
        await exporter.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM requests ORDER BY id")]
        assert ids == [f"req-{i:03d}" for i in range(150) if i != bad_at]
        assert conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 149 * 4


async def test_multi_row_inserts_store_what_sqlalchemy_stores(tmp_path: Path) -> None:
    """Batches beyond 64 rows go in as multi-row INSERTs: the same rows, a repeated id skipped as before."""
    ds = []
    base = decisions()
    for i in range(200):
        d = base[i % len(base)]
        ds.append(dataclasses.replace(d, request_id=f"req-{i:03d}-{d.request_id}"))
    ds.insert(100, dataclasses.replace(ds[10]))  # a client reusing an x-request-id, inside a 64-row group
    fast, core = tmp_path / "fast.db", tmp_path / "core.db"
    await write_fast(fast, ds, alerts())
    await write_core(core, ds, alerts())
    for table in ("requests", "attempts"):
        stored = raw_rows(fast, table)
        assert stored == raw_rows(core, table), table
    assert len(raw_rows(fast, "requests")) == 200
    # the 64-row form was used (and is the INSERT with its conflict clause)
    assert any(n == 64 and multi and multi.endswith("ON CONFLICT DO NOTHING")
               for (sql, n), multi in ledger_exporter._MULTI_ROW_SQL.items() if sql.startswith("INSERT INTO requests"))


def test_multi_row_sql_keeps_the_conflict_clause() -> None:
    sql = "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"
    assert ledger_exporter._multi_row_sql(sql, 3) == (
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING")
    assert ledger_exporter._multi_row_sql("INSERT INTO t SELECT 1", 3) is None
