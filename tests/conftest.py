"""Shared fixtures: a fake upstream, a gateway in-process or as a real ``interlock serve``.

Tests drive the gateway with the official ``openai`` SDK, against the fake
OpenAI-wire upstream from :mod:`interlock.testing`.
"""

from __future__ import annotations

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

import openai
import pytest
from aiohttp import web

from interlock.core import config as config_mod
from interlock.core.app import create_app
from interlock.core.gateway import Gateway
from interlock.testing import FakeOpenAI

SECRET = "sk-test-secret-0123456789abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]) as f:
        yield f


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


@dataclass
class RunningGateway:
    gateway: Gateway
    base_url: str  # ends in /v1
    client: openai.AsyncOpenAI

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")


GatewayFactory = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start an in-process gateway from TOML text; everything is torn down after the test."""
    runners: list[web.AppRunner] = []
    clients: list[openai.AsyncOpenAI] = []

    async def make(toml: str, *, environ: dict[str, str] | None = None, **kwargs: object) -> RunningGateway:
        path = tmp_path / f"interlock-{len(runners)}.toml"
        path.write_text(toml)
        env = environ if environ is not None else {}
        cfg = config_mod.load(str(path), environ=env)
        if cfg.database_url == config_mod.DEFAULT_DATABASE_URL:
            # the ledger's default file is relative to the working directory: keep it in tmp_path
            cfg.database_url = f"sqlite+aiosqlite:///{tmp_path / 'interlock.db'}"
        kwargs.setdefault("load_entrypoints", False)
        gateway = Gateway(cfg, environ=env, **kwargs)  # type: ignore[arg-type]
        runner = web.AppRunner(create_app(gateway))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}/v1"
        client = openai.AsyncOpenAI(base_url=base_url, api_key="client-key", max_retries=0)
        clients.append(client)
        return RunningGateway(gateway, base_url, client)

    yield make
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


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
