"""The ledger under load: every request of a concurrent burst gets its row, even across a shutdown."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import openai

from interlock.testing import FakeOpenAI, Fault
from tests.conftest import SECRET, ServeProcess


def write_config(path: Path, fake: FakeOpenAI, db: Path) -> None:
    path.write_text(f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[database]
url = "sqlite+aiosqlite:///{db}"
[exporters.ledger]
flush_interval = 3600   # only the size trigger and the shutdown flush may write
batch_size = 40
""")


def rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def burst(base_url: str, n: int) -> int:
    """Send n chat requests at once; return how many succeeded."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
        async def one(i: int) -> bool:
            try:
                await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"r{i}"}])
                return True
            except openai.APIError:
                return False

        return sum(await asyncio.gather(*(one(i) for i in range(n))))


def test_a_concurrent_burst_gets_one_row_per_request(serve: Callable[..., ServeProcess], tmp_path: Path) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        db, cfg = tmp_path / "ledger.db", tmp_path / "interlock.toml"
        write_config(cfg, fake, db)
        sp = serve("--config", str(cfg))
        assert asyncio.run(burst(sp.base_url, 150)) == 150
        sp.proc.send_signal(signal.SIGINT)
        assert sp.proc.wait(timeout=30) == 0
    assert rows(db, "requests") == 150
    assert rows(db, "attempts") == 150


def test_a_graceful_shutdown_mid_burst_loses_no_row(serve: Callable[..., ServeProcess], tmp_path: Path) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        db, cfg = tmp_path / "ledger.db", tmp_path / "interlock.toml"
        write_config(cfg, fake, db)
        fake.add_fault(Fault(latency=0.5, times=None))  # every answer takes a while: the stop lands mid-burst
        sp = serve("--config", str(cfg))

        async def burst_then_stop() -> int:
            sending = asyncio.ensure_future(burst(sp.base_url, 60))
            while len(fake.requests) < 60:  # all 60 are in flight upstream
                await asyncio.sleep(0.01)
            sp.proc.send_signal(signal.SIGINT)
            return await sending

        answered = asyncio.run(burst_then_stop())
        assert sp.proc.wait(timeout=60) == 0
    assert answered == 60  # a graceful stop lets requests in flight finish...
    assert rows(db, "requests") == answered  # ...and flushes every row they left in the buffer
