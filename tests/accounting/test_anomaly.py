"""Anomaly detection driven by an injected clock: no sleeping, no timed assertions.

Time is simulated: requests add spend at simulated instants and the detector's checks run
when the gateway would run them (:meth:`AnomalyDetector.next_check` after each one), so the
detection delay is measured in simulated seconds from the spike's onset to its alert.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from interlock.accounting.anomaly import CLOSE_GRACE, WEEK, AnomalyDetector, AnomalySettings
from interlock.core.store import MemoryStore
from interlock.core.types import Alert, Decision

BUCKET = 300.0  # 5 minutes: the bucket of the tests written against explicit settings
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
            "warmup_buckets": 6, "alpha": 0.3, **settings}
    return AnomalyDetector(AnomalySettings(**opts), MemoryStore(), alerts.append, clock), clock, alerts  # type: ignore[arg-type]


def defaults() -> tuple[AnomalyDetector, Clock, list[Alert]]:
    """A detector with the shipped defaults (only switched on), as ``[anomaly]`` with no keys gives."""
    clock = Clock()
    alerts: list[Alert] = []
    problems: list[tuple[str, str]] = []
    settings = AnomalySettings.parse({}, problems)
    assert problems == [] and settings.enabled
    return AnomalyDetector(settings, MemoryStore(), alerts.append, clock), clock, alerts


async def run(det: AnomalyDetector, clock: Clock, spends: list[str], key: str = "team:search") -> list[Alert]:
    """One bucket per spend; each bucket is checked when the next one starts."""
    found: list[Alert] = []
    for spend in spends:
        await det.add([key], Decimal(spend))
        clock.now += det.settings.bucket_seconds
        found += await det.check([key])
    return found


async def test_steady_baseline_then_spike_raises_one_alert_that_states_spend_baseline_and_threshold() -> None:
    det, clock, alerts = detector()
    steady = ["1.0", "1.2", "0.9", "1.1", "1.0", "0.95", "1.05", "1.0", "1.1", "0.9"]
    assert await run(det, clock, steady) == []
    found = await run(det, clock, ["25"])
    assert len(found) == 1 and alerts == found
    alert = found[0]
    assert alert.kind == "anomaly" and alert.scope == "team:search"
    assert alert.value_usd == Decimal("25")
    d = alert.details
    assert d["baseline"] == "ewma" and d["samples"] == 10 and d["sensitivity"] == 3.0
    assert Decimal("0.9") < Decimal(str(d["baseline_usd"])) < Decimal("1.1") and d["stddev_usd"] > 0
    # threshold_usd is the threshold the spend went over: baseline + sensitivity x stddev
    assert alert.threshold_usd is not None
    assert float(alert.threshold_usd) == pytest.approx(d["baseline_usd"] + 3 * d["stddev_usd"], abs=2e-6)
    assert float(alert.threshold_usd) == pytest.approx(d["limit_usd"])
    assert (d["bucket_start"], d["bucket_end"]) == ("2023-11-15T00:50:00+00:00", "2023-11-15T00:55:00+00:00")
    assert alert.message == (  # dollars under $1 with four decimals, so a small baseline never reads $0.00
        f"team:search spent $25.00 in the 5-minute bucket 2023-11-15 00:50-00:55 UTC, over its threshold of "
        f"${alert.threshold_usd:.2f}: its baseline ${d['baseline_usd']:.4f} per 5-minute bucket + 3 x stddev "
        f"${d['stddev_usd']:.4f} (EWMA of 10 buckets)"
    )
    # the same bucket is never judged twice, and normal spend afterwards is quiet
    assert await det.check(["team:search"]) == []
    assert await run(det, clock, ["1.0"]) == []


async def test_spend_below_min_spend_is_not_flagged() -> None:
    det, clock, alerts = detector(min_spend_usd=Decimal("5"))
    await run(det, clock, ["0.01"] * 10)
    assert await run(det, clock, ["2.0"]) == []  # 200x the baseline, but under $5
    assert alerts == []


async def test_while_warming_up_a_scope_is_judged_against_the_cold_start_floor() -> None:
    det, clock, alerts = detector(warmup_buckets=6, cold_start_usd=Decimal("5"))
    # three buckets of history: 4x its spend so far, but under the $5 floor
    assert await run(det, clock, ["1.0", "1.0", "1.0", "4.0"]) == []
    assert await run(det, clock, ["7.5"]) == []  # over the floor, but not twice its busiest bucket ($4) so far
    found = await run(det, clock, ["16"])  # both: flagged although it has no baseline yet
    assert [a.scope for a in found] == ["team:search"]
    alert = found[0]
    assert alert.details["baseline"] == "cold_start" and alert.details["samples"] == 5
    assert alert.value_usd == Decimal("16") and alert.threshold_usd == Decimal("5.0")
    assert alert.message == (
        "team:search spent $16.00 in the 5-minute bucket 2023-11-15 00:25-00:30 UTC, at or over its cold-start "
        "threshold of $5.00: it has 5 of the 6 buckets of history a baseline of its own needs, so it is judged "
        "against the cold-start floor of $5.00 (anomaly.cold_start_usd); and more than 2 x its busiest bucket so "
        "far ($7.50)"
    )


async def test_idle_buckets_count_as_zero_and_are_closed_lazily() -> None:
    det, clock, _ = detector()
    await run(det, clock, ["1.0"] * 8)
    clock.now += 10 * BUCKET  # silence: ten empty buckets, folded in on the next check
    assert await det.check(["team:search"]) == []
    state = await det.store.get("anomaly:state:team:search")
    assert state["all"]["n"] == 8 + 10 and state["all"]["mean"] < 0.1


def decision(cost: str, team: str = "search", model: str = "gpt-4o", tags: tuple[str, ...] = ("batch",),
             key: str | None = None) -> Decision:
    return Decision(
        request_id="r", ts=T0, endpoint="chat", requested_model="smart", route="smart", strategy="ordered",
        candidates=[], attempts=[], stream=False, model=model, team=team, tags=list(tags), api_key_id=key,
        cost_usd=Decimal(cost),
    )


async def test_tick_judges_every_scope_once_per_bucket_and_observe_counts_the_decision_scopes() -> None:
    det, clock, alerts = detector()
    steady = decision("1.0", key="key_ab12")
    for _ in range(8):
        await det.observe(steady)
        clock.now += BUCKET
        assert await det.tick() == []
    await det.observe(decision("40", key="key_ab12"))
    clock.now += BUCKET
    found = await det.tick()  # no request arrives: the check after the bucket closes flags it
    assert sorted(a.scope for a in found) == ["global", "key:key_ab12", "model:gpt-4o", "tag:batch", "team:search"]
    assert alerts == found
    # the bucket is claimed: a second check (this process again, or another one) finds nothing to do
    assert await det.tick() == []
    assert await det.store.get("anomaly:ticks") == 9


async def test_observe_is_one_store_round_trip_once_the_scopes_are_known() -> None:
    class Counting(MemoryStore):
        calls = 0

        async def add(self, *args: object, **kwargs: object) -> list[int]:
            self.calls += 1
            return await super().add(*args, **kwargs)  # type: ignore[arg-type]

        async def setdefault(self, *args: object, **kwargs: object) -> object:
            self.calls += 1
            return await super().setdefault(*args, **kwargs)  # type: ignore[arg-type]

        async def get(self, key: str) -> object:
            self.calls += 1
            return await super().get(key)

    store = Counting()
    det = AnomalyDetector(AnomalySettings(enabled=True), store, lambda a: None, Clock())
    await det.observe(decision("1"))
    first = store.calls  # one add, and a state created for each of the 4 new scopes
    store.calls = 0
    await det.observe(decision("1"))
    assert (first, store.calls) == (5, 1)
    assert await store.get("anomaly:spend:model:gpt-4o:" + str(det.bucket(T0))) == 2_000_000


async def test_hour_of_week_baseline_after_enough_weeks() -> None:
    """A weekly Monday-09:00 peak is normal once the hour-of-week baseline knows it."""
    det, clock, alerts = detector(bucket_minutes=60.0, seasonal_weeks=2, warmup_buckets=6, cold_start_usd=Decimal(100))
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


# -- cold start: new scopes and new deployments ----------------------------------------- #


async def warm_deployment(det: AnomalyDetector, clock: Clock, minutes: int, per_minute: str = "0.30") -> None:
    """``minutes`` of ordinary traffic from team:old (within +-20% each minute), checked as the gateway would.

    A deployment's first minute over the cold-start floor is reported (it is new: nothing
    else to judge it against); none after it.
    """
    rng = random.Random(minutes)
    for minute in range(minutes):
        await det.add(["global", "team:old"], Decimal(per_minute) * Decimal(rng.randint(80, 120)) / 100)
        clock.now += det.settings.bucket_seconds
        found = await det.tick()
        if minute or Decimal(per_minute) * Decimal("0.8") < det.settings.cold_start_usd:
            assert found == [], found[0].message


async def test_a_new_team_spiking_in_its_first_minute_is_flagged_with_the_defaults() -> None:
    det, clock, alerts = defaults()
    await warm_deployment(det, clock, 30)
    await det.add(["global", "team:new"], Decimal("12"))  # its very first bucket
    clock.now += 60
    found = await det.tick()
    new = [a for a in found if a.scope == "team:new"]
    assert len(new) == 1
    alert = new[0]
    assert alert.details["baseline"] == "cold_start" and alert.details["samples"] == 0
    # the floor ($5) is higher than 0.25 x the deployment's threshold (about $0.30), so it is the threshold
    assert alert.threshold_usd == Decimal("5.0") and alert.value_usd == Decimal("12")
    assert 0.29 < alert.details["deployment_limit_usd"] < 0.6
    assert f"or 0.25 x the deployment-wide threshold of ${alert.details['deployment_limit_usd']:.4f}" in alert.message
    assert "global" in {a.scope for a in found}  # the deployment, with its own baseline, spiked too


async def test_a_new_team_with_small_ordinary_spend_is_never_flagged() -> None:
    det, clock, alerts = defaults()
    await warm_deployment(det, clock, 30)
    for minute in range(60):  # an hour of a new team's ordinary traffic, a bit lumpy
        await det.add(["global", "team:new"], Decimal("0.80") if minute % 7 == 0 else Decimal("0.25"))
        await det.add(["global", "team:old"], Decimal("0.30"))
        clock.now += 60
        found = await det.tick()
        assert [a for a in found if a.scope != "global"] == []  # (the deployment's spend did triple)
    state = await det.store.get("anomaly:state:team:new")
    assert state["all"]["n"] == 60  # it has its own baseline now
    assert not [a for a in alerts if a.scope == "team:new"]


async def test_a_new_scope_is_scaled_to_the_deployment_it_joins() -> None:
    """$8 a minute from a newcomer is a spike in a $0.30-a-minute deployment, ordinary in a $100-a-minute one."""
    det, clock, alerts = defaults()
    await warm_deployment(det, clock, 30, per_minute="100")
    assert [a.scope for a in alerts] == ["global", "team:old"]  # its first minute, as a new deployment
    await det.add(["global", "team:new"], Decimal("8"))
    await det.add(["global", "team:old"], Decimal("100"))
    clock.now += 60
    assert await det.tick() == []  # over the $5 floor, but under 0.25 x the deployment's ~$100 threshold
    await det.add(["global", "team:new"], Decimal("50"))  # a quarter and more of the deployment, alone
    await det.add(["global", "team:old"], Decimal("50"))
    clock.now += 60
    found = await det.tick()
    assert [a.scope for a in found] == ["team:new"]
    alert = found[0]
    deployment = alert.details["deployment_limit_usd"]
    assert 100 < deployment < 150 and alert.details["peak_usd"] == 8
    assert alert.threshold_usd is not None and float(alert.threshold_usd) == pytest.approx(0.25 * deployment, abs=2e-6)


async def test_a_new_deployment_is_judged_against_the_floor_from_its_first_minute() -> None:
    det, clock, alerts = defaults()
    await det.add(["global", "model:gpt-4o"], Decimal("4.99"))
    clock.now += 60
    assert await det.tick() == []  # under the floor: ordinary first traffic
    await det.add(["global", "model:gpt-4o"], Decimal("12"))  # over the floor and twice its first minute
    clock.now += 60
    found = await det.tick()
    assert sorted(a.scope for a in found) == ["global", "model:gpt-4o"]
    glob = next(a for a in found if a.scope == "global")
    assert "deployment-wide" not in glob.message and glob.threshold_usd == Decimal("5.0")


# -- detection delay -------------------------------------------------------------------- #


async def simulate(det: AnomalyDetector, clock: Clock, start: float, end: float,
                   rate: object, scopes: tuple[str, ...] = ("global", "team:search")) -> list[tuple[float, Alert]]:
    """Requests every 5 simulated seconds costing ``rate(t) x 5``; the detector checked when the gateway would."""
    found: list[tuple[float, Alert]] = []
    clock.now = start
    next_tick = start + det.next_check()
    t = start
    while t < end:
        while next_tick <= t:
            clock.now = next_tick
            found += [(clock.now, a) for a in await det.tick()]
            next_tick = clock.now + det.next_check()
        clock.now = t
        cost = rate(t) * 5  # type: ignore[operator]
        if cost > 0:
            await det.add(scopes, cost)
        t += 5
    return found


def lumpy(seed: int, per_second: str, spike_from: float | None = None, spike: str = "0.5"):  # type: ignore[no-untyped-def]
    """Dollars per second: ordinary traffic around ``per_second``, ``spike`` per second from ``spike_from`` on."""
    rng = random.Random(seed)
    ordinary = Decimal(per_second)

    def rate(t: float) -> Decimal:
        noise = ordinary * Decimal(rng.randint(50, 150)) / 100
        return Decimal(spike) if spike_from is not None and t >= spike_from else noise

    return rate


async def test_a_spike_is_reported_at_the_first_check_after_its_first_minute_closes() -> None:
    """With the defaults, the alert comes at the first check after the bucket holding the onset closes."""
    det, clock, alerts = defaults()
    onset = T0 + 40 * 60 + 17  # 17 s into a minute, 40 minutes after ordinary traffic began
    found = await simulate(det, clock, T0, onset + 1800, lumpy(1, "0.004", onset))  # ~$0.24/min, then $30/min
    team = [(t, a) for t, a in found if a.scope == "team:search"]
    assert len(team) == 1, "a spike lasting half an hour is one episode: reported once"
    at, alert = team[0]
    closes = T0 + 41 * 60  # the end of the minute the spike began in
    assert at == closes + CLOSE_GRACE  # the first check after it closed: 44 s after the onset
    assert at - onset == 44.0
    assert alert.details["baseline"] == "ewma" and alert.details["bucket_start"].endswith("00:40:00+00:00")
    assert alert.value_usd is not None and alert.value_usd > 20


async def test_detection_delay_with_the_defaults_is_at_most_two_minutes_for_any_onset() -> None:
    """Onset anywhere in a minute: reported within 61 s of the minute's end, or of the next one's when the
    spike's share of its first minute is under min_spend_usd ($1: the last two seconds of a $30/min spike)."""
    delays = []
    for offset in range(0, 60, 3):
        det, clock, _ = defaults()
        onset = T0 + 30 * 60 + offset
        found = await simulate(det, clock, T0, onset + 300, lumpy(offset, "0.004", onset))
        at = min(t for t, a in found if a.scope == "team:search")
        first_close = T0 + 31 * 60
        # spend lands every 5 s: the onset minute holds the spike's requests from the onset on
        in_onset_minute = sum(1 for t in range(int(T0), int(first_close), 5) if t >= onset) * Decimal("2.5")
        expected = first_close + CLOSE_GRACE if in_onset_minute >= 1 else first_close + 60 + CLOSE_GRACE
        assert at == expected, (offset, at - onset)
        delays.append(at - onset)
    assert max(delays) <= 2 * 60 + CLOSE_GRACE and min(delays) >= CLOSE_GRACE


# -- restarts and several processes ----------------------------------------------------- #


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
    # so a spike right after the restart is flagged against it, not learned as the new normal
    found = await run(restarted, clock2, ["24.5"])
    assert [a.scope for a in found] == ["team:search"] and found[0].details["baseline"] == "ewma"
    # a second restore (another process starting) changes nothing
    assert await restarted.restore(history) == 0


async def test_processes_starting_together_rebuild_once() -> None:
    store = MemoryStore()
    clock = Clock(T0 + 20 * BUCKET)
    settings = AnomalySettings(enabled=True)
    history = LedgerBuckets({"model:gpt-4o": {AnomalyDetector(settings, store, print).bucket(T0): Decimal("2")}})
    detectors = [AnomalyDetector(settings, store, lambda a: None, clock) for _ in range(4)]
    restored = await asyncio.gather(*(d.restore(history) for d in detectors))
    assert sorted(restored) == [0, 0, 0, 1] and history.calls == 1


async def test_baselines_of_another_bucket_size_start_afresh_instead_of_raising_false_alarms() -> None:
    """[anomaly] bucket_minutes changed (or baselines from 5-minute buckets, kept before the size was recorded):
    their bucket numbers and per-bucket dollars mean nothing at the new size."""
    store = MemoryStore()
    clock = Clock()
    five = AnomalyDetector(AnomalySettings(enabled=True, bucket_minutes=5.0, warmup_buckets=3), store, print, clock)
    for _ in range(12):  # an hour of $4 per 5 minutes
        await five.add(["team:search"], Decimal(4))
        clock.now += 300
        assert await five.tick() == []
    legacy = dict(await store.get("anomaly:state:team:search"))
    del legacy["size"]
    await store.set("anomaly:state:model:gpt-4o", legacy)  # as an older interlock left it

    emitted: list[Alert] = []
    one = AnomalyDetector(AnomalySettings(enabled=True), store, emitted.append, clock)  # 1-minute buckets
    history = LedgerBuckets({"team:search": {one.bucket(clock.now) - 1: Decimal(1)}})
    assert await one.restore(history) == 1  # no state fits: rebuilt from the ledger, replacing the old ones
    assert (await store.get("anomaly:state:team:search"))["size"] == 60
    await one.add(["team:search", "model:gpt-4o"], Decimal(1))
    clock.now += 60
    assert await one.tick() == [] and emitted == []  # $1 in a minute: ordinary, not "far under" or "over"
    model = await store.get("anomaly:state:model:gpt-4o")
    assert model["size"] == 60 and model["first"] == one.bucket(clock.now)  # started afresh, judged from now on
    await one.add(["model:gpt-4o"], Decimal(1))
    clock.now += 60
    assert await one.tick() == [] and (await store.get("anomaly:state:model:gpt-4o"))["all"]["n"] == 1


async def test_two_processes_on_one_store_report_a_spike_once() -> None:
    store = MemoryStore()
    clock = Clock()
    emitted: list[Alert] = []
    settings = AnomalySettings(enabled=True)
    a, b = (AnomalyDetector(settings, store, emitted.append, clock) for _ in range(2))
    for minute in range(15):
        await (a if minute % 2 else b).add(["team:search"], Decimal("0.5"))
        clock.now += 60
        await asyncio.gather(a.tick(), b.tick())
    await a.add(["team:search"], Decimal("20"))
    await b.add(["team:search"], Decimal("20"))
    clock.now += 60
    found = await asyncio.gather(a.tick(), b.tick(), a.check(["team:search"]), b.check(["team:search"]))
    assert sorted(len(f) for f in found) == [0, 0, 0, 1] and len(emitted) == 1
    assert emitted[0].value_usd == Decimal(40)


def test_the_documented_defaults_are_the_defaults() -> None:
    import tomllib
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "anomalies.md").read_text()
    block = text[text.index("```toml\n") + 8 : text.index("```", text.index("```toml\n") + 8)]
    problems: list[tuple[str, str]] = []
    documented = AnomalySettings.parse(tomllib.loads(block)["anomaly"], problems)
    assert problems == [] and documented == AnomalySettings(enabled=True)


def test_settings_are_validated_with_key_paths() -> None:
    problems: list[tuple[str, str]] = []
    AnomalySettings.parse({"cold_start_usd": -1, "cold_start_share": "a", "warmup_buckets": 1.5, "bucket": 1}, problems)
    assert [p for p, _ in problems] == [
        "anomaly.bucket", "anomaly.cold_start_usd", "anomaly.cold_start_share", "anomaly.warmup_buckets",
    ]
    ok = AnomalySettings.parse({"cold_start_usd": 20, "cold_start_share": 0.5, "bucket_minutes": 2}, problems := [])
    assert problems == [] and ok.cold_start_usd == Decimal("20") and ok.cold_start_share == 0.5
    assert ok.bucket_seconds == 120 and AnomalySettings().enabled is False
