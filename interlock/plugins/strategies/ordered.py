"""``ordered``: the configured order is the preference order (priority / fallback chain)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from interlock import hookimpl
from interlock.core.strategy import Strategy
from interlock.core.types import RequestContext, Target


class Ordered(Strategy):
    name = "ordered"

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        return list(targets)


@hookimpl
def register_strategies(register: Callable[..., None]) -> None:
    register("ordered", Ordered)
