"""What a strategy plugin implements: an ordering of a route's healthy targets.

The router falls back along the order a strategy returns, so a strategy only
decides *preference*; retries, cooldowns and fallback stay in the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from interlock.core.types import RequestContext, Route, Target


class Strategy:
    """Base class for strategies; one instance per route that uses it."""

    name: ClassVar[str] = ""

    def __init__(self, route: Route, options: dict[str, Any] | None = None) -> None:
        self.route = route
        self.options = options or {}

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        """Return ``targets`` in the order they should be tried for this request."""
        raise NotImplementedError

    def observe(self, target: Target, *, ok: bool, latency_ms: float, ttft_ms: float | None = None) -> None:
        """Feedback after each attempt; latency-aware strategies keep statistics here."""
