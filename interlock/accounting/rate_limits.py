"""Rate limits per API key, per team and per model: requests and tokens per minute, concurrent requests.

Config::

    [[keys]]                      # also through the admin API: POST/PATCH /-/keys
    key = "${SEARCH_KEY}"
    name = "search"
    team = "search"
    rpm = 60                      # requests per minute
    tpm = 100000                  # tokens (prompt + completion) per minute
    max_concurrent = 4            # requests in flight at once (streams until they end)
    models = ["gpt-4o-mini", "smart", "claude-*"]   # the only models/routes it may ask for
    expires_at = 2026-12-31T23:59:59Z               # RFC 3339; afterwards a 401 "expired"

    [teams.search]                # every key of the team together
    rpm = 600
    tpm = 1000000
    max_concurrent = 20
    models = ["gpt-4o-mini", "smart"]

    [rate_limits."gpt-4o"]        # every caller of the model (or route) together
    rpm = 1000
    tpm = 2000000
    max_concurrent = 50

How a request is counted (all through the :class:`~interlock.core.store.Store`, so several
gateway processes sharing a store enforce one limit):

* **Windows** are fixed UTC minutes: ``rl:rpm:<scope>:<minute>`` and ``rl:tpm:<scope>:<minute>``
  (``<minute>`` is the Unix time divided by 60). Each counter is changed only by the store's
  atomic ``reserve`` (all scopes in one step, none when one refuses) and ``add``. The bound:
  a UTC minute never admits more than the limit, but any 60 seconds that straddle two minutes
  may admit up to twice the limit (a burst at the end of one minute and another at the start
  of the next). ``Retry-After`` is the time until the current minute ends, when the window
  frees up (exact for such windows).
* **rpm** reserves 1 per request. A request rejected before it was routed (by a tighter rate
  limit or a budget) gives its count back: rpm counts the requests that were let through,
  so a client retrying a rejected request does not push its own window further away.
* **tpm** reserves the request's worst case (:func:`~interlock.core.estimate.worst_case_usage`:
  estimated prompt tokens plus ``max_completion_tokens``/``max_tokens``, or
  :data:`DEFAULT_MAX_TOKENS`, times ``n``) in the minute the request starts; when the request
  ends (a stream: when it ends) ``actual - reserved`` is added to the same counters, so they
  hold the prompt and completion tokens the upstream reported. A request without an output
  limit reserves at most the tightest ``tpm`` that applies (so it can run on an empty window);
  one that asks for more output than a ``tpm`` allows can never fit and gets a 429 with
  ``x-should-retry: false``.
* **max_concurrent** holds a lease ``rl:conc:<scope>`` (one member per request id) from
  admission until the request ends. Leases are taken for :data:`LEASE_TTL` seconds and renewed
  every :data:`LEASE_RENEW` seconds while the request runs, so a stream may last as long as it
  likes, while a slot held by a killed process frees itself within ``LEASE_TTL``.

Order in the request lifecycle: authentication (expired keys: 401), planning, then
:meth:`RateLimiter.admit`: the key's and team's model allowlists (403 ``model_not_allowed``),
rpm, concurrency, tpm (429 ``rate_limit_exceeded``); then budgets; then the upstream. Whatever
an earlier step took is given back when a later one rejects. A request to which no limit and
no allowlist applies makes no store call at all.

When the store raises :class:`~interlock.core.store.StoreUnavailable` (a shared store down with
``[store] on_error = "reject"``) the request gets a 503 ``store_unavailable`` and goes nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from interlock.core.errors import GatewayError
from interlock.core.estimate import requested_output_tokens, worst_case_usage
from interlock.core.store import Store, StoreUnavailable
from interlock.core.types import Decision, RequestContext

log = logging.getLogger("interlock.rate_limits")

WINDOW = 60  # seconds: one UTC minute
WINDOW_TTL = 3 * WINDOW  # counters outlive their minute a little (late reconciliations, inspection)
LEASE_TTL = 120.0  # seconds a concurrency slot is held without renewal
LEASE_RENEW = 30.0  # seconds between renewals of the slots of requests still running
DEFAULT_MAX_TOKENS = 4096  # output tokens assumed for a request that sets no limit

LIMIT_FIELDS = ("rpm", "tpm", "max_concurrent")
_TEAM_KEYS = {*LIMIT_FIELDS, "models"}
_MODEL_KEYS = set(LIMIT_FIELDS)


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one scope (a key, a team, a model); None: not limited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    models: tuple[str, ...] | None = None  # allowlist of model/route names (``*`` patterns); None: any

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_concurrent is None and self.models is None

    def public(self) -> dict[str, Any]:
        return {"rpm": self.rpm, "tpm": self.tpm, "max_concurrent": self.max_concurrent,
                "models": list(self.models) if self.models is not None else None}


NO_LIMITS = Limits()


# --------------------------------------------------------------------------- #
# validation (config and admin API)
# --------------------------------------------------------------------------- #


def _positive_int(table: Mapping[str, Any], key: str, path: str, problems: list[tuple[str, str]]) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append((f"{path}{key}", f"must be a positive integer, not {value!r}"))
        return None
    return value


def parse_models(value: Any, path: str, problems: list[tuple[str, str]]) -> tuple[str, ...] | None:
    """An allowlist of model or route names (``*`` and ``?`` patterns allowed); None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) and m.strip() for m in value):
        problems.append((path, "must be a list of model or route names"))
        return None
    out: list[str] = []
    for m in value:
        if m.strip() not in out:
            out.append(m.strip())
    return tuple(out)


def parse_limits(table: Mapping[str, Any], path: str, problems: list[tuple[str, str]], *, models: bool = True) -> Limits:
    """``rpm``, ``tpm``, ``max_concurrent`` (and ``models``) of a table; ``path`` ends with '.' or is empty."""
    return Limits(
        _positive_int(table, "rpm", path, problems),
        _positive_int(table, "tpm", path, problems),
        _positive_int(table, "max_concurrent", path, problems),
        parse_models(table.get("models"), f"{path}models", problems) if models else None,
    )


def parse_expiry(value: Any, path: str, problems: list[tuple[str, str]]) -> float | None:
    """An RFC 3339 timestamp with a time zone (a TOML offset date-time or a string) as Unix seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            value = None
    if not isinstance(value, datetime) or value.tzinfo is None:
        problems.append((path, 'must be an RFC 3339 timestamp with a time zone, e.g. "2026-12-31T23:59:59Z"'))
        return None
    return value.timestamp()


def format_expiry(ts: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC (``...Z``), for listings."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _named_tables(value: Any, section: str, known: set[str], problems: list[tuple[str, str]],
                  *, models: bool) -> dict[str, Limits]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append((section, f"must be a table of tables ([{section}.NAME])"))
        return {}
    out: dict[str, Limits] = {}
    for name, table in value.items():
        path = f"{section}.{name}" if name.replace("-", "").replace("_", "").isalnum() else f'{section}."{name}"'
        if not isinstance(table, dict):
            problems.append((path, "must be a table"))
            continue
        for key in table:
            if key not in known:
                problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(sorted(known))})"))
        limits = parse_limits(table, f"{path}.", problems, models=models)
        if limits.empty:
            if not any(key in table for key in known):
                problems.append((path, f"sets no limit (use {', '.join(sorted(known))})"))
            continue
        out[name] = limits
    return out


def parse_teams(value: Any, problems: list[tuple[str, str]]) -> dict[str, Limits]:
    """``[teams.NAME]``: limits shared by every key of the team."""
    return _named_tables(value, "teams", _TEAM_KEYS, problems, models=True)


def parse_model_limits(value: Any, problems: list[tuple[str, str]]) -> dict[str, Limits]:
    """``[rate_limits."MODEL"]``: limits shared by every caller of a model or route name."""
    return _named_tables(value, "rate_limits", _MODEL_KEYS, problems, models=False)


# --------------------------------------------------------------------------- #
# headers
# --------------------------------------------------------------------------- #


def format_reset(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``17ms``, ``1s``, ``20.5s``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


# --------------------------------------------------------------------------- #
# the limiter
# --------------------------------------------------------------------------- #


@dataclass(slots=True)
class _Counter:
    scope: str  # "key cfg_search", "team search", "model gpt-4o"
    key: str  # the store key
    limit: int
    value: int = 0  # after this request's reservation (and reconciliation)


@dataclass(slots=True)
class Admission:
    """What :meth:`RateLimiter.admit` took for one request; :meth:`RateLimiter.release` gives it back once."""

    request_id: str
    window_end: float  # when the minute the request was counted in ends (Unix seconds)
    rpm: list[_Counter] = field(default_factory=list)
    tpm: list[_Counter] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    tokens: int = 0  # reserved on every tpm counter
    routed: bool = False  # the request went on to the upstream (rpm is then kept)
    settled: bool = False


class RateLimiter:
    """The gateway's rate limits over its store; one per gateway, reconfigured on reload."""

    def __init__(
        self,
        store: Store,
        key_limits: Callable[[str], Limits | None],
        teams: Mapping[str, Limits] | None = None,
        models: Mapping[str, Limits] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.key_limits = key_limits
        self.clock = clock
        self.teams: Mapping[str, Limits] = {}
        self.models: Mapping[str, Limits] = {}
        self.configure(teams or {}, models or {})
        self._inflight: dict[str, Admission] = {}  # requests holding concurrency slots, renewed by _renew
        self._renewer: asyncio.Task[None] | None = None

    def configure(self, teams: Mapping[str, Limits], models: Mapping[str, Limits]) -> None:
        """Swap in new team and model limits (reload); requests in flight settle on what they took."""
        self.teams, self.models = dict(teams), dict(models)

    # -- admission -------------------------------------------------------- #

    def _scopes(self, ctx: RequestContext, route: str | None) -> list[tuple[str, str, Limits]]:
        """(scope label, store scope, limits) of every scope that limits this request."""
        out: list[tuple[str, str, Limits]] = []
        if ctx.api_key_id is not None:
            limits = self.key_limits(ctx.api_key_id)
            if limits is not None and not limits.empty:
                out.append((f"key {ctx.api_key_id}", f"key:{ctx.api_key_id}", limits))
        if ctx.team is not None and self.teams:
            limits = self.teams.get(ctx.team)
            if limits is not None:
                out.append((f"team {ctx.team}", f"team:{ctx.team}", limits))
        if self.models:
            requested = str(ctx.body.get("model"))
            for name in (requested, route) if route is not None and route != requested else (requested,):
                limits = self.models.get(name)
                if limits is not None:
                    out.append((f"model {name}", f"model:{name}", limits))
        return out

    async def admit(self, ctx: RequestContext, route: str | None = None) -> Admission | None:
        """Check the allowlists, then take an rpm count, the concurrency slots and the tpm reservation.

        ``route`` is the configured route the plan chose (None for a bare model name).
        Raises 403 (model not allowed), 429 (a limit reached) or 503 (store unavailable);
        returns None when nothing limits the request (no store call was made).
        """
        scopes = self._scopes(ctx, route)
        if not scopes:
            return None
        for label, _, limits in scopes:
            if limits.models is not None:
                _check_models(ctx, label, limits.models)
        now = self.clock()
        minute = int(now // WINDOW)
        held = Admission(ctx.request_id, (minute + 1) * WINDOW)
        rpm = [_Counter(label, f"rl:rpm:{scope}:{minute}", lim.rpm) for label, scope, lim in scopes if lim.rpm]
        tpm = [_Counter(label, f"rl:tpm:{scope}:{minute}", lim.tpm) for label, scope, lim in scopes if lim.tpm]
        concurrent = [(label, f"rl:conc:{scope}", lim.max_concurrent) for label, scope, lim in scopes if lim.max_concurrent]
        if not (rpm or tpm or concurrent):
            return None  # allowlists only
        store = self.store
        # held lists only what was taken, so a failure part way gives back exactly that
        try:
            if rpm:
                refused, values = await store.reserve([c.key for c in rpm], [c.limit for c in rpm], 1, WINDOW_TTL)
                if refused is not None:
                    counter = rpm[refused]
                    counter.value = values[refused]
                    held.rpm = [counter]  # nothing was taken; the headers show the refusing limit
                    raise self._limited(
                        held, now, f"rate limit: {counter.scope} allows {counter.limit} requests per minute")
                for counter, value in zip(rpm, values, strict=True):
                    counter.value = value
                held.rpm = rpm
            for label, key, limit in concurrent:
                granted, count = await store.lease(key, ctx.request_id, limit, LEASE_TTL)
                if not granted:
                    await self._give_back(held)
                    raise self._limited(
                        held, now, f"rate limit: {label} allows {limit} concurrent requests ({count} in flight)",
                        retry_after=1)
                held.leases.append(key)
            if tpm:
                worst = worst_case_usage(ctx, DEFAULT_MAX_TOKENS)
                tokens = worst.prompt_tokens + worst.completion_tokens
                if requested_output_tokens(ctx.body) is None:
                    tokens = min(tokens, min(c.limit for c in tpm))  # no output limit asked: fit the window
                refused, values = await store.reserve([c.key for c in tpm], [c.limit for c in tpm], tokens, WINDOW_TTL)
                if refused is not None:
                    await self._give_back(held)
                    counter = tpm[refused]
                    counter.value = values[refused]
                    held.tpm = [counter]
                    if tokens > counter.limit:
                        raise self._limited(
                            held, now, f"rate limit: {counter.scope} allows {counter.limit} tokens per minute; this "
                            f"request may use up to {tokens} tokens (estimated prompt plus max_tokens), which never fits",
                            retry=False)
                    raise self._limited(
                        held, now, f"rate limit: {counter.scope} allows {counter.limit} tokens per minute; "
                        f"{counter.value} are used or reserved in this minute and this request may use up to {tokens}")
                for counter, value in zip(tpm, values, strict=True):
                    counter.value = value
                held.tpm, held.tokens = tpm, tokens
        except StoreUnavailable as exc:
            await self._give_back(held)
            raise GatewayError(
                503, f"rate limits cannot be checked: the shared store is unavailable ({exc}); the request was not sent",
                type="server_error", code="store_unavailable",
            ) from None
        if held.leases:
            self._inflight[ctx.request_id] = held
        return held

    def _limited(self, held: Admission, now: float, message: str, *, retry_after: float | None = None,
                 retry: bool = True) -> GatewayError:
        headers = self.headers(held, now)
        if retry:
            wait = retry_after if retry_after is not None else held.window_end - now
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        else:
            headers["x-should-retry"] = "false"
        held.settled = True
        return GatewayError(429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=headers)

    async def _give_back(self, held: Admission) -> None:
        """Undo an admission that did not lead to a request (best effort: the store may be down)."""
        self._inflight.pop(held.request_id, None)
        for key in held.leases:
            try:
                await self.store.unlease(key, held.request_id)
            except Exception:
                log.warning("rate limits: cannot release the slot %s of %s (it expires by itself)", key, held.request_id)
        held.leases = []
        try:
            if held.rpm and not held.routed:
                await self.store.add([c.key for c in held.rpm], -1, WINDOW_TTL)
            if held.tpm and held.tokens:
                await self.store.add([c.key for c in held.tpm], -held.tokens, WINDOW_TTL)
        except Exception:
            log.warning("rate limits: cannot give back the counts of %s", held.request_id)

    def routed(self, held: Admission | None) -> None:
        """The request passed every check and goes upstream: its rpm count stays."""
        if held is not None:
            held.routed = True

    async def release(self, held: Admission | None, decision: Decision) -> None:
        """After the request: tpm reconciled to the actual usage, slots freed; rpm given back if never routed.

        Never raises.
        """
        if held is None or held.settled:
            return
        held.settled = True
        self._inflight.pop(held.request_id, None)
        try:
            if not held.routed:
                await self._give_back(held)
                return
            for key in held.leases:
                await self.store.unlease(key, held.request_id)
            held.leases = []
            if held.tpm:
                usage = decision.usage
                actual = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
                delta = actual - held.tokens
                values = await self.store.add([c.key for c in held.tpm], delta, WINDOW_TTL) if delta else None
                if values is not None:
                    for counter, value in zip(held.tpm, values, strict=True):
                        counter.value = value
                held.tokens = actual
        except Exception:
            log.exception("rate limits: settling request %s failed", held.request_id)

    def headers(self, held: Admission | None, now: float | None = None) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits (empty: none apply)."""
        if held is None:
            return {}
        out: dict[str, str] = {}
        reset = format_reset(held.window_end - (self.clock() if now is None else now))
        for kind, counters in (("requests", held.rpm), ("tokens", held.tpm)):
            if counters:
                tightest = min(counters, key=lambda c: (c.limit - c.value, c.limit))
                out[f"x-ratelimit-limit-{kind}"] = str(tightest.limit)
                out[f"x-ratelimit-remaining-{kind}"] = str(max(0, tightest.limit - tightest.value))
                out[f"x-ratelimit-reset-{kind}"] = reset
        return out

    # -- slots of long requests ----------------------------------------- #

    def start(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(), name="interlock-rate-limit-leases")

    async def close(self) -> None:
        task, self._renewer = self._renewer, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _renew(self) -> None:
        """Extend the slots of requests still running, so a long stream keeps its slot."""
        while True:
            await asyncio.sleep(LEASE_RENEW)
            for held in list(self._inflight.values()):
                for key in list(held.leases):
                    try:
                        await self.store.lease(key, held.request_id, None, LEASE_TTL)
                    except Exception:
                        log.warning("rate limits: cannot renew the slot %s of %s", key, held.request_id)


def _allowed(name: str, allowed: Sequence[str]) -> bool:
    return any(name == a or (("*" in a or "?" in a) and fnmatchcase(name, a)) for a in allowed)


def _check_models(ctx: RequestContext, label: str, allowed: tuple[str, ...]) -> None:
    """403 unless every model the request names (``model``, a ``models`` fallback list) is allowed."""
    names = [str(ctx.body.get("model")), *(ctx.models_override or ())]
    for name in names:
        if not _allowed(name, allowed):
            shown = ", ".join(allowed) if allowed else "none"
            raise GatewayError(
                403, f"{label} may not use the model {name!r} (allowed: {shown})",
                type="permission_error", code="model_not_allowed", param="model",
            )
