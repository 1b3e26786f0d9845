"""The attempt loop: resolve, order, try targets, classify failures, fall back.

Hooks are the seams around the loop (route selection, strategy selection,
failure classification); inside it the router calls strategy and provider
objects directly. Streams commit to the client only once the first content
arrives, so a target that fails before that is replaced invisibly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy

from interlock.core.errors import GatewayError
from interlock.core.health import HealthBoard
from interlock.core.plugins import Registry
from interlock.core.provider import Provider
from interlock.core.resolve import Resolver
from interlock.core.strategy import Strategy
from interlock.core.types import (
    Action,
    Attempt,
    Chunk,
    Classification,
    Decision,
    FailureClass,
    RequestContext,
    Route,
    Target,
    UpstreamError,
)

log = logging.getLogger("interlock.router")
T = TypeVar("T")
F = FailureClass

# which failure tells the client most, when every target failed
_INFORMATIVE = [
    F.CONTEXT_LENGTH, F.CONTENT_POLICY, F.BAD_REQUEST, F.NOT_FOUND, F.QUOTA, F.RATE_LIMITED, F.AUTH,
    F.OVERLOADED, F.SERVER_ERROR, F.STREAM_ERROR, F.TIMEOUT, F.CONNECTION, F.UNKNOWN,
]
_RETRY_BACKOFF_CAP = 2.0  # seconds: the router never sleeps longer than this before a retry


@dataclass(slots=True)
class StreamStart:
    """A stream that has produced its first content and is ready to be committed."""

    buffered: list[Chunk]
    rest: AsyncIterator[Chunk] | None  # None: the stream already ended
    attempt: Attempt
    target: Target
    committed_at: float = field(default_factory=time.perf_counter)

    def ended(self) -> None:
        """The stream is over: the attempt's latency covers it whole, not just up to the commit."""
        self.attempt.latency_ms += (time.perf_counter() - self.committed_at) * 1000


class Router:
    def __init__(self, pm: pluggy.PluginManager, registry: Registry, resolver: Resolver, health: HealthBoard) -> None:
        self.pm = pm
        self.registry = registry
        self.resolver = resolver
        self.providers: dict[str, Provider] = resolver.providers
        self.health = health
        self._strategies: dict[tuple[str, str], Strategy] = {}
        # an upstream may echo a credential in its error text; nothing downstream may see it
        self._secrets = tuple(p.settings.api_key.get() for p in self.providers.values() if p.settings.api_key)

    # -- planning --------------------------------------------------------- #

    def plan(self, ctx: RequestContext, model: str) -> tuple[Route, str, list[Target]]:
        """The route, strategy name and target order for one request."""
        route = self.resolver.resolve(model)
        if self.resolver.routes:
            alt = self.pm.hook.select_route(request=ctx, route=route, routes=self.resolver.routes)
            if alt and alt != route.name:
                if alt not in self.resolver.routes:
                    raise GatewayError(500, f"a routing rule chose route {alt!r}, which does not exist", type="server_error")
                route = self.resolver.routes[alt]
        name = self.pm.hook.select_strategy(route=route, request=ctx) or route.strategy
        if len(route.targets) <= 1:
            return route, name, list(route.targets)
        return route, name, self._strategy(route, name).order(route.targets, ctx)

    def _strategy(self, route: Route, name: str) -> Strategy:
        key = (route.name, name)
        strategy = self._strategies.get(key)
        if strategy is None:
            factory = self.registry.strategies.get(name)
            if factory is None:
                raise GatewayError(500, f"strategy {name!r} is not registered", type="server_error")
            strategy = self._strategies[key] = factory(route=route, options=route.options)
        return strategy

    def new_decision(self, ctx: RequestContext, model: str) -> Decision:
        return Decision(
            request_id=ctx.request_id, ts=ctx.started_unix, endpoint=ctx.endpoint, requested_model=model,
            route=None, strategy=None, candidates=[], attempts=[], stream=ctx.stream,
            api_key_id=ctx.api_key_id, team=ctx.team, user=ctx.user, tags=list(ctx.tags),
        )

    # -- the loop --------------------------------------------------------- #

    async def run(
        self,
        ctx: RequestContext,
        decision: Decision,
        op: Callable[[Provider, Target, Attempt], Awaitable[T]],
    ) -> tuple[T, Attempt, Target]:
        """Try targets in strategy order until ``op`` succeeds; raise the client's error otherwise."""
        route, strategy_name, order = self.plan(ctx, decision.requested_model)
        decision.route = None if route.implicit else route.name
        decision.strategy = strategy_name
        decision.candidates = [t.key for t in order]
        retries_left = int(route.options.get("retries", 0))
        errors: list[UpstreamError] = []
        for target in order:
            provider = self.providers[target.provider]
            while True:
                attempt = Attempt(len(decision.attempts) + 1, target.provider, provider.type_name, target.model)
                decision.attempts.append(attempt)
                t0 = time.perf_counter()
                try:
                    result = await op(provider, target, attempt)
                except UpstreamError as err:
                    verdict = self._fail(err, target, provider, attempt, t0)
                    errors.append(err)
                    if verdict.action is Action.FAIL:
                        attempt.action = "fail"
                        raise self.client_error(errors, decision) from None
                    if verdict.action is Action.RETRY and retries_left > 0:
                        retries_left -= 1
                        attempt.action = "retry"
                        await asyncio.sleep(min(verdict.retry_after or 0.0, _RETRY_BACKOFF_CAP))
                        continue
                    attempt.action = "fallback"
                    break
                attempt.latency_ms = (time.perf_counter() - t0) * 1000
                self.health.success(target, attempt.latency_ms)
                return result, attempt, target
        raise self.client_error(errors, decision)

    def _fail(self, err: UpstreamError, target: Target, provider: Provider, attempt: Attempt, t0: float) -> Classification:
        attempt.latency_ms = (time.perf_counter() - t0) * 1000
        verdict = self.classify(err, target, provider)
        attempt.outcome = verdict.failure_class.value
        attempt.status = err.status
        attempt.error = err.message
        self.health.failure(target, verdict.failure_class, attempt.latency_ms)
        log.info("attempt %s/%s failed: %s (%s)", target.provider, target.model, verdict.failure_class.value, err.message)
        return verdict

    def classify(self, err: UpstreamError, target: Target, provider: Provider) -> Classification:
        for secret in self._secrets:
            if secret in err.message:
                err.message = err.message.replace(secret, "****")
        verdict: Classification = self.pm.hook.classify_failure(error=err, target=target, provider_type=provider.type_name)
        err.classification, err.provider, err.model = verdict, target.provider, target.model
        return verdict

    # -- operations ------------------------------------------------------- #

    async def stream(self, ctx: RequestContext, decision: Decision) -> StreamStart:
        """Open a stream, falling back until one target produces content."""

        async def op(provider: Provider, target: Target, attempt: Attempt) -> StreamStart:
            t0 = time.perf_counter()
            it = _guard(provider.chat_stream(ctx, target.model), provider).__aiter__()
            buffered: list[Chunk] = []
            while True:
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    return StreamStart(buffered, None, attempt, target)
                buffered.append(chunk)
                note_chunk(attempt, chunk)
                if chunk.content or chunk.finish_reason or chunk.usage_only:
                    attempt.ttft_ms = (time.perf_counter() - t0) * 1000
                    return StreamStart(buffered, it, attempt, target)

        start, _, _ = await self.run(ctx, decision, op)
        return start

    def stream_failed(self, start: StreamStart, err: UpstreamError) -> Classification:
        """A committed stream broke: record it against its attempt and target."""
        provider = self.providers[start.target.provider]
        verdict = self.classify(err, start.target, provider)
        start.attempt.outcome = verdict.failure_class.value
        start.attempt.error = err.message
        start.attempt.action = "fail"  # too late to fall back: the client has content
        self.health.failure(start.target, verdict.failure_class, start.attempt.latency_ms)
        return verdict

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
        decision.status = err.status
        decision.error_type = best_class.value
        decision.error_message = err.message
        return err


def note_chunk(attempt: Attempt, chunk: Chunk) -> None:
    """Fold what a chunk tells into its attempt (ids, usage, finish reasons)."""
    if chunk.response_id and not attempt.response_id:
        attempt.response_id = chunk.response_id
    if chunk.response_model and not attempt.response_model:
        attempt.response_model = chunk.response_model
    if chunk.usage is not None:
        attempt.usage = chunk.usage
    if chunk.finish_reason:
        attempt.finish_reasons.append(chunk.finish_reason)


async def _guard(stream: AsyncIterator[Chunk], provider: Provider) -> AsyncIterator[Chunk]:
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


def chat_op(ctx: RequestContext) -> Callable[[Provider, Target, Attempt], Awaitable[Any]]:
    async def op(provider: Provider, target: Target, attempt: Attempt) -> Any:
        result = await guard_call(provider.chat(ctx, target.model), provider)
        attempt.usage = result.usage
        body = result.body
        attempt.response_id = body.get("id")
        attempt.response_model = body.get("model")
        attempt.finish_reasons = [c.get("finish_reason") for c in body.get("choices") or () if c.get("finish_reason")]
        return result

    return op


def embeddings_op(ctx: RequestContext) -> Callable[[Provider, Target, Attempt], Awaitable[Any]]:
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
