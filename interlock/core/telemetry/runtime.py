"""The gateway's telemetry: providers, instruments and the request path.

One :class:`Telemetry` per :class:`~interlock.core.gateway.Gateway` (never a global
provider): it builds a ``TracerProvider`` and a ``MeterProvider`` when the app
starts, from the span processors and metric readers the exporter plugins supply
(:mod:`interlock.core.telemetry.exporter`), and shuts them down (flushing) when
it stops. :meth:`Telemetry.serve` wraps each OpenAI-endpoint request in its
server span and per-request trace (:mod:`interlock.core.telemetry.request_trace`);
:meth:`Telemetry.record` turns each finished decision into metrics.

With nothing configured, :attr:`Telemetry.active` is False and the request path
does no OpenTelemetry work at all.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode

from interlock.core import jsonutil
from interlock.core.exporter import Exporter
from interlock.core.telemetry.exporter import TelemetryExporter, batch_processor
from interlock.core.telemetry.names import (
    BREAKER_STATES,
    DURATION_BUCKETS,
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_TOKEN_TYPE,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
    INSTRUMENTATION,
    INTERLOCK_HTTP_STATUS_CLASS,
    INTERLOCK_REQUEST_ID,
    INTERLOCK_ROUTE,
    INTERLOCK_TARGET,
    INTERLOCK_TEAM,
    METRIC_BREAKER_STATE,
    METRIC_STORE_DEGRADED,
    METRIC_STORE_FALLBACK_OPS,
    METRIC_BREAKER_TRIPS,
    METRIC_COST,
    METRIC_FALLBACK_COST_DELTA,
    METRIC_FALLBACKS,
    METRIC_IN_FLIGHT,
    METRIC_OPERATION_DURATION,
    METRIC_OVERHEAD,
    METRIC_REQUESTS,
    METRIC_RETRIES,
    METRIC_TIME_TO_FIRST_CHUNK,
    METRIC_TOKEN_USAGE,
    NO_ROUTE,
    OVERHEAD_BUCKETS,
    SCHEMA_URL,
    TOKEN_BUCKETS,
    URL_PATH,
    URL_SCHEME,
    provider_name,
)
from interlock.core.telemetry.request_trace import _CURRENT, RequestTrace, _NoTrace, _Untraced
from interlock.core.telemetry.settings import DEFAULT_CONTENT_MAX_CHARS, TelemetrySettings
from interlock.core.telemetry.spans import GatewaySpan, _Pipeline, make_sampler
from interlock.core.types import Decision

if TYPE_CHECKING:
    from aiohttp import web

    from interlock.core.provider import Provider

log = logging.getLogger("interlock.telemetry")


class Telemetry:
    """Providers, instruments and the request path helpers of one gateway."""

    def __init__(
        self,
        settings: TelemetrySettings | None = None,
        *,
        span_processors: Sequence[SpanProcessor] = (),
        metric_readers: Sequence[MetricReader] = (),
    ) -> None:
        self.settings = settings or TelemetrySettings(enabled=False)
        self._extra_processors = list(span_processors)
        self._extra_readers = list(metric_readers)
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        self.meter: Meter = NoOpMeter(INSTRUMENTATION)
        self.active = False  # True between start() and close() when anything exports
        self.pipeline: _Pipeline | None = None
        self._addresses: dict[str, tuple[str, int] | None] = {}
        self._breakers: dict[str, int] = {}
        #: the store's status (Store.status), read by the store gauges; the gateway sets it
        self.store_status: Callable[[], Mapping[str, Any]] | None = None

    @property
    def tracing(self) -> bool:
        """A span processor is configured: requests get spans."""
        return self.pipeline is not None

    @property
    def metering(self) -> bool:
        """A metric reader is configured (otherwise the instruments are no-ops and their work is skipped)."""
        return self.meter_provider is not None

    @classmethod
    def for_tests(
        cls,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
        *,
        capture_content: bool = False,
        content_max_chars: int = DEFAULT_CONTENT_MAX_CHARS,
        sampler: str = "parentbased_always_on",
        propagate: bool = True,
    ) -> Telemetry:
        """Telemetry into an in-memory span exporter (synchronously) and/or an in-memory metric reader."""
        settings = TelemetrySettings(capture_content=capture_content, content_max_chars=content_max_chars,
                                     sampler=sampler, propagate=propagate)
        processors = [SimpleSpanProcessor(span_exporter)] if span_exporter is not None else []
        return cls(settings, span_processors=processors, metric_readers=[metric_reader] if metric_reader else [])

    # -- lifecycle -------------------------------------------------------- #

    async def start(self, exporters: Iterable[Exporter] = ()) -> None:
        """Build the providers from the exporter plugins' span exporters and metric readers."""
        if self.active or not self.settings.enabled:
            return
        processors = list(self._extra_processors)
        readers = list(self._extra_readers)
        for exporter in exporters:
            if not isinstance(exporter, TelemetryExporter):
                continue
            try:
                processor = exporter.span_processor()
                if processor is None and (span_exporter := exporter.span_exporter()) is not None:
                    # never Simple with a network exporter: Batch exports on its own thread
                    processor = batch_processor(span_exporter, self.settings)
                if processor is not None:
                    processors.append(processor)
                reader = exporter.metric_reader()
                if reader is not None:
                    readers.append(reader)
            except Exception:  # a broken exporter must not stop the gateway
                log.exception("telemetry exporter %s failed to start; it is skipped", exporter.name)
        if not processors and not readers:
            return
        attrs = {**self.settings.resource_attributes, "service.name": self.settings.service_name}
        resource = Resource.create(attrs)
        if processors:
            sampler = make_sampler(self.settings)
            self.tracer_provider = TracerProvider(resource=resource, sampler=sampler)
            for processor in processors:  # the provider flushes and shuts them down
                self.tracer_provider.add_span_processor(processor)
            # for plugins that add spans of their own; the gateway's spans are GatewaySpans
            self.tracer = self.tracer_provider.get_tracer(INSTRUMENTATION, schema_url=SCHEMA_URL)
            self.pipeline = _Pipeline(self.tracer_provider, sampler, resource, processors)
        if readers:
            self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
            self.meter = self.meter_provider.get_meter(INSTRUMENTATION, schema_url=SCHEMA_URL)
        self._instruments()
        self.active = True

    async def close(self) -> None:
        """Flush and shut down (off the event loop: exporters block)."""
        if not self.active:
            return
        self.active = False
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]
        try:
            await asyncio.to_thread(_shutdown, providers)
        except Exception:
            log.exception("telemetry shutdown failed; the last spans may be lost")

    def _instruments(self) -> None:
        m = self.meter
        self.token_usage = m.create_histogram(METRIC_TOKEN_USAGE, unit="{token}", description="Tokens used per upstream attempt",
                                              explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS))
        self.duration = m.create_histogram(METRIC_OPERATION_DURATION, unit="s", description="Upstream attempt duration",
                                           explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self.ttfc = m.create_histogram(METRIC_TIME_TO_FIRST_CHUNK, unit="s", description="Time to the first streamed chunk",
                                       explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self.requests = m.create_counter(METRIC_REQUESTS, unit="{request}", description="Client requests")
        self.cost = m.create_counter(METRIC_COST, unit="USD", description="Upstream cost in US dollars")
        self.fallbacks = m.create_counter(METRIC_FALLBACKS, unit="{fallback}", description="Fallbacks to the next target")
        self.fallback_cost_delta = m.create_up_down_counter(
            METRIC_FALLBACK_COST_DELTA, unit="USD",
            description="Cost of fallback answers minus what the same usage costs on the first choice",
        )
        self.retries = m.create_counter(METRIC_RETRIES, unit="{retry}", description="Retries of the same target")
        self.trips = m.create_counter(METRIC_BREAKER_TRIPS, unit="{trip}", description="Circuit breaker trips")
        self.in_flight = m.create_up_down_counter(METRIC_IN_FLIGHT, unit="{request}", description="Requests in flight")
        self.overhead = m.create_histogram(METRIC_OVERHEAD, unit="s",
                                           description="Time spent in interlock, excluding upstream waits",
                                           explicit_bucket_boundaries_advisory=list(OVERHEAD_BUCKETS))
        m.create_observable_gauge(METRIC_BREAKER_STATE, callbacks=[self._observe_breakers], unit="1",
                                  description="Circuit breaker state: 0 closed, 1 half_open, 2 open")
        m.create_observable_gauge(METRIC_STORE_DEGRADED, callbacks=[self._observe_store], unit="1",
                                  description="1 while the shared store is unreachable and process-local state is used")
        m.create_observable_counter(METRIC_STORE_FALLBACK_OPS, callbacks=[self._observe_store_fallbacks],
                                    unit="{operation}", description="Store operations served from process-local state")

    def _observe_store(self, options: CallbackOptions) -> Iterable[Observation]:
        status = self.store_status() if self.store_status is not None else None
        return [Observation(1 if status.get("degraded") else 0)] if status is not None else []

    def _observe_store_fallbacks(self, options: CallbackOptions) -> Iterable[Observation]:
        status = self.store_status() if self.store_status is not None else None
        return [Observation(int(status.get("fallback_ops", 0)))] if status is not None else []

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, {INTERLOCK_TARGET: k}) for k, v in list(self._breakers.items())]

    def breaker_transition(self, target: str, new: str) -> None:
        """A breaker changed state: the state gauge reads it, and a change to open counts a trip."""
        if not self.active:
            return
        self._breakers[target] = BREAKER_STATES.get(new, 0)
        if new == "open":
            self.trips.add(1, {INTERLOCK_TARGET: target})

    # -- the request path ------------------------------------------------- #

    async def serve(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        answer: Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """``answer(request, handler)`` inside a SERVER span continuing the caller's trace; count the request."""
        route = request.match_info.route.resource
        path = route.canonical if route is not None else request.path
        span: GatewaySpan | None = None
        rt: RequestTrace | _NoTrace
        context_token = None
        if self.pipeline is not None:
            span, current_span = self.pipeline.server(f"{request.method} {path}", request.headers)
            rt = RequestTrace(self, span) if span is not None else _Untraced(self, self.settings.propagate)
            context_token = otel_context.attach(trace.set_span_in_context(current_span))
        else:
            rt = _Untraced(self, False)
        token = _CURRENT.set(rt)
        if self.metering:
            self.in_flight.add(1)
        status, request_id = 500, None
        try:
            resp = await answer(request, handler)
            status, request_id = resp.status, resp.headers.get("x-request-id")
            return resp
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            _CURRENT.reset(token)
            if context_token is not None:
                otel_context.detach(context_token)
            if self.metering:
                self.in_flight.add(-1)
                self.requests.add(1, {INTERLOCK_ROUTE: rt.route or NO_ROUTE,
                                      INTERLOCK_HTTP_STATUS_CLASS: f"{status // 100}xx"})
            rt.close()
            if span is not None:
                attrs = span._attributes
                attrs[HTTP_REQUEST_METHOD] = request.method
                attrs[HTTP_ROUTE] = path
                attrs[URL_PATH] = request.path
                attrs[URL_SCHEME] = request.scheme
                attrs[HTTP_RESPONSE_STATUS_CODE] = status
                if request_id:
                    attrs[INTERLOCK_REQUEST_ID] = request_id
                if status >= 500:
                    attrs[ERROR_TYPE] = str(status)
                    span.set_status(Status(StatusCode.ERROR))
                span.end()

    def record(self, decision: Decision) -> None:
        """A finished decision: close its routing span, record its metrics."""
        if not self.active:
            return
        _CURRENT.get().finish(decision)
        if not self.metering:
            return
        route = {INTERLOCK_ROUTE: decision.route or NO_ROUTE}
        operation = "embeddings" if decision.endpoint == "embeddings" else "chat"
        intervals = []
        for attempt in decision.attempts:
            common = {GEN_AI_OPERATION_NAME: operation, GEN_AI_PROVIDER_NAME: provider_name(attempt.provider_type),
                      GEN_AI_REQUEST_MODEL: attempt.model}
            self._breakers.setdefault(f"{attempt.provider}/{attempt.model}", 0)
            if attempt.outcome not in ("ok", "cancelled"):
                self.duration.record(attempt.latency_ms / 1000, {**common, ERROR_TYPE: attempt.outcome})
            else:
                self.duration.record(attempt.latency_ms / 1000, common)
            if attempt.ttft_ms is not None:
                self.ttfc.record(attempt.ttft_ms / 1000, common)
            if attempt.usage is not None:
                self.token_usage.record(attempt.usage.prompt_tokens, {**common, GEN_AI_TOKEN_TYPE: "input"})
                self.token_usage.record(attempt.usage.completion_tokens, {**common, GEN_AI_TOKEN_TYPE: "output"})
            if attempt.cost_usd is not None:
                cost = {GEN_AI_PROVIDER_NAME: common[GEN_AI_PROVIDER_NAME], GEN_AI_REQUEST_MODEL: attempt.model}
                if decision.team:
                    cost[INTERLOCK_TEAM] = decision.team
                self.cost.add(float(attempt.cost_usd), cost)
            if attempt.action == "fallback":
                self.fallbacks.add(1, route)
            elif attempt.action == "retry":
                self.retries.add(1, route)
            intervals.append((attempt.start_ms, attempt.start_ms + attempt.latency_ms))
        if decision.cost_delta_usd is not None:
            self.fallback_cost_delta.add(float(decision.cost_delta_usd), route)
        self.overhead.record(max(0.0, decision.latency_ms - _covered(intervals)) / 1000)

    # -- helpers ---------------------------------------------------------- #

    def address(self, provider: Provider) -> tuple[str, int] | None:
        """``server.address`` and ``server.port`` of a provider's base URL (parsed once per URL)."""
        base = getattr(provider, "base_url", "") or ""
        if base not in self._addresses:
            parsed = urllib.parse.urlsplit(base)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            self._addresses[base] = (parsed.hostname, port) if parsed.hostname else None
        return self._addresses[base]

    def input_messages(self, body: Mapping[str, Any]) -> str:
        """``gen_ai.input.messages`` for a request body (text parts only, cut to ``content_max_chars``)."""
        messages = body.get("messages")
        if not isinstance(messages, list):  # embeddings: the input texts
            inputs = body.get("input")
            messages = [{"role": "user", "content": inputs if isinstance(inputs, str) else jsonutil.dumps_str(inputs)}]
        out = []
        for m in messages:
            if isinstance(m, dict):
                out.append({"role": m.get("role", "user"), "parts": _parts(m.get("content"))})
        return _truncated_json(out, self.settings.content_max_chars)

    def output_messages(self, body: Any) -> str | None:
        """``gen_ai.output.messages`` for a chat completion body; None when it has no choices."""
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            return None
        out = []
        for choice in body["choices"]:
            message = choice.get("message") or {}
            entry: dict[str, Any] = {"role": message.get("role", "assistant"), "parts": _parts(message.get("content"))}
            if choice.get("finish_reason"):
                entry["finish_reason"] = choice["finish_reason"]
            out.append(entry)
        return _truncated_json(out, self.settings.content_max_chars)

    def add_routes(self, app: web.Application, exporters: Iterable[Exporter]) -> None:
        """Let the telemetry exporters add their HTTP routes (Prometheus' ``GET /metrics``)."""
        for exporter in exporters:
            if isinstance(exporter, TelemetryExporter):
                exporter.add_routes(app)


def _shutdown(providers: list[Any]) -> None:
    for provider in providers:
        try:
            provider.shutdown()
        except Exception:
            log.exception("telemetry provider shutdown failed")


def _covered(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of ``intervals`` (hedged attempts overlap)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append({"type": "text", "content": str(p.get("text", ""))})
            elif isinstance(p, dict):
                parts.append({"type": str(p.get("type", "unknown"))})  # images, audio: never the data
        return parts
    return [{"type": "text", "content": str(content)}]


def _truncated_json(messages: list[dict[str, Any]], limit: int) -> str:
    """JSON of ``messages`` with text contents cut so their total length stays within ``limit``."""
    budget = limit
    for message in messages:
        for part in message.get("parts", ()):
            text = part.get("content")
            if not isinstance(text, str):
                continue
            if len(text) > budget:
                part["content"] = text[: max(0, budget)] + "…"
                budget = 0
            else:
                budget -= len(text)
    return jsonutil.dumps_str(messages)


__all__ = ["Telemetry"]
