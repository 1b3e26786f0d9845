"""Cost anomalies: spend per minute of the deployment and of each API key, team, model and tag, against a baseline.

Config (the defaults)::

    [anomaly]
    enabled = true
    bucket_minutes = 1        # spend is summed per bucket of this many minutes (UTC-aligned)
    sensitivity = 3.0         # flag spend > baseline + sensitivity x stddev ...
    min_spend_usd = 1.0       # ... and >= this much in the bucket (no alerts about cents)
    warmup_buckets = 10       # buckets of its own history a scope needs before its own baseline is used
    alpha = 0.1               # EWMA weight of the newest bucket (0.1: about the last 10 buckets)
    seasonal_weeks = 3        # weeks of history after which hour-of-week baselines are used
    cold_start_usd = 5.0      # a scope still warming up is flagged at this much in one bucket ...
    cold_start_share = 0.25   # ... if that is also over this share of the deployment's own threshold

How it works. Every finished request adds its cost (integer micro-dollars) to
``anomaly:spend:<scope>:<bucket>`` in the shared store for ``global`` (the whole
deployment), ``key:<api key id>``, ``team:<team>``, ``model:<model>`` and each ``tag:<tag>``: one atomic
:meth:`~interlock.core.store_base.Store.add` of all of them, one round trip, nothing else on
the request's path. A scope's state (``anomaly:state:<scope>``, its baseline) is created the
first time a process sees the scope.

Buckets are judged when they close: :meth:`AnomalyDetector.tick`, which the gateway runs a
second after every bucket boundary (:meth:`AnomalyDetector.next_check`), compares every
scope's closed buckets, oldest first, with the scope's baseline and then folds them into it.
With the defaults a spike is reported at most 61 seconds after the end of the first minute
whose spend crosses the threshold (docs/anomalies.md states the onset-to-alert figures). A spike that goes on is
one episode: a bucket over its threshold right after another one raises no new alert.

Baselines. A scope with ``warmup_buckets`` buckets of history has its own: an exponentially
weighted mean and variance of its spend per bucket (``alpha``; buckets without spend count
as zero), and once it has ``seasonal_weeks`` weeks of history, the same EWMA kept for each of
the 168 hours of the week, so Monday-morning traffic is compared with earlier Monday
mornings. A scope still warming up (a new team, model or tag, or a new deployment) is judged
against a cold-start threshold instead: ``cold_start_usd``, raised to ``cold_start_share`` of
the deployment-wide threshold (``global``'s baseline + sensitivity x stddev) when the
deployment has a baseline, so a newcomer is flagged when it alone spends a large share of
what the whole deployment normally tops out at, and never for small ordinary spend; during
its warm-up it is flagged again only above twice its busiest bucket so far (one alert for a
newcomer that spends a lot every minute, not one a minute).

Sharing and restarts. Everything lives in the store: in process memory with the default
store, in Redis with ``[store] url``, where baselines survive a gateway restart and every
replica and worker shares them. One process closes each bucket (an ``add_once`` claim per
bucket), and a scope's state changes only through the store's atomic ``update``, which
itself decides which buckets are new, so a spike is reported once however many gateways
share the store. A store found without any state of the configured bucket size (the
in-memory store after a restart, an emptied Redis, a changed ``bucket_minutes``) gets its
baselines rebuilt from the ledger (:meth:`AnomalyDetector.restore`).
Time comes from an injectable ``clock``: tests drive it, nothing sleeps.
"""

from __future__ import annotations

import asyncio
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
MAX_CATCHUP = 2016  # closed buckets examined at most per check (1.4 days of 1-minute buckets)
RESTORE_WEEKS = 4  # weeks of ledger history read at most to rebuild baselines after a restart
CLOSE_GRACE = 1.0  # seconds after a bucket ends before it is judged: requests finishing at its end count in it
COLD_REPEAT = 2.0  # a scope warming up is flagged again only above this multiple of its busiest bucket so far
GLOBAL = "global"  # the deployment-wide scope
STATE = "anomaly:state:"
_KEYS = {
    "enabled", "bucket_minutes", "sensitivity", "min_spend_usd", "warmup_buckets", "alpha", "seasonal_weeks",
    "cold_start_usd", "cold_start_share",
}


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    enabled: bool = False
    bucket_minutes: float = 1.0
    sensitivity: float = 3.0
    min_spend_usd: Decimal = Decimal("1.0")
    warmup_buckets: int = 10
    alpha: float = 0.1
    seasonal_weeks: int = 3
    cold_start_usd: Decimal = Decimal("5.0")
    cold_start_share: float = 0.25

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
        d = cls()
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

        out["bucket_minutes"] = number("bucket_minutes", d.bucket_minutes, lambda v: v > 0, "a positive number of minutes")
        out["sensitivity"] = number("sensitivity", d.sensitivity, lambda v: v > 0, "a positive number of standard deviations")
        for key in ("min_spend_usd", "cold_start_usd"):
            default = float(getattr(d, key))
            out[key] = Decimal(repr(number(key, default, lambda v: v >= 0, "a non-negative number of dollars")))
        out["alpha"] = number("alpha", d.alpha, lambda v: 0 < v <= 1, "a weight in (0, 1]")
        out["cold_start_share"] = number("cold_start_share", d.cold_start_share, lambda v: v >= 0,
                                         "a non-negative share of the deployment-wide threshold")
        for key in ("warmup_buckets", "seasonal_weeks"):
            default = getattr(d, key)
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append((f"anomaly.{key}", f"must be a non-negative integer, not {value!r}"))
                value = default
            out[key] = value
        return cls(**out)


class BucketHistory(Protocol):
    """Where past spend per scope and bucket is read from to rebuild baselines (the ledger)."""

    async def buckets(self, since: datetime, until: datetime, bucket_seconds: float) -> dict[str, dict[int, Decimal]]:
        ...


Stats = tuple[float, float, int]  # an EWMA: mean, variance, samples


def _step(stats: Stats | None, x: float, alpha: float) -> Stats:
    """Fold ``x`` into an EWMA mean/variance (West's incremental form)."""
    if stats is None:
        return (x, 0.0, 1)
    mean, var, n = stats
    diff = x - mean
    incr = alpha * diff
    return (mean + incr, (1 - alpha) * (var + diff * incr), n + 1)


def _unpack(stats: Mapping[str, float] | None) -> Stats | None:
    return (stats["mean"], stats["var"], int(stats["n"])) if stats and stats.get("n") else None


def _pack(stats: Stats) -> dict[str, float]:
    return {"mean": stats[0], "var": stats[1], "n": stats[2]}


def _hour_of_week(ts: float) -> int:
    """Monday 00:00 UTC is 0 (the Unix epoch fell on a Thursday, 72 hours into its week)."""
    return int((ts // 3600 + 72) % 168)


def _usd(x: float) -> str:
    """Dollars for a sentence: cents from $1 up, four decimals below (a threshold of $0.0040 is not $0.00)."""
    return f"${x:,.2f}" if abs(x) >= 1 else f"${x:.4f}"


def _dollars(x: float) -> Decimal:
    return Decimal(repr(round(x, 6)))


@dataclass(frozen=True, slots=True)
class ColdStart:
    """What a scope still warming up is judged against, from the deployment's baseline of the moment."""

    limit: float  # the threshold: the floor, or the share of the deployment's threshold when higher
    floor: float
    deployment_limit: float | None  # the deployment-wide threshold; None while the deployment warms up too


class AnomalyDetector:
    """Spend buckets and baselines per scope in the shared store; alerts through ``emit``."""

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
        self._known: set[str] = set()  # scopes whose state this process knows to exist in the store

    # -- bookkeeping on every request --------------------------------------------------- #

    def bucket(self, ts: float) -> int:
        return int(ts // self.settings.bucket_seconds)

    @staticmethod
    def keys(decision: Decision) -> list[str]:
        """The scopes a decision's spend counts for: the deployment, its API key, team, the model that served it, each tag.

        Named as budgets name theirs (``key:<api key id>``, ``team:<team>``, ``tag:<tag>``,
        ``global``) plus ``model:<model>``; not per user (the OpenAI ``user`` field can name
        every end user of an application: unbounded state).
        """
        out = [GLOBAL]
        if decision.api_key_id:
            out.append(f"key:{decision.api_key_id}")
        if decision.team:
            out.append(f"team:{decision.team}")
        model = decision.model or decision.requested_model
        if model:
            out.append(f"model:{model}")
        out.extend(f"tag:{t}" for t in dict.fromkeys(decision.tags))
        return out

    async def observe(self, decision: Decision) -> None:
        """Count a finished request's cost in the current bucket of its scopes (judging happens in :meth:`tick`)."""
        if self.settings.enabled and decision.cost_usd:
            await self.add(self.keys(decision), decision.cost_usd)

    async def add(self, keys: Iterable[str], usd: Decimal, now: float | None = None) -> None:
        """Add ``usd`` of spend to the current bucket of each scope (also how tests inject spend)."""
        micros = int((usd * MICRO).to_integral_value())
        if micros <= 0:
            return
        keys = list(keys)
        bucket = self.bucket(self.clock() if now is None else now)
        ttl = self.settings.bucket_seconds * (MAX_CATCHUP + 2)
        await self.store.add([f"anomaly:spend:{key}:{bucket}" for key in keys], micros, ttl=ttl)
        for key in keys:
            # a scope seen for the first time starts its history at this bucket (asking once per process
            # is enough: setdefault never replaces the history another process started)
            if key not in self._known:
                await self.store.setdefault(f"{STATE}{key}", self._fresh(bucket))
                self._known.add(key)

    def _fresh(self, bucket: int) -> dict[str, Any]:
        """The state of a scope whose history starts at ``bucket``."""
        return {"bucket": bucket - 1, "first": bucket, "size": self.settings.bucket_seconds}

    def _fits(self, state: Any) -> bool:
        """Whether ``state`` counts buckets of this detector's size (bucket numbers mean nothing across sizes)."""
        return isinstance(state, dict) and state.get("size") == self.settings.bucket_seconds

    def _unless_fits(self, replacement: dict[str, Any]) -> Callable[[Any], Any]:
        """An update that keeps a fitting state and puts ``replacement`` in place of anything else."""
        return lambda old: old if self._fits(old) else replacement

    # -- judging closed buckets ---------------------------------------------------------- #

    def next_check(self) -> float:
        """Seconds until the next bucket has closed (plus :data:`CLOSE_GRACE`): when the gateway calls :meth:`tick`."""
        b = self.settings.bucket_seconds
        return b - self.clock() % b + CLOSE_GRACE

    async def tick(self) -> list[Alert]:
        """Judge every scope's buckets closed since the last check, once per bucket across every process."""
        if not self.settings.enabled:
            return []
        current = self.bucket(self.clock())
        claim = f"anomaly:tick:{current}"
        if not await self.store.add_once(claim, "anomaly:ticks", 1, ttl=max(600.0, 4 * self.settings.bucket_seconds)):
            return []  # another process (or an earlier call of this one) already closed these buckets
        states = await self.store.items(STATE)
        return await self.check([k[len(STATE):] for k in states], states)

    async def check(self, keys: Iterable[str], states: Mapping[str, Any] | None = None) -> list[Alert]:
        """Compare every bucket of ``keys`` closed since their last check with the baseline; emit alerts.

        ``states`` (by store key) spares reading them again when the caller already has them;
        the update that folds the buckets in always starts from the store's value.
        """
        current = self.bucket(self.clock())
        keys = list(dict.fromkeys(keys))
        if states is None:
            wanted = [f"{STATE}{k}" for k in {*keys, GLOBAL}]
            states = dict(zip(wanted, await self.store.get_many(wanted), strict=True))
        deployment = states.get(f"{STATE}{GLOBAL}")
        cold = self._cold_start(deployment if self._fits(deployment) else None)
        due: dict[str, range] = {}
        for key in keys:
            state = states.get(f"{STATE}{key}")
            if state is None:
                continue
            if not self._fits(state):
                # kept for another bucket size ([anomaly] bucket_minutes changed, or an older interlock): its
                # bucket numbers and per-bucket dollars do not compare, so the scope starts afresh (cold start)
                await self.store.update(f"{STATE}{key}", self._unless_fits(self._fresh(current)))
                log.info("anomaly: %s had a baseline of other bucket sizes; it starts again", key)
            elif state["bucket"] < current - 1:
                due[key] = range(max(state["bucket"] + 1, current - MAX_CATCHUP), current)
        names = [f"anomaly:spend:{key}:{b}" for key, span in due.items() for b in span]
        counted = iter(await self.store.get_many(names))
        alerts: list[Alert] = []
        for key, span in due.items():
            spends = {b: int(next(counted) or 0) for b in span}
            found: list[Alert] = []

            def advance(old: Any, key: str = key, spends: dict[int, int] = spends, found: list[Alert] = found,
                        first: int = span.start) -> Any:
                found.clear()  # a store may call this more than once (optimistic retries)
                st = dict(old) if self._fits(old) else self._fresh(first)
                st["bucket"] = max(st["bucket"], first - 1)  # older than MAX_CATCHUP buckets: left out
                spent = sorted(b for b, micros in spends.items() if micros > 0 and b > st["bucket"])
                for b in spent:
                    # buckets without spend (most of them after a quiet night or an outage) are folded in
                    # together: nothing in them can be an anomaly
                    self._fold(st, st["bucket"] + 1, b, {})
                    alert = self._judge(key, b, spends[b], st, cold)
                    if alert is not None:
                        # one alert per episode: a spike that goes on is not reported again every bucket
                        if st.get("flagged") != b - 1:
                            found.append(alert)
                        st["flagged"] = b
                    self._fold(st, b, b + 1, {b: spends[b] / 1_000_000})
                self._fold(st, st["bucket"] + 1, max(spends) + 1, {})
                return st

            await self.store.update(f"{STATE}{key}", advance)
            await asyncio.sleep(0)  # thousands of scopes: let requests in between them
            for alert in found:
                log.warning("anomaly: %s", alert.message)
                self.emit(alert)
            alerts.extend(found)
        return alerts

    def _cold_start(self, deployment: Mapping[str, Any] | None) -> ColdStart:
        s = self.settings
        floor = float(max(s.cold_start_usd, s.min_spend_usd))
        base = (deployment or {}).get("all")
        if not base or base["n"] < s.warmup_buckets:
            return ColdStart(floor, floor, None)
        limit = base["mean"] + s.sensitivity * math.sqrt(max(base["var"], 0.0))
        return ColdStart(max(floor, s.cold_start_share * limit), floor, limit)

    def _fold(self, st: dict[str, Any], first: int, end: int, spends: Mapping[int, float]) -> None:
        """Fold buckets ``first`` to ``end - 1`` (absent from ``spends``: no spend) into the baselines in ``st``.

        On plain floats, as a restart folds weeks of buckets per scope at once.
        """
        s = self.settings
        alpha, size, warmup = s.alpha, s.bucket_seconds, s.warmup_buckets
        total = _unpack(st.get("all"))
        how: dict[str, Any] = dict(st.get("how") or {})  # a copy: ``st`` may share it with the store's value
        touched: dict[str, Stats] = {}  # only the hours these buckets fall in are unpacked and packed again
        peak = st.get("peak")
        for b in range(first, end):
            x = spends.get(b, 0.0)
            total = _step(total, x, alpha)
            h = str(_hour_of_week(b * size))
            touched[h] = _step(touched[h] if h in touched else _unpack(how.get(h)), x, alpha)
            if total[2] <= warmup:  # the busiest bucket of its warm-up
                peak = x if peak is None else max(peak, x)
        if total is not None:
            st["all"] = _pack(total)
        how.update((h, _pack(v)) for h, v in touched.items())
        st["how"] = how
        if peak is not None:
            st["peak"] = peak
        st["bucket"] = max(st["bucket"], end - 1)

    def _judge(self, key: str, bucket: int, micros: int, st: Mapping[str, Any], cold: ColdStart) -> Alert | None:
        """The alert one closed bucket deserves against the baseline in ``st`` (before it is folded in), if any."""
        s = self.settings
        spend = micros / 1_000_000
        start = bucket * s.bucket_seconds
        own = st.get("all") or {}
        details: dict[str, Any]
        if own.get("n", 0) < s.warmup_buckets:
            # warming up: no baseline of its own yet (the deployment's own scope has only the floor)
            limit = cold.floor if key == GLOBAL else cold.limit
            # ... and more than twice its busiest bucket so far: a newcomer that spends $100 every minute
            # is reported once, for its first minute, not for every minute of its warm-up
            peak = st.get("peak", 0.0)
            if spend < limit or spend <= COLD_REPEAT * peak:
                return None
            versus = f"the cold-start floor of {_usd(cold.floor)} (anomaly.cold_start_usd)"
            if key != GLOBAL and cold.deployment_limit is not None:
                versus += (f" or {s.cold_start_share:g} x the deployment-wide threshold of "
                           f"{_usd(cold.deployment_limit)}, whichever is higher")
            why = (f"at or over its cold-start threshold of {_usd(limit)}: it has {own.get('n', 0)} of the "
                   f"{s.warmup_buckets} buckets of history a baseline of its own needs, so it is judged against {versus}")
            if peak:
                why += f"; and more than {COLD_REPEAT:g} x its busiest bucket so far ({_usd(peak)})"
            details = {"baseline": "cold_start", "cold_start_usd": cold.floor, "samples": own.get("n", 0),
                       "peak_usd": round(peak, 6)}
            if cold.deployment_limit is not None and key != GLOBAL:
                details |= {"deployment_limit_usd": round(cold.deployment_limit, 6), "cold_start_share": s.cold_start_share}
        else:
            hours: Mapping[str, Any] = st.get("how") or {}
            seasonal = hours.get(str(_hour_of_week(start)))
            history_weeks = (bucket - st.get("first", bucket)) * s.bucket_seconds / WEEK
            use_seasonal = (
                s.seasonal_weeks > 0 and seasonal is not None and history_weeks >= s.seasonal_weeks
                and seasonal["n"] >= s.seasonal_weeks
            )
            base: Mapping[str, Any] = seasonal if use_seasonal and seasonal is not None else own
            mean, std = base["mean"], math.sqrt(max(base["var"], 0.0))
            limit = mean + s.sensitivity * std
            if not (spend > limit and Decimal(micros) / MICRO >= s.min_spend_usd):
                return None
            kind = "its hour-of-week baseline" if use_seasonal else "its baseline"
            why = (f"over its threshold of {_usd(limit)}: {kind} {_usd(mean)} per {s.bucket_minutes:g}-minute bucket "
                   f"+ {s.sensitivity:g} x stddev {_usd(std)} (EWMA of {base['n']} buckets)")
            details = {"baseline": "hour_of_week" if use_seasonal else "ewma", "baseline_usd": round(mean, 6),
                       "stddev_usd": round(std, 6), "sensitivity": s.sensitivity, "samples": base["n"]}
        begin, end = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + s.bucket_seconds, UTC)
        window = f"{begin:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
        return Alert(
            kind="anomaly",
            scope=key,
            message=f"{key} spent {_usd(spend)} in the {s.bucket_minutes:g}-minute bucket {window}, {why}",
            value_usd=Decimal(micros) / MICRO,
            threshold_usd=_dollars(limit),
            details={
                "bucket_start": begin.isoformat(),
                "bucket_end": end.isoformat(),
                "bucket_minutes": s.bucket_minutes,
                "limit_usd": round(limit, 6),
                **details,
            },
            ts=self.clock(),
        )

    # -- after a restart ------------------------------------------------------------------ #

    async def restore(self, history: BucketHistory) -> int:
        """Rebuild baselines a store forgot (a restart of the in-memory store, an emptied Redis) from the ledger.

        Runs at startup. Only the first process to find the store without anomaly state
        does it (an ``add_once`` marker), so N processes starting together rebuild once.
        For every scope with spend in the ledger over the baseline's horizon (``seasonal_weeks``
        weeks, at least ``warmup_buckets`` buckets, at most :data:`RESTORE_WEEKS` weeks), the
        closed buckets are folded into the scope's state exactly as if the detector had seen
        them live (no alerts are raised for the past), and the current bucket's spend so far
        is added to its counter. Returns the number of scopes restored.
        """
        if not self.settings.enabled:
            return 0
        if any(self._fits(state) for state in (await self.store.items(STATE)).values()):
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

        def fold_all() -> dict[str, dict[str, Any]]:
            # weeks of 1-minute buckets per scope: arithmetic worth keeping off the event loop
            out = {}
            for key, buckets in spends.items():
                start = min(buckets)
                st = self._fresh(start)
                self._fold(st, start, current, {b: float(usd) for b, usd in buckets.items()})
                out[key] = st
            return out

        states = await asyncio.to_thread(fold_all)
        ttl = s.bucket_seconds * (MAX_CATCHUP + 2)
        for key, st in states.items():
            # a state another process started meanwhile wins; one of another bucket size does not
            await self.store.update(f"{STATE}{key}", self._unless_fits(st))
            self._known.add(key)
            if current in spends[key]:
                micros = int((spends[key][current] * MICRO).to_integral_value())
                await self.store.add_once(f"anomaly:seeded:{key}:{current}", f"anomaly:spend:{key}:{current}", micros, ttl)
        if spends:
            log.info("anomaly: rebuilt the baselines of %d scopes from the ledger", len(spends))
        return len(spends)
