"""A row is never dropped for its content: what cannot be stored is replaced and named in invalid_fields."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from interlock.accounting import ledger
from interlock.core.types import Attempt, Decision, Usage
from interlock.plugins.exporters.ledger import LedgerExporter
from tests import servers

# what aiohttp makes of the header bytes b"team-\xff": undecodable bytes become lone surrogates
NOT_UTF8 = b"team-\xff".decode("utf-8", "surrogateescape")


def decision(request_id: str, **changes: Any) -> Decision:
    d = Decision(
        request_id=request_id, ts=time.time(), endpoint="chat", requested_model="gpt-4o", route=None,
        strategy="ordered", candidates=["openai/gpt-4o"], stream=False, provider="openai", model="gpt-4o",
        attempts=[Attempt(1, "openai", "openai", "gpt-4o", usage=Usage(1000, 20), cost_usd=Decimal("0.0045"))],
        usage=Usage(1000, 20), latency_ms=1.5, cost_usd=Decimal("0.0045"), team="search",
    )
    for key, value in changes.items():
        setattr(d, key, value)
    return d


async def stored(url: str, exporter: LedgerExporter, *decisions: Decision) -> list[dict[str, Any]]:
    await exporter.start()
    try:
        for d in decisions:
            exporter.record(d)
        await exporter.flush()
    finally:
        await exporter.close()
    engine = await ledger.open_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT * FROM requests ORDER BY id"))
            return [dict(r._mapping) for r in result]
    finally:
        await engine.dispose()


async def test_text_that_is_not_utf8_is_replaced_and_named(database_url: str, tmp_path: Path) -> None:
    exporter = LedgerExporter(database_url, flush_interval=3600, journal=str(tmp_path / "journal"))
    bad = decision("req-bad", tags=["fine", NOT_UTF8], user=NOT_UTF8)
    bad.attempts[0].error = "upstream said " + NOT_UTF8
    rows = await stored(database_url, exporter, decision("req-good"), bad)
    assert [r["id"] for r in rows] == ["req-bad", "req-good"]
    row = rows[0]
    assert row["invalid_fields"] == "attempts.error,user,tags"  # in the order of the decision's fields
    assert row["tags"] == '["fine","team-\ufffd"]' and row["user"] == "team-\ufffd"
    assert Decimal(str(row["cost_usd"])) == Decimal("0.0045") and row["input_tokens"] == 1000  # the bill is whole
    assert rows[1]["invalid_fields"] is None
    assert exporter.salvaged == 1 and exporter.dropped == 0


async def test_a_row_that_cannot_be_built_keeps_what_accounting_needs(tmp_path: Path) -> None:
    url = servers.sqlite_database(tmp_path)
    exporter = LedgerExporter(url, flush_interval=3600, journal=str(tmp_path / "journal"))
    broken = decision("req-broken", rule=object(), team=NOT_UTF8)  # a plugin put a non-text value in
    [row] = await stored(url, exporter, broken)
    assert row["invalid_fields"] == "*"
    assert (row["status"], row["model"], row["input_tokens"], row["output_tokens"]) == (200, "gpt-4o", 1000, 20)
    assert Decimal(str(row["cost_usd"])) == Decimal("0.0045") and row["team"] == "team-\ufffd"
    assert exporter.dropped == 0


async def test_a_value_the_database_refuses_is_replaced(tmp_path: Path) -> None:
    """PostgreSQL refuses a cost beyond Numeric(18, 10); the row is stored without it, flagged."""
    url = servers.postgres_database()
    try:
        exporter = LedgerExporter(url, flush_interval=3600, journal=str(tmp_path / "journal"))
        huge = decision("req-huge", cost_usd=Decimal("123456789.5"))
        rows = await stored(url, exporter, huge, decision("req-plain"))
        assert [r["id"] for r in rows] == ["req-huge", "req-plain"]
        assert rows[0]["invalid_fields"] == "cost_usd" and rows[0]["cost_usd"] is None
        assert rows[0]["input_tokens"] == 1000
        assert exporter.salvaged == 1 and exporter.dropped == 0
    finally:
        servers.drop_postgres_database(url)


@pytest.mark.parametrize("value", [b"\xff\xfe", b"ok\x00nul", b"\xed\xa0\x80"])
async def test_salvaged_rows_are_journaled(tmp_path: Path, value: bytes) -> None:
    url = servers.sqlite_database(tmp_path)
    exporter = LedgerExporter(url, flush_interval=3600, journal=str(tmp_path / "journal"))
    await exporter.start()
    try:
        exporter.record(decision("req-x", tags=[value.decode("utf-8", "surrogateescape")]))
        assert exporter._journal is not None and exporter._journal.pending == 1
    finally:
        await exporter.close()
