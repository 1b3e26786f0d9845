"""GET/DELETE /v1/responses/{id} and its input items, driven by the official openai SDK.

The Responses door (which puts records) lands separately: these tests put records into
``gateway.response_store`` directly, as the door does after answering.
"""

from __future__ import annotations

import time
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from interlock.accounting.stored_responses import SqlResponseStore
from interlock.core import config as config_mod
from interlock.core.config import ConfigError
from interlock.core.doors.stored_responses import StoredResponse
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import running_gateway
from tests.conftest import GatewayFactory, RunningGateway, openai_config

SEARCH_KEY = "sk-team-search-0123456789abcdef"
BILLING_KEY = "sk-team-billing-0123456789abcdef"
KEYS = """
[[keys]]
key = "${SEARCH_KEY}"
name = "search"
team = "search"

[[keys]]
key = "${BILLING_KEY}"
name = "billing"
team = "billing"
"""
ENV = {"SEARCH_KEY": SEARCH_KEY, "BILLING_KEY": BILLING_KEY}


def stored(rid: str = "resp_abc123", *, team: str | None = "search", n_inputs: int = 1) -> StoredResponse:
    """A record as the door stores it: the response object the client got and the conversation before it."""
    inputs: list[dict[str, Any]] = []
    for i in range(n_inputs):
        inputs.append({"role": "user", "content": f"question {i}"})
    response = {
        "id": rid, "object": "response", "created_at": 1_765_000_000, "status": "completed", "model": "gpt-4o",
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
    }
    return StoredResponse(id=rid, created_at=time.time(), team=team, api_key_id=f"cfg_{team}" if team else None,
                          request_id="req_1", model="gpt-4o", input=inputs, response=response)


def client(gw: RunningGateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


async def test_a_stored_response_is_retrieved_and_deleted_by_its_team(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, KEYS), environ=ENV)
    store = gw.gateway.response_store
    assert isinstance(store, SqlResponseStore)  # the real store, on the ledger's database
    store.put(stored())
    search, billing = client(gw, SEARCH_KEY), client(gw, BILLING_KEY)
    try:
        got = await search.responses.retrieve("resp_abc123")
        assert (got.id, got.model, got.output_text, got.usage and got.usage.total_tokens) == (
            "resp_abc123", "gpt-4o", "Paris.", 7)

        with pytest.raises(openai.NotFoundError) as err:  # another team: as if it did not exist
            await billing.responses.retrieve("resp_abc123")
        assert err.value.body == {"message": "No response found with id 'resp_abc123'", "type": "invalid_request_error",
                                  "param": None, "code": "response_not_found"}
        with pytest.raises(openai.NotFoundError):
            await billing.responses.delete("resp_abc123")

        await store.flush()  # from the database now, not memory
        assert (await search.responses.retrieve("resp_abc123")).id == "resp_abc123"
        assert await search.responses.delete("resp_abc123") is None
        with pytest.raises(openai.NotFoundError):
            await search.responses.retrieve("resp_abc123")
        with pytest.raises(openai.NotFoundError):
            await search.responses.delete("resp_abc123")
    finally:
        await search.close()
        await billing.close()


async def test_stored_response_endpoints_need_a_key(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, KEYS), environ=ENV)
    gw.gateway.response_store.put(stored())  # type: ignore[union-attr]
    with pytest.raises(openai.AuthenticationError):
        await gw.client.responses.retrieve("resp_abc123")  # "client-key" is no gateway key
    with pytest.raises(openai.AuthenticationError):
        await gw.client.responses.delete("resp_abc123")


async def test_without_keys_the_teamless_scope_reads_its_responses(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    store = gw.gateway.response_store
    assert store is not None
    store.put(stored("resp_open", team=None))
    store.put(stored("resp_team", team="search"))  # e.g. written while keys were configured
    assert (await gw.client.responses.retrieve("resp_open")).id == "resp_open"
    with pytest.raises(openai.NotFoundError):
        await gw.client.responses.retrieve("resp_team")


async def test_input_items_are_listed_and_paged_by_the_sdk(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    gw.gateway.response_store.put(stored("resp_chat", team=None, n_inputs=5))  # type: ignore[union-attr]
    newest_first = [item async for item in gw.client.responses.input_items.list("resp_chat", limit=2)]
    texts = [item.content[0].text for item in newest_first]  # type: ignore[union-attr]
    assert texts == [f"question {i}" for i in (4, 3, 2, 1, 0)]  # three pages of at most two, followed by `after`
    assert all(item.type == "message" and item.role == "user" for item in newest_first)  # type: ignore[union-attr]
    assert len({item.id for item in newest_first}) == 5

    page = await gw.client.responses.input_items.list("resp_chat", order="asc", limit=3)
    assert [item.content[0].text for item in page.data] == ["question 0", "question 1", "question 2"]  # type: ignore[union-attr]
    assert page.has_more is True
    assert [i.id for i in (await gw.client.responses.input_items.list("resp_chat", order="asc")).data] == [
        i.id for i in reversed(newest_first)]  # ids are the same on every read
    with pytest.raises(openai.BadRequestError):
        await gw.client.responses.input_items.list("resp_chat", limit=101)
    with pytest.raises(openai.NotFoundError):
        await gw.client.responses.input_items.list("resp_missing")


async def test_a_stored_response_is_not_streamed(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    gw.gateway.response_store.put(stored(team=None))  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.base_url}/responses/resp_abc123?stream=true") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "stream"


async def test_the_off_switch_stores_nothing_and_says_so(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, "[responses]\nstore = false\n"))
    assert gw.gateway.response_store is None
    for call in (gw.client.responses.retrieve("resp_abc123"), gw.client.responses.delete("resp_abc123"),
                 gw.client.responses.input_items.list("resp_abc123")):
        with pytest.raises(openai.BadRequestError) as err:
            await call
        assert isinstance(err.value.body, dict) and err.value.body["code"] == "response_storage_disabled"
        assert "store = false" in err.value.body["message"]


async def test_a_store_passed_to_the_gateway_replaces_the_sql_one(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    class MemoryStore:
        def __init__(self) -> None:
            self.records: dict[str, StoredResponse] = {}

        def put(self, s: StoredResponse) -> None:
            self.records[s.id] = s

        async def get(self, response_id: str, team: str | None) -> StoredResponse | None:
            s = self.records.get(response_id)
            return s if s is not None and s.team == team else None

        async def delete(self, response_id: str, team: str | None) -> bool:
            return self.records.pop(response_id, None) is not None

    memory = MemoryStore()
    gw = await make_gateway(openai_config(fake.base_url), response_store=memory)
    assert gw.gateway.response_store is memory
    memory.put(stored(team=None))
    assert (await gw.client.responses.retrieve("resp_abc123")).id == "resp_abc123"


async def test_a_reload_keeps_the_store_and_applies_a_new_retention(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    store = gw.gateway.response_store
    assert isinstance(store, SqlResponseStore) and store.retention == timedelta(days=30)
    store.put(stored(team=None))
    cfg = config_mod.parse(tomllib.loads(openai_config(fake.base_url, '[responses]\nstore = false\nretention = "2h"\n')))
    notes = gw.gateway.reload(cfg)
    assert "responses.store changed: takes effect after a restart" in notes
    assert gw.gateway.response_store is store and store.retention == timedelta(hours=2)
    assert (await gw.client.responses.retrieve("resp_abc123")).id == "resp_abc123"  # the pending record survived


async def test_a_graceful_stop_writes_pending_responses_for_the_next_gateway(fake: FakeOpenAI, tmp_path: Path) -> None:
    async with running_gateway(openai_config(fake.base_url), workdir=tmp_path) as first:
        store = first.gateway.response_store
        assert store is not None
        store.put(stored(team=None))
        assert isinstance(store, SqlResponseStore) and store.pending == 1  # not written yet when the gateway stops
    async with running_gateway(openai_config(fake.base_url), workdir=tmp_path) as second:
        assert (await second.client.responses.retrieve("resp_abc123")).output_text == "Paris."


def test_the_responses_table_is_validated_with_key_paths() -> None:
    assert config_mod.parse({}).responses.retention == timedelta(days=30)
    assert config_mod.parse({"responses": {"retention": "forever"}}).responses.retention is None
    cfg = config_mod.parse({"responses": {"store": False, "retention": "12h"}})
    assert (cfg.responses.store, cfg.responses.retention) == (False, timedelta(hours=12))
    with pytest.raises(ConfigError) as err:
        config_mod.parse({"responses": {"store": "yes", "retention": "30 days", "keep": 1}})
    paths = {path for path, _ in err.value.problems}
    assert paths == {"responses.store", "responses.retention", "responses.keep"}
    with pytest.raises(ConfigError) as err:
        config_mod.parse({"responses": {"retention": 30}})
    assert [p for p, _ in err.value.problems] == ["responses.retention"]
