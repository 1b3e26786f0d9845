"""``alert_log``: one structured log line per alert (logger ``interlock.alerts``); always on."""

from __future__ import annotations

import logging
from typing import Any

from interlock import hookimpl
from interlock.core import jsonutil
from interlock.core.types import Alert

log = logging.getLogger("interlock.alerts")


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The JSON shape of an alert (log line, webhook body): dollars as strings, never floats."""
    return {
        "kind": alert.kind,
        "scope": alert.scope,
        "message": alert.message,
        "value_usd": None if alert.value_usd is None else str(alert.value_usd),
        "threshold_usd": None if alert.threshold_usd is None else str(alert.threshold_usd),
        "details": alert.details,
        "ts": alert.ts,
    }


@hookimpl
def alert(alert: Alert) -> None:
    log.warning("alert %s", jsonutil.dumps_str(alert_payload(alert)))
