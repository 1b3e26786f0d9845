"""The circuit breaker's state machine, driven by a controlled clock (no sleeping), and the store."""

from __future__ import annotations

import pytest

from interlock.core.breaker import Breaker, BreakerSettings
from interlock.core.store import MemoryStore
from interlock.core.types import FailureClass as F


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**settings: object) -> tuple[Breaker, Clock]:
    clock = Clock()
    return Breaker(MemoryStore(), BreakerSettings(**settings), clock), clock  # type: ignore[arg-type]


async def test_trips_on_n_failures_within_the_window_only() -> None:
    b, clock = breaker(failures=3, window=10)
    for _ in range(2):
        assert await b.record("t", ok=False, failure=F.SERVER_ERROR) is None
    clock.now += 11  # the first two age out of the window
    assert await b.record("t", ok=False, failure=F.SERVER_ERROR) is None
    await b.record("t", ok=False, failure=F.SERVER_ERROR)
    tr = await b.record("t", ok=False, failure=F.TIMEOUT)
    assert tr is not None and (tr.old, tr.new) == ("closed", "open") and "3 failures" in tr.reason
    assert (await b.peek("t")).allowed is False


async def test_trips_on_an_error_ratio_over_a_minimum_of_requests() -> None:
    b, _ = breaker(failures=100, error_ratio=0.5, min_requests=10)
    transitions = []
    for i in range(10):
        transitions.append(await b.record("t", ok=i % 2 == 0, failure=None if i % 2 == 0 else F.OVERLOADED))
    assert transitions[-1] is not None and "error ratio 5/10" in transitions[-1].reason


async def test_request_faults_do_not_count() -> None:
    b, _ = breaker(failures=1)
    for cls in (F.BAD_REQUEST, F.CONTEXT_LENGTH, F.CONTENT_POLICY):
        assert await b.record("t", ok=False, failure=cls) is None
    assert (await b.peek("t")).state == "closed"


async def test_half_open_lets_a_bounded_number_of_probes_through() -> None:
    b, clock = breaker(failures=1, cooldown=5, probes=2)
    await b.record("t", ok=False, failure=F.SERVER_ERROR)
    assert (await b.acquire("t"))[0] is False  # cooling down
    clock.now += 5
    ok1, tr = await b.acquire("t")
    assert ok1 and tr is not None and tr.new == "half_open"
    assert (await b.acquire("t"))[0] is True
    assert (await b.acquire("t"))[0] is False  # both probe slots taken
    await b.release("t")  # a cancelled probe gives its slot back
    assert (await b.acquire("t"))[0] is True
    tr = await b.record("t", ok=True)
    assert tr is not None and (tr.old, tr.new) == ("half_open", "closed")
    assert (await b.peek("t")).allowed


async def test_cooldown_grows_on_repeated_trips_up_to_the_cap_and_decays() -> None:
    b, clock = breaker(failures=1, cooldown=10, backoff=3, max_cooldown=50)
    cooldowns = []
    for _ in range(4):
        await b.record("t", ok=False, failure=F.SERVER_ERROR)  # closed -> open, or probe failed -> open
        adm = await b.peek("t")
        cooldowns.append(adm.until - clock.now)  # type: ignore[operator]
        clock.now = adm.until  # type: ignore[assignment]
        await b.acquire("t")  # half-open probe
    assert cooldowns == [10, 30, 50, 50]
    await b.record("t", ok=True)  # closes
    clock.now += 51  # healthy for longer than max_cooldown: old trips are forgotten
    await b.record("t", ok=False, failure=F.SERVER_ERROR)
    adm = await b.peek("t")
    assert adm.until - clock.now == 10  # type: ignore[operator]


async def test_a_429_with_retry_after_trips_for_that_long() -> None:
    b, clock = breaker(max_retry_after=100)
    tr = await b.record("t", ok=False, failure=F.RATE_LIMITED, retry_after=7)
    assert tr is not None and tr.new == "open"
    assert (await b.peek("t")).until == clock.now + 7
    await b.record("u", ok=False, failure=F.RATE_LIMITED, retry_after=10_000)
    assert (await b.peek("u")).until == clock.now + 100


async def test_disabled_breaker_always_admits() -> None:
    b, _ = breaker(enabled=False, failures=1)
    await b.record("t", ok=False, failure=F.SERVER_ERROR)
    assert (await b.peek("t")).allowed and (await b.acquire("t"))[0]


def test_settings_validation_names_the_key() -> None:
    problems: list[tuple[str, str]] = []
    BreakerSettings.parse({"failures": 0, "cooldown": "soon", "colldown": 1, "error_ratio": 2}, problems)
    paths = [p for p, _ in problems]
    assert paths == ["breaker.failures", "breaker.cooldown", "breaker.colldown", "breaker.error_ratio"]


async def test_memory_store_operations() -> None:
    store = MemoryStore()
    assert await store.get("k") is None
    assert await store.incr("n") == 1 and await store.incr("n", 4) == 5
    assert await store.update("l", lambda old: [*(old or []), 1]) == [1]
    assert await store.update("l", lambda old: [*old, 2]) == [1, 2]
    await store.set("gone", 1, ttl=-1)  # already expired
    assert await store.get("gone") is None
    await store.set("a:1", 1)
    await store.set("a:2", 2)
    assert await store.items("a:") == {"a:1": 1, "a:2": 2}


@pytest.mark.parametrize("cls", [F.RATE_LIMITED, F.OVERLOADED, F.TIMEOUT, F.CONNECTION, F.STREAM_ERROR, F.AUTH])
async def test_health_failures_count(cls: F) -> None:
    b, _ = breaker(failures=1)
    assert await b.record("t", ok=False, failure=cls) is not None
