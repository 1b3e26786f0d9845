"""Budgets: reservation before routing, reconciliation after, 429 at the limit, alerts, shared store."""

from __future__ import annotations

from collections.abc import Sequence

import sqlite3
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from interlock import hookimpl
from interlock.core import config as config_mod
from interlock.accounting.budgets import Budgets, parse_budgets
from interlock.core.config import ConfigError
from interlock.core.store import MemoryStore
from interlock.core.types import Alert
from interlock.testing import FakeOpenAI
from tests.conftest import GatewayFactory, openai_config

HELLO = [{"role": "user", "content": "hello there"}]
# $1 per input and per output token: costs are large and exact
PRICES = """
[prices."gpt-4o"]
input = 1000000
output = 1000000
"""
TAGGED = {"x-interlock-tags": "batch"}


class AlertSink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @hookimpl
    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)


def budget_config(base_url: str, budgets: str) -> str:
    return openai_config(base_url, PRICES + budgets)


async def flush_ledger(gateway: object) -> None:
    for exporter in gateway.exporters:  # type: ignore[attr-defined]
        await exporter.flush()


async def test_budget_rejects_at_the_limit_through_the_sdk(
    fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    sink = AlertSink()
    gw = await make_gateway(
        budget_config(fake.base_url, '[[budgets]]\nscope = "tag:batch"\ndaily_usd = 100\nsoft = 0.5\n'),
        extra_plugins=[("sink", sink)],
    )
    budgets = gw.gateway.budgets
    spent = Decimal(0)
    rejected = None
    for _ in range(30):
        try:
            raw = await gw.client.chat.completions.with_raw_response.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
            )
        except openai.RateLimitError as exc:
            rejected = exc
            break
        spent += Decimal(raw.headers["x-interlock-cost-usd"])
        # reconciled: the counter is exactly the actual spend, the reservation is gone
        assert await budgets.spent("tag:batch") == spent
    assert rejected is not None, "the budget never rejected"
    assert rejected.status_code == 429 and rejected.code == "budget_exceeded"
    message = rejected.message
    assert "tag:batch" in message and "daily" in message and "$100.00" in message
    # the request was rejected because its worst case would not fit: the spend never went over
    assert spent <= 100
    upstream_calls = len([r for r in fake.requests if r.path.endswith("/chat/completions")])

    # released: the rejection left the counter where it was, and nothing went upstream
    assert await budgets.spent("tag:batch") == spent
    with pytest.raises(openai.RateLimitError):
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED)
    assert len([r for r in fake.requests if r.path.endswith("/chat/completions")]) == upstream_calls
    assert await budgets.spent("tag:batch") == spent

    # other traffic is not limited by the tag's budget
    await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10)

    # alerts: the soft threshold once, the hard limit once (on the first rejection)
    kinds = [(a.kind, a.scope) for a in sink.alerts]
    assert kinds.count(("budget_soft", "tag:batch")) == 1
    assert kinds.count(("budget_hard", "tag:batch")) == 1
    soft = next(a for a in sink.alerts if a.kind == "budget_soft")
    assert soft.threshold_usd == Decimal(100) and soft.value_usd is not None and soft.value_usd >= 50
    assert soft.details["period"] == "daily"

    # the ledger agrees with the counter; rejected requests are recorded with their reason
    await flush_ledger(gw.gateway)
    with sqlite3.connect(tmp_path / "interlock.db") as db:
        rows = db.execute("SELECT tags, cost_usd, status, error_type FROM requests").fetchall()
    assert sum(Decimal(str(cost)) for tags, cost, _, _ in rows if "batch" in tags and cost is not None) == spent
    errors = [(status, error) for _, cost, status, error in rows if cost is None]
    assert errors == [(429, "budget_exceeded"), (429, "budget_exceeded")]


class SpyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.deltas: list[tuple[str, int]] = []

    async def reserve(self, keys: Sequence[str], limits: Sequence[int | None], amount: int,
                      ttl: float | None = None) -> tuple[int | None, list[int]]:
        self.deltas.extend((key, amount) for key in keys if key.startswith("budget:"))
        return await super().reserve(keys, limits, amount, ttl)

    async def add(self, keys: Sequence[str], delta: int, ttl: float | None = None) -> list[int]:
        self.deltas.extend((key, delta) for key in keys if key.startswith("budget:"))
        return await super().add(keys, delta, ttl)


async def test_streams_hold_their_reservation_until_they_end(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    store = SpyStore()
    gw = await make_gateway(
        budget_config(fake.base_url, '[[budgets]]\nscope = "global"\nmonthly_usd = 1000\n'), store=store
    )
    stream = await gw.client.chat.completions.create(
        model="openai/gpt-4o", messages=HELLO, max_tokens=50, stream=True, stream_options={"include_usage": True}
    )
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None
    actual = (usage.prompt_tokens + usage.completion_tokens) * 1_000_000
    # the worst case (prompt estimate + 50 output tokens at $1) was reserved before the call,
    # and the end of the stream replaced it with the actual cost
    (key, reserved), (key2, correction) = store.deltas
    assert key == key2 and key.startswith("budget:global:")
    assert reserved == (3 + 50) * 1_000_000
    assert reserved + correction == actual
    assert await gw.gateway.budgets.spent("global", "monthly") == Decimal(actual) / 1_000_000


async def test_a_first_request_refused_says_what_is_spent_and_what_it_may_cost(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    """Nothing spent yet, a worst case larger than the budget: the alert must not say the budget was reached."""
    sink = AlertSink()
    gw = await make_gateway(budget_config(fake.base_url, '[[budgets]]\nscope = "global"\ndaily_usd = 5\n'),
                            extra_plugins=[("sink", sink)])
    with pytest.raises(openai.RateLimitError):
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10)
    (alert,) = sink.alerts
    assert alert.kind == "budget_hard" and alert.value_usd == 0 and alert.threshold_usd == 5
    assert "reached" not in alert.message
    assert alert.message.startswith("global refused a request under its daily budget of $5.00 for ")
    assert ": $0.00 is spent or reserved and the request may cost up to $" in alert.message


async def test_alert_action_never_rejects_but_alerts_once(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    sink = AlertSink()
    gw = await make_gateway(
        budget_config(fake.base_url, '[[budgets]]\nscope = "global"\ndaily_usd = 5\naction = "alert"\nsoft = 0\n'),
        extra_plugins=[("sink", sink)],
    )
    for _ in range(3):
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10)
    assert await gw.gateway.budgets.spent("global") > 5
    assert [(a.kind, a.scope) for a in sink.alerts] == [("budget_hard", "global")]


async def test_gateways_sharing_a_store_agree(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    """Two gateways on one store (as two processes on one shared store) count into the same budget."""
    store = MemoryStore()
    toml = budget_config(fake.base_url, '[[budgets]]\nscope = "global"\ndaily_usd = 60\n')
    one = await make_gateway(toml, store=store)
    two = await make_gateway(toml, store=store)
    spent = Decimal(0)
    statuses = []
    for i in range(12):
        gw = (one, two)[i % 2]
        try:
            raw = await gw.client.chat.completions.with_raw_response.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10
            )
            spent += Decimal(raw.headers["x-interlock-cost-usd"])
            statuses.append(200)
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            statuses.append(429)
    assert 200 in statuses and 429 in statuses
    assert statuses.index(429) > 1  # both served some before the shared limit
    assert spent <= 60
    assert await one.gateway.budgets.spent("global") == await two.gateway.budgets.spent("global") == spent


async def test_unknown_price_reserves_nothing_and_counts_actual_where_the_budget_allows_it(
    fake: FakeOpenAI, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    toml = openai_config(fake.base_url, '[prices."gpt-4o"]\ninput = 0\noutput = 0\n[[budgets]]\nscope = "global"\n'
                                        'daily_usd = 1\nallow_unpriced = true\n')
    gw = await make_gateway(toml)
    budgets = gw.gateway.budgets
    held = await budgets.reserve(_ctx({"model": "backup/unpriced-model", "messages": HELLO}), None, "backup/unpriced-model")
    assert held is not None and held.micros == 0 and held.note is not None and "no price" in held.note
    assert "backup/unpriced-model has no price" in caplog.text
    await budgets.reconcile(held, None)
    await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO)
    assert await gw.gateway.budgets.spent("global") == 0


UNPRICED = """
[providers.house]
type = "openai"
base_url = "{base_url}"
api_key = "sk-house-0123456789"
models = ["house-model"]

[[budgets]]
scope = "team:search"
daily_usd = 5
{extra}
[[keys]]
key = "ik_unpriced-search-0123456789"
team = "search"
"""


@pytest.mark.parametrize(("extra", "served"), [("", False), ("allow_unpriced = true", True), ('action = "alert"', True)],
                         ids=["refused", "allow_unpriced", "alert-only"])
async def test_a_model_without_a_price_is_refused_under_a_reject_budget(
    make_gateway: GatewayFactory, extra: str, served: bool
) -> None:
    """Unpriced means uncountable: under a reject budget it would slip past the limit (it reserved and counted $0)."""
    async with FakeOpenAI(models=["house-model"]) as house:
        gw = await make_gateway(UNPRICED.format(base_url=house.base_url, extra=extra))
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="ik_unpriced-search-0123456789", max_retries=0)
        try:
            if served:
                reply = await client.chat.completions.create(model="house/house-model", messages=HELLO)
                assert reply.choices[0].message.content
                assert len(house.requests) == 1
                return
            with pytest.raises(openai.PermissionDeniedError) as exc:
                await client.chat.completions.create(model="house/house-model", messages=HELLO)
        finally:
            await client.close()
    assert exc.value.code == "model_unpriced"
    message = exc.value.body["message"] if isinstance(exc.value.body, dict) else str(exc.value)
    assert "house/house-model has no price" in message and "team:search" in message
    assert '[prices."house/house-model"]' in message and "allow_unpriced" in message
    assert house.requests == []  # refused before any upstream call
    assert gw.log.last.status == 403 and gw.log.last.error_type == "model_unpriced"  # and recorded


def test_allow_unpriced_must_be_a_boolean() -> None:
    problems: list[tuple[str, str]] = []
    parse_budgets([{"scope": "global", "daily_usd": 1, "allow_unpriced": "yes"}], problems)
    assert problems == [("budgets[0].allow_unpriced", "must be true or false, not 'yes'")]


def _ctx(body: dict[str, object]) -> object:
    from interlock.core.types import RequestContext

    return RequestContext(request_id="r", endpoint="chat", body=body)


async def test_reserve_and_reconcile_units() -> None:
    """Period keys, micro-dollar counters, release on rejection, once-only alerts (no HTTP)."""
    store = MemoryStore()
    alerts: list[Alert] = []
    problems: list[tuple[str, str]] = []
    budgets_cfg = parse_budgets([{"scope": "team:search", "daily_usd": 20, "monthly_usd": 25}], problems)
    assert not problems
    budgets = Budgets(budgets_cfg, store, alerts.append, clock=lambda: 1_700_000_000.0)  # 2023-11-14 UTC
    from interlock.core.types import RequestContext

    ctx = RequestContext(request_id="r", endpoint="chat", body={"model": "m", "messages": HELLO, "max_tokens": 5}, team="search")
    assert budgets.output_allowance(ctx) == 4096
    worst = Decimal("0.000001") * (3 + 5) * 1_000_000  # $1 a token: 3 prompt tokens (estimated) + max_tokens 5
    held = await budgets.reserve(ctx, worst)
    assert held is not None and held.micros == (3 + 5) * 1_000_000
    assert await store.get("budget:team:search:2023-11-14") == held.micros
    assert await store.get("budget:team:search:2023-11") == held.micros
    await budgets.reconcile(held, Decimal("7.25"))
    await budgets.reconcile(held, Decimal("7.25"))  # settled once
    assert await store.get("budget:team:search:2023-11-14") == 7_250_000
    assert [a.kind for a in alerts] == []  # 7.25 < 0.8 x 20
    held = await budgets.reserve(ctx, worst)
    await budgets.reconcile(held, Decimal("9"))  # 16.25: soft on the day (16), not on the month (20)
    assert [(a.kind, a.details["period"]) for a in alerts] == [("budget_soft", "daily")]
    from interlock.core.errors import GatewayError

    with pytest.raises(GatewayError) as info:
        await budgets.reserve(ctx, worst)  # 16.25 + 8 > 20
    assert info.value.status == 429 and info.value.code == "budget_exceeded"
    assert "team:search" in info.value.message and "2023-11-14" in info.value.message
    assert await store.get("budget:team:search:2023-11-14") == 16_250_000  # released
    assert await store.get("budget:team:search:2023-11") == 16_250_000
    assert budgets.applicable(RequestContext(request_id="x", endpoint="chat", body={}, team="other")) == []
    assert budgets.output_allowance(RequestContext(request_id="x", endpoint="chat", body={}, team="other")) is None


def test_budget_config_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[budgets]]\nscope = "teams:x"\ndaily_usd = 1\n'
        '[[budgets]]\nscope = "global"\n'
        '[[budgets]]\nscope = "tag:a"\ndaily_usd = -1\nsoft = 2\naction = "block"\nbogus = 1\n'
        "[anomaly]\nsensitivity = 0\nbucket_minutes = \"5\"\n"
    )
    with pytest.raises(ConfigError) as info:
        config_mod.load(str(path), environ={})
    paths = {p for p, _ in info.value.problems}
    assert {
        "budgets[0].scope", "budgets[1]", "budgets[2].daily_usd", "budgets[2].soft", "budgets[2].action",
        "budgets[2].bogus", "anomaly.sensitivity", "anomaly.bucket_minutes",
    } <= paths


async def test_a_budget_holds_on_every_door(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    """One global budget counts Chat Completions, Responses and Messages spend alike and refuses each in its own shape."""
    import anthropic

    gw = await make_gateway(budget_config(fake.base_url, '[[budgets]]\nscope = "global"\ndaily_usd = 60\n'))
    sdk = anthropic.AsyncAnthropic(base_url=gw.root, api_key="k", max_retries=0)
    try:
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=5)
        await gw.client.responses.create(model="openai/gpt-4o", input="hello there", max_output_tokens=16, store=False)
        await sdk.messages.create(model="openai/gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "hello there"}])
        spent = await gw.gateway.budgets.spent("global")
        assert spent == sum(d.cost_usd for d in gw.log.decisions if d.cost_usd is not None) and spent > 0
        assert {d.protocol for d in gw.log.decisions} == {"chat_completions", "responses", "messages"}
        # a request whose worst case no longer fits is refused before any upstream call, on every door
        upstream_calls = len(fake.requests)
        with pytest.raises(openai.RateLimitError) as chat_err:
            await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=60)
        assert chat_err.value.code == "budget_exceeded"
        with pytest.raises(openai.RateLimitError) as responses_err:
            await gw.client.responses.create(model="openai/gpt-4o", input="hello there", max_output_tokens=60, store=False)
        assert responses_err.value.code == "budget_exceeded"
        with pytest.raises(anthropic.RateLimitError) as messages_err:
            await sdk.messages.create(model="openai/gpt-4o", max_tokens=60, messages=[{"role": "user", "content": "hi"}])
        body = messages_err.value.body
        assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert len(fake.requests) == upstream_calls
        assert await gw.gateway.budgets.spent("global") == spent
    finally:
        await sdk.close()
