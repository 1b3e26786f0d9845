"""An in-process OTLP receiver for tests: what a collector would get, decoded.

Built on ``opentelemetry-proto``: OTLP/HTTP (``application/x-protobuf``, gzip
or not, and ``application/json``) on an aiohttp app, and OTLP/gRPC on a
``grpc`` server when ``grpcio`` is installed (it ships with the OTLP grpc
exporter). Received spans and metric points are flattened into plain dicts::

    with OTLPReceiver().run_in_thread() as receiver:       # or: await receiver.start()
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_url}
        ...  # run the gateway, send traffic, stop it (spans flush on graceful shutdown)
        span = receiver.span("chat gpt-4o")
        assert span["attributes"]["gen_ai.provider.name"] == "openai"

Each span dict has ``name``, ``kind`` (``"SERVER"``, ``"CLIENT"``, ``"INTERNAL"``...),
``trace_id``/``span_id``/``parent_span_id`` (hex), ``attributes``, ``events``
(``[{"name", "attributes"}]``), ``status`` (``"UNSET"``, ``"OK"``, ``"ERROR"``),
``resource`` (attributes) and ``scope`` (instrumentation name). Each metric dict
has ``name``, ``unit``, ``type`` (``sum``, ``gauge``, ``histogram``...),
``resource`` and ``points`` (``[{"attributes", "value" | "count"/"sum"/"bounds"}]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["OTLPReceiver", "grpc_available"]

_KINDS = {v: k.removeprefix("SPAN_KIND_") for k, v in trace_pb2.Span.SpanKind.items()}
_STATUS = {v: k.removeprefix("STATUS_CODE_") for k, v in trace_pb2.Status.StatusCode.items()}


def grpc_available() -> bool:
    try:
        import grpc  # noqa: F401
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: F401
    except ImportError:
        return False
    return True


def value(v: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays become tuples, like SDK attributes)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(value(x) for x in v.array_value.values)
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, which)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


class OTLPReceiver:
    """Collects OTLP exports over http/protobuf and (optionally) grpc."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.exports: list[tuple[str, str]] = []  # (transport, signal) per export call received
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._grpc: Any = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    # -- decoding --------------------------------------------------------- #

    def add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> None:
        out = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append({
                        "name": span.name,
                        "kind": _KINDS.get(span.kind, str(span.kind)),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "attributes": attributes(span.attributes),
                        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in span.events],
                        "status": _STATUS.get(span.status.code, str(span.status.code)),
                        "resource": resource,
                        "scope": ss.scope.name,
                    })
        with self._lock:
            self.spans.extend(out)
            self.exports.append((transport, "traces"))

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest, transport: str) -> None:
        out = []
        for rm in request.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind) if kind else None
                    points = []
                    for p in getattr(data, "data_points", ()):
                        point: dict[str, Any] = {"attributes": attributes(p.attributes)}
                        if kind in ("histogram", "exponential_histogram"):
                            point.update(count=p.count, sum=p.sum)
                            if kind == "histogram":
                                point["bounds"] = tuple(p.explicit_bounds)
                        else:
                            point["value"] = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                        points.append(point)
                    out.append({"name": metric.name, "unit": metric.unit, "type": kind, "points": points,
                                "resource": resource, "scope": sm.scope.name})
        with self._lock:
            self.metrics.extend(out)
            self.exports.append((transport, "metrics"))

    # -- queries ---------------------------------------------------------- #

    def span(self, name: str) -> dict[str, Any]:
        """The one received span called ``name`` (AssertionError if none or several)."""
        found = [s for s in self.spans if s["name"] == name]
        assert len(found) == 1, f"expected one span {name!r}, got {len(found)}: {[s['name'] for s in self.spans]}"
        return found[0]

    def metric_names(self) -> set[str]:
        return {m["name"] for m in self.metrics}

    def points(self, name: str) -> list[dict[str, Any]]:
        return [p for m in self.metrics if m["name"] == name for p in m["points"]]

    def wait_for(self, predicate: Callable[[OTLPReceiver], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate(self)`` from a thread that is not the receiver's (sync tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    # -- OTLP/HTTP -------------------------------------------------------- #

    async def _http(self, request: web.Request) -> web.Response:
        signal = request.match_info["signal"]
        raw = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        types: dict[str, tuple[Any, Any]] = {
            "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
            "metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
            "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
        }
        if signal not in types:
            raise web.HTTPNotFound()
        req_type, resp_type = types[signal]
        message = req_type()
        is_json = request.content_type == "application/json"
        try:
            if is_json:
                json_format.Parse(raw, message)
            else:
                message.ParseFromString(raw)
        except Exception:
            raise web.HTTPBadRequest(text="not an OTLP export request") from None
        if signal == "traces":
            self.add_traces(message, "http")
        elif signal == "metrics":
            self.add_metrics(message, "http")
        if is_json:
            return web.Response(text=json_format.MessageToJson(resp_type()), content_type="application/json")
        return web.Response(body=resp_type().SerializeToString(), content_type="application/x-protobuf")

    @property
    def http_url(self) -> str:
        """The base endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``) for http/protobuf."""
        assert self.http_port is not None, "the http receiver is not started"
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        assert self.grpc_port is not None, "the grpc receiver is not started"
        return f"http://127.0.0.1:{self.grpc_port}"

    # -- OTLP/gRPC -------------------------------------------------------- #

    def _start_grpc(self, host: str, port: int) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (grpc's name)
                receiver.add_traces(request, "grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                receiver.add_metrics(request, "grpc")
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        # opentelemetry-proto's generated *_pb2_grpc modules carry no annotations (the package is py.typed)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]
        self.grpc_port = server.add_insecure_port(f"{host}:{port}")
        server.start()
        self._grpc = server

    # -- lifecycle -------------------------------------------------------- #

    async def start(self, host: str = "127.0.0.1", http_port: int = 0, grpc_port: int | None = 0) -> OTLPReceiver:
        """Listen for OTLP/HTTP, and OTLP/gRPC unless ``grpc_port`` is None or grpcio is missing."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/{signal}", self._http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, http_port)
        await site.start()
        self.http_port = self._runner.addresses[0][1]
        if grpc_port is not None and grpc_available():
            self._start_grpc(host, grpc_port)
        return self

    async def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OTLPReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self, host: str = "127.0.0.1") -> Iterator[OTLPReceiver]:
        """Serve from a private event loop in a daemon thread for the duration of the block."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="OTLPReceiver", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(host), loop).result(timeout=30)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
                loop.close()
