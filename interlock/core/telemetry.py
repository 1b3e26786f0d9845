"""OpenTelemetry traces and metrics: every attribute and metric name interlock emits lives here.

One :class:`Telemetry` per :class:`~interlock.core.gateway.Gateway` (never a global
provider): it builds a ``TracerProvider`` and a ``MeterProvider`` when the app
starts and shuts them down (flushing) when it stops. Exporters come from the
exporter plugins (``otlp``, ``console``, ``prometheus`` in
:mod:`interlock.plugins.exporters`), which register :class:`TelemetryExporter`
objects through ``register_exporters``; spans always go through a
``BatchSpanProcessor``, so a slow or dead collector costs dropped spans on a
background thread, never request latency.

What is emitted (GenAI semantic conventions, ``gen_ai`` schema 1.42 / core semconv 1.37+):

* a ``SERVER`` span per OpenAI-endpoint request (``POST /v1/chat/completions``),
  continuing an incoming W3C ``traceparent``;
* an ``INTERNAL`` routing span ``route {route or model}`` with the ``interlock.*``
  routing facts and span events for retries, fallbacks, hedges and breaker changes;
* a ``CLIENT`` span per upstream attempt, ``{operation} {model}``, with the
  ``gen_ai.*`` attributes; outgoing provider requests carry its ``traceparent``;
* the metrics named by the ``METRIC_*`` constants below.

With nothing configured, :attr:`Telemetry.active` is False and the request path
does no OpenTelemetry work at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
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

from interlock.core import jsonutil
from interlock.core.exporter import Exporter
from interlock.core.threads import background_thread
from interlock.core.types import Attempt, Decision

if TYPE_CHECKING:
    from aiohttp import web

    from interlock.core.provider import Provider
    from interlock.core.types import RequestContext, Target

log = logging.getLogger("interlock.telemetry")

SCHEMA_URL = "https://opentelemetry.io/schemas/gen-ai/1.42.0"
INSTRUMENTATION = "interlock"

# --------------------------------------------------------------------------- #
# attribute names
# --------------------------------------------------------------------------- #

# GenAI semantic conventions
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_USAGE_COST = "gen_ai.usage.cost"  # not semconv; what Langfuse/SigNoz-style backends read
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
CLIENT_ADDRESS = "client.address"

# interlock's own (routing has no convention)
INTERLOCK_REQUEST_ID = "interlock.request_id"
INTERLOCK_REQUEST_MODEL = "interlock.request.model"
INTERLOCK_ROUTE = "interlock.route"
INTERLOCK_RULE = "interlock.rule"
INTERLOCK_STRATEGY = "interlock.strategy"
INTERLOCK_CANDIDATES = "interlock.candidates"
INTERLOCK_REASONS = "interlock.reasons"
INTERLOCK_SKIPPED = "interlock.skipped"
INTERLOCK_FALLBACK_USED = "interlock.fallback_used"
INTERLOCK_ATTEMPTS = "interlock.attempts"
INTERLOCK_HEDGED = "interlock.hedged"
INTERLOCK_TARGET = "interlock.target"  # provider instance/model
INTERLOCK_PROVIDER = "interlock.provider"  # provider instance name
INTERLOCK_COST_USD = "interlock.cost_usd"
INTERLOCK_COST_DELTA_USD = "interlock.cost_delta_usd"
INTERLOCK_TEAM = "interlock.team"
INTERLOCK_ATTEMPT_N = "interlock.attempt.n"
INTERLOCK_ACTION = "interlock.action"
INTERLOCK_OUTCOME = "interlock.outcome"
INTERLOCK_HEDGE = "interlock.hedge"
INTERLOCK_HTTP_STATUS_CLASS = "http.response.status_code_class"  # "2xx".."5xx" on interlock.requests
INTERLOCK_RETRY_WAIT = "interlock.retry.wait_s"
INTERLOCK_HEDGE_TARGET = "interlock.hedge.target"
INTERLOCK_HEDGE_DELAY = "interlock.hedge.delay_s"
INTERLOCK_BREAKER_FROM = "interlock.breaker.from"
INTERLOCK_BREAKER_TO = "interlock.breaker.to"
INTERLOCK_BREAKER_REASON = "interlock.breaker.reason"

# span events on the routing span
EVENT_RETRY = "interlock.retry"
EVENT_FALLBACK = "interlock.fallback"
EVENT_HEDGE = "interlock.hedge"
EVENT_BREAKER = "interlock.breaker"

# --------------------------------------------------------------------------- #
# metric names, units and advised buckets
# --------------------------------------------------------------------------- #

METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"  # histogram {token}, gen_ai.token.type=input|output
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"  # histogram s, per attempt
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"  # histogram s, streamed attempts
METRIC_REQUESTS = "interlock.requests"  # counter; interlock.route, http.response.status_code_class
METRIC_COST = "interlock.cost"  # counter USD; gen_ai.provider.name, gen_ai.request.model, interlock.team
METRIC_FALLBACKS = "interlock.fallbacks"  # counter; interlock.route
# up-down counter USD; interlock.route: what fallbacks cost beyond (or saved against) the first choice
METRIC_FALLBACK_COST_DELTA = "interlock.fallback.cost_delta"
METRIC_RETRIES = "interlock.retries"  # counter; interlock.route
METRIC_BREAKER_STATE = "interlock.breaker.state"  # observable gauge; interlock.target; 0 closed 1 half_open 2 open
METRIC_BREAKER_TRIPS = "interlock.breaker.trips"  # counter; interlock.target
METRIC_IN_FLIGHT = "interlock.requests.in_flight"  # up-down counter
METRIC_OVERHEAD = "interlock.overhead"  # histogram s: request duration minus upstream wait

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
NO_ROUTE = "-"  # interlock.route for requests not served through a named route

#: interlock provider type -> gen_ai.provider.name (semconv well-known values; others are custom lowercase)
PROVIDER_NAMES: dict[str, str] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "groq": "groq",
    "together": "together_ai",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
    "ollama": "ollama",
    "replicate": "replicate",
    "gpustack": "gpustack",
}


def provider_name(provider_type: str) -> str:
    """``gen_ai.provider.name`` for an interlock provider type."""
    return PROVIDER_NAMES.get(provider_type, provider_type.lower())


# --------------------------------------------------------------------------- #
# settings: [telemetry] and OTEL_* variables
# --------------------------------------------------------------------------- #

CONFIG_KEYS: dict[str, type | tuple[type, ...]] = {
    "enabled": bool,
    "otlp_endpoint": str,
    "protocol": str,
    "headers": dict,
    "service_name": str,
    "sample_ratio": (int, float),
    "console": bool,
    "prometheus": bool,
    "capture_content": str,
    "content_max_chars": int,
    "export_timeout": (int, float),
    "propagate": bool,
}
PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_CONTENT_MAX_CHARS = 4096
DEFAULT_EXPORT_TIMEOUT = 5.0  # seconds per export call: a dead collector is given up on quickly


def check_config(table: Mapping[str, Any], problems: list[tuple[str, str]], path: str = "telemetry") -> dict[str, Any]:
    """Validate a ``[telemetry]`` table; returns it (problems are appended, config-style)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        typ = CONFIG_KEYS.get(key)
        if typ is None:
            problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(sorted(CONFIG_KEYS))})"))
            continue
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            problems.append((f"{path}.{key}", f"has the wrong type ({type(value).__name__})"))
            continue
        out[key] = value
    if out.get("protocol") not in (None, *PROTOCOLS):
        problems.append((f"{path}.protocol", f"must be one of {', '.join(PROTOCOLS)}"))
    if out.get("capture_content") not in (None, "no", "span"):
        problems.append((f"{path}.capture_content", 'must be "no" or "span"'))
    ratio = out.get("sample_ratio")
    if ratio is not None and not 0.0 <= float(ratio) <= 1.0:
        problems.append((f"{path}.sample_ratio", "must be between 0 and 1"))
    if out.get("content_max_chars", 1) <= 0:
        problems.append((f"{path}.content_max_chars", "must be positive"))
    if out.get("export_timeout", 1) <= 0:
        problems.append((f"{path}.export_timeout", "must be a positive number of seconds"))
    headers = out.get("headers")
    if headers is not None and not all(isinstance(v, str) for v in headers.values()):
        problems.append((f"{path}.headers", "must be a table of strings"))
    return out


@dataclass(slots=True)
class TelemetrySettings:
    """The resolved telemetry configuration: the ``[telemetry]`` table over the ``OTEL_*`` variables."""

    enabled: bool = True
    traces_exporters: list[str] = field(default_factory=list)  # otlp, console
    metrics_exporters: list[str] = field(default_factory=list)  # otlp, console, prometheus
    otlp_endpoint: str | None = None  # base URL (http: /v1/traces and /v1/metrics are appended)
    traces_endpoint: str | None = None  # signal-specific, verbatim
    metrics_endpoint: str | None = None
    protocol: str = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict)
    export_timeout: float = DEFAULT_EXPORT_TIMEOUT
    service_name: str = "interlock"
    resource_attributes: dict[str, str] = field(default_factory=dict)
    sampler: str = "parentbased_always_on"
    sampler_arg: float | None = None
    capture_content: bool = False
    content_max_chars: int = DEFAULT_CONTENT_MAX_CHARS
    propagate: bool = True  # send the attempt span's traceparent to providers
    metric_export_interval: float = 60.0  # seconds

    @property
    def any_exporter(self) -> bool:
        return self.enabled and bool(self.traces_exporters or self.metrics_exporters)

    @classmethod
    def resolve(cls, table: Mapping[str, Any] | None, environ: Mapping[str, str]) -> TelemetrySettings:
        """``[telemetry]`` wins over the standard variables; nothing set means no telemetry."""
        t = dict(table or {})
        s = cls()
        env = environ
        s.enabled = bool(t.get("enabled", True)) and env.get("OTEL_SDK_DISABLED", "").lower() != "true"
        s.otlp_endpoint = t.get("otlp_endpoint") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        if "otlp_endpoint" not in t:
            s.traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
            s.metrics_endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or None
        protocol = t.get("protocol") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        if protocol not in PROTOCOLS:
            log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%r is not supported (use grpc or http/protobuf); using http/protobuf",
                        protocol)
            protocol = "http/protobuf"
        s.protocol = protocol
        s.headers = _parse_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
        s.headers.update(t.get("headers") or {})
        if "export_timeout" in t:
            s.export_timeout = float(t["export_timeout"])
        elif env.get("OTEL_EXPORTER_OTLP_TIMEOUT"):
            s.export_timeout = _number(env["OTEL_EXPORTER_OTLP_TIMEOUT"], DEFAULT_EXPORT_TIMEOUT)
        s.resource_attributes = _parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        s.service_name = (
            t.get("service_name") or env.get("OTEL_SERVICE_NAME") or s.resource_attributes.get("service.name") or "interlock"
        )
        if "sample_ratio" in t:
            s.sampler, s.sampler_arg = "parentbased_traceidratio", float(t["sample_ratio"])
        else:
            s.sampler = env.get("OTEL_TRACES_SAMPLER", s.sampler).lower()
            if env.get("OTEL_TRACES_SAMPLER_ARG"):
                s.sampler_arg = _number(env["OTEL_TRACES_SAMPLER_ARG"], 1.0)
        s.traces_exporters = _exporters(env.get("OTEL_TRACES_EXPORTER"), bool(s.otlp_endpoint or s.traces_endpoint))
        s.metrics_exporters = _exporters(env.get("OTEL_METRICS_EXPORTER"), bool(s.otlp_endpoint or s.metrics_endpoint))
        if t.get("otlp_endpoint"):  # the config asked for OTLP explicitly
            s.traces_exporters = _add(s.traces_exporters, "otlp")
            s.metrics_exporters = _add(s.metrics_exporters, "otlp")
        if t.get("console"):
            s.traces_exporters = _add(s.traces_exporters, "console")
            s.metrics_exporters = _add(s.metrics_exporters, "console")
        if t.get("prometheus"):
            s.metrics_exporters = _add(s.metrics_exporters, "prometheus")
        capture = t.get("capture_content")
        if capture is None:
            capture = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT")
        s.capture_content = capture.strip().upper() in ("SPAN", "SPAN_ONLY", "SPAN_AND_EVENT", "TRUE")
        s.content_max_chars = int(t.get("content_max_chars", DEFAULT_CONTENT_MAX_CHARS))
        s.propagate = bool(t.get("propagate", True))
        if env.get("OTEL_METRIC_EXPORT_INTERVAL"):
            s.metric_export_interval = _number(env["OTEL_METRIC_EXPORT_INTERVAL"], 60000.0) / 1000
        return s


def _number(value: str, default: float) -> float:
    try:
        return float(value)
    except ValueError:
        return default


def _parse_pairs(value: str) -> dict[str, str]:
    """``k=v,k2=v2`` (URL-encoded values), as in OTEL_EXPORTER_OTLP_HEADERS / OTEL_RESOURCE_ATTRIBUTES."""
    out: dict[str, str] = {}
    for part in value.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip():
                out[urllib.parse.unquote(k.strip())] = urllib.parse.unquote(v.strip())
    return out


def _exporters(env_value: str | None, default_otlp: bool) -> list[str]:
    if env_value is None or not env_value.strip():
        return ["otlp"] if default_otlp else []
    names = []
    for name in env_value.split(","):
        name = name.strip().lower()
        if name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
            name = "otlp"
        if name and name != "none" and name not in names:
            names.append(name)
    return names


def _add(names: list[str], name: str) -> list[str]:
    return names if name in names else [*names, name]


_PARENTBASED_ALWAYS_ON = ParentBased(ALWAYS_ON)


def make_sampler(settings: TelemetrySettings) -> Sampler:
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


# --------------------------------------------------------------------------- #
# exporter plugins
# --------------------------------------------------------------------------- #


class TelemetryExporter(Exporter):
    """An exporter plugin that feeds the gateway's OpenTelemetry pipeline.

    It does not take decisions (the :class:`Telemetry` turns them into spans and
    metrics); it supplies a span exporter and/or a metric reader, built when the
    app starts, and optionally HTTP routes (Prometheus' ``GET /metrics``).
    """

    def span_processor(self) -> SpanProcessor | None:
        """A ready span processor, for exporters that batch their own way; None: wrap :meth:`span_exporter`."""
        return None

    def span_exporter(self) -> SpanExporter | None:
        """A span exporter, run in a ``BatchSpanProcessor`` (used when :meth:`span_processor` gives None)."""
        return None

    def metric_reader(self) -> MetricReader | None:
        return None

    def add_routes(self, app: web.Application) -> None:
        """Add HTTP routes to the gateway's app (called while the app is built)."""

    def record(self, decision: Decision) -> None:
        return None


# --------------------------------------------------------------------------- #
# the per-request trace
# --------------------------------------------------------------------------- #

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
        self.pipeline: _Pipeline = telemetry.pipeline  # type: ignore[assignment]
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


# --------------------------------------------------------------------------- #
# the gateway's telemetry
# --------------------------------------------------------------------------- #


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

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, {INTERLOCK_TARGET: k}) for k, v in list(self._breakers.items())]

    def breaker_transition(self, target: str, new: str) -> None:
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
        base = getattr(provider, "base_url", "") or ""
        if base not in self._addresses:
            parsed = urllib.parse.urlsplit(base)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            self._addresses[base] = (parsed.hostname, port) if parsed.hostname else None
        return self._addresses[base]

    def input_messages(self, body: Mapping[str, Any]) -> str:
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
        for exporter in exporters:
            if isinstance(exporter, TelemetryExporter):
                exporter.add_routes(app)


def batch_processor(exporter: SpanExporter, settings: TelemetrySettings) -> BatchSpanProcessor:
    """The SDK's ``BatchSpanProcessor`` for ``exporter``, its thread below the event loop's priority."""
    batch = BatchSpanProcessor(exporter, export_timeout_millis=settings.export_timeout * 1000)
    background_thread(getattr(getattr(batch, "_batch_processor", None), "_worker_thread", None))
    return batch


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


__all__ = [
    "NO_TRACE", "PROVIDER_NAMES", "RequestTrace", "Telemetry", "TelemetryExporter", "TelemetrySettings",
    "check_config", "current", "provider_name",
]
