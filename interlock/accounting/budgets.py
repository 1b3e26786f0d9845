"""Budgets per API key, team, tag or globally, daily and monthly, kept in the shared store.

Config::

    [[budgets]]
    scope = "team:search"      # "key:<api key id>", "team:<team>", "tag:<tag>" or "global"
    daily_usd = 50             # either or both of daily_usd / monthly_usd
    monthly_usd = 1000
    soft = 0.8                 # fraction of a limit that raises a budget_soft alert (0 disables)
    action = "reject"          # "reject": a request that could exceed the limit gets a 429;
                               # "alert": only a budget_hard alert when the limit is reached
    default_max_tokens = 4096  # output tokens reserved for a request without max_tokens

How a request is counted. Every counter lives in the :class:`~interlock.core.store.Store`
as ``budget:<scope>:<period>`` (UTC day ``YYYY-MM-DD`` or month ``YYYY-MM``), an integer
of micro-dollars changed only with ``incr``, so several gateway processes sharing a
store agree. Before any upstream call, once the request is planned, the lifecycle
prices the request's worst case (:func:`interlock.core.estimate.worst_case_usage`: the
estimated prompt tokens plus ``max_completion_tokens``/``max_tokens``, or
``default_max_tokens``, priced through ``compute_cost`` at the first target the plan
will try) and :meth:`Budgets.reserve` adds it to every counter that applies (the key's, the team's, each tag's, the
global one). If a ``reject`` budget would then go over its limit (or has already
reached it) every increment is taken back and the client gets a 429
(``rate_limit_error``, code ``budget_exceeded``) naming the budget; no upstream call is
made. After the request (success or failure; streams when they end)
:meth:`Budgets.reconcile` adds ``actual cost - reserved`` to the same counters, so each
ends at the real spend (rounded up to the micro-dollar per request). A request is
counted in the period it started in.

Why concurrent requests cannot overshoot much: a reservation is visible to every
other request the moment it is made, so N concurrent streams are admitted only while
the sum of their worst cases fits under the limit. The spend can exceed a limit only
by the in-flight reservations' estimation error: the prompt estimate is a
character count (roughly 4 characters per token), a fallback may land on a pricier
target than the first, and a model without a known price reserves 0 (logged once per
model). Conversely, while requests are in flight the counters are *higher* than
the spend so far (by their unused reservations), which can reject a request a little
early, never late.

Alerts (through the ``alert`` hook) are raised once per scope, period and kind, deduplicated
through the store: ``budget_soft`` when a counter reaches ``soft × limit``,
``budget_hard`` when it reaches the limit (an ``alert`` budget) or when a ``reject``
budget first rejects a request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from interlock.core.errors import GatewayError
from interlock.core.store import Store
from interlock.core.types import Alert, RequestContext

log = logging.getLogger("interlock.budgets")

MICRO = Decimal(1_000_000)
DEFAULT_MAX_TOKENS = 4096
_DAY_TTL = 3 * 86400.0  # counters outlive their period a little, for inspection
_MONTH_TTL = 35 * 86400.0
_ALERT_TTL = 35 * 86400.0
_KEYS = {"scope", "daily_usd", "monthly_usd", "soft", "action", "default_max_tokens"}


@dataclass(frozen=True, slots=True)
class Budget:
    """One ``[[budgets]]`` entry."""

    scope: str
    daily_usd: Decimal | None = None
    monthly_usd: Decimal | None = None
    soft: float = 0.8
    action: str = "reject"  # or "alert"
    default_max_tokens: int = DEFAULT_MAX_TOKENS

    def limits(self) -> list[tuple[str, Decimal]]:
        out = []
        if self.daily_usd is not None:
            out.append(("daily", self.daily_usd))
        if self.monthly_usd is not None:
            out.append(("monthly", self.monthly_usd))
        return out


def parse_budgets(value: Any, problems: list[tuple[str, str]]) -> list[Budget]:
    """Validate the ``[[budgets]]`` array of tables."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(("budgets", "must be an array of tables ([[budgets]])"))
        return []
    out: list[Budget] = []
    seen: set[str] = set()
    for i, table in enumerate(value):
        path = f"budgets[{i}]"
        if not isinstance(table, dict):
            problems.append((path, "must be a table"))
            continue
        for key in table:
            if key not in _KEYS:
                problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(sorted(_KEYS))})"))
        scope = table.get("scope")
        if not isinstance(scope, str) or not (
            scope == "global" or (scope.partition(":")[0] in ("key", "team", "tag") and scope.partition(":")[2])
        ):
            problems.append((f"{path}.scope", 'must be "global", "key:<id>", "team:<name>" or "tag:<name>"'))
            continue
        if scope in seen:
            problems.append((f"{path}.scope", f"{scope!r} has more than one [[budgets]] entry"))
        seen.add(scope)
        limits: dict[str, Decimal | None] = {}
        for key in ("daily_usd", "monthly_usd"):
            raw = table.get(key)
            if raw is None:
                limits[key] = None
            elif isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
                problems.append((f"{path}.{key}", f"must be a positive number of dollars, not {raw!r}"))
                limits[key] = None
            else:
                limits[key] = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
        if "daily_usd" not in table and "monthly_usd" not in table:
            problems.append((path, "needs daily_usd, monthly_usd or both"))
        soft = table.get("soft", 0.8)
        if isinstance(soft, bool) or not isinstance(soft, int | float) or not 0 <= soft <= 1:
            problems.append((f"{path}.soft", f"must be a fraction between 0 and 1, not {soft!r}"))
            soft = 0.8
        action = table.get("action", "reject")
        if action not in ("reject", "alert"):
            problems.append((f"{path}.action", f'must be "reject" or "alert", not {action!r}'))
            action = "reject"
        max_tokens = table.get("default_max_tokens", DEFAULT_MAX_TOKENS)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            problems.append((f"{path}.default_max_tokens", f"must be a non-negative integer, not {max_tokens!r}"))
            max_tokens = DEFAULT_MAX_TOKENS
        out.append(Budget(scope, limits["daily_usd"], limits["monthly_usd"], float(soft), action, max_tokens))
    return out


def to_micros(usd: Decimal) -> int:
    """Dollars as integer micro-dollars, rounded up (a reservation never under-counts)."""
    return int((usd * MICRO).to_integral_value(rounding=ROUND_CEILING))


def _usd(micros: int) -> str:
    return f"${Decimal(micros) / MICRO:,.2f}" if micros % 10_000 == 0 else f"${Decimal(micros) / MICRO:,.6f}"


@dataclass(slots=True)
class Reservation:
    """What :meth:`Budgets.reserve` added to which counters; :meth:`Budgets.reconcile` settles it once."""

    micros: int
    counters: list[tuple[Budget, str, str, Decimal]] = field(default_factory=list)  # (budget, period kind, key, limit)
    note: str | None = None  # why the reservation is 0 (unknown price)
    settled: bool = False


class Budgets:
    """The configured budgets over a shared store; one per gateway, rebuilt on reload."""

    def __init__(
        self,
        budgets: list[Budget],
        store: Store,
        emit: Callable[[Alert], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.budgets = {b.scope: b for b in budgets}
        self.store = store
        self.emit = emit
        self.clock = clock
        self._unpriced: set[str] = set()

    def applicable(self, ctx: RequestContext) -> list[Budget]:
        if not self.budgets:
            return []
        scopes = [f"key:{ctx.api_key_id}" if ctx.api_key_id else None, f"team:{ctx.team}" if ctx.team else None]
        scopes += [f"tag:{t}" for t in ctx.tags]
        scopes.append("global")
        seen: set[str] = set()
        out = []
        for scope in scopes:
            if scope is not None and scope not in seen and scope in self.budgets:
                seen.add(scope)
                out.append(self.budgets[scope])
        return out

    def periods(self, now: float | None = None) -> dict[str, str]:
        dt = datetime.fromtimestamp(self.clock() if now is None else now, UTC)
        return {"daily": dt.strftime("%Y-%m-%d"), "monthly": dt.strftime("%Y-%m")}

    def output_allowance(self, ctx: RequestContext) -> int | None:
        """The output tokens to reserve for a request that sets no limit; None when no budget applies.

        The request lifecycle asks this after planning, and only prices a worst case
        (the plan's first pick at :func:`interlock.core.estimate.worst_case_usage`)
        when some budget applies.
        """
        budgets = self.applicable(ctx)
        return max(b.default_max_tokens for b in budgets) if budgets else None

    # -- reserve ---------------------------------------------------------- #

    async def reserve(
        self, ctx: RequestContext, worst_case: Decimal | None, unpriced: str | None = None
    ) -> Reservation | None:
        """Reserve ``worst_case`` dollars on every budget that applies; 429 when one would be exceeded.

        ``worst_case`` is what the request may cost at most (None: unknown, so 0 is
        reserved and only the actual cost counts); ``unpriced`` names the target
        without a price that made it unknown, logged once per target. Returns None
        when no budget applies (nothing to reconcile).
        """
        budgets = self.applicable(ctx)
        if not budgets:
            return None
        note = None
        if worst_case is None and unpriced is not None:
            note = f"{unpriced} has no price"
            if unpriced not in self._unpriced:
                self._unpriced.add(unpriced)
                log.warning("budgets: %s has no price; its requests reserve $0 and count only their actual cost", unpriced)
        held = Reservation(to_micros(worst_case) if worst_case is not None else 0, note=note)
        periods = self.periods()
        for budget in budgets:
            for kind, limit in budget.limits():
                period = periods[kind]
                key = f"budget:{budget.scope}:{period}"
                value = await self._incr(key, held.micros, kind)
                held.counters.append((budget, kind, key, limit))
                limit_micros = to_micros(limit)
                before = value - held.micros
                if budget.action == "reject" and (value > limit_micros or before >= limit_micros):
                    await self.release(held)
                    message = (
                        f"budget exceeded: the {kind} budget of {budget.scope} for {period} is {_usd(limit_micros)}; "
                        f"{_usd(before)} is spent or reserved and this request may cost up to {_usd(held.micros)}"
                    )
                    await self._alert_once(
                        "budget_hard", budget, kind, period, before, limit,
                        f"{budget.scope} reached its {kind} budget of {_usd(limit_micros)} for {period}; requests are rejected",
                    )
                    raise GatewayError(
                        429, message, type="rate_limit_error", code="budget_exceeded",
                        headers={"x-should-retry": "false", "x-interlock-budget": f"{budget.scope} {kind} {period}"},
                    )
        return held

    async def release(self, held: Reservation) -> None:
        """Take a reservation back entirely (a rejected request)."""
        if held.settled:
            return
        held.settled = True
        if held.micros:
            for _, _, key, _ in held.counters:
                await self.store.incr(key, -held.micros)

    async def reconcile(self, held: Reservation | None, actual: Decimal | None) -> None:
        """Replace the reservation with the actual cost (None: nothing was spent that is known)."""
        if held is None or held.settled:
            return
        held.settled = True
        delta = (to_micros(actual) if actual is not None else 0) - held.micros
        for budget, kind, key, limit in held.counters:
            value = await self.store.incr(key, delta) if delta else await self.store.get(key) or 0
            period = key.rsplit(":", 1)[1]
            limit_micros = to_micros(limit)
            if value >= limit_micros:
                await self._alert_once(
                    "budget_hard", budget, kind, period, value, limit,
                    f"{budget.scope} reached its {kind} budget of {_usd(limit_micros)} for {period} "
                    f"({_usd(value)} spent)" + ("; further requests are rejected" if budget.action == "reject" else ""),
                )
            if budget.soft and value >= budget.soft * limit_micros:
                await self._alert_once(
                    "budget_soft", budget, kind, period, value, limit,
                    f"{budget.scope} has spent {_usd(value)} of its {kind} budget of {_usd(limit_micros)} for {period} "
                    f"(soft threshold {budget.soft:.0%})",
                )

    async def spent(self, scope: str, kind: str = "daily", now: float | None = None) -> Decimal:
        """The counter of ``scope`` for the current period, in dollars (spend plus in-flight reservations)."""
        value = await self.store.get(f"budget:{scope}:{self.periods(now)[kind]}") or 0
        return Decimal(int(value)) / MICRO

    # -- helpers ---------------------------------------------------------- #

    async def _incr(self, key: str, micros: int, kind: str) -> int:
        value = await self.store.incr(key, micros)
        if value == micros:  # created just now: give it an expiry (atomically, keeping the value)
            await self.store.update(key, lambda v: v if v is not None else 0, ttl=_DAY_TTL if kind == "daily" else _MONTH_TTL)
        return value

    async def _alert_once(
        self, kind: str, budget: Budget, period_kind: str, period: str, value: int, limit: Decimal, message: str
    ) -> None:
        n = await self.store.update(f"budget_alert:{kind}:{budget.scope}:{period}", lambda v: (v or 0) + 1, ttl=_ALERT_TTL)
        if n != 1:
            return
        self.emit(
            Alert(
                kind=kind, scope=budget.scope, message=message, value_usd=Decimal(value) / MICRO, threshold_usd=limit,
                details={"period": period_kind, "period_start": period, "soft": budget.soft, "action": budget.action},
                ts=self.clock(),
            )
        )

