"""``alert_otel``: every alert as an OpenTelemetry event.

On the current span as an ``interlock.alert`` span event when one is recording
(the request being served); otherwise as a log record through the OTel logs API.
Without ``opentelemetry-api`` installed, or without an SDK configured (the API's
no-op providers), this does nothing. Exporting spans and logs is configured
elsewhere.
"""

from __future__ import annotations

import logging
from typing import Any

from interlock import hookimpl
from interlock.core.types import Alert

log = logging.getLogger("interlock.alerts")


def attributes(alert: Alert) -> dict[str, Any]:
    attrs: dict[str, Any] = {"interlock.alert.kind": alert.kind, "interlock.alert.scope": alert.scope,
                             "interlock.alert.message": alert.message}
    if alert.value_usd is not None:
        attrs["interlock.alert.value_usd"] = float(alert.value_usd)  # OTel attributes have no decimal type
    if alert.threshold_usd is not None:
        attrs["interlock.alert.threshold_usd"] = float(alert.threshold_usd)
    for key, value in alert.details.items():
        if isinstance(value, str | bool | int | float):
            attrs[f"interlock.alert.{key}"] = value
    return attrs


@hookimpl
def alert(alert: Alert) -> None:
    try:
        from opentelemetry import trace
    except ImportError:
        return
    try:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("interlock.alert", attributes(alert))
            return
        from opentelemetry import _logs  # the logs API is still marked experimental upstream

        _logs.get_logger("interlock").emit(
            body=alert.message, severity_number=_logs.SeverityNumber.WARN, severity_text="WARN",
            attributes=attributes(alert), event_name="interlock.alert",
        )
    except Exception:  # an OTel API change must never break alert delivery
        log.debug("alert_otel: cannot emit the OpenTelemetry event", exc_info=True)
