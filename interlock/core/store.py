"""Routing state that several gateway processes must share, behind one small async interface.

Breaker state, latency averages, round-robin positions and in-flight counts all
go through a :class:`Store`; nothing else in interlock keeps routing state in
process memory. :class:`MemoryStore` is the default (one process). A shared
implementation (Redis, a database) implements the same five operations, with
``update`` as an atomic read-modify-write (e.g. an optimistic WATCH/MULTI loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Store:
    """Async key-value operations the router and strategies need.

    Values are JSON-compatible (dicts, lists, numbers, strings), so a shared
    store can serialise them. Keys are namespaced by their users
    (``breaker:openai/gpt-4o``, ``ewma:...``, ``inflight:...``, ``rr:route``).
    """

    async def get(self, key: str) -> Any:
        """The value, or None when absent or expired."""
        raise NotImplementedError

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        raise NotImplementedError

    async def incr(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to an integer (absent = 0) and return the new value, atomically."""
        raise NotImplementedError

    async def update(self, key: str, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        """Atomically replace the value with ``fn(old)`` (``old`` is None when absent); return it."""
        raise NotImplementedError

    async def items(self, prefix: str) -> dict[str, Any]:
        """Every live key starting with ``prefix`` (for health pages, not the hot path)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections (shared stores)."""


class MemoryStore(Store):
    """The in-process store: a dict. Single event loop, so every operation is atomic."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._expires: dict[str, float] = {}

    def _live(self, key: str) -> bool:
        exp = self._expires.get(key)
        if exp is not None and exp <= time.monotonic():
            self._data.pop(key, None)
            self._expires.pop(key, None)
            return False
        return key in self._data

    def _put(self, key: str, value: Any, ttl: float | None) -> None:
        self._data[key] = value
        if ttl is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = time.monotonic() + ttl

    async def get(self, key: str) -> Any:
        return self._data[key] if self._live(key) else None

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._put(key, value, ttl)

    async def incr(self, key: str, delta: int = 1) -> int:
        value = (self._data[key] if self._live(key) else 0) + delta
        self._data[key] = value
        return int(value)

    async def update(self, key: str, fn: Callable[[Any], Any], ttl: float | None = None) -> Any:
        value = fn(self._data[key] if self._live(key) else None)
        self._put(key, value, ttl)
        return value

    async def items(self, prefix: str) -> dict[str, Any]:
        return {k: self._data[k] for k in list(self._data) if k.startswith(prefix) and self._live(k)}
