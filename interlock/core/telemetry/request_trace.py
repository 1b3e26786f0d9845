"""The trace of the request being served: what the router and the providers report to.

:meth:`Telemetry.serve <interlock.core.telemetry.runtime.Telemetry.serve>` puts a
trace for each request into a context variable and :func:`current` returns it,
so the router, the providers and the gateway report routing facts, attempts,
retries, fallbacks, hedges and breaker changes without knowing whether anything
is recorded. A sampled request gets a :class:`RequestTrace` that writes its
server, routing and attempt spans (:class:`~interlock.core.telemetry.spans.GatewaySpan`);
any other request gets an object whose methods do nothing (:data:`NO_TRACE`, or
one that only remembers the route for the metrics), so callers never branch on
whether telemetry is on.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import Event
from opentelemetry.trace import SpanKind, Status, StatusCode

from interlock.core.telemetry.names import (
    ERROR_TYPE,
    EVENT_BREAKER,
    EVENT_FALLBACK,
    EVENT_HEDGE,
    EVENT_RETRY,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_COST,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    HTTP_RESPONSE_STATUS_CODE,
    INTERLOCK_ACTION,
    INTERLOCK_ATTEMPT_N,
    INTERLOCK_ATTEMPTS,
    INTERLOCK_BREAKER_FROM,
    INTERLOCK_BREAKER_REASON,
    INTERLOCK_BREAKER_TO,
    INTERLOCK_CANDIDATES,
    INTERLOCK_COST_DELTA_USD,
    INTERLOCK_UNREPORTED_COST_MAX_USD,
    INTERLOCK_COST_USD,
    INTERLOCK_FALLBACK_USED,
    INTERLOCK_HEDGE,
    INTERLOCK_HEDGE_DELAY,
    INTERLOCK_HEDGE_TARGET,
    INTERLOCK_HEDGED,
    INTERLOCK_OUTCOME,
    INTERLOCK_PROVIDER,
    INTERLOCK_REASONS,
    INTERLOCK_REQUEST_MODEL,
    INTERLOCK_RETRY_WAIT,
    INTERLOCK_PROTOCOL,
    INTERLOCK_ROUTE,
    INTERLOCK_RULE,
    INTERLOCK_SKIPPED,
    INTERLOCK_STRATEGY,
    INTERLOCK_TARGET,
    INTERLOCK_TEAM,
    SERVER_ADDRESS,
    SERVER_PORT,
    provider_name,
)
from interlock.core.telemetry.settings import TelemetrySettings
from interlock.core.telemetry.spans import _PROPAGATOR, GatewaySpan, _Pipeline
from interlock.core.types import Attempt, Decision

if TYPE_CHECKING:
    from interlock.core.provider import Provider
    from interlock.core.types import RequestContext, Target


class Telemetry(Protocol):
    """What a request trace asks of the gateway's :class:`~interlock.core.telemetry.runtime.Telemetry`.

    A protocol, so this module does not import the runtime that creates its traces.
    """

    settings: TelemetrySettings

    def breaker_transition(self, target: str, new: str) -> None: ...

    def address(self, provider: Provider) -> tuple[str, int] | None: ...

    def input_messages(self, body: Mapping[str, Any]) -> str: ...

    def output_messages(self, body: Any) -> str | None: ...


class _Current:
    """``with``: make a span the current OpenTelemetry span (cheaper than the generator ``use_span``)."""

    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def __enter__(self) -> None:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)


class _NoTrace:
    """The request trace when telemetry is off, or outside a request: every call does nothing."""

    recording = False
    route: str | None = None

    def planned(self, decision: Decision) -> None:
        return None

    def finish(self, decision: Decision) -> None:
        return None

    def close(self) -> None:
        return None

    def attempt_started(self, attempt: Attempt, target: Target, provider: Provider, ctx: RequestContext) -> Any:
        return None

    def use(self, span: Any) -> Any:
        return _NULL_CM

    def attempt_ended(self, attempt: Attempt, error_type: str | None = None, result: Any = None) -> None:
        return None

    def retry(self, target: str, error_type: str, wait: float) -> None:
        return None

    def fallback(self, target: str, error_type: str) -> None:
        return None

    def hedge(self, target: str, hedge_target: str, delay: float) -> None:
        return None

    def breaker(self, target: str, old: str, new: str, reason: str) -> None:
        return None

    def inject(self, headers: dict[str, str]) -> None:
        return None


class _Untraced(_NoTrace):
    """A request that records no spans (sampled out, or metrics only): remembers its route for the metrics.

    When sampled out, the trace context (flags ``00``) still goes to the providers.
    """

    def __init__(self, telemetry: Telemetry, propagate: bool) -> None:
        self.telemetry = telemetry
        self.propagate = propagate

    def planned(self, decision: Decision) -> None:
        self.route = decision.route

    def finish(self, decision: Decision) -> None:
        self.route = decision.route

    def breaker(self, target: str, old: str, new: str, reason: str) -> None:
        self.telemetry.breaker_transition(target, new)

    def inject(self, headers: dict[str, str]) -> None:
        if self.propagate:
            _PROPAGATOR.inject(headers)


class _NullCM:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_CM = _NullCM()
NO_TRACE = _NoTrace()
_CURRENT: contextvars.ContextVar[RequestTrace | _NoTrace] = contextvars.ContextVar("interlock_trace", default=NO_TRACE)


def current() -> RequestTrace | _NoTrace:
    """The trace of the request being served (a no-op object when there is none)."""
    return _CURRENT.get()


class RequestTrace:
    """The spans of one sampled request: server, routing, one per attempt (:class:`GatewaySpan`).

    Attributes are written into each span's attribute dict as the request goes;
    the span hands itself to the processors when it ends.
    """

    recording = True

    def __init__(self, telemetry: Telemetry, server: GatewaySpan) -> None:
        self.telemetry = telemetry
        self.pipeline: _Pipeline = server._pipeline  # telemetry.pipeline, which made the server span
        self.server = server
        self.routing: GatewaySpan | None = None
        self.route: str | None = None
        self._attempts: dict[int, GatewaySpan] = {}
        self._input_json: str | None = None

    # -- routing ---------------------------------------------------------- #

    def _routing_span(self, model: str) -> GatewaySpan:
        span = self.routing
        if span is None:
            span = self.routing = self.pipeline.child(f"route {model}", SpanKind.INTERNAL, self.server)
            span._attributes[INTERLOCK_REQUEST_MODEL] = model
        return span

    def planned(self, decision: Decision) -> None:
        """The plan is known: route, rule, strategy and candidate order."""
        self.route = decision.route
        span = self._routing_span(decision.requested_model)
        if span._end_time is not None:
            return
        span._name = f"route {decision.route or decision.requested_model}"
        attrs = span._attributes
        attrs[INTERLOCK_STRATEGY] = decision.strategy or ""
        attrs[INTERLOCK_CANDIDATES] = tuple(decision.candidates)
        attrs[INTERLOCK_PROTOCOL] = decision.protocol
        if decision.route:
            attrs[INTERLOCK_ROUTE] = decision.route
        if decision.rule:
            attrs[INTERLOCK_RULE] = decision.rule
        if decision.reasons:
            attrs[INTERLOCK_REASONS] = tuple(decision.reasons)
        if decision.skipped:
            attrs[INTERLOCK_SKIPPED] = tuple(decision.skipped)

    # Span events on the routing span. Each method appends its event itself (no shared helper):
    # the router calls them on the request path, and a call layer there is paid on every retry.

    def retry(self, target: str, error_type: str, wait: float) -> None:
        """``target`` failed with ``error_type`` and is tried again after ``wait`` seconds."""
        span = self.routing
        if span is not None and span._end_time is None:
            span._events.append(Event(EVENT_RETRY, {INTERLOCK_TARGET: target, ERROR_TYPE: error_type,
                                                    INTERLOCK_RETRY_WAIT: wait}))

    def fallback(self, target: str, error_type: str) -> None:
        """``target`` failed with ``error_type``; the next target in the plan is tried."""
        span = self.routing
        if span is not None and span._end_time is None:
            span._events.append(Event(EVENT_FALLBACK, {INTERLOCK_TARGET: target, ERROR_TYPE: error_type}))

    def hedge(self, target: str, hedge_target: str, delay: float) -> None:
        """``target`` had not answered after ``delay`` seconds; ``hedge_target`` now runs beside it."""
        span = self.routing
        if span is not None and span._end_time is None:
            span._events.append(Event(EVENT_HEDGE, {INTERLOCK_TARGET: target, INTERLOCK_HEDGE_TARGET: hedge_target,
                                                    INTERLOCK_HEDGE_DELAY: delay}))

    def breaker(self, target: str, old: str, new: str, reason: str) -> None:
        """A circuit breaker changed state: counted for the metrics and noted on the routing span."""
        self.telemetry.breaker_transition(target, new)
        span = self.routing
        if span is not None and span._end_time is None:
            span._events.append(Event(EVENT_BREAKER, {INTERLOCK_TARGET: target, INTERLOCK_BREAKER_FROM: old,
                                                      INTERLOCK_BREAKER_TO: new, INTERLOCK_BREAKER_REASON: reason}))

    def finish(self, decision: Decision) -> None:
        """The decision is final (response sent or failed): close the routing span."""
        self.route = decision.route
        span = self._routing_span(decision.requested_model)
        if self._attempts:
            for attempt in decision.attempts:  # a stream the client abandoned, a hedge never reaped
                if id(attempt) in self._attempts:
                    self.attempt_ended(attempt, None if attempt.outcome == "ok" else attempt.outcome)
        if span._end_time is not None:
            return
        attrs = span._attributes
        attrs[INTERLOCK_ATTEMPTS] = len(decision.attempts)
        attrs[INTERLOCK_FALLBACK_USED] = decision.fallback_used
        if decision.hedged:
            attrs[INTERLOCK_HEDGED] = True
        if decision.provider:
            attrs[INTERLOCK_TARGET] = f"{decision.provider}/{decision.model}"
        if decision.cost_usd is not None:
            attrs[INTERLOCK_COST_USD] = float(decision.cost_usd)
        if decision.cost_delta_usd is not None:
            attrs[INTERLOCK_COST_DELTA_USD] = float(decision.cost_delta_usd)
        if decision.unreported_cost_max_usd is not None:
            attrs[INTERLOCK_UNREPORTED_COST_MAX_USD] = float(decision.unreported_cost_max_usd)
        if decision.skipped:
            attrs[INTERLOCK_SKIPPED] = tuple(decision.skipped)
        if decision.team:
            attrs[INTERLOCK_TEAM] = decision.team
        if decision.status >= 400:
            attrs[ERROR_TYPE] = decision.error_type or str(decision.status)
            span.set_status(Status(StatusCode.ERROR, (decision.error_message or "")[:500]))
        span.end()

    def close(self) -> None:
        """End whatever is still open (the request ended without a decision being finished)."""
        for span in self._attempts.values():
            span.end()
        self._attempts.clear()
        if self.routing is not None:
            self.routing.end()

    # -- attempts --------------------------------------------------------- #

    def attempt_started(self, attempt: Attempt, target: Target, provider: Provider, ctx: RequestContext) -> GatewaySpan:
        operation = "embeddings" if ctx.endpoint == "embeddings" else "chat"
        body = ctx.body
        parent = self._routing_span(body.get("model") or target.model)
        span = self.pipeline.child(f"{operation} {target.model}", SpanKind.CLIENT, parent)
        attrs = span._attributes
        attrs[GEN_AI_OPERATION_NAME] = operation
        attrs[GEN_AI_PROVIDER_NAME] = provider_name(provider.type_name)
        attrs[GEN_AI_REQUEST_MODEL] = target.model
        attrs[INTERLOCK_PROVIDER] = target.provider
        attrs[INTERLOCK_ATTEMPT_N] = attempt.n
        address = self.telemetry.address(provider)
        if address is not None:
            attrs[SERVER_ADDRESS], attrs[SERVER_PORT] = address
        if ctx.stream:
            attrs[GEN_AI_REQUEST_STREAM] = True
        if attempt.hedge:
            attrs[INTERLOCK_HEDGE] = True
        for key, name, typ in _REQUEST_PARAMS:
            value = body.get(key)
            if isinstance(value, typ) and not isinstance(value, bool):
                attrs[name] = value
        if self.telemetry.settings.capture_content:
            if self._input_json is None:
                self._input_json = self.telemetry.input_messages(body)
            if self._input_json:
                attrs[GEN_AI_INPUT_MESSAGES] = self._input_json
        self._attempts[id(attempt)] = span
        return span

    def use(self, span: Any) -> Any:
        """Make the attempt span current while the provider call runs (outgoing ``traceparent``)."""
        if span is None:
            return _NULL_CM
        return _Current(span)

    def attempt_ended(self, attempt: Attempt, error_type: str | None = None, result: Any = None) -> None:
        span = self._attempts.pop(id(attempt), None)
        if span is None or span._end_time is not None:
            return
        attrs = span._attributes
        attrs[INTERLOCK_OUTCOME] = attempt.outcome
        if attempt.response_model:
            attrs[GEN_AI_RESPONSE_MODEL] = attempt.response_model
        if attempt.response_id:
            attrs[GEN_AI_RESPONSE_ID] = attempt.response_id
        if attempt.finish_reasons:
            attrs[GEN_AI_RESPONSE_FINISH_REASONS] = tuple(attempt.finish_reasons)
        usage = attempt.usage
        if usage is not None:
            attrs[GEN_AI_USAGE_INPUT_TOKENS] = usage.prompt_tokens
            attrs[GEN_AI_USAGE_OUTPUT_TOKENS] = usage.completion_tokens
            if usage.cached_tokens:
                attrs[GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_tokens
            if usage.cache_write_tokens:
                attrs[GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
            if usage.reasoning_tokens:
                attrs[GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
        if attempt.ttft_ms is not None:
            attrs[GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = attempt.ttft_ms / 1000
        if attempt.cost_usd is not None:
            attrs[INTERLOCK_COST_USD] = attrs[GEN_AI_USAGE_COST] = float(attempt.cost_usd)
        if attempt.action:
            attrs[INTERLOCK_ACTION] = attempt.action
        if attempt.status is not None:
            attrs[HTTP_RESPONSE_STATUS_CODE] = attempt.status
        if error_type is not None and error_type != "cancelled":
            attrs[ERROR_TYPE] = error_type
            span.set_status(Status(StatusCode.ERROR, (attempt.error or error_type)[:500]))
        if self.telemetry.settings.capture_content and result is not None:
            output = self.telemetry.output_messages(getattr(result, "body", None))
            if output:
                attrs[GEN_AI_OUTPUT_MESSAGES] = output
        span.end()

    def inject(self, headers: dict[str, str]) -> None:
        """Add the current (attempt) span's ``traceparent`` to an outgoing provider request."""
        if not self.telemetry.settings.propagate:
            return
        span = trace.get_current_span()
        if type(span) is GatewaySpan:
            # the W3C propagator's headers, written without its generic checks (a gateway span's
            # context is always valid)
            ctx = span._context
            headers["traceparent"] = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
            if ctx.trace_state:
                headers["tracestate"] = ctx.trace_state.to_header()
            return
        _PROPAGATOR.inject(headers)


_REQUEST_PARAMS: tuple[tuple[str, str, type | tuple[type, ...]], ...] = (
    ("max_tokens", GEN_AI_REQUEST_MAX_TOKENS, int),
    ("max_completion_tokens", GEN_AI_REQUEST_MAX_TOKENS, int),
    ("temperature", GEN_AI_REQUEST_TEMPERATURE, (int, float)),
    ("top_p", GEN_AI_REQUEST_TOP_P, (int, float)),
)


__all__ = ["NO_TRACE", "RequestTrace", "current"]
