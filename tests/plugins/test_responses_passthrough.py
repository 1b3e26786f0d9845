"""Which providers take Responses requests natively, and how they are sent there.

OpenAI by default, Azure OpenAI on its v1 API (the deployment in ``model``), and any
OpenAI-wire instance configured with ``responses = true``; everything else is
translated to Chat Completions. Driven with the official openai SDK against the fake
OpenAI server, which serves both APIs and records what it received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from interlock.core.errors import ConfigError
from interlock.testing import FakeOpenAI
from tests.conftest import GatewayFactory


@pytest.fixture
async def oai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=["gpt-4o", "prod-4o", "llama-3.3-70b"]) as fake:
        yield fake


async def test_azure_v1_takes_responses_with_the_deployment_as_model(oai: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(f"""
[providers.az]
type = "azure"
base_url = "{oai.url}"
api_key = "az-key"
api_version = "v1"
deployments = {{ "gpt-4o" = "prod-4o" }}

[providers.classic]
type = "azure"
base_url = "{oai.url}"
api_key = "az-key"
deployments = {{ "gpt-4o" = "prod-4o" }}
""")
    result = await gw.client.responses.create(model="az/gpt-4o", input="Hello")
    seen = oai.requests[-1]
    assert seen.path == "/openai/v1/responses" and seen.headers["api-key"] == "az-key"
    assert seen.json["model"] == "prod-4o" and seen.json["input"] == "Hello"
    assert result.id.startswith("resp_fake") and result.output_text == "Fake reply to: Hello"
    async with gw.client.responses.stream(model="az/gpt-4o", input="Hello") as stream:
        final = await stream.get_final_response()
    assert final.output_text == result.output_text and oai.requests[-1].path == "/openai/v1/responses"

    # the classic, deployment-scoped API has no Responses endpoint: translated to Chat Completions
    classic = await gw.client.responses.create(model="classic/gpt-4o", input="Hello")
    assert oai.requests[-1].path == "/openai/deployments/prod-4o/chat/completions"
    assert classic.output_text == result.output_text and not classic.id.startswith("resp_fake")


async def test_a_compatible_instance_opts_in_with_responses_true(oai: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(f"""
[providers.vllm]
type = "together"
base_url = "{oai.base_url}"
api_key = "k"
responses = true

[providers.plain]
type = "together"
base_url = "{oai.base_url}"
api_key = "k"
""")
    await gw.client.responses.create(model="vllm/llama-3.3-70b", input="Hello")
    assert oai.requests[-1].path == "/v1/responses"
    await gw.client.responses.create(model="plain/llama-3.3-70b", input="Hello")
    assert oai.requests[-1].path == "/v1/chat/completions"


async def test_native_usage_is_accounted(oai: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(f'[providers.openai]\nbase_url = "{oai.base_url}"\napi_key = "sk-native-test-key"\n')
    result = await gw.client.responses.create(model="gpt-4o", input="Hello there")
    assert result.usage is not None
    usage = gw.log.last.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        result.usage.input_tokens, result.usage.output_tokens,
    )
    async with gw.client.responses.stream(model="gpt-4o", input="Hello there") as stream:
        await stream.get_final_response()
    streamed = gw.log.last.usage
    assert streamed is not None and streamed.completion_tokens == result.usage.output_tokens
    assert gw.log.last.attempts[-1].finish_reasons == ["stop"]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('type = "together"\nresponses = "yes"', "responses: must be true or false"),
        ('type = "azure"\nresponses = true', "only with api_version"),
        ('type = "together"\nnot_an_option = 1', r"not_an_option: unknown key .*known options: responses"),
    ],
)
async def test_the_responses_option_is_validated(table: str, problem: str, oai: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    with pytest.raises(ConfigError, match=problem):
        await make_gateway(f'[providers.x]\n{table}\nbase_url = "{oai.base_url}"\napi_key = "sk-native-test-key"\n')


async def test_native_errors_reach_the_client_in_openai_shape(oai: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(f'[providers.openai]\nbase_url = "{oai.base_url}"\napi_key = "sk-native-test-key"\n')
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.responses.create(model="gpt-4o", input="hi", max_output_tokens=3)  # below OpenAI's minimum
    assert "max_output_tokens" in info.value.message and "integer below minimum value" in info.value.message
