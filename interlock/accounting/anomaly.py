"""Cost anomaly detection: spend per team, model and tag against an EWMA baseline.

Config::

    [anomaly]
    enabled = true
    bucket_minutes = 5        # spend is summed per bucket of this many minutes (UTC-aligned)
    sensitivity = 3.0         # flag spend > baseline + sensitivity x stddev ...
    min_spend_usd = 1.0       # ... and >= this much in the bucket (no alerts about cents)
    warmup_buckets = 6        # buckets of history a key needs before it can be flagged
    alpha = 0.3               # EWMA weight of the newest bucket
    seasonal_weeks = 3        # weeks of history after which hour-of-week baselines are used

How it works. Every finished request adds its cost (integer micro-dollars, ``incr``) to
``anomaly:spend:<key>:<bucket>`` in the shared store for ``team:<team>``,
``model:<model>`` and each ``tag:<tag>``. Closed buckets are checked lazily: when a request
for a key arrives in a later bucket (and from :meth:`AnomalyDetector.tick`, which the
gateway runs in a light background task so a spike followed by silence is still seen),
every bucket of that key closed since the last check is compared, oldest first, with the
key's baseline and then folded into it. The baseline is an exponentially weighted mean and
variance (``alpha``); buckets without spend count as zero. Once a key has
``seasonal_weeks`` weeks of history and its hour of the week has at least that many
samples, the hour-of-week baseline (the same EWMA, kept for each of the 168 hours) is used
instead, so Monday-morning traffic is compared with earlier Monday mornings.

The per-key state (``anomaly:state:<key>``) changes only through the store's atomic
``update``, and the update itself decides which buckets are new, so several processes never
flag the same bucket twice. Time comes from an injectable ``clock`` (tests drive it; nothing
sleeps).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from interlock.core.store import Store
from interlock.core.types import Alert, Decision

log = logging.getLogger("interlock.anomaly")

MICRO = Decimal(1_000_000)
WEEK = 7 * 86400
MAX_CATCHUP = 2016  # closed buckets examined at most per check (a week of 5-minute buckets)
RESTORE_WEEKS = 4  # weeks of ledger history read at most to rebuild baselines after a restart
_KEYS = {"enabled", "bucket_minutes", "sensitivity", "min_spend_usd", "warmup_buckets", "alpha", "seasonal_weeks"}


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    enabled: bool = False
    bucket_minutes: float = 5.0
    sensitivity: float = 3.0
    min_spend_usd: Decimal = Decimal("1.0")
    warmup_buckets: int = 6
    alpha: float = 0.3
    seasonal_weeks: int = 3

    @property
    def bucket_seconds(self) -> float:
        return self.bucket_minutes * 60

    @classmethod
    def parse(cls, table: Any, problems: list[tuple[str, str]]) -> AnomalySettings:
        if table is None:
            return cls()
        if not isinstance(table, dict):
            problems.append(("anomaly", "must be a table"))
            return cls()
        for key in table:
            if key not in _KEYS:
                problems.append((f"anomaly.{key}", f"unknown key (known: {', '.join(sorted(_KEYS))})"))
        out: dict[str, Any] = {}
        enabled = table.get("enabled", True)  # writing an [anomaly] table turns it on unless told otherwise
        if not isinstance(enabled, bool):
            problems.append(("anomaly.enabled", "must be true or false"))
            enabled = False
        out["enabled"] = enabled

        def number(key: str, default: float, ok: Callable[[float], bool], what: str) -> float:
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
                problems.append((f"anomaly.{key}", f"must be {what}, not {value!r}"))
                return default
            return float(value)

        out["bucket_minutes"] = number("bucket_minutes", 5.0, lambda v: v > 0, "a positive number of minutes")
        out["sensitivity"] = number("sensitivity", 3.0, lambda v: v > 0, "a positive number of standard deviations")
        min_spend = number("min_spend_usd", 1.0, lambda v: v >= 0, "a non-negative number of dollars")
        out["min_spend_usd"] = Decimal(repr(min_spend))
        out["alpha"] = number("alpha", 0.3, lambda v: 0 < v <= 1, "a weight in (0, 1]")
        for key, default in (("warmup_buckets", 6), ("seasonal_weeks", 3)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append((f"anomaly.{key}", f"must be a non-negative integer, not {value!r}"))
                value = default
            out[key] = value
        return cls(**out)


class BucketHistory(Protocol):
    """Where past spend per key and bucket is read from to rebuild baselines (the ledger)."""

    async def buckets(self, since: datetime, until: datetime, bucket_seconds: float) -> dict[str, dict[int, Decimal]]:
        ...


def _ewma(stats: Mapping[str, float] | None, x: float, alpha: float) -> dict[str, float]:
    """Fold ``x`` into an EWMA mean/variance (West's incremental form)."""
    if not stats or not stats.get("n"):
        return {"mean": x, "var": 0.0, "n": 1}
    mean, var = stats["mean"], stats["var"]
    diff = x - mean
    incr = alpha * diff
    return {"mean": mean + incr, "var": (1 - alpha) * (var + diff * incr), "n": stats["n"] + 1}


class AnomalyDetector:
    """Per-key spend buckets and baselines in the shared store; alerts through ``emit``."""

    def __init__(
        self,
        settings: AnomalySettings,
        store: Store,
        emit: Callable[[Alert], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.emit = emit
        self.clock = clock
        self._known: set[str] = set()  # keys whose history this process knows to exist in the store

    async def restore(self, history: BucketHistory) -> int:
        """Rebuild baselines a store forgot (a restart of the in-memory store, an emptied Redis) from the ledger.

        Runs at startup. Only the first process to find the store without anomaly state
        does it (an ``add_once`` marker), so N processes starting together rebuild once.
        For every key with spend in the ledger over the baseline's horizon (``seasonal_weeks``
        weeks, at least ``warmup_buckets`` buckets, at most :data:`RESTORE_WEEKS` weeks), the
        closed buckets are folded into the key's state exactly as if the detector had seen
        them live (no alerts are raised for the past), and the current bucket's spend so far
        is added to its counter. Returns the number of keys restored.
        """
        if not self.settings.enabled:
            return 0
        if await self.store.items("anomaly:state:"):
            return 0  # the store remembers: nothing to rebuild
        if not await self.store.add_once("anomaly:restored", "anomaly:restores", 1, ttl=self.settings.bucket_seconds * 2):
            return 0  # another process is rebuilding right now
        s = self.settings
        now = self.clock()
        current = self.bucket(now)
        horizon = max(s.warmup_buckets * s.bucket_seconds, min(s.seasonal_weeks, RESTORE_WEEKS) * WEEK)
        first = self.bucket(now - horizon)
        spends = await history.buckets(datetime.fromtimestamp(first * s.bucket_seconds, UTC),
                                       datetime.fromtimestamp(now, UTC), s.bucket_seconds)
        ttl = s.bucket_seconds * (MAX_CATCHUP + 2)
        for key, buckets in spends.items():
            start = min(buckets)
            st: dict[str, Any] = {"bucket": start - 1, "first": start, "how": {}}
            for b in range(start, current):
                self._judge(key, b, float(buckets.get(b, Decimal(0))), st)
                st["bucket"] = b
            await self.store.setdefault(f"anomaly:state:{key}", st)
            self._known.add(key)
            if current in buckets:
                micros = int((buckets[current] * MICRO).to_integral_value())
                await self.store.add_once(f"anomaly:seeded:{key}:{current}", f"anomaly:spend:{key}:{current}", micros, ttl)
        if spends:
            log.info("anomaly: rebuilt the baselines of %d keys from the ledger", len(spends))
        return len(spends)

    def bucket(self, ts: float) -> int:
        return int(ts // self.settings.bucket_seconds)

    @staticmethod
    def keys(decision: Decision) -> list[str]:
        """The keys a decision's spend counts for: its team, the model that served it, each tag."""
        out = []
        if decision.team:
            out.append(f"team:{decision.team}")
        model = decision.model or decision.requested_model
        if model:
            out.append(f"model:{model}")
        out.extend(f"tag:{t}" for t in dict.fromkeys(decision.tags))
        return out

    async def observe(self, decision: Decision) -> list[Alert]:
        """Count a finished request's cost, then check the buckets its keys closed since last time."""
        if not self.settings.enabled:
            return []
        keys = self.keys(decision)
        if decision.cost_usd:
            await self.add(keys, decision.cost_usd)
        return await self.check(keys)

    async def add(self, keys: Iterable[str], usd: Decimal, now: float | None = None) -> None:
        """Add ``usd`` of spend to the current bucket of each key (also how tests inject spend)."""
        micros = int((usd * MICRO).to_integral_value())
        if micros <= 0:
            return
        bucket = self.bucket(self.clock() if now is None else now)
        ttl = self.settings.bucket_seconds * (MAX_CATCHUP + 2)
        for key in keys:
            spend_key = f"anomaly:spend:{key}:{bucket}"
            await self.store.incr(spend_key, micros, ttl=ttl)
            # a key seen for the first time starts its history at this bucket (once per process is enough
            # to ask: setdefault never replaces the history another process started)
            if key not in self._known:
                await self.store.setdefault(f"anomaly:state:{key}", {"bucket": bucket - 1, "first": bucket})
                self._known.add(key)

    async def tick(self) -> list[Alert]:
        """Check every known key (the gateway's background task calls this once per bucket)."""
        if not self.settings.enabled:
            return []
        prefix = "anomaly:state:"
        return await self.check([k[len(prefix):] for k in await self.store.items(prefix)])

    async def check(self, keys: Iterable[str]) -> list[Alert]:
        """Compare every bucket of ``keys`` closed since their last check with the baseline; emit alerts."""
        current = self.bucket(self.clock())
        alerts: list[Alert] = []
        for key in keys:
            state_key = f"anomaly:state:{key}"
            state = await self.store.get(state_key)
            if state is None or state["bucket"] >= current - 1:
                continue
            first = max(state["bucket"] + 1, current - MAX_CATCHUP)
            spends = {}
            for b in range(first, current):
                spends[b] = (await self.store.get(f"anomaly:spend:{key}:{b}") or 0) / 1_000_000
            found: list[Alert] = []

            def advance(
                old: Any, key: str = key, spends: dict[int, float] = spends, found: list[Alert] = found, first: int = first
            ) -> Any:
                found.clear()  # a store may call this more than once (optimistic retries)
                st = dict(old or {"bucket": first - 1, "first": first})
                st["how"] = dict(st.get("how") or {})
                for b in sorted(spends):
                    if b <= st["bucket"]:
                        continue  # another process already folded this bucket in
                    alert = self._judge(key, b, spends[b], st)
                    if alert is not None:
                        found.append(alert)
                    st["bucket"] = b
                return st

            await self.store.update(state_key, advance)
            for alert in found:
                log.warning("anomaly: %s", alert.message)
                self.emit(alert)
            alerts.extend(found)
        return alerts

    def _judge(self, key: str, bucket: int, spend: float, st: dict[str, Any]) -> Alert | None:
        """Compare one closed bucket with the baseline, then fold it in (mutates ``st``)."""
        s = self.settings
        start = bucket * s.bucket_seconds
        hour = datetime.fromtimestamp(start, UTC)
        how = str(hour.weekday() * 24 + hour.hour)
        seasonal = st["how"].get(how)
        history_weeks = (bucket - st.get("first", bucket)) * s.bucket_seconds / WEEK
        use_seasonal = (
            s.seasonal_weeks > 0 and seasonal is not None and history_weeks >= s.seasonal_weeks
            and seasonal["n"] >= s.seasonal_weeks
        )
        base = seasonal if use_seasonal else st.get("all")
        alert = None
        if base is not None and st.get("all", {}).get("n", 0) >= s.warmup_buckets:
            mean, std = base["mean"], math.sqrt(max(base["var"], 0.0))
            threshold = mean + s.sensitivity * std
            if spend > threshold and Decimal(repr(spend)) >= s.min_spend_usd:
                ts = datetime.fromtimestamp(start, UTC).isoformat()
                alert = Alert(
                    kind="anomaly",
                    scope=key,
                    message=(
                        f"{key} spent ${spend:,.2f} in the {s.bucket_minutes:g}-minute bucket from {ts}, "
                        f"above its baseline of ${mean:,.2f} (+{s.sensitivity:g} x stddev ${std:,.2f} = ${threshold:,.2f})"
                    ),
                    value_usd=Decimal(repr(round(spend, 6))),
                    threshold_usd=Decimal(repr(round(mean, 6))),
                    details={
                        "bucket_start": ts,
                        "bucket_minutes": s.bucket_minutes,
                        "stddev_usd": round(std, 6),
                        "limit_usd": round(threshold, 6),
                        "sensitivity": s.sensitivity,
                        "baseline": "hour_of_week" if use_seasonal else "ewma",
                        "samples": base["n"],
                    },
                    ts=self.clock(),
                )
        st["all"] = _ewma(st.get("all"), spend, s.alpha)
        st["how"][how] = _ewma(seasonal, spend, s.alpha)
        return alert
