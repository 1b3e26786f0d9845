"""Shared fixtures: a fake upstream, a gateway in-process or as a real ``interlock serve``.

Tests drive the gateway with the official ``openai`` SDK, against the fake
OpenAI-wire upstream from :mod:`interlock.testing`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from interlock.testing import FakeOpenAI
from interlock.testing.gateway import RunningGateway, running_gateway
from tests import servers

__all__ = ["RunningGateway"]  # re-exported: tests import it from here

SECRET = "sk-test-secret-0123456789abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]) as f:
        yield f


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database: a SQLite file, then a PostgreSQL database (tests/servers.py).

    For tests whose subject is SQL (ledger rows, spend queries, the key store, stored
    responses, migrations). The PostgreSQL run skips without a server, or fails in CI.
    """
    if request.param == "sqlite":
        yield servers.sqlite_database(tmp_path)
        return
    url = servers.postgres_database()
    yield url
    servers.drop_postgres_database(url)


def openai_config(base_url: str, extra: str = "") -> str:
    """A config with two OpenAI-type instances on the fake, and a fallback route."""
    return f"""
[providers.openai]
base_url = "{base_url}"
api_key = "{SECRET}"

[providers.backup]
type = "openai"
base_url = "{base_url}"
api_key = "{SECRET}"

[routes.smart]
chain = "openai/gpt-4o > backup/gpt-4o-mini"
{extra}
"""


GatewayFactory = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start in-process gateways (``running_gateway``; TOML text, or None for the embedded defaults).

    All are torn down after the test.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def make(toml: str | None, *, environ: dict[str, str] | None = None, **kwargs: Any) -> RunningGateway:
            # every gateway of a test shares tmp_path, so the default ledger is tmp_path/interlock.db
            return await stack.enter_async_context(running_gateway(toml, environ=environ, workdir=tmp_path, **kwargs))

        yield make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text()


def _wait_healthy(url: str, proc: subprocess.Popen[str], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"interlock serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"interlock serve did not become healthy:\n{log_path.read_text()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Run the real ``interlock serve`` console script as a subprocess."""
    procs: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> ServeProcess:
        port = free_port()
        log_path = tmp_path / f"serve-{len(procs)}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        full_env.update(env or {})
        exe = Path(sys.executable).with_name("interlock")
        log = open(log_path, "w")
        proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), *args],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=cwd or tmp_path,
        )
        log.close()
        sp = ServeProcess(proc, f"http://127.0.0.1:{port}/v1", log_path)
        procs.append(sp)
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, log_path)
        return sp

    yield start
    for sp in procs:
        if sp.proc.poll() is None:
            sp.proc.send_signal(signal.SIGINT)  # graceful: exporters flush
            try:
                sp.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sp.proc.kill()
                sp.proc.wait()
