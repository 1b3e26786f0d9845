"""``otlp``: traces and metrics to an OpenTelemetry collector over OTLP (http/protobuf or grpc).

Enabled by ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the signal-specific
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``),
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER=otlp``, or ``[telemetry]
otlp_endpoint``. ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``[telemetry] protocol``)
picks ``http/protobuf`` (default, port 4318) or ``grpc`` (port 4317). Spans go
through a ``BatchSpanProcessor`` and metrics through a periodic reader, both on
their own threads; each export call gives up after ``export_timeout`` seconds
(5 by default), so an unreachable collector drops telemetry and never slows or
fails a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace.export import SpanExporter

from interlock import hookimpl
from interlock.core.exporter import Exporter
from interlock.core.telemetry import TelemetryExporter, TelemetrySettings


class OTLPExporter(TelemetryExporter):
    name = "otlp"

    def __init__(self, settings: TelemetrySettings, *, traces: bool = True, metrics: bool = True) -> None:
        self.settings = settings
        self.traces = traces
        self.metrics = metrics

    def _endpoint(self, signal: str, specific: str | None) -> str | None:
        if specific:
            return specific  # signal-specific endpoints are used verbatim
        base = self.settings.otlp_endpoint
        if base is None:
            return None
        if self.settings.protocol == "grpc":
            return base
        return f"{base.rstrip('/')}/v1/{signal}"

    def _grpc_kwargs(self, endpoint: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.settings.headers or None, "timeout": self.settings.export_timeout}
        if endpoint is not None:
            kwargs["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                kwargs["insecure"] = True
        return kwargs

    def span_exporter(self) -> SpanExporter | None:
        if not self.traces:
            return None
        endpoint = self._endpoint("traces", self.settings.traces_endpoint)
        if self.settings.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

            return GrpcSpanExporter(**self._grpc_kwargs(endpoint))
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, headers=self.settings.headers or None,
                                timeout=self.settings.export_timeout)

    def metric_reader(self) -> MetricReader | None:
        if not self.metrics:
            return None
        endpoint = self._endpoint("metrics", self.settings.metrics_endpoint)
        exporter: Any
        if self.settings.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

            exporter = GrpcMetricExporter(**self._grpc_kwargs(endpoint))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(endpoint=endpoint, headers=self.settings.headers or None,
                                          timeout=self.settings.export_timeout)
        interval = self.settings.metric_export_interval * 1000
        return PeriodicExportingMetricReader(exporter, export_interval_millis=interval,
                                             export_timeout_millis=self.settings.export_timeout * 1000)


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    telemetry = settings.get("telemetry")
    if not isinstance(telemetry, TelemetrySettings) or not telemetry.enabled:
        return
    traces, metrics = "otlp" in telemetry.traces_exporters, "otlp" in telemetry.metrics_exporters
    if traces or metrics:
        register(OTLPExporter(telemetry, traces=traces, metrics=metrics))
