"""``console``: spans (and periodic metrics) printed to stdout as JSON, for development.

Enabled by ``[telemetry] console = true`` or ``OTEL_TRACES_EXPORTER=console`` /
``OTEL_METRICS_EXPORTER=console``. Spans are batched like every other exporter's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from interlock import hookimpl
from interlock.core.exporter import Exporter
from interlock.core.telemetry.exporter import TelemetryExporter
from interlock.core.telemetry.settings import TelemetrySettings


class ConsoleExporter(TelemetryExporter):
    name = "console"

    def __init__(self, settings: TelemetrySettings, *, traces: bool = True, metrics: bool = True) -> None:
        self.settings = settings
        self.traces = traces
        self.metrics = metrics

    def span_exporter(self) -> SpanExporter | None:
        return ConsoleSpanExporter() if self.traces else None

    def metric_reader(self) -> MetricReader | None:
        if not self.metrics:
            return None
        return PeriodicExportingMetricReader(
            ConsoleMetricExporter(), export_interval_millis=self.settings.metric_export_interval * 1000
        )


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    telemetry = settings.get("telemetry")
    if not isinstance(telemetry, TelemetrySettings) or not telemetry.enabled:
        return
    traces, metrics = "console" in telemetry.traces_exporters, "console" in telemetry.metrics_exporters
    if traces or metrics:
        register(ConsoleExporter(telemetry, traces=traces, metrics=metrics))
