"""Cooldown as a circuit breaker per target (provider instance + model).

closed --(N failures in a window, or an error ratio over a minimum of requests,
          or at once for a 429 with Retry-After)--> open
open   --(cooldown elapsed)--> half_open: a bounded number of probe requests pass
half_open --(a probe succeeds)--> closed;  --(a probe fails)--> open, longer cooldown

The cooldown grows by ``backoff`` on each trip up to ``max_cooldown``; the trip
count decays once a target has stayed healthy for ``max_cooldown``. Only
failures that say something about the target count (rate limits, overload,
server errors, timeouts, connection and stream failures, auth, not found);
request faults (bad request, context length, content policy) do not.

All state lives in the :class:`~interlock.core.store.Store`, so several gateway
processes share one view of each target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from interlock.core.store import Store
from interlock.core.types import FailureClass

F = FailureClass
#: failure classes that count against a target's health
HEALTH_FAILURES = frozenset(
    {F.RATE_LIMITED, F.QUOTA, F.OVERLOADED, F.SERVER_ERROR, F.TIMEOUT, F.CONNECTION, F.STREAM_ERROR, F.AUTH,
     F.NOT_FOUND, F.UNKNOWN}
)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """The ``[breaker]`` config table."""

    failures: int = 5  # trip after this many failures within `window`
    window: float = 60.0  # seconds
    error_ratio: float = 0.5  # ...or this failure ratio within `window`
    min_requests: int = 20  # ...over at least this many requests
    cooldown: float = 15.0  # seconds out of rotation after the first trip
    backoff: float = 2.0  # cooldown multiplier per repeated trip
    max_cooldown: float = 300.0
    probes: int = 1  # concurrent probe requests allowed while half-open
    max_retry_after: float = 600.0  # a 429's Retry-After trips the breaker for at most this long
    enabled: bool = True

    @classmethod
    def parse(cls, table: Mapping[str, Any], problems: list[tuple[str, str]], path: str = "breaker") -> BreakerSettings:
        values: dict[str, Any] = {}
        defaults = {f.name: f.default for f in fields(cls)}  # (slots: class attributes are descriptors)
        for key, value in table.items():
            if key not in defaults:
                problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(defaults)})"))
                continue
            default = defaults[key]
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            if not ok:
                problems.append((f"{path}.{key}", f"must be a {'boolean' if isinstance(default, bool) else 'positive number'}"))
                continue
            values[key] = float(value) if isinstance(default, float) else value
        if values.get("error_ratio", 0.5) > 1:
            problems.append((f"{path}.error_ratio", "must be between 0 and 1"))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Admission:
    """What the breaker says about a target right now."""

    allowed: bool
    state: str  # closed | open | half_open
    opened_at: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    target: str
    old: str
    new: str
    reason: str
    at: float


_CLOSED = Admission(True, "closed")


def _fresh() -> dict[str, Any]:
    return {"state": "closed", "events": [], "trips": 0, "opened_at": None, "until": None, "probes": 0,
            "last_trip": None, "closed_at": None}


class Breaker:
    def __init__(self, store: Store, settings: BreakerSettings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    @staticmethod
    def key(target: str) -> str:
        return f"breaker:{target}"

    def _admission(self, st: dict[str, Any] | None, now: float) -> Admission:
        if not st or st["state"] == "closed":
            return _CLOSED
        if st["state"] == "open" and now < st["until"]:
            return Admission(False, "open", st["opened_at"], st["until"])
        # open with the cooldown over is half-open in effect; a probe slot decides
        allowed = st["state"] == "open" or st["probes"] < self.settings.probes
        return Admission(allowed, "half_open", st["opened_at"], st["until"])

    async def peek(self, target: str) -> Admission:
        """The target's admission, without taking a probe slot (for planning and health pages)."""
        if not self.settings.enabled:
            return _CLOSED
        return self._admission(await self.store.peek(self.key(target)), self.clock())

    async def acquire(self, target: str) -> tuple[bool, Transition | None]:
        """Take a slot to attempt ``target``: always in closed, one probe slot in half-open."""
        if not self.settings.enabled:
            return True, None
        key = self.key(target)
        st = await self.store.peek(key)
        if not st or st["state"] == "closed":
            # nothing to take or change in closed: a read is enough, and a possibly stale one (a
            # shared store serves it from memory, refreshed within [store] refresh and at once on
            # a transition elsewhere); a state change after it is as if it came just after
            return True, None
        now = self.clock()
        result: list[Any] = [True, None]

        def fn(st: dict[str, Any] | None) -> dict[str, Any] | None:
            if not st or st["state"] == "closed":
                return st
            if st["state"] == "open":
                if now < st["until"]:
                    result[0] = False  # used only when every target is open: a last-resort try
                    return st
                st = {**st, "state": "half_open", "probes": 0}
                result[1] = Transition(target, "open", "half_open", "cooldown over", now)
            if st["probes"] < self.settings.probes:
                st = {**st, "probes": st["probes"] + 1}
            else:
                result[0] = False
            return st

        await self.store.update(key, fn)
        return result[0], result[1]

    async def record(
        self, target: str, *, ok: bool, failure: FailureClass | None = None, retry_after: float | None = None,
        announce: bool = True,
    ) -> Transition | None:
        """Record an attempt's outcome; returns the state change it caused, if any.

        ``announce=False`` (a success seen in closed state, which changes nobody's admission)
        lets other processes keep their cached copy of the breaker until it refreshes.
        """
        if not self.settings.enabled:
            return None
        s, now = self.settings, self.clock()
        counts = ok or failure in HEALTH_FAILURES
        out: list[Transition | None] = [None]

        def trip(st: dict[str, Any], reason: str, seconds: float | None = None) -> dict[str, Any]:
            trips = st["trips"]
            if st["closed_at"] is not None and now - st["closed_at"] > s.max_cooldown:
                trips = 0  # healthy for long enough: forget old trips
            cooldown = seconds if seconds is not None else min(s.cooldown * s.backoff**trips, s.max_cooldown)
            out[0] = Transition(target, st["state"], "open", reason, now)
            return {**st, "state": "open", "trips": trips + 1, "opened_at": now, "until": now + cooldown,
                    "probes": 0, "last_trip": now, "events": []}

        def fn(st: dict[str, Any] | None) -> dict[str, Any]:
            st = dict(st) if st else _fresh()
            if st["state"] == "half_open":
                st["probes"] = max(0, st["probes"] - 1)
                if not counts:
                    return st  # the probe learned nothing about the target
                if ok:
                    out[0] = Transition(target, "half_open", "closed", "probe succeeded", now)
                    return {**st, "state": "closed", "events": [], "opened_at": None, "until": None, "closed_at": now}
                return trip(st, f"probe failed: {failure.value if failure else 'failure'}")
            if st["state"] == "open":
                return st  # a last-resort attempt while open: no new information about recovery
            if not counts:
                return st
            events = st["events"]
            if events and now - events[0][0] > s.window:
                # the oldest event comes first, so only then can any have left the window
                events = [e for e in events if now - e[0] <= s.window]
            else:
                events = list(events)  # the stored list is never changed in place
            events.append((now, 1 if ok else 0))
            keep = max(s.min_requests, s.failures) * 2
            st["events"] = events if len(events) <= keep else events[-keep:]
            if ok:
                return st
            if failure in (F.RATE_LIMITED, F.QUOTA) and retry_after:
                return trip(st, f"{failure.value} with Retry-After {retry_after:g}s", min(retry_after, s.max_retry_after))
            failed = sum(1 for e in events if not e[1])
            if failed >= s.failures:
                return trip(st, f"{failed} failures in {s.window:g}s")
            if len(events) >= s.min_requests and failed / len(events) >= s.error_ratio:
                return trip(st, f"error ratio {failed}/{len(events)} in {s.window:g}s")
            return st

        await self.store.update(self.key(target), fn, announce=announce)
        return out[0]

    async def release(self, target: str) -> None:
        """Give back a probe slot of an attempt that was cancelled before it finished."""
        if not self.settings.enabled:
            return

        def fn(st: dict[str, Any] | None) -> dict[str, Any] | None:
            if st and st["state"] == "half_open" and st["probes"] > 0:
                return {**st, "probes": st["probes"] - 1}
            return st

        await self.store.update(self.key(target), fn)

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every target's breaker state, for ``/health/providers``."""
        now = self.clock()
        out = {}
        for key, st in (await self.store.items("breaker:")).items():
            adm = self._admission(st, now)
            out[key.removeprefix("breaker:")] = {
                "state": adm.state,
                "trips": st["trips"],
                "opened_at": st["opened_at"],
                "until": st["until"],
                "recent_failures": sum(1 for e in st["events"] if not e[1]),
                "recent_requests": len(st["events"]),
            }
        return out
