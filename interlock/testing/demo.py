"""``interlock serve --demo``: the real gateway in front of simulated providers.

Two local fake OpenAI-wire servers from :mod:`interlock.testing` stand in for
providers: ``openai`` fails a quarter of its chat requests with 503, ``backup``
is healthy. The ``smart`` route falls back from one to the other, so a
newcomer without provider keys sees routing, fallback, ledger rows and traces
within a minute: each request's trace is printed as a span tree in the terminal
(the ``tree`` exporter), unless ``OTEL_TRACES_EXPORTER`` chooses the exporters.
Nothing here calls a real model, and the banner says so.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from interlock.core import config as config_mod
from interlock.core.config import Config
from interlock.testing import FakeOpenAI

BANNER = "DEMO MODE: providers are simulated locally by interlock.testing; no real model is called"
#: printed after the banner: where the traces go, and how to send them to a trace UI instead
TRACES_HINT = (
    "each request's trace is printed below as a span tree; to send traces to Phoenix or Jaeger instead, "
    "start with OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"
)
MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(
    base: Config | None = None, environ: Mapping[str, str] = os.environ
) -> tuple[Config, list[tuple[FakeOpenAI, int]]]:
    """A config pointing at two fakes (not yet started) on reserved loopback ports; traces print as
    span trees unless ``environ`` names the trace exporters (``OTEL_TRACES_EXPORTER``)."""
    flaky, healthy = FakeOpenAI(MODELS, failure_rate=0.25, seed=7, record_limit=100), FakeOpenAI(MODELS, record_limit=100)
    fakes = [(flaky, _free_port()), (healthy, _free_port())]
    data: dict[str, Any] = {
        "providers": {
            "openai": {"type": "openai", "base_url": f"http://127.0.0.1:{fakes[0][1]}/v1", "api_key": "demo-key-flaky",
                       "models": ["gpt-4o", "text-embedding-3-small"]},
            "backup": {"type": "openai", "base_url": f"http://127.0.0.1:{fakes[1][1]}/v1", "api_key": "demo-key-backup",
                       "models": ["gpt-4o-mini"]},
        },
        "routes": {
            "smart": {"chain": "openai/gpt-4o > backup/gpt-4o-mini"},
            "balanced": {"strategy": "round-robin", "targets": ["openai/gpt-4o", "backup/gpt-4o-mini"]},
        },
        "logging": {"decisions": True},
    }
    if not environ.get("OTEL_TRACES_EXPORTER"):
        data["telemetry"] = {"tree": True}
    cfg = config_mod.parse(data, source="demo")
    if base is not None:  # keep the user's server and database settings
        cfg.host, cfg.port, cfg.database_url = base.host, base.port, base.database_url
    return cfg, fakes


def fakes_context(fakes: list[tuple[FakeOpenAI, int]]) -> Any:
    """An aiohttp cleanup context that runs the fakes for the app's lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        for fake, port in fakes:
            await fake.start("127.0.0.1", port)
        yield
        for fake, _ in fakes:
            await fake.stop()

    return ctx
