"""Budgets per API key, team, tag or globally, daily and monthly, kept in the shared store.

Config::

    [[budgets]]
    scope = "team:search"      # "key:<api key id>", "team:<team>", "user:<user>", "tag:<tag>" or "global"
    daily_usd = 50             # either or both of daily_usd / monthly_usd
    monthly_usd = 1000
    soft = 0.8                 # fraction of a limit that raises a budget_soft alert (0 disables)
    action = "reject"          # "reject": a request that could exceed the limit gets a 429;
                               # "alert": only a budget_hard alert when the limit is reached
    default_max_tokens = 4096  # output tokens reserved for a request without max_tokens
    allow_unpriced = false     # true: a model without a price is served, reserving $0 (counted
                               # at its actual cost, which is $0 while it has no price)

How a request is counted. Every counter lives in the :class:`~interlock.core.store.Store`
as ``budget:<scope>:<period>`` (UTC day ``YYYY-MM-DD`` or month ``YYYY-MM``), an integer
of micro-dollars changed only by the store's atomic ``reserve`` and ``add``, so several
gateway processes sharing a store agree. Before any upstream call, once the request is planned, the lifecycle
prices the request's worst case (:func:`interlock.core.estimate.worst_case_usage`: the
estimated prompt tokens plus ``max_completion_tokens``/``max_tokens``, or
``default_max_tokens``, priced through ``compute_cost`` at the first target the plan
will try) and :meth:`Budgets.reserve` adds it to every counter that applies (the key's, the team's,
the user's, each tag's, the global one) in one all-or-nothing store operation. If a
``reject`` budget would go over its limit (or has already reached it) no counter
changes and the client gets a 429
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
target than the first, and a model without a known price reserves 0 where a budget
allows it (``allow_unpriced``; logged once per model). Without that opt-out, a request
whose first target has no price is refused under a ``reject`` budget (403,
``model_unpriced``, naming the model and how to price it): its cost could not be counted,
so the budget could not hold. Conversely, while requests are in flight the counters are *higher* than
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
from typing import Any, Protocol

from interlock.core.errors import GatewayError
from interlock.core.store import Store, StoreUnavailable
from interlock.core.types import Alert, RequestContext

log = logging.getLogger("interlock.budgets")

MICRO = Decimal(1_000_000)
DEFAULT_MAX_TOKENS = 4096
_DAY_TTL = 3 * 86400.0  # counters outlive their period a little, for inspection
_MONTH_TTL = 35 * 86400.0
_ALERT_TTL = 35 * 86400.0
SEED_RETRY = 30.0  # seconds before a failed ledger read for seeding is tried again
_KEYS = {"scope", "daily_usd", "monthly_usd", "soft", "action", "default_max_tokens", "allow_unpriced"}


@dataclass(frozen=True, slots=True)
class Budget:
    """One ``[[budgets]]`` entry."""

    scope: str
    daily_usd: Decimal | None = None
    monthly_usd: Decimal | None = None
    soft: float = 0.8
    action: str = "reject"  # or "alert"
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    allow_unpriced: bool = False  # serve models without a price (reserving $0) instead of refusing them

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
            scope == "global" or (scope.partition(":")[0] in ("key", "team", "user", "tag") and scope.partition(":")[2])
        ):
            problems.append((f"{path}.scope", 'must be "global", "key:<id>", "team:<name>", "user:<name>" or "tag:<name>"'))
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
        allow_unpriced = table.get("allow_unpriced", False)
        if not isinstance(allow_unpriced, bool):
            problems.append((f"{path}.allow_unpriced", f"must be true or false, not {allow_unpriced!r}"))
            allow_unpriced = False
        out.append(Budget(scope, limits["daily_usd"], limits["monthly_usd"], float(soft), action, max_tokens,
                          allow_unpriced))
    return out


class SpendHistory(Protocol):
    """Where spend already made is read from when a counter has to be seeded (the ledger)."""

    async def spent(self, scope: str, period: str, start: datetime, until: datetime) -> Decimal:
        """``scope``'s spend on requests that arrived in ``[start, until)`` after the last reset of ``period``."""
        ...


def store_unavailable(what: str, exc: BaseException) -> GatewayError:
    """The 503 a request gets when a budget or rate-limit decision needs the shared store and it is down."""
    return GatewayError(503, f"the {what} decision for this request needs the shared store, which is unreachable "
                        f"([store] on_error = \"reject\"); retry shortly", type="server_error", code="store_unavailable",
                        headers={"Retry-After": "1"})


def _period_start(kind: str, period: str) -> datetime:
    """The UTC start of a ``YYYY-MM-DD`` (daily) or ``YYYY-MM`` (monthly) period."""
    fmt = "%Y-%m-%d" if kind == "daily" else "%Y-%m"
    return datetime.strptime(period, fmt).replace(tzinfo=UTC)


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
        history: SpendHistory | None = None,
    ) -> None:
        self.budgets = {b.scope: b for b in budgets}
        self.store = store
        self.emit = emit
        self.clock = clock
        self.history = history  # the ledger's spend, to seed counters a store forgot (None: no seeding)
        self._unpriced: set[str] = set()
        self._seeded: set[str] = set()  # counters this process has seeded (or found seeded)
        self._seed_retry: dict[str, float] = {}  # counter -> when to try the ledger again

    def applicable(self, ctx: RequestContext) -> list[Budget]:
        if not self.budgets:
            return []
        scopes = [f"key:{ctx.api_key_id}" if ctx.api_key_id else None, f"team:{ctx.team}" if ctx.team else None,
                  f"user:{ctx.user}" if ctx.user else None]
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
        without a price that made it unknown: refused (403 ``model_unpriced``) when a
        ``reject`` budget applies that does not set ``allow_unpriced``, else logged once
        per target. Returns None
        when no budget applies (nothing to reconcile). Every counter is changed in one
        atomic store operation: all of them take the reservation, or none does.
        """
        budgets = self.applicable(ctx)
        if not budgets:
            return None
        note = None
        if worst_case is None and unpriced is not None:
            if strict := [b.scope for b in budgets if b.action == "reject" and not b.allow_unpriced]:
                raise GatewayError(
                    403, f"{unpriced} has no price, so the budget of {', '.join(strict)} cannot count what this "
                    f"request costs; price it ([prices.\"{unpriced}\"] input = ..., output = ..., in USD per "
                    "million tokens) or set allow_unpriced = true on the budget",
                    type="permission_error", code="model_unpriced", headers={"x-should-retry": "false"},
                )
            note = f"{unpriced} has no price"
            if unpriced not in self._unpriced:
                self._unpriced.add(unpriced)
                log.warning("budgets: %s has no price; its requests reserve $0 and count only their actual cost", unpriced)
        held = Reservation(to_micros(worst_case) if worst_case is not None else 0, note=note)
        periods = self.periods()
        counters = [(b, kind, f"budget:{b.scope}:{periods[kind]}", limit) for b in budgets for kind, limit in b.limits()]
        for budget, kind, key, _ in counters:
            if key not in self._seeded:
                await self._seed(budget.scope, kind, periods[kind])
        limits = [to_micros(limit) if b.action == "reject" else None for b, _, _, limit in counters]
        try:
            refused, values = await self.store.reserve([c[2] for c in counters], limits, held.micros, ttl=_MONTH_TTL)
        except StoreUnavailable as exc:
            raise store_unavailable("budget", exc) from None
        if refused is None:
            held.counters = counters
            return held
        budget, kind, _, limit = counters[refused]
        period, before, limit_micros = periods[kind], values[refused], to_micros(limit)
        message = (
            f"budget exceeded: the {kind} budget of {budget.scope} for {period} is {_usd(limit_micros)}; "
            f"{_usd(before)} is spent or reserved and this request may cost up to {_usd(held.micros)}"
        )
        if before >= limit_micros:
            what = (f"{budget.scope} reached its {kind} budget of {_usd(limit_micros)} for {period} "
                    f"({_usd(before)} spent or reserved); requests are rejected")
        else:  # not reached: this request's worst case would not fit (the first one may find $0 spent)
            what = (f"{budget.scope} refused a request under its {kind} budget of {_usd(limit_micros)} for {period}: "
                    f"{_usd(before)} is spent or reserved and the request may cost up to {_usd(held.micros)}")
        await self._alert_once("budget_hard", budget, kind, period, before, limit, what)
        raise GatewayError(
            429, message, type="rate_limit_error", code="budget_exceeded",
            headers={"x-should-retry": "false", "x-interlock-budget": f"{budget.scope} {kind} {period}"},
        )

    async def release(self, held: Reservation) -> None:
        """Take a reservation back entirely (a request that never reached an upstream)."""
        if held.settled:
            return
        held.settled = True
        if held.micros and held.counters:
            await self.store.add([key for _, _, key, _ in held.counters], -held.micros)

    async def reconcile(self, held: Reservation | None, actual: Decimal | None) -> None:
        """Replace the reservation with the actual cost (None: nothing was spent that is known)."""
        if held is None or held.settled:
            return
        held.settled = True
        if not held.counters:
            return
        delta = (to_micros(actual) if actual is not None else 0) - held.micros
        values = await self.store.add([key for _, _, key, _ in held.counters], delta)
        for (budget, kind, key, limit), value in zip(held.counters, values, strict=True):
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

    async def status(self) -> list[dict[str, Any]]:
        """Every configured budget's counters for the current periods (``GET /-/budgets``)."""
        periods = self.periods()
        out = []
        for budget in self.budgets.values():
            for kind, limit in budget.limits():
                key = f"budget:{budget.scope}:{periods[kind]}"
                if key not in self._seeded:
                    await self._seed(budget.scope, kind, periods[kind])
                value = int(await self.store.get(key) or 0)
                out.append({"scope": budget.scope, "period": kind, "period_start": periods[kind],
                            "limit_usd": str(limit), "counted_usd": str(Decimal(value) / MICRO),
                            "action": budget.action})
        return out

    # -- restarts and resets ------------------------------------------------ #

    def forget_seeds(self) -> None:
        """Seed counters again before their next use (the shared store came back, maybe empty)."""
        self._seeded.clear()

    async def _seed(self, scope: str, kind: str, period: str) -> None:
        """Give a counter the spend the ledger already holds for its period, exactly once.

        Counters live in the store; a store that forgot them (a restarted in-memory
        store, an emptied Redis) would admit a team that already spent its budget. So
        before a process first uses a counter it fixes the counter's epoch (the time
        from which the counter itself counts; the first process to ask sets it, the
        others read it) and adds the ledger's spend for the period up to that epoch
        (after the last admin reset), guarded by a marker: however many processes
        start at once, the ledger's spend is added once. What the ledger does not
        hold yet (rows still in a process's write buffer at the epoch) is not seeded.
        """
        key = f"budget:{scope}:{period}"
        if self.history is None:
            self._seeded.add(key)
            return
        now = self.clock()
        if self._seed_retry.get(key, 0.0) > now:
            return  # the ledger failed a moment ago: count from the store alone until the retry
        epoch = float(await self.store.setdefault(f"budget_epoch:{scope}:{period}", now, ttl=_MONTH_TTL))
        try:
            spent = await self.history.spent(scope, period, _period_start(kind, period), datetime.fromtimestamp(epoch, UTC))
        except Exception as exc:
            self._seed_retry[key] = now + SEED_RETRY
            log.warning("budgets: cannot read %s's spend for %s from the ledger (%s: %s); counting from the store "
                        "alone, retrying in %gs", scope, period, type(exc).__name__, exc, SEED_RETRY)
            return
        added = await self.store.add_once(f"budget_seeded:{scope}:{period}", key, to_micros(spent), ttl=_MONTH_TTL)
        if added and spent:
            log.info("budgets: %s's %s counter for %s seeded with %s from the ledger", scope, kind, period,
                     _usd(to_micros(spent)))
        self._seeded.add(key)
        self._seed_retry.pop(key, None)

    async def reset(self, scope: str) -> dict[str, Any]:
        """Start ``scope``'s current periods again from zero, on every process sharing the store.

        The counters are zeroed and marked seeded (so nobody re-adds the ledger's
        spend), and a ``budget_reset`` alert goes to the alert hooks, which is how the
        ledger remembers the reset: a later re-seed counts only the spend after it.
        Requests in flight settle against the zeroed counter (their unused
        reservations are taken back from it, so it may briefly read below the spend
        since the reset).
        """
        budget = self.budgets.get(scope)
        if budget is None:
            raise GatewayError(404, f"no budget has scope {scope!r}", code="budget_not_found", param="scope")
        now = self.clock()
        periods = self.periods(now)
        reset = []
        for kind, _ in budget.limits():
            period = periods[kind]
            await self.store.set(f"budget_seeded:{scope}:{period}", 1, ttl=_MONTH_TTL)
            await self.store.set(f"budget_epoch:{scope}:{period}", now, ttl=_MONTH_TTL)
            await self.store.set(f"budget:{scope}:{period}", 0, ttl=_MONTH_TTL)
            await self.store.delete(*(f"budget_alert:{k}:{scope}:{period}" for k in ("budget_soft", "budget_hard")))
            self._seeded.add(f"budget:{scope}:{period}")
            reset.append(period)
        self.emit(Alert(kind="budget_reset", scope=scope, message=f"{scope}'s budget was reset for {', '.join(reset)}",
                        details={"periods": reset}, ts=now))
        return {"scope": scope, "periods": reset, "reset_at": datetime.fromtimestamp(now, UTC).isoformat()}

    # -- helpers ---------------------------------------------------------- #

    async def _alert_once(
        self, kind: str, budget: Budget, period_kind: str, period: str, value: int, limit: Decimal, message: str
    ) -> None:
        n = await self.store.incr(f"budget_alert:{kind}:{budget.scope}:{period}", 1, ttl=_ALERT_TTL)
        if n != 1:
            return
        self.emit(
            Alert(
                kind=kind, scope=budget.scope, message=message, value_usd=Decimal(value) / MICRO, threshold_usd=limit,
                details={"period": period_kind, "period_start": period, "soft": budget.soft, "action": budget.action},
                ts=self.clock(),
            )
        )

