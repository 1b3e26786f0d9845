"""``weighted``: a random order drawn by weight, so traffic splits in proportion.

The first target is chosen with probability weight / total; the rest follow
in a weighted-random order too, so fallback also respects the weights
(Efraimidis-Spirakis sampling without replacement). Zero-weight targets come
last: they only take traffic as fallbacks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from interlock import hookimpl
from interlock.core.strategy import Strategy
from interlock.core.types import RequestContext, Route, Target


class Weighted(Strategy):
    name = "weighted"

    def __init__(self, route: Route, options: dict[str, Any] | None = None) -> None:
        super().__init__(route, options)
        self._random = random.Random(self.options.get("seed"))

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        rnd = self._random.random

        def key(t: Target) -> float:
            # u ** (1/w): larger is earlier; w == 0 sorts after every positive weight
            return rnd() ** (1.0 / t.weight) if t.weight > 0 else -1.0

        return sorted(targets, key=key, reverse=True)


@hookimpl
def register_strategies(register: Callable[..., None]) -> None:
    register("weighted", Weighted)
