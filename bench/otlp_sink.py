"""A minimal OTLP/HTTP receiver for the benchmark: accepts ``POST /v1/traces`` (and
``/v1/metrics``, ``/v1/logs``), counts export requests and spans, and answers 200.

interlock exports spans in batches to it during the benchmark, so the cost of
telemetry is part of what is measured while the receiver stays cheap. The span
count is read with ``GET /stats`` at the end of the run: zero spans means the
gateway exported nothing (telemetry off or not implemented), which the report
says. Protobuf bodies are decoded with ``opentelemetry-proto`` when it is
installed; otherwise only requests and bytes are counted.
Run: ``python bench/otlp_sink.py --port 4318``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import signal

from aiohttp import web

try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
except ImportError:  # pragma: no cover - counting requests still works
    ExportTraceServiceRequest = ExportTraceServiceResponse = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", action="store_true",
                        help="run under Linux's SCHED_IDLE policy: only when the CPU is otherwise idle")
    args = parser.parse_args()
    if args.idle and hasattr(os, "SCHED_IDLE"):
        # The sink stands in for a collector on another machine. On the benchmark's load-generator
        # CPU, decoding a batch of 512 spans (~0.6 ms) would otherwise hold up the fake upstream
        # on the same CPU, and the requests waiting on it would count as interlock's added latency.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    stats = {"trace_exports": 0, "spans": 0, "bytes": 0, "other_exports": 0, "decode_errors": 0}
    empty = ExportTraceServiceResponse().SerializeToString() if ExportTraceServiceResponse else b""

    async def traces(request: web.Request) -> web.Response:
        raw = await request.read()
        stats["trace_exports"] += 1
        stats["bytes"] += len(raw)
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        if ExportTraceServiceRequest is not None and "json" not in request.content_type:
            try:
                msg = ExportTraceServiceRequest.FromString(raw)
                stats["spans"] += sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
            except Exception:
                stats["decode_errors"] += 1
        return web.Response(body=empty, content_type="application/x-protobuf")

    async def other(request: web.Request) -> web.Response:
        await request.read()
        stats["other_exports"] += 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", other)
    app.router.add_post("/v1/logs", other)
    app.router.add_get("/stats", get_stats)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"otlp sink ready on {args.port}", flush=True)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
