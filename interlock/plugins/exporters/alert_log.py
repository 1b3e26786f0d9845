"""``alert_log``: one structured log line per alert (logger ``interlock.alerts``); always on."""

from __future__ import annotations

import logging

from interlock import hookimpl
from interlock.core import jsonutil
from interlock.core.types import Alert

log = logging.getLogger("interlock.alerts")


@hookimpl
def alert(alert: Alert) -> None:
    log.warning("alert %s", jsonutil.dumps_str(alert.payload()))
