"""``lowest-cost``: the cheapest healthy target for this request first.

Each target is priced for an estimate of this request: the estimated prompt tokens
(:func:`interlock.core.estimate.estimate_prompt_tokens`) at its input price, plus the
request's ``max_completion_tokens`` (else ``max_tokens``, else ``output_tokens``,
default 500) at its output price. Targets are ordered by that cost, cheapest first;
equal costs keep config order, and targets without a known price go last, in config
order, so the fallback after the cheapest is the next cheapest.

Prices come from the gateway's price table (the built-in table with the config's
``[prices]`` on top, so ``[prices."ollama/*"]`` or a negotiated rate count here too),
which the router sets as the strategy's :attr:`~interlock.core.strategy.Strategy.prices`;
a strategy used outside a gateway prices from the built-in table.

Options (``strategy_options``): ``output_tokens`` (the output estimate when the
request sets no limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from interlock import hookimpl
from interlock.accounting.pricing import PriceTable
from interlock.core.estimate import estimate_prompt_tokens, requested_output_tokens
from interlock.core.strategy import Strategy
from interlock.core.types import RequestContext, Route, Target, Usage

OUTPUT_TOKENS = 500  # assumed output when the request sets no max_tokens


class LowestCost(Strategy):
    name = "lowest-cost"

    def __init__(self, route: Route, options: dict[str, Any] | None = None) -> None:
        super().__init__(route, options)
        output = self.options.get("output_tokens", OUTPUT_TOKENS)
        if not isinstance(output, int) or isinstance(output, bool) or output <= 0:
            raise ValueError(
                f"lowest-cost: strategy_options.output_tokens must be a positive whole number, not {output!r}"
            )
        self.output_tokens: int = output

    def usage_estimate(self, request: RequestContext) -> Usage:
        """The tokens this request is expected to use."""
        body = request.body
        output = requested_output_tokens(body) or self.output_tokens
        return Usage(prompt_tokens=estimate_prompt_tokens(body), completion_tokens=output)

    def costs(self, targets: Sequence[Target], request: RequestContext) -> list[Decimal | None]:
        """Each target's estimated cost for ``request`` in USD (None: no known price)."""
        prices = self.prices if self.prices is not None else PriceTable.builtin()
        usage = self.usage_estimate(request)
        return [prices.target_cost(usage, target.provider, target.model) for target in targets]

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        costs = self.costs(targets, request)
        priced = sorted((c, i) for i, c in enumerate(costs) if c is not None)
        unpriced = [i for i, c in enumerate(costs) if c is None]
        return [targets[i] for i in (*(i for _, i in priced), *unpriced)]


@hookimpl
def register_strategies(register: Callable[..., None]) -> None:
    register("lowest-cost", LowestCost)
