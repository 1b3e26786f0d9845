"""Per-target health: what ``GET /health/providers`` reports.

Counts and the last outcome per target (provider instance + model). The
routing engine's circuit breaker builds on this board; today it records and
reports, it does not take targets out of rotation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from interlock.core.types import FailureClass, Target


@dataclass(slots=True)
class TargetStats:
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_failure_class: str | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    last_latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_failure_class": self.last_failure_class,
            "last_failure_at": self.last_failure_at,
            "last_success_at": self.last_success_at,
            "last_latency_ms": None if self.last_latency_ms is None else round(self.last_latency_ms, 2),
            "state": "failing" if self.consecutive_failures else "healthy",
        }


class HealthBoard:
    """In-memory per-target statistics."""

    def __init__(self) -> None:
        self._stats: dict[str, TargetStats] = {}

    def _get(self, target: Target) -> TargetStats:
        stats = self._stats.get(target.key)
        if stats is None:
            stats = self._stats[target.key] = TargetStats()
        return stats

    def success(self, target: Target, latency_ms: float) -> None:
        s = self._get(target)
        s.requests += 1
        s.consecutive_failures = 0
        s.last_success_at = time.time()
        s.last_latency_ms = latency_ms

    def failure(self, target: Target, failure_class: FailureClass, latency_ms: float) -> None:
        s = self._get(target)
        s.requests += 1
        s.failures += 1
        s.consecutive_failures += 1
        s.last_failure_class = failure_class.value
        s.last_failure_at = time.time()
        s.last_latency_ms = latency_ms

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {key: stats.as_dict() for key, stats in sorted(self._stats.items())}
