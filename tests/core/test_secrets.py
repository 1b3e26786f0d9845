"""Provider keys never reach clients, even when an upstream echoes them back."""

from __future__ import annotations

import logging

import openai
import pytest

from interlock.testing import FakeOpenAI, Fault
from tests.conftest import SECRET, GatewayFactory, openai_config


async def test_an_echoed_key_is_scrubbed_from_errors_and_logs(
    fake: FakeOpenAI, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {SECRET}.", "type": "invalid_request_error",
                      "param": None, "code": "invalid_api_key"}}
    fake.add_fault(Fault(status=401, body=echo, times=2))
    gw = await make_gateway(openai_config(fake.base_url))
    caplog.set_level(logging.INFO)
    with pytest.raises(openai.APIStatusError) as info:
        await gw.client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    err = info.value
    assert err.status_code == 502  # the gateway's own upstream credentials failed, not the client's
    assert "auth" in err.message and "****" in err.message
    assert SECRET not in err.response.text
    assert SECRET not in str(dict(err.response.headers))
    assert SECRET not in caplog.text
    # the upstream did receive the key, so the scrubbing is what kept it out
    assert fake.requests[0].headers["authorization"] == f"Bearer {SECRET}"
