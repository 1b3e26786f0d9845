"""An in-memory :class:`~interlock.core.doors.stored_responses.ResponseStore`, for tests and plugin authors.

Give it to a gateway (``Gateway(cfg, response_store=MemoryResponseStore())``, or
``running_gateway(toml, response_store=...)``) to exercise ``store`` and
``previous_response_id`` without a database. Nothing expires; :attr:`responses`
holds every stored response by id, for assertions.
"""

from __future__ import annotations

import copy

from interlock.core.doors.stored_responses import StoredResponse

__all__ = ["MemoryResponseStore"]


class MemoryResponseStore:
    """Stored responses in a dict, scoped by team like the real store."""

    def __init__(self) -> None:
        self.responses: dict[str, StoredResponse] = {}

    def put(self, stored: StoredResponse) -> None:
        """Keep a deep copy: later changes to the caller's objects must not rewrite history."""
        self.responses[stored.id] = copy.deepcopy(stored)

    async def get(self, response_id: str, team: str | None) -> StoredResponse | None:
        """The stored response if it exists and belongs to ``team``."""
        stored = self.responses.get(response_id)
        return copy.deepcopy(stored) if stored is not None and stored.team == team else None

    async def delete(self, response_id: str, team: str | None) -> bool:
        """Delete it if it exists and belongs to ``team``."""
        stored = self.responses.get(response_id)
        if stored is None or stored.team != team:
            return False
        del self.responses[response_id]
        return True
