"""The gateway's own spans and the pipeline that hands them to span processors.

A request's server, routing and attempt spans are :class:`GatewaySpan` objects
rather than the SDK's spans: they are written by one event loop without locks,
the sampler is asked once per request, and they reach the configured span
processors (``on_start``, ``_on_ending``, ``on_end``) as the SDK's
:class:`~opentelemetry.sdk.trace.ReadableSpan`. :class:`_Pipeline` holds what
they need from the ``TracerProvider``, read once when telemetry starts; the
sampler is built here too, because the pipeline recognises the always-on
samplers by identity to skip asking them.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from interlock.core.telemetry.names import INSTRUMENTATION, SCHEMA_URL
from interlock.core.telemetry.settings import TelemetrySettings

log = logging.getLogger("interlock.telemetry")

_PARENTBASED_ALWAYS_ON = ParentBased(ALWAYS_ON)  # the default; one instance, which _Pipeline knows by identity


def make_sampler(settings: TelemetrySettings) -> Sampler:
    """The sampler ``settings`` names (``OTEL_TRACES_SAMPLER`` values); an unknown name gets the default."""
    name, arg = settings.sampler, settings.sampler_arg
    ratio = 1.0 if arg is None else max(0.0, min(1.0, arg))
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
        "parentbased_always_on": _PARENTBASED_ALWAYS_ON,
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(TraceIdRatioBased(ratio)),
    }
    if name not in samplers:
        log.warning("OTEL_TRACES_SAMPLER=%r is unknown; using parentbased_always_on", name)
    return samplers.get(name, samplers["parentbased_always_on"])


# SpanContext is a tuple that starts (trace_id, span_id, is_remote, trace_flags, trace_state):
# the hot path reads it by position (its properties cost a Python call each). Checked once here,
# so a future layout change falls back to the properties instead of misreading.
_probe = SpanContext(0x1234, 0x56, True, TraceFlags(1), None)
CONTEXT_IS_TUPLE = isinstance(_probe, tuple) and tuple(_probe)[:5] == (
    _probe.trace_id, _probe.span_id, _probe.is_remote, _probe.trace_flags, _probe.trace_state
)
del _probe

_PROPAGATOR = TraceContextTextMapPropagator()
_ROOT = Context()  # a request without traceparent starts a new trace
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class GatewaySpan(trace.Span, ReadableSpan):
    """One of the gateway's own spans (server, routing, attempt): recorded without the SDK's per-call work.

    It is at once the write side of an OpenTelemetry span (what ``trace.get_current_span()``
    gives a plugin or an instrumentation during the request) and the SDK's
    :class:`~opentelemetry.sdk.trace.ReadableSpan`, which is what span processors
    and exporters receive at ``on_end``. The SDK's own span takes a lock on
    every call, validates attributes on each ``set_attribute`` and once more
    for the sampler, and copies itself into a new ``ReadableSpan`` when it
    ends; profiles of ``interlock serve`` put those at about a third of a
    request's CPU time. Here a request's spans are written by one event loop
    (no lock), the sampler runs once per request (every sampler interlock
    configures decides on the trace id or the parent, so a request's spans
    share the decision), and the gateway writes its own attributes directly
    (str, bool, int, float and tuples of them). Values set through the API
    methods by anyone else are validated as the SDK does. ``on_start`` and
    ``_on_ending`` are called for the processors that define them; value
    length limits (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
    ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``) apply when the span ends.
    """

    def __init__(self, pipeline: _Pipeline, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind) -> None:
        self._name = name
        self._context: SpanContext = context  # never None here (ReadableSpan allows None)
        self._parent = parent
        self._kind = kind
        self._pipeline = pipeline
        self._resource = pipeline.resource
        self._instrumentation_scope = pipeline.scope
        self._instrumentation_info = None
        self._attributes: dict[str, Any] = {}
        self._events: list[Event] = []
        self._links: list[trace.Link] = []
        self._status = _UNSET
        self._start_time = time.time_ns()
        self._end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is None and attributes:
            self._attributes.update(BoundedAttributes(attributes=attributes, immutable=False))

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        if self._end_time is None:
            clean = BoundedAttributes(attributes=attributes, immutable=True) if attributes else None
            self._events.append(Event(name, clean, timestamp))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self._end_time is None and context is not None and context.is_valid:
            clean = BoundedAttributes(attributes=attributes, immutable=True) if attributes else None
            self._links.append(trace.Link(context, clean))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return  # like the SDK: OK is final
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        cls = type(exception)
        module = cls.__module__
        attrs: dict[str, Any] = {
            "exception.type": f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        pipeline = self._pipeline
        for processor in pipeline.ending:
            # the SDK annotates its processor hooks with its own Span class; processors use only the
            # API span and ReadableSpan interfaces, which a GatewaySpan implements
            processor._on_ending(self)  # type: ignore[arg-type]
        self._end_time = end_time or time.time_ns()
        if pipeline.value_limit is not None:
            _limit_values(self._attributes, pipeline.value_limit)
        for processor in pipeline.processors:
            try:
                processor.on_end(self)
            except Exception:  # a broken processor must not fail the request that ended the span
                log.exception("span processor %r failed at on_end", processor)


def _limit_values(attributes: dict[str, Any], limit: int) -> None:
    for key, value in attributes.items():
        if isinstance(value, str):
            if len(value) > limit:
                attributes[key] = value[:limit]
        elif isinstance(value, tuple | list):
            attributes[key] = tuple(v[:limit] if isinstance(v, str) else v for v in value)


class _Pipeline:
    """What a :class:`GatewaySpan` needs from the tracer provider, read once at start-up."""

    def __init__(self, provider: TracerProvider, sampler: Sampler, resource: Resource,
                 processors: Sequence[SpanProcessor]) -> None:
        self.sampler = sampler
        # a request without a parent is sampled without asking (a microsecond per request)
        self.sample_roots = sampler is ALWAYS_ON or sampler is _PARENTBASED_ALWAYS_ON
        self.ids = provider.id_generator
        self.resource = resource
        self.scope = InstrumentationScope(INSTRUMENTATION, None, SCHEMA_URL, None)
        self.processors = tuple(processors)
        self.starting = tuple(p for p in processors if _overrides(p, "on_start"))
        self.ending = tuple(p for p in processors if _overrides(p, "_on_ending"))
        self.value_limit = SpanLimits().max_span_attribute_length

    def server(self, name: str, headers: Mapping[str, str]) -> tuple[GatewaySpan | None, trace.Span]:
        """A request's SERVER span, continuing the caller's ``traceparent``, and the span to make current.

        The sampler is asked here, once for the whole request: the span is None
        when it samples the request out, and the current span is then a
        non-recording one that still carries the trace context (flags ``00``).
        """
        if "traceparent" in headers:
            parent_context = _PROPAGATOR.extract(headers)
            parent: SpanContext | None = trace.get_current_span(parent_context).get_span_context()
            if parent is not None and not parent.is_valid:
                parent = None
        else:
            parent_context, parent = _ROOT, None
        if parent is None and self.sample_roots:
            # what the always-on samplers answer for a new trace: sampled, no attributes, no state
            ctx = SpanContext(self.ids.generate_trace_id(), self.ids.generate_span_id(), False, _SAMPLED, None)
            span = GatewaySpan(self, name, ctx, None, SpanKind.SERVER)
        else:
            trace_id = parent.trace_id if parent is not None else self.ids.generate_trace_id()
            sampled = self.sampler.should_sample(parent_context, trace_id, name, SpanKind.SERVER)
            decision = sampled.decision
            # (the ignores: the SDK leaves sampling.Decision's methods unannotated)
            ctx = SpanContext(trace_id, self.ids.generate_span_id(), False,
                              _SAMPLED if decision.is_sampled() else _NOT_SAMPLED,  # type: ignore[no-untyped-call]
                              sampled.trace_state)
            if not decision.is_recording():  # type: ignore[no-untyped-call]
                return None, NonRecordingSpan(ctx)
            span = GatewaySpan(self, name, ctx, parent, SpanKind.SERVER)
            if sampled.attributes:
                span._attributes.update(sampled.attributes)
        if self.starting:
            self.started(span, parent_context)
        return span, span

    def child(self, name: str, kind: SpanKind, parent: GatewaySpan) -> GatewaySpan:
        pctx = parent._context
        if CONTEXT_IS_TUPLE:
            trace_id, flags, state = pctx[0], pctx[3], pctx[4]
        else:
            trace_id, flags, state = pctx.trace_id, pctx.trace_flags, pctx.trace_state
        ctx = SpanContext(trace_id, self.ids.generate_span_id(), False, flags, state)
        span = GatewaySpan(self, name, ctx, pctx, kind)
        if self.starting:
            self.started(span, trace.set_span_in_context(parent))
        return span

    def started(self, span: GatewaySpan, parent_context: Context) -> None:
        for processor in self.starting:
            try:
                # as in end(): the SDK's annotation names its own Span class, a GatewaySpan stands in for it
                processor.on_start(span, parent_context=parent_context)  # type: ignore[arg-type]
            except Exception:
                log.exception("span processor %r failed at on_start", processor)


# the hooks of the SDK's own processors that do nothing (no call needed)
_NO_OP_HOOKS = {
    hook: {getattr(cls, hook, None) for cls in (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)}
    for hook in ("on_start", "_on_ending")
}


def _overrides(processor: SpanProcessor, hook: str) -> bool:
    """Whether ``processor`` does anything in ``hook``."""
    method = getattr(type(processor), hook, None)
    return method is not None and method not in _NO_OP_HOOKS[hook]


__all__ = ["CONTEXT_IS_TUPLE", "GatewaySpan", "make_sampler"]
