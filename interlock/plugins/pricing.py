"""Built-in cost accounting: the shipped price table plus the config's ``[prices]``.

Answers ``compute_cost`` last (``trylast``), so a third-party plugin that prices
differently (negotiated rates from a billing API, a markup) answers first; returning
``None`` from it falls through to this table. The table comes in as the hook's
``prices`` argument (the gateway's :class:`~interlock.accounting.pricing.PriceTable`, built
once per configuration, typed as the engine's :class:`~interlock.core.catalog.PriceBook`);
``None`` means the built-in data only.
"""

from __future__ import annotations

from decimal import Decimal

from interlock import hookimpl
from interlock.accounting.pricing import PriceTable
from interlock.core.catalog import PriceBook
from interlock.core.types import Usage


@hookimpl(trylast=True)
def compute_cost(
    usage: Usage, provider: str, provider_type: str, model: str, prices: PriceBook | None
) -> Decimal | None:
    table: PriceBook = prices if prices is not None else PriceTable.builtin()
    return table.cost(usage, provider_type, model, provider=provider)
