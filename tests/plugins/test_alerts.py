"""Alert delivery: an injected spend spike becomes an anomaly alert, POSTed by the webhook plugin
(with a retry) to a local receiver, logged, and stored in the ``alerts`` table."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from interlock.core.types import Alert
from interlock.plugins.exporters import alert_otel
from interlock.plugins.exporters.webhook import WebhookExporter, parse_options
from interlock.testing import FakeOpenAI
from tests.conftest import GatewayFactory, openai_config

HELLO = [{"role": "user", "content": "hello there"}]
T0 = 1_700_006_400.0  # a 5-minute bucket boundary


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Receiver:
    """A webhook receiver on 127.0.0.1 that fails the first ``fail`` POSTs with 500."""

    def __init__(self, fail: int = 1) -> None:
        self.fail = fail
        self.posts: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.received = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = 500 if len(self.posts) < self.fail else 200
        self.posts.append((status, body, dict(request.headers)))
        if status == 200:
            self.received.set()
        return web.json_response({"ok": status == 200}, status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rcv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rcv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield rcv, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    await runner.cleanup()


async def test_spend_spike_alert_reaches_webhook_log_and_ledger(
    fake: FakeOpenAI, make_gateway: GatewayFactory, receiver: tuple[Receiver, str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rcv, url = receiver
    clock = Clock()
    extra = f"""
[prices."gpt-4o"]
input = 1000000
output = 1000000

[anomaly]
bucket_minutes = 5
sensitivity = 3.0
min_spend_usd = 1.0
warmup_buckets = 4

[exporters.webhook]
url = "{url}"
headers = {{ Authorization = "Bearer hook-token" }}
retries = 2
backoff = 0.01
timeout = 5
"""
    gw = await make_gateway(openai_config(fake.base_url, extra), clock=clock)
    detector = gw.gateway.anomaly
    caplog.set_level(logging.WARNING, logger="interlock.alerts")

    # a steady baseline of about $1 per bucket for the model (and so the deployment), injected bucket by bucket
    for spend in ("1.0", "1.1", "0.9", "1.0", "1.05", "0.95"):
        await detector.add(["global", "model:gpt-4o"], Decimal(spend))
        clock.now += 300
        assert await detector.tick() == []

    # the spike: real requests at $1 per token
    spike = Decimal(0)
    for _ in range(3):
        raw = await gw.client.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=HELLO)
        spike += Decimal(raw.headers["x-interlock-cost-usd"])
    assert spike > 10

    # the check after the bucket closes (the gateway's ticker; driven here): the spike is an anomaly of the
    # model and of the deployment; the team-less, untagged requests count for nothing else
    clock.now += 300 + 1
    found = await detector.tick()
    assert sorted(a.scope for a in found) == ["global", "model:gpt-4o"]

    async def delivered(n: int) -> None:
        while len(rcv.posts) < n:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(delivered(3), timeout=10)  # the first alert, its retry, then the second alert

    # the webhook: first POST refused with 500, the retry delivered the same alert
    assert [status for status, _, _ in rcv.posts] == [500, 200, 200]
    first, second = rcv.posts[0][1], rcv.posts[1][1]
    assert first == second
    model = next(body for _, body, _ in rcv.posts[1:] if body["scope"] == "model:gpt-4o")
    assert model["kind"] == "anomaly" and Decimal(model["value_usd"]) == spike
    details = model["details"]
    assert details["baseline"] == "ewma" and details["bucket_minutes"] == 5
    assert Decimal("0.9") < Decimal(str(details["baseline_usd"])) < Decimal("1.1")
    assert Decimal(model["threshold_usd"]) == Decimal(str(details["limit_usd"])) > Decimal(str(details["baseline_usd"]))
    assert rcv.posts[1][2]["Authorization"] == "Bearer hook-token"

    # the log line
    lines = [r.getMessage() for r in caplog.records if r.name == "interlock.alerts"]
    assert len(lines) == 2 and all(line.startswith("alert ") for line in lines)
    assert sorted(json.loads(line[6:])["scope"] for line in lines) == ["global", "model:gpt-4o"]

    # the alerts table (what `interlock costs --anomalies` lists)
    for exporter in gw.gateway.exporters:
        await exporter.flush()
    with sqlite3.connect(tmp_path / "interlock.db") as db:
        rows = db.execute("SELECT kind, scope, value_usd, threshold_usd, details FROM alerts ORDER BY scope").fetchall()
    assert [(kind, scope) for kind, scope, *_ in rows] == [("anomaly", "global"), ("anomaly", "model:gpt-4o")]
    _, _, value, threshold, stored = rows[1]
    assert Decimal(str(value)) == spike and json.loads(stored)["stddev_usd"] >= 0


async def test_webhook_gives_up_after_its_retries_and_flushes_on_close(receiver: tuple[Receiver, str]) -> None:
    rcv, url = receiver
    rcv.fail = 10
    hook = WebhookExporter(url, retries=1, backoff=0.0)
    hook.alert(Alert(kind="budget_soft", scope="team:a", message="m", value_usd=Decimal("8"), threshold_usd=Decimal("10")))
    await hook.start()
    await hook.close()  # drains the queue: two tries, both refused
    assert [s for s, _, _ in rcv.posts] == [500, 500]
    assert hook.failed == 1 and hook.delivered == 0
    assert rcv.posts[0][1]["value_usd"] == "8" and rcv.posts[0][1]["threshold_usd"] == "10"


def test_webhook_options_are_validated() -> None:
    assert parse_options({"url": "http://x/h"})["retries"] == 3
    for bad in ({}, {"url": "ftp://x"}, {"url": "http://x", "retries": -1}, {"url": "http://x", "nope": 1},
                {"url": "http://x", "headers": {"a": 1}}, {"url": "http://x", "timeout": 0}):
        with pytest.raises(ValueError):
            parse_options(bad)


def test_otel_event_on_the_recording_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    alert = Alert(kind="anomaly", scope="tag:batch", message="spike", value_usd=Decimal("12.5"),
                  threshold_usd=Decimal("1"), details={"bucket_minutes": 5.0, "nested": {"x": 1}})
    with tracer.start_as_current_span("request") as span:
        alert_otel.alert(alert)
    (event,) = span.events  # type: ignore[attr-defined]
    assert event.name == "interlock.alert"
    assert event.attributes["interlock.alert.scope"] == "tag:batch"
    assert event.attributes["interlock.alert.value_usd"] == 12.5
    assert event.attributes["interlock.alert.bucket_minutes"] == 5.0
    assert "interlock.alert.nested" not in event.attributes
    alert_otel.alert(alert)  # no recording span: a log record through the (no-op) logs API, no error
