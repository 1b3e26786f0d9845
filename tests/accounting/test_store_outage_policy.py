"""[store] on_error: what budget decisions do while the shared store (a real Redis, stopped) is down."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from interlock.testing import FakeOpenAI
from interlock.testing.gateway import running_gateway
from tests.accounting.test_budgets import HELLO, budget_config
from tests.servers import RedisServer

TAGGED = {"x-interlock-tags": "batch"}


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


def config(fake: FakeOpenAI, redis: RedisServer, on_error: str) -> str:
    return budget_config(fake.base_url, f"""
[[budgets]]
scope = "tag:batch"
daily_usd = 1000

[store]
url = "{redis.url}"
on_error = "{on_error}"
""")


async def until_degraded(gw: object, degraded: bool) -> None:
    import asyncio

    for _ in range(400):
        if gw.gateway.store.status()["degraded"] == degraded:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"the store never became degraded={degraded}")


async def test_reject_refuses_budgeted_requests_while_redis_is_down(fake: FakeOpenAI, redis: RedisServer) -> None:
    async with running_gateway(config(fake, redis, "reject")) as gw:
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED)
        redis.stop()
        with pytest.raises(openai.InternalServerError) as info:  # the store noticing may take this request
            for _ in range(50):
                await gw.client.chat.completions.create(
                    model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
                )
        assert info.value.status_code == 503 and info.value.code == "store_unavailable"
        assert info.value.response.headers["retry-after"] == "1"
        # a request no budget applies to is served
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10)
        redis.start()
        await until_degraded(gw, False)
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED)


async def test_local_keeps_serving_and_counting_while_redis_is_down(fake: FakeOpenAI, redis: RedisServer) -> None:
    async with running_gateway(config(fake, redis, "local")) as gw:
        redis.stop()
        for _ in range(5):
            await gw.client.chat.completions.create(
                model="openai/gpt-4o", messages=HELLO, max_tokens=10, extra_headers=TAGGED
            )
        await until_degraded(gw, True)
        assert await gw.gateway.budgets.spent("tag:batch") > 0  # counted on the process's own counters
        redis.start()
        await until_degraded(gw, False)
