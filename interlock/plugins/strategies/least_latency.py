"""``least-latency``: prefer the target that answers fastest, and keep measuring the others.

The algorithm (power of two choices over peak-EWMA x load, as in Finagle and
linkerd/tower's ``PeakEwma`` balancers):

1. **Latency estimate per target**: a peak-EWMA of response time (of time to first
   token for stream requests; the two are kept apart). A sample slower than the
   estimate replaces it at once (the *peak*), so a target that turns slow is avoided
   from its first slow answer; a faster sample pulls it down gradually (EWMA, weight
   ``alpha``). While a target gets no traffic its estimate **decays toward zero** with
   time constant ``decay`` seconds: that is the exploration. A target avoided for
   being slow looks attractive again after a while, gets one request, and is either
   back in rotation (it recovered) or jumps straight back to its slow estimate.
2. **Score** = estimate x (requests in flight + 1): a fast target that is already busy
   loses to an idle one that is almost as fast. A target never measured scores 0, the
   best, so it gets measured.
3. **Choice**: draw two distinct healthy targets at random and put the lower score
   first (ties broken at random). Two random candidates rather than the global best
   keep several gateway processes that see the same numbers from stampeding onto one
   target. With two targets this is simply the better of the two.
4. **Fallback order**: every other target follows, lowest score first.

Samples come from :meth:`observe` (the router calls it after every attempt) and are
folded into the shared store at the next ``order`` call, under ``pewma:lat:<target>``
and ``pewma:ttft:<target>`` (``[estimate_ms, unix_time]``), so several gateway
processes share one estimate. Until a target has one, the router's own EWMA
(:mod:`interlock.core.stats`) stands in. A failed attempt only ever raises the
estimate (a timeout is slow; a quick error is not evidence of speed).

Options (``strategy_options``): ``decay`` (seconds, default 10), ``alpha`` (0-1,
default 0.3), ``seed`` (for reproducible draws).
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from interlock import hookimpl
from interlock.core import stats
from interlock.core.strategy import Strategy
from interlock.core.types import RequestContext, Route, Target

DECAY = 10.0  # seconds; an idle target's estimate falls by a factor e every DECAY seconds
ALPHA = 0.3  # weight of a sample faster than the estimate
PENDING = 256  # observations kept between two order() calls (the newest win)


def _number(options: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ValueError(
            f"least-latency: strategy_options.{key} must be a number in ({low:g}, {high:g}], not {value!r}"
        )
    return float(value)


class LeastLatency(Strategy):
    name = "least-latency"

    def __init__(self, route: Route, options: dict[str, Any] | None = None) -> None:
        super().__init__(route, options)
        self.decay = _number(self.options, "decay", DECAY, 0.0, math.inf)
        self.alpha = _number(self.options, "alpha", ALPHA, 0.0, 1.0)
        self._random = random.Random(self.options.get("seed"))
        #: wall-clock seconds; shared across processes, so not a monotonic clock (tests replace it)
        self.clock: Callable[[], float] = time.time
        # observations not yet folded into the store: (target key, kind or None for both, ms, ok, when);
        # bounded, for targets that other routes keep busy while this one gets no request to flush them
        self._pending: deque[tuple[str, str | None, float, bool, float]] = deque(maxlen=PENDING)

    # -- feedback --------------------------------------------------------- #

    def observe(self, target: Target, *, ok: bool, latency_ms: float, ttft_ms: float | None = None) -> None:
        now = self.clock()
        if not ok:
            self._pending.append((target.key, None, latency_ms, False, now))
        elif ttft_ms is not None:
            self._pending.append((target.key, "ttft", ttft_ms, True, now))
        else:
            self._pending.append((target.key, "lat", latency_ms, True, now))

    async def _flush(self) -> None:
        pending = list(self._pending)
        self._pending.clear()
        for key, kind, sample, ok, when in pending:
            for k in (kind,) if kind else ("lat", "ttft"):
                await self.store.update(f"pewma:{k}:{key}", self._fold(sample, when, ok), announce=False)

    def _fold(self, sample: float, when: float, ok: bool) -> Callable[[Any], Any]:
        def fn(old: Any) -> Any:
            if old is None:
                return [sample, when]
            estimate = self._decayed(old, when)
            if sample >= estimate:  # the peak: slower than expected counts in full, at once
                return [sample, when]
            if not ok:  # a failure never makes a target look faster
                return [estimate, when]
            return [estimate + self.alpha * (sample - estimate), when]

        return fn

    def _decayed(self, entry: Any, now: float) -> float:
        value, at = float(entry[0]), float(entry[1])
        return value * math.exp(-max(0.0, now - at) / self.decay)

    # -- ordering --------------------------------------------------------- #

    async def estimate(self, target: Target, *, stream: bool, now: float | None = None) -> float | None:
        """The target's current latency estimate in ms, or None if it was never measured."""
        now = self.clock() if now is None else now
        kind, other = ("ttft", "lat") if stream else ("lat", "ttft")
        for k in (kind, other):
            entry = await self.store.peek(f"pewma:{k}:{target.key}")
            if entry is not None:
                return self._decayed(entry, now)
        return await stats.latency(self.store, target.key, stream=stream)

    async def score(self, target: Target, *, stream: bool, now: float | None = None) -> tuple[float, int]:
        """(estimate x (in flight + 1), in flight); an unmeasured target scores 0."""
        busy = max(0, await stats.inflight(self.store, target.key))
        estimate = await self.estimate(target, stream=stream, now=now)
        return (0.0 if estimate is None else estimate * (busy + 1)), busy

    async def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        await self._flush()
        if len(targets) < 2:
            return list(targets)
        now = self.clock()
        keys = []
        for t in targets:
            score, busy = await self.score(t, stream=request.stream, now=now)
            keys.append((score, busy, self._random.random()))  # ties: fewer in flight, then chance
        a, b = self._random.sample(range(len(targets)), 2)
        first = a if keys[a] <= keys[b] else b
        rest = sorted((i for i in range(len(targets)) if i != first), key=keys.__getitem__)
        return [targets[first], *(targets[i] for i in rest)]


@hookimpl
def register_strategies(register: Callable[..., None]) -> None:
    register("least-latency", LeastLatency)
