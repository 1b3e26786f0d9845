"""Traces and metrics: one fallback trace end to end, GenAI attribute shapes, propagation, content capture.

The gateway gets ``Telemetry.for_tests`` (an in-memory span exporter and metric
reader), so assertions see exactly what an OTLP backend would receive.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from interlock.core import config as config_mod
from interlock.core.telemetry import names as T
from interlock.core.config import ConfigError
from interlock.core.gateway import Gateway
from interlock.core.telemetry.request_trace import NO_TRACE, RequestTrace, current
from interlock.core.telemetry.runtime import Telemetry
from interlock.core.telemetry.settings import TelemetrySettings
from interlock.core.types import Decision
from interlock.testing import FakeOpenAI, Fault
from tests.conftest import GatewayFactory, openai_config
from tests.core._api_helpers import HELLO

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


def metrics(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """metric name -> data points"""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def metric_units(reader: InMemoryMetricReader) -> dict[str, str]:
    data = reader.get_metrics_data()
    return {m.name: m.unit for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


async def test_fallback_produces_one_complete_trace(
    fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    gw = await make_gateway(openai_config(fake.base_url), telemetry=Telemetry.for_tests(spans, reader))
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="smart", messages=HELLO, max_tokens=50, extra_headers={"traceparent": TRACEPARENT}
    )
    assert raw.headers["x-interlock-fallback"] == "true"

    finished = spans.get_finished_spans()
    (server,) = by_kind(finished, SpanKind.SERVER)
    (routing,) = by_kind(finished, SpanKind.INTERNAL)
    failed, ok = sorted(by_kind(finished, SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(finished) == 4

    # one trace, continuing the caller's: server -> routing -> attempts
    assert {format(s.context.trace_id, "032x") for s in finished} == {TRACE_ID}
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert server.parent.is_remote
    assert routing.parent is not None and routing.parent.span_id == server.context.span_id
    for attempt in (failed, ok):
        assert attempt.parent is not None and attempt.parent.span_id == routing.context.span_id

    assert server.name == "POST /v1/chat/completions"
    assert server.attributes[T.HTTP_RESPONSE_STATUS_CODE] == 200
    assert server.attributes[T.INTERLOCK_REQUEST_ID] == raw.headers["x-request-id"]

    assert routing.name == "route smart"
    ra = routing.attributes
    assert ra[T.INTERLOCK_ROUTE] == "smart"
    assert ra[T.INTERLOCK_STRATEGY] == "ordered"
    assert ra[T.INTERLOCK_CANDIDATES] == ("openai/gpt-4o", "backup/gpt-4o-mini")
    assert ra[T.INTERLOCK_FALLBACK_USED] is True
    assert ra[T.INTERLOCK_ATTEMPTS] == 2
    assert ra[T.INTERLOCK_TARGET] == "backup/gpt-4o-mini"
    assert ra[T.INTERLOCK_COST_USD] == pytest.approx(float(raw.headers["x-interlock-cost-usd"]))
    assert T.INTERLOCK_COST_DELTA_USD in ra
    (fallback_event,) = [e for e in routing.events if e.name == T.EVENT_FALLBACK]
    assert fallback_event.attributes == {T.INTERLOCK_TARGET: "openai/gpt-4o", T.ERROR_TYPE: "server_error"}

    # the failed attempt
    assert failed.name == "chat gpt-4o"
    fa = failed.attributes
    assert fa[T.GEN_AI_OPERATION_NAME] == "chat"
    assert fa[T.GEN_AI_PROVIDER_NAME] == "openai"
    assert fa[T.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert fa[T.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert fa[T.SERVER_ADDRESS] == "127.0.0.1" and fa[T.SERVER_PORT] == fake.port
    assert fa[T.ERROR_TYPE] == "server_error"
    assert fa[T.INTERLOCK_ACTION] == "fallback"
    assert fa[T.INTERLOCK_ATTEMPT_N] == 1
    assert fa[T.HTTP_RESPONSE_STATUS_CODE] == 500
    assert failed.status.status_code is StatusCode.ERROR
    assert T.GEN_AI_USAGE_INPUT_TOKENS not in fa

    # the successful attempt
    completion = raw.parse()
    assert ok.name == "chat gpt-4o-mini"
    oa = ok.attributes
    assert oa[T.GEN_AI_PROVIDER_NAME] == "openai"
    assert oa[T.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert oa[T.GEN_AI_RESPONSE_MODEL] == completion.model
    assert oa[T.GEN_AI_RESPONSE_ID] == completion.id
    assert oa[T.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert oa[T.GEN_AI_USAGE_INPUT_TOKENS] == completion.usage.prompt_tokens
    assert oa[T.GEN_AI_USAGE_OUTPUT_TOKENS] == completion.usage.completion_tokens
    assert oa[T.INTERLOCK_COST_USD] > 0
    assert oa[T.INTERLOCK_ATTEMPT_N] == 2
    assert ok.status.status_code is StatusCode.UNSET
    assert T.ERROR_TYPE not in oa and T.GEN_AI_REQUEST_STREAM not in oa
    # no content unless asked for
    assert not any(k in s.attributes for s in finished for k in (T.GEN_AI_INPUT_MESSAGES, T.GEN_AI_OUTPUT_MESSAGES))

    # each upstream request carried its own attempt span's traceparent
    chats = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert chats[-1].headers["traceparent"] == f"00-{TRACE_ID}-{format(ok.context.span_id, '016x')}-01"
    assert chats[-2].headers["traceparent"] == f"00-{TRACE_ID}-{format(failed.context.span_id, '016x')}-01"

    # metrics
    m = metrics(reader)
    units = metric_units(reader)
    assert units[T.METRIC_TOKEN_USAGE] == "{token}"
    assert units[T.METRIC_OPERATION_DURATION] == "s"
    assert units[T.METRIC_COST] == "USD"
    durations = {(p.attributes[T.GEN_AI_REQUEST_MODEL], p.attributes.get(T.ERROR_TYPE)): p for p in m[T.METRIC_OPERATION_DURATION]}
    assert set(durations) == {("gpt-4o", "server_error"), ("gpt-4o-mini", None)}
    assert list(durations[("gpt-4o-mini", None)].explicit_bounds) == list(T.DURATION_BUCKETS)
    tokens = {p.attributes[T.GEN_AI_TOKEN_TYPE]: p for p in m[T.METRIC_TOKEN_USAGE]}
    assert tokens["input"].sum == completion.usage.prompt_tokens
    assert tokens["output"].sum == completion.usage.completion_tokens
    assert list(tokens["input"].explicit_bounds) == list(T.TOKEN_BUCKETS)
    assert tokens["input"].attributes[T.GEN_AI_PROVIDER_NAME] == "openai"
    (requests,) = m[T.METRIC_REQUESTS]
    assert dict(requests.attributes) == {T.INTERLOCK_ROUTE: "smart", T.INTERLOCK_HTTP_STATUS_CLASS: "2xx"}
    assert requests.value == 1
    (fallbacks,) = m[T.METRIC_FALLBACKS]
    assert dict(fallbacks.attributes) == {T.INTERLOCK_ROUTE: "smart"} and fallbacks.value == 1
    (delta,) = m[T.METRIC_FALLBACK_COST_DELTA]  # the fallback to the cheaper mini saved money
    assert dict(delta.attributes) == {T.INTERLOCK_ROUTE: "smart"}
    assert delta.value == pytest.approx(ra[T.INTERLOCK_COST_DELTA_USD]) and delta.value < 0
    (cost,) = m[T.METRIC_COST]
    assert dict(cost.attributes) == {T.GEN_AI_PROVIDER_NAME: "openai", T.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"}
    assert cost.value == pytest.approx(oa[T.INTERLOCK_COST_USD])
    (in_flight,) = m[T.METRIC_IN_FLIGHT]
    assert in_flight.value == 0
    (overhead,) = m[T.METRIC_OVERHEAD]
    assert overhead.count == 1 and overhead.sum >= 0
    states = {p.attributes[T.INTERLOCK_TARGET]: p.value for p in m[T.METRIC_BREAKER_STATE]}
    assert states == {"openai/gpt-4o": 0, "backup/gpt-4o-mini": 0}
    # low cardinality: no request ids, users or prompts in any metric attribute
    for points in m.values():
        for p in points:
            assert not any("req_" in str(v) or "hello" in str(v) for v in p.attributes.values())


async def test_a_new_trace_without_traceparent_and_retries_are_events(
    fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    toml = openai_config(fake.base_url, "retries = 1\nbackoff = 0.01\n")
    gw = await make_gateway(toml, telemetry=Telemetry.for_tests(spans, reader))
    fake.add_fault(Fault(status=503, model="gpt-4o"))
    fake.add_fault(Fault(status=503, model="gpt-4o-mini"))
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    finished = spans.get_finished_spans()
    (server,) = by_kind(finished, SpanKind.SERVER)
    assert server.parent is None
    (routing,) = by_kind(finished, SpanKind.INTERNAL)
    names = [e.name for e in routing.events]
    assert T.EVENT_FALLBACK in names and T.EVENT_RETRY in names
    actions = [s.attributes.get(T.INTERLOCK_ACTION) for s in sorted(by_kind(finished, SpanKind.CLIENT), key=lambda s: s.start_time or 0)]
    assert actions == ["fallback", "retry", None]
    (retries,) = metrics(reader)[T.METRIC_RETRIES]
    assert retries.value == 1


async def test_retry_fallback_hedge_and_breaker_are_routing_span_events(spans: InMemorySpanExporter) -> None:
    telemetry = Telemetry.for_tests(spans)
    await telemetry.start()
    assert telemetry.pipeline is not None
    server, _ = telemetry.pipeline.server("POST /v1/chat/completions", {})
    assert server is not None
    rt = RequestTrace(telemetry, server)
    rt.retry("openai/gpt-4o", "rate_limited", 0.5)  # no routing span yet: nothing to note it on
    rt.planned(Decision("r1", 0.0, "chat", "smart", "smart", "ordered", ["openai/gpt-4o"], [], False))
    rt.retry("openai/gpt-4o", "rate_limited", 0.25)
    rt.fallback("openai/gpt-4o", "server_error")
    rt.hedge("openai/gpt-4o", "openai/gpt-4o-mini", 0.1)
    rt.breaker("openai/gpt-4o", "closed", "open", "5 failures")
    rt.close()
    rt.fallback("openai/gpt-4o-mini", "timeout")  # the routing span has ended
    server.end()
    await telemetry.close()
    (routing,) = by_kind(spans.get_finished_spans(), SpanKind.INTERNAL)
    assert [(e.name, dict(e.attributes or {})) for e in routing.events] == [
        (T.EVENT_RETRY, {T.INTERLOCK_TARGET: "openai/gpt-4o", T.ERROR_TYPE: "rate_limited", T.INTERLOCK_RETRY_WAIT: 0.25}),
        (T.EVENT_FALLBACK, {T.INTERLOCK_TARGET: "openai/gpt-4o", T.ERROR_TYPE: "server_error"}),
        (T.EVENT_HEDGE, {T.INTERLOCK_TARGET: "openai/gpt-4o", T.INTERLOCK_HEDGE_TARGET: "openai/gpt-4o-mini",
                         T.INTERLOCK_HEDGE_DELAY: 0.1}),
        (T.EVENT_BREAKER, {T.INTERLOCK_TARGET: "openai/gpt-4o", T.INTERLOCK_BREAKER_FROM: "closed",
                           T.INTERLOCK_BREAKER_TO: "open", T.INTERLOCK_BREAKER_REASON: "5 failures"}),
    ]
    # without a recorded trace the same calls do nothing
    NO_TRACE.retry("openai/gpt-4o", "rate_limited", 0.25)
    NO_TRACE.fallback("openai/gpt-4o", "server_error")
    NO_TRACE.hedge("openai/gpt-4o", "openai/gpt-4o-mini", 0.1)


async def test_all_targets_failing_marks_the_routing_span(
    fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    gw = await make_gateway(openai_config(fake.base_url), telemetry=Telemetry.for_tests(spans, reader))
    fake.add_fault(Fault(status=500, times=None))
    with pytest.raises(Exception):
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    finished = spans.get_finished_spans()
    (server,) = by_kind(finished, SpanKind.SERVER)
    (routing,) = by_kind(finished, SpanKind.INTERNAL)
    assert server.attributes[T.HTTP_RESPONSE_STATUS_CODE] == 502
    assert server.status.status_code is StatusCode.ERROR
    assert routing.status.status_code is StatusCode.ERROR
    assert routing.attributes[T.ERROR_TYPE] == "server_error"
    assert [s.attributes[T.ERROR_TYPE] for s in by_kind(finished, SpanKind.CLIENT)] == ["server_error", "server_error"]
    (requests,) = metrics(reader)[T.METRIC_REQUESTS]
    assert requests.attributes[T.INTERLOCK_HTTP_STATUS_CLASS] == "5xx"


async def test_content_capture_is_opt_in_and_truncated(
    fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter
) -> None:
    telemetry = Telemetry.for_tests(spans, capture_content=True, content_max_chars=40)
    gw = await make_gateway(openai_config(fake.base_url), telemetry=telemetry)
    long = "tell me a story " * 20
    completion = await gw.client.chat.completions.create(
        model="smart", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": long}]
    )
    (attempt,) = by_kind(spans.get_finished_spans(), SpanKind.CLIENT)
    inputs = json.loads(attempt.attributes[T.GEN_AI_INPUT_MESSAGES])
    assert [m["role"] for m in inputs] == ["system", "user"]
    assert inputs[0]["parts"] == [{"type": "text", "content": "be brief"}]
    user_text = inputs[1]["parts"][0]["content"]
    assert user_text.endswith("…") and len(user_text) == 40 - len("be brief") + 1
    outputs = json.loads(attempt.attributes[T.GEN_AI_OUTPUT_MESSAGES])
    assert outputs[0]["role"] == "assistant" and outputs[0]["finish_reason"] == "stop"
    assert completion.choices[0].message.content.startswith(outputs[0]["parts"][0]["content"].rstrip("…"))


def test_content_capture_follows_the_otel_variable() -> None:
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}
    assert TelemetrySettings.resolve({}, env).capture_content is True
    assert TelemetrySettings.resolve({}, {}).capture_content is False
    assert TelemetrySettings.resolve({"capture_content": "no"}, env).capture_content is False
    assert TelemetrySettings.resolve({"content_max_chars": 10}, {}).content_max_chars == 10


# --------------------------------------------------------------------------- #
# streaming: the attempt span stays open until the stream ends
# --------------------------------------------------------------------------- #


class SlowStream:
    """An OpenAI-wire upstream whose stream pauses after the first chunk until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.first_sent = asyncio.Event()
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
            body: dict[str, Any] = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1,
                                    "model": "gpt-4o-2024-08-06",
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
            if usage is not None:
                body["usage"] = usage
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        await resp.write(chunk({"role": "assistant", "content": "Hel"}))
        self.first_sent.set()
        await self.release.wait()
        await resp.write(chunk({"content": "lo"}))
        await resp.write(chunk({}, "stop"))
        await resp.write(chunk({}, usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}))
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def slow() -> AsyncIterator[tuple[SlowStream, str]]:
    upstream = SlowStream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield upstream, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    upstream.release.set()
    await runner.cleanup()


async def test_a_streamed_attempt_span_stays_open_until_the_stream_ends(
    slow: tuple[SlowStream, str], make_gateway: GatewayFactory, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    upstream, base_url = slow
    toml = f'[providers.openai]\nbase_url = "{base_url}"\napi_key = "sk-x"\n'
    gw = await make_gateway(toml, telemetry=Telemetry.for_tests(spans, reader))
    body = {"model": "openai/gpt-4o", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gw.base_url}/chat/completions", json=body) as resp:
            assert resp.status == 200
            first = await resp.content.readline()
            assert b"Hel" in first
            await asyncio.sleep(0.05)
            assert spans.get_finished_spans() == ()  # the stream is still going: nothing ended yet
            upstream.release.set()
            rest = await resp.read()
            assert b"[DONE]" in rest
    for _ in range(100):  # the server span ends as the handler returns
        if len(spans.get_finished_spans()) == 3:
            break
        await asyncio.sleep(0.01)
    finished = spans.get_finished_spans()
    (attempt,) = by_kind(finished, SpanKind.CLIENT)
    (server,) = by_kind(finished, SpanKind.SERVER)
    a = attempt.attributes
    assert attempt.name == "chat gpt-4o"
    assert a[T.GEN_AI_REQUEST_STREAM] is True
    assert a[T.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert a[T.GEN_AI_USAGE_INPUT_TOKENS] == 7 and a[T.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert a[T.GEN_AI_RESPONSE_ID] == "chatcmpl-slow"
    assert a[T.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[T.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert (attempt.end_time or 0) - (attempt.start_time or 0) >= 40_000_000  # covered the pause
    assert upstream.headers[0]["traceparent"].split("-")[2] == format(attempt.context.span_id, "016x")
    assert server.end_time >= attempt.end_time
    m = metrics(reader)
    (ttfc,) = m[T.METRIC_TIME_TO_FIRST_CHUNK]
    assert ttfc.count == 1 and ttfc.sum == pytest.approx(a[T.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK])
    (requests,) = m[T.METRIC_REQUESTS]
    assert requests.attributes[T.INTERLOCK_ROUTE] == T.NO_ROUTE


# --------------------------------------------------------------------------- #
# configuration and the no-op default
# --------------------------------------------------------------------------- #


async def test_nothing_configured_means_no_telemetry(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    assert gw.gateway.telemetry.active is False
    assert not any(e.name in ("otlp", "console", "prometheus") for e in gw.gateway.exporters)
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert "traceparent" not in fake.requests[-1].headers
    assert current() is NO_TRACE


async def test_sampled_out_requests_record_no_spans_but_metrics(
    fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    telemetry = Telemetry.for_tests(spans, reader, sampler="always_off")
    gw = await make_gateway(openai_config(fake.base_url), telemetry=telemetry)
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert spans.get_finished_spans() == ()
    assert metrics(reader)[T.METRIC_REQUESTS][0].value == 1
    # the provider still gets the trace context, marked not sampled
    version, trace_id, span_id, flags = fake.requests[-1].headers["traceparent"].split("-")
    assert (version, flags) == ("00", "00") and int(trace_id, 16) and int(span_id, 16)


async def test_upstream_trace_context_is_the_w3c_propagators(
    fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter
) -> None:
    """The headers the gateway writes are exactly what OpenTelemetry's W3C propagator writes, tracestate kept."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    gw = await make_gateway(openai_config(fake.base_url), telemetry=Telemetry.for_tests(spans))
    await gw.client.chat.completions.create(
        model="smart", messages=HELLO,
        extra_headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc,other=x-1"},
    )
    (attempt,) = by_kind(spans.get_finished_spans(), SpanKind.CLIENT)
    expected: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(expected, trace.set_span_in_context(trace.NonRecordingSpan(attempt.context)))
    sent = fake.requests[-1].headers
    assert expected["tracestate"] == "vendor=abc,other=x-1"
    assert {k: sent[k] for k in ("traceparent", "tracestate")} == expected
    # a new trace (no traceparent) is sampled: flags 01, and no tracestate is invented
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    version, trace_id, span_id, flags = fake.requests[-1].headers["traceparent"].split("-")
    assert (version, flags) == ("00", "01") and trace_id != TRACE_ID and int(span_id, 16)
    assert "tracestate" not in fake.requests[-1].headers


async def test_propagation_can_be_turned_off(
    fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter
) -> None:
    gw = await make_gateway(openai_config(fake.base_url), telemetry=Telemetry.for_tests(spans, propagate=False))
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert "traceparent" not in fake.requests[-1].headers
    assert len(by_kind(spans.get_finished_spans(), SpanKind.CLIENT)) == 1


def test_settings_from_otel_variables() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20x,team=a",
        "OTEL_SERVICE_NAME": "gw-1",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
    }
    s = TelemetrySettings.resolve({}, env)
    assert s.traces_exporters == ["otlp"] and s.metrics_exporters == ["prometheus", "otlp"]
    assert s.headers == {"authorization": "Bearer x", "team": "a"}
    assert s.service_name == "gw-1" and s.protocol == "http/protobuf"
    assert (s.sampler, s.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert TelemetrySettings.resolve({}, {"OTEL_SDK_DISABLED": "true", **env}).any_exporter is False
    assert TelemetrySettings.resolve({}, {}).any_exporter is False
    cfg = TelemetrySettings.resolve({"otlp_endpoint": "http://c:4317", "protocol": "grpc", "sample_ratio": 0.5,
                                     "console": True, "prometheus": True, "service_name": "x"}, env)
    assert cfg.otlp_endpoint == "http://c:4317" and cfg.protocol == "grpc" and cfg.service_name == "x"
    assert cfg.traces_exporters == ["otlp", "console"]
    assert cfg.metrics_exporters == ["prometheus", "otlp", "console"]
    assert (cfg.sampler, cfg.sampler_arg) == ("parentbased_traceidratio", 0.5)


def test_telemetry_config_is_validated(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        config_mod.parse({"telemetry": {"protocol": "http/json", "sample_ratio": 2, "bogus": 1, "console": "yes"}})
    paths = {p for p, _ in exc.value.problems}
    assert paths == {"telemetry.protocol", "telemetry.sample_ratio", "telemetry.bogus", "telemetry.console"}
    cfg = config_mod.parse({"telemetry": {"otlp_endpoint": "http://127.0.0.1:1", "capture_content": "span"}})
    gateway = Gateway(cfg, load_entrypoints=False, environ={})
    assert [e.name for e in gateway.exporters if e.name == "otlp"] == ["otlp"]
    assert gateway.telemetry.settings.capture_content is True


# a fresh interpreter: this test process has long since imported the SDK
_CONFIG_WITHOUT_SDK = """
import json, sys
from interlock.core import config
from interlock.core.telemetry.settings import TelemetrySettings

cfg = config.load(sys.argv[1], environ={})
settings = TelemetrySettings.resolve(cfg.telemetry, {})
try:
    config.parse({"telemetry": {"protocol": "http/json"}}, environ={})
except config.ConfigError as exc:
    problems = [path for path, _ in exc.problems]
print(json.dumps({"telemetry": cfg.telemetry, "exporters": settings.traces_exporters, "problems": problems,
                  "sdk": sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))}))
"""


def test_loading_and_checking_a_telemetry_config_does_not_import_the_sdk(tmp_path: Any) -> None:
    path = tmp_path / "interlock.toml"
    path.write_text('[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\nsample_ratio = 0.5\n')
    done = subprocess.run([sys.executable, "-c", _CONFIG_WITHOUT_SDK, str(path)],
                          capture_output=True, text=True, timeout=60, check=True)
    out = json.loads(done.stdout)
    assert out["telemetry"] == {"otlp_endpoint": "http://127.0.0.1:4318", "sample_ratio": 0.5}
    assert out["exporters"] == ["otlp"] and out["problems"] == ["telemetry.protocol"]
    assert out["sdk"] == []


async def test_prometheus_scrape_endpoint(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, "\n[telemetry]\nprometheus = true\n"))
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.root}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    for name in (
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_token_usage",
        "interlock_requests_total",
        "interlock_fallbacks_total",
        "interlock_cost_USD_total",
        "interlock_breaker_state",
        "interlock_overhead_seconds_bucket",
        "interlock_requests_in_flight",
    ):
        assert name in text, name
    assert 'interlock_route="smart"' in text


def test_provider_names_follow_the_semantic_conventions() -> None:
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv

    known = {v.value for v in semconv.GenAiProviderNameValues}
    for ours in ("openai", "anthropic", "gemini", "vertex", "bedrock", "mistral", "deepseek", "xai", "perplexity",
                 "cohere", "groq", "azure"):
        assert T.provider_name(ours) in known, ours
    for name in ("GEN_AI_OPERATION_NAME", "GEN_AI_PROVIDER_NAME", "GEN_AI_REQUEST_MODEL", "GEN_AI_RESPONSE_MODEL",
                 "GEN_AI_RESPONSE_ID", "GEN_AI_RESPONSE_FINISH_REASONS", "GEN_AI_USAGE_INPUT_TOKENS",
                 "GEN_AI_USAGE_OUTPUT_TOKENS", "GEN_AI_INPUT_MESSAGES", "GEN_AI_OUTPUT_MESSAGES", "GEN_AI_TOKEN_TYPE",
                 "GEN_AI_REQUEST_MAX_TOKENS", "GEN_AI_REQUEST_TEMPERATURE", "GEN_AI_REQUEST_TOP_P"):
        assert getattr(T, name) == getattr(semconv, name), name
    for name in ("GEN_AI_REQUEST_STREAM", "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK",
                 "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS", "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS",
                 "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS"):
        if hasattr(semconv, name):
            assert getattr(T, name) == getattr(semconv, name), name
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

    assert T.METRIC_TOKEN_USAGE == gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
    assert T.METRIC_OPERATION_DURATION == gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
    if hasattr(gen_ai_metrics, "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK"):
        assert T.METRIC_TIME_TO_FIRST_CHUNK == gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK


@pytest.mark.parametrize("door", ["responses", "messages"])
async def test_each_door_gives_one_trace_recording_its_protocol(
    door: str, fake: FakeOpenAI, make_gateway: GatewayFactory, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    """A Responses or Messages request falls back like a chat one: SERVER -> routing -> both attempts, one trace."""
    import anthropic

    gw = await make_gateway(openai_config(fake.base_url), telemetry=Telemetry.for_tests(spans, reader))
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    if door == "responses":
        raw = await gw.client.responses.with_raw_response.create(model="smart", input="hello", store=False)
        path = "/v1/responses"
    else:
        async with anthropic.AsyncAnthropic(base_url=gw.root, api_key="k", max_retries=0) as sdk:
            raw = await sdk.messages.with_raw_response.create(model="smart", max_tokens=50, messages=[
                {"role": "user", "content": "hello"}])
        path = "/v1/messages"
    assert raw.headers["x-interlock-fallback"] == "true"
    finished = spans.get_finished_spans()
    (server,) = by_kind(finished, SpanKind.SERVER)
    (routing,) = by_kind(finished, SpanKind.INTERNAL)
    attempts = by_kind(finished, SpanKind.CLIENT)
    assert len({s.context.trace_id for s in finished}) == 1 and len(attempts) == 2
    assert server.name == f"POST {path}"
    assert routing.parent is not None and routing.parent.span_id == server.context.span_id
    assert routing.attributes[T.INTERLOCK_PROTOCOL] == door
    assert routing.attributes[T.INTERLOCK_FALLBACK_USED] is True
    assert gw.log.last.protocol == door
