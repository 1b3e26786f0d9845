"""Telemetry settings: the ``[telemetry]`` table over the standard ``OTEL_*`` variables.

:func:`check_config` validates the table while the config is loaded and
:meth:`TelemetrySettings.resolve` merges it with the environment when a gateway
is built. Neither needs OpenTelemetry, so this module imports only the standard
library: loading or checking a config never pays for the SDK (the exporters and
the span pipeline, which do, read the resolved settings later).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("interlock.telemetry")

#: the ``[telemetry]`` keys and the type(s) each accepts
CONFIG_KEYS: dict[str, type | tuple[type, ...]] = {
    "enabled": bool,
    "otlp_endpoint": str,
    "protocol": str,
    "headers": dict,
    "service_name": str,
    "sample_ratio": (int, float),
    "console": bool,
    "tree": bool,
    "prometheus": bool,
    "capture_content": str,
    "content_max_chars": int,
    "export_timeout": (int, float),
    "propagate": bool,
}
PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_CONTENT_MAX_CHARS = 4096
DEFAULT_EXPORT_TIMEOUT = 5.0  # seconds per export call: a dead collector is given up on quickly


def check_config(table: Mapping[str, Any], problems: list[tuple[str, str]], path: str = "telemetry") -> dict[str, Any]:
    """Validate a ``[telemetry]`` table; returns it (problems are appended, config-style)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        typ = CONFIG_KEYS.get(key)
        if typ is None:
            problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(sorted(CONFIG_KEYS))})"))
            continue
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            problems.append((f"{path}.{key}", f"has the wrong type ({type(value).__name__})"))
            continue
        out[key] = value
    if out.get("protocol") not in (None, *PROTOCOLS):
        problems.append((f"{path}.protocol", f"must be one of {', '.join(PROTOCOLS)}"))
    if out.get("capture_content") not in (None, "no", "span"):
        problems.append((f"{path}.capture_content", 'must be "no" or "span"'))
    ratio = out.get("sample_ratio")
    if ratio is not None and not 0.0 <= float(ratio) <= 1.0:
        problems.append((f"{path}.sample_ratio", "must be between 0 and 1"))
    if out.get("content_max_chars", 1) <= 0:
        problems.append((f"{path}.content_max_chars", "must be positive"))
    if out.get("export_timeout", 1) <= 0:
        problems.append((f"{path}.export_timeout", "must be a positive number of seconds"))
    headers = out.get("headers")
    if headers is not None and not all(isinstance(v, str) for v in headers.values()):
        problems.append((f"{path}.headers", "must be a table of strings"))
    return out


@dataclass(slots=True)
class TelemetrySettings:
    """The resolved telemetry configuration: the ``[telemetry]`` table over the ``OTEL_*`` variables."""

    enabled: bool = True
    traces_exporters: list[str] = field(default_factory=list)  # otlp, console
    metrics_exporters: list[str] = field(default_factory=list)  # otlp, console, prometheus
    otlp_endpoint: str | None = None  # base URL (http: /v1/traces and /v1/metrics are appended)
    traces_endpoint: str | None = None  # signal-specific, verbatim
    metrics_endpoint: str | None = None
    protocol: str = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict)
    export_timeout: float = DEFAULT_EXPORT_TIMEOUT
    service_name: str = "interlock"
    resource_attributes: dict[str, str] = field(default_factory=dict)
    sampler: str = "parentbased_always_on"
    sampler_arg: float | None = None
    capture_content: bool = False
    content_max_chars: int = DEFAULT_CONTENT_MAX_CHARS
    propagate: bool = True  # send the attempt span's traceparent to providers
    metric_export_interval: float = 60.0  # seconds

    @property
    def any_exporter(self) -> bool:
        """Telemetry is enabled and some trace or metric exporter is asked for."""
        return self.enabled and bool(self.traces_exporters or self.metrics_exporters)

    @classmethod
    def resolve(cls, table: Mapping[str, Any] | None, environ: Mapping[str, str]) -> TelemetrySettings:
        """``[telemetry]`` wins over the standard variables; nothing set means no telemetry."""
        t = dict(table or {})
        s = cls()
        env = environ
        s.enabled = bool(t.get("enabled", True)) and env.get("OTEL_SDK_DISABLED", "").lower() != "true"
        s.otlp_endpoint = t.get("otlp_endpoint") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        if "otlp_endpoint" not in t:
            s.traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
            s.metrics_endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or None
        protocol = t.get("protocol") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        if protocol not in PROTOCOLS:
            log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%r is not supported (use grpc or http/protobuf); using http/protobuf",
                        protocol)
            protocol = "http/protobuf"
        s.protocol = protocol
        s.headers = _parse_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
        s.headers.update(t.get("headers") or {})
        if "export_timeout" in t:
            s.export_timeout = float(t["export_timeout"])
        elif env.get("OTEL_EXPORTER_OTLP_TIMEOUT"):
            s.export_timeout = _number(env["OTEL_EXPORTER_OTLP_TIMEOUT"], DEFAULT_EXPORT_TIMEOUT)
        s.resource_attributes = _parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        s.service_name = (
            t.get("service_name") or env.get("OTEL_SERVICE_NAME") or s.resource_attributes.get("service.name") or "interlock"
        )
        if "sample_ratio" in t:
            s.sampler, s.sampler_arg = "parentbased_traceidratio", float(t["sample_ratio"])
        else:
            s.sampler = env.get("OTEL_TRACES_SAMPLER", s.sampler).lower()
            if env.get("OTEL_TRACES_SAMPLER_ARG"):
                s.sampler_arg = _number(env["OTEL_TRACES_SAMPLER_ARG"], 1.0)
        s.traces_exporters = _exporters(env.get("OTEL_TRACES_EXPORTER"), bool(s.otlp_endpoint or s.traces_endpoint))
        s.metrics_exporters = _exporters(env.get("OTEL_METRICS_EXPORTER"), bool(s.otlp_endpoint or s.metrics_endpoint))
        if t.get("otlp_endpoint"):  # the config asked for OTLP explicitly
            s.traces_exporters = _add(s.traces_exporters, "otlp")
            s.metrics_exporters = _add(s.metrics_exporters, "otlp")
        if t.get("console"):
            s.traces_exporters = _add(s.traces_exporters, "console")
            s.metrics_exporters = _add(s.metrics_exporters, "console")
        if t.get("tree"):  # each request's trace as a span tree on stdout (plugins.exporters.span_tree)
            s.traces_exporters = _add(s.traces_exporters, "tree")
        if t.get("prometheus"):
            s.metrics_exporters = _add(s.metrics_exporters, "prometheus")
        capture = t.get("capture_content")
        if capture is None:
            capture = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT")
        s.capture_content = capture.strip().upper() in ("SPAN", "SPAN_ONLY", "SPAN_AND_EVENT", "TRUE")
        s.content_max_chars = int(t.get("content_max_chars", DEFAULT_CONTENT_MAX_CHARS))
        s.propagate = bool(t.get("propagate", True))
        if env.get("OTEL_METRIC_EXPORT_INTERVAL"):
            s.metric_export_interval = _number(env["OTEL_METRIC_EXPORT_INTERVAL"], 60000.0) / 1000
        return s


def _number(value: str, default: float) -> float:
    try:
        return float(value)
    except ValueError:
        return default


def _parse_pairs(value: str) -> dict[str, str]:
    """``k=v,k2=v2`` (URL-encoded values), as in OTEL_EXPORTER_OTLP_HEADERS / OTEL_RESOURCE_ATTRIBUTES."""
    out: dict[str, str] = {}
    for part in value.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip():
                out[urllib.parse.unquote(k.strip())] = urllib.parse.unquote(v.strip())
    return out


def _exporters(env_value: str | None, default_otlp: bool) -> list[str]:
    if env_value is None or not env_value.strip():
        return ["otlp"] if default_otlp else []
    names = []
    for name in env_value.split(","):
        name = name.strip().lower()
        if name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
            name = "otlp"
        if name and name != "none" and name not in names:
            names.append(name)
    return names


def _add(names: list[str], name: str) -> list[str]:
    return names if name in names else [*names, name]


__all__ = [
    "CONFIG_KEYS", "DEFAULT_CONTENT_MAX_CHARS", "DEFAULT_EXPORT_TIMEOUT", "PROTOCOLS",
    "TelemetrySettings", "check_config",
]
