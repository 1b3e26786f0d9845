"""``prometheus``: the gateway's metrics as a Prometheus scrape endpoint, ``GET /metrics``.

Enabled by ``[telemetry] prometheus = true`` or ``OTEL_METRICS_EXPORTER=prometheus``;
needs the ``prometheus`` extra (``pip install 'interlock[prometheus]'``:
``opentelemetry-exporter-prometheus`` and ``prometheus_client``). Each gateway
has its own collector registry, so nothing is process-global. OpenTelemetry
names become Prometheus names (``interlock.requests`` ->
``interlock_requests_total``, ``gen_ai.client.operation.duration`` ->
``gen_ai_client_operation_duration_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from opentelemetry.sdk.metrics.export import MetricReader

from interlock import hookimpl
from interlock.core.exporter import Exporter
from interlock.core.telemetry.exporter import TelemetryExporter
from interlock.core.telemetry.settings import TelemetrySettings

log = logging.getLogger("interlock.telemetry")


class PrometheusExporter(TelemetryExporter):
    name = "prometheus"
    path = "/metrics"

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=True)
        self._reader: MetricReader | None = None

    def metric_reader(self) -> MetricReader | None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        if self._reader is None:
            self._reader = PrometheusMetricReader(registry=self.registry)
        return self._reader

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.path, self.scrape)

    async def scrape(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = await asyncio.to_thread(generate_latest, self.registry)  # collection runs the SDK's aggregation
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def available() -> bool:
    try:
        import opentelemetry.exporter.prometheus  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    telemetry = settings.get("telemetry")
    if not isinstance(telemetry, TelemetrySettings) or not telemetry.enabled:
        return
    if "prometheus" not in telemetry.metrics_exporters:
        return
    if not available():
        raise ValueError("telemetry.prometheus needs the 'prometheus' extra: pip install 'interlock[prometheus]'")
    register(PrometheusExporter())
