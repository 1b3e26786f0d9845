"""``least-busy``: the target with the fewest attempts in flight first.

In-flight counts come from the shared store (``inflight:<target>``, kept by the
router: an attempt counts from its start until its response, or for a stream until
the stream ends), so several gateway processes balance together. Ties are broken at
random, not by config order, so idle targets share the traffic instead of the first
one taking all of it. The remaining targets follow in the same order for fallback.

Options (``strategy_options``): ``seed`` (for reproducible tie-breaks).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from interlock import hookimpl
from interlock.core import stats
from interlock.core.strategy import Strategy
from interlock.core.types import RequestContext, Route, Target


class LeastBusy(Strategy):
    name = "least-busy"

    def __init__(self, route: Route, options: dict[str, Any] | None = None) -> None:
        super().__init__(route, options)
        self._random = random.Random(self.options.get("seed"))

    async def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        keyed = []
        for i, target in enumerate(targets):
            busy = max(0, await stats.inflight(self.store, target.key))
            keyed.append((busy, self._random.random(), i))
        return [targets[i] for _, _, i in sorted(keyed)]


@hookimpl
def register_strategies(register: Callable[..., None]) -> None:
    register("least-busy", LeastBusy)
