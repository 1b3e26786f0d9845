"""A first end-to-end check that the fixtures and the gateway fit together."""

from __future__ import annotations

from tests.conftest import GatewayFactory, openai_config
from interlock.testing import FakeOpenAI


async def test_chat_through_gateway(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Fake reply to: hello"
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-model"] == "gpt-4o"
    assert raw.headers["x-interlock-attempts"] == "1"
    assert raw.headers["x-request-id"]
