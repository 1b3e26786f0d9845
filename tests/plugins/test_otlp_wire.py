"""``otlp_wire.encode_spans`` against the official OTLP encoder, and the http exporter built on it.

Every encoding test compares bytes with
``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans).SerializeToString()``
on real SDK spans (a ``TracerProvider`` into an in-memory exporter), so any
difference in field order, defaults, grouping, flags or value encoding fails.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode_spans
from opentelemetry.exporter.otlp.proto.http import trace_exporter as official_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from interlock.core.telemetry import names as T
from interlock.core.telemetry.runtime import Telemetry
from interlock.core.telemetry.spans import GatewaySpan
from interlock.plugins.exporters import otlp as otlp_plugin
from interlock.plugins.exporters import otlp_wire
from interlock.plugins.exporters.otlp_wire import encode_spans
from interlock.testing import FakeOpenAI, Fault
from interlock.testing.otlp import OTLPReceiver
from tests.conftest import GatewayFactory, openai_config
from tests.core._api_helpers import HELLO

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def official(spans: Sequence[ReadableSpan]) -> bytes:
    return official_encode_spans(spans).SerializeToString()  # type: ignore[no-any-return]


def assert_same(spans: Sequence[ReadableSpan]) -> None:
    ours, theirs = encode_spans(spans), official(spans)
    if ours != theirs:
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
        pytest.fail(f"{len(ours)} vs {len(theirs)} bytes, first difference at {at}:\n"
                    f"  ours   {ours[max(0, at - 24):at + 24].hex(' ')}\n  theirs {theirs[max(0, at - 24):at + 24].hex(' ')}\n"
                    f"  spans {[s.name for s in spans]}")


def provider(exporter: InMemorySpanExporter, resource: Resource, limits: SpanLimits | None = None) -> TracerProvider:
    tp = TracerProvider(resource=resource, span_limits=limits)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def remote_context() -> Any:
    carrier = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc,other=x-1"}
    return TraceContextTextMapPropagator().extract(carrier)


# every attribute value shape the SDK lets through
VALUES: dict[str, Any] = {
    "str": "gpt-4o-mini",
    "str.empty": "",
    "str.unicode": "héllo wörld ✓ 日本語 🚀",
    "str.long": "x" * 300,  # length needs a two-byte varint
    "str.huge": "y" * 20_000,  # three-byte varint
    "str.125": "z" * 125,  # the edges of the one-byte fast path
    "str.126": "z" * 126,
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.127": 127,
    "int.128": 128,
    "int.16383": 16383,
    "int.16384": 16384,
    "int.negative": -1,
    "int.negative.big": -123456789012,
    "int.min": INT64_MIN,
    "int.max": INT64_MAX,
    "float.zero": 0.0,
    "float.negzero": -0.0,
    "float.nan": math.nan,
    "float.inf": math.inf,
    "float.neginf": -math.inf,
    "float.tiny": 5e-324,
    "float.cost": 5.2e-05,
    "seq.str": ("openai/gpt-4o", "backup/gpt-4o-mini"),
    "seq.str.list": ["a", "", "ü"],
    "seq.str.long": ("q" * 200, "r"),
    "seq.str.edges": ("e" * 125, "e" * 126, "e" * 127),
    "seq.str.big": ("b" * 60,) * 3,  # the array itself needs a two-byte length
    "seq.str.126": ("a" * 122,),  # an array of exactly 126 bytes
    "seq.bool": (True, False),
    "seq.int": (0, -1, INT64_MAX, INT64_MIN, 300),
    "seq.float": (0.0, -0.0, 1.5, math.inf),
    "seq.empty": (),
}


@pytest.fixture(scope="module")
def corpus() -> list[ReadableSpan]:
    """SDK spans with every field the encoder writes: kinds, parents, remote parents, trace state,
    events, links, statuses, dropped counts, two resources (one with an equal twin) and three scopes."""
    exporter = InMemorySpanExporter()
    res_a = Resource({"service.name": "interlock", "host.name": "h1", "deployment.count": 3}, "https://schema/a")
    res_a_twin = Resource({"service.name": "interlock", "host.name": "h1", "deployment.count": 3}, "https://schema/a")
    res_b = Resource({"service.name": "other", "bytes": b"\x00\xff", "seq": ("a", "b")})
    limited = SpanLimits(max_span_attributes=3, max_events=2, max_links=1,
                         max_event_attributes=1, max_link_attributes=1, max_attribute_length=5)
    tp_a, tp_twin = provider(exporter, res_a), provider(exporter, res_a_twin)
    tp_b, tp_limited = provider(exporter, res_b), provider(exporter, res_a, limited)
    scoped = tp_a.get_tracer("interlock", "1.2.3", schema_url="https://schema/scope",
                             attributes={"scope.attr": "v", "scope.n": 1})
    scoped_again = tp_a.get_tracer("interlock", "1.2.3", schema_url="https://schema/scope",
                                   attributes={"scope.attr": "v", "scope.n": 1})  # equal, distinct object
    bare = tp_a.get_tracer("bare")
    other = tp_b.get_tracer("other-scope", "0.1")

    with scoped.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER,
                                      context=remote_context()) as server:
        server.set_attributes({"http.request.method": "POST", "http.response.status_code": 200})
        with scoped.start_as_current_span("route smart", attributes=VALUES) as route:
            route.add_event("interlock.fallback", {"interlock.target": "openai/gpt-4o", "error.type": "server_error"})
            route.add_event("no-attributes")
            route.add_event("", {"k": ""}, timestamp=0)  # empty name, zero time (a default: not written)
            for kind in SpanKind:
                with bare.start_as_current_span(f"kind {kind.name}", kind=kind) as s:
                    s.set_attribute("kind", kind.name)
            links = [Link(server.get_span_context(), {"link.attr": 1, "b": True}),
                     Link(route.get_span_context()),
                     Link(SpanContext(int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True,
                                      trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")])))]
            with scoped_again.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, links=links) as failed:
                failed.set_status(Status(StatusCode.ERROR, "upstream said 500"))
            with scoped.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as ok:
                ok.set_status(Status(StatusCode.OK))
            with scoped.start_as_current_span("error without description") as s:
                s.set_status(Status(StatusCode.ERROR))
            with scoped.start_as_current_span("error with empty description") as s:
                s.set_status(Status(StatusCode.ERROR, ""))
    with tp_twin.get_tracer("interlock", "1.2.3", schema_url="https://schema/scope",
                            attributes={"scope.attr": "v", "scope.n": 1}).start_as_current_span("twin resource"):
        pass
    with other.start_as_current_span("producer", kind=SpanKind.PRODUCER) as p:
        p.set_attribute("messaging.system", "kafka")
        with other.start_as_current_span("consumer", kind=SpanKind.CONSUMER):
            pass
    with tp_limited.get_tracer("limited").start_as_current_span(
        "limited", links=[Link(server.get_span_context(), {"a": 1, "b": 2}), Link(server.get_span_context())],
    ) as s:
        s.set_attributes({f"attr.{i}": f"value-{i}" for i in range(10)})
        for i in range(5):
            s.add_event(f"event {i}", {"x": i, "y": "long string truncated"})
    with bare.start_as_current_span("no attributes at all"):
        pass
    with bare.start_as_current_span("remote parent without trace state", context=TraceContextTextMapPropagator()
                                    .extract({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})):
        pass
    spans = list(exporter.get_finished_spans())
    assert len(spans) >= 17
    return spans


def test_each_span_encodes_like_the_official_encoder(corpus: list[ReadableSpan]) -> None:
    for span in corpus:
        assert_same([span])


def test_a_batch_groups_by_resource_and_scope_like_the_official_encoder(corpus: list[ReadableSpan]) -> None:
    assert_same(corpus)
    rng = random.Random(7)
    for _ in range(30):  # the grouping order is the order of first appearance
        shuffled = corpus[:]
        rng.shuffle(shuffled)
        assert_same(shuffled)
        assert_same(shuffled[: rng.randint(1, len(shuffled))])


def test_span_contexts_read_by_position_or_by_property_give_the_same_bytes(
    corpus: list[ReadableSpan], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = [encode_spans([span]) for span in corpus]
    assert any(span.parent is not None and span.parent.is_remote for span in corpus)  # flags of a remote parent
    monkeypatch.setattr(otlp_wire, "CONTEXT_IS_TUPLE", False)  # what a changed layout falls back to
    assert [encode_spans([span]) for span in corpus] == fast
    for span in corpus:
        assert_same([span])


def test_empty_batch() -> None:
    assert encode_spans([]) == official([]) == b""


def test_the_official_protobuf_class_reads_our_bytes(corpus: list[ReadableSpan]) -> None:
    request = ExportTraceServiceRequest.FromString(encode_spans(corpus))
    by_name = {s.name: (rs, ss, s) for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert len(by_name) == len(corpus)
    # the equal twin resource and the equal second scope object share their groups
    assert len(request.resource_spans) == 2
    rs, ss, server = by_name["POST /v1/chat/completions"]
    assert rs.schema_url == "https://schema/a" and ss.schema_url == "https://schema/scope"
    assert {kv.key: kv.value.string_value for kv in rs.resource.attributes}["host.name"] == "h1"
    assert ss.scope.name == "interlock" and ss.scope.version == "1.2.3"
    assert [kv.key for kv in ss.scope.attributes] == ["scope.attr", "scope.n"]
    assert {"route smart", "chat gpt-4o", "twin resource"} <= {s.name for s in ss.spans}
    assert server.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert server.trace_id.hex() == TRACE_ID and server.parent_span_id.hex() == PARENT_ID
    assert server.trace_state == "vendor=abc,other=x-1"
    assert server.flags == trace_pb2.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | trace_pb2.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
    _, _, route = by_name["route smart"]
    assert route.parent_span_id == server.span_id
    assert route.flags == trace_pb2.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
    values = {kv.key: kv.value for kv in route.attributes}
    assert values["int.min"].int_value == INT64_MIN and values["int.max"].int_value == INT64_MAX
    assert values["str.unicode"].string_value == VALUES["str.unicode"]
    assert values["str.empty"].WhichOneof("value") == "string_value"
    assert values["bool.false"].WhichOneof("value") == "bool_value"
    assert math.isnan(values["float.nan"].double_value) and math.copysign(1, values["float.negzero"].double_value) < 0
    assert [v.string_value for v in values["seq.str"].array_value.values] == list(VALUES["seq.str"])
    assert values["seq.empty"].WhichOneof("value") == "array_value" and not values["seq.empty"].array_value.values
    assert [e.name for e in route.events] == ["interlock.fallback", "no-attributes", ""]
    _, _, failed = by_name["chat gpt-4o"]
    assert failed.status.code == trace_pb2.Status.STATUS_CODE_ERROR and failed.status.message == "upstream said 500"
    assert [link.flags for link in failed.links] == [0x100, 0x100, 0x300]
    _, _, limited = by_name["limited"]
    assert (limited.dropped_attributes_count, limited.dropped_events_count, limited.dropped_links_count) == (7, 3, 1)
    assert by_name["kind CONSUMER"][2].kind == trace_pb2.Span.SPAN_KIND_CONSUMER


def random_scalar(rng: random.Random, kind: str) -> Any:
    if kind == "str":
        return "".join(rng.choice("aé✓🚀 -_/x") for _ in range(rng.choice([0, 1, 5, 40, 130, 700])))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([rng.randint(0, 127), rng.randint(128, 20000), rng.randint(-(2**40), 2**40),
                           rng.randint(INT64_MIN, INT64_MAX), INT64_MIN, INT64_MAX])
    return rng.choice([rng.uniform(-1e9, 1e9), 0.0, -0.0, math.inf, -math.inf, math.nan, rng.random()])


def random_value(rng: random.Random) -> Any:
    kind = rng.choice(["str", "bool", "int", "float"])
    if rng.random() < 0.25:  # a homogeneous sequence, sometimes empty
        return tuple(random_scalar(rng, kind) for _ in range(rng.randint(0, 6)))
    return random_scalar(rng, kind)


def test_random_spans_encode_like_the_official_encoder() -> None:
    rng = random.Random(42)
    exporter = InMemorySpanExporter()
    tp = provider(exporter, Resource({"service.name": "rand"}))
    tracers = [tp.get_tracer(f"scope-{i}", rng.choice([None, "1.0"])) for i in range(3)]
    for i in range(300):
        tracer = rng.choice(tracers)
        # some keys repeat with many distinct values (beyond the per-key value cache), some are new
        attrs = {rng.choice(["model", "id", f"k{rng.randint(0, 50)}", f"uniq{i}"]): random_value(rng)
                 for _ in range(rng.randint(0, 25))}
        with tracer.start_as_current_span(f"span {i % 7}", kind=rng.choice(list(SpanKind)), attributes=attrs) as s:
            if rng.random() < 0.3:
                s.add_event("e", {"v": random_value(rng)})
            if rng.random() < 0.2:
                s.set_status(Status(rng.choice(list(StatusCode)), "why"))
    spans = list(exporter.get_finished_spans())
    for span in spans:
        assert_same([span])
    for start in range(0, len(spans), 64):
        assert_same(spans[start:start + 64])


def test_cache_eviction_does_not_change_the_bytes(corpus: list[ReadableSpan], monkeypatch: pytest.MonkeyPatch) -> None:
    for cache in ("_KEYS", "_PAIRS", "_HEADER_CACHE", "_NAMES"):  # start cold
        monkeypatch.setattr(otlp_wire, cache, {})
    monkeypatch.setattr(otlp_wire, "_cached_values", 0)
    monkeypatch.setattr(otlp_wire, "_KEYS_MAX", 4)
    monkeypatch.setattr(otlp_wire, "_CACHED_VALUES_MAX", 3)
    monkeypatch.setattr(otlp_wire, "_HEADER_CACHE_MAX", 1)
    monkeypatch.setattr(otlp_wire, "_NAMES_MAX", 2)
    for _ in range(2):  # cold, then with whatever survived
        assert_same(corpus)
    assert len(otlp_wire._KEYS) <= 4 and len(otlp_wire._HEADER_CACHE) <= 1 and len(otlp_wire._NAMES) <= 2
    assert sum(len(pairs) for pairs in otlp_wire._PAIRS.values()) <= 3


class Color(enum.IntEnum):
    RED = 7


class Tag(str):
    pass


def test_values_the_sdk_would_not_produce_are_handled_like_the_official_encoder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hand-built ReadableSpans (and the SDK's Span class itself) bypass attribute cleaning."""
    ctx = SpanContext(int(TRACE_ID, 16), 0x1122334455667788, is_remote=False)
    attributes = {
        "none": None,
        "bytes": b"\x00\x01\xff",
        "bytearray": bytearray(b"ab"),  # a Sequence: an array of ints, as the official encoder does
        "mapping": {"a": 1, 2: ["x", None], "nested": {"deep": True}},
        "mixed": [1, "two", 3.0, None, b"4"],
        "intenum": Color.RED,
        "strsub": Tag("tagged"),
        "too big": 2**63,  # dropped (out of int64), like the official encoder
        "too small": -(2**63) - 1,
        "in a list": [1, 2**64],  # the whole attribute is dropped
        "surrogate": "\ud800",  # not UTF-8 encodable: dropped
        "object": object(),  # unsupported type: dropped
        "": "empty key",
        "after": "still here",
    }
    with caplog.at_level(logging.CRITICAL):  # both encoders log the dropped ones
        spans = [
            ReadableSpan("manual", context=ctx, attributes=attributes, resource=Resource({}),
                         instrumentation_scope=None),  # no scope: an empty scope message
            ReadableSpan("unfinished", context=ctx, start_time=5, end_time=None,
                         instrumentation_scope=InstrumentationScope("s", None, None)),
            ReadableSpan("", context=ctx, start_time=None, end_time=7, kind=SpanKind.CLIENT),
        ]
        for span in spans:
            assert_same([span])
        assert_same(spans)
    decoded = ExportTraceServiceRequest.FromString(encode_spans(spans[:1])).resource_spans[0].scope_spans[0]
    keys = [kv.key for kv in decoded.spans[0].attributes]
    assert keys == ["none", "bytes", "bytearray", "mapping", "mixed", "intenum", "strsub", "", "after"]
    assert decoded.scope.name == "" and not decoded.schema_url


def test_remembered_values_never_answer_for_equal_values_of_another_type() -> None:
    """1 == True == 1.0 and ("a",) == ("a",) as a tuple subclass: the (key, value) cache must not mix them up."""
    ctx = SpanContext(int(TRACE_ID, 16), 0x1122334455667788, is_remote=False)
    values: list[Any] = [1, True, 1.0, "1", ("1",), 0, False, 0.0, "", (), Color.RED, 7, 7.0, Tag("1"), ["1"]]
    spans = [ReadableSpan(f"s{i}", context=ctx, attributes={"same.key": v}, resource=Resource({}),
                          instrumentation_scope=None) for i, v in enumerate(values)]
    for _ in range(2):  # cold, then every value remembered
        for span in spans:
            assert_same([span])
        assert_same(list(reversed(spans)))
    decoded = [ExportTraceServiceRequest.FromString(encode_spans([s])).resource_spans[0].scope_spans[0].spans[0]
               .attributes[0].value.WhichOneof("value") for s in spans]
    assert decoded[:5] == ["int_value", "bool_value", "double_value", "string_value", "array_value"]


def test_sdk_span_objects_take_the_generic_path() -> None:
    """Not exactly ReadableSpan (the SDK's Span subclass): read through the public properties."""
    tp = TracerProvider(resource=Resource({"r": 1}))
    tracer = tp.get_tracer("t")
    spans = []
    for kind in SpanKind:
        span = tracer.start_span(f"live {kind.name}", kind=kind, attributes=VALUES, context=remote_context())
        span.add_event("e", {"a": 1})
        span.set_status(Status(StatusCode.ERROR, "x"))
        span.end()
        spans.append(span)
    assert type(spans[0]) is not ReadableSpan
    assert_same(spans)


async def test_real_gateway_spans_encode_like_the_official_encoder(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    spans = InMemorySpanExporter()
    gw = await make_gateway(openai_config(fake.base_url), telemetry=Telemetry.for_tests(spans))
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
    finished = list(spans.get_finished_spans())
    assert {s.kind for s in finished} == {SpanKind.SERVER, SpanKind.INTERNAL, SpanKind.CLIENT}
    assert {type(s) for s in finished} == {GatewaySpan}  # the field-reading path
    assert_same(finished)


# --------------------------------------------------------------------------- #
# the http exporter
# --------------------------------------------------------------------------- #


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver().run_in_thread() as r:
        yield r


@pytest.fixture
def official_encoder_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports that still went through the official encoder fail."""
    def broken(spans: Any) -> Any:
        raise AssertionError("the official encoder was used")

    monkeypatch.setattr(official_http, "encode_spans", broken)


def test_http_exporter_sends_our_bytes(
    corpus: list[ReadableSpan], receiver: OTLPReceiver, official_encoder_broken: None
) -> None:
    exporter = otlp_plugin.http_span_exporter(endpoint=f"{receiver.http_url}/v1/traces", timeout=5)
    assert isinstance(exporter, official_http.OTLPSpanExporter)
    try:
        assert exporter.export(corpus) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert exporter.export(corpus) is SpanExportResult.FAILURE  # after shutdown, like the official one
    assert sorted(s["name"] for s in receiver.spans) == sorted(s.name for s in corpus)
    assert receiver.span("chat gpt-4o")["status"] == "ERROR"


def test_http_exporter_fails_a_batch_over_the_size_limit(
    corpus: list[ReadableSpan], receiver: OTLPReceiver
) -> None:
    exporter = otlp_plugin.http_span_exporter(endpoint=f"{receiver.http_url}/v1/traces", max_request_size=100)
    try:
        assert exporter.export(corpus) is SpanExportResult.FAILURE
        assert exporter.export(corpus[:1]) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert receiver.spans == []


def test_http_exporter_reports_http_errors(corpus: list[ReadableSpan], receiver: OTLPReceiver) -> None:
    exporter = otlp_plugin.http_span_exporter(endpoint=f"{receiver.http_url}/v1/nothing-here", timeout=2)
    try:
        assert exporter.export(corpus) is SpanExportResult.FAILURE  # 404: not retryable
    finally:
        exporter.shutdown()


def test_http_exporter_without_the_seam_falls_back_to_the_official_export(
    corpus: list[ReadableSpan], receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class OldClient:  # a transport client without export(bytes), as a future version might have
        def shutdown(self) -> None:
            pass

    calls: list[int] = []
    monkeypatch.setattr(official_http.OTLPSpanExporter, "export",
                        lambda self, spans: calls.append(len(spans)) or SpanExportResult.SUCCESS)
    monkeypatch.setattr(otlp_plugin, "_fallback_logged", False)
    exporter = otlp_plugin.http_span_exporter(endpoint=f"{receiver.http_url}/v1/traces")
    exporter._client = OldClient()
    with caplog.at_level(logging.DEBUG, logger=otlp_plugin.__name__):
        exporter._wire_send = exporter._find_seam()
        exporter._find_seam()
    assert exporter._wire_send is None
    assert [r.levelno for r in caplog.records if "fast span encoder is off" in r.getMessage()] == [logging.DEBUG]
    assert exporter.export(corpus) is SpanExportResult.SUCCESS and calls == [len(corpus)]
    exporter.shutdown()


def test_http_exporter_reads_the_requests_environment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine collector.example login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))

    def session_of(endpoint: str) -> Any:
        exporter = otlp_plugin.http_span_exporter(endpoint=endpoint)
        session = exporter._wire_session
        exporter.shutdown()
        return session

    proxied = session_of("http://collector.example:4318/v1/traces")
    assert proxied.trust_env is False  # no per-request netrc / proxy / CA lookups
    assert proxied.proxies["http"] == "http://proxy.example:3128"
    assert proxied.auth == ("user", "secret")
    assert proxied.verify == str(tmp_path / "ca.pem")
    bypassed = session_of("http://bypassed.example:4318/v1/traces")
    assert bypassed.proxies == {} and bypassed.auth is None


# --------------------------------------------------------------------------- #
# end to end: the otlp exporter plugin in a running gateway
# --------------------------------------------------------------------------- #


async def test_gateway_exports_a_real_request_through_the_plugin(
    fake: FakeOpenAI, make_gateway: GatewayFactory, receiver: OTLPReceiver, official_encoder_broken: None
) -> None:
    toml = openai_config(fake.base_url, f'\n[telemetry]\notlp_endpoint = "{receiver.http_url}"\n'
                                        'service_name = "interlock-wire-test"\n')
    gw = await make_gateway(toml)
    assert [e.name for e in gw.gateway.exporters if e.name == "otlp"] == ["otlp"]
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.headers["x-interlock-fallback"] == "true"
    await gw.gateway.telemetry.close()  # flushes the batch processor through the exporter
    assert ("http", "traces") in receiver.exports
    server = receiver.span("POST /v1/chat/completions")
    routing = receiver.span("route smart")
    failed, ok = receiver.span("chat gpt-4o"), receiver.span("chat gpt-4o-mini")
    assert (server["kind"], routing["kind"], failed["kind"], ok["kind"]) == ("SERVER", "INTERNAL", "CLIENT", "CLIENT")
    assert routing["parent_span_id"] == server["span_id"]
    assert failed["parent_span_id"] == ok["parent_span_id"] == routing["span_id"]
    assert server["resource"]["service.name"] == "interlock-wire-test" and server["scope"] == "interlock"
    assert routing["attributes"][T.INTERLOCK_CANDIDATES] == ("openai/gpt-4o", "backup/gpt-4o-mini")
    assert routing["attributes"][T.INTERLOCK_FALLBACK_USED] is True
    assert [e["name"] for e in routing["events"]] == [T.EVENT_FALLBACK]
    assert failed["status"] == "ERROR" and ok["attributes"][T.GEN_AI_USAGE_INPUT_TOKENS] > 0
