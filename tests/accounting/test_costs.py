"""Every attempt is costed, the request's cost is their sum, and a fallback's delta is recorded."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
from sqlalchemy import func, select

from interlock.accounting import ledger

from interlock.accounting.pricing import PriceTable, cost
from interlock.core.types import Usage
from interlock.testing import FakeOpenAI, Fault
from interlock.testing.gateway import running_gateway
from tests.conftest import SECRET

HI = [{"role": "user", "content": "hello there"}]


def config(fake: FakeOpenAI, url: str | None = None) -> str:
    """Two instances and a fallback route; the ledger on the database ``url``, or no ledger."""
    ledger = f'[database]\nurl = "{url}"' if url else "[exporters.ledger]\nenabled = false"
    return f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[providers.backup]
type = "openai"
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[routes.smart]
chain = "openai/gpt-4o > backup/gpt-4o-mini"
{ledger}
"""


def expected(model: str, usage: Usage) -> Decimal:
    price = PriceTable.builtin().lookup("openai", model)
    assert price is not None
    return cost(usage, price)


async def test_cost_header_matches_the_price_table(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake)) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        usage = raw.parse().usage
        assert usage is not None
        want = expected("gpt-4o", Usage(usage.prompt_tokens, usage.completion_tokens))
        assert Decimal(raw.headers["x-interlock-cost-usd"]) == want
        assert gw.log.last.cost_usd == want and want > 0


async def test_a_fallback_records_its_cost_delta_against_the_primary(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake)) as gw:
        fake.add_fault(Fault(status=503, model="gpt-4o"))
        raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
        d = gw.log.last
        final = d.attempts[-1]
        assert final.usage is not None and d.attempts[0].cost_usd is None  # the failed attempt used nothing
        on_mini, on_4o = expected("gpt-4o-mini", final.usage), expected("gpt-4o", final.usage)
        assert d.cost_usd == on_mini
        assert d.cost_delta_usd == on_mini - on_4o < 0  # mini is cheaper: the fallback saved money
        assert Decimal(raw.headers["x-interlock-cost-delta-usd"]) == d.cost_delta_usd


async def test_streams_are_costed_even_when_the_client_did_not_ask_for_usage(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake)) as gw:
        async with aiohttp.ClientSession() as s:
            body = {"model": "gpt-4o", "messages": HI, "stream": True}
            async with s.post(f"{gw.base_url}/chat/completions", json=body) as resp:
                text = await resp.text()
        usage = gw.log.last.usage
        assert usage is not None
        want = expected("gpt-4o", usage)
        assert gw.log.last.cost_usd == want
        # the cost travels as an SSE comment before [DONE] (clients ignore comments)
        assert f": x-interlock-cost-usd={want.normalize():f}" in text
        assert text.rstrip().endswith("data: [DONE]")


async def test_retries_are_costed_and_summed(fake: FakeOpenAI, database_url: str) -> None:
    toml = config(fake, database_url).replace('chain = "openai/gpt-4o > backup/gpt-4o-mini"', 'chain = "openai/gpt-4o"\nretries = 1\nbackoff = 0.01')
    async with running_gateway(toml) as gw:
        await gw.client.chat.completions.create(model="smart", messages=HI)
        fake.add_fault(Fault(status=500, model="gpt-4o"))  # then a retry on the same target
        await gw.client.chat.completions.create(model="smart", messages=HI)
        for exporter in gw.gateway.exporters:
            await exporter.flush()
        d = gw.log.last
        assert [a.outcome for a in d.attempts] == ["server_error", "ok"]
        assert d.cost_usd == d.attempts[1].cost_usd
        decided = [x.cost_usd for x in gw.log.decisions]
    engine = await ledger.open_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ledger.requests.c.cost_usd).order_by(ledger.requests.c.ts))).scalars().all()
            attempt_costs = (await conn.execute(select(func.sum(ledger.attempts.c.cost_usd)))).scalar()
            request_costs = (await conn.execute(select(func.sum(ledger.requests.c.cost_usd)))).scalar()
    finally:
        await engine.dispose()
    assert all(r is not None and Decimal(str(r)) > 0 for r in rows)
    # the stored cost is the decided one to the column's 10 decimal places (SQLite keeps a float)
    for got, want in zip(rows, decided, strict=True):
        assert want is not None and abs(Decimal(str(got)) - want) < Decimal("1e-10")
    assert abs(Decimal(str(attempt_costs)) - Decimal(str(request_costs))) < Decimal("1e-9")


async def test_spend_groups_by_the_clients_protocol(fake: FakeOpenAI, database_url: str) -> None:
    """Each door's requests are costed and recorded with their protocol; costs --by protocol groups them."""
    from datetime import timedelta

    import anthropic

    from interlock.accounting import spend

    async with running_gateway(config(fake, database_url)) as gw:
        await gw.client.chat.completions.create(model="gpt-4o", messages=HI)
        await gw.client.responses.create(model="gpt-4o", input="hello there", store=False)
        async with anthropic.AsyncAnthropic(base_url=gw.root, api_key="k", max_retries=0) as sdk:
            await sdk.messages.create(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "hello there"}])
            await sdk.messages.create(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "again"}])
        assert all(d.cost_usd is not None and d.cost_usd > 0 for d in gw.log.decisions)
        for exporter in gw.gateway.exporters:
            await exporter.flush()
    engine = await ledger.open_engine(database_url)
    try:
        report = await spend.spend(engine, ["protocol"], timedelta(hours=1))
    finally:
        await engine.dispose()
    requests = {row["protocol"]: row["requests"] for row in report.rows}
    assert requests == {"chat_completions": 1, "responses": 1, "messages": 2}
