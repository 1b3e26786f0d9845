"""``interlock serve --workers N``: the refusal without a shared store, one SQLite ledger written by
several processes, and the real supervisor as a subprocess driven with the sync ``openai`` SDK.

The multi-worker subprocess tests need a shared ``[store]``: they run a ``redis-server`` of their own
(``tests.servers.RedisServer``; skipped without the binary) and need the Redis store
(``interlock.core.redis_store``) to start the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from interlock.cli import build_parser
from interlock.core import config as config_mod
from interlock.core.types import Attempt, Decision, Usage
from interlock.plugins.exporters import ledger as ledger_exporter
from interlock.plugins.exporters.ledger import LedgerExporter
from interlock.testing import FakeOpenAI, Fault
from interlock.workers import parse_workers, workers_problem
from tests.conftest import ServeProcess, free_port, openai_config
from tests.servers import RedisServer, unique_prefix

Serve = Callable[..., ServeProcess]
HELLO: list[Any] = [{"role": "user", "content": "hello from a workers test"}]
REPLY = "Fake reply to: hello from a workers test"
WAIT = 60.0  # seconds any one condition below may take before the test gives up (never asserted on)


# --------------------------------------------------------------------------- #
# the refusal, as a function
# --------------------------------------------------------------------------- #


def load(toml: str) -> config_mod.Config:
    return config_mod.parse(tomllib.loads(toml), environ={})


def test_more_than_one_worker_needs_a_shared_store() -> None:
    cfg = load("")
    assert not cfg.store.shared
    problem = workers_problem(cfg, 2)
    assert problem is not None
    assert "--workers 2 needs shared state" in problem
    assert "[store] url" in problem and "run one worker" in problem
    assert workers_problem(cfg, 1) is None  # one process: today's behaviour, no store needed


def test_a_shared_store_allows_workers() -> None:
    cfg = load('[store]\nurl = "redis://127.0.0.1:6379/0"\n')
    assert workers_problem(cfg, 4) is None


def test_demo_and_port_zero_are_refused_with_workers() -> None:
    cfg = load('[store]\nurl = "redis://127.0.0.1:6379/0"\n')
    assert "--demo" in (workers_problem(cfg, 2, demo=True) or "")
    assert workers_problem(cfg, 1, demo=True) is None
    cfg.port = 0
    assert "fixed port" in (workers_problem(cfg, 2) or "")


def test_parse_workers() -> None:
    assert parse_workers("1") == 1
    assert parse_workers("3") == 3
    assert parse_workers("auto") >= 1
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError, match="--workers"):
            parse_workers(bad)
    args = build_parser().parse_args(["serve"])
    assert args.workers == "1" and args.worker_fd is None


def test_serve_refuses_workers_without_a_store(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("interlock")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "INTERLOCK_CONFIG"}
    result = subprocess.run([str(exe), "serve", "--workers", "2", "--port", str(free_port())],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "--workers 2 needs shared state" in result.stderr
    assert '[store] url = "redis://..."' in result.stderr
    assert "listening on" not in result.stdout
    assert not (tmp_path / "interlock.db").exists()  # refused before anything was opened


# --------------------------------------------------------------------------- #
# one SQLite ledger, several writers
# --------------------------------------------------------------------------- #


def decision(request_id: str) -> Decision:
    return Decision(
        request_id=request_id, ts=time.time(), endpoint="chat", requested_model="gpt-4o", route=None,
        strategy="ordered", candidates=["openai/gpt-4o"], stream=False, provider="openai", model="gpt-4o",
        attempts=[Attempt(1, "openai", "openai", "gpt-4o", usage=Usage(3, 4))], usage=Usage(3, 4), latency_ms=1.5,
    )


def count(db: Path, table: str = "requests") -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_three_exporters_write_one_new_sqlite_file_concurrently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What N workers do to one ledger: migrate a new file at the same moment, then write small
    batches at the same time (each exporter has its own sqlite3 connection and writer thread)."""
    caplog.set_level(logging.INFO, logger="interlock")
    # as in `serve`, where SQLAlchemy is not loaded: each exporter migrates in a child process of its
    # own, so the three migrations really run at once (in one process they would take turns)
    monkeypatch.setattr(ledger_exporter, "_sqlalchemy_loaded", lambda: False)
    db = tmp_path / "shared.db"
    url = f"sqlite+aiosqlite:///{db}"
    exporters = [LedgerExporter(url, flush_interval=0.005, batch_size=8) for _ in range(3)]
    await asyncio.gather(*(e.start() for e in exporters))  # three migrations of an empty file at once
    per_exporter = 600
    for i in range(per_exporter):
        for n, exporter in enumerate(exporters):
            exporter.record(decision(f"w{n}-{i}"))
        if i % 20 == 0:
            await asyncio.sleep(0)  # let the flush loops run while rows keep coming
    await asyncio.gather(*(e.flush() for e in exporters))  # three transactions contending at once
    await asyncio.gather(*(e.close() for e in exporters))
    assert count(db) == 3 * per_exporter
    assert count(db, "attempts") == 3 * per_exporter
    assert all(e.dropped == 0 and e.buffered == 0 for e in exporters)
    text = caplog.text
    assert "database is locked" not in text
    assert "cannot prepare the database" not in text and "cannot write" not in text
    assert text.count("applied schema migration 1") == 1  # one migrated, the others found it done


# --------------------------------------------------------------------------- #
# the real supervisor
# --------------------------------------------------------------------------- #


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini"]).run_in_thread() as fake:
        yield fake


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workers_config(tmp_path: Path, upstream: FakeOpenAI, redis_server: RedisServer) -> Path:
    path = tmp_path / "interlock.toml"
    path.write_text(openai_config(upstream.base_url, f'\n[store]\nurl = "{redis_server.url}"\n'
                                                     f'prefix = "{unique_prefix()}"\n'))
    return path


def wait_for(what: str, check: Callable[[], Any], sp: ServeProcess | None = None) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}" + (f"; output:\n{sp.output()}" if sp else ""))


def serving_pids(sp: ServeProcess) -> list[int]:
    """The pids the supervisor printed once every worker listened."""
    def line() -> list[int] | None:
        if sp.proc.poll() is not None:
            raise AssertionError(f"interlock serve exited with {sp.proc.returncode}:\n{sp.output()}")
        m = re.search(r"listening on http://\S+ \(\d+ workers, pids ([\d, ]+)\)", sp.output())
        return [int(p) for p in m.group(1).split(", ")] if m else None

    pids: list[int] = wait_for("the workers to listen", line, sp)
    return pids


def health_pid(sp: ServeProcess) -> int:
    """The pid of the worker that answers /health on a new connection (urllib never reuses one)."""
    with urllib.request.urlopen(sp.base_url.removesuffix("/v1") + "/health", timeout=10) as resp:
        return int(json.load(resp)["pid"])


def pids_seen(sp: ServeProcess, wanted: set[int], tries: int = 400) -> set[int]:
    """/health on fresh connections until every pid in ``wanted`` answered (or ``tries`` ran out)."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(health_pid(sp))
        if wanted <= seen:
            break
    return seen


def fresh_client(sp: ServeProcess) -> openai.OpenAI:
    """A client that opens a new connection per request, so the kernel spreads them over the workers."""
    return openai.OpenAI(base_url=sp.base_url, api_key="client-key", max_retries=0,
                         http_client=openai.DefaultHttpxClient(limits=httpx2.Limits(max_keepalive_connections=0)))


def stop(sp: ServeProcess, signum: int = signal.SIGTERM) -> int:
    sp.proc.send_signal(signum)
    return sp.proc.wait(timeout=WAIT)


def test_two_workers_serve_and_share_one_ledger(serve: Serve, workers_config: Path, tmp_path: Path) -> None:
    sp = serve("--config", str(workers_config), "--workers", "2")
    pids = serving_pids(sp)
    assert len(set(pids)) == 2 and sp.proc.pid not in pids
    assert pids_seen(sp, set(pids)) == set(pids)  # the kernel hands connections to both

    def ask(i: int) -> str:
        with fresh_client(sp) as client:
            reply = client.chat.completions.create(model="smart", messages=HELLO)
            return reply.choices[0].message.content or ""

    requests = 120
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(requests)))
    assert answers == [REPLY] * requests
    assert stop(sp) == 0  # every worker drained and wrote its ledger
    output = sp.output()
    assert count(tmp_path / "interlock.db") == requests
    assert "database is locked" not in output
    assert "cannot write" not in output and "cannot prepare" not in output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the supervisor exited after its workers


def test_sigterm_drains_streams_in_flight_in_every_worker(
    serve: Serve, workers_config: Path, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    sp = serve("--config", str(workers_config), "--workers", "2")
    pids = serving_pids(sp)
    upstream.add_fault(Fault(ttft=1.5, times=None))  # every stream stalls after its opening chunk
    streams = 8
    started = threading.Barrier(streams + 1)
    results: list[str] = []
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            with fresh_client(sp) as client, client.chat.completions.create(
                model="smart", messages=HELLO, stream=True
            ) as chunks:
                text = []
                for n, chunk in enumerate(chunks):
                    if n == 0:
                        started.wait(WAIT)  # this stream is open at the gateway
                    text.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
                results.append("".join(text))
        except BaseException as exc:
            errors.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                started.abort()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    started.wait(WAIT)  # every stream has its first chunk; all are stalled upstream
    assert stop(sp) == 0
    for t in threads:
        t.join(WAIT)
    assert not errors
    assert results == [REPLY] * streams  # every stream finished after SIGTERM
    assert count(tmp_path / "interlock.db") == streams  # and each worker wrote its rows before exiting
    output = sp.output()
    assert "SIGTERM: stopping 2 workers" in output
    assert "database is locked" not in output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sighup_reloads_every_worker(serve: Serve, workers_config: Path) -> None:
    sp = serve("--config", str(workers_config), "--workers", "2")
    pids = serving_pids(sp)
    workers_config.write_text(workers_config.read_text() + '\n[routes.fresh]\nchain = "openai/gpt-4o-mini"\n')
    sp.proc.send_signal(signal.SIGHUP)
    wait_for("both workers to reload", lambda: sp.output().count("configuration reloaded from") == 2, sp)
    # every worker now knows the new route (fresh connections land on both; see the test above)
    for _ in range(40):
        with fresh_client(sp) as client:
            raw = client.chat.completions.with_raw_response.create(model="fresh", messages=HELLO)
        assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert set(pids) <= pids_seen(sp, set(pids))  # and both still serve
    assert sp.proc.poll() is None
    assert stop(sp) == 0


def test_a_killed_worker_is_restarted(serve: Serve, workers_config: Path) -> None:
    sp = serve("--config", str(workers_config), "--workers", "2")
    pids = serving_pids(sp)
    os.kill(pids[0], signal.SIGKILL)
    m = wait_for("the restart", lambda: re.search(rf"worker {pids[0]} restarted as (\d+)", sp.output()), sp)
    new = int(m.group(1))
    assert new not in pids
    assert f"worker {pids[0]} exited unexpectedly" in sp.output()
    assert pids_seen(sp, {new, pids[1]}) == {new, pids[1]}  # the new worker serves beside the old one
    assert stop(sp, signal.SIGINT) == 0


def test_post_reload_reaches_every_worker(serve: Serve, workers_config: Path) -> None:
    sp = serve("--config", str(workers_config), "--workers", "2")
    serving_pids(sp)
    workers_config.write_text(workers_config.read_text() + '\n[routes.fresh]\nchain = "openai/gpt-4o-mini"\n')
    request = urllib.request.Request(sp.base_url.removesuffix("/v1") + "/-/reload", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert "fresh" in json.load(resp)["routes"]  # the worker that answered reloaded at once
    # ... and asked the supervisor to reload every worker (itself again too: harmless)
    wait_for("every worker to reload", lambda: "SIGHUP: reloading the configuration in 2 workers" in sp.output()
             and sp.output().count("configuration reloaded from") >= 3, sp)
    for _ in range(40):
        with fresh_client(sp) as client:
            raw = client.chat.completions.with_raw_response.create(model="fresh", messages=HELLO)
        assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert stop(sp) == 0
