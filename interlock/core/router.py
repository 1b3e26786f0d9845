"""The attempt loop: plan, try targets, classify failures, retry or fall back, hedge.

Hooks are the seams around the loop (route selection, strategy selection,
failure classification); inside it the router calls strategy and provider
objects directly. Streams commit to the client only once the first content
arrives, so a target that fails, stalls or breaches a latency threshold before
that is replaced invisibly. Breaker state and latency statistics go through the
shared :class:`~interlock.core.store.Store`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import pluggy

from interlock.core import stats
from interlock.core.breaker import Breaker, Transition
from interlock.core.catalog import ModelMetadata, NoMetadata, PriceBook
from interlock.core.errors import GatewayError
from interlock.core.estimate import worst_case_usage
from interlock.core.health import HealthBoard
from interlock.core.plugins import Registry, first_result
from interlock.core.provider import Provider
from interlock.core.resolve import Resolver, Unresolved
from interlock.core.route_settings import RouteSettings
from interlock.core.redaction import scrub, secrets_worth_scrubbing
from interlock.core.store import Store
from interlock.core.strategy import Strategy
from interlock.core.telemetry import request_trace
from interlock.core.types import (
    Action,
    Attempt,
    Chunk,
    Classification,
    Decision,
    FailureClass,
    RequestContext,
    Route,
    RouteChoice,
    Target,
    UpstreamError,
    Usage,
)

log = logging.getLogger("interlock.router")
T = TypeVar("T")
F = FailureClass
Op = Callable[[Provider, Target, Attempt], Awaitable[Any]]

# which failure tells the client most, when every target failed
_INFORMATIVE = [
    F.CONTEXT_LENGTH, F.CONTENT_POLICY, F.BAD_REQUEST, F.NOT_FOUND, F.QUOTA, F.RATE_LIMITED, F.AUTH,
    F.OVERLOADED, F.SERVER_ERROR, F.STREAM_ERROR, F.TIMEOUT, F.CONNECTION, F.UNKNOWN,
]
_NO_SETTINGS = RouteSettings()


@dataclass(slots=True)
class Plan:
    """Where a request will go, and why: what ``explain`` prints and the decision records."""

    route: Route
    strategy: str
    order: list[Target]
    reasons: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def settings(self) -> RouteSettings:
        return self.route.settings or _NO_SETTINGS


@dataclass(slots=True)
class StreamStart:
    """A stream that has produced its first content and is ready to be committed."""

    buffered: list[Chunk]
    rest: AsyncGenerator[Chunk, None] | None  # None: the stream already ended
    attempt: Attempt
    target: Target
    committed_at: float = field(default_factory=time.perf_counter)
    remaining: list[Target] = field(default_factory=list)  # targets a continuation may use
    settings: RouteSettings = _NO_SETTINGS
    ended: bool = False


class _Failed(Exception):
    """One or more attempts failed (several when a hedge pair both failed)."""

    def __init__(self, failures: list[tuple[UpstreamError, Classification, Attempt, Target]]) -> None:
        super().__init__(failures[0][0].message)
        self.failures = failures


class Router:
    def __init__(
        self,
        pm: pluggy.PluginManager,
        registry: Registry,
        resolver: Resolver,
        health: HealthBoard,
        store: Store,
        breaker: Breaker,
        prices: PriceBook | None = None,
        metadata: ModelMetadata | None = None,
    ) -> None:
        self.pm = pm
        self.registry = registry
        self.resolver = resolver
        self.providers: dict[str, Provider] = resolver.providers
        self.health = health
        self.store = store
        self._bookkeeping: set[asyncio.Task[None]] = set()  # see _after
        self.breaker = breaker
        #: the gateway's prices (``compute_cost``'s ``prices``, strategies' ``prices``); None: the hook's own
        self.prices = prices
        #: context windows the config does not set (after a context-length failure, only larger ones are tried)
        self.metadata: ModelMetadata = metadata if metadata is not None else NoMetadata()
        self._strategies: dict[tuple[str, str], Strategy] = {}
        # select_route is only worth a hook call per request when a rule or a plugin could answer
        self._route_hook = bool(resolver.rules) or any(
            getattr(impl.plugin, "__name__", None) != "interlock.plugins.rules"
            for impl in pm.hook.select_route.get_hookimpls()
        )
        # an upstream may echo a credential in its error text; nothing downstream may see it
        self._secrets = secrets_worth_scrubbing(p.settings.api_key.get() for p in self.providers.values() if p.settings.api_key)

    # -- planning --------------------------------------------------------- #

    def route_for(self, ctx: RequestContext, model: str) -> Route:
        """The route a request runs on: a per-request ``models`` list, the named route, or a rule's."""
        if ctx.models_override:
            return self._override_route(ctx.models_override)
        route = self.resolver.resolve(model)
        if self._route_hook and self.resolver.routes:
            choice = self.pm.hook.select_route(request=ctx, route=route, routes=self.resolver.routes, rules=self.resolver.rules)
            if isinstance(choice, str):
                choice = RouteChoice(choice)
            if choice is not None and choice.route != route.name:
                if choice.route not in self.resolver.routes:
                    raise GatewayError(500, f"a routing rule chose route {choice.route!r}, which does not exist", type="server_error")
                route = self.resolver.routes[choice.route]
                ctx.rule = choice.reason or f"route {choice.route!r} chosen by a plugin"
        return route

    def _override_route(self, models: list[str]) -> Route:
        targets: list[Target] = []
        for name in models:
            if name in self.resolver.routes:
                targets.extend(self.resolver.routes[name].targets)
                continue
            try:
                targets.append(self.resolver.resolve_target(name))
            except Unresolved as exc:
                raise GatewayError(404, f"models: {exc}", code=exc.code, param="models") from None
        return Route("models", targets, "ordered", self.resolver.default_settings, implicit=True)

    async def plan(self, ctx: RequestContext, model: str) -> Plan:
        """The route, strategy and target order for one request, with the reasons."""
        route = self.route_for(ctx, model)
        name = first_result(self.pm, "select_strategy", route=route, request=ctx) or route.strategy
        healthy: list[Target] = []
        skipped: list[tuple[Target, Any]] = []
        for target in route.targets:
            admission = await self.breaker.peek(target.key)
            if admission.allowed:
                healthy.append(target)
            else:
                skipped.append((target, admission))
        plan = Plan(route, name, healthy)
        for target, admission in skipped:
            until = time.strftime("%H:%M:%S", time.gmtime(admission.until)) if admission.until else "?"
            plan.skipped.append(f"{target.key}: breaker {admission.state} until {until} UTC")
        if len(healthy) > 1:
            ordered = self._strategy(route, name).order(healthy, ctx)
            plan.order = list(await ordered if inspect.isawaitable(ordered) else ordered)
        if not plan.order and skipped:
            # every target is cooling down: still try the one that tripped longest ago
            target, _ = min(skipped, key=lambda ta: ta[1].opened_at or 0.0)
            plan.order = [target]
            plan.reasons.append(f"every target is cooling down; trying {target.key}, tripped longest ago")
        for i, target in enumerate(plan.order, 1):
            plan.reasons.append(f"{i}. {target.key} (strategy {name})")
        return plan

    def _strategy(self, route: Route, name: str) -> Strategy:
        key = (route.name, name)
        strategy = self._strategies.get(key)
        if strategy is None:
            factory = self.registry.strategies.get(name)
            if factory is None:
                raise GatewayError(500, f"strategy {name!r} is not registered", type="server_error")
            strategy = factory(route=route, options=route.options)
            strategy.store = self.store  # shared state (positions, latencies) lives in the store
            strategy.prices = self.prices
            self._strategies[key] = strategy
        return strategy

    def new_decision(self, ctx: RequestContext, model: str) -> Decision:
        return Decision(
            request_id=ctx.request_id, ts=ctx.started_unix, endpoint=ctx.endpoint, requested_model=model,
            route=None, strategy=None, candidates=[], attempts=[], stream=ctx.stream,
            api_key_id=ctx.api_key_id, team=ctx.team, user=ctx.user, tags=list(ctx.tags), protocol=ctx.protocol,
        )

    # -- the loop --------------------------------------------------------- #

    async def run(self, ctx: RequestContext, decision: Decision, op: Op, plan: Plan) -> tuple[Any, Attempt, Target]:
        """Try ``plan``'s targets in order until ``op`` succeeds; raise the client's error otherwise."""
        tel = request_trace.current()
        s = plan.settings
        deadline = ctx.started + s.total_timeout if s.total_timeout else None
        queue = list(plan.order)
        errors: list[UpstreamError] = []
        retries = 0
        window_floor: int | None = None  # after a context-length failure: only larger windows
        while queue and len(decision.attempts) < s.max_attempts:
            if deadline is not None and time.perf_counter() >= deadline:
                decision.events.append(f"total timeout {s.total_timeout:g}s reached")
                break
            target = queue.pop(0)
            window = self._window(target) if window_floor is not None else None
            if window is not None and window_floor is not None and window <= window_floor:
                decision.skipped.append(f"{target.key}: context window {window} <= {window_floor}")
                continue
            partner = await self._hedge_partner(ctx, s, target, queue)
            try:
                if partner is not None:
                    result, winner = await self._hedged(ctx, decision, op, s, deadline, target, *partner)
                else:
                    result, winner = await self._attempt(ctx, decision, op, s, deadline, target), target
                attempt = _winning_attempt(decision, winner)
                if isinstance(result, StreamStart):
                    result.remaining, result.settings = queue, s
                return result, attempt, winner
            except _Failed as failed:
                if partner is not None and not any(f[3] is partner[0] for f in failed.failures):
                    queue.insert(0, partner[0])  # the primary failed before the hedge started
                for err, verdict, attempt, failed_target in failed.failures:
                    errors.append(err)
                    action = verdict.action
                    cls = verdict.failure_class
                    if cls is F.CONTENT_POLICY and s.on_content_policy == "fallback":
                        action = Action.FALLBACK
                    if cls is F.CONTEXT_LENGTH and (failed_window := self._window(failed_target)) is not None:
                        window_floor = max(window_floor or 0, failed_window)
                    if action is Action.FAIL:
                        attempt.action = "fail"
                        self._span_ended(tel, attempt, cls.value)
                        raise self.client_error(errors, decision) from None
                    wait = verdict.retry_after
                    wants_retry = action is Action.RETRY or (cls in (F.RATE_LIMITED, F.OVERLOADED) and not queue)
                    if (
                        len(failed.failures) == 1 and wants_retry and retries < s.retries
                        and (wait is None or wait <= s.max_retry_wait)
                    ):
                        if wait is None:
                            wait = random.uniform(0, min(s.backoff_max, s.backoff * 2**retries))  # full jitter
                        if deadline is not None:
                            wait = min(wait, max(0.0, deadline - time.perf_counter()))
                        retries += 1
                        attempt.action = "retry"
                        self._span_ended(tel, attempt, cls.value)
                        decision.events.append(f"retry {failed_target.key} in {wait:.2f}s after {cls.value}")
                        tel.retry(failed_target.key, cls.value, wait)
                        await asyncio.sleep(wait)
                        queue.insert(0, failed_target)
                        break
                    attempt.action = "fallback"
                    self._span_ended(tel, attempt, cls.value)
                    decision.events.append(f"fallback from {failed_target.key} after {cls.value}")
                    tel.fallback(failed_target.key, cls.value)
        if not errors:
            raise GatewayError(504, "the request's total timeout passed before any target answered", type="timeout",
                               code="timeout")
        raise self.client_error(errors, decision)

    async def _attempt(
        self, ctx: RequestContext, decision: Decision, op: Op, s: RouteSettings, deadline: float | None,
        target: Target, *, hedge: bool = False,
    ) -> Any:
        """One attempt against ``target``; returns the op's result or raises :class:`_Failed`."""
        provider = self.providers[target.provider]
        attempt = Attempt(len(decision.attempts) + 1, target.provider, provider.type_name, target.model)
        attempt.start_ms = (time.perf_counter() - ctx.started) * 1000
        attempt.hedge = hedge
        decision.attempts.append(attempt)
        tel = request_trace.current()
        span = tel.attempt_started(attempt, target, provider, ctx)  # a CLIENT span, current during the call
        _, transition = await self.breaker.acquire(target.key)
        self._note(decision, transition)
        # on a shared store, a success in closed state (no transition possible) is recorded in the background
        quiet = self.store.shared and transition is None and (await self.breaker.peek(target.key)).state == "closed"
        limits = [x for x in (target.timeout or s.timeout, target.latency_threshold or s.latency_threshold) if x]
        if deadline is not None:
            limits.append(max(0.001, deadline - time.perf_counter()))
        limit = min(limits) if limits else None
        await stats.enter(self.store, target.key, stats.attempt_id(attempt))
        t0 = time.perf_counter()
        streaming = False
        try:
            try:
                with tel.use(span):
                    if limit:
                        async with asyncio.timeout(limit):  # no extra task per attempt, unlike wait_for
                            result = await op(provider, target, attempt)
                    else:
                        result = await op(provider, target, attempt)
            except asyncio.TimeoutError:
                what = "first token" if ctx.stream else "response"
                raise UpstreamError(f"{target.key}: no {what} within {limit:g}s", kind="timeout") from None
        except UpstreamError as err:
            attempt.latency_ms = (time.perf_counter() - t0) * 1000
            verdict = self.classify(err, target, provider)
            attempt.outcome, attempt.status, attempt.error = verdict.failure_class.value, err.status, err.message
            self.health.failure(target, verdict.failure_class, attempt.latency_ms)
            self._note(decision, await self.breaker.record(
                target.key, ok=False, failure=verdict.failure_class, retry_after=verdict.retry_after))
            await stats.record(self.store, target.key, latency_ms=attempt.latency_ms, ttft_ms=None, stream=ctx.stream)
            self._observe(target, ok=False, attempt=attempt)
            log.info("attempt %s failed: %s (%s)", target.key, verdict.failure_class.value, err.message)
            raise _Failed([(err, verdict, attempt, target)]) from None
        except asyncio.CancelledError:  # a hedge partner won, or the client went away
            attempt.latency_ms = (time.perf_counter() - t0) * 1000
            attempt.outcome, attempt.action = "cancelled", "hedge_lost" if hedge or decision.hedged else None
            await self.breaker.release(target.key)
            tel.attempt_ended(attempt, "cancelled")
            raise
        else:
            attempt.latency_ms = (time.perf_counter() - t0) * 1000
            streaming = isinstance(result, StreamStart) and result.rest is not None
            self.health.success(target, attempt.latency_ms)
            if quiet:
                await self._after(self._recorded_ok(target.key))
            else:
                self._note(decision, await self.breaker.record(target.key, ok=True))
            await self._after(stats.record(self.store, target.key, latency_ms=attempt.latency_ms, ttft_ms=attempt.ttft_ms,
                                     stream=ctx.stream))
            self._observe(target, ok=True, attempt=attempt)
            if not streaming:  # a committed stream's span ends with the stream (stream_ended)
                self._span_ended(tel, attempt, None, result)
            return result
        finally:
            if not streaming:  # a committed stream stays in flight until it ends
                await self._after(stats.leave(self.store, target.key, stats.attempt_id(attempt)))

    def _window(self, target: Target) -> int | None:
        """The target's context window: its config, else the price table's, else unknown."""
        if target.context_window is not None:
            return target.context_window
        provider = self.providers[target.provider]
        return self.metadata.context_window(provider.type_name, target.model, target.provider)

    async def _hedge_partner(
        self, ctx: RequestContext, s: RouteSettings, target: Target, queue: list[Target]
    ) -> tuple[Target, float] | None:
        """The target to hedge with and after how long, or None (no hedging for this attempt)."""
        if not queue or (s.hedge_delay is None and s.hedge_percentile is None):
            return None
        if ctx.body.get("tools") and not s.hedge_tools:
            return None  # a tool call may have side effects: never run it twice unless asked
        delay = s.hedge_delay
        if delay is None and s.hedge_percentile is not None:
            ms = await stats.ttft_percentile(self.store, target.key, s.hedge_percentile)
            if ms is None:
                return None  # not enough observations yet to know what is slow
            delay = ms / 1000
        return queue.pop(0), float(delay or 0.0)

    async def _hedged(
        self, ctx: RequestContext, decision: Decision, op: Op, s: RouteSettings, deadline: float | None,
        primary: Target, secondary: Target, delay: float,
    ) -> tuple[Any, Target]:
        """Run ``primary``; if it has not answered after ``delay``, run ``secondary`` too; first wins."""
        first = asyncio.ensure_future(self._attempt(ctx, decision, op, s, deadline, primary))
        done, _ = await asyncio.wait({first}, timeout=delay)
        if done:  # answered (or failed) before the hedge was due: the partner stays in line
            return first.result(), primary
        decision.hedged = True
        decision.events.append(f"hedge: started {secondary.key} after {delay:.3f}s without an answer from {primary.key}")
        request_trace.current().hedge(primary.key, secondary.key, delay)
        second = asyncio.ensure_future(self._attempt(ctx, decision, op, s, deadline, secondary, hedge=True))
        owners = {first: primary, second: secondary}
        pending = {first, second}
        failures: list[tuple[UpstreamError, Classification, Attempt, Target]] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                winners = [t for t in done if t.exception() is None]
                for task in done:
                    if isinstance(task.exception(), _Failed):
                        failures.extend(task.exception().failures)  # type: ignore[union-attr]
                    elif task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if winners:
                    winner = winners[0]
                    for extra in winners[1:]:  # both finished at once: keep one, release the other
                        await self._discard(extra.result())
                    return winner.result(), owners[winner]
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        raise _Failed(failures)

    async def _discard(self, result: Any) -> None:
        """Release a hedge result that lost by a hair: its stream is closed and leaves the in-flight count."""
        if isinstance(result, StreamStart):
            result.attempt.outcome, result.attempt.action = "cancelled", "hedge_lost"
            request_trace.current().attempt_ended(result.attempt, "cancelled")
            if result.rest is not None:
                await result.rest.aclose()
                await self._after(stats.leave(self.store, result.target.key, stats.attempt_id(result.attempt)))

    async def _recorded_ok(self, target: str) -> None:
        transition = await self.breaker.record(target, ok=True, announce=False)
        if transition is not None:  # (closed state: none is expected; another process may have tripped it meanwhile)
            log.info("breaker %s: %s -> %s (%s)", transition.target, transition.old, transition.new, transition.reason)

    async def _after(self, bookkeeping: Coroutine[Any, Any, None]) -> None:
        """Statistics nobody waits for: awaited on the in-memory store, in the background on a shared one.

        A successful attempt's latency average and the end of its in-flight lease are two
        store round trips on Redis that the client's answer need not wait for (routing
        reads averages from memory anyway). On the in-memory store they cost nothing and
        stay in order with the request.
        """
        if not self.store.shared:
            await bookkeeping
            return
        task = asyncio.ensure_future(bookkeeping)
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)

    def _note(self, decision: Decision, transition: Transition | None) -> None:
        if transition is not None:
            decision.events.append(f"breaker {transition.target}: {transition.old} -> {transition.new} ({transition.reason})")
            log.info("breaker %s: %s -> %s (%s)", transition.target, transition.old, transition.new, transition.reason)
            request_trace.current().breaker(transition.target, transition.old, transition.new, transition.reason)

    def _span_ended(self, tel: Any, attempt: Attempt, error_type: str | None, result: Any = None) -> None:
        """End an attempt's span, priced first (``account`` reuses the price) when it is recorded."""
        if tel.recording:
            if attempt.cost_usd is None and attempt.usage is not None:
                attempt.cost_usd = self.price(attempt.usage, attempt.provider, attempt.model)
            tel.attempt_ended(attempt, error_type, result)

    def _observe(self, target: Target, *, ok: bool, attempt: Attempt) -> None:
        for (route, _), strategy in self._strategies.items():
            if any(t.key == target.key for t in strategy.route.targets):
                strategy.observe(target, ok=ok, latency_ms=attempt.latency_ms, ttft_ms=attempt.ttft_ms)

    def classify(self, err: UpstreamError, target: Target, provider: Provider) -> Classification:
        err.message = scrub(err.message, self._secrets)  # upstream errors sometimes echo the credential
        verdict: Classification = provider.classify(err) or self.pm.hook.classify_failure(
            error=err, target=target, provider_type=provider.type_name
        )
        err.classification, err.provider, err.model = verdict, target.provider, target.model
        return verdict

    # -- streams ---------------------------------------------------------- #

    async def stream_ended(self, start: StreamStart, err: UpstreamError | None = None) -> Classification | None:
        """A committed stream is over: account its full duration, and a failure if it broke (once)."""
        if start.ended:
            return None
        start.ended = True
        start.attempt.latency_ms += (time.perf_counter() - start.committed_at) * 1000
        if start.rest is not None:
            await self._after(stats.leave(self.store, start.target.key, stats.attempt_id(start.attempt)))
        if err is None:
            self._span_ended(request_trace.current(), start.attempt, None)
            return None
        provider = self.providers[start.target.provider]
        verdict = self.classify(err, start.target, provider)
        start.attempt.outcome, start.attempt.error = verdict.failure_class.value, err.message
        start.attempt.action = "fail"
        self._span_ended(request_trace.current(), start.attempt, verdict.failure_class.value)
        self.health.failure(start.target, verdict.failure_class, start.attempt.latency_ms)
        await self.breaker.record(start.target.key, ok=False, failure=verdict.failure_class)
        return verdict

    async def continue_stream(self, ctx: RequestContext, decision: Decision, start: StreamStart, partial: str) -> StreamStart:
        """Mid-stream continuation: ask the next targets to continue ``partial`` as an assistant prefix."""
        body = dict(ctx.body)
        body["messages"] = [*body["messages"], {"role": "assistant", "content": partial}]
        cont = RequestContext(
            request_id=ctx.request_id, endpoint="chat", body=body, stream=True, client_wants_usage=ctx.client_wants_usage,
            headers=ctx.headers, started=ctx.started, started_unix=ctx.started_unix, protocol=ctx.protocol,
        )
        route = Route("continuation", list(start.remaining), "ordered", start.settings, implicit=True)
        plan = Plan(route, "ordered", list(start.remaining))
        decision.events.append(f"continuation after {len(partial)} characters from {start.target.key}")
        errors: list[UpstreamError] = []
        op = stream_op(cont)
        for target in plan.order:
            try:
                result: StreamStart = await self._attempt(cont, decision, op, start.settings, None, target)
            except _Failed as failed:
                errors.extend(f[0] for f in failed.failures)
                for err, verdict, attempt, _ in failed.failures:
                    self._span_ended(request_trace.current(), attempt, verdict.failure_class.value)
                continue
            decision.attempts[-1].action = "continuation"
            result.remaining = plan.order[plan.order.index(target) + 1 :]
            result.settings = start.settings
            return result
        raise self.client_error(errors, decision) if errors else GatewayError(502, "no target left to continue the stream")

    # -- cost ------------------------------------------------------------- #

    def price(self, usage: Usage | None, provider: str, model: str) -> Decimal | None:
        """What ``usage`` costs on ``provider``/``model``, through the ``compute_cost`` hook."""
        if usage is None or provider not in self.providers:
            return None
        cost: Decimal | None = first_result(
            self.pm, "compute_cost", usage=usage, provider=provider, provider_type=self.providers[provider].type_name, model=model,
            prices=self.prices,
        )
        return cost

    def account(self, decision: Decision, ctx: RequestContext | None = None) -> None:
        """Price every attempt, sum them into the request's cost, and the fallback's cost delta.

        Every attempt that reported usage is costed: successes, failed attempts that
        consumed tokens, retries, hedges. An attempt cut off before it reported any usage
        (:func:`cut_off`) is given the most it may have been billed instead, in
        ``unreported_cost_max_usd``: the request's prompt estimate (``ctx``'s, through
        :func:`~interlock.core.estimate.worst_case_usage`) priced as input tokens on its
        target; its ``cost_usd`` stays None. The delta compares what the request cost (the
        answer and the failed attempts' known cost) with what the answer's usage would have
        cost on the first target tried.
        """
        total: Decimal | None = None
        unreported: Decimal | None = None
        prompt: Usage | None = None
        for attempt in decision.attempts:
            if attempt.cost_usd is None:
                attempt.cost_usd = self.price(attempt.usage, attempt.provider, attempt.model)
            if attempt.cost_usd is not None:
                total = attempt.cost_usd if total is None else total + attempt.cost_usd
            elif attempt.usage is None and ctx is not None and cut_off(attempt, decision):
                if attempt.unreported_cost_max_usd is None:
                    if prompt is None:  # estimated once per request, only when an attempt was cut off
                        prompt = Usage(prompt_tokens=worst_case_usage(ctx, 0).prompt_tokens)
                    attempt.unreported_cost_max_usd = self.price(prompt, attempt.provider, attempt.model)
                if attempt.unreported_cost_max_usd is not None:
                    unreported = attempt.unreported_cost_max_usd + (unreported or 0)
        decision.cost_usd = total
        decision.unreported_cost_max_usd = unreported
        if decision.fallback_used:
            # what the request cost (the answer, and what failed attempts were billed for) against
            # what the answer alone would have cost had the first choice given it
            final, first = decision.attempts[-1], decision.attempts[0]
            primary = self.price(final.usage, first.provider, first.model)
            if total is not None and final.cost_usd is not None and primary is not None:
                decision.cost_delta_usd = total - primary

    # -- errors ----------------------------------------------------------- #

    def client_error(self, errors: list[UpstreamError], decision: Decision) -> GatewayError:
        """The most informative error for the client once no target can answer."""
        classes = [e.classification.failure_class for e in errors if e.classification]
        best = min(errors, key=lambda e: _INFORMATIVE.index(e.classification.failure_class if e.classification else F.UNKNOWN))
        best_class = best.classification.failure_class if best.classification else F.UNKNOWN
        tried = "; ".join(
            f"{e.provider}/{e.model}: {e.classification.failure_class.value if e.classification else 'unknown'}"
            f" ({e.message})"
            for e in errors
        )
        headers: dict[str, str] = {}
        if best_class in (F.BAD_REQUEST, F.CONTEXT_LENGTH, F.CONTENT_POLICY):
            status = best.status if best.status in (400, 413, 422) else 400
            code = {F.CONTEXT_LENGTH: "context_length_exceeded", F.CONTENT_POLICY: "content_policy_violation"}.get(
                best_class, best.code
            )
            err = GatewayError(400 if status == 422 else status, best.message, type="invalid_request_error", code=code)
        elif all(c is F.NOT_FOUND for c in classes):
            err = GatewayError(404, f"no target serves this model: {tried}", code="model_not_found", param="model")
        elif all(c in (F.RATE_LIMITED, F.QUOTA) for c in classes):
            waits = [e.classification.retry_after for e in errors if e.classification and e.classification.retry_after]
            if waits:
                headers["Retry-After"] = str(max(1, round(min(waits))))
            err = GatewayError(429, f"every target is rate limited: {tried}", type="rate_limit_error", code=best_class.value)
        elif all(c is F.TIMEOUT for c in classes):
            err = GatewayError(504, f"every target timed out: {tried}", type="timeout", code="timeout")
        else:
            status = 503 if best_class in (F.OVERLOADED, F.RATE_LIMITED, F.QUOTA) else 502
            err = GatewayError(status, f"all {len(errors)} attempts failed: {tried}", type="upstream_error", code=best_class.value)
        err.headers.update(headers)
        decision.failed(err.status, best_class.value, err.message)
        return err


def _winning_attempt(decision: Decision, target: Target) -> Attempt:
    """The successful attempt against ``target`` (with hedging, not necessarily the last one)."""
    for attempt in reversed(decision.attempts):
        if attempt.provider == target.provider and attempt.model == target.model and attempt.outcome == "ok":
            return attempt
    return decision.attempts[-1]


def cut_off(attempt: Attempt, decision: Decision) -> bool:
    """Whether ``attempt`` ended without usage after the upstream may have started billing it.

    Cancelled by the gateway (a lost hedge, the client gone while routing), given up on
    without an upstream status (a latency threshold or timeout), broken mid-stream before
    its usage, or a committed stream whose client went away (the request's 499). An
    upstream that answered with an error status billed nothing.
    """
    if attempt.usage is not None:
        return False
    outcome = attempt.outcome
    if outcome == "cancelled":
        return True
    if attempt.status is not None:
        return False
    return outcome in ("timeout", "stream_error") or (outcome == "ok" and decision.status == 499)


def note_chunk(attempt: Attempt, chunk: Chunk) -> None:
    """Fold what a chunk tells into its attempt (ids, usage, finish reasons)."""
    if chunk.response_id and not attempt.response_id:
        attempt.response_id = chunk.response_id
    if chunk.response_model and not attempt.response_model:
        attempt.response_model = chunk.response_model
    if chunk.usage is not None:
        attempt.usage = chunk.usage
    elif chunk.usage_so_far is not None:  # replaced by the final usage; kept if the stream fails first
        attempt.usage = chunk.usage_so_far
    if chunk.finish_reason:
        attempt.finish_reasons.append(chunk.finish_reason)


async def _guard(stream: AsyncIterator[Chunk], provider: Provider) -> AsyncGenerator[Chunk, None]:
    """Turn a provider plugin's unexpected exception into a classifiable failure."""
    try:
        async for chunk in stream:
            yield chunk
    except (UpstreamError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("provider %s raised inside its stream", provider.name)
        raise UpstreamError(f"{provider.name}: provider plugin failed ({type(exc).__name__})", kind="internal") from exc


async def guard_call(coro: Awaitable[T], provider: Provider) -> T:
    """The same guard for non-streaming provider calls."""
    try:
        return await coro
    except (UpstreamError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("provider %s raised", provider.name)
        raise UpstreamError(f"{provider.name}: provider plugin failed ({type(exc).__name__})", kind="internal") from exc


def stream_op(ctx: RequestContext) -> Op:
    """Open a stream and read until its first content: the commit point."""

    async def op(provider: Provider, target: Target, attempt: Attempt) -> StreamStart:
        t0 = time.perf_counter()
        if ctx.native is not None and provider.speaks(ctx.protocol, target.model):
            it = _guard(provider.native_stream(ctx, target.model), provider)
        else:
            it = _guard(provider.chat_stream(ctx, target.model), provider)
        buffered: list[Chunk] = []
        try:
            while True:
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    # ended ([DONE]) before any content, finish reason or usage: an empty answer is a
                    # broken stream, and nothing is committed yet, so the next target can still answer
                    raise UpstreamError(f"{provider.name}: the stream ended before any content", kind="stream") from None
                buffered.append(chunk)
                note_chunk(attempt, chunk)
                if chunk.content or chunk.finish_reason or chunk.usage_only:
                    attempt.ttft_ms = (time.perf_counter() - t0) * 1000
                    return StreamStart(buffered, it, attempt, target)
        except BaseException:
            await it.aclose()  # cancelled (threshold, hedge) or failed: release the upstream connection
            raise

    return op


def chat_op(ctx: RequestContext) -> Op:
    async def op(provider: Provider, target: Target, attempt: Attempt) -> Any:
        if ctx.native is not None and provider.speaks(ctx.protocol, target.model):
            native = await guard_call(provider.native(ctx, target.model), provider)
            attempt.usage = native.usage
            attempt.response_id = native.body.get("id")
            attempt.response_model = native.body.get("model")
            return native
        result = await guard_call(provider.chat(ctx, target.model), provider)
        attempt.usage = result.usage
        body = result.body
        attempt.response_id = body.get("id")
        attempt.response_model = body.get("model")
        attempt.finish_reasons = [c.get("finish_reason") for c in body.get("choices") or () if c.get("finish_reason")]
        return result

    return op


def embeddings_op(ctx: RequestContext) -> Op:
    async def op(provider: Provider, target: Target, attempt: Attempt) -> Any:
        if not provider.supports_embeddings:
            raise UpstreamError(
                f"{provider.name} ({provider.type_name}) has no embeddings API", kind="http", status=404, code="model_not_found"
            )
        result = await guard_call(provider.embeddings(ctx, target.model), provider)
        attempt.usage = result.usage
        attempt.response_model = result.body.get("model")
        return result

    return op
