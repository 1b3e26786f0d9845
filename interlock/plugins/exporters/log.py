"""``log``: one structured log line per decision, enabled by ``[logging] decisions = true``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from interlock import hookimpl
from interlock.core import jsonutil
from interlock.core.exporter import Exporter
from interlock.core.types import Decision

log = logging.getLogger("interlock.decisions")


class LogExporter(Exporter):
    name = "log"

    def record(self, decision: Decision) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        line = {
            "request_id": decision.request_id,
            "model": decision.requested_model,
            "route": decision.route,
            "status": decision.status,
            "provider": decision.provider,
            "served_model": decision.model,
            "attempts": [f"{a.provider}/{a.model}:{a.outcome}" for a in decision.attempts],
            "fallback": decision.fallback_used,
            "latency_ms": round(decision.latency_ms, 2),
            "prompt_tokens": decision.usage.prompt_tokens if decision.usage else None,
            "completion_tokens": decision.usage.completion_tokens if decision.usage else None,
            "error_type": decision.error_type,
        }
        log.info("decision %s", jsonutil.dumps_str(line))


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    if settings.get("logging", {}).get("decisions"):
        register(LogExporter())
