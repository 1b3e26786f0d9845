"""EncodingSpanProcessor: spans encoded as they end, sent in batches through the exporter's transport."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from opentelemetry.exporter.otlp.proto.http import Compression

from interlock.plugins.exporters.otlp import EncodingSpanProcessor, http_span_exporter


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


# --------------------------------------------------------------------------- #
# loop mode: batches posted from the event loop the processor was built in
# --------------------------------------------------------------------------- #


class Collector:
    """A bare OTLP/http endpoint on the test's loop: answers each POST with the next queued status."""

    def __init__(self, statuses: Sequence[int] = ()) -> None:
        self.statuses = list(statuses)
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.answered: list[int] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        status = self.statuses.pop(0) if self.statuses else 200
        self.answered.append(status)
        body = await request.read()
        if status == 200:
            self.bodies.append(body)
        return web.Response(status=status, headers={"Retry-After": "0"} if status == 503 else None,
                            body=b"" if status == 200 else b"busy")

    async def __aenter__(self) -> Collector:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1/traces"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def names(self) -> list[str]:
        return [s.name for body in self.bodies for s in _spans_in(body)]


def _on_loop(collector: Collector, headers: dict[str, str] | None = None,
             **options: Any) -> tuple[EncodingSpanProcessor, TracerProvider, InMemorySpanExporter]:
    """A loop-mode processor (built on the running loop) posting to ``collector``, in a provider."""
    exporter = http_span_exporter(endpoint=collector.url, headers=headers, timeout=5)
    processor = EncodingSpanProcessor(exporter, loop=asyncio.get_running_loop(),
                                      **{"schedule_delay_millis": 60_000, **options})
    provider, memory = _provider(processor)
    return processor, provider, memory


async def _until(predicate: Any, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_loop_mode_posts_full_batches_from_the_event_loop_without_a_thread() -> None:
    async with Collector() as collector:
        processor, provider, memory = _on_loop(collector, {"x-tenant": "t1"}, max_export_batch_size=3)
        assert processor.sender is not None and processor._thread is None
        _make_request_spans(provider.get_tracer("t"), 1)  # one full batch: sent without waiting for the timer
        assert await _until(lambda: len(collector.bodies) == 1)
        assert collector.names() == [s.name for s in memory.get_finished_spans()]
        assert collector.headers[0]["Content-Type"] == "application/x-protobuf"
        assert collector.headers[0]["x-tenant"] == "t1"
        await asyncio.to_thread(provider.shutdown)


async def test_loop_mode_timer_sends_a_partial_batch() -> None:
    async with Collector() as collector:
        _, provider, _ = _on_loop(collector, schedule_delay_millis=20)
        _make_request_spans(provider.get_tracer("t"), 1)
        assert await _until(lambda: len(collector.names()) == 3)
        await asyncio.to_thread(provider.shutdown)


async def test_loop_mode_retries_a_busy_collector_then_delivers() -> None:
    async with Collector([503, 503]) as collector:
        _, provider, _ = _on_loop(collector, max_export_batch_size=3)
        _make_request_spans(provider.get_tracer("t"), 1)
        assert await _until(lambda: len(collector.bodies) == 1)
        assert collector.answered == [503, 503, 200]
        await asyncio.to_thread(provider.shutdown)


async def test_loop_mode_does_not_retry_a_rejected_batch_and_nothing_raises() -> None:
    async with Collector([400]) as collector:
        _, provider, _ = _on_loop(collector, max_export_batch_size=3)
        tracer = provider.get_tracer("t")
        _make_request_spans(tracer, 1)
        assert await _until(lambda: collector.answered == [400])
        _make_request_spans(tracer, 2)  # the next batch goes out as usual
        assert await _until(lambda: len(collector.bodies) == 1)
        assert collector.answered == [400, 200]
        await asyncio.to_thread(provider.shutdown)


async def test_loop_mode_shutdown_from_another_thread_sends_what_is_queued() -> None:
    async with Collector() as collector:
        processor, provider, _ = _on_loop(collector)
        for i in range(3):
            _make_request_spans(provider.get_tracer("t"), i)
        assert collector.bodies == []
        await asyncio.to_thread(provider.shutdown)  # as Telemetry.close does
        assert len(collector.names()) == 9
        assert processor.sender is not None and processor.sender._session is None  # closed on its loop


async def test_compression_or_no_running_loop_keeps_the_export_thread() -> None:
    exporter = http_span_exporter(endpoint="http://127.0.0.1:9/v1/traces", compression=Compression.Gzip)
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000, loop=asyncio.get_running_loop())
    assert processor.sender is None and processor._thread is not None  # gzip on the loop would stall it
    processor.shutdown()
    plain = http_span_exporter(endpoint="http://127.0.0.1:9/v1/traces")
    threaded = EncodingSpanProcessor(plain, schedule_delay_millis=60_000)
    assert threaded.sender is None and threaded._thread is not None
    threaded.shutdown()


async def test_spans_ended_on_the_loop_are_encoded_on_its_next_turn() -> None:
    """A request's spans end before its response is written; their encoding must not delay it."""
    exporter = RecordingExporter()
    processor = EncodingSpanProcessor(exporter, schedule_delay_millis=60_000, loop=asyncio.get_running_loop())
    provider, _ = _provider(processor)
    _make_request_spans(provider.get_tracer("t"), 1)
    assert len(processor._queue) == 0 and len(processor._ended) == 3
    await asyncio.sleep(0)
    assert len(processor._queue) == 3 and len(processor._ended) == 0
    _make_request_spans(provider.get_tracer("t"), 2)
    await asyncio.to_thread(provider.shutdown)  # what has not been encoded yet is sent too
    assert sum(exporter.counts) == 6
