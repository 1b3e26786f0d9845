"""EncodingSpanProcessor: spans encoded as they end, sent in batches through the exporter's transport."""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from interlock.plugins.exporters.otlp import EncodingSpanProcessor


class RecordingExporter:
    """Stands in for the fast OTLP exporter: keeps every request body it is asked to send."""

    sends_encoded = True

    def __init__(self, fail: bool = False) -> None:
        self.bodies: list[bytes] = []
        self.counts: list[int] = []
        self.shut = False
        self.fail = fail
        self.sent = threading.Event()

    def export_encoded(self, encode: Any, count: int) -> SpanExportResult:
        self.bodies.append(encode())
        self.counts.append(count)
        self.sent.set()
        return SpanExportResult.FAILURE if self.fail else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True


def _provider(processor: Any, sampler: Any = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    kwargs = {"sampler": sampler} if sampler is not None else {}
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}), **kwargs)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def _spans_in(body: bytes) -> list[Any]:
    msg = ExportTraceServiceRequest.FromString(body)
    return [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _make_request_spans(tracer: trace.Tracer, i: int) -> None:
    with tracer.start_as_current_span(f"POST /v1/chat/completions {i}", kind=trace.SpanKind.SERVER) as server:
        server.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span("route smart", attributes={"interlock.candidates": ["a/x", "b/y"]}):
            with tracer.start_as_current_span("chat x", kind=trace.SpanKind.CLIENT) as client:
                client.set_attributes({"gen_ai.usage.input_tokens": i, "interlock.cost_usd": 0.5 * i})
                client.add_event("retry", {"error.type": "timeout"})


def test_batches_carry_exactly_what_the_official_encoder_produces() -> None:
    exporter = RecordingExporter()
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000, max_export_batch_size=4)
    provider, memory = _provider(processor)
    tracer = provider.get_tracer("interlock", "1.0", schema_url="https://opentelemetry.io/schemas/1.37.0")
    for i in range(5):
        _make_request_spans(tracer, i)
    assert processor.force_flush()
    finished = memory.get_finished_spans()
    assert len(finished) == 15
    # batches of at most 4, in the order the spans ended, nothing lost or repeated
    assert all(count <= 4 for count in exporter.counts) and sum(exporter.counts) == 15
    joined = b"".join(exporter.bodies)
    assert len(exporter.bodies) == 4
    offset = 0
    for count in exporter.counts:
        expected = official_encode(finished[offset:offset + count]).SerializeToString()
        assert expected in joined
        offset += count
    names = [s.name for body in exporter.bodies for s in _spans_in(body)]
    assert names == [s.name for s in finished]
    provider.shutdown()
    assert exporter.shut


def test_a_full_batch_wakes_the_export_thread_without_waiting_for_the_timer() -> None:
    exporter = RecordingExporter()
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000, max_export_batch_size=3)
    provider, _ = _provider(processor)
    _make_request_spans(provider.get_tracer("t"), 1)  # three spans: one full batch
    assert exporter.sent.wait(10), "a full batch was not exported before the 60 s timer"
    assert exporter.counts[0] == 3
    provider.shutdown()


def test_shutdown_sends_what_is_queued() -> None:
    exporter = RecordingExporter()
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000, max_export_batch_size=512)
    provider, _ = _provider(processor)
    for i in range(3):
        _make_request_spans(provider.get_tracer("t"), i)
    assert exporter.bodies == []
    provider.shutdown()
    assert sum(exporter.counts) == 9 and exporter.shut
    assert not processor.force_flush()  # after shutdown nothing more is accepted


def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    exporter = RecordingExporter()
    gate = threading.Lock()
    gate.acquire()
    original = exporter.export_encoded
    entered = threading.Event()

    def blocked(encode: Any, count: int) -> SpanExportResult:
        entered.set()
        with gate:  # the collector hangs: the queue must stay bounded
            return original(encode, count)

    exporter.export_encoded = blocked  # type: ignore[method-assign]
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000, max_queue_size=6,
                                      max_export_batch_size=6)
    provider, _ = _provider(processor)
    tracer = provider.get_tracer("t")
    _make_request_spans(tracer, 0)
    _make_request_spans(tracer, 1)  # 6 spans: a batch, taken by the (hanging) export
    assert entered.wait(10)
    for i in range(2, 6):
        _make_request_spans(tracer, i)  # 12 more: 6 queue, 6 are dropped
    assert processor.dropped == 6
    assert len(processor._queue) == 6
    gate.release()
    provider.shutdown()
    assert sum(exporter.counts) == 12


def test_unsampled_spans_are_not_encoded() -> None:
    exporter = RecordingExporter()
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000)
    provider, _ = _provider(processor, sampler=ALWAYS_OFF)
    _make_request_spans(provider.get_tracer("t"), 1)
    provider.shutdown()
    assert exporter.counts == []


def test_a_failed_export_is_not_retried_by_the_processor_and_nothing_raises() -> None:
    exporter = RecordingExporter(fail=True)  # the exporter's own client already retried
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000)
    provider, _ = _provider(processor)
    _make_request_spans(provider.get_tracer("t"), 1)
    assert processor.force_flush()
    assert exporter.counts == [3]
    provider.shutdown()
    assert exporter.counts == [3]
