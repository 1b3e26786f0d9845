"""``GET /v1/models`` and ``GET /v1/models/{id}``, driven with the official openai and anthropic SDKs.

The listing comes from the configuration alone: routes, the models a provider lists, and for
a provider without a ``models`` setting the models the gateway knows for its type (the price
table's names). An Anthropic client (``anthropic-version`` header) gets Anthropic's shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from interlock.accounting.pricing import PriceTable
from interlock.plugins.detection import detect
from interlock.testing import FakeAnthropic, FakeOpenAI
from tests.conftest import SECRET, GatewayFactory, RunningGateway, openai_config
from tests.core._api_helpers import HELLO, assert_openai_error, raw_request

#: what the price data knows for each type
OPENAI_MODELS = sorted(m for t, m in PriceTable.builtin().models() if t == "openai")
ANTHROPIC_MODELS = sorted(m for t, m in PriceTable.builtin().models() if t == "anthropic")


def listed(models: list[str], ptype: str, instance: str) -> list[str]:
    """How an ``instance`` of ``ptype`` lists ``models``: bare when auto-detection sends the name
    there, ``instance/model`` otherwise (a legacy name detection does not know)."""
    return sorted(m if detect(m) == ptype else f"{instance}/{m}" for m in models)


KNOWN_OPENAI = listed(OPENAI_MODELS, "openai", "openai")
KNOWN_ANTHROPIC = listed(ANTHROPIC_MODELS, "anthropic", "anthropic")


@pytest.fixture
async def claude() -> AsyncIterator[anthropic.AsyncAnthropic]:
    """Set ``claude.base_url`` per test; closed afterwards."""
    client = anthropic.AsyncAnthropic(api_key="client-key", base_url="http://127.0.0.1:9", max_retries=0)
    yield client
    await client.close()


def anthropic_client(gw: RunningGateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="client-key", base_url=gw.root, max_retries=0)


def test_the_price_table_knows_models_of_both_types() -> None:
    assert "gpt-4o" in KNOWN_OPENAI and len(KNOWN_OPENAI) > 3
    assert KNOWN_ANTHROPIC


# --------------------------------------------------------------------------- #
# what is listed
# --------------------------------------------------------------------------- #


async def test_embedded_defaults_with_only_an_openai_key_list_the_known_openai_models(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    env = {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": fake.base_url}
    gw = await make_gateway(None, environ=env)
    page = await gw.client.models.list()
    ids = [m.id for m in page.data]
    # bare names: auto-detection sends each of them to the env-enabled openai instance
    assert sorted(ids) == KNOWN_OPENAI
    assert all(m.object == "model" and m.owned_by == "openai" and isinstance(m.created, int) for m in page.data)
    assert not any(i.startswith("claude") for i in ids)  # no Anthropic key, no Anthropic models
    assert fake.requests == []  # listed without asking the upstream

    # a listed name is a usable name: it reaches the upstream under that name
    raw = await gw.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert raw.headers["x-interlock-provider"] == "openai"
    assert fake.requests[-1].json["model"] == "gpt-4o"


async def test_embedded_defaults_with_two_keys_list_both_types(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    env = {"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": SECRET}
    gw = await make_gateway(None, environ=env)
    ids = {m.id for m in (await gw.client.models.list()).data}
    assert ids == {*KNOWN_OPENAI, *KNOWN_ANTHROPIC}


async def test_embedded_defaults_without_keys_list_nothing(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(None, environ={})
    assert (await gw.client.models.list()).data == []


async def test_routes_configured_models_and_known_models_of_an_unlisted_instance(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    # openai lists two models; backup (also type openai) lists none, so it gets the known ones
    toml = openai_config(fake.base_url).replace(
        "[providers.backup]", 'models = ["gpt-4o", "gpt-4o-mini"]\n\n[providers.backup]'
    )
    toml += '\n[routes.cheap]\nchain = "backup/gpt-4o-mini"\n'
    gw = await make_gateway(toml)
    page = await gw.client.models.list()
    by_id = {m.id: m for m in page.data}
    assert len(by_id) == len(page.data)  # no id twice
    assert by_id["smart"].owned_by == "interlock" and by_id["cheap"].owned_by == "interlock"
    smart = by_id["smart"].model_dump()
    assert smart["targets"] == ["openai/gpt-4o", "backup/gpt-4o-mini"] and smart["strategy"] == "ordered"
    # the openai instance's own list, by bare name (auto-detection sends gpt-4o there)
    assert by_id["gpt-4o"].owned_by == "openai" and by_id["gpt-4o-mini"].owned_by == "openai"
    assert "openai/gpt-5" not in by_id and "gpt-5" not in by_id  # a models list is the whole list
    # backup has no list: the known openai models, qualified (a bare name would go to `openai`)
    assert {i for i, m in by_id.items() if m.owned_by == "backup"} == {f"backup/{m}" for m in OPENAI_MODELS}
    assert fake.requests == []

    for model_id in ("smart", "cheap", "gpt-4o", "gpt-4o-mini", "backup/gpt-4o"):
        raw = await gw.client.chat.completions.with_raw_response.create(model=model_id, messages=HELLO)
        assert raw.parse().choices[0].message.content == "Fake reply to: hello there"


async def test_a_route_named_like_a_model_keeps_the_name_and_the_model_is_qualified(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    toml = f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"
models = ["gpt-4o", "gpt-4o-mini"]

[routes."gpt-4o"]
chain = "openai/gpt-4o-mini"
"""
    gw = await make_gateway(toml)
    by_id = {m.id: m for m in (await gw.client.models.list()).data}
    assert set(by_id) == {"gpt-4o", "openai/gpt-4o", "gpt-4o-mini"}
    assert by_id["gpt-4o"].owned_by == "interlock"  # the route wins the bare name, as in resolution
    assert by_id["openai/gpt-4o"].owned_by == "openai"


async def test_an_instance_not_named_after_its_type_lists_bare_names_it_would_serve(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(f'[providers.main]\ntype = "openai"\nbase_url = "{fake.base_url}"\napi_key = "{SECRET}"\n')
    page = await gw.client.models.list()
    assert sorted(m.id for m in page.data) == listed(OPENAI_MODELS, "openai", "main")
    assert {m.owned_by for m in page.data} == {"main"}


async def test_a_type_the_gateway_knows_no_names_for_lists_only_what_it_is_given(
    make_gateway: GatewayFactory,
) -> None:
    toml = '[providers.local]\ntype = "ollama"\nbase_url = "http://127.0.0.1:9"\n'
    gw = await make_gateway(toml)
    assert (await gw.client.models.list()).data == []
    listed = toml.replace("[providers.local]", '[providers.local]\nmodels = ["llama3.2:3b", "my-finetune"]')
    gw2 = await make_gateway(listed)
    # name:tag is auto-detected as Ollama, so it reaches `local` bare; my-finetune needs the instance
    assert [m.id for m in (await gw2.client.models.list()).data] == ["llama3.2:3b", "local/my-finetune"]


async def test_a_reload_lists_the_new_configuration(
    fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: object
) -> None:
    from interlock.core import config as config_mod

    gw = await make_gateway(openai_config(fake.base_url))
    assert "smart" in {m.id for m in (await gw.client.models.list()).data}
    text = openai_config(fake.base_url).replace("[routes.smart]", "[routes.clever]")
    path = gw.gateway.cfg.source
    assert path is not None
    with open(path, "w") as fh:
        fh.write(text)
    gw.gateway.reload(config_mod.load(path, environ={}))
    ids = {m.id for m in (await gw.client.models.list()).data}
    assert "clever" in ids and "smart" not in ids


# --------------------------------------------------------------------------- #
# one model
# --------------------------------------------------------------------------- #


async def test_retrieve_a_model_by_either_spelling_and_a_route(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    bare = await gw.client.models.retrieve("gpt-4o")
    assert (bare.id, bare.object, bare.owned_by) == ("gpt-4o", "model", "openai")
    qualified = await gw.client.models.retrieve("openai/gpt-4o")  # the SDK sends openai%2Fgpt-4o
    assert (qualified.id, qualified.owned_by) == ("openai/gpt-4o", "openai")
    other = await gw.client.models.retrieve("backup/gpt-4o-mini")
    assert other.owned_by == "backup"
    route = await gw.client.models.retrieve("smart")
    assert route.owned_by == "interlock"
    # an unescaped slash reaches the same model
    raw = await raw_request("GET", f"{gw.base_url}/models/openai/gpt-4o")
    assert raw.status == 200 and raw.json()["id"] == "openai/gpt-4o"
    assert fake.requests == []


async def test_retrieve_an_unknown_model_is_a_404_in_openais_shape(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as info:
        await gw.client.models.retrieve("openai/no-such-model")
    assert info.value.status_code == 404
    raw = await raw_request("GET", f"{gw.base_url}/models/no-such-model")
    assert raw.status == 404
    assert_openai_error(raw.json(), code="model_not_found")
    assert raw.headers["x-request-id"]


# --------------------------------------------------------------------------- #
# Anthropic clients
# --------------------------------------------------------------------------- #


async def test_anthropic_sdk_lists_models_in_its_own_shape(make_gateway: GatewayFactory) -> None:
    async with FakeAnthropic() as fake:
        env = {"ANTHROPIC_API_KEY": SECRET, "ANTHROPIC_BASE_URL": fake.base_url}
        gw = await make_gateway(None, environ=env)
        client = anthropic_client(gw)
        try:
            ids = [m.id async for m in client.models.list()]  # follows the pages (20 a page)
            assert sorted(ids) == KNOWN_ANTHROPIC
            page = await client.models.list(limit=1000)
            assert [m.id for m in page.data] == ids
            first = page.data[0]
            assert first.type == "model" and first.display_name == first.id and first.lifecycle == "active"
            assert first.created_at.year == 1970  # release date unknown: the epoch, as ModelInfo allows
            assert page.has_more is False and page.first_id == ids[0] and page.last_id == ids[-1]
            assert fake.requests == []
        finally:
            await client.close()


async def test_anthropic_pages_by_limit_after_id_and_before_id(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(None, environ={"OPENAI_API_KEY": SECRET})
    client = anthropic_client(gw)
    try:
        everything = [m.id for m in (await client.models.list(limit=1000)).data]
        assert len(everything) == len(KNOWN_OPENAI) > 4
        page = await client.models.list(limit=2)
        assert [m.id for m in page.data] == everything[:2]
        assert page.has_more is True and page.last_id == everything[1]
        nxt = await page.get_next_page()
        assert [m.id for m in nxt.data] == everything[2:4]
        after = await client.models.list(limit=3, after_id=everything[-3])
        assert [m.id for m in after.data] == everything[-2:] and after.has_more is False
        before = await client.models.list(limit=2, before_id=everything[3])
        assert [m.id for m in before.data] == everything[1:3] and before.has_more is True
        assert (await client.models.list(lifecycle=["retired"])).data == []
        assert len((await client.models.list(lifecycle=["active", "retired"], limit=1000)).data) == len(everything)
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.models.list(after_id="no-such-model")
        assert info.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                              "message": info.value.body["error"]["message"]}}
        with pytest.raises(anthropic.BadRequestError):
            await client.models.list(limit=0)
    finally:
        await client.close()


async def test_anthropic_sdk_retrieves_a_model_or_gets_its_404(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    client = anthropic_client(gw)
    try:
        info = await client.models.retrieve("openai/gpt-4o")  # sent as openai%2Fgpt-4o
        assert (info.type, info.id, info.display_name) == ("model", "openai/gpt-4o", "openai/gpt-4o")
        with pytest.raises(anthropic.NotFoundError) as err:
            await client.models.retrieve("claude-none")
        body = err.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "not_found_error" and "claude-none" in body["error"]["message"]
    finally:
        await client.close()


async def test_gateway_keys_guard_the_listing_in_both_shapes(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    toml = openai_config(fake.base_url) + '\n[[keys]]\nname = "team-a"\nkey = "sk-gw-0123456789abcdef0123456789"\n'
    gw = await make_gateway(toml)
    with pytest.raises(openai.AuthenticationError):
        await gw.client.models.list()
    with pytest.raises(openai.AuthenticationError):
        await gw.client.models.retrieve("smart")
    client = anthropic_client(gw)
    try:
        with pytest.raises(anthropic.AuthenticationError) as err:
            await client.models.list()
        assert isinstance(err.value.body, dict) and err.value.body["error"]["type"] == "authentication_error"
    finally:
        await client.close()
    good = anthropic.AsyncAnthropic(api_key="sk-gw-0123456789abcdef0123456789", base_url=gw.root, max_retries=0)
    try:
        assert "smart" in [m.id async for m in good.models.list()]
    finally:
        await good.close()
