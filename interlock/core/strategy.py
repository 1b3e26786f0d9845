"""What a strategy plugin implements: an ordering of a route's healthy targets.

The router falls back along the order a strategy returns, so a strategy only
decides *preference*; retries, cooldowns and fallback stay in the router.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar

from interlock.core.catalog import PriceBook
from interlock.core.store import Store
from interlock.core.types import RequestContext, Route, Target


class Strategy:
    """Base class for strategies; one instance per route that uses it."""

    name: ClassVar[str] = ""
    #: the shared state store, set by the router before the first ``order`` call
    store: Store
    #: the gateway's prices (the shipped table with the config's ``[prices]`` on top), set by the
    #: router with :attr:`store`; None until then (a strategy built outside a gateway)
    prices: PriceBook | None = None

    def __init__(self, route: Route, options: dict[str, Any] | None = None) -> None:
        self.route = route
        self.options = options or {}

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target] | Awaitable[list[Target]]:
        """Return the healthy ``targets`` in the order to try them (a coroutine may be returned).

        Strategies that need shared state (positions, latencies, in-flight
        counts) read it from :attr:`store` (see :mod:`interlock.core.stats`)
        and are ``async``; pure ones stay synchronous.
        """
        raise NotImplementedError

    def observe(self, target: Target, *, ok: bool, latency_ms: float, ttft_ms: float | None = None) -> None:
        """Feedback after each attempt; latency-aware strategies keep statistics here."""
