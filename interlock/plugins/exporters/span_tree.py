"""``tree``: each request's trace printed to the terminal as a compact span tree.

For reading traces without a trace backend (``interlock serve --demo`` turns it on):
``[telemetry] tree = true`` or ``OTEL_TRACES_EXPORTER=tree`` (with others:
``OTEL_TRACES_EXPORTER=tree,otlp``). A trace is printed once its root span ends, one line per
span, indented by depth, with the attributes a reader looks for first::

    trace 1d9693536ca8271b37389409db38727b  POST /v1/chat/completions  HTTP 200  15.3 ms
    └─ route smart  backup/gpt-4o-mini  strategy=ordered  fallback=yes  $0.000003  14.7 ms
       ├─ chat gpt-4o  via openai  overloaded  then fallback  HTTP 503  error=overloaded  1.3 ms
       └─ chat gpt-4o-mini  via backup  ok  in=1  out=4  $0.000003  13.3 ms

Spans are batched like every other exporter's, off the request path; a trace whose root never
arrives (sampled out, or the process stopped) is dropped after :data:`MAX_PENDING` traces.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from interlock import hookimpl
from interlock.core.exporter import Exporter
from interlock.core.telemetry import names
from interlock.core.telemetry.exporter import TelemetryExporter
from interlock.core.telemetry.settings import TelemetrySettings

#: traces waiting for their root span
MAX_PENDING = 1000

# (attribute, how it is shown): the facts a reader looks for first, in this order
_SHOWN: tuple[tuple[str, str], ...] = (
    (names.INTERLOCK_TARGET, "{}"),
    (names.INTERLOCK_PROVIDER, "via {}"),
    (names.INTERLOCK_STRATEGY, "strategy={}"),
    (names.INTERLOCK_RULE, "rule={}"),
    (names.INTERLOCK_OUTCOME, "{}"),
    (names.INTERLOCK_ACTION, "then {}"),
    (names.HTTP_RESPONSE_STATUS_CODE, "HTTP {}"),
    (names.INTERLOCK_FALLBACK_USED, "fallback={}"),
    (names.GEN_AI_USAGE_INPUT_TOKENS, "in={}"),
    (names.GEN_AI_USAGE_OUTPUT_TOKENS, "out={}"),
    (names.INTERLOCK_COST_USD, "${:.6f}"),
    (names.ERROR_TYPE, "error={}"),
)


class SpanTreeExporter(SpanExporter):
    """Collects spans per trace and prints the tree when the root span arrives."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        finished: list[list[ReadableSpan]] = []
        with self._lock:
            for span in spans:
                if span.context is None:
                    continue
                trace = self._pending.setdefault(span.context.trace_id, [])
                trace.append(span)
                if span.parent is None or not span.parent.is_valid:
                    finished.append(self._pending.pop(span.context.trace_id))
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        out = self._out or sys.stdout
        for trace in finished:
            out.write(render(trace) + "\n")
        out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._pending.clear()


def render(spans: Sequence[ReadableSpan]) -> str:
    """One trace as an indented tree (children in start order)."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in by_id else None
        children.setdefault(parent, []).append(span)
    for kids in children.values():
        kids.sort(key=lambda s: s.start_time or 0)
    lines: list[str] = []
    for root in children.get(None, []):
        trace_id = f"{root.context.trace_id:032x}" if root.context is not None else "?"
        lines.append(f"trace {trace_id}  {_describe(root)}")
        _walk(root, children, "", lines)
    return "\n".join(lines)


def _walk(span: ReadableSpan, children: Mapping[int | None, list[ReadableSpan]], prefix: str, lines: list[str]) -> None:
    kids = children.get(span.context.span_id if span.context is not None else None, [])
    for i, kid in enumerate(kids):
        last = i == len(kids) - 1
        lines.append(f"{prefix}{'└─' if last else '├─'} {_describe(kid)}")
        _walk(kid, children, prefix + ("   " if last else "│  "), lines)


def _describe(span: ReadableSpan) -> str:
    attrs: Mapping[str, Any] = span.attributes or {}
    parts = [span.name]
    for key, shown in _SHOWN:
        value = attrs.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif "{:" in shown and not isinstance(value, (int, float)):
            continue
        parts.append(shown.format(value))
    if span.start_time is not None and span.end_time is not None:
        parts.append(f"{(span.end_time - span.start_time) / 1e6:.1f} ms")
    return "  ".join(str(p) for p in parts)


class SpanTreeTelemetry(TelemetryExporter):
    name = "tree"

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out

    def span_exporter(self) -> SpanExporter | None:
        return SpanTreeExporter(self.out)


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    telemetry = settings.get("telemetry")
    if isinstance(telemetry, TelemetrySettings) and telemetry.enabled and "tree" in telemetry.traces_exporters:
        register(SpanTreeTelemetry())
