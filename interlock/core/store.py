"""Shared routing state: the :class:`Store` contract and the store ``[store]`` asks for.

The contract, :class:`MemoryStore` and the ``[store]`` settings are defined in
:mod:`interlock.core.store_base` (read its docstring for the consistency classes) and
re-exported here, the one place callers import them from. :func:`open_store` picks the
implementation: in-memory without ``[store] url``, else :mod:`interlock.core.redis_store`
(imported only then: the ``redis`` package is an optional extra).
"""

from __future__ import annotations

from interlock.core.store_base import (
    DEFAULT_PREFIX,
    DEFAULT_REFRESH,
    ON_ERROR,
    MemoryStore,
    Store,
    StoreSettings,
    StoreUnavailable,
    log,
    safe_store_url,
)

__all__ = ["DEFAULT_PREFIX", "DEFAULT_REFRESH", "ON_ERROR", "MemoryStore", "Store", "StoreSettings", "StoreUnavailable",
           "log", "open_store", "safe_store_url"]


def open_store(settings: StoreSettings) -> Store:
    """The store ``[store]`` asks for: in-memory without a URL, else Redis (``interlock[redis]``)."""
    if settings.url is None:
        return MemoryStore()
    from interlock.core.redis_store import RedisStore  # imports redis: only when configured

    return RedisStore(settings)
