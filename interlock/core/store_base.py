"""The Store contract: routing state that several gateway processes must share, behind one small async interface.

Import these names from :mod:`interlock.core.store`, which also picks the implementation
(:func:`~interlock.core.store.open_store`). They live here, below both that module and
:mod:`interlock.core.redis_store`, so the Redis store can build on them while ``open_store``
imports it: no import cycle.

Breaker state, latency averages, round-robin positions, in-flight counts, budget
counters, rate-limit windows and anomaly baselines all go through a :class:`Store`;
nothing else in interlock keeps routing state in process memory. :class:`MemoryStore`
is the default (one process); the Redis store (:mod:`interlock.core.redis_store`,
``[store] url = "redis://..."``) is the shared one.

Every operation that changes more than one key, or reads and then writes, is atomic
*on the store*: a shared implementation runs it as one server-side script (Redis: Lua),
never as a read in Python followed by a write. :meth:`Store.update` is the one generic
read-modify-write; a shared store runs it as a compare-and-set loop (read, compute,
write only if the value is still the one read), so it stays correct under contention
and is used only where a state machine is too rich for a fixed script (breakers,
anomaly baselines, latency averages).

Consistency classes (what a caller may expect):

* exact, one round trip: :meth:`get_many`, :meth:`incr`, :meth:`add`, :meth:`reserve`, :meth:`lease`,
  :meth:`unlease`, :meth:`add_once`, :meth:`setdefault`, :meth:`delete`;
* atomic, a few round trips under contention: :meth:`update`;
* possibly stale by at most ``[store] refresh`` seconds, served from process memory:
  :meth:`peek` (breaker admission, latency averages: reads on every request's path).

Values are JSON-compatible (dicts, lists, numbers, strings).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("interlock.store")

#: how a store reports that it cannot answer (shared store down and ``on_error = "reject"``)
ON_ERROR = ("local", "reject")
DEFAULT_REFRESH = 0.5  # seconds a peeked value may be stale
DEFAULT_PREFIX = "interlock:"


class StoreUnavailable(Exception):
    """The shared store cannot answer and the configured policy is to refuse, not to guess."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """``[store]``: where shared routing state lives.

    ``url`` None is the in-memory store (one process). ``on_error`` is what budget and
    rate-limit decisions do while a shared store is unreachable: ``"local"`` decides on
    process-local state (requests keep flowing, limits hold per process), ``"reject"``
    refuses requests that need such a decision with 503 (for a store: a :meth:`Store.reserve`
    with a limit or a :meth:`Store.lease` with a limit raises :class:`StoreUnavailable`).
    Routing state (breakers, latencies, positions, unlimited in-flight leases) always falls
    back to process-local state.
    """

    url: str | None = None
    prefix: str = DEFAULT_PREFIX  # namespaces keys, so several gateways can share one Redis
    on_error: str = "local"
    refresh: float = DEFAULT_REFRESH  # seconds peeked (stale-tolerant) values are kept in memory
    connect_timeout: float = 1.0  # seconds for one connection attempt or one operation

    @property
    def shared(self) -> bool:
        return self.url is not None

    @classmethod
    def parse(cls, table: Any, problems: list[tuple[str, str]]) -> StoreSettings:
        """Validate ``[store]`` with key paths."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            problems.append(("store", f"must be a table, not {type(table).__name__}"))
            return cls()
        known = {"url", "prefix", "on_error", "refresh", "connect_timeout"}
        for key in table:
            if key not in known:
                problems.append((f"store.{key}", f"unknown key (known: {', '.join(sorted(known))})"))
        url = table.get("url")
        if url is not None:
            if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "valkey", "valkeys", "unix"):
                shown = safe_store_url(url) if isinstance(url, str) else repr(url)
                problems.append(("store.url", f"{shown} is not a Redis URL (redis://host:6379/0, rediss://... "
                                 "for TLS, unix:///path/to/redis.sock)"))
                url = None
            elif not url.split("://", 1)[1]:
                problems.append(("store.url", "names no host"))
                url = None
        prefix = table.get("prefix", DEFAULT_PREFIX)
        if not isinstance(prefix, str):
            problems.append(("store.prefix", f"must be a string, not {type(prefix).__name__}"))
            prefix = DEFAULT_PREFIX
        on_error = table.get("on_error", "local")
        if on_error not in ON_ERROR:
            problems.append(("store.on_error", f'must be "local" or "reject", not {on_error!r}'))
            on_error = "local"
        numbers: dict[str, float] = {}
        for key, default, low, high in (("refresh", DEFAULT_REFRESH, 0.0, 60.0), ("connect_timeout", 1.0, 0.01, 60.0)):
            raw = table.get(key, default)
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or not low <= raw <= high:
                problems.append((f"store.{key}", f"must be a number of seconds between {low:g} and {high:g}, not {raw!r}"))
                raw = default
            numbers[key] = float(raw)
        return cls(url, prefix, on_error, numbers["refresh"], numbers["connect_timeout"])


def safe_store_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, errors and health pages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and not (parts.username and "@" in parts.netloc):
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}").geturl()


class Store:
    """Async operations the router, strategies, budgets and rate limits need.

    Keys are namespaced by their users (``breaker:openai/gpt-4o``, ``lat:...``,
    ``inflight:...``, ``rr:route``, ``budget:team:x:2026-12-07``, ``rl:...``); a shared
    store adds its own prefix. ``ttl`` is in seconds; None keeps a key until deleted.
    """

    #: whether several processes see the same state through this store
    shared = False

    async def get(self, key: str) -> Any:
        """The value, or None when absent or expired."""
        raise NotImplementedError

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The values of ``keys``, in order (None for each absent one); a shared store reads them in one round trip."""
        return [await self.get(key) for key in keys]

    async def peek(self, key: str) -> Any:
        """Like :meth:`get`, but may be up to ``[store] refresh`` seconds stale (served from memory)."""
        return await self.get(key)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        raise NotImplementedError

    async def delete(self, *keys: str) -> int:
        """Remove keys; returns how many existed."""
        raise NotImplementedError

    async def setdefault(self, key: str, value: Any, ttl: float | None = None) -> Any:
        """Set ``key`` to ``value`` unless it exists; return the value it holds afterwards."""
        raise NotImplementedError

    async def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        """Add ``delta`` to an integer (absent = 0) and return the new value; ``ttl`` applies when it is created."""
        raise NotImplementedError

    async def add(self, keys: Sequence[str], delta: int, ttl: float | None = None) -> list[int]:
        """Add ``delta`` to every key in one atomic step; the new values, in order."""
        raise NotImplementedError

    async def reserve(self, keys: Sequence[str], limits: Sequence[int | None], amount: int,
                      ttl: float | None = None) -> tuple[int | None, list[int]]:
        """Add ``amount`` to every key, all or nothing, unless a limit says no.

        A key with a limit refuses when its value is already at or over the limit, or
        would go over it with ``amount`` added. Returns ``(None, new values)`` when every
        key took the amount, or ``(index of the first refusing key, current values)`` when
        none did. ``ttl`` applies to keys created by the call.
        """
        raise NotImplementedError

    async def add_once(self, marker: str, key: str, delta: int, ttl: float | None = None) -> bool:
        """Add ``delta`` to ``key`` and set ``marker``, unless ``marker`` is already set; True if added.

        How a value is seeded exactly once however many processes try at the same time.
        """
        raise NotImplementedError

    async def lease(self, key: str, member: str, limit: int | None, ttl: float) -> tuple[bool, int]:
        """Hold one of ``limit`` slots of ``key`` for ``member`` for at most ``ttl`` seconds.

        Leases that were not given back (a process killed mid-request) expire after
        ``ttl``. Returns (granted, slots held now, this one included when granted).
        """
        raise NotImplementedError

    async def unlease(self, key: str, member: str) -> None:
        """Give a slot back (idempotent)."""
        raise NotImplementedError

    async def leases(self, key: str) -> int:
        """Slots of ``key`` held now."""
        raise NotImplementedError

    async def update(self, key: str, fn: Callable[[Any], Any], ttl: float | None = None, *, announce: bool = True) -> Any:
        """Atomically replace the value with ``fn(old)`` (``old`` is None when absent); return it.

        ``announce=False`` tells a shared store that other processes' :meth:`peek` copies
        may stay stale (up to ``[store] refresh``) after this write: for writes that do not
        change what a reader decides on (a success added to a closed breaker's window).

        ``fn`` may be called more than once (a shared store retries when another process
        changed the value in between), so it must not have side effects beyond its result.
        """
        raise NotImplementedError

    async def items(self, prefix: str) -> dict[str, Any]:
        """Every live key starting with ``prefix`` (for health pages and ticks, not the hot path)."""
        raise NotImplementedError

    async def publish(self, channel: str, message: str) -> None:
        """Tell every process subscribed to ``channel`` (this one included)."""
        raise NotImplementedError

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(message)`` on this process's event loop for every message on ``channel``."""
        raise NotImplementedError

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` whenever a shared store is reachable again after an outage (never for memory)."""

    def status(self) -> dict[str, Any]:
        """What ``/health/providers`` shows about the store."""
        return {"kind": "memory", "shared": False, "degraded": False}

    async def start(self) -> None:
        """Connect (a shared store: in the background, never failing startup)."""

    async def close(self) -> None:
        """Release connections (shared stores)."""


class MemoryStore(Store):
    """The in-process store: dicts. Single event loop, so every operation is atomic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, Any] = {}
        self._expires: dict[str, float] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}
        self._clock = clock

    def _live(self, key: str) -> bool:
        exp = self._expires.get(key)
        if exp is not None and exp <= self._clock():
            self._data.pop(key, None)
            self._expires.pop(key, None)
            return False
        return key in self._data

    def _value(self, key: str, default: Any = None) -> Any:
        return self._data[key] if self._live(key) else default

    def _put(self, key: str, value: Any, ttl: float | None) -> None:
        self._data[key] = value
        if ttl is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = self._clock() + ttl

    def _bump(self, key: str, delta: int, ttl: float | None) -> int:
        if self._live(key):
            value = int(self._data[key]) + delta
            self._data[key] = value
            return value
        self._put(key, delta, ttl)
        return delta

    async def get(self, key: str) -> Any:
        return self._value(key)

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        return [self._value(key) for key in keys]

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._put(key, value, ttl)

    async def delete(self, *keys: str) -> int:
        n = 0
        for key in keys:
            existed = self._live(key) or self._leases.pop(key, None) is not None
            self._data.pop(key, None)
            self._expires.pop(key, None)
            n += existed
        return n

    async def setdefault(self, key: str, value: Any, ttl: float | None = None) -> Any:
        if not self._live(key):
            self._put(key, value, ttl)
        return self._data[key]

    async def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        return self._bump(key, delta, ttl)

    async def add(self, keys: Sequence[str], delta: int, ttl: float | None = None) -> list[int]:
        return [self._bump(key, delta, ttl) for key in keys]

    async def reserve(self, keys: Sequence[str], limits: Sequence[int | None], amount: int,
                      ttl: float | None = None) -> tuple[int | None, list[int]]:
        values = [int(self._value(key, 0)) for key in keys]
        for i, (value, limit) in enumerate(zip(values, limits, strict=True)):
            if limit is not None and (value >= limit or value + amount > limit):
                return i, values
        return None, [self._bump(key, amount, ttl) for key in keys]

    async def add_once(self, marker: str, key: str, delta: int, ttl: float | None = None) -> bool:
        if self._live(marker):
            return False
        self._put(marker, 1, ttl)
        self._bump(key, delta, ttl)
        return True

    def _held(self, key: str) -> dict[str, float]:
        held = self._leases.get(key)
        if held is None:
            return {}
        now = self._clock()
        for member in [m for m, until in held.items() if until <= now]:
            del held[member]
        return held

    async def lease(self, key: str, member: str, limit: int | None, ttl: float) -> tuple[bool, int]:
        held = self._held(key)
        if member not in held and limit is not None and len(held) >= limit:
            return False, len(held)
        self._leases.setdefault(key, held)[member] = self._clock() + ttl
        return True, len(held)

    async def unlease(self, key: str, member: str) -> None:
        held = self._leases.get(key)
        if held is not None:
            held.pop(member, None)
            if not held:
                del self._leases[key]

    async def leases(self, key: str) -> int:
        return len(self._held(key))

    async def update(self, key: str, fn: Callable[[Any], Any], ttl: float | None = None, *, announce: bool = True) -> Any:
        value = fn(self._value(key))
        self._put(key, value, ttl)
        return value

    async def items(self, prefix: str) -> dict[str, Any]:
        return {k: self._data[k] for k in list(self._data) if k.startswith(prefix) and self._live(k)}

    async def publish(self, channel: str, message: str) -> None:
        for callback in list(self._subscribers.get(channel, ())):
            try:
                callback(message)
            except Exception:
                log.exception("store: a subscriber of %s failed", channel)

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        self._subscribers.setdefault(channel, []).append(callback)

