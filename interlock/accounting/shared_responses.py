"""Stored responses visible to every gateway process at once, not only once written to the database.

A Responses API client continues a conversation by naming the response it just got
(``previous_response_id``), usually within milliseconds, and behind a load balancer
(or ``--workers``) that next request may reach another process. The SQL response
store writes in batches off the request path, so for up to a flush interval the
response exists only in the memory of the process that answered. This wrapper also
puts each new response in the shared store for :data:`TTL` seconds; a process that
does not find a response in its own store or the database looks there.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from interlock.core.doors.stored_responses import ResponseStore, StoredResponse
from interlock.core.store import Store

log = logging.getLogger("interlock.responses")

#: seconds a new response stays in the shared store: far longer than any batch takes to be written
TTL = 120.0


def _key(response_id: str) -> str:
    return f"response:{response_id}"


class SharedResponses:
    """A :class:`ResponseStore` over another one, with new responses also in the shared :class:`Store`."""

    def __init__(self, inner: ResponseStore, store: Store) -> None:
        self.inner = inner
        self.store = store
        self._writes: set[asyncio.Task[None]] = set()

    def put(self, stored: StoredResponse) -> None:
        self.inner.put(stored)
        task = asyncio.get_running_loop().create_task(self._share(stored))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _share(self, stored: StoredResponse) -> None:
        try:
            await self.store.set(_key(stored.id), asdict(stored), ttl=TTL)
        except Exception as exc:  # the database still gets it; other processes see it once written
            log.warning("responses: cannot share %s through the store (%s: %s)", stored.id, type(exc).__name__, exc)

    async def get(self, response_id: str, team: str | None) -> StoredResponse | None:
        found = await self.inner.get(response_id, team)
        return found if found is not None else await self._shared(response_id, team)

    async def _shared(self, response_id: str, team: str | None) -> StoredResponse | None:
        """The response as another process shared it, if it belongs to ``team``."""
        if self._writes:  # this process's own puts reach the store first
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        value: Any = await self.store.get(_key(response_id))
        if not isinstance(value, dict):
            return None
        try:
            shared = StoredResponse(**value)
        except TypeError:
            return None
        return shared if shared.team == team else None

    async def delete(self, response_id: str, team: str | None) -> bool:
        deleted = await self.inner.delete(response_id, team)
        shared = await self._shared(response_id, team) if not deleted else None
        if deleted or shared is not None:  # (another team's response stays, shared copy included)
            await self.store.delete(_key(response_id))
        return deleted or shared is not None

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
