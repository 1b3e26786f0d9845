"""What the engine may ask about models: their prices and their context windows.

The engine never imports the accounting layer. It asks these two questions through
the protocols below, and the assembly (:class:`~interlock.core.gateway.Gateway`)
hands it the objects that answer them: today the gateway's
:class:`~interlock.accounting.pricing.PriceTable` (the shipped table with the config's
``[prices]`` on top) answers both, rebuilt on every reload.

* :class:`Price` is one model's rates, USD per million tokens.
* :class:`PriceBook` is what the ``compute_cost`` hook receives as ``prices`` and what
  a :class:`~interlock.core.strategy.Strategy` finds in its ``prices`` attribute
  (``lowest-cost`` orders targets by it). Money is a ``Decimal`` in US dollars; None
  means the model has no known price.
* :class:`ModelMetadata` is how the router learns a target's context window when the
  route's config does not set one (after a context-length failure it falls back only
  to targets with a larger window).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from interlock.core.types import Usage


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices: token rates in USD per million tokens, fees in USD each.

    ``cached_input`` (cache reads), ``cache_write`` and ``reasoning`` are None when they
    do not differ from the base price (input, input and output respectively);
    ``cache_write_1h`` (hour-long cache writes) falls back to ``cache_write``; the audio
    and image rates fall back to ``input`` / ``output``. ``per_request`` is charged once
    per upstream response and ``web_search`` per search the upstream ran.

    ``tiers`` holds long-context prices, ascending: ``(threshold, price)`` applies when a
    response's prompt (cache reads and writes included) is larger than ``threshold``
    tokens, and then replaces every rate (a tier's own ``tiers`` is empty).

    ``source`` says where the price came from: ``"built-in"`` (the data set shipped with
    interlock), ``"refreshed"`` (a data file fetched by ``interlock prices --update``),
    ``"config"`` (``[prices]``) or ``"self-hosted"``; ``matched`` is the data set's model
    id the name matched, when it came from the data set.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    context_window: int | None = None
    checked: datetime.date | None = None  # when a config or data entry says it was last verified
    source: str = "built-in"
    cache_write_1h: Decimal | None = None
    input_audio: Decimal | None = None
    input_image: Decimal | None = None
    output_audio: Decimal | None = None
    per_request: Decimal | None = None
    web_search: Decimal | None = None
    tiers: tuple[tuple[int, Price], ...] = ()
    matched: str | None = None


class PriceBook(Protocol):
    """Prices by provider type, model and provider instance."""

    def lookup(self, provider_type: str, model: str, provider: str | None = None) -> Price | None:
        """The price of ``model`` served by a ``provider_type`` instance named ``provider``, or None."""
        ...

    def cost(self, usage: Usage, provider_type: str, model: str, provider: str | None = None) -> Decimal | None:
        """What ``usage`` of ``model`` costs on a ``provider_type`` instance named ``provider``, or None."""
        ...

    def target_cost(self, usage: Usage, provider: str, model: str) -> Decimal | None:
        """The same for a target: ``model`` on provider *instance* ``provider`` (its type looked up)."""
        ...


class ModelMetadata(Protocol):
    """Facts about models that routing needs."""

    def context_window(self, provider_type: str, model: str, provider: str | None = None) -> int | None:
        """The model's context window in tokens, or None when unknown."""
        ...


class NoMetadata:
    """Knows nothing: every context window is unknown (a router built without a catalog)."""

    def context_window(self, provider_type: str, model: str, provider: str | None = None) -> int | None:
        return None
