"""Shutting the ledger down while its flush loop is busy or about to be: close() always returns, all rows written."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from interlock.core.types import Attempt, Decision, Usage
from interlock.plugins.exporters.ledger import LedgerExporter


def decision(request_id: str) -> Decision:
    return Decision(
        request_id=request_id, ts=time.time(), endpoint="chat", requested_model="gpt-4o", route=None,
        strategy="ordered", candidates=["openai/gpt-4o"], stream=False, provider="openai", model="gpt-4o",
        attempts=[Attempt(1, "openai", "openai", "gpt-4o", usage=Usage(3, 4))], usage=Usage(3, 4), latency_ms=1.5,
    )


def requests_in(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


async def test_close_just_as_a_batch_fills_up(tmp_path: Path) -> None:
    # The batch wakes the flush loop and close() cancels it in the same turn of the event loop:
    # asyncio.wait_for (3.11) would swallow that cancellation, the loop would go on to wait for
    # the lock close() holds, and close() would wait for the loop forever.
    db = tmp_path / "ledger.db"
    exporter = LedgerExporter(f"sqlite+aiosqlite:///{db}", flush_interval=3600, batch_size=2)
    await exporter.start()
    await asyncio.sleep(0.01)  # the flush loop is waiting for a full batch
    exporter.record(decision("r1"))  # two rows: a full batch
    await asyncio.wait_for(exporter.close(), timeout=10)
    assert requests_in(db) == 1


@pytest.mark.parametrize("records", [1, 3, 40, 400])
async def test_close_with_the_flush_loop_in_any_state(tmp_path: Path, records: int) -> None:
    db = tmp_path / "ledger.db"
    exporter = LedgerExporter(f"sqlite+aiosqlite:///{db}", flush_interval=0.001, batch_size=10)
    await exporter.start()
    for i in range(records):
        exporter.record(decision(f"r{i}"))
        if i % 7 == 0:
            await asyncio.sleep(0)  # let the flush loop start a write now and then
    await asyncio.wait_for(exporter.close(), timeout=10)
    assert requests_in(db) == records
