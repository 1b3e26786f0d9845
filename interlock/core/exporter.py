"""What an exporter plugin implements: the receiving end of every routing decision."""

from __future__ import annotations

from typing import ClassVar

from interlock.core.types import Decision


class Exporter:
    """Base class for exporters (ledger, OTLP, logs, alerts).

    ``record`` runs on the request path after the response is sent, so it must
    only buffer; ``flush`` and ``close`` do the I/O, off the request path.
    """

    name: ClassVar[str] = ""

    async def start(self) -> None:
        """Open connections and start background flushing."""

    def record(self, decision: Decision) -> None:
        """Take one finished decision. Must not block or raise."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Write out everything buffered so far."""

    async def close(self) -> None:
        """Flush and release resources; called on graceful shutdown."""
        await self.flush()
