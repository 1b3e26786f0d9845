"""The shared store: routing state, budgets and limits in Redis (or Valkey), for several gateway processes.

``[store] url = "redis://..."`` selects it (:func:`interlock.core.store.open_store`); it
needs the ``redis`` package (``pip install 'interlock[redis]'``; hiredis is used when
installed, never required).

How the :class:`~interlock.core.store_base.Store` contract is kept:

* every key gets ``[store] prefix`` in front, so several gateways can share one Redis;
  values are JSON, and counters are plain integers (JSON's encoding of an integer is
  what INCRBY reads and writes, so :meth:`RedisStore.get` of a counter is an int);
* every exact operation is one round trip: a single command or one Lua script that
  reads and writes on the server, so no other process can act in between;
* :meth:`RedisStore.update` is a compare-and-set loop: read, compute ``fn(old)`` here,
  write with a script only if the stored value is still the one read, else read again;
* :meth:`RedisStore.peek` is served from process memory for ``[store] refresh``
  seconds; writes through ``set``/``update``/``delete`` publish the key on an
  invalidation channel every store listens to, so other processes drop their copy at
  once (``refresh`` bounds the staleness when such a message is lost);
* outages never fail a request by themselves: while Redis is unreachable every operation
  runs on a process-local :class:`~interlock.core.store.MemoryStore` (``reserve`` and
  ``lease`` raise :class:`~interlock.core.store.StoreUnavailable` instead when
  ``[store] on_error = "reject"``). Only a background task probes Redis (PING, with
  exponential backoff and jitter), so requests meanwhile never wait for connect
  timeouts; the first operation after it succeeds uses the shared state again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from interlock.core import jsonutil
# the contract from store_base, not store: store.open_store imports this module
from interlock.core.store_base import MemoryStore, Store, StoreSettings, StoreUnavailable, safe_store_url

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
    from redis.asyncio.client import PubSub
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # the core works without redis; only this module needs it
    raise ImportError(
        "[store] url names a Redis server, but the redis package is not installed: pip install 'interlock[redis]'"
    ) from exc

log = logging.getLogger("interlock.store")

T = TypeVar("T")

#: errors that mean "Redis cannot answer now" (down, unreachable, timed out, still loading
#: its data set: BusyLoadingError is a ConnectionError), as opposed to a wrong command
DOWN_ERRORS: tuple[type[BaseException], ...] = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)

#: how many times :meth:`RedisStore.update` reads again after another process wrote in
#: between; each lost race means someone else's write landed, so 64 covers 64 writers at once
UPDATE_TRIES = 64

#: operations on Redis at once (one connection each); more wait for a free one. redis-py's own
#: pool would raise MaxConnectionsError instead, which is a ConnectionError: a burst of
#: requests must not look like an outage.
MAX_CONNECTIONS = 64

#: the channel (after the prefix) that carries peek-cache invalidations; not for subscribers
INVALIDATE_CHANNEL = "store:invalidate"


class StoreContention(RuntimeError):
    """:meth:`RedisStore.update` lost the race for a key :data:`UPDATE_TRIES` times in a row."""


# -- server-side scripts -------------------------------------------------------------- #
# ttl arguments are milliseconds, or '' for "no expiry". A ttl applies to keys the call
# creates (EXISTS before INCRBY), never to keys that already existed, as MemoryStore does.

_INCR = """
local out = {}
for i, key in ipairs(KEYS) do
  local created = redis.call('EXISTS', key) == 0
  out[i] = redis.call('INCRBY', key, ARGV[1])
  if created and ARGV[2] ~= '' then redis.call('PEXPIRE', key, ARGV[2]) end
end
return out
"""

# ARGV: amount, ttl, then one limit per key ('' = no limit). Returns {index or -1, values}.
_RESERVE = """
local amount = tonumber(ARGV[1])
local values = {}
for i, key in ipairs(KEYS) do values[i] = tonumber(redis.call('GET', key) or '0') end
for i = 1, #KEYS do
  local limit = ARGV[i + 2]
  if limit ~= '' then
    limit = tonumber(limit)
    if values[i] >= limit or values[i] + amount > limit then return {i - 1, values} end
  end
end
for i, key in ipairs(KEYS) do
  local created = redis.call('EXISTS', key) == 0
  values[i] = redis.call('INCRBY', key, amount)
  if created and ARGV[2] ~= '' then redis.call('PEXPIRE', key, ARGV[2]) end
end
return {-1, values}
"""

# KEYS: marker, counter; ARGV: delta, ttl
_ADD_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] == '' then redis.call('SET', KEYS[1], '1') else redis.call('SET', KEYS[1], '1', 'PX', ARGV[2]) end
local created = redis.call('EXISTS', KEYS[2]) == 0
redis.call('INCRBY', KEYS[2], ARGV[1])
if created and ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# ARGV: value, ttl. Returns the value held afterwards.
_SETDEFAULT = """
local current = redis.call('GET', KEYS[1])
if current then return current end
if ARGV[2] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return ARGV[1]
"""

# ARGV: value, ttl, invalidation channel, message. The PUBLISH rides in the same round trip.
_SET = """
if ARGV[2] == '' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

# ARGV: invalidation channel, message
_DELETE = """
local n = redis.call('DEL', unpack(KEYS))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
"""

# {value or nil, PTTL}: update needs both to know whether an unchanged value may skip its write
_READ = """
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

# ARGV: '1' if the key was absent when read, the value read, the new value, ttl, channel, message.
# Writes only if the key still holds exactly what was read; otherwise returns {0, what it holds}
# (false when absent), so the caller computes again from that without another read.
_CAS = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current then return {0, current} end
elseif current ~= ARGV[2] then
  return {0, current}
end
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[3]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return {1}
"""

# Leases are a sorted set per key: member -> expiry in milliseconds of the *Redis server's*
# clock (TIME inside the script). One clock for every gateway means a lease granted by one
# host is not expired early or late by another whose clock is skewed. Expired members are
# dropped first, and the key itself expires with its last lease, so nothing leaks.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
"""

# ARGV: member, limit ('' = none), ttl ms. Returns {granted 0/1, slots held}.
_LEASE = _NOW_MS + """
local held = redis.call('ZCARD', KEYS[1])
if ARGV[2] ~= '' and held >= tonumber(ARGV[2]) and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {0, held}
end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return {1, redis.call('ZCARD', KEYS[1])}
"""

_LEASES = _NOW_MS + """
return redis.call('ZCARD', KEYS[1])
"""


def redis_url(url: str) -> str:
    """``url`` as redis-py reads it: ``valkey://`` and ``valkeys://`` are Redis's ``redis://`` and ``rediss://``."""
    scheme, sep, rest = url.partition("://")
    return {"valkey": "redis", "valkeys": "rediss"}.get(scheme.lower(), scheme) + sep + rest


def _px(ttl: float | None) -> str:
    """A ttl as a script argument: whole milliseconds (at least 1: PX 0 is an error), '' for none."""
    return "" if ttl is None else str(max(1, round(ttl * 1000)))


def _decode(raw: bytes | str | None) -> Any:
    return None if raw is None else jsonutil.loads(raw)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _glob_escape(text: str) -> str:
    """``text`` matched literally by SCAN's MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore(Store):
    """The :class:`~interlock.core.store.Store` several gateway processes share, in Redis.

    Construct with the ``[store]`` settings, then :meth:`start` (which never waits for
    Redis) and :meth:`close` at shutdown.
    """

    shared = True

    def __init__(self, settings: StoreSettings, *, backoff: tuple[float, float] = (0.1, 5.0)) -> None:
        if settings.url is None:
            raise ValueError("RedisStore needs [store] url")
        self.settings = settings
        self._prefix = settings.prefix
        self._safe_url = safe_store_url(settings.url)
        try:
            self._password = urlsplit(settings.url).password
        except ValueError:
            self._password = None
        self._backoff = backoff
        # no retries inside redis-py: a failed command means "degraded, go local" at once
        # rather than the same connect timeout again; the supervisor task does the retrying
        self._client = aioredis.Redis.from_url(
            redis_url(settings.url),
            socket_timeout=settings.connect_timeout,
            socket_connect_timeout=settings.connect_timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=MAX_CONNECTIONS + 4,  # + the subscription, the supervisor's PING, spare
        )
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        script = self._client.register_script
        self._incr, self._reserve, self._add_once = script(_INCR), script(_RESERVE), script(_ADD_ONCE)
        self._setdefault, self._set, self._delete = script(_SETDEFAULT), script(_SET), script(_DELETE)
        self._read, self._cas = script(_READ), script(_CAS)
        self._lease, self._leases = script(_LEASE), script(_LEASES)
        self._local = MemoryStore()  # process-local state while Redis is unreachable
        self._last_raw: dict[str, bytes] = {}  # update: what this process last wrote per key (a first guess)
        # updates of one key waiting for this process's update of it in flight (see update)
        self._queued: dict[tuple[str, float | None], list[tuple[Callable[[Any], Any], asyncio.Future[Any], bool]]] = {}

        self._healthy = True  # optimistic until a probe or an operation says otherwise
        self._since: float | None = None
        self._outages = 0
        self._fallback_ops = 0
        self._trouble = asyncio.Event()  # set while degraded: wakes the supervisor
        self._recovered = asyncio.Event()  # set while healthy: lets the listener (re)subscribe
        self._recovered.set()
        self._closed = False

        self._cache: dict[str, tuple[float, Any]] = {}  # peek: key -> (valid until, monotonic; value)
        self._cache_gen: dict[str, int] = {}  # bumped on every write/invalidation of a key
        self._origin = uuid.uuid4().hex  # lets the listener ignore this store's own invalidations
        self._invalidate = self._prefix + INVALIDATE_CHANNEL

        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._reconnect_callbacks: list[Callable[[], Awaitable[None]]] = []
        self._pubsub: PubSub | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- health ------------------------------------------------------------------------ #

    def _k(self, key: str) -> str:
        return self._prefix + key

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        # redis-py's messages name hosts, not passwords, but a log line is no place to find out
        return text.replace(self._password, "***") if self._password else text

    def _failed(self, exc: BaseException) -> None:
        """Redis did not answer: switch to local state (once per outage) and let the supervisor probe."""
        if self._closed:
            return
        if self._healthy:
            self._healthy = False
            self._since = time.time()
            self._outages += 1
            self._recovered.clear()
            self._trouble.set()
            self._cache.clear()  # what was read from Redis is not what local operations will see
            log.warning("store: Redis at %s is unreachable (%s); using process-local state until it is back",
                        self._safe_url, self._describe(exc))
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(probe=False))

    def _recover(self) -> None:
        since, self._since = self._since, None
        self._healthy = True
        self._trouble.clear()
        self._recovered.set()
        self._cache.clear()
        log.info("store: Redis at %s is reachable again after %.1f s; shared state is used again",
                 self._safe_url, time.time() - since if since is not None else 0.0)
        for callback in list(self._reconnect_callbacks):
            self._spawn(self._call_reconnect(callback))

    async def _call_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await callback()
        except Exception:
            log.exception("store: an on_reconnect callback failed")

    async def _supervise(self, probe: bool) -> None:
        """The only place that probes Redis while it is down, so requests never wait on connects."""
        if probe:
            try:
                await self._client.ping()
            except (redis_errors.RedisError, OSError) as exc:
                self._failed(exc)
        while True:
            await self._trouble.wait()
            # connections idle in the pool belong to the old server (or a dead socket): drop them
            # so the first operations after recovery do not trip over them and fail again
            try:
                await self._client.connection_pool.disconnect(inuse_connections=False)
            except (redis_errors.RedisError, OSError):
                pass
            delay = self._backoff[0]
            while True:
                # jitter: gateways that lost Redis together do not all reconnect in the same instant
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                try:
                    await self._client.ping()
                    break
                except (redis_errors.RedisError, OSError):
                    delay = min(delay * 2, self._backoff[1])
            self._recover()

    async def _shared(self, op: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]],
                      decision: bool = False) -> T:
        """Run ``op`` on Redis, or ``local`` on process-local state while Redis is unreachable.

        ``decision`` marks budget and rate-limit decisions (reserve, lease), which refuse
        with :class:`StoreUnavailable` instead under ``on_error = "reject"``.
        """
        if self._healthy and await self._take_slot():
            try:
                if self._healthy:  # it may have gone down while this operation waited for a slot
                    return await op()
            except DOWN_ERRORS as exc:
                self._failed(exc)
            finally:
                self._slots.release()
        if decision and self.settings.on_error == "reject":
            raise StoreUnavailable(f'the shared store at {self._safe_url} is unreachable and [store] on_error is "reject"')
        self._fallback_ops += 1
        return await local()

    async def _take_slot(self) -> bool:
        """A connection slot. No timeout of its own: while Redis answers, the queue drains; if it
        hangs, the operations holding the slots time out (``connect_timeout``), the store goes
        degraded and the waiters then run locally at once (checked after the wait). A timeout
        here would count a burst's overflow locally although Redis is up."""
        await self._slots.acquire()
        return True

    # -- peek cache -------------------------------------------------------------------- #

    def _cache_put(self, key: str, value: Any) -> None:
        self._cache_gen[key] = self._cache_gen.get(key, 0) + 1
        if self.settings.refresh <= 0:
            return
        now = time.monotonic()
        if len(self._cache) >= 4096:  # keys are per target and per scope: bounded, but prune the dead
            for k in [k for k, (until, _) in self._cache.items() if until <= now]:
                del self._cache[k]
        self._cache[key] = (now + self.settings.refresh, value)

    def _cache_drop(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._cache_gen[key] = self._cache_gen.get(key, 0) + 1
            self._cache.pop(key, None)

    def _invalidation(self, keys: Sequence[str]) -> bytes:
        return jsonutil.dumps({"o": self._origin, "k": list(keys)})

    # -- operations -------------------------------------------------------------------- #

    async def get(self, key: str) -> Any:
        async def op() -> Any:
            return _decode(await self._client.get(self._k(key)))

        return await self._shared(op, lambda: self._local.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        """One MGET (in chunks of 500 keys: a huge reply would hold Redis up for everyone else)."""
        if not keys:
            return []

        async def op() -> list[Any]:
            out: list[Any] = []
            for i in range(0, len(keys), 500):
                out.extend(_decode(raw) for raw in await self._client.mget([self._k(k) for k in keys[i : i + 500]]))
            return out

        return await self._shared(op, lambda: self._local.get_many(keys))

    async def peek(self, key: str) -> Any:
        """:meth:`get`, served from memory for up to ``[store] refresh`` seconds."""
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        gen = self._cache_gen.get(key, 0)
        value = await self.get(key)
        # a write or invalidation that arrived while we read makes this value possibly stale
        if self._cache_gen.get(key, 0) == gen:
            self._cache_put(key, value)
        return value

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        raw = jsonutil.dumps(value)

        async def op() -> None:
            await self._set(keys=[self._k(key)], args=[raw, _px(ttl), self._invalidate, self._invalidation([key])])

        await self._shared(op, lambda: self._local.set(key, value, ttl))
        self._cache_put(key, jsonutil.loads(raw))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0

        async def op() -> int:
            return int(await self._delete(keys=[self._k(k) for k in keys],
                                          args=[self._invalidate, self._invalidation(keys)]))

        n = await self._shared(op, lambda: self._local.delete(*keys))
        self._cache_drop(keys)
        return n

    async def setdefault(self, key: str, value: Any, ttl: float | None = None) -> Any:
        async def op() -> Any:
            return _decode(await self._setdefault(keys=[self._k(key)], args=[jsonutil.dumps(value), _px(ttl)]))

        result = await self._shared(op, lambda: self._local.setdefault(key, value, ttl))
        self._cache_put(key, result)
        return result

    async def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        async def op() -> int:
            if ttl is None:
                return int(await self._client.incrby(self._k(key), delta))
            return int((await self._incr(keys=[self._k(key)], args=[delta, _px(ttl)]))[0])

        value = await self._shared(op, lambda: self._local.incr(key, delta, ttl))
        self._cache_put(key, value)
        return value

    async def add(self, keys: Sequence[str], delta: int, ttl: float | None = None) -> list[int]:
        if not keys:
            return []

        async def op() -> list[int]:
            return [int(v) for v in await self._incr(keys=[self._k(k) for k in keys], args=[delta, _px(ttl)])]

        values = await self._shared(op, lambda: self._local.add(keys, delta, ttl))
        for key, value in zip(keys, values, strict=True):
            self._cache_put(key, value)
        return values

    async def reserve(self, keys: Sequence[str], limits: Sequence[int | None], amount: int,
                      ttl: float | None = None) -> tuple[int | None, list[int]]:
        if len(keys) != len(limits):
            raise ValueError("reserve: one limit per key")

        async def op() -> tuple[int | None, list[int]]:
            args: list[Any] = [amount, _px(ttl), *("" if limit is None else limit for limit in limits)]
            index, values = await self._reserve(keys=[self._k(k) for k in keys], args=args)
            return (None if index < 0 else int(index)), [int(v) for v in values]

        # only a limit makes it a decision that on_error = "reject" refuses to guess; without one it is counting
        refused, values = await self._shared(op, lambda: self._local.reserve(keys, limits, amount, ttl),
                                             decision=any(limit is not None for limit in limits))
        for key, value in zip(keys, values, strict=True):
            self._cache_put(key, value)
        return refused, values

    async def add_once(self, marker: str, key: str, delta: int, ttl: float | None = None) -> bool:
        async def op() -> bool:
            return bool(await self._add_once(keys=[self._k(marker), self._k(key)], args=[delta, _px(ttl)]))

        added = await self._shared(op, lambda: self._local.add_once(marker, key, delta, ttl))
        self._cache_drop([marker, key])
        return added

    async def lease(self, key: str, member: str, limit: int | None, ttl: float) -> tuple[bool, int]:
        async def op() -> tuple[bool, int]:
            granted, held = await self._lease(keys=[self._k(key)], args=[member, "" if limit is None else limit, _px(ttl)])
            return bool(granted), int(held)

        # an unlimited lease (in-flight counts for routing) is bookkeeping, never refused under on_error = "reject"
        return await self._shared(op, lambda: self._local.lease(key, member, limit, ttl), decision=limit is not None)

    async def unlease(self, key: str, member: str) -> None:
        # a slot taken locally during an outage is given back locally too, whatever the state now
        await self._local.unlease(key, member)

        async def op() -> None:
            await self._client.zrem(self._k(key), member)

        async def nothing() -> None:
            return None

        await self._shared(op, nothing)

    async def leases(self, key: str) -> int:
        async def op() -> int:
            return int(await self._leases(keys=[self._k(key)]))

        return await self._shared(op, lambda: self._local.leases(key))

    async def update(self, key: str, fn: Callable[[Any], Any], ttl: float | None = None, *, announce: bool = True) -> Any:
        """Compare-and-set: ``fn`` may run several times when other processes write the key meanwhile.

        One update of a key is in flight per process at a time: the updates that arrive
        meanwhile wait and then go as one compare-and-set that applies them in order
        (each caller gets the value its own ``fn`` produced). Every attempt of every
        target updates that target's breaker and latency average, so without this, 50
        concurrent requests to one target would race 50 compare-and-sets for one key, and
        most would lose and retry; with it, a process contends only with other processes.
        """
        slot = (key, ttl)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue = self._queued.get(slot)
        if queue is not None:
            queue.append((fn, future, announce))
            return await future
        self._queued[slot] = [(fn, future, announce)]
        self._spawn(self._run_updates(key, ttl))
        return await future

    async def _run_updates(self, key: str, ttl: float | None) -> None:
        """Apply the queued updates of ``key``, a batch per compare-and-set, until none is left."""
        slot = (key, ttl)
        while batch := self._queued.get(slot):
            self._queued[slot] = []
            fns = [fn for fn, _, _ in batch]
            announce = any(a for _, _, a in batch)
            results: list[Any] = []

            def apply(old: Any, fns: list[Callable[[Any], Any]] = fns, results: list[Any] = results) -> Any:
                results.clear()  # a lost compare-and-set runs the whole batch again
                value = old
                for fn in fns:
                    try:
                        value = fn(value)
                        results.append((True, value))
                    except Exception as exc:  # this caller's fn failed: the others' still apply
                        results.append((False, exc))
                return value

            try:
                await self._shared(lambda: self._compare_and_set(key, apply, ttl, announce),
                                   lambda: self._local.update(key, apply, ttl))
            except BaseException as exc:
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else StoreContention(str(exc)))
                if not isinstance(exc, Exception):  # cancelled (the store is closing): nobody may wait forever
                    for _, future, _ in self._queued.pop(slot, None) or []:
                        if not future.done():
                            future.set_exception(StoreContention(f"store: closed while {key} was being updated"))
                    raise
                continue
            for (_, future, _), (ok, value) in zip(batch, results, strict=True):
                if not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        self._queued.pop(slot, None)

    async def _compare_and_set(self, key: str, fn: Callable[[Any], Any], ttl: float | None, announce: bool = True) -> Any:
        full, px = self._k(key), _px(ttl)
        # the first try assumes the key still holds what this process last read or wrote (it is
        # usually the only writer of a target's breaker and averages): one round trip, not two;
        # a wrong guess costs nothing but the retry, which starts from what the server sent back
        known = self._last_raw.get(key)
        raw: bytes | None
        if known is not None:
            raw, pttl = known, -2  # -2: expiry unknown, so an unchanged value is still written
        else:
            raw, pttl = await self._read(keys=[full])
        for attempt in range(UPDATE_TRIES):
            new = fn(_decode(raw))
            new_raw = jsonutil.dumps(new)
            # nothing to write: same value, no ttl asked for and none to clear (MemoryStore would
            # drop an existing expiry on an update without ttl, so that case still writes)
            if raw is not None and new_raw == raw and ttl is None and pttl == -1:
                self._cache_put(key, new)
                return new
            args: list[Any] = ["1" if raw is None else "0", raw or b"", new_raw, px,
                               self._invalidate if announce else "", self._invalidation([key])]
            done = await self._cas(keys=[full], args=args)
            if done[0] == 1:
                self._remember(key, new_raw)
                self._cache_put(key, jsonutil.loads(new_raw))
                return new
            # lost the race (or guessed wrong): start again from what the key holds now; a little
            # jitter keeps processes that collided from colliding again in lockstep
            raw, pttl = (done[1] if len(done) > 1 and done[1] else None), -2
            if attempt:
                await asyncio.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.02)))
        raise StoreContention(f"store: {key} changed under update {UPDATE_TRIES} times in a row")

    def _remember(self, key: str, raw: bytes) -> None:
        if len(self._last_raw) >= 4096:  # per target and scope: bounded in practice; never unbounded
            self._last_raw.clear()
        self._last_raw[key] = raw

    async def items(self, prefix: str) -> dict[str, Any]:
        async def op() -> dict[str, Any]:
            names: set[bytes] = set()  # SCAN may return a key twice
            async for name in self._client.scan_iter(match=_glob_escape(self._k(prefix)) + "*", count=1000):
                names.add(name)
            ordered, out = sorted(names), {}
            strip = len(self._prefix.encode())
            for i in range(0, len(ordered), 500):
                chunk = ordered[i : i + 500]
                # MGET answers nil for keys that expired meanwhile and for lease sets (not values)
                for name, raw in zip(chunk, await self._client.mget(chunk), strict=True):
                    if raw is not None:
                        out[name[strip:].decode()] = jsonutil.loads(raw)
            return out

        return await self._shared(op, lambda: self._local.items(prefix))

    # -- pub/sub ----------------------------------------------------------------------- #

    async def publish(self, channel: str, message: str) -> None:
        """Publish on Redis (this process's subscribers hear it from Redis too); locally while degraded."""
        async def op() -> None:
            await self._client.publish(self._k(channel), message)

        async def local() -> None:
            self._deliver(channel, message)

        await self._shared(op, local)

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        if channel == INVALIDATE_CHANNEL:
            raise ValueError(f"{INVALIDATE_CHANNEL} is the store's own channel")
        new = channel not in self._callbacks
        self._callbacks.setdefault(channel, []).append(callback)
        if new and self._pubsub is not None:
            self._spawn(self._subscribe_late(self._pubsub, channel))

    async def _subscribe_late(self, pubsub: PubSub, channel: str) -> None:
        try:
            await pubsub.subscribe(self._k(channel))
        except (redis_errors.RedisError, OSError):
            pass  # the listener reconnects and subscribes every channel again

    def _deliver(self, channel: str, message: str) -> None:
        for callback in list(self._callbacks.get(channel, ())):
            try:
                callback(message)
            except Exception:
                log.exception("store: a subscriber of %s failed", channel)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("type") != "message":
            return
        name, data = msg["channel"], msg["data"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = data.decode() if isinstance(data, bytes) else str(data)
        if name == self._invalidate:
            try:
                note = jsonutil.loads(text)
                if note.get("o") != self._origin:
                    self._cache_drop([str(k) for k in note.get("k", ())])
            except (jsonutil.JSONDecodeError, AttributeError, TypeError):
                log.warning("store: ignoring a malformed invalidation on %s", name)
            return
        if name.startswith(self._prefix):
            self._deliver(name[len(self._prefix):], text)

    async def _listen(self) -> None:
        """One subscription connection per store: callbacks and peek invalidations; resubscribes after outages."""
        delay = self._backoff[0]
        while True:
            await self._recovered.wait()
            pubsub = self._client.pubsub()
            try:
                names = [self._invalidate, *(self._k(c) for c in self._callbacks)]
                await pubsub.subscribe(*names)
                self._pubsub = pubsub
                # channels subscribe() added while we connected (later ones go through _subscribe_late)
                extra = [self._k(c) for c in self._callbacks if self._k(c) not in names]
                if extra:
                    await pubsub.subscribe(*extra)
                # invalidations sent while this process was not listening are lost: forget what we hold
                self._cache.clear()
                delay = self._backoff[0]
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    # a cancel that lands as get_message's own read timeout fires can come out as
                    # "no message" (the timeout swallows it): honour it here, or close() would wait forever
                    if self._closed or _cancelling():
                        raise asyncio.CancelledError
                    if msg is not None:
                        self._dispatch(msg)
            except DOWN_ERRORS as exc:
                self._failed(exc)  # lost the connection: Redis is likely down; the supervisor will tell
            except redis_errors.RedisError as exc:
                log.warning("store: the subscription to Redis at %s failed (%s)", self._safe_url, self._describe(exc))
            finally:
                self._pubsub = None
                try:
                    await pubsub.aclose()
                except (redis_errors.RedisError, OSError):
                    pass
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff[1])

    # -- lifecycle --------------------------------------------------------------------- #

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._reconnect_callbacks.append(callback)

    def status(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "url": self._safe_url,
            "shared": True,
            "degraded": not self._healthy,
            "since": self._since,
            "outages": self._outages,
            "fallback_ops": self._fallback_ops,
            "on_error": self.settings.on_error,
        }

    async def start(self) -> None:
        """Start the supervisor (probes Redis now, in the background) and the subscription listener."""
        self._closed = False
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(probe=True))
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        """Stop the background tasks and close the connections."""
        self._closed = True
        tasks = {t for t in (self._supervisor, self._listener, *self._tasks) if t is not None}
        # cancel again while any is still running: a cancel can be swallowed by a library's
        # timeout that fires at the same moment (asyncio's timeouts on Python 3.11)
        while tasks:
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=0.5)
        self._supervisor = self._listener = None
        try:
            await self._client.aclose()
        except (redis_errors.RedisError, OSError):
            pass
