"""The ledger exporter on each database it supports: a SQLite file and PostgreSQL.

The same decisions are written through :class:`LedgerExporter` and read back through
SQLAlchemy: timestamps (aware, UTC, before 1970 and far ahead), decimals to the column's
10 places, NUL characters, unicode, JSON lists, repeated request ids, a refused row among
good ones, and the migrations (fresh, repeated, from a version 1 database).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, func, insert, inspect, select

from interlock.accounting import ledger
from interlock.plugins.exporters.ledger import LedgerExporter
from tests.plugins.test_ledger_rows import alerts, decisions


async def rows(url: str, table: Any) -> list[dict[str, Any]]:
    engine = await ledger.open_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(table).order_by(*table.primary_key.columns))
            return [dict(r) for r in result.mappings()]
    finally:
        await engine.dispose()


async def write(url: str, ds: list[Any], als: list[Any] = []) -> LedgerExporter:  # noqa: B006 (never mutated)
    exporter = LedgerExporter(url, flush_interval=3600)
    await exporter.start()
    try:
        for d in ds:
            exporter.record(d)
        for a in als:
            exporter.alert(a)
        await exporter.flush()
    finally:
        await exporter.close()
    return exporter


def close(got: Any, want: Decimal | None, places: int = 10) -> bool:
    """A stored Numeric(18, 10) value is ``want`` to the column's places (SQLite keeps a float)."""
    if want is None:
        return got is None
    quantum = Decimal(1).scaleb(-places)
    return abs(Decimal(str(got)) - want.quantize(quantum)) <= quantum * max(1, abs(want))


async def test_decisions_are_stored_and_read_back(database_url: str) -> None:
    ds, als = decisions(), alerts()
    exporter = await write(database_url, ds, als)
    assert exporter.dropped == 0
    stored = {r["id"]: r for r in await rows(database_url, ledger.requests)}
    assert set(stored) == {d.request_id for d in ds}
    for d in ds:
        row = stored[d.request_id]
        ts = row["ts"] if row["ts"].tzinfo else row["ts"].replace(tzinfo=UTC)  # SQLite: naive UTC
        assert abs(ts - datetime.fromtimestamp(d.ts, UTC)).total_seconds() < 1e-6, d.request_id
        assert close(row["cost_usd"], d.cost_usd), (d.request_id, row["cost_usd"], d.cost_usd)
        assert close(row["cost_delta_usd"], d.cost_delta_usd)
        assert json.loads(row["tags"]) == list(d.tags)
        assert row["stream"] is bool(d.stream) and row["fallback_used"] is bool(d.fallback_used)
    odd = stored["req-fallback-ü"]
    assert odd["user"] == "Zoë\ufffd" and odd["team"] == "équipe-搜索"  # NUL: PostgreSQL text cannot hold it
    assert "nul\ufffdhere" in json.loads(odd["events"])
    attempts = await rows(database_url, ledger.attempts)
    assert len(attempts) == sum(len(d.attempts) for d in ds)
    big = next(a for a in attempts if a["request_id"] == "req-fallback-ü" and a["n"] == 2)
    assert close(big["cost_usd"], Decimal("99999999.9999999999"), places=6)  # the column's largest value
    [alert] = await rows(database_url, ledger.alerts)
    assert json.loads(alert["details"]) == {"window": "1h", "ü": [1, 2.5, None]}
    assert close(alert["value_usd"], Decimal("1.23456789012"))


async def test_postgresql_keeps_decimals_exactly(database_url: str) -> None:
    """Numeric(18, 10) on PostgreSQL is exact: sums of many small costs do not drift."""
    d = decisions()[0]
    ds = [dataclasses.replace(d, request_id=f"req-{i}", cost_usd=Decimal("0.0000000001") * (i + 1)) for i in range(100)]
    await write(database_url, ds)
    engine = await ledger.open_engine(database_url)
    try:
        async with engine.connect() as conn:
            total = (await conn.execute(select(func.sum(ledger.requests.c.cost_usd)))).scalar()
    finally:
        await engine.dispose()
    want = Decimal("0.0000000001") * sum(range(1, 101))
    if database_url.startswith("postgresql"):
        assert total == want
    else:
        assert abs(Decimal(str(total)) - want) < Decimal("1e-15")


async def test_a_repeated_request_id_is_written_once(database_url: str) -> None:
    d = decisions()[0]
    first = dataclasses.replace(d, request_id="same", model="gpt-4o")
    again = dataclasses.replace(d, request_id="same", model="gpt-4o-mini")
    exporter = await write(database_url, [first, again, dataclasses.replace(d, request_id="other")])
    await write(database_url, [dataclasses.replace(d, request_id="same", model="third")])  # a later batch
    assert exporter.dropped == 0
    assert [(r["id"], r["model"]) for r in await rows(database_url, ledger.requests)] == [
        ("other", "gpt-4o"), ("same", "gpt-4o")]


async def test_a_refused_decision_is_dropped_alone(database_url: str) -> None:
    base = decisions()[2]
    ds = [dataclasses.replace(base, request_id=f"req-{i:03d}") for i in range(80)]
    ds[40] = dataclasses.replace(ds[40], requested_model=None)  # violates NOT NULL
    exporter = await write(database_url, ds)
    assert exporter.dropped == 1 + len(base.attempts)
    ids = [r["id"] for r in await rows(database_url, ledger.requests)]
    assert ids == [f"req-{i:03d}" for i in range(80) if i != 40]


async def test_migrations_are_idempotent_and_match_the_tables(database_url: str) -> None:
    engine = await ledger.open_engine(database_url)
    try:
        assert await ledger.migrate(engine) == ledger.SCHEMA_VERSION
        assert await ledger.migrate(engine) == ledger.SCHEMA_VERSION
        async with engine.connect() as conn:
            versions = (await conn.execute(select(ledger.schema_version))).mappings().all()

            def describe(sync_conn: Any) -> dict[str, list[str]]:
                insp = inspect(sync_conn)
                return {t: [c["name"] for c in insp.get_columns(t)] for t in insp.get_table_names()}

            tables = await conn.run_sync(describe)
    finally:
        await engine.dispose()
    assert [v["version"] for v in versions] == list(range(1, ledger.SCHEMA_VERSION + 1))
    assert all(v["applied_at"] is not None for v in versions)
    for table in ledger.metadata.sorted_tables:
        assert tables[table.name] == [c.name for c in table.columns], table.name


async def test_migrations_upgrade_a_version_1_database(database_url: str) -> None:
    engine = await ledger.open_engine(database_url)
    try:
        async with engine.begin() as conn:
            def v1(sync_conn: Any) -> None:
                ledger.schema_version.create(sync_conn)
                ledger._migration_1(sync_conn)
                sync_conn.execute(insert(ledger.schema_version).values(version=1, applied_at=datetime.now(UTC)))
                old = ledger._v1_tables(ledger.MetaData())[0]
                sync_conn.execute(insert(old).values(
                    id="old", ts=datetime(2026, 1, 1, tzinfo=UTC), endpoint="chat", requested_model="gpt-4o",
                    tags="[]", status=200, stream=False, attempts=1, fallback_used=False, latency_ms=1.0))
            await conn.run_sync(v1)
        assert await ledger.migrate(engine) == ledger.SCHEMA_VERSION
    finally:
        await engine.dispose()
    [row] = await rows(database_url, ledger.requests)
    assert row["id"] == "old" and row["protocol"] is None and row["cost_delta_usd"] is None
    await write(database_url, [decisions()[0]])  # the upgraded schema takes new rows
    assert len(await rows(database_url, ledger.requests)) == 2


async def test_migration_6_keeps_the_rows_of_a_version_5_database(database_url: str) -> None:
    """A ledger at schema version 5 keeps its requests and attempts; the new columns are NULL on them."""
    engine = await ledger.open_engine(database_url)
    try:
        async with engine.begin() as conn:
            def v5(sync_conn: Any) -> None:
                ledger.schema_version.create(sync_conn)
                for version, migration in enumerate(ledger.MIGRATIONS[:5], 1):
                    migration(sync_conn)
                    sync_conn.execute(insert(ledger.schema_version).values(version=version, applied_at=datetime.now(UTC)))
                old = ledger.MetaData()
                old_requests = Table("requests", old, autoload_with=sync_conn)
                old_attempts = Table("attempts", old, autoload_with=sync_conn)
                assert "cache_write_tokens" not in old_requests.c and "unreported_cost_max_usd" not in old_attempts.c
                sync_conn.execute(insert(old_requests).values(
                    id="old", ts=datetime(2026, 1, 1, tzinfo=UTC), endpoint="chat", requested_model="gpt-4o",
                    tags="[]", status=200, stream=False, attempts=1, fallback_used=False, latency_ms=1.0,
                    input_tokens=1200, cached_tokens=200, output_tokens=30, cost_usd=Decimal("0.0042"),
                    protocol="messages"))
                sync_conn.execute(insert(old_attempts).values(
                    request_id="old", n=1, provider="anthropic", provider_type="anthropic", model="claude-sonnet-4-5",
                    outcome="ok", latency_ms=1.0, input_tokens=1200, output_tokens=30, cost_usd=Decimal("0.0042")))
            await conn.run_sync(v5)
        assert await ledger.migrate(engine) == ledger.SCHEMA_VERSION == 6
    finally:
        await engine.dispose()
    [old_request] = await rows(database_url, ledger.requests)
    assert (old_request["id"], old_request["input_tokens"], old_request["cached_tokens"], old_request["protocol"]) == (
        "old", 1200, 200, "messages")
    assert close(old_request["cost_usd"], Decimal("0.0042"))
    assert old_request["cache_write_tokens"] is None and old_request["unreported_cost_max_usd"] is None
    [old_attempt] = await rows(database_url, ledger.attempts)
    assert old_attempt["model"] == "claude-sonnet-4-5" and close(old_attempt["cost_usd"], Decimal("0.0042"))
    assert old_attempt["cache_write_tokens"] is None and old_attempt["unreported_cost_max_usd"] is None
    new = decisions()[2]  # a fallback chain with cache writes and an attempt cut off before any usage
    await write(database_url, [new])
    stored = {r["id"]: r for r in await rows(database_url, ledger.requests)}
    assert stored[new.request_id]["cache_write_tokens"] == 60
    assert close(stored[new.request_id]["unreported_cost_max_usd"], new.unreported_cost_max_usd)
    cut = [a for a in await rows(database_url, ledger.attempts) if a["request_id"] == new.request_id and a["n"] == 1]
    assert close(cut[0]["unreported_cost_max_usd"], Decimal("0.000625")) and cut[0]["cost_usd"] is None


async def test_a_server_that_cannot_take_rows_now_is_not_refusing_them(database_url: str) -> None:
    """A real asyncpg error for a database that is not there (SQLSTATE 3D000; likewise 57P03
    'starting up', 53300 'too many connections') arrives as a plain DBAPIError with no invalidated
    connection. It had read as the rows being refused, so a write failing that way (after the
    schema check passed) dropped the whole batch one decision at a time; now the rows are kept."""
    from sqlalchemy.engine import make_url

    from interlock.accounting import stored_responses
    from interlock.plugins.exporters import ledger as ledger_exporter

    if not database_url.startswith("postgresql"):
        return  # SQLite errors come from sqlite3 and are classified by their class
    gone = make_url(database_url).set(database="interlock_not_there").render_as_string(hide_password=False)
    engine = await ledger.open_engine(gone)
    try:
        async with engine.connect():
            raise AssertionError("connected to a database that does not exist")
    except Exception as exc:
        error = exc
    finally:
        await engine.dispose()
    assert getattr(getattr(error, "orig", None), "sqlstate", None) == "3D000", repr(error)
    assert ledger_exporter._transient(error)
    assert stored_responses._transient(error)


def test_retryable_sqlstates() -> None:
    from interlock.accounting.database import retryable_sqlstate

    class Driver(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    class Wrapped(Exception):
        def __init__(self, orig: Exception) -> None:
            self.orig = orig

    for code in ("57P03", "53300", "08006", "40001", "3D000"):  # starting up, too many connections, ...
        assert retryable_sqlstate(Wrapped(Driver(code))), code
    for code in ("23505", "22001", "23502"):  # unique, string too long, not null: the rows themselves
        assert not retryable_sqlstate(Wrapped(Driver(code))), code
    assert not retryable_sqlstate(ValueError("x"))
