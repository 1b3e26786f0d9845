"""Per-target latency and load statistics, kept in the shared :class:`Store`.

The router records every attempt here; latency-aware strategies read it. Key
names are part of the store contract, so a shared store sees the same numbers
from every gateway process:

* ``lat:<target>``: EWMA of response latency in ms (non-stream attempts)
* ``ttft:<target>``: EWMA of time to first token in ms (stream attempts)
* ``ttfts:<target>``: the last :data:`SAMPLES` first-token times (for hedging percentiles)
* ``inflight:<target>``: attempts in flight now, as leases (one per attempt), so the
  attempts of a process that was killed stop counting after :data:`INFLIGHT_LEASE` seconds
"""

from __future__ import annotations

import os
from typing import Any

from interlock.core.store import Store

ALPHA = 0.3  # EWMA weight of the newest sample: recovers within a handful of requests
SAMPLES = 50
#: seconds an attempt counts as in flight at most (a killed process's attempts stop counting then)
INFLIGHT_LEASE = 900.0


def _ewma(alpha: float, sample: float) -> Any:
    def fn(old: Any) -> float:
        return sample if old is None else alpha * sample + (1 - alpha) * float(old)

    return fn


async def record(store: Store, target: str, *, latency_ms: float, ttft_ms: float | None, stream: bool) -> None:
    """Fold one attempt's timing into the target's averages."""
    if stream:
        sample = ttft_ms if ttft_ms is not None else latency_ms
        # (averages are read through peek, and a reader refreshes within [store] refresh: no announcement)
        await store.update(f"ttft:{target}", _ewma(ALPHA, sample), announce=False)
        await store.update(f"ttfts:{target}", lambda old: [*(old or [])[-(SAMPLES - 1) :], sample], announce=False)
    else:
        await store.update(f"lat:{target}", _ewma(ALPHA, latency_ms), announce=False)


async def latency(store: Store, target: str, *, stream: bool) -> float | None:
    """The target's EWMA latency in ms (TTFT for streams, falling back to the other kind)."""
    first, second = (f"ttft:{target}", f"lat:{target}") if stream else (f"lat:{target}", f"ttft:{target}")
    value = await store.peek(first)  # stale by at most [store] refresh: read on every routing decision
    if value is None:
        value = await store.peek(second)
    return None if value is None else float(value)


async def inflight(store: Store, target: str) -> int:
    """Attempts in flight on ``target`` now, in every process sharing the store."""
    return await store.leases(f"inflight:{target}")


async def enter(store: Store, target: str, attempt: str) -> None:
    """``attempt`` (unique among those in flight, e.g. :func:`attempt_id`) starts on ``target``."""
    await store.lease(f"inflight:{target}", attempt, None, INFLIGHT_LEASE)


async def leave(store: Store, target: str, attempt: str) -> None:
    await store.unlease(f"inflight:{target}", attempt)


def attempt_id(attempt: object) -> str:
    """An id for an attempt object that no other process and no other live attempt shares."""
    return f"{_PID}:{id(attempt):x}"


_PID = os.getpid()


async def ttft_percentile(store: Store, target: str, pct: float) -> float | None:
    """The ``pct`` percentile (0-100) of recent first-token times in ms, or None without data."""
    samples = sorted(await store.peek(f"ttfts:{target}") or [])
    if len(samples) < 5:  # too few to say what "slow" is
        return None
    index = min(len(samples) - 1, max(0, round(pct / 100 * (len(samples) - 1))))
    return float(samples[index])
