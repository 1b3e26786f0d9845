"""Anomaly detection driven by an injected clock: no sleeping."""

from __future__ import annotations

from decimal import Decimal

from interlock.accounting.anomaly import WEEK, AnomalyDetector, AnomalySettings
from interlock.core.store import MemoryStore
from interlock.core.types import Alert

BUCKET = 300.0  # 5 minutes
T0 = 1_700_006_400.0  # a bucket boundary (2023-11-15 00:00 UTC)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def detector(**settings: object) -> tuple[AnomalyDetector, Clock, list[Alert]]:
    clock = Clock()
    alerts: list[Alert] = []
    opts = {"enabled": True, "bucket_minutes": 5.0, "sensitivity": 3.0, "min_spend_usd": Decimal("1.0"),
            "warmup_buckets": 6, **settings}
    return AnomalyDetector(AnomalySettings(**opts), MemoryStore(), alerts.append, clock), clock, alerts  # type: ignore[arg-type]


async def run(det: AnomalyDetector, clock: Clock, spends: list[str], key: str = "team:search") -> list[Alert]:
    """One bucket per spend; each bucket is checked when the next one starts."""
    found: list[Alert] = []
    for spend in spends:
        await det.add([key], Decimal(spend))
        clock.now += BUCKET
        found += await det.check([key])
    return found


async def test_steady_baseline_then_spike_raises_one_alert() -> None:
    det, clock, alerts = detector()
    steady = ["1.0", "1.2", "0.9", "1.1", "1.0", "0.95", "1.05", "1.0", "1.1", "0.9"]
    assert await run(det, clock, steady) == []
    found = await run(det, clock, ["25"])
    assert len(found) == 1 and alerts == found
    alert = found[0]
    assert alert.kind == "anomaly" and alert.scope == "team:search"
    assert alert.value_usd == Decimal("25.0")
    assert alert.threshold_usd is not None and Decimal("0.9") < alert.threshold_usd < Decimal("1.2")
    assert alert.details["baseline"] == "ewma" and alert.details["stddev_usd"] > 0
    assert alert.details["bucket_start"].startswith("2023-11-15T00:50")
    # the same bucket is never judged twice, and normal spend afterwards is quiet
    assert await det.check(["team:search"]) == []
    assert await run(det, clock, ["1.0"]) == []


async def test_spend_below_min_spend_is_not_flagged() -> None:
    det, clock, alerts = detector(min_spend_usd=Decimal("5"))
    await run(det, clock, ["0.01"] * 10)
    assert await run(det, clock, ["2.0"]) == []  # 200x the baseline, but under $5
    assert alerts == []


async def test_no_alert_during_warmup() -> None:
    det, clock, alerts = detector(warmup_buckets=6)
    assert await run(det, clock, ["1.0", "1.0", "1.0", "50"]) == []  # only 3 buckets of history
    assert alerts == []


async def test_idle_buckets_count_as_zero_and_are_closed_lazily() -> None:
    det, clock, _ = detector()
    await run(det, clock, ["1.0"] * 8)
    clock.now += 10 * BUCKET  # silence: ten empty buckets, folded in on the next check
    assert await det.check(["team:search"]) == []
    state = await det.store.get("anomaly:state:team:search")
    assert state["all"]["n"] == 8 + 10 and state["all"]["mean"] < 0.1


async def test_tick_checks_every_known_key_and_observe_uses_decision_keys() -> None:
    from interlock.core.types import Decision

    det, clock, alerts = detector()
    decision = Decision(
        request_id="r", ts=T0, endpoint="chat", requested_model="smart", route="smart", strategy="ordered",
        candidates=[], attempts=[], stream=False, model="gpt-4o", team="search", tags=["batch"],
        cost_usd=Decimal("1.0"),
    )
    for _ in range(8):
        await det.observe(decision)
        clock.now += BUCKET
    decision.cost_usd = Decimal("40")
    await det.observe(decision)
    clock.now += BUCKET
    found = await det.tick()  # no request arrives: the background tick closes the spike's bucket
    assert sorted(a.scope for a in found) == ["model:gpt-4o", "tag:batch", "team:search"]
    assert alerts == found


async def test_hour_of_week_baseline_after_enough_weeks() -> None:
    """A weekly Monday-09:00 peak is normal once the hour-of-week baseline knows it."""
    det, clock, alerts = detector(bucket_minutes=60.0, seasonal_weeks=2, warmup_buckets=6)
    hour = 3600.0
    clock.now = 1_699_833_600.0  # Monday 2023-11-13 00:00 UTC
    weekly_peak = 1_699_833_600.0 + 9 * hour
    first_weeks: list[Alert] = []
    for week in range(4):
        for h in range(168):
            start = 1_699_833_600.0 + week * WEEK + h * hour
            clock.now = start
            peak = start == weekly_peak + week * WEEK
            await det.add(["team:search"], Decimal("30" if peak else "1"))
            clock.now = start + hour
            found = await det.check(["team:search"])
            if week < 2:
                first_weeks += found
            else:
                assert found == [], found[0].message
    assert first_weeks, "without seasonal history the first weekly peaks are anomalies"
    state = await det.store.get("anomaly:state:team:search")
    assert state["how"]["9"]["n"] == 4


class LedgerBuckets:
    """What the ledger would answer: spend per key per bucket."""

    def __init__(self, spends: dict[str, dict[int, Decimal]]) -> None:
        self.spends = spends
        self.calls = 0

    async def buckets(self, since: object, until: object, bucket_seconds: float) -> dict[str, dict[int, Decimal]]:
        self.calls += 1
        return self.spends


async def test_a_restart_rebuilds_baselines_from_the_ledger() -> None:
    # live: ten steady buckets, as a process would have learned them
    live, clock, _ = detector()
    await run(live, clock, ["1.0"] * 10)
    # restarted: a new, empty store; the ledger holds the same ten buckets (and a bit of the current one)
    restarted, clock2, alerts = detector()
    clock2.now = clock.now
    first = live.bucket(T0)
    history = LedgerBuckets({"team:search": {first + i: Decimal("1.0") for i in range(10)}})
    history.spends["team:search"][live.bucket(clock.now)] = Decimal("0.5")
    assert await restarted.restore(history) == 1
    state = await restarted.store.get("anomaly:state:team:search")
    assert state == await live.store.get("anomaly:state:team:search")  # the same baseline as if never restarted
    assert await restarted.store.get(f"anomaly:spend:team:search:{live.bucket(clock.now)}") == 500_000
    # so a spike right after the restart is flagged, not learned as the new normal
    found = await run(restarted, clock2, ["24.5"])
    assert [a.scope for a in found] == ["team:search"] and alerts
    # a second restore (another process starting) changes nothing
    assert await restarted.restore(history) == 0


async def test_processes_starting_together_rebuild_once() -> None:
    store = MemoryStore()
    clock = Clock(T0 + 20 * BUCKET)
    settings = AnomalySettings(enabled=True)
    history = LedgerBuckets({"model:gpt-4o": {AnomalyDetector(settings, store, print).bucket(T0): Decimal("2")}})
    detectors = [AnomalyDetector(settings, store, lambda a: None, clock) for _ in range(4)]
    import asyncio

    restored = await asyncio.gather(*(d.restore(history) for d in detectors))
    assert sorted(restored) == [0, 0, 0, 1] and history.calls == 1
