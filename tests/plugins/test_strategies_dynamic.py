"""The state-driven strategies: least-latency, least-busy and lowest-cost.

Unit tests fix the statistics in a :class:`MemoryStore` (and the clock, for decay);
end-to-end tests drive a real gateway with the ``openai`` SDK against one fake
upstream serving both targets (``openai/gpt-4o`` and ``backup/gpt-4o-mini``), so a
fault keyed on ``model="gpt-4o"`` slows or breaks only the first. Assertions count
where requests went; none measures time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from interlock.core import stats
from interlock.accounting.pricing import Price, PriceTable
from interlock.core.store import MemoryStore
from interlock.core.types import RequestContext, Route, Target
from interlock.plugins.strategies.least_busy import LeastBusy
from interlock.plugins.strategies.least_latency import LeastLatency
from interlock.plugins.strategies.lowest_cost import LowestCost
from interlock.testing import FakeOpenAI, Fault
from interlock.testing.gateway import RunningGateway, running_gateway

SECRET = "sk-test-secret-0123456789abcdef"
HELLO = [{"role": "user", "content": "hello there"}]


def ctx(*, stream: bool = False, **body: Any) -> RequestContext:
    return RequestContext(request_id="r", endpoint="chat", body={"messages": HELLO, **body}, stream=stream)


def route(*names: str) -> Route:
    return Route("r", [Target(n, "m") for n in names])


def firsts(orders: list[list[Target]]) -> Counter[str]:
    return Counter(order[0].provider for order in orders)


def providers(order: list[Target]) -> list[str]:
    return [t.provider for t in order]


# --------------------------------------------------------------------------- #
# least-latency: ordering logic
# --------------------------------------------------------------------------- #


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def least_latency(r: Route, store: MemoryStore | None = None, **options: Any) -> tuple[LeastLatency, Clock]:
    strategy = LeastLatency(r, {"seed": 7, **options})
    strategy.store = store or MemoryStore()
    clock = Clock()
    strategy.clock = clock
    return strategy, clock


async def measured(strategy: LeastLatency, clock: Clock, **latencies: float) -> None:
    """Feed one non-stream sample per target (name=ms) and fold them into the store."""
    for name, ms in latencies.items():
        strategy.observe(Target(name, "m"), ok=True, latency_ms=ms)
    await strategy._flush()


async def test_least_latency_puts_the_fastest_first_and_orders_the_rest_by_score() -> None:
    r = route("a", "b", "c")
    strategy, clock = least_latency(r)
    await measured(strategy, clock, a=300, b=20, c=90)
    orders = [await strategy.order(r.targets, ctx()) for _ in range(300)]
    # power of two choices: the slowest never wins a pair; the fastest is in 2 of 3 pairs
    counts = firsts(orders)
    assert counts["a"] == 0 and counts["b"] > counts["c"] > 0
    for order in orders:
        rest = [t for t in providers(order)[1:]]
        assert rest == sorted(rest, key={"b": 0, "c": 1, "a": 2}.__getitem__)
    # with two targets the pair is both of them: the faster one, always
    two = route("a", "b")
    assert [providers(await strategy.order(two.targets, ctx())) for _ in range(50)] == [["b", "a"]] * 50


async def test_least_latency_measures_unmeasured_targets_first() -> None:
    r = route("fast", "new")
    strategy, clock = least_latency(r)
    await measured(strategy, clock, fast=1)
    assert [providers(await strategy.order(r.targets, ctx())) for _ in range(20)] == [["new", "fast"]] * 20


async def test_least_latency_uses_time_to_first_token_for_streams() -> None:
    r = route("a", "b")
    strategy, clock = least_latency(r)
    strategy.observe(Target("a", "m"), ok=True, latency_ms=900, ttft_ms=50)  # quick to start, long answers
    strategy.observe(Target("b", "m"), ok=True, latency_ms=200, ttft_ms=180)
    strategy.observe(Target("a", "m"), ok=True, latency_ms=900)
    strategy.observe(Target("b", "m"), ok=True, latency_ms=200)
    assert providers(await strategy.order(r.targets, ctx(stream=True))) == ["a", "b"]
    assert providers(await strategy.order(r.targets, ctx())) == ["b", "a"]


async def test_least_latency_weighs_latency_by_requests_in_flight() -> None:
    r = route("a", "b")
    store = MemoryStore()
    strategy, clock = least_latency(r, store)
    await measured(strategy, clock, a=10, b=40)
    assert providers(await strategy.order(r.targets, ctx())) == ["a", "b"]
    for i in range(4):  # a: 10 x 5 = 50 > b: 40 x 1
        await stats.enter(store, "a/m", f"attempt-{i}")
    assert providers(await strategy.order(r.targets, ctx())) == ["b", "a"]
    assert await strategy.score(Target("a", "m"), stream=False) == (50.0, 4)


async def test_least_latency_peak_rises_at_once_and_falls_gradually() -> None:
    r = route("a")
    strategy, clock = least_latency(r, alpha=0.5)
    a = Target("a", "m")
    await measured(strategy, clock, a=100)
    await measured(strategy, clock, a=400)  # slower: the estimate jumps to the sample
    assert await strategy.estimate(a, stream=False) == 400
    await measured(strategy, clock, a=100)  # faster: halfway there (alpha 0.5)
    assert await strategy.estimate(a, stream=False) == 250
    strategy.observe(a, ok=False, latency_ms=5)  # a quick failure is no evidence of speed
    await strategy._flush()
    assert await strategy.estimate(a, stream=False) == 250
    strategy.observe(a, ok=False, latency_ms=30_000)  # a timeout is, of slowness (both kinds)
    await strategy._flush()
    assert await strategy.estimate(a, stream=False) == 30_000
    assert await strategy.estimate(a, stream=True) == 30_000


async def test_least_latency_explores_a_slow_target_again_as_its_estimate_decays() -> None:
    r = route("slow", "fast")
    strategy, clock = least_latency(r, decay=10)
    await measured(strategy, clock, slow=300, fast=5)
    probes = 0
    for _ in range(100):  # one request a second, all to the fast target while the slow one looks slower
        clock.now += 1
        order = providers(await strategy.order(r.targets, ctx()))
        if order[0] == "slow":
            probes += 1
            break
        await measured(strategy, clock, fast=5)
    # 300 * e^(-t/10) < 5 after t = 10 ln 60 ~ 41 s
    assert probes == 1 and 40 <= clock.now - 1_000_000 <= 42
    # still slow: straight back to its peak, and out of the way again
    await measured(strategy, clock, slow=300)
    clock.now += 1
    assert providers(await strategy.order(r.targets, ctx())) == ["fast", "slow"]
    # recovered: the probe's sample brings it down and it shares the traffic again
    clock.now += 60
    await measured(strategy, clock, slow=4, fast=5)
    assert providers(await strategy.order(r.targets, ctx())) == ["slow", "fast"]


async def test_least_latency_falls_back_to_the_routers_statistics() -> None:
    r = route("a", "b")
    store = MemoryStore()
    await stats.record(store, "a/m", latency_ms=80, ttft_ms=None, stream=False)
    await stats.record(store, "b/m", latency_ms=20, ttft_ms=None, stream=False)
    strategy, _ = least_latency(r, store)
    assert providers(await strategy.order(r.targets, ctx())) == ["b", "a"]


async def test_least_latency_estimates_are_shared_through_the_store() -> None:
    r = route("a", "b")
    store = MemoryStore()
    one, clock = least_latency(r, store)
    two, _ = least_latency(r, store)
    two.clock = clock
    await measured(one, clock, a=500, b=50)
    assert providers(await two.order(r.targets, ctx())) == ["b", "a"]
    assert await store.get("pewma:lat:a/m") == [500, clock.now]


def test_least_latency_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="decay"):
        LeastLatency(route("a"), {"decay": 0})
    with pytest.raises(ValueError, match="alpha"):
        LeastLatency(route("a"), {"alpha": 1.5})


async def test_least_latency_handles_one_or_no_target() -> None:
    strategy, _ = least_latency(route("a"))
    assert await strategy.order([], ctx()) == []
    assert providers(await strategy.order([Target("a", "m")], ctx())) == ["a"]


async def test_least_latency_keeps_a_bounded_backlog_of_observations() -> None:
    # a target other routes keep busy reports to this strategy too, even when it orders nothing
    strategy, clock = least_latency(route("a", "b"))
    for i in range(10_000):
        strategy.observe(Target("a", "m"), ok=True, latency_ms=float(i))
    assert len(strategy._pending) == 256
    await strategy._flush()
    assert not strategy._pending
    assert await strategy.estimate(Target("a", "m"), stream=False) == 9999.0  # the newest samples were kept


# --------------------------------------------------------------------------- #
# least-busy: ordering logic
# --------------------------------------------------------------------------- #


def least_busy(r: Route, store: MemoryStore, seed: int = 3) -> LeastBusy:
    strategy = LeastBusy(r, {"seed": seed})
    strategy.store = store
    return strategy


async def test_least_busy_orders_by_requests_in_flight() -> None:
    r = route("a", "b", "c")
    store = MemoryStore()
    for key, n in (("a/m", 3), ("b/m", 0), ("c/m", 1)):
        for i in range(n):
            await stats.enter(store, key, f"attempt-{key}-{i}")
    strategy = least_busy(r, store)
    assert [providers(await strategy.order(r.targets, ctx())) for _ in range(20)] == [["b", "c", "a"]] * 20


async def test_least_busy_breaks_ties_at_random() -> None:
    r = route("a", "b", "c")
    store = MemoryStore()
    await stats.enter(store, "c/m", "attempt-c")
    strategy = least_busy(r, store)
    orders = [await strategy.order(r.targets, ctx()) for _ in range(600)]
    counts = firsts(orders)
    assert counts["c"] == 0
    assert 240 <= counts["a"] <= 360 and 240 <= counts["b"] <= 360  # not always the first in config
    assert all(o[-1].provider == "c" for o in orders)
    again = least_busy(r, store)
    replay = [providers(await again.order(r.targets, ctx())) for _ in range(50)]
    assert [providers(o) for o in orders[:50]] == replay  # the seed makes it reproducible


# --------------------------------------------------------------------------- #
# lowest-cost: ordering logic
# --------------------------------------------------------------------------- #

INSTANCES = {
    "openai": "openai", "backup": "openai", "claude": "anthropic", "local": "ollama", "house": "openai",
}


def lowest_cost(targets: list[Target], prices: dict[str, Price] | None = None, **options: Any) -> LowestCost:
    strategy = LowestCost(Route("r", targets), options)
    strategy.store = MemoryStore()
    strategy.prices = PriceTable.for_config(prices, INSTANCES)
    return strategy


def keys(order: list[Target]) -> list[str]:
    return [t.key for t in order]


def test_lowest_cost_orders_by_estimated_cost_with_unpriced_targets_last() -> None:
    targets = [
        Target("house", "house-model"),
        Target("openai", "gpt-4o"),
        Target("claude", "claude-haiku-4-5-20251001"),
        Target("house", "another-unknown"),
        Target("backup", "gpt-4o-mini"),
        Target("local", "llama3.2:3b"),
    ]
    strategy = lowest_cost(targets)
    assert keys(strategy.order(targets, ctx())) == [
        "local/llama3.2:3b",  # self-hosted: free
        "backup/gpt-4o-mini",  # 0.15 / 0.6
        "claude/claude-haiku-4-5-20251001",  # 1 / 5
        "openai/gpt-4o",  # 2.5 / 10
        "house/house-model",  # no price: last, in config order
        "house/another-unknown",
    ]
    costs = strategy.costs(targets, ctx())
    # "hello there": 11 characters -> 3 prompt tokens; no max_tokens -> 500 output tokens
    assert costs[1] == (3 * Decimal("2.5") + 500 * 10) / 1_000_000
    assert costs[0] is None and all(isinstance(c, Decimal) for c in costs if c is not None)


def test_lowest_cost_prices_this_request_prompt_and_max_tokens() -> None:
    targets = [Target("house", "reader"), Target("house", "writer")]
    prices = {
        "reader": Price(input=Decimal(1), output=Decimal(10)),  # cheap to read, dear to write
        "writer": Price(input=Decimal(5), output=Decimal(2)),
    }
    strategy = lowest_cost(targets, prices)
    long_prompt = [{"role": "user", "content": "x" * 16_000}]  # ~4000 tokens
    assert keys(strategy.order(targets, ctx(messages=long_prompt, max_tokens=10))) == ["house/reader", "house/writer"]
    assert keys(strategy.order(targets, ctx(max_completion_tokens=4000))) == ["house/writer", "house/reader"]
    assert keys(strategy.order(targets, ctx())) == ["house/writer", "house/reader"]  # 500 assumed
    short_default = lowest_cost(targets, prices, output_tokens=1)
    assert keys(short_default.order(targets, ctx(messages=long_prompt))) == ["house/reader", "house/writer"]
    assert strategy.usage_estimate(ctx(max_tokens=0, max_completion_tokens=True)).completion_tokens == 500


def test_lowest_cost_keeps_config_order_between_equal_prices() -> None:
    targets = [Target("openai", "gpt-4o"), Target("backup", "gpt-4o"), Target("openai", "gpt-4o-2024-08-06")]
    assert keys(lowest_cost(targets).order(targets, ctx())) == keys(targets)


def test_lowest_cost_uses_the_prices_it_is_given() -> None:
    targets = [Target("openai", "gpt-4o"), Target("backup", "gpt-4o-mini")]
    strategy = LowestCost(Route("r", targets))
    strategy.store = MemoryStore()
    assert keys(strategy.order(targets, ctx())) == ["openai/gpt-4o", "backup/gpt-4o-mini"]  # "backup": type unknown
    strategy.prices = PriceTable.for_config({"openai/gpt-4o": Price(Decimal(50), Decimal(50))}, INSTANCES)
    assert keys(strategy.order(targets, ctx())) == ["backup/gpt-4o-mini", "openai/gpt-4o"]
    with pytest.raises(ValueError, match="output_tokens"):
        LowestCost(Route("r", targets), {"output_tokens": 0})


# --------------------------------------------------------------------------- #
# end to end, through a gateway and the openai SDK
# --------------------------------------------------------------------------- #


def gateway_config(base_url: str, strategy: str, extra: str = "", options: str = "") -> str:
    return f"""
[providers.openai]
base_url = "{base_url}"
api_key = "{SECRET}"

[providers.backup]
type = "openai"
base_url = "{base_url}"
api_key = "{SECRET}"

[routes.pair]
strategy = "{strategy}"
targets = ["openai/gpt-4o", "backup/gpt-4o-mini"]
{options}
{extra}
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini"]) as f:
        yield f


def chat_models(fake: FakeOpenAI, since: int = 0) -> list[str]:
    return [r.json.get("model") for r in fake.requests[since:] if r.path.endswith("/chat/completions")]


async def ask(gw: RunningGateway, n: int) -> None:
    for _ in range(n):
        completion = await gw.client.chat.completions.create(model="pair", messages=HELLO)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Fake reply to: hello there"


async def test_least_latency_shifts_traffic_to_the_faster_target_and_back_after_it_recovers(
    fake: FakeOpenAI,
) -> None:
    # decay 0.2 s: an avoided target is probed again about every 0.2 x ln(slow / fast) seconds
    toml = gateway_config(fake.base_url, "least-latency", options="strategy_options = { decay = 0.2, seed = 5 }")
    async with running_gateway(toml) as gw:
        # realistic latencies, so that sub-millisecond jitter on loopback does not decide
        fake.add_fault(Fault(latency=0.15, model="gpt-4o", times=None))  # openai/gpt-4o is slow
        fake.add_fault(Fault(latency=0.02, model="gpt-4o-mini", times=None))
        await ask(gw, 40)
        slow_phase = Counter(chat_models(fake))
        assert slow_phase["gpt-4o-mini"] >= 30, slow_phase  # measured, then avoided but for probes
        assert all(d.strategy == "least-latency" for d in gw.log.decisions)

        fake.clear_faults()  # it recovers: both answer alike; only a probe can tell
        fake.add_fault(Fault(latency=0.02, times=None))
        start = len(fake.requests)
        for _ in range(400):
            await ask(gw, 1)
            if "gpt-4o" in chat_models(fake, start):
                break
        assert "gpt-4o" in chat_models(fake, start), "the recovered target was never probed"

        start = len(fake.requests)
        await ask(gw, 60)
        recovered = Counter(chat_models(fake, start))
        assert recovered["gpt-4o"] >= 12 and recovered["gpt-4o-mini"] >= 12, recovered  # sharing again


async def test_least_busy_prefers_the_idle_target_while_the_other_serves_a_slow_stream(
    fake: FakeOpenAI,
) -> None:
    async with running_gateway(gateway_config(fake.base_url, "least-busy")) as gw:
        fake.add_fault(Fault(ttft=1.0, model="gpt-4o"))

        async def slow_stream() -> str:
            stream = await gw.client.chat.completions.create(
                model="openai/gpt-4o", messages=HELLO, stream=True  # type: ignore[arg-type]
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        task = asyncio.create_task(slow_stream())
        try:
            def stream_arrived() -> bool:
                return any(r.json is not None and r.json.get("model") == "gpt-4o" for r in fake.requests)

            for _ in range(500):  # until the stream's attempt is in flight and the fake has its request
                if await stats.inflight(gw.gateway.store, "openai/gpt-4o") == 1 and stream_arrived():
                    break
                await asyncio.sleep(0.01)
            assert await stats.inflight(gw.gateway.store, "openai/gpt-4o") == 1
            # counted from here, after the stream's own request: it must not land among the 15 below
            assert stream_arrived()
            start = len(fake.requests)
            await ask(gw, 15)
            assert chat_models(fake, start) == ["gpt-4o-mini"] * 15  # the busy target got none of them
            assert await stats.inflight(gw.gateway.store, "openai/gpt-4o") == 1  # (the stream was still going)
            assert await task == "Fake reply to: hello there"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert await stats.inflight(gw.gateway.store, "openai/gpt-4o") == 0
        start = len(fake.requests)
        await ask(gw, 40)
        idle = Counter(chat_models(fake, start))
        assert idle["gpt-4o"] >= 8 and idle["gpt-4o-mini"] >= 8, idle  # ties are broken at random


async def test_lowest_cost_picks_the_cheaper_model_and_falls_back_to_the_pricier_one(
    fake: FakeOpenAI,
) -> None:
    async with running_gateway(gateway_config(fake.base_url, "lowest-cost")) as gw:
        await ask(gw, 5)
        assert chat_models(fake) == ["gpt-4o-mini"] * 5  # 0.15/0.6 beats 2.5/10
        assert gw.log.last.candidates == ["backup/gpt-4o-mini", "openai/gpt-4o"]

        fake.add_fault(Fault(status=503, model="gpt-4o-mini"))
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="pair", messages=HELLO  # type: ignore[arg-type]
        )
        assert raw.parse().model == "gpt-4o"
        assert raw.headers["x-interlock-fallback"] == "true"
        assert chat_models(fake)[-2:] == ["gpt-4o-mini", "gpt-4o"]


async def test_lowest_cost_follows_the_configs_prices(fake: FakeOpenAI) -> None:
    extra = '[prices."backup/gpt-4o-mini"]   # a pricier deal on this instance\ninput = 30\noutput = 60\n'
    async with running_gateway(gateway_config(fake.base_url, "lowest-cost", extra)) as gw:
        await ask(gw, 3)
        assert chat_models(fake) == ["gpt-4o"] * 3
        assert gw.log.last.candidates == ["openai/gpt-4o", "backup/gpt-4o-mini"]

