"""Model names a client controls are refused before any upstream call when they could break a response."""

from __future__ import annotations

import anthropic
import openai
import pytest

from interlock.testing import FakeOpenAI
from tests.conftest import GatewayFactory, openai_config

HI = [{"role": "user", "content": "hi"}]
BAD = ["openai/gpt-4o\r\nX-Injected: yes", "openai/gpt-4o\n", "openai/\tgpt-4o", "x" * 257]


def upstream_calls(fake: FakeOpenAI) -> int:
    return len([r for r in fake.requests if r.path.endswith(("/chat/completions", "/responses"))])


@pytest.mark.parametrize("model", BAD)
async def test_every_door_refuses_a_model_name_that_could_break_headers(
    fake: FakeOpenAI, make_gateway: GatewayFactory, model: str
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.BadRequestError) as chat:
        await gw.client.chat.completions.create(model=model, messages=HI)
    assert chat.value.param == "model"
    with pytest.raises(openai.BadRequestError) as responses:
        await gw.client.responses.create(model=model, input="hi")
    assert responses.value.param == "model"
    async with anthropic.AsyncAnthropic(base_url=gw.root, api_key="k", max_retries=0) as claude:
        with pytest.raises(anthropic.BadRequestError) as messages:
            await claude.messages.create(model=model, max_tokens=10, messages=HI)  # type: ignore[arg-type]
    assert messages.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "model" in messages.value.message
    assert upstream_calls(fake) == 0  # nothing billed upstream


async def test_headers_carry_names_header_safe(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, '[routes."café"]\nchain = "openai/gpt-4o"\n'))
    raw = await gw.client.chat.completions.with_raw_response.create(model="café", messages=HI)
    assert raw.headers["x-interlock-route"] == "caf?"
    assert raw.headers["x-interlock-model"] == "gpt-4o"
    # a long but acceptable name (256 characters) is routed like any other and stays a valid header
    with pytest.raises(openai.NotFoundError):
        await gw.client.chat.completions.create(model="m" * 256, messages=HI)
