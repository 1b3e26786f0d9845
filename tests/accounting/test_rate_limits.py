"""Rate limits: rpm, tpm and concurrency per key, team and model; allowlists, expiry, the shared store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from interlock import hookimpl
from interlock.accounting import keys as keys_mod
from interlock.accounting.rate_limits import format_reset
from interlock.core import config as config_mod
from interlock.core.config import ConfigError
from interlock.core.store import MemoryStore, StoreUnavailable
from interlock.core.types import Decision
from interlock.testing import FakeOpenAI
from interlock.testing._base import Fault
from tests.conftest import GatewayFactory, RunningGateway, openai_config

SEARCH_KEY = "sk-team-search-0123456789abcdef"
OTHER_KEY = "sk-team-search-other-0123456789"
HELLO: Any = [{"role": "user", "content": "hello there"}]
# a fixed wall clock 10 s into a UTC minute: window arithmetic is exact and never rolls over by itself
T0 = 1_800_000_000.0 - (1_800_000_000 % 60) + 10


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keyed(base_url: str, key_fields: str = "", extra: str = "") -> str:
    return openai_config(base_url, f"""
[[keys]]
key = "{SEARCH_KEY}"
name = "search"
team = "search"
{key_fields}

[[keys]]
key = "{OTHER_KEY}"
name = "other"
team = "search"
{extra}
""")


def client(gw: RunningGateway, key: str = SEARCH_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def upstream_calls(fake: FakeOpenAI) -> int:
    return len([r for r in fake.requests if r.path.endswith("/chat/completions")])


async def test_rpm_limit_through_the_sdk(fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Any) -> None:
    gw = await make_gateway(keyed(fake.base_url, "rpm = 3"), clock=Clock())
    async with client(gw) as c:
        for remaining in (2, 1, 0):
            raw = await c.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
            assert raw.headers["x-ratelimit-reset-requests"] == "50s"  # the minute ends in 50 s
            assert "x-ratelimit-limit-tokens" not in raw.headers  # no tpm applies
        calls = upstream_calls(fake)
        with pytest.raises(openai.RateLimitError) as caught:
            await c.chat.completions.create(model="smart", messages=HELLO)
    err = caught.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    assert err.type == "rate_limit_error"
    assert "rate limit: key cfg_search allows 3 requests per minute" in err.message
    assert err.response.headers["Retry-After"] == "50"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert upstream_calls(fake) == calls  # rejected before any upstream call
    # another key of the same team is not limited by this key's rpm
    async with client(gw, OTHER_KEY) as c:
        raw = await c.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert "x-ratelimit-limit-requests" not in raw.headers
    # recorded like a budget rejection: a 429 decision with its reason, in the ledger too
    rejected = [d for d in gw.log.decisions if d.status == 429]
    assert [(d.error_type, d.api_key_id, d.attempts) for d in rejected] == [("rate_limit_exceeded", "cfg_search", [])]
    for exporter in gw.gateway.exporters:
        await exporter.flush()
    with sqlite3.connect(tmp_path / "interlock.db") as db:
        rows = db.execute("SELECT status, error_type, error_message FROM requests WHERE status = 429").fetchall()
    assert len(rows) == 1 and rows[0][1] == "rate_limit_exceeded" and "3 requests per minute" in rows[0][2]


async def test_tpm_reserves_the_worst_case_and_reconciles_to_actual(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    store = MemoryStore()
    clock = Clock()
    gw = await make_gateway(keyed(fake.base_url, "tpm = 1000"), clock=clock, store=store)
    key = f"rl:tpm:key:cfg_search:{int(T0 // 60)}"
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="smart", messages=HELLO, max_tokens=200)
        answer = raw.parse()
        assert answer.usage is not None
        first = answer.usage.prompt_tokens + answer.usage.completion_tokens
        assert first < 200  # far below the worst case (3 estimated + 200 output)
        # a non-stream answer is settled before its headers: they show the tokens actually used
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - first)
        assert raw.headers["x-ratelimit-reset-tokens"] == "50s"
        assert await store.get(key) == first

        # a stream's headers go out before it ends: they show its worst case as reserved
        raw_stream = await c.chat.completions.with_raw_response.create(
            model="smart", messages=HELLO, max_tokens=300, stream=True, stream_options={"include_usage": True})
        assert raw_stream.headers["x-ratelimit-remaining-tokens"] == str(1000 - first - (3 + 300))
        usage = None
        async for chunk in raw_stream.parse():
            if chunk.usage is not None:
                usage = chunk.usage
        assert usage is not None
        second = usage.prompt_tokens + usage.completion_tokens
        assert await store.get(key) == first + second  # reconciled when the stream ended

        # a request whose worst case does not fit what is left is refused before the upstream
        calls = upstream_calls(fake)
        with pytest.raises(openai.RateLimitError) as caught:
            await c.chat.completions.create(model="smart", messages=HELLO, max_tokens=1000 - first - second)
        assert "allows 1000 tokens per minute" in caught.value.message
        assert caught.value.response.headers["Retry-After"] == "50"
        # one that can never fit is told not to retry
        with pytest.raises(openai.RateLimitError) as never:
            await c.chat.completions.create(model="smart", messages=HELLO, max_tokens=5000)
        assert never.value.response.headers["x-should-retry"] == "false" and "never fits" in never.value.message
        assert upstream_calls(fake) == calls
        assert await store.get(key) == first + second  # rejections left the counter alone

        # a request without max_tokens reserves at most what the window allows (not 4096)
        clock.now += 60
        raw = await c.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.parse().usage is not None


async def test_concurrent_limit_with_a_slow_upstream(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    store = MemoryStore()
    held_when_recorded: list[int] = []

    class Spy:
        @hookimpl
        def record_decision(self, decision: Decision) -> None:
            if decision.status == 200:
                held_when_recorded.append(len(store._held("rl:conc:key:cfg_search")))

    gw = await make_gateway(keyed(fake.base_url, "max_concurrent = 1"), store=store, extra_plugins=[("spy", Spy())])
    fake.add_fault(Fault(latency=1.0))
    async with client(gw) as c:
        slow = asyncio.create_task(c.chat.completions.create(model="smart", messages=HELLO))
        deadline = time.monotonic() + 10
        while upstream_calls(fake) < 1:  # the slow request holds the slot
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert await store.leases("rl:conc:key:cfg_search") == 1
        with pytest.raises(openai.RateLimitError) as caught:
            await c.chat.completions.create(model="smart", messages=HELLO)
        assert "key cfg_search allows 1 concurrent requests" in caught.value.message
        assert caught.value.response.headers["Retry-After"] == "1"
        await slow
        assert await store.leases("rl:conc:key:cfg_search") == 0
        await c.chat.completions.create(model="smart", messages=HELLO)  # the slot is free again
        # a stream holds its slot until it ends
        stream = await c.chat.completions.create(model="smart", messages=HELLO, stream=True)
        async for _ in stream:
            pass
    # a stream holds its slot until it ends: still held when the finished stream was recorded
    assert held_when_recorded == [1, 1, 1]
    assert await store.leases("rl:conc:key:cfg_search") == 0


async def test_team_limits_count_every_key_of_the_team(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(keyed(fake.base_url, extra="[teams.search]\nrpm = 2\n"), clock=Clock())
    async with client(gw) as one, client(gw, OTHER_KEY) as two:
        raw = await one.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        await two.chat.completions.create(model="smart", messages=HELLO)
        with pytest.raises(openai.RateLimitError) as caught:
            await one.chat.completions.create(model="smart", messages=HELLO)
    assert "rate limit: team search allows 2 requests per minute" in caught.value.message


async def test_tightest_limit_is_in_the_headers(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(keyed(fake.base_url, "rpm = 10", extra="[teams.search]\nrpm = 3\n"), clock=Clock())
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"


async def test_model_limits_apply_to_every_caller_of_the_route(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, '[rate_limits.smart]\nrpm = 1\n'), clock=Clock())
    await gw.client.chat.completions.create(model="smart", messages=HELLO)  # an open gateway: no key at all
    with pytest.raises(openai.RateLimitError) as caught:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert "rate limit: model smart allows 1 requests per minute" in caught.value.message
    await gw.client.chat.completions.create(model="openai/gpt-4o-mini", messages=HELLO)  # another model


async def test_window_rollover_with_an_injected_clock(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    clock = Clock()
    gw = await make_gateway(keyed(fake.base_url, "rpm = 1"), clock=clock)
    async with client(gw) as c:
        await c.chat.completions.create(model="smart", messages=HELLO)
        clock.now += 49  # one second before the minute ends
        with pytest.raises(openai.RateLimitError) as caught:
            await c.chat.completions.create(model="smart", messages=HELLO)
        assert caught.value.response.headers["Retry-After"] == "1"
        clock.now += 1  # the next minute: a fresh window
        raw = await c.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        assert raw.headers["x-ratelimit-reset-requests"] == "1m0s"


async def test_key_expiry(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    clock = Clock()
    gw = await make_gateway(keyed(fake.base_url, 'expires_at = "2027-01-15T08:00:00+00:00"'), clock=clock)
    clock.now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    async with client(gw) as c:
        with pytest.raises(openai.AuthenticationError) as caught:
            await c.chat.completions.create(model="smart", messages=HELLO)
        assert caught.value.status_code == 401 and caught.value.code == "expired"
        assert "2027-01-15T08:00:00Z" in caught.value.message
        clock.now -= 1
        await c.chat.completions.create(model="smart", messages=HELLO)


async def test_key_model_allowlist(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(keyed(fake.base_url, 'models = ["smart", "backup/gpt-4o-*"]'))
    async with client(gw) as c:
        await c.chat.completions.create(model="smart", messages=HELLO)
        await c.chat.completions.create(model="backup/gpt-4o-mini", messages=HELLO)  # a pattern
        calls = upstream_calls(fake)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await c.chat.completions.create(model="openai/gpt-4o", messages=HELLO)
        assert caught.value.status_code == 403 and caught.value.code == "model_not_allowed"
        assert "'openai/gpt-4o'" in caught.value.message and "key cfg_search" in caught.value.message
        # a per-request fallback list cannot smuggle another model in
        with pytest.raises(openai.PermissionDeniedError):
            await c.chat.completions.create(model="smart", messages=HELLO, extra_body={"models": ["openai/gpt-4o"]})
        assert upstream_calls(fake) == calls
    assert gw.log.last.status == 403 and gw.log.last.error_type == "model_not_allowed"


async def test_anthropic_sdk_gets_a_429_in_anthropics_shape(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(keyed(fake.base_url, "rpm = 1"), clock=Clock())
    async with anthropic.AsyncAnthropic(base_url=gw.root, api_key=SEARCH_KEY, max_retries=0) as c:
        raw = await c.messages.with_raw_response.create(model="openai/gpt-4o", max_tokens=50, messages=HELLO)
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(anthropic.RateLimitError) as caught:
            await c.messages.create(model="openai/gpt-4o", max_tokens=50, messages=HELLO)
    err = caught.value
    assert err.status_code == 429 and err.response.headers["Retry-After"] == "50"
    body: Any = err.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "key cfg_search allows 1 requests per minute" in body["error"]["message"]


async def test_responses_door_renders_the_429_too(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(keyed(fake.base_url, "rpm = 1"), clock=Clock())
    async with client(gw) as c:
        await c.responses.create(model="openai/gpt-4o", input="hello", store=False)
        with pytest.raises(openai.RateLimitError) as caught:
            await c.responses.create(model="openai/gpt-4o", input="hello", store=False)
    assert caught.value.code == "rate_limit_exceeded"


async def test_two_gateways_sharing_a_store_enforce_one_limit(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    store, clock = MemoryStore(), Clock()
    toml = keyed(fake.base_url, "rpm = 3")
    one = await make_gateway(toml, store=store, clock=clock)
    two = await make_gateway(toml, store=store, clock=clock)
    statuses = []
    for i in range(6):
        async with client((one, two)[i % 2]) as c:
            try:
                await c.chat.completions.create(model="smart", messages=HELLO)
                statuses.append(200)
            except openai.RateLimitError:
                statuses.append(429)
    assert statuses == [200, 200, 200, 429, 429, 429]


class DownStore(MemoryStore):
    """A shared store that is down, with ``[store] on_error = "reject"``."""

    async def reserve(self, keys: Sequence[str], limits: Sequence[int | None], amount: int,
                      ttl: float | None = None) -> tuple[int | None, list[int]]:
        raise StoreUnavailable("redis://cache:6379 unreachable")


async def test_store_outage_is_a_503_and_no_upstream_call(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(keyed(fake.base_url, "rpm = 5"), store=DownStore())
    async with client(gw) as c:
        with pytest.raises(openai.InternalServerError) as caught:
            await c.chat.completions.create(model="smart", messages=HELLO)
    assert caught.value.status_code == 503 and caught.value.code == "store_unavailable"
    assert "redis://cache:6379 unreachable" in caught.value.message
    assert upstream_calls(fake) == 0
    assert gw.log.last.status == 503 and gw.log.last.error_type == "store_unavailable"


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.touched: list[str] = []

    async def reserve(self, keys: Sequence[str], limits: Sequence[int | None], amount: int,
                      ttl: float | None = None) -> tuple[int | None, list[int]]:
        self.touched += keys
        return await super().reserve(keys, limits, amount, ttl)

    async def add(self, keys: Sequence[str], delta: int, ttl: float | None = None) -> list[int]:
        self.touched += keys
        return await super().add(keys, delta, ttl)

    async def lease(self, key: str, member: str, limit: int | None, ttl: float) -> tuple[bool, int]:
        self.touched.append(key)
        return await super().lease(key, member, limit, ttl)


async def test_no_store_call_when_no_limit_applies(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    store = CountingStore()
    # limits exist, but not for this key, its team or this model
    gw = await make_gateway(keyed(fake.base_url, extra='[teams.other]\nrpm = 1\n[rate_limits."gpt-4o"]\nrpm = 1\n'),
                            store=store)
    async with client(gw) as c:
        await c.chat.completions.create(model="smart", messages=HELLO)
        await c.chat.completions.create(model="smart", messages=HELLO, stream=True)
    assert [k for k in store.touched if k.startswith("rl:")] == []


async def test_a_budget_rejection_gives_back_the_rate_limit_counts(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    store = MemoryStore()
    budget = '[prices."gpt-4o"]\ninput = 1000000\noutput = 1000000\n[[budgets]]\nscope = "team:search"\ndaily_usd = 1\n'
    gw = await make_gateway(keyed(fake.base_url, "rpm = 5\ntpm = 5000\nmax_concurrent = 1", extra=budget),
                            store=store, clock=Clock())
    async with client(gw) as c:
        for _ in range(3):
            with pytest.raises(openai.RateLimitError) as caught:
                await c.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=100)
            assert caught.value.code == "budget_exceeded"
    minute = int(T0 // 60)
    assert (await store.get(f"rl:rpm:key:cfg_search:{minute}"), await store.get(f"rl:tpm:key:cfg_search:{minute}")) == (0, 0)
    assert await store.leases("rl:conc:key:cfg_search") == 0


# --------------------------------------------------------------------------- #
# the admin API, and key changes on every replica
# --------------------------------------------------------------------------- #


async def call(method: str, url: str, json: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, json=json, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_admin_api_stores_and_changes_limits(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url), clock=Clock())
    status, created = await call("POST", gw.root + "/-/keys", {
        "team": "research", "rpm": 1, "tpm": 10000, "max_concurrent": 2, "models": ["smart"],
        "expires_at": "2030-01-01T00:00:00Z"})
    assert status == 201, created
    assert (created["rpm"], created["tpm"], created["max_concurrent"], created["models"], created["expires_at"]) == (
        1, 10000, 2, ["smart"], "2030-01-01T00:00:00Z")
    async with client(gw, created["key"]) as c:
        await c.chat.completions.create(model="smart", messages=HELLO)
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="smart", messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError):
            await c.chat.completions.create(model="openai/gpt-4o", messages=HELLO)

        status, patched = await call("PATCH", f"{gw.root}/-/keys/{created['id']}", {"rpm": 5, "models": None})
        assert status == 200 and patched["rpm"] == 5 and patched["models"] is None and patched["tpm"] == 10000
        raw = await c.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=HELLO)
        assert raw.headers["x-ratelimit-limit-requests"] == "5"

    status, listing = await call("GET", gw.root + "/-/keys")
    [row] = [k for k in listing["data"] if k["id"] == created["id"]]
    assert (row["rpm"], row["tpm"], row["max_concurrent"], row["models"]) == (5, 10000, 2, None)
    assert "key" not in row and "key_hash" not in row

    status, error = await call("POST", gw.root + "/-/keys", {"rpm": 0})
    assert status == 400 and error["error"]["param"] == "rpm"
    status, error = await call("PATCH", f"{gw.root}/-/keys/{created['id']}", {"expires_at": "next week"})
    assert status == 400 and error["error"]["param"] == "expires_at"
    status, error = await call("PATCH", f"{gw.root}/-/keys/key_nope", {"rpm": 2})
    assert status == 404


async def test_key_changes_reach_another_gateway_through_the_store(
    fake: FakeOpenAI, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes sharing a database and a store: no waiting for the periodic refresh."""
    monkeypatch.setattr(keys_mod, "REFRESH_INTERVAL", 3600.0)  # the safety net never fires in this test
    store = MemoryStore()
    a = await make_gateway(openai_config(fake.base_url), store=store)
    b = await make_gateway(openai_config(fake.base_url), store=store)
    assert a.gateway.cfg.database_url == b.gateway.cfg.database_url

    async def until_status_on_b(key: str | None, expected: int) -> None:
        deadline = time.monotonic() + 5
        while (await call("GET", b.root + "/v1/models", token=key))[0] != expected:
            assert time.monotonic() < deadline, f"gateway B never answered {expected}"
            await asyncio.sleep(0.01)

    status, created = await call("POST", a.root + "/-/keys", {"team": "research", "rpm": 1})
    assert status == 201
    await until_status_on_b(None, 401)  # B learnt that keys exist (an open gateway answers any key)
    assert (await call("GET", b.root + "/v1/models", token=created["key"]))[0] == 200
    async with client(b, created["key"]) as c:
        await c.chat.completions.create(model="smart", messages=HELLO)  # B knows its limits too
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="smart", messages=HELLO)
    assert (await call("DELETE", f"{a.root}/-/keys/{created['id']}"))[0] == 200
    await until_status_on_b(created["key"], 401)


# --------------------------------------------------------------------------- #
# config
# --------------------------------------------------------------------------- #


def test_config_problems_have_key_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        config_mod.parse({
            "keys": [{"key": SEARCH_KEY, "rpm": 0, "tpm": "lots", "models": "gpt-4o", "expires_at": "tomorrow"}],
            "teams": {"search": {"rpm": 10, "burst": 5, "max_concurrent": -1}, "empty": {}},
            "rate_limits": {"gpt-4.1": {"rpm": 1.5, "models": ["x"]}, "smart": 3},
        }, environ={})
    paths = {path for path, _ in caught.value.problems}
    assert paths == {
        "keys[0].rpm", "keys[0].tpm", "keys[0].models", "keys[0].expires_at",
        "teams.search.burst", "teams.search.max_concurrent", "teams.empty",
        'rate_limits."gpt-4.1".rpm', 'rate_limits."gpt-4.1".models', "rate_limits.smart",
    }


def test_config_limits_parse() -> None:
    from datetime import UTC, datetime

    cfg = config_mod.parse({
        "keys": [{"key": SEARCH_KEY, "name": "s", "rpm": 60, "models": ["gpt-4o*"],
                  "expires_at": datetime(2030, 1, 1, tzinfo=UTC)}],  # a TOML offset date-time
        "teams": {"search": {"tpm": 1000, "models": ["smart"]}},
        "rate_limits": {"gpt-4o": {"max_concurrent": 4}},
    }, environ={})
    record = cfg.keys[0].record
    assert record.limits.rpm == 60 and record.limits.models == ("gpt-4o*",)
    assert record.expires_at == datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert cfg.teams["search"].tpm == 1000 and cfg.teams["search"].models == ("smart",)
    assert cfg.rate_limits["gpt-4o"].max_concurrent == 4


def test_reset_is_formatted_like_openai() -> None:
    assert [format_reset(s) for s in (0.017, 1, 20.5, 60, 360, 3725)] == ["17ms", "1s", "20.5s", "1m0s", "6m0s", "1h2m5s"]
