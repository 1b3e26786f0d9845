"""A gateway killed under load loses no answered request from its ledger (SQLite and PostgreSQL).

A real ``interlock serve`` process takes 200 concurrent clients (half streaming) from
the openai-shaped fake upstream; each request carries its own ``x-request-id``, and a
request counts as *answered* only when its client received the whole answer (the JSON
body, or a stream through ``data: [DONE]``). Then the process is killed:

* SIGKILL: no shutdown at all. A second ``serve`` on the same configuration starts,
  replays the ledger's journal and stops; every answered request must be in the ledger.
* SIGTERM: a graceful stop; every answered request must be in the ledger at once, and
  the journal must be empty.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from sqlalchemy import text

from interlock.accounting import ledger
from interlock.testing import FakeOpenAI
from tests.conftest import ServeProcess

CLIENTS = 200
#: answered requests to wait for before the kill (a bound on the wait, not a speed requirement)
ANSWERED_BEFORE_KILL = 400


def config(tmp_path: Path, fake: FakeOpenAI, database_url: str) -> Path:
    path = tmp_path / "interlock.toml"
    path.write_text(f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "sk-kill-test-provider-key"

[database]
url = "{database_url}"
""")
    return path


async def load(base_url: str, answered: set[str], stop: asyncio.Event, n: int) -> None:
    """One client: requests back to back until ``stop``; answered ids go into ``answered``."""
    stream = n % 2 == 1
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"client {n}"}], "stream": stream}
    i = 0
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            request_id = f"req-kill-{n:03d}-{i:06d}"
            i += 1
            try:
                async with session.post(f"{base_url}/chat/completions", json=body,
                                        headers={"x-request-id": request_id}) as resp:
                    data = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)  # the gateway is gone: wait for the stop
                continue
            whole = data.rstrip().endswith(b"data: [DONE]") if stream else b'"choices"' in data
            if resp.status == 200 and whole:
                answered.add(request_id)


async def kill_under_load(sp: ServeProcess, sig: signal.Signals) -> set[str]:
    answered: set[str] = set()
    stop = asyncio.Event()
    clients = [asyncio.create_task(load(sp.base_url, answered, stop, n)) for n in range(CLIENTS)]
    deadline = time.monotonic() + 120
    while len(answered) < ANSWERED_BEFORE_KILL and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    sp.proc.send_signal(sig)  # with all 200 clients still sending
    await asyncio.to_thread(sp.proc.wait, 60)
    stop.set()
    await asyncio.gather(*clients)
    assert len(answered) >= ANSWERED_BEFORE_KILL, sp.output()[-3000:]
    return answered


async def recorded_ids(database_url: str) -> set[str]:
    engine = await ledger.open_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id FROM requests WHERE id LIKE 'req-kill-%'"))
            return {r[0] for r in rows}
    finally:
        await engine.dispose()


def journal_segments(tmp_path: Path) -> list[str]:
    return [f"{d}/{n}" for d in tmp_path.glob("*.journal") for n in os.listdir(d) if n.endswith(".jsonl")]


async def test_sigkill_under_load_loses_no_answered_request(
    fake: FakeOpenAI, serve: Callable[..., ServeProcess], database_url: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, fake, database_url)
    answered = await kill_under_load(serve("--config", str(cfg)), signal.SIGKILL)
    before = await recorded_ids(database_url)
    assert journal_segments(tmp_path)  # what the killed process had not written yet

    after = serve("--config", str(cfg))  # replays the journal
    after.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(after.proc.wait, 60)
    recorded = await recorded_ids(database_url)
    print(f"\nSIGKILL ({database_url.split(':')[0]}): {len(answered)} answered, {len(before)} in the ledger "
          f"at the kill, {len(recorded)} after the restart, {len(answered - recorded)} answered and lost")
    assert answered - recorded == set()
    assert "written now" in after.output()  # the replay said what it did
    assert journal_segments(tmp_path) == []


async def test_sigterm_under_load_loses_no_answered_request(
    fake: FakeOpenAI, serve: Callable[..., ServeProcess], database_url: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, fake, database_url)
    answered = await kill_under_load(serve("--config", str(cfg)), signal.SIGTERM)
    recorded = await recorded_ids(database_url)
    print(f"\nSIGTERM ({database_url.split(':')[0]}): {len(answered)} answered, {len(recorded)} in the ledger, "
          f"{len(answered - recorded)} answered and lost")
    assert answered - recorded == set()
    assert journal_segments(tmp_path) == []  # a graceful stop wrote everything and left no segment
