"""Run a real gateway in-process for a test: config text in, an OpenAI client out.

Plugin authors use this (and the conformance suite builds on it) to drive
their provider through interlock with the official ``openai`` SDK, exactly as
an application would.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from aiohttp import web

from interlock import hookimpl
from interlock.accounting.database import DEFAULT_DATABASE_URL
from interlock.core import config as config_mod
from interlock.core import http_server
from interlock.core.app import create_app
from interlock.core.gateway import Gateway
from interlock.core.types import Decision


class DecisionLog:
    """A plugin that keeps every finished :class:`Decision`, for assertions on routing."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    @hookimpl
    def record_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)

    @property
    def last(self) -> Decision:
        return self.decisions[-1]


@dataclass
class RunningGateway:
    """A started gateway: its object, its ``/v1`` URL, an async OpenAI client and its decisions."""

    gateway: Gateway
    base_url: str
    client: openai.AsyncOpenAI
    log: DecisionLog = field(default_factory=DecisionLog)

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")


@contextlib.asynccontextmanager
async def running_gateway(
    toml: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
    load_entrypoints: bool = False,
    workdir: str | Path | None = None,
    **gateway_kwargs: Any,
) -> AsyncIterator[RunningGateway]:
    """Start a gateway from config text on a free loopback port; stop it afterwards.

    ``toml=None`` starts it on the embedded defaults, as ``interlock serve`` without
    ``--config`` does (every provider whose key ``environ`` holds is enabled).

    The default SQLite ledger goes to ``workdir`` (a temporary directory if not given), never
    the current directory. ``environ`` replaces the process environment for ``${VAR}``
    expansion and provider key variables, so tests do not depend on the developer's shell.
    Other keyword arguments go to :class:`Gateway` (``telemetry=``, ``store=``, ``clock=``).
    """
    with contextlib.ExitStack() as stack:
        tmp = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env: Mapping[str, str] = environ if environ is not None else {}
        if toml is None:
            cfg = config_mod.load(None, environ=env)
        else:
            path = tmp / "interlock-test.toml"
            path.write_text(toml)
            cfg = config_mod.load(str(path), environ=env)
        if cfg.database_url == DEFAULT_DATABASE_URL:
            cfg.database_url = f"sqlite+aiosqlite:///{tmp / 'interlock.db'}"
        log = DecisionLog()
        gateway = Gateway(
            cfg,
            extra_plugins=[*extra_plugins, ("interlock-test-decision-log", log)],
            load_entrypoints=load_entrypoints,
            environ=env,
            **gateway_kwargs,
        )
        runner = web.AppRunner(create_app(gateway), access_log=None)
        await runner.setup()
        listener = None
        try:
            # the server `interlock serve` runs (core.http_server): the [server] connection limits apply
            listener = await http_server.listen(runner, "127.0.0.1", 0, cfg.limits)
            base_url = f"http://127.0.0.1:{listener.port}/v1"
            client = openai.AsyncOpenAI(base_url=base_url, api_key="client-key", max_retries=0)
            try:
                yield RunningGateway(gateway, base_url, client, log)
            finally:
                await client.close()
        finally:
            if listener is not None:
                listener.close()
            await runner.cleanup()


def provider_table(name: str, **values: Any) -> str:
    """A ``[providers.NAME]`` TOML table from keyword values (strings, numbers, bools, string lists)."""

    def toml_value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(toml_value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k!s} = {toml_value(x)}" for k, x in v.items()) + " }"
        escaped = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    lines = [f"[providers.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"
