#!/usr/bin/env python3
"""How long a spend spike takes to become an anomaly alert with the default ``[anomaly]`` settings.

    .venv/bin/python bench/anomaly_delay.py      # a second or two; prints a Markdown table

Simulated time, so the figures are exact and the same on every machine: requests every
5 seconds, the detector checked when the gateway checks it (``next_check()`` after each
check: a second after every bucket boundary), and a spike that starts at each second of a
minute in turn (60 onsets per row). The delay is from the spike's first request to the check
that raises its alert. docs/anomalies.md quotes the output.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
from decimal import Decimal

from interlock.accounting.anomaly import AnomalyDetector, AnomalySettings
from interlock.core.store import MemoryStore

T0 = 1_700_006_400.0  # a minute boundary
STEP = 5  # seconds between requests


async def delay(onset_after: float, ordinary: Decimal, spike: Decimal, newcomer: bool, seed: int) -> float | None:
    """Seconds from onset to the spike scope's first alert (None: never within 10 minutes)."""
    clock = [T0]
    settings = AnomalySettings.parse({}, [])  # an [anomaly] table with no keys: the defaults, switched on
    det = AnomalyDetector(settings, MemoryStore(), lambda alert: None, lambda: clock[0])
    rng = random.Random(seed)
    onset = T0 + onset_after
    scope = "team:new" if newcomer else "team:app"
    next_check = T0 + det.next_check()
    t = T0
    while t < onset + 600:
        while next_check <= t:
            clock[0] = next_check
            if any(a.scope == scope for a in await det.tick()):
                return next_check - onset
            next_check = clock[0] + det.next_check()
        clock[0] = t
        # ordinary traffic from team:app, +-50% request to request
        await det.add(["global", "team:app"], ordinary * STEP * Decimal(rng.randint(50, 150)) / 100)
        if t >= onset:
            await det.add(["global", scope], spike * STEP)
        t += STEP
    return None


async def row(label: str, ordinary: str, spike_per_minute: str, newcomer: bool, warm_minutes: int) -> str:
    per_second = Decimal(spike_per_minute) / 60
    delays = [await delay(warm_minutes * 60 + s, Decimal(ordinary) / 60, per_second, newcomer, s) for s in range(60)]
    got = [d for d in delays if d is not None]
    missed = len(delays) - len(got)
    return (f"| {label} | ${ordinary}/min | ${spike_per_minute}/min | {min(got):.0f} s | {statistics.median(got):.1f} s"
            f" | {max(got):.0f} s | {missed} |")


async def main() -> None:
    logging.disable(logging.WARNING)  # every alert is also a log line
    print("| spike | ordinary spend | spike spend | fastest | median | slowest | missed (of 60) |")
    print("|---|---|---|---|---|---|---|")
    cases: tuple[tuple[str, str, str, bool, int], ...] = (
        ("an established team, 125x", "0.24", "30", False, 40),
        ("an established team, 25x", "0.24", "6", False, 40),
        ("an established team, 12x", "0.24", "3", False, 40),
        ("a new team, in its first minute", "0.24", "12", True, 40),
        ("a new team, on a new deployment", "0.00", "12", True, 0),
    )
    for case in cases:
        print(await row(*case))


if __name__ == "__main__":
    asyncio.run(main())
