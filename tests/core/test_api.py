"""End-to-end: the OpenAI-compatible endpoints, driven with the official ``openai`` SDK.

Every test runs a real gateway (in-process aiohttp server) in front of the fake upstream and
checks what the client sees and what the upstream received.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

import openai
import pytest

from interlock.testing import FakeOpenAI, Fault
from tests.conftest import SECRET, GatewayFactory, openai_config
from tests.core._api_helpers import HELLO, assert_no_secret, raw_request

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
TIME_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}


def chat_requests(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


# --------------------------------------------------------------------------- #
# chat completions: names, headers, credentials
# --------------------------------------------------------------------------- #


async def test_bare_model_non_stream_round_trip(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    raw = await gw.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Fake reply to: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-model"] == "gpt-4o"
    assert raw.headers["x-interlock-attempts"] == "1"
    assert raw.headers["x-interlock-fallback"] == "false"
    assert raw.headers["x-request-id"]

    (upstream,) = chat_requests(fake)
    assert upstream.json == {"model": "gpt-4o", "messages": HELLO}
    assert "stream" not in upstream.json


async def test_upstream_gets_the_provider_key_not_the_client_key(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    raw = await gw.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)

    assert fake.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert "client-key" not in json.dumps(fake.requests[-1].headers)
    assert_no_secret(raw.http_response.content, dict(raw.headers))


async def test_upstream_requiring_the_key_accepts_the_gateway(make_gateway: GatewayFactory) -> None:
    async with FakeOpenAI(api_key=SECRET) as strict:
        gw = await make_gateway(openai_config(strict.base_url))
        completion = await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert completion.choices[0].message.content == "Fake reply to: hello there"


async def test_request_id_is_echoed_when_sane(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, extra_headers={"x-request-id": "client-req_42.a:b"}
    )
    assert raw.headers["x-request-id"] == "client-req_42.a:b"

    raw = await gw.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, extra_headers={"x-request-id": "bad id <script>"}
    )
    assert raw.headers["x-request-id"] not in ("", "bad id <script>")

    # two requests without an id get two different ids
    first = await gw.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    second = await gw.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_request_id_on_errors_too(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.chat.completions.create(
            model="no-such-model", messages=HELLO, extra_headers={"x-request-id": "err-req-1"}
        )
    assert exc.value.response.headers["x-request-id"] == "err-req-1"


async def test_instance_slash_model(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="backup/gpt-4o-mini", messages=HELLO
    )

    assert raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert chat_requests(fake)[-1].json["model"] == "gpt-4o-mini"  # the instance prefix is stripped


async def test_route_name_uses_first_target(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-model"] == "gpt-4o"
    assert raw.headers["x-interlock-attempts"] == "1"
    assert raw.headers["x-interlock-fallback"] == "false"
    assert len(chat_requests(fake)) == 1
    assert chat_requests(fake)[0].json["model"] == "gpt-4o"


async def test_unknown_model_is_404_saying_what_was_tried(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.chat.completions.create(model="totally-unknown-model", messages=HELLO)

    err = exc.value
    assert err.status_code == 404
    assert err.code == "model_not_found"
    assert err.param == "model"
    assert "totally-unknown-model" in err.message
    assert "smart" in err.message  # the routes it looked at
    assert "openai" in err.message and "backup" in err.message  # the instances it looked at
    assert chat_requests(fake) == []  # nothing was sent upstream


async def test_unknown_instance_prefix_is_404(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.chat.completions.create(model="nope/some-model", messages=HELLO)
    assert exc.value.code == "model_not_found"
    assert chat_requests(fake) == []


async def test_claude_without_anthropic_is_404(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.chat.completions.create(model="claude-sonnet-4-20250514", messages=HELLO)

    assert exc.value.status_code == 404
    assert "anthropic" in exc.value.message
    assert "claude-sonnet-4-20250514" in exc.value.message
    assert exc.value.code in ("provider_not_configured", "model_not_found")
    assert chat_requests(fake) == []


async def test_detected_but_unconfigured_provider_names_its_env_var(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.chat.completions.create(model="mistral-large-latest", messages=HELLO)

    assert exc.value.code == "provider_not_configured"
    assert exc.value.param == "model"
    assert "mistral" in exc.value.message
    assert "MISTRAL_API_KEY" in exc.value.message
    assert chat_requests(fake) == []


async def test_upstream_404_for_a_model_is_a_404(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    """gpt-4.5-unknown is detected as openai, but the upstream does not serve it."""
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.chat.completions.create(model="gpt-4.5-unknown", messages=HELLO)
    assert exc.value.code == "model_not_found"
    assert "gpt-4.5-unknown" in exc.value.message
    assert exc.value.response.headers["x-interlock-attempts"] == "1"


# --------------------------------------------------------------------------- #
# everything the Chat Completions API accepts passes through
# --------------------------------------------------------------------------- #


async def test_text_and_image_content_parts(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    content: Any = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    ]
    completion = await gw.client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content == "Fake reply to: What is in this picture? (1 image)"
    assert chat_requests(fake)[-1].json["messages"][0]["content"] == content


async def test_a_body_over_a_mebibyte_reaches_the_upstream_whole(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    """A large image goes upstream as a file-like body (aiohttp warns about large bytes; the suite's warnings are errors)."""
    gw = await make_gateway(openai_config(fake.base_url))
    image = "data:image/png;base64," + base64.b64encode(os.urandom(1_200_000)).decode()
    content: Any = [{"type": "text", "text": "big"}, {"type": "image_url", "image_url": {"url": image}}]
    completion = await gw.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": content}])
    assert completion.choices[0].message.content == "Fake reply to: big (1 image)"
    assert chat_requests(fake)[-1].json["messages"][0]["content"][1]["image_url"]["url"] == image


async def test_tool_call_round_trip(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
    first = await gw.client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "text", "days": 1}
    sent = chat_requests(fake)[-1].json
    assert sent["tools"] == [WEATHER_TOOL, TIME_TOOL]
    assert sent["tool_choice"] == "auto"

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    second = await gw.client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Tool result: sunny, 21C"
    upstream_messages = chat_requests(fake)[-1].json["messages"]
    assert upstream_messages[1]["tool_calls"][0]["id"] == call.id
    assert upstream_messages[2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}


async def test_named_tool_choice(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    completion = await gw.client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_time"
    sent = chat_requests(fake)[-1].json
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert sent["parallel_tool_calls"] is False


async def test_response_format_json_object(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    completion = await gw.client.chat.completions.create(
        model="gpt-4o", messages=HELLO, response_format={"type": "json_object"}
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert json.loads(content) == {"reply": "Fake reply to: hello there"}


async def test_response_format_json_schema(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "number"}, "sunny": {"type": "boolean"}},
        "required": ["city", "temp", "sunny"],
        "additionalProperties": False,
    }
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "strict": True, "schema": schema},
    }
    completion = await gw.client.chat.completions.create(
        model="gpt-4o", messages=HELLO, response_format=response_format
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert json.loads(content) == {"city": "text", "temp": 1, "sunny": True}
    assert chat_requests(fake)[-1].json["response_format"] == response_format


async def test_sampling_parameters_reach_the_upstream(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    completion = await gw.client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "be brief"}, *HELLO],
        stop=["\n\n", "END"],
        seed=1234,
        n=2,
        temperature=0.2,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        user="user-77",
        metadata={"team": "search", "run": "7"},
        store=False,
        logprobs=False,
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == "Fake reply to: hello there" for c in completion.choices)
    sent = chat_requests(fake)[-1].json
    assert sent["stop"] == ["\n\n", "END"]
    assert sent["seed"] == 1234
    assert sent["n"] == 2
    assert sent["temperature"] == 0.2
    assert sent["top_p"] == 0.9
    assert sent["presence_penalty"] == 0.5
    assert sent["frequency_penalty"] == -0.5
    assert sent["user"] == "user-77"
    assert sent["metadata"] == {"team": "search", "run": "7"}
    assert sent["store"] is False
    assert sent["logprobs"] is False
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize("limit_param", ["max_tokens", "max_completion_tokens"])
async def test_token_limits_reach_the_upstream(
    fake: FakeOpenAI, make_gateway: GatewayFactory, limit_param: str
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    completion = await gw.client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        **{limit_param: 3},  # type: ignore[arg-type]
    )
    # the fake honours the limit, so a truncated answer proves the parameter arrived
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Fake reply to:"
    assert chat_requests(fake)[-1].json[limit_param] == 3


async def test_unknown_parameters_reach_the_upstream_untouched(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    extra = {
        "custom_flag": {"a": 1, "nested": [1, "two", None, {"x": 1.5}]},
        "logit_bias": {"50256": -100},
        "reasoning_effort": "low",
        "some_vendor_option": True,
    }
    completion = await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_body=extra)
    assert completion.choices[0].message.content == "Fake reply to: hello there"
    sent = chat_requests(fake)[-1].json
    assert sent == {"model": "gpt-4o", "messages": HELLO, **extra}


async def test_unknown_parameters_survive_route_rewrite(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    await gw.client.chat.completions.create(
        model="smart", messages=HELLO, extra_body={"custom_flag": {"a": 1}}, temperature=0
    )
    sent = chat_requests(fake)[-1].json
    assert sent == {"model": "gpt-4o", "messages": HELLO, "custom_flag": {"a": 1}, "temperature": 0}


async def test_non_stream_request_drops_stream_options(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    completion = await gw.client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=False, extra_body={"stream_options": {"include_usage": True}}
    )
    assert completion.choices[0].message.content == "Fake reply to: hello there"
    sent = chat_requests(fake)[-1].json
    assert "stream" not in sent and "stream_options" not in sent


async def test_chat_without_v1_prefix(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    async with openai.AsyncOpenAI(base_url=gw.root, api_key="client-key", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert completion.choices[0].message.content == "Fake reply to: hello there"


# --------------------------------------------------------------------------- #
# embeddings
# --------------------------------------------------------------------------- #


async def test_embeddings_float(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    raw = await gw.client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hello world", encoding_format="float"
    )
    result = raw.parse()
    assert result.model == "text-embedding-3-small"
    (item,) = result.data
    assert item.index == 0
    assert len(item.embedding) == 8
    assert abs(sum(v * v for v in item.embedding) - 1.0) < 1e-4  # the fake's unit vectors survived
    assert result.usage.prompt_tokens == 2
    assert result.usage.total_tokens == 2
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-model"] == "text-embedding-3-small"
    assert raw.headers["x-interlock-attempts"] == "1"
    upstream = fake.requests[-1]
    assert upstream.path == "/v1/embeddings"
    assert upstream.json == {
        "model": "text-embedding-3-small",
        "input": "hello world",
        "encoding_format": "float",
    }


async def test_embeddings_base64_decoded_by_the_sdk(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    as_float = await gw.client.embeddings.create(
        model="text-embedding-3-small", input="hello world", encoding_format="float"
    )
    # without encoding_format the SDK asks for base64 and decodes it itself
    decoded = await gw.client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert fake.requests[-1].json["encoding_format"] == "base64"
    assert decoded.data[0].embedding == as_float.data[0].embedding

    explicit = await gw.client.embeddings.create(
        model="text-embedding-3-small", input="hello world", encoding_format="base64"
    )
    packed = explicit.data[0].embedding
    assert isinstance(packed, str)
    assert list(struct.unpack("<8f", base64.b64decode(packed))) == as_float.data[0].embedding


async def test_embeddings_list_input_and_dimensions(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    result = await gw.client.embeddings.create(
        model="openai/text-embedding-3-small",
        input=["one", "two words", "three more words"],
        dimensions=4,
        encoding_format="float",
    )
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(len(d.embedding) == 4 for d in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == 6
    assert fake.requests[-1].json["dimensions"] == 4


async def test_embeddings_unknown_model_404(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.embeddings.create(model="not-an-embedding-model", input="x")
    assert exc.value.code == "model_not_found"


async def test_embeddings_fall_back_through_a_route(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    extra = '[routes.embed]\nchain = "openai/text-embedding-3-small > backup/text-embedding-3-small"\n'
    gw = await make_gateway(openai_config(fake.base_url, extra))
    fake.add_fault(Fault(status=503, path="/embeddings"))
    raw = await gw.client.embeddings.with_raw_response.create(
        model="embed", input="x", encoding_format="float"
    )
    assert len(raw.parse().data) == 1
    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-attempts"] == "2"
    assert raw.headers["x-interlock-fallback"] == "true"


# --------------------------------------------------------------------------- #
# health, introspection
# --------------------------------------------------------------------------- #


# the model listing (GET /v1/models, /v1/models/{id}) is tested in test_models.py


async def test_health(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    resp = await raw_request("GET", f"{gw.root}/health")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {"status": "ok", "pid": os.getpid()}  # the process that answered (serve --workers)
    assert resp.headers["x-request-id"]


async def test_health_providers_reports_targets_and_hides_keys(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    before = await raw_request("GET", f"{gw.root}/health/providers")
    assert before.status == 200
    body = before.json()
    providers = {p["name"]: p for p in body["providers"]}
    assert set(providers) == {"openai", "backup"}
    assert providers["backup"]["type"] == "openai"
    assert providers["openai"]["base_url"] == fake.base_url
    assert providers["openai"]["key"] == "set"
    assert body["targets"] == {}

    fake.add_fault(Fault(status=429, model="gpt-4o"))
    await gw.client.chat.completions.create(model="smart", messages=HELLO)
    after = await raw_request("GET", f"{gw.root}/health/providers")
    targets = after.json()["targets"]
    assert targets["openai/gpt-4o"]["failures"] == 1
    assert targets["openai/gpt-4o"]["last_failure_class"] == "rate_limited"
    assert targets["openai/gpt-4o"]["state"] == "failing"
    assert targets["backup/gpt-4o-mini"]["failures"] == 0
    assert targets["backup/gpt-4o-mini"]["state"] == "healthy"
    assert_no_secret(before.body, after.body, before.headers, after.headers)


async def test_plugins_endpoint(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    resp = await raw_request("GET", f"{gw.root}/-/plugins")
    assert resp.status == 200
    plugins = resp.json()["plugins"]
    assert isinstance(plugins, list) and plugins
    assert all({"name", "version", "builtin", "hooks"} <= set(p) for p in plugins)
    text = json.dumps(plugins)
    assert '"openai"' in text  # the provider types the built-ins registered
    assert '"ordered"' in text  # ... and the strategies
    assert_no_secret(resp.body, resp.headers)
