"""Budgets and the anomaly detector as the request lifecycle sees them.

The lifecycle (:mod:`interlock.core.lifecycle`) knows spend guards only through its
:class:`~interlock.core.lifecycle.Guard` protocol: before a request, the output to
assume and a reservation of its worst case; after it, settling. This class is that
protocol's implementation over :class:`~interlock.accounting.budgets.Budgets` and
:class:`~interlock.accounting.anomaly.AnomalyDetector`; the gateway builds one per
configuration, next to them.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from interlock.accounting.anomaly import AnomalyDetector
from interlock.accounting.budgets import Budgets, Reservation
from interlock.core.types import Decision, RequestContext

log = logging.getLogger("interlock.budgets")


class SpendGuard:
    """Budgets before a request, budgets and anomaly bookkeeping after it."""

    def __init__(self, budgets: Budgets, anomaly: AnomalyDetector) -> None:
        self.budgets = budgets
        self.anomaly = anomaly

    def output_allowance(self, ctx: RequestContext) -> int | None:
        return self.budgets.output_allowance(ctx)

    async def reserve(self, ctx: RequestContext, worst_case: Decimal | None, unpriced: str | None) -> Reservation | None:
        return await self.budgets.reserve(ctx, worst_case, unpriced)

    async def settle(self, decision: Decision, held: Reservation | None) -> None:
        """Reconcile the reservation with the actual cost and feed the anomaly detector; never raises."""
        try:
            await self.budgets.reconcile(held, decision.cost_usd)
            await self.anomaly.observe(decision)
        except Exception:  # the store failing must not fail a request that already succeeded
            log.exception("budgets/anomaly bookkeeping failed for request %s", decision.request_id)
