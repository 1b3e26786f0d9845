"""``round-robin``: exact rotation; each request starts one target further along.

The position lives in the shared store (``rr:<route>``), so several gateway
processes rotate together instead of each starting from the first target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from interlock import hookimpl
from interlock.core.strategy import Strategy
from interlock.core.types import RequestContext, Target


class RoundRobin(Strategy):
    name = "round-robin"

    async def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        if not targets:
            return []
        i = (await self.store.incr(f"rr:{self.route.name}") - 1) % len(targets)
        return [*targets[i:], *targets[:i]]


@hookimpl
def register_strategies(register: Callable[..., None]) -> None:
    register("round-robin", RoundRobin)
