"""Anomalies through whole gateways: real requests from the openai SDK, the ledger's alerts table,
and baselines in a real Redis that outlive a gateway and are shared by two of them.

Time is an injected clock; the check the gateway's ticker runs a second after each bucket
closes is called directly (``gateway.anomaly.tick()``), at the simulated instant it would run.
"""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from interlock import hookimpl
from interlock.accounting.anomaly import CLOSE_GRACE
from interlock.core.types import Alert
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import RunningGateway, running_gateway
from tests.conftest import openai_config
from tests.servers import redis_url, unique_prefix

HELLO = [{"role": "user", "content": "hello there"}]
T0 = 1_700_006_400.0  # a minute boundary (2023-11-15 00:00 UTC)
PRICES = """
[prices."gpt-4o"]
input = 1000000
output = 1000000

[prices."gpt-4o-mini"]
input = 1000
output = 1000

[anomaly]            # the defaults: 1-minute buckets, $5 cold-start floor
"""


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def spend(gw: RunningGateway, model: str, n: int, tags: str | None = None) -> Decimal:
    """``n`` requests; the sum of their x-interlock-cost-usd headers."""
    total = Decimal(0)
    headers = {"x-interlock-tags": tags} if tags else {}
    for _ in range(n):
        raw = await gw.client.chat.completions.with_raw_response.create(
            model=model, messages=HELLO, extra_headers=headers  # type: ignore[arg-type]
        )
        total += Decimal(raw.headers["x-interlock-cost-usd"])
    return total


def alert_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT scope, value_usd, threshold_usd, message FROM alerts ORDER BY scope").fetchall()


async def flush(gw: RunningGateway) -> None:
    for exporter in gw.gateway.exporters:
        await exporter.flush()


async def test_a_new_deployment_flags_a_first_minutes_spike_and_not_its_ordinary_traffic(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    clock = Clock()
    async with running_gateway(openai_config(fake.base_url, PRICES), workdir=tmp_path, clock=clock) as gw:
        detector = gw.gateway.anomaly
        assert detector.settings.bucket_minutes == 1 and detector.settings.cold_start_usd == Decimal(5)
        # minute 1: ordinary traffic on a cheap model from a brand-new deployment
        clock.now = T0 + 10
        small = await spend(gw, "openai/gpt-4o-mini", 5, tags="chat")
        assert Decimal(0) < small < 1
        clock.now = T0 + 60 + CLOSE_GRACE
        assert await detector.tick() == []
        # minute 2: a new tag starts a job on the expensive model, 25 s into the minute
        onset = T0 + 60 + 25
        clock.now = onset
        spike = await spend(gw, "openai/gpt-4o", 3, tags="backfill")
        assert spike > 10
        clock.now = T0 + 120 + CLOSE_GRACE  # the first check after the minute closed
        found = await detector.tick()
        assert sorted(a.scope for a in found) == ["global", "model:gpt-4o", "tag:backfill"]
        assert clock.now - onset == 36.0  # onset to alert, in simulated seconds
        await flush(gw)
    rows = alert_rows(tmp_path / "interlock.db")
    assert [r[0] for r in rows] == ["global", "model:gpt-4o", "tag:backfill"]
    by_scope = {scope: (Decimal(str(value)), Decimal(str(threshold)), message) for scope, value, threshold, message in rows}
    assert by_scope["tag:backfill"][:2] == (spike, Decimal(5))
    assert by_scope["global"][0] == spike  # the cheap model spent nothing in minute 2
    assert by_scope["model:gpt-4o"][2].startswith(
        f"model:gpt-4o spent ${spike:,.2f} in the 1-minute bucket 2023-11-15 00:01-00:02 UTC, at or over its "
        "cold-start threshold of $5.00: it has 0 of the 10 buckets of history"
    )


class AlertEvents:
    """An ``alert`` hook that wakes the test on each anomaly."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.arrived = asyncio.Event()

    @hookimpl
    def alert(self, alert: Alert) -> None:
        if alert.kind == "anomaly":
            self.alerts.append(alert)
            self.arrived.set()


async def test_the_gateways_own_ticker_judges_each_bucket_after_it_closes(fake: FakeOpenAI, tmp_path: Path) -> None:
    """Real time, no check called by the test: the gateway's background task finds the spike (2-second buckets)."""
    events = AlertEvents()
    # $10 a token: one request is over the $5 cold-start floor, whichever bucket it lands in
    prices = PRICES.replace("input = 1000000\noutput = 1000000", "input = 10000000\noutput = 10000000")
    toml = openai_config(fake.base_url, prices + "bucket_minutes = 0.03333333333333333\n")
    async with running_gateway(toml, workdir=tmp_path, extra_plugins=[("events", events)]) as gw:
        assert gw.gateway.anomaly.settings.bucket_seconds == 2.0
        spike = await spend(gw, "openai/gpt-4o", 1, tags="burst")
        assert spike > 5
        await asyncio.wait_for(events.arrived.wait(), timeout=30)  # a wait for an event, not a measured delay
    burst = [a for a in events.alerts if a.scope == "tag:burst"]
    assert len(burst) == 1 and burst[0].value_usd == spike and burst[0].details["baseline"] == "cold_start"


def redis_config(base_url: str, prefix: str) -> str:
    return openai_config(base_url, PRICES + f'\n[store]\nurl = "{redis_url()}"\nprefix = "{prefix}"\n')


async def steady(gw: RunningGateway, clock: Clock, minutes: int) -> None:
    """Ordinary spend of about $1 a minute (+-10%) for the deployment and gpt-4o, checked every minute."""
    detector = gw.gateway.anomaly
    for minute in range(minutes):
        await detector.add(["global", "model:gpt-4o"], Decimal("0.9") + Decimal(minute % 3) / 10)
        clock.now += 60
        found = await detector.tick()
        assert minute == 0 or found == []  # (the first minute is a new deployment's: $0.90, under the floor)


async def test_baselines_live_in_redis_survive_a_restart_and_two_gateways_report_a_spike_once(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    import redis.asyncio as aioredis

    prefix = unique_prefix()
    toml = redis_config(fake.base_url, prefix)
    clock = Clock()
    for name in ("first", "a", "b"):
        (tmp_path / name).mkdir()
    try:
        async with running_gateway(toml, workdir=tmp_path / "first", clock=clock) as first:
            await steady(first, clock, 20)
            before = await first.gateway.store.get("anomaly:state:model:gpt-4o")
            assert before["all"]["n"] == 20
        # the gateway is gone; its baselines are in Redis, not in its (discarded) memory
        raw = aioredis.Redis.from_url(redis_url())
        try:
            assert await raw.exists(f"{prefix}anomaly:state:model:gpt-4o") == 1
        finally:
            await raw.aclose()

        # restarted as two gateways on the same Redis, each with a new, empty ledger of its own: nothing to rebuild
        # from, so what they know comes from Redis
        async with running_gateway(toml, workdir=tmp_path / "a", clock=clock) as a, \
                running_gateway(toml, workdir=tmp_path / "b", clock=clock) as b:
            for gw in (a, b):
                assert await gw.gateway.store.get("anomaly:state:model:gpt-4o") == before
                assert await gw.gateway.anomaly.restore(gw.gateway.spend_history) == 0  # the store remembers
            # a spike through both gateways in one minute; both check when it closes
            clock.now += 20
            spike = await spend(a, "openai/gpt-4o", 2) + await spend(b, "openai/gpt-4o", 2)
            clock.now = T0 + 21 * 60 + CLOSE_GRACE
            found = await asyncio.gather(a.gateway.anomaly.tick(), b.gateway.anomaly.tick(),
                                         a.gateway.anomaly.check(["global", "model:gpt-4o"]),
                                         b.gateway.anomaly.check(["global", "model:gpt-4o"]))
            alerts = [alert for batch in found for alert in batch]
            assert sorted(x.scope for x in alerts) == ["global", "model:gpt-4o"]  # once, not once per gateway
            model = next(x for x in alerts if x.scope == "model:gpt-4o")
            # judged against the baseline learned before the restart, not as a newcomer
            assert model.details["baseline"] == "ewma" and model.details["samples"] == 20
            assert Decimal("0.9") < Decimal(str(model.details["baseline_usd"])) < Decimal("1.1")
            assert model.value_usd == spike
            after = await b.gateway.store.get("anomaly:state:model:gpt-4o")
            assert after["all"]["n"] == 21 and after["bucket"] == before["bucket"] + 1
            await flush(a)
            await flush(b)
        rows = alert_rows(tmp_path / "a" / "interlock.db") + alert_rows(tmp_path / "b" / "interlock.db")
        assert sorted(r[0] for r in rows) == ["global", "model:gpt-4o"]
    finally:
        raw = aioredis.Redis.from_url(redis_url())
        names = [name async for name in raw.scan_iter(match=f"{prefix}*")]
        if names:
            await raw.delete(*names)
        await raw.aclose()
