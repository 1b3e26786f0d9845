"""The Store contract, run against every implementation: MemoryStore and RedisStore (a real Redis).

The Redis parameter uses the run's server (``INTERLOCK_TEST_REDIS_URL``; skipped locally
without one, a failure in CI) with a key prefix of its own per test. Where a test opens
"another process's" store, Redis gets a second :class:`RedisStore` on the same prefix;
memory gets the same instance back (one process is all a MemoryStore has).

Expiry and propagation are checked by polling with generous deadlines: these tests assert
what happens, never how fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from interlock.core.store import MemoryStore, Store, StoreSettings
from tests.servers import redis_url, unique_prefix

Opener = Callable[..., Awaitable[Store]]


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail after ``deadline`` seconds (a bound on waiting, not on speed)."""
    end = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > end:
            pytest.fail("condition did not hold within the deadline")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["memory", "redis"])
async def open_store(request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    """``await open_store(**settings)``: a started store; Redis: a new instance on this test's prefix each call."""
    opened: list[Store] = []
    if request.param == "memory":
        memory = MemoryStore()

        async def open_memory(**_: Any) -> Store:
            return memory

        yield open_memory
        return
    url, prefix = redis_url(), unique_prefix()
    from interlock.core.redis_store import RedisStore

    async def open_redis(**settings: Any) -> Store:
        store = RedisStore(StoreSettings(url=url, **{"prefix": prefix, **settings}))
        await store.start()
        opened.append(store)
        return store

    yield open_redis
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(url)
    names = [name async for name in raw.scan_iter(match=f"{prefix}*")]
    if names:
        await raw.delete(*names)
    await raw.aclose()
    for store in opened:
        await store.close()


async def test_get_set_delete_keep_json_values(open_store: Opener) -> None:
    s = await open_store()
    assert await s.get("missing") is None
    values = {"d": {"a": [1, 2.5, "x"], "b": None}, "l": [1, "two"], "s": "text", "f": 0.25, "i": 7, "t": True}
    for key, value in values.items():
        await s.set(key, value)
    for key, value in values.items():
        assert await s.get(key) == value
    await s.set("i", 8)
    assert await s.get("i") == 8
    assert await s.delete("d", "l", "nope") == 2
    assert await s.get("d") is None and await s.get("l") is None
    assert await s.delete() == 0
    assert await s.delete("d") == 0


async def test_ttl_expires_keys(open_store: Opener) -> None:
    s = await open_store()
    await s.set("short", {"x": 1}, ttl=0.05)
    await s.set("long", {"x": 1}, ttl=60)
    await s.set("forever", {"x": 1})
    await eventually(lambda: _is_none(s, "short"))
    assert await s.get("long") == {"x": 1} and await s.get("forever") == {"x": 1}


async def _is_none(s: Store, key: str) -> bool:
    return await s.get(key) is None


async def test_setdefault_sets_only_when_absent(open_store: Opener) -> None:
    s = await open_store()
    assert await s.setdefault("k", {"first": 1}) == {"first": 1}
    assert await s.setdefault("k", {"second": 2}) == {"first": 1}
    assert await s.get("k") == {"first": 1}
    assert await s.setdefault("e", 1, ttl=0.05) == 1
    await eventually(lambda: _is_none(s, "e"))
    assert await s.setdefault("e", 2) == 2


async def test_incr_counts_integers_and_sets_ttl_only_on_create(open_store: Opener) -> None:
    s = await open_store()
    assert await s.incr("c") == 1
    assert await s.incr("c", 41) == 42
    assert await s.incr("c", -2) == 40
    value = await s.get("c")
    assert value == 40 and type(value) is int
    assert await s.incr("neg", -5) == -5
    # ttl applies when the counter is created: a later incr with a long ttl does not extend it
    assert await s.incr("t", 1, ttl=0.1) == 1
    assert await s.incr("t", 1, ttl=3600) == 2
    await eventually(lambda: _is_none(s, "t"))
    # and an existing counter without ttl does not get one
    await s.incr("keep", 1)
    await s.incr("keep", 1, ttl=0.05)
    await asyncio.sleep(0.2)
    assert await s.get("keep") == 2


async def test_get_many_reads_values_in_order_with_none_for_the_absent(open_store: Opener) -> None:
    s, other = await open_store(), await open_store()
    await s.set("j", {"a": [1, 2]})
    await s.incr("n", 7)
    keys = ["n", "missing", "j", *(f"k{i}" for i in range(1200))]  # past one MGET chunk
    await s.add([f"k{i}" for i in range(0, 1200, 2)], 3)
    expected = [7, None, {"a": [1, 2]}, *(3 if i % 2 == 0 else None for i in range(1200))]
    assert await s.get_many(keys) == expected
    assert await other.get_many(keys) == expected  # another process (Redis) reads the same
    assert await s.get_many([]) == []


async def test_add_adds_to_every_key(open_store: Opener) -> None:
    s = await open_store()
    await s.incr("b", 10)
    assert await s.add(["a", "b", "c"], 5) == [5, 15, 5]
    assert await s.add(["a", "b"], -1) == [4, 14]
    assert [await s.get(k) for k in ("a", "b", "c")] == [4, 14, 5]
    assert await s.add([], 3) == []
    assert await s.add(["x"], 1, ttl=0.05) == [1]
    await eventually(lambda: _is_none(s, "x"))


async def test_reserve_takes_all_or_nothing(open_store: Opener) -> None:
    s = await open_store()
    assert await s.reserve(["k", "t"], [10, 100], 4) == (None, [4, 4])
    assert await s.reserve(["k", "t"], [10, 100], 6) == (None, [10, 10])
    # at the limit: refused even for 0
    assert await s.reserve(["k", "t"], [10, 100], 0) == (0, [10, 10])
    assert [await s.get("k"), await s.get("t")] == [10, 10]
    # the second key would go over: nothing changes, not even the first key
    await s.set("k", 1)
    assert await s.reserve(["k", "t"], [10, 12], 3) == (1, [1, 10])
    assert [await s.get("k"), await s.get("t")] == [1, 10]
    # no limit never refuses; exactly reaching the limit is allowed
    assert await s.reserve(["free", "k"], [None, 10], 9) == (None, [9, 10])
    # over the limit already (a limit lowered on reload)
    assert await s.reserve(["k"], [5], 1) == (0, [10])
    assert await s.reserve(["new"], [5], 2, ttl=0.05) == (None, [2])
    await eventually(lambda: _is_none(s, "new"))


async def test_reserve_under_concurrency_never_exceeds_the_limit(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    results = await asyncio.gather(*(s.reserve(["r"], [10], 1) for s in (a, b) * 15))
    assert sum(index is None for index, _ in results) == 10
    assert await a.get("r") == 10


async def test_a_burst_of_concurrent_operations_is_exact_and_not_an_outage(open_store: Opener) -> None:
    # more operations at once than a Redis store has connections: they wait their turn
    s = await open_store()
    await asyncio.gather(*(s.incr("burst") for _ in range(500)))
    assert await s.get("burst") == 500
    assert s.status()["degraded"] is False
    assert s.status().get("fallback_ops", 0) == 0


async def test_add_once_applies_once_under_20_concurrent_callers(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    results = await asyncio.gather(*(s.add_once("seeded", "counter", 7, ttl=60) for s in (a, b) * 10))
    assert results.count(True) == 1
    assert await a.get("counter") == 7 and await b.get("counter") == 7
    assert await a.add_once("seeded", "counter", 7) is False
    assert await a.get("counter") == 7


async def test_lease_limits_expires_and_unleases_idempotently(open_store: Opener) -> None:
    s = await open_store()
    assert await s.lease("slots", "a", 2, ttl=60) == (True, 1)
    assert await s.lease("slots", "b", 2, ttl=60) == (True, 2)
    assert await s.lease("slots", "c", 2, ttl=60) == (False, 2)
    # the same member again renews its slot rather than taking another
    assert await s.lease("slots", "a", 2, ttl=60) == (True, 2)
    assert await s.leases("slots") == 2
    await s.unlease("slots", "a")
    await s.unlease("slots", "a")
    await s.unlease("slots", "never")
    assert await s.leases("slots") == 1
    assert await s.lease("slots", "c", 2, ttl=60) == (True, 2)
    assert await s.lease("unlimited", "x", None, ttl=60) == (True, 1)
    # a lease not given back expires and frees its slot
    assert await s.lease("short", "dead", 1, ttl=0.05) == (True, 1)

    async def freed() -> bool:
        return await s.leases("short") == 0

    await eventually(freed)
    assert await s.lease("short", "alive", 1, ttl=60) == (True, 1)


async def test_lease_limit_holds_across_instances(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    results = await asyncio.gather(*(s.lease("k", f"m{i}", 3, ttl=60) for i, s in enumerate((a, b) * 5)))
    assert sum(granted for granted, _ in results) == 3
    assert await b.leases("k") == 3


async def test_update_reads_modifies_and_writes(open_store: Opener) -> None:
    s = await open_store()
    seen: list[Any] = []

    def first(old: Any) -> Any:
        seen.append(old)
        return {"n": 1}

    assert await s.update("u", first) == {"n": 1}
    assert seen == [None]
    assert await s.update("u", lambda old: {"n": old["n"] + 1}) == {"n": 2}
    assert await s.get("u") == {"n": 2}
    # an unchanged value is still the value
    assert await s.update("u", lambda old: old) == {"n": 2}
    # ttl applies (and an update with ttl re-arms it even when the value is unchanged)
    await s.update("e", lambda old: 5, ttl=60)
    assert await s.update("e", lambda old: old, ttl=0.05) == 5
    await eventually(lambda: _is_none(s, "e"))
    # on a counter made by incr
    await s.incr("cnt", 3)
    assert await s.update("cnt", lambda old: old * 2) == 6
    assert await s.incr("cnt") == 7


async def test_update_is_atomic_under_concurrency_from_two_instances(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    await asyncio.gather(*(s.update("n", lambda old: (old or 0) + 1) for s in (a, b) * 25))
    assert await a.get("n") == 50
    assert await b.get("n") == 50


async def test_items_lists_live_keys_under_a_prefix(open_store: Opener) -> None:
    s = await open_store()
    await s.set("breaker:a", {"state": "open"})
    await s.set("breaker:b", {"state": "closed"})
    await s.incr("budget:x", 3)
    await s.set("breaker:gone", 1, ttl=0.05)
    await s.lease("breaker:lease", "m", None, ttl=60)  # lease sets are not values
    await s.set("bre*ker:[x]", 1)  # glob characters in keys are matched literally
    await eventually(lambda: _is_none(s, "breaker:gone"))
    assert await s.items("breaker:") == {"breaker:a": {"state": "open"}, "breaker:b": {"state": "closed"}}
    assert await s.items("budget:") == {"budget:x": 3}
    assert await s.items("bre*") == {"bre*ker:[x]": 1}
    assert await s.items("nothing:") == {}


async def test_pubsub_reaches_every_instance(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    heard_a: list[str] = []
    heard_b: list[str] = []
    other: list[str] = []
    a.subscribe("news", heard_a.append)
    b.subscribe("news", heard_b.append)
    b.subscribe("other", other.append)

    async def delivered() -> bool:
        # subscriptions are set up in the background after start(): publish until both heard one
        if not (heard_a and heard_b):
            await a.publish("news", "hello")
        return bool(heard_b) and bool(heard_a)

    await eventually(delivered)
    assert set(heard_a) == set(heard_b) == {"hello"}
    assert other == []


async def test_peek_serves_writes_from_this_store_at_once(open_store: Opener) -> None:
    s = await open_store(refresh=60.0)
    assert await s.peek("p") is None
    await s.set("p", {"v": 1})
    assert await s.peek("p") == {"v": 1}
    await s.update("p", lambda old: {"v": old["v"] + 1})
    assert await s.peek("p") == {"v": 2}
    await s.incr("c", 2)
    assert await s.peek("c") == 2
    await s.delete("p")
    assert await s.peek("p") is None


async def test_peek_is_invalidated_by_writes_from_another_instance(open_store: Opener) -> None:
    # refresh is far longer than the deadline: only the invalidation can make B see the writes
    a, b = await open_store(refresh=600.0), await open_store(refresh=600.0)
    await a.set("brk", {"state": "closed"})
    assert await b.peek("brk") == {"state": "closed"}

    async def b_sees(value: Any) -> bool:
        return await b.peek("brk") == value

    await a.update("brk", lambda old: {"state": "open"})
    await eventually(lambda: b_sees({"state": "open"}))
    await a.set("brk", {"state": "half"})
    await eventually(lambda: b_sees({"state": "half"}))
    await a.delete("brk")
    await eventually(lambda: b_sees(None))


async def test_status_names_the_kind(open_store: Opener) -> None:
    s = await open_store()
    status = s.status()
    assert status["shared"] is s.shared
    assert status["degraded"] is False
    assert status["kind"] == ("redis" if s.shared else "memory")


async def test_prefixes_isolate_gateways_sharing_one_redis() -> None:
    from interlock.core.redis_store import RedisStore

    url = redis_url()
    one = RedisStore(StoreSettings(url=url, prefix=unique_prefix()))
    two = RedisStore(StoreSettings(url=url, prefix=unique_prefix()))
    try:
        await one.set("k:a", 1)
        await one.incr("k:n", 5)
        await two.set("k:a", 2)
        assert await one.items("k:") == {"k:a": 1, "k:n": 5}
        assert await two.items("k:") == {"k:a": 2}
        assert await two.get("k:n") is None
        await two.delete("k:a")
        assert await one.get("k:a") == 1
    finally:
        await one.delete("k:a", "k:n")
        await one.close()
        await two.close()
