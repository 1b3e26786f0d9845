"""``round-robin``: exact rotation; each request starts one target further along."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from interlock import hookimpl
from interlock.core.strategy import Strategy
from interlock.core.types import RequestContext, Route, Target


class RoundRobin(Strategy):
    name = "round-robin"

    def __init__(self, route: Route, options: dict[str, Any] | None = None) -> None:
        super().__init__(route, options)
        self._counter = itertools.count()  # next() is atomic under the GIL and on one loop

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        if not targets:
            return []
        i = next(self._counter) % len(targets)
        return [*targets[i:], *targets[:i]]


@hookimpl
def register_strategies(register: Callable[..., None]) -> None:
    register("round-robin", RoundRobin)
