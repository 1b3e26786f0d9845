"""Budget counters survive restarts (re-seeded from the ledger, once however many processes start) and resets."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiohttp
import openai
import pytest

from interlock.accounting.budgets import Budgets, parse_budgets
from interlock.accounting.spend import LedgerHistory
from interlock.core.store import MemoryStore
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import running_gateway
from tests.accounting.test_budgets import HELLO, budget_config, flush_ledger

TEAM = '[[budgets]]\nscope = "tag:batch"\ndaily_usd = 100\n'


def with_database(toml: str, url: str) -> str:
    """The config on ``url``'s ledger (a SQLite file or a PostgreSQL database: tests/conftest.py)."""
    return f'[database]\nurl = "{url}"\n' + toml
TAGGED = {"x-interlock-tags": "batch"}


async def spend_until_rejected(client: openai.AsyncOpenAI) -> Decimal:
    spent = Decimal(0)
    for _ in range(40):
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
            )
        except openai.RateLimitError:
            return spent
        spent += Decimal(raw.headers["x-interlock-cost-usd"])
    raise AssertionError("the budget never rejected")


async def test_a_restart_does_not_forget_the_spend(fake: FakeOpenAI, tmp_path: Path, database_url: str) -> None:
    toml = with_database(budget_config(fake.base_url, TEAM), database_url)
    async with running_gateway(toml, workdir=tmp_path) as first:
        spent = await spend_until_rejected(first.client)
        assert spent > 50
    # a new process with a new (empty) in-memory store: the ledger's spend is seeded before any request
    async with running_gateway(toml, workdir=tmp_path) as second:
        with pytest.raises(openai.RateLimitError) as info:
            await second.client.chat.completions.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
            )
        assert info.value.code == "budget_exceeded"
        assert await second.gateway.budgets.spent("tag:batch") == spent
        # other traffic is not held back
        await second.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10)


async def test_many_processes_starting_at_once_seed_once(fake: FakeOpenAI, tmp_path: Path, database_url: str) -> None:
    toml = with_database(budget_config(fake.base_url, TEAM), database_url)
    async with running_gateway(toml, workdir=tmp_path) as first:
        for _ in range(3):
            await first.client.chat.completions.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
            )
        spent = await first.gateway.budgets.spent("tag:batch")
        await flush_ledger(first.gateway)
    # five "replicas" sharing one (emptied) store start together and all seed the same counter
    store = MemoryStore()
    history = LedgerHistory(database_url)
    budgets = [Budgets(parse_budgets([{"scope": "tag:batch", "daily_usd": 100}], []), store, lambda a: None,
                       history=history) for _ in range(5)]
    try:
        await asyncio.gather(*(b.status() for b in budgets))
        for b in budgets:
            assert await b.spent("tag:batch") == spent  # once, not five times
    finally:
        await history.close()


async def test_an_admin_reset_holds_across_a_restart(fake: FakeOpenAI, tmp_path: Path, database_url: str) -> None:
    toml = with_database(budget_config(fake.base_url, TEAM), database_url)
    async with running_gateway(toml, workdir=tmp_path) as first:
        await spend_until_rejected(first.client)
        async with aiohttp.ClientSession() as http:
            async with http.post(first.root + "/-/budgets/reset", json={"scope": "tag:batch"}) as reset:
                assert reset.status == 200, await reset.text()
                body = await reset.json()
            assert body["scope"] == "tag:batch" and len(body["periods"]) == 1
            raw = await first.client.chat.completions.with_raw_response.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
            )
            after = Decimal(raw.headers["x-interlock-cost-usd"])
            async with http.get(first.root + "/-/budgets") as listed:
                data = (await listed.json())["data"]
            assert [(b["scope"], Decimal(b["counted_usd"])) for b in data] == [("tag:batch", after)]
            async with http.post(first.root + "/-/budgets/reset", json={"scope": "team:nobody"}) as unknown:
                assert unknown.status == 404
    # restarted: only the spend after the reset is seeded
    async with running_gateway(toml, workdir=tmp_path) as second:
        await second.client.chat.completions.create(
            model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
        )
        assert await second.gateway.budgets.spent("tag:batch") == after * 2


async def test_the_ledger_answers_spend_per_anomaly_key_and_bucket(
    fake: FakeOpenAI, tmp_path: Path, database_url: str
) -> None:
    from datetime import UTC, datetime, timedelta

    toml = with_database(budget_config(fake.base_url, TEAM), database_url)
    async with running_gateway(toml, workdir=tmp_path) as gw:
        total = Decimal(0)
        for _ in range(3):
            raw = await gw.client.chat.completions.with_raw_response.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
            )
            total += Decimal(raw.headers["x-interlock-cost-usd"])
        await flush_ledger(gw.gateway)
    history = LedgerHistory(database_url)
    try:
        now = datetime.now(UTC)
        spends = await history.buckets(now - timedelta(hours=1), now + timedelta(minutes=1), 86400.0)
    finally:
        await history.close()
    day = int(now.timestamp() // 86400)
    for key in ("global", "model:gpt-4o", "tag:batch"):  # (a request just before midnight UTC lands in the day before)
        assert set(spends[key]) <= {day - 1, day} and sum(spends[key].values()) == total


async def test_a_user_budget_counts_the_requests_user_and_survives_a_restart(
    fake: FakeOpenAI, tmp_path: Path, database_url: str
) -> None:
    toml = with_database(budget_config(fake.base_url, '[[budgets]]\nscope = "user:ada"\ndaily_usd = 1000\n'), database_url)
    async with running_gateway(toml, workdir=tmp_path) as first:
        raw = await first.client.chat.completions.with_raw_response.create(
            model="openai/gpt-4o", messages=HELLO, max_tokens=10, user="ada"
        )
        await first.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10, user="bob")
        spent = Decimal(raw.headers["x-interlock-cost-usd"])
        assert await first.gateway.budgets.spent("user:ada") == spent  # bob's request is not ada's
    async with running_gateway(toml, workdir=tmp_path) as second:
        [status] = await second.gateway.budgets.status()
        assert status["scope"] == "user:ada" and Decimal(status["counted_usd"]) == spent
