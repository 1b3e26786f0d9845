"""The request lifecycle (core.lifecycle): plan once, reserve at the plan's first pick, finish once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import openai
import pytest

from interlock import hookimpl
from interlock.core.strategy import Strategy
from interlock.core.types import Decision, RequestContext, Target
from interlock.testing import FakeOpenAI, Fault
from tests.conftest import GatewayFactory, openai_config

HELLO = [{"role": "user", "content": "hello"}]
BUDGET = '[[budgets]]\nscope = "global"\ndaily_usd = 100\n'


class CountingHooks:
    """Answers nothing; counts how often the per-request routing hooks run."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    @hookimpl
    def select_route(self, request: RequestContext) -> None:
        self.calls["select_route"] += 1

    @hookimpl
    def select_strategy(self, route: Any) -> None:
        self.calls["select_strategy"] += 1


@pytest.mark.parametrize("budgets", [True, False], ids=["budgets-on", "budgets-off"])
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_a_request_resolves_its_route_once(
    fake: FakeOpenAI, make_gateway: GatewayFactory, budgets: bool, stream: bool
) -> None:
    """The reservation prices the plan; it does not resolve the route a second time."""
    hooks = CountingHooks()
    gw = await make_gateway(openai_config(fake.base_url, BUDGET if budgets else ""),
                            extra_plugins=[("counting", hooks)])
    resolved: list[str] = []
    resolve = gw.gateway.resolver.resolve

    def counting_resolve(model: str) -> Any:
        resolved.append(model)
        return resolve(model)

    gw.gateway.resolver.resolve = counting_resolve  # type: ignore[method-assign]
    for _ in range(3):
        if stream:
            chunks = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)  # type: ignore[arg-type]
            assert [c async for c in chunks]
        else:
            await gw.client.chat.completions.create(model="smart", messages=HELLO)  # type: ignore[arg-type]
    assert resolved == ["smart"] * 3
    assert hooks.calls == {"select_route": 3, "select_strategy": 3}
    if budgets:  # the budget was really in play: the requests were reserved and counted
        assert await gw.gateway.budgets.spent("global") > 0


class Reversed(Strategy):
    """Tries a route's targets last to first."""

    name = "reversed"

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        return list(reversed(targets))


class ReversedPlugin:
    @hookimpl
    def register_strategies(self, register: Any) -> None:
        register("reversed", Reversed)


async def test_the_reservation_is_priced_at_the_strategys_first_pick(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    """The route's first target costs $1 a token and would never fit the $1 budget; the strategy
    tries the free one first, so that is the worst case reserved, and the request is served."""
    toml = openai_config(fake.base_url, """
[routes.pricey-last]
strategy = "reversed"
targets = ["openai/gpt-4o", "backup/gpt-4o-mini"]

[prices."openai/gpt-4o"]
input = 1000000
output = 1000000

[prices."backup/gpt-4o-mini"]
input = 0
output = 0

[[budgets]]
scope = "global"
daily_usd = 1
""")
    gw = await make_gateway(toml, extra_plugins=[("reversed", ReversedPlugin())])
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="pricey-last", messages=HELLO, max_tokens=5  # type: ignore[arg-type]
    )
    assert raw.headers["x-interlock-provider"] == "backup"
    # the same request with the expensive target first is refused before any upstream call
    before = len(fake.requests)
    with pytest.raises(openai.RateLimitError) as info:
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=5)  # type: ignore[arg-type]
    assert info.value.code == "budget_exceeded"
    assert len(fake.requests) == before


async def test_a_request_refused_by_its_budget_is_recorded_once_with_its_plan(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    toml = openai_config(fake.base_url, '[prices."gpt-4o"]\ninput = 1000000\noutput = 1000000\n'
                                        '[[budgets]]\nscope = "global"\ndaily_usd = 1\n')
    gw = await make_gateway(toml)
    with pytest.raises(openai.RateLimitError) as info:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)  # type: ignore[arg-type]
    assert info.value.response.headers["x-interlock-attempts"] == "0"
    assert info.value.response.headers["x-interlock-route"] == "smart"
    recorded: list[Decision] = gw.log.decisions
    assert len(recorded) == 1
    decision = recorded[0]
    assert (decision.status, decision.error_type, decision.route) == (429, "budget_exceeded", "smart")
    assert decision.candidates == ["openai/gpt-4o", "backup/gpt-4o-mini"] and decision.attempts == []


async def test_a_failed_request_keeps_the_routers_verdict_as_its_error_type(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    """The router's failure class is the decision's error type, not the HTTP error's code."""
    fake.add_fault(Fault(status=503, model="gpt-4o"))
    fake.add_fault(Fault(status=503, model="gpt-4o-mini"))
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.InternalServerError):
        await gw.client.with_options(max_retries=0).chat.completions.create(model="smart", messages=HELLO)  # type: ignore[arg-type]
    decision = gw.log.decisions[-1]
    assert (decision.status, decision.error_type) == (503, "overloaded")
    assert [a.outcome for a in decision.attempts] == ["overloaded", "overloaded"]
