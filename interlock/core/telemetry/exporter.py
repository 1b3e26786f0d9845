"""The exporter plugins' side of telemetry: what an exporter supplies to the gateway's pipeline.

Exporters come from the exporter plugins (``otlp``, ``console``, ``prometheus``
in :mod:`interlock.plugins.exporters`), which register :class:`TelemetryExporter`
objects through ``register_exporters``. A plain span exporter is always run in
a ``BatchSpanProcessor`` (:func:`batch_processor`), so a slow or dead collector
costs dropped spans on a background thread, never request latency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from interlock.core.exporter import Exporter
from interlock.core.telemetry.settings import TelemetrySettings
from interlock.core.threads import background_thread
from interlock.core.types import Decision

if TYPE_CHECKING:
    from aiohttp import web



class TelemetryExporter(Exporter):
    """An exporter plugin that feeds the gateway's OpenTelemetry pipeline.

    It does not take decisions (the gateway's
    :class:`~interlock.core.telemetry.runtime.Telemetry` turns them into spans
    and metrics); it supplies a span exporter and/or a metric reader, built when
    the app starts, and optionally HTTP routes (Prometheus' ``GET /metrics``).
    """

    def span_processor(self) -> SpanProcessor | None:
        """A ready span processor, for exporters that batch their own way; None: wrap :meth:`span_exporter`."""
        return None

    def span_exporter(self) -> SpanExporter | None:
        """A span exporter, run in a ``BatchSpanProcessor`` (used when :meth:`span_processor` gives None)."""
        return None

    def metric_reader(self) -> MetricReader | None:
        """A metric reader for the gateway's ``MeterProvider``; None: this exporter takes no metrics."""
        return None

    def add_routes(self, app: web.Application) -> None:
        """Add HTTP routes to the gateway's app (called while the app is built)."""

    def record(self, decision: Decision) -> None:
        """Nothing: the :class:`~interlock.core.telemetry.runtime.Telemetry` records decisions for all of them."""
        return None


def batch_processor(exporter: SpanExporter, settings: TelemetrySettings) -> BatchSpanProcessor:
    """The SDK's ``BatchSpanProcessor`` for ``exporter``, its thread below the event loop's priority."""
    batch = BatchSpanProcessor(exporter, export_timeout_millis=settings.export_timeout * 1000)
    background_thread(getattr(getattr(batch, "_batch_processor", None), "_worker_thread", None))
    return batch


__all__ = ["TelemetryExporter", "batch_processor"]
