"""The anthropic provider through a real gateway: the Messages request it sends, and what clients get back."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from interlock.core.failures import failure_class
from interlock.core.provider import ProviderSettings, Secret
from interlock.core.types import FailureClass, UpstreamError
from interlock.plugins.providers.anthropic import Anthropic
from interlock.plugins.providers.translation.anthropic import JSON_INSTRUCTION, JSON_TOOL, stream_chunks
from interlock.testing import FakeAnthropic, FakeOpenAI, Fault
from interlock.testing.conformance import PNG, WEATHER_TOOL
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

KEY = "sk-ant-provider-test-0123456789"
MODEL = "claude-sonnet-4-6"
TARGET = f"claude/{MODEL}"
HI: list[Any] = [{"role": "user", "content": "hi"}]
WEATHER_SCHEMA: Any = WEATHER_TOOL["function"]["parameters"]  # type: ignore[index]
TIME_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}


@dataclass
class Env:
    fake: FakeAnthropic
    backup: FakeOpenAI
    gw: RunningGateway

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self.gw.client

    @property
    def sent(self) -> dict[str, Any]:
        """The last Messages request body the provider sent."""
        return self.fake.requests[-1].json  # type: ignore[no-any-return]


async def _env(**options: Any) -> AsyncIterator[Env]:
    async with (
        FakeAnthropic(models=[MODEL], api_key=KEY) as fake,
        FakeOpenAI(models=["gpt-4o-mini"]) as backup,
    ):
        toml = "\n".join(
            [
                provider_table(
                    "claude",
                    type="anthropic",
                    base_url=options.pop("base_url", fake.base_url),
                    api_key=KEY,
                    **options,
                ),
                provider_table("backup", type="openai", base_url=backup.base_url, api_key="sk-backup"),
                "[routes.smart]",
                'strategy = "ordered"',  # a backup window larger than Claude's: context errors may fall back
                f'targets = ["{TARGET}", {{ model = "backup/gpt-4o-mini", context_window = 100000000 }}]',
                "[exporters.ledger]",
                "enabled = false",
            ]
        )
        async with running_gateway(toml) as gw:
            yield Env(fake, backup, gw)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async for e in _env():
        yield e


async def _raw(env: Env, **kwargs: Any) -> dict[str, Any]:
    """The gateway's JSON response body (keeps non-standard fields like ``native_finish_reason``)."""
    kwargs.setdefault("model", TARGET)
    kwargs.setdefault("messages", HI)
    raw = await env.client.chat.completions.with_raw_response.create(**kwargs)
    return json.loads(raw.text)  # type: ignore[no-any-return]


async def _stream(env: Env, **kwargs: Any) -> list[dict[str, Any]]:
    """Every chunk of a streamed completion, as JSON."""
    kwargs.setdefault("model", TARGET)
    kwargs.setdefault("messages", HI)
    stream = await env.client.chat.completions.create(stream=True, **kwargs)
    return [chunk.model_dump() async for chunk in stream]


# -- the outgoing request -----------------------------------------------------------------------


async def test_minimal_request_headers_and_response(env: Env) -> None:
    body = await _raw(env)
    request = env.fake.requests[-1]
    assert request.path == "/v1/messages"
    assert request.json == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Fake reply to: hi"}
    assert choice["finish_reason"] == "stop" and choice["native_finish_reason"] == "end_turn"
    assert body["id"].startswith("msg_fake_") and body["model"] == MODEL
    assert body["usage"]["completion_tokens"] == 4 and body["usage"]["prompt_tokens"] > 0


async def test_system_developer_roles_and_merging(env: Env) -> None:
    await _raw(
        env,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use British spelling."}]},
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {"role": "assistant", "content": "answer"},
            {"role": "assistant", "content": ""},  # nothing to say: dropped, not an empty block
            {"role": "user", "content": "third"},
        ],
    )
    assert env.sent["system"] == "Be terse.\n\nUse British spelling."
    assert env.sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "answer"}]},
        {"role": "user", "content": "third"},
    ]


async def test_images_documents_and_cache_control(env: Env) -> None:
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    body = await _raw(
        env,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "compare", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                    {"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}},
                ],
            }
        ],
    )
    assert env.sent["messages"][0]["content"] == [
        {"type": "text", "text": "compare", "cache_control": {"type": "ephemeral"}},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
        },
    ]
    assert body["choices"][0]["message"]["content"] == "Fake reply to: compare (2 images)"


async def test_parameters(env: Env) -> None:
    await _raw(
        env,
        temperature=1.6,
        top_p=0.9,
        stop=["END", "STOP"],
        max_completion_tokens=300,
        user="user-42",
        seed=7,
        n=1,
        presence_penalty=0.5,
        extra_body={"top_k": 5},
    )
    assert env.sent == {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "hi"}],
        "stop_sequences": ["END", "STOP"],
        "temperature": 1.0,  # clamped to Anthropic's 0-1
        "top_p": 0.9,
        "top_k": 5,
        "metadata": {"user_id": "user-42"},
    }
    await _raw(env, max_tokens=12, stop="END")
    assert env.sent["max_tokens"] == 12 and env.sent["stop_sequences"] == ["END"]


async def test_max_tokens_default_option() -> None:
    async for env in _env(max_tokens_default=123):
        await _raw(env)
        assert env.sent["max_tokens"] == 123
        await _stream(env)
        assert env.sent["max_tokens"] == 123 and env.sent["stream"] is True


def test_option_validation() -> None:
    def problems(**options: Any) -> list[tuple[str, str]]:
        return Anthropic.validate(ProviderSettings("c", "anthropic", api_key=Secret("k"), options=options))

    assert problems(max_tokens_default=1000) == []
    assert problems(max_tokens_default=0) == [("max_tokens_default", "must be a positive integer")]
    assert problems(max_tokens_default="9") == [("max_tokens_default", "must be a positive integer")]
    assert problems(version="x")[0][0] == "version"
    assert Anthropic.validate(ProviderSettings("c", "anthropic"))[0][0] == "api_key"


def test_docstring_example_is_a_valid_config() -> None:
    import textwrap
    import tomllib

    from interlock.core import config as config_mod
    from interlock.core.gateway import Gateway
    from interlock.plugins.providers import anthropic

    example = textwrap.dedent((anthropic.__doc__ or "").split("::", 1)[1])
    cfg = config_mod.parse(tomllib.loads(example), environ={"ANTHROPIC_API_KEY": KEY})
    provider = Gateway(cfg, load_entrypoints=False, environ={}).providers["anthropic"]
    assert isinstance(provider, Anthropic) and provider.max_tokens_default == 8192
    assert provider.headers()["anthropic-beta"] == "context-1m-2025-08-07"
    assert (
        provider.headers()["x-api-key"] == KEY
        and provider.messages_url == "https://api.anthropic.com/v1/messages"
    )


async def test_base_url_with_v1_suffix() -> None:
    async with FakeAnthropic(models=[MODEL], api_key=KEY) as fake:
        toml = provider_table("claude", type="anthropic", base_url=fake.base_url + "/v1", api_key=KEY)
        async with running_gateway(toml) as gw:
            await gw.client.chat.completions.create(model=TARGET, messages=HI)
        assert fake.requests[-1].path == "/v1/messages"


async def test_auto_provider_from_environment() -> None:
    async with FakeAnthropic(models=[MODEL], api_key=KEY) as fake:
        environ = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.base_url}
        async with running_gateway("[server]\nauto_providers = true\n", environ=environ) as gw:
            completion = await gw.client.chat.completions.create(
                model=MODEL, messages=HI
            )  # bare name: detected
            assert completion.choices[0].message.content == "Fake reply to: hi"
            assert gw.log.last.attempts[0].provider == "anthropic"
        assert fake.requests[-1].headers["x-api-key"] == KEY


# -- tools ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "native"),
    [
        (None, {"type": "auto"}),
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"type": "tool", "name": "get_time"}),
    ],
)
async def test_tools_and_tool_choice(env: Env, choice: Any, native: dict[str, Any]) -> None:
    extra = {"tool_choice": choice} if choice is not None else {}
    body = await _raw(env, tools=[WEATHER_TOOL, TIME_TOOL], **extra)
    assert env.sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": WEATHER_SCHEMA,
        },
        {"name": "get_time", "input_schema": TIME_TOOL["function"]["parameters"]},
    ]
    assert env.sent["tool_choice"] == native
    choice_out = body["choices"][0]
    if native["type"] == "none":
        assert choice_out["finish_reason"] == "stop" and "tool_calls" not in choice_out["message"]
    else:
        call = choice_out["message"]["tool_calls"][0]
        assert call["function"]["name"] == ("get_time" if native["type"] == "tool" else "get_weather")
        assert call["id"].startswith("toolu_") and call["type"] == "function"
        assert choice_out["message"]["content"] is None
        assert (
            choice_out["finish_reason"] == "tool_calls" and choice_out["native_finish_reason"] == "tool_use"
        )


async def test_parallel_tool_calls_false(env: Env) -> None:
    await _raw(env, tools=[WEATHER_TOOL], parallel_tool_calls=False)
    assert env.sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    await _raw(env, tools=[WEATHER_TOOL], tool_choice="none", parallel_tool_calls=False)
    assert env.sent["tool_choice"] == {"type": "none"}  # the flag only exists where tools may be called


async def test_tool_results_are_grouped_into_one_user_turn(env: Env) -> None:
    calls = [
        {
            "id": "toolu_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "toolu_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]
    body = await _raw(
        env,
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[
            {"role": "user", "content": "weather and time?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_b", "content": [{"type": "text", "text": "noon"}]},
        ],
    )
    assert env.sent["messages"] == [
        {"role": "user", "content": "weather and time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "noon"},
            ],
        },
    ]
    assert body["choices"][0]["message"]["content"] == "Tool result: noon"
    # a user message after the tool results joins the same turn, after them
    await _raw(
        env,
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": calls[:1]},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "sunny"},
            {"role": "user", "content": "and tomorrow?"},
        ],
    )
    assert env.sent["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
        {"type": "text", "text": "and tomorrow?"},
    ]


async def test_streamed_tool_call_index_ignores_content_block_index(env: Env) -> None:
    env.fake.thinking = "Weather needs a tool"  # the tool_use becomes content block 1
    chunks = await _stream(env, tools=[WEATHER_TOOL])
    calls = [c for ch in chunks for choice in ch["choices"] for c in choice["delta"].get("tool_calls") or []]
    assert {c["index"] for c in calls} == {0}
    assert calls[0]["id"].startswith("toolu_") and calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(c["function"]["arguments"] or "" for c in calls)) == {"city": "text"}
    reasoning = "".join(
        choice["delta"].get("reasoning_content") or "" for ch in chunks for choice in ch["choices"]
    )
    assert reasoning == "Weather needs a tool"
    assert [
        choice["finish_reason"] for ch in chunks for choice in ch["choices"] if choice["finish_reason"]
    ] == ["tool_calls"]


# -- JSON mode ------------------------------------------------------------------------------------


async def test_json_object_mode_is_a_system_instruction(env: Env) -> None:
    body = await _raw(
        env,
        messages=[{"role": "system", "content": "Be terse."}, *HI],
        response_format={"type": "json_object"},
    )
    assert env.sent["system"] == f"Be terse.\n\n{JSON_INSTRUCTION}"
    assert "tools" not in env.sent
    assert json.loads(body["choices"][0]["message"]["content"]) == {"reply": "Fake reply to: hi"}
    await _raw(env, response_format={"type": "json_object"})
    assert env.sent["system"] == JSON_INSTRUCTION


SCHEMA: Any = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


async def test_json_schema_mode_is_a_forced_tool(env: Env) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    body = await _raw(env, response_format=fmt)
    assert env.sent["tools"] == [
        {"name": JSON_TOOL, "description": env.sent["tools"][0]["description"], "input_schema": SCHEMA}
    ]
    assert env.sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    choice = body["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"name": "text", "age": 1}
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop" and choice["native_finish_reason"] == "tool_use"
    chunks = await _stream(env, response_format=fmt)
    text = "".join(choice["delta"].get("content") or "" for ch in chunks for choice in ch["choices"])
    assert json.loads(text) == {"name": "text", "age": 1}
    assert not any(choice["delta"].get("tool_calls") for ch in chunks for choice in ch["choices"])
    assert [
        choice["finish_reason"] for ch in chunks for choice in ch["choices"] if choice["finish_reason"]
    ] == ["stop"]


async def test_json_schema_with_client_tools(env: Env) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    body = await _raw(env, tools=[WEATHER_TOOL], response_format=fmt)
    assert [t["name"] for t in env.sent["tools"]] == ["get_weather", JSON_TOOL]
    assert env.sent["tool_choice"] == {"type": "any"}  # a real tool, or the answer through the JSON tool
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    await _raw(env, tools=[WEATHER_TOOL], tool_choice="none", response_format=fmt)
    assert env.sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    with pytest.raises(openai.BadRequestError):  # the JSON tool's name is taken by a client tool
        reserved = {"type": "function", "function": {"name": JSON_TOOL, "parameters": {"type": "object"}}}
        await _raw(env, tools=[reserved], response_format=fmt)


# -- responses: finish reasons, usage, reasoning -------------------------------------------------------


@pytest.mark.parametrize(
    ("native", "finish"),
    [
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("end_turn", "stop"),
    ],
)
async def test_forced_stop_reasons(env: Env, native: str, finish: str) -> None:
    env.fake.stop_reason = native
    body = await _raw(env)
    assert (
        body["choices"][0]["finish_reason"] == finish and body["choices"][0]["native_finish_reason"] == native
    )
    chunks = await _stream(env)
    assert [c["finish_reason"] for ch in chunks for c in ch["choices"] if c["finish_reason"]] == [finish]


async def test_natural_stop_reasons(env: Env) -> None:
    body = await _raw(env, stop=["reply"])
    assert body["choices"][0]["message"]["content"] == "Fake "
    assert (body["choices"][0]["finish_reason"], body["choices"][0]["native_finish_reason"]) == (
        "stop",
        "stop_sequence",
    )
    body = await _raw(env, max_tokens=2)
    assert body["choices"][0]["message"]["content"] == "Fake reply"
    assert (body["choices"][0]["finish_reason"], body["choices"][0]["native_finish_reason"]) == (
        "length",
        "max_tokens",
    )
    chunks = await _stream(env, max_tokens=2)
    assert [c["finish_reason"] for ch in chunks for c in ch["choices"] if c["finish_reason"]] == ["length"]


async def test_usage_with_cache_and_thinking(env: Env) -> None:
    env.fake.cache_read_tokens, env.fake.cache_creation_tokens = 100, 20
    env.fake.thinking = "Let me think"
    body = await _raw(env)
    usage = body["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 20}
    assert usage["prompt_tokens"] == 1 + 100 + 20  # "hi" is one fresh token
    assert usage["completion_tokens"] == 4 + 3 and usage["completion_tokens_details"] == {
        "reasoning_tokens": 3
    }
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["choices"][0]["message"]["reasoning_content"] == "Let me think"
    chunks = await _stream(env, stream_options={"include_usage": True})
    streamed = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and {
        k: streamed[k] for k in ("prompt_tokens", "completion_tokens")
    } == {
        "prompt_tokens": 121,
        "completion_tokens": 7,
    }
    assert streamed["prompt_tokens_details"]["cached_tokens"] == 100
    assert streamed["prompt_tokens_details"]["cache_write_tokens"] == 20
    assert streamed["completion_tokens_details"]["reasoning_tokens"] == 3
    assert (
        "".join(c["delta"].get("reasoning_content") or "" for ch in chunks for c in ch["choices"])
        == "Let me think"
    )
    assert env.gw.log.last.usage is not None and env.gw.log.last.usage.cached_tokens == 100


async def test_stream_text_and_metered_usage(env: Env) -> None:
    chunks = await _stream(env, messages=[{"role": "user", "content": "stream a longer answer"}])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["id"].startswith("msg_fake_") and chunks[0]["model"] == MODEL
    assert (
        "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"])
        == "Fake reply to: stream a longer answer"
    )
    assert all(ch["usage"] is None for ch in chunks)  # not asked for: not forwarded...
    assert (
        env.gw.log.last.usage is not None and env.gw.log.last.usage.completion_tokens == 7
    )  # ...but metered


# -- errors ------------------------------------------------------------------------------------------


def _error(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_1"}


FALLBACKS = {
    "rate_limited": Fault(status=429, retry_after=1),
    "overloaded": Fault(status=529, body=_error("overloaded_error", "Overloaded")),
    "server_error": Fault(status=500),
    "auth": Fault(status=401),
    "permission": Fault(status=403),
    "not_found": Fault(status=404, body=_error("not_found_error", "model: claude-nope")),
    "context_length": Fault(
        status=400, body=_error("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum")
    ),
    "context_length_old": Fault(
        status=400,
        body=_error(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000, "
            "decrease input length or `max_tokens` and try again",
        ),
    ),
    "quota": Fault(
        status=402,
        body=_error("billing_error", "Your credit balance is too low to access the Anthropic API."),
    ),
}
EXPECTED = {"permission": "auth", "context_length_old": "context_length"}


@pytest.mark.parametrize("failure", sorted(FALLBACKS))
async def test_http_errors_are_classified_and_fall_back(env: Env, failure: str) -> None:
    env.fake.add_fault(FALLBACKS[failure])
    raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    assert raw.headers["x-interlock-provider"] == "backup"
    attempt = env.gw.log.last.attempts[0]
    assert attempt.outcome == EXPECTED.get(failure, failure)
    assert attempt.status == FALLBACKS[failure].status
    assert KEY not in (attempt.error or "")


@pytest.mark.parametrize("status", [400, 413])
async def test_request_errors_fail_fast(env: Env, status: int) -> None:
    env.fake.add_fault(Fault(status=status))
    with pytest.raises(openai.APIStatusError) as info:
        await env.client.chat.completions.create(model="smart", messages=HI)
    assert info.value.status_code == status
    assert env.gw.log.last.attempts[0].outcome == "bad_request"
    assert not env.backup.requests


async def test_untranslatable_content_fails_fast_without_a_request(env: Env) -> None:
    audio: Any = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(openai.BadRequestError):
        await env.client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": [audio]}]
        )
    assert not env.fake.requests and not env.backup.requests
    assert env.gw.log.last.attempts[0].outcome == "bad_request"


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(error_event_at=0), "overloaded"),  # the fake's in-band error is overloaded_error
        (Fault(malformed_at=0), "stream_error"),
        (Fault(cut_after=0), "stream_error"),
    ],
)
async def test_stream_faults_before_content_fall_back(env: Env, fault: Fault, outcome: str) -> None:
    env.fake.add_fault(fault)
    chunks = await _stream(env, model="smart")
    assert (
        "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"])
        == "Fake reply to: hi"
    )
    assert [a.outcome for a in env.gw.log.last.attempts] == [outcome, "ok"]


async def test_in_band_rate_limit_error_is_classified() -> None:
    # the fake's in-band error is always overloaded_error; a rate_limit_error event is fed by hand
    async def events() -> AsyncIterator[tuple[str, bytes]]:
        start = {
            "type": "message_start",
            "message": {"id": "msg_1", "model": MODEL, "usage": {"input_tokens": 3}},
        }
        yield "message_start", json.dumps(start).encode()
        yield "ping", b'{"type": "ping"}'
        yield "error", json.dumps(_error("rate_limit_error", "slow down")).encode()

    chunks = stream_chunks(events(), "claude")
    assert (await chunks.__anext__()).response_id == "msg_1"
    with pytest.raises(UpstreamError) as info:
        await chunks.__anext__()
    assert info.value.kind == "stream" and info.value.error_type == "rate_limit_error"
    assert info.value.message == "claude stream error: slow down"
    assert failure_class(info.value) is FailureClass.RATE_LIMITED


async def test_stream_without_message_stop_or_start_is_an_error() -> None:
    async def truncated() -> AsyncIterator[tuple[str, bytes]]:
        yield "message_start", b'{"type": "message_start", "message": {"id": "msg_1", "usage": {}}}'
        yield (
            "message_delta",
            b'{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}',
        )

    async def headless() -> AsyncIterator[tuple[str, bytes]]:
        yield (
            "content_block_delta",
            b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}',
        )

    for events, message in ((truncated, "without message_stop"), (headless, "before message_start")):
        with pytest.raises(UpstreamError, match=message) as info:
            async for _ in stream_chunks(events(), "claude"):
                pass
        assert failure_class(info.value) is FailureClass.STREAM_ERROR


async def test_stream_error_after_content_reaches_the_client(env: Env) -> None:
    env.fake.add_fault(Fault(cut_after=2))
    stream = await env.client.chat.completions.create(
        model=TARGET, messages=[{"role": "user", "content": "a longer answer to cut short"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert env.gw.log.last.attempts[0].outcome == "stream_error"


async def test_embeddings_are_not_offered(env: Env) -> None:
    with pytest.raises(openai.APIStatusError):
        await env.client.embeddings.create(model=TARGET, input="hello")
    assert not env.fake.requests


async def test_key_never_leaks(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env.fake.add_fault(Fault(status=401, times=None))
    with pytest.raises(openai.APIStatusError) as info:
        await env.client.chat.completions.create(model=TARGET, messages=HI)
    assert KEY not in info.value.response.text
    assert KEY not in caplog.text
    assert (
        KEY not in (env.gw.log.last.attempts[0].error or "") and env.gw.log.last.attempts[0].outcome == "auth"
    )
    provider = env.gw.gateway.providers["claude"]
    assert KEY not in json.dumps(provider.describe()) and KEY not in repr(provider.settings)
