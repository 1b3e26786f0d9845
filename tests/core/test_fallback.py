"""End-to-end routing: chains fall back on retryable upstream failures and fail fast on bad requests.

The route under test is ``smart = openai/gpt-4o > backup/gpt-4o-mini`` on one fake upstream, so a
fault keyed on ``model="gpt-4o"`` hits only the first target.  Assertions are behavioural: which
status and headers the client sees, and which requests the upstream actually received.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from interlock.testing import FakeOpenAI, Fault
from tests.conftest import SECRET, GatewayFactory, free_port, openai_config
from tests.core._api_helpers import HELLO, assert_no_secret, assert_openai_error, raw_request


def chat_models(fake: FakeOpenAI) -> list[Any]:
    """The model of every chat request the upstream received, in order."""
    return [r.json.get("model") for r in fake.requests if r.path.endswith("/chat/completions")]


def dead_url() -> str:
    """A base URL nothing listens on: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


# --------------------------------------------------------------------------- #
# failures that fall back
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("fault", "failure_class"),
    [
        (Fault(status=429, model="gpt-4o"), "rate_limited"),
        (Fault(status=500, model="gpt-4o"), "server_error"),
        (Fault(status=502, model="gpt-4o"), "server_error"),
        (Fault(status=503, model="gpt-4o"), "overloaded"),
        (Fault(status=504, model="gpt-4o"), "timeout"),
        (Fault(status=401, model="gpt-4o"), "auth"),
        (Fault(status=403, model="gpt-4o"), "auth"),
        (Fault(status=200, body="<html>not json</html>", model="gpt-4o"), "stream_error"),
        # a 200 without an answer is no answer: not passed on as one
        (Fault(status=200, body={"object": "chat.completion", "choices": []}, model="gpt-4o"), "stream_error"),
        (Fault(status=200, body={"object": "chat.completion"}, model="gpt-4o"), "stream_error"),
    ],
    ids=["429", "500", "502", "503", "504", "401", "403", "html-200", "200-empty-choices", "200-no-choices"],
)
async def test_chain_falls_back_to_the_next_target(
    fake: FakeOpenAI, make_gateway: GatewayFactory, fault: Fault, failure_class: str
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(fault)
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    completion = raw.parse()
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Fake reply to: hello there"
    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert raw.headers["x-interlock-attempts"] == "2"
    assert raw.headers["x-interlock-fallback"] == "true"
    assert chat_models(fake) == ["gpt-4o", "gpt-4o-mini"]
    health = (await raw_request("GET", f"{gw.root}/health/providers")).json()["targets"]
    assert health["openai/gpt-4o"]["last_failure_class"] == failure_class


async def test_fallback_on_provider_timeout(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    toml = openai_config(fake.base_url).replace(
        f'api_key = "{SECRET}"\n\n[providers.backup]',
        f'api_key = "{SECRET}"\ntimeout = 0.3\n\n[providers.backup]',
    )
    assert "timeout = 0.3" in toml
    gw = await make_gateway(toml)
    fake.add_fault(Fault(latency=1.5, model="gpt-4o"))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    assert raw.parse().choices[0].message.content == "Fake reply to: hello there"
    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-attempts"] == "2"
    assert raw.headers["x-interlock-fallback"] == "true"
    health = (await raw_request("GET", f"{gw.root}/health/providers")).json()["targets"]
    assert health["openai/gpt-4o"]["last_failure_class"] == "timeout"


async def test_fallback_on_connection_refused(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    toml = (
        openai_config(fake.base_url)
        + f"""
[providers.dead]
type = "openai"
base_url = "{dead_url()}"
api_key = "{SECRET}"

[routes.resilient]
chain = "dead/gpt-4o > openai/gpt-4o"
"""
    )
    gw = await make_gateway(toml)
    raw = await gw.client.chat.completions.with_raw_response.create(model="resilient", messages=HELLO)

    assert raw.parse().choices[0].message.content == "Fake reply to: hello there"
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-model"] == "gpt-4o"
    assert raw.headers["x-interlock-attempts"] == "2"
    assert raw.headers["x-interlock-fallback"] == "true"
    health = (await raw_request("GET", f"{gw.root}/health/providers")).json()["targets"]
    assert health["dead/gpt-4o"]["last_failure_class"] == "connection"


async def test_three_target_chain_walks_in_order(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    extra = '[routes.long]\nchain = "openai/gpt-4o > backup/gpt-4o > openai/gpt-4o-mini"\n'
    gw = await make_gateway(openai_config(fake.base_url, extra))
    fake.add_fault(Fault(status=503, model="gpt-4o", times=2))
    raw = await gw.client.chat.completions.with_raw_response.create(model="long", messages=HELLO)

    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert raw.headers["x-interlock-attempts"] == "3"
    assert raw.headers["x-interlock-fallback"] == "true"
    assert chat_models(fake) == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]


async def test_route_may_chain_another_route(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    extra = '[routes.outer]\nchain = "backup/gpt-4o > smart"\n'
    gw = await make_gateway(openai_config(fake.base_url, extra))
    fake.add_fault(Fault(status=500, model="gpt-4o", times=2))
    raw = await gw.client.chat.completions.with_raw_response.create(model="outer", messages=HELLO)

    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert raw.headers["x-interlock-attempts"] == "3"
    assert chat_models(fake) == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]


async def test_no_fallback_when_the_first_target_answers(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=500, model="gpt-4o-mini"))  # only the backup would fail
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-attempts"] == "1"
    assert raw.headers["x-interlock-fallback"] == "false"
    assert chat_models(fake) == ["gpt-4o"]


# --------------------------------------------------------------------------- #
# fail fast
# --------------------------------------------------------------------------- #


async def test_upstream_bad_request_fails_fast(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    body = {
        "error": {
            "message": "Invalid 'messages[0]': unsupported thing.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "invalid_value",
        }
    }
    fake.add_fault(Fault(status=400, body=body, model="gpt-4o"))
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)

    err = exc.value
    assert err.status_code == 400
    assert "unsupported thing" in err.message
    assert err.type == "invalid_request_error"
    assert err.response.headers["x-interlock-attempts"] == "1"
    assert chat_models(fake) == ["gpt-4o"]  # the second target was never called


async def test_upstream_content_policy_fails_fast(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    body = {
        "error": {
            "message": "flagged by the safety system",
            "type": "invalid_request_error",
            "param": None,
            "code": "content_policy_violation",
        }
    }
    fake.add_fault(Fault(status=400, body=body, model="gpt-4o"))
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert exc.value.code == "content_policy_violation"
    assert chat_models(fake) == ["gpt-4o"]


async def test_context_length_falls_back_but_is_reported_as_400(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    body = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    fake.add_fault(Fault(status=400, body=body, times=2))
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert exc.value.code == "context_length_exceeded"
    # gpt-4o-mini's window (128k in the price table) is no larger than gpt-4o's: not worth trying
    assert exc.value.response.headers["x-interlock-attempts"] == "1"
    assert chat_models(fake) == ["gpt-4o"]


# --------------------------------------------------------------------------- #
# every target failed
# --------------------------------------------------------------------------- #


async def test_all_rate_limited_is_429_with_retry_after(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=429, retry_after=7, times=2))
    with pytest.raises(openai.RateLimitError) as exc:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)

    err = exc.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "7"
    assert err.response.headers["x-interlock-attempts"] == "2"
    assert err.type == "rate_limit_error"
    assert "openai/gpt-4o" in err.message and "backup/gpt-4o-mini" in err.message
    assert chat_models(fake) == ["gpt-4o", "gpt-4o-mini"]


async def test_all_rate_limited_without_hint_has_no_retry_after(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=429, times=2))
    with pytest.raises(openai.RateLimitError) as exc:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert "retry-after" not in exc.value.response.headers


async def test_all_timeouts_is_504(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    toml = openai_config(fake.base_url).replace(
        f'api_key = "{SECRET}"\n', f'api_key = "{SECRET}"\ntimeout = 0.3\n'
    )
    assert toml.count("timeout = 0.3") == 2
    gw = await make_gateway(toml)
    fake.add_fault(Fault(latency=1.5, times=2))
    with pytest.raises(openai.InternalServerError) as exc:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)

    err = exc.value
    assert err.status_code == 504
    assert err.code == "timeout"
    assert "openai/gpt-4o" in err.message and "backup/gpt-4o-mini" in err.message
    assert err.response.headers["x-interlock-attempts"] == "2"


async def test_all_overloaded_is_503(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=503, times=2))
    with pytest.raises(openai.InternalServerError) as exc:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert exc.value.status_code == 503
    assert exc.value.code == "overloaded"
    assert exc.value.response.headers["x-interlock-attempts"] == "2"


async def test_mixed_failures_are_502_listing_what_was_tried(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    fake.add_fault(Fault(status=401, model="gpt-4o-mini"))
    resp = await raw_request(
        "POST", f"{gw.base_url}/chat/completions", json_body={"model": "smart", "messages": HELLO}
    )
    assert resp.status == 502
    err = assert_openai_error(resp.json())
    assert "openai/gpt-4o" in err["message"] and "server_error" in err["message"]
    assert "backup/gpt-4o-mini" in err["message"] and "auth" in err["message"]
    assert resp.headers["x-interlock-attempts"] == "2"
    assert resp.headers["x-interlock-route"] == "smart"
    assert_no_secret(resp.body, resp.headers)


async def test_all_connection_refused_is_502(make_gateway: GatewayFactory) -> None:
    toml = f"""
[providers.a]
type = "openai"
base_url = "{dead_url()}"
api_key = "{SECRET}"

[providers.b]
type = "openai"
base_url = "{dead_url()}"
api_key = "{SECRET}"

[routes.down]
chain = "a/gpt-4o > b/gpt-4o"
"""
    gw = await make_gateway(toml)
    with pytest.raises(openai.InternalServerError) as exc:
        await gw.client.chat.completions.create(model="down", messages=HELLO)
    assert exc.value.status_code == 502
    assert exc.value.code == "connection"
    assert "a/gpt-4o" in exc.value.message and "b/gpt-4o" in exc.value.message


async def test_single_target_failure_is_reported(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=500))
    with pytest.raises(openai.InternalServerError) as exc:
        await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert exc.value.status_code == 502
    assert exc.value.response.headers["x-interlock-attempts"] == "1"
    assert chat_models(fake) == ["gpt-4o"]


# --------------------------------------------------------------------------- #
# retries on the same target
# --------------------------------------------------------------------------- #


async def test_retries_the_same_target_for_server_errors(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url, "retries = 2"))
    fake.add_fault(Fault(status=500, model="gpt-4o", times=2))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-model"] == "gpt-4o"
    assert raw.headers["x-interlock-attempts"] == "3"
    assert raw.headers["x-interlock-fallback"] == "false"
    assert chat_models(fake) == ["gpt-4o", "gpt-4o", "gpt-4o"]


async def test_retry_budget_exhausted_then_fallback(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, "retries = 1"))
    fake.add_fault(Fault(status=500, model="gpt-4o", times=5))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-attempts"] == "3"
    assert raw.headers["x-interlock-fallback"] == "true"
    assert chat_models(fake) == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]


async def test_retries_do_not_apply_to_rate_limits(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, "retries = 3"))
    fake.add_fault(Fault(status=429, model="gpt-4o", times=5))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-attempts"] == "2"
    assert chat_models(fake) == ["gpt-4o", "gpt-4o-mini"]


async def test_retries_connection_failures(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    toml = (
        openai_config(fake.base_url)
        + f"""
[providers.dead]
type = "openai"
base_url = "{dead_url()}"
api_key = "{SECRET}"

[routes.flaky]
chain = "dead/gpt-4o > openai/gpt-4o"
retries = 2
"""
    )
    gw = await make_gateway(toml)
    raw = await gw.client.chat.completions.with_raw_response.create(model="flaky", messages=HELLO)
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-attempts"] == "4"  # 1 + 2 retries on dead, then openai
    assert chat_models(fake) == ["gpt-4o"]


async def test_upstream_error_echoing_the_key_does_not_leak_it(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    """Some upstreams quote the key they were given in their 401 message."""
    gw = await make_gateway(openai_config(fake.base_url))
    body = {
        "error": {
            "message": f"Incorrect API key provided: {SECRET}.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    fake.add_fault(Fault(status=401, body=body, times=2))
    resp = await raw_request(
        "POST", f"{gw.base_url}/chat/completions", json_body={"model": "smart", "messages": HELLO}
    )
    assert resp.status == 502
    err = assert_openai_error(resp.json())
    assert "Incorrect API key provided" in err["message"]
    assert_no_secret(resp.body, resp.headers)
    health = await raw_request("GET", f"{gw.root}/health/providers")
    assert_no_secret(health.body)
