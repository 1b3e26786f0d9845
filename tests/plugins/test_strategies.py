"""The built-in strategies: ordered, round-robin, weighted (the dynamic ones: test_strategies_dynamic.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from interlock.core.plugins import collect, make_plugin_manager
from interlock.core.store import MemoryStore
from interlock.core.types import RequestContext, Route, Target
from interlock.plugins.strategies.least_busy import LeastBusy
from interlock.plugins.strategies.least_latency import LeastLatency
from interlock.plugins.strategies.lowest_cost import LowestCost
from interlock.plugins.strategies.ordered import Ordered
from interlock.plugins.strategies.round_robin import RoundRobin
from interlock.plugins.strategies.weighted import Weighted


def ctx() -> RequestContext:
    return RequestContext(request_id="r", endpoint="chat", body={})


def keys(order: list[Target]) -> list[str]:
    return [t.provider for t in order]


def route(*weights: float, strategy: str = "ordered") -> Route:
    return Route("r", [Target(chr(ord("a") + i), "m", w) for i, w in enumerate(weights)], strategy)


def test_builtin_strategies_are_registered() -> None:
    registry = collect(make_plugin_manager(load_entrypoints=False, environ={}))
    assert registry.strategies == {
        "ordered": Ordered,
        "weighted": Weighted,
        "round-robin": RoundRobin,
        "least-latency": LeastLatency,
        "least-busy": LeastBusy,
        "lowest-cost": LowestCost,
    }


def test_ordered_keeps_the_configured_order() -> None:
    r = route(1, 5, 0, 2)
    strategy = Ordered(r)
    for _ in range(3):
        order = strategy.order(r.targets, ctx())
        assert keys(order) == ["a", "b", "c", "d"]
        assert order is not r.targets  # a copy the router may consume freely


def round_robin(r: Route, store: MemoryStore | None = None) -> RoundRobin:
    strategy = RoundRobin(r)
    strategy.store = store or MemoryStore()
    return strategy


async def test_round_robin_rotates_exactly() -> None:
    r = route(1, 1, 1, strategy="round-robin")
    strategy = round_robin(r)
    orders = [keys(await strategy.order(r.targets, ctx())) for _ in range(7)]
    assert orders == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


@pytest.mark.parametrize(("n", "k"), [(12, 3), (100, 4), (35, 5)])
async def test_round_robin_spreads_first_targets_evenly(n: int, k: int) -> None:
    r = route(*[1] * k, strategy="round-robin")
    strategy = round_robin(r)
    firsts = Counter([(await strategy.order(r.targets, ctx()))[0].provider for _ in range(n)])
    assert firsts == {t.provider: n // k for t in r.targets}


async def test_round_robin_ignores_weights_and_handles_edge_cases() -> None:
    r = route(10, 1, strategy="round-robin")
    strategy = round_robin(r)
    assert [keys(await strategy.order(r.targets, ctx()))[0] for _ in range(4)] == ["a", "b", "a", "b"]
    assert await strategy.order([], ctx()) == []
    single = [Target("only", "m")]
    assert await strategy.order(single, ctx()) == single


async def test_round_robin_position_is_shared_through_the_store() -> None:
    # two gateway processes sharing a store rotate together; separate stores rotate independently
    r = route(1, 1, strategy="round-robin")
    shared = MemoryStore()
    one, two, alone = round_robin(r, shared), round_robin(r, shared), round_robin(r)
    assert keys(await one.order(r.targets, ctx())) == ["a", "b"]
    assert keys(await two.order(r.targets, ctx())) == ["b", "a"]
    assert keys(await one.order(r.targets, ctx())) == ["a", "b"]
    assert keys(await alone.order(r.targets, ctx())) == ["a", "b"]


def test_weighted_first_target_frequencies_follow_weights() -> None:
    weights = (1, 3, 6)
    r = route(*weights, strategy="weighted")
    strategy = Weighted(r, {"seed": 1})
    draws = 4000
    firsts = Counter(strategy.order(r.targets, ctx())[0].provider for _ in range(draws))
    total = sum(weights)
    for target in r.targets:
        expected = target.weight / total
        assert abs(firsts[target.provider] / draws - expected) < 0.05, (target.provider, firsts)


def test_weighted_second_place_also_follows_weights() -> None:
    # sampling without replacement: given 'a' (tiny weight) is rarely first, it is usually last
    r = route(1, 50, 50, strategy="weighted")
    strategy = Weighted(r, {"seed": 2})
    lasts = Counter(strategy.order(r.targets, ctx())[-1].provider for _ in range(2000))
    assert lasts["a"] / 2000 > 0.9


def test_weighted_orders_are_permutations() -> None:
    r = route(2, 1, 1, 4, strategy="weighted")
    strategy = Weighted(r, {"seed": 3})
    for _ in range(200):
        order = strategy.order(r.targets, ctx())
        assert sorted(keys(order)) == ["a", "b", "c", "d"]


def test_weighted_zero_weight_targets_are_always_last() -> None:
    r = route(0, 1, 0, 2, strategy="weighted")
    strategy = Weighted(r, {"seed": 4})
    seen_first: set[str] = set()
    for _ in range(500):
        order = keys(strategy.order(r.targets, ctx()))
        assert set(order[2:]) == {"a", "c"}
        seen_first.add(order[0])
    assert seen_first == {"b", "d"}


def test_weighted_with_only_zero_weights_keeps_every_target() -> None:
    r = route(0, 0, strategy="weighted")
    order = Weighted(r, {"seed": 5}).order(r.targets, ctx())
    assert sorted(keys(order)) == ["a", "b"]


def test_weighted_seed_makes_orders_reproducible() -> None:
    r = route(1, 2, 3, strategy="weighted")
    one, two = Weighted(r, {"seed": 7}), Weighted(r, {"seed": 7})
    a = [keys(one.order(r.targets, ctx())) for _ in range(50)]
    b = [keys(two.order(r.targets, ctx())) for _ in range(50)]
    assert a == b
    assert len({tuple(o) for o in a}) > 1  # it is random, just reproducibly so
