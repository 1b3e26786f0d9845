"""The gateway's own spans (``telemetry.spans.GatewaySpan``) behave as SDK spans do for processors, plugins and limits.

The gateway records its spans without the SDK's ``Span`` class (see the class
docstring); these tests hold it to what span processors, instrumentations and
exporters rely on: ``on_start`` with a live, writable span and its parent
context, one ``on_end`` per span, validated writes through the API, OK as a
final status, the value length limit from the environment, and the span being
the current OpenTelemetry span while a provider is called.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from interlock.core.telemetry import names as T
from interlock.core.telemetry.runtime import Telemetry
from interlock.core.telemetry.settings import TelemetrySettings
from interlock.core.telemetry.spans import _SAMPLED, GatewaySpan
from interlock.testing import FakeOpenAI
from tests.conftest import GatewayFactory, openai_config
from tests.core._api_helpers import HELLO


class Tagging(SpanProcessor):
    """Writes to each span at on_start, as baggage or resource-tagging processors do; records what it saw."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.ended: list[int] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        parent = trace.get_current_span(parent_context).get_span_context() if parent_context is not None else None
        self.started.append((span.name, parent.span_id if parent is not None and parent.is_valid else None))
        span.set_attribute("tag.team", "payments")
        span.set_attribute("tag.list", ["a", "b"])  # cleaned as the SDK's span does: a tuple
        span.set_attribute("tag.bad", object())  # not an attribute value: None, as in the SDK

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.context.span_id)


async def traced(make_gateway: GatewayFactory, fake: FakeOpenAI, *processors: SpanProcessor,
                 settings: TelemetrySettings | None = None) -> tuple[InMemorySpanExporter, Any]:
    spans = InMemorySpanExporter()
    telemetry = Telemetry(settings or TelemetrySettings(), span_processors=[*processors, SimpleSpanProcessor(spans)])
    gw = await make_gateway(openai_config(fake.base_url), telemetry=telemetry)
    return spans, gw


async def test_processors_see_each_span_start_live_and_end_once(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    tagging = Tagging()
    spans, gw = await traced(make_gateway, fake, tagging)
    await gw.client.chat.completions.create(model="smart", messages=HELLO)

    finished = spans.get_finished_spans()
    assert all(type(s) is GatewaySpan for s in finished)
    by_kind = {s.kind: s for s in finished}
    server, routing, attempt = by_kind[SpanKind.SERVER], by_kind[SpanKind.INTERNAL], by_kind[SpanKind.CLIENT]
    # on_start: every span, in order, with its parent in the context
    assert [name for name, _ in tagging.started] == ["POST /v1/chat/completions", "route smart", "chat gpt-4o"]
    assert [parent for _, parent in tagging.started] == [None, server.context.span_id, routing.context.span_id]
    # what on_start wrote is on the finished span, cleaned
    for span in finished:
        assert span.attributes["tag.team"] == "payments"
        assert span.attributes["tag.list"] == ("a", "b")
        assert span.attributes["tag.bad"] is None
    assert sorted(tagging.ended) == sorted(s.context.span_id for s in finished)
    assert attempt.attributes[T.GEN_AI_REQUEST_MODEL] == "gpt-4o"


async def test_the_attempt_span_is_current_during_the_provider_call(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    spans, gw = await traced(make_gateway, fake)
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    (attempt,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    traceparent = fake.requests[-1].headers["traceparent"]
    assert traceparent == f"00-{attempt.context.trace_id:032x}-{attempt.context.span_id:016x}-01"
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached after the request


def test_api_writes_after_end_are_ignored_and_ok_is_final() -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(TelemetrySettings(), span_processors=[SimpleSpanProcessor(exporter)])
    import asyncio

    asyncio.run(telemetry.start())
    pipeline = telemetry.pipeline
    assert pipeline is not None
    ctx = trace.SpanContext(1, 2, False, _SAMPLED)
    span = GatewaySpan(pipeline, "s", ctx, None, SpanKind.INTERNAL)
    span.set_status(StatusCode.UNSET)
    assert span.status.status_code is StatusCode.UNSET
    span.set_status(Status(StatusCode.OK))
    span.set_status(Status(StatusCode.ERROR, "too late"))  # OK is final, as in the SDK
    assert span.status.status_code is StatusCode.OK
    span.add_event("e", {"n": 1, "l": [1, 2]})
    try:
        raise ValueError("boom")
    except ValueError as exc:
        span.record_exception(exc)
    span.end()
    span.end()
    span.set_attribute("late", 1)
    span.add_event("late")
    span.update_name("renamed")
    (finished,) = exporter.get_finished_spans()
    assert finished is span and span.name == "s" and "late" not in span.attributes
    assert [e.name for e in span.events] == ["e", "exception"]
    assert dict(span.events[0].attributes) == {"n": 1, "l": (1, 2)}
    assert span.events[1].attributes["exception.type"] == "ValueError"
    assert span.events[1].attributes["exception.message"] == "boom"
    assert not span.is_recording()
    asyncio.run(telemetry.close())


async def test_value_length_limit_from_the_environment(
    fake: FakeOpenAI, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "5")
    spans, gw = await traced(make_gateway, fake, settings=TelemetrySettings(capture_content=True))
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    finished = spans.get_finished_spans()
    (routing,) = [s for s in finished if s.kind is SpanKind.INTERNAL]
    (attempt,) = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert attempt.attributes[T.GEN_AI_INPUT_MESSAGES] == '[{"ro'
    assert attempt.attributes[T.GEN_AI_REQUEST_MODEL] == "gpt-4"
    assert routing.attributes[T.INTERLOCK_CANDIDATES] == ("opena", "backu")
    assert attempt.attributes[T.GEN_AI_USAGE_INPUT_TOKENS] > 0  # numbers are not cut
