"""The Anthropic Messages door (``POST /v1/messages``), driven by the official ``anthropic`` SDK.

Two kinds of target: a fake Anthropic upstream (the client's body passed through
untouched) and a fake OpenAI upstream (translated to Chat Completions and back), plus
a fake Gemini for what the OpenAI fake does not produce (reasoning, cache reads).
The SDK's own stream accumulator (``messages.stream(...).get_final_message()``)
checks every stream, and the rebuilt message must equal the non-stream answer.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest

from interlock.testing import FakeAnthropic, FakeGemini, FakeOpenAI, Fault
from tests.conftest import SECRET, GatewayFactory, RunningGateway

ANT_KEY = "sk-ant-upstream-secret-0123456789"
GEMINI_KEY = "gemini-upstream-secret-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# a one-pixel PNG
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002"
        "00000500010d0a2db40000000049454e44ae426082"
    )
).decode()


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(models=["claude-sonnet-4-6"], api_key=ANT_KEY) as f:
        yield f


@pytest.fixture
async def gpt() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=["gpt-4o"]) as f:
        yield f


def config(claude: FakeAnthropic, gpt: FakeOpenAI, extra: str = "") -> str:
    return f"""
[providers.anthropic]
base_url = "{claude.url}"
api_key = "{ANT_KEY}"

[providers.openai]
base_url = "{gpt.base_url}"
api_key = "{SECRET}"

[routes.claude-with-backup]
chain = "anthropic/claude-sonnet-4-6 > openai/gpt-4o"
retries = 0
{extra}
"""


def client(gw: RunningGateway, api_key: str = "client-key") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.root, api_key=api_key, max_retries=0)


@pytest.fixture
async def gw(claude: FakeAnthropic, gpt: FakeOpenAI, make_gateway: GatewayFactory) -> RunningGateway:
    return await make_gateway(config(claude, gpt))


@pytest.fixture
async def sdk(gw: RunningGateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with client(gw) as c:
        yield c


def content_of(message: anthropic.types.Message, *, ids: bool = True) -> list[dict[str, Any]]:
    """A message's content as plain data; without ``ids`` the tool-call ids are left out (they differ per call)."""
    blocks = [b.to_dict() for b in message.content]
    if not ids:
        for block in blocks:
            block.pop("id", None)
    return blocks


async def stream_and_create(sdk: anthropic.AsyncAnthropic, **params: Any) -> tuple[anthropic.types.Message, anthropic.types.Message]:
    """The same request streamed (rebuilt by the SDK's accumulator) and not."""
    async with sdk.messages.stream(**params) as stream:
        streamed = await stream.get_final_message()
        # streams carry the request id where the SDK reads it, like JSON answers
        assert stream.response.headers["request-id"] == stream.response.headers["x-request-id"]
    created = await sdk.messages.create(**params)
    return streamed, created


# --------------------------------------------------------------------------- #
# translated: an OpenAI-wire target
# --------------------------------------------------------------------------- #


async def test_text_answer_from_a_chat_target(sdk: anthropic.AsyncAnthropic, gw: RunningGateway, gpt: FakeOpenAI) -> None:
    raw = await sdk.messages.with_raw_response.create(model="gpt-4o", max_tokens=100, messages=HELLO)
    message = (await raw.parse())

    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "gpt-4o"
    assert content_of(message) == [{"type": "text", "text": "Fake reply to: hello there"}]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    sent = gpt.requests[-1].json
    assert sent["messages"] == HELLO and sent["max_tokens"] == 100
    assert gw.log.last.protocol == "messages"


async def test_system_multi_turn_and_parameters_are_translated(sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI) -> None:
    message = await sdk.messages.create(
        model="gpt-4o", max_tokens=50, system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "one"}]},
            {"role": "system", "content": "Now in French."},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
        stop_sequences=["END"], metadata={"user_id": "u-42"},
        extra_body={"temperature": 0.5, "top_p": 0.9},  # sampling parameters the SDK's API version left out
    )

    assert content_of(message) == [{"type": "text", "text": "Fake reply to: second"}]
    sent = gpt.requests[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "system", "content": "Now in French."},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    assert (sent["temperature"], sent["top_p"], sent["stop"], sent["user"]) == (0.5, 0.9, ["END"], "u-42")


async def test_tool_round_trip_through_a_chat_target(sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI) -> None:
    first = await sdk.messages.create(
        model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "text"}
    sent = gpt.requests[-1].json
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city", "parameters": WEATHER["input_schema"]}}]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False

    second = await sdk.messages.create(
        model="gpt-4o", max_tokens=100, tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            first.to_param(),
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]},
        ],
    )
    assert content_of(second) == [{"type": "text", "text": "Tool result: sunny, 21C"}]
    messages = gpt.requests[-1].json["messages"]
    assert messages[1]["tool_calls"] == [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"text"}'}}
    ]
    assert messages[2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}


async def test_tool_result_errors_and_blocks(sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI) -> None:
    await sdk.messages.create(
        model="gpt-4o", max_tokens=100, tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                 "content": [{"type": "text", "text": "city missing"}]},
                {"type": "text", "text": "try again"},
            ]},
        ],
    )
    messages = gpt.requests[-1].json["messages"]
    assert messages[1]["content"] is None
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_1",
                           "content": [{"type": "text", "text": "Error: "}, {"type": "text", "text": "city missing"}]}
    assert messages[3] == {"role": "user", "content": [{"type": "text", "text": "try again"}]}


async def test_images_and_documents_become_chat_parts(sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI) -> None:
    message = await sdk.messages.create(
        model="gpt-4o", max_tokens=100,
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
            {"type": "text", "text": "describe"},
        ]}],
    )
    assert content_of(message) == [{"type": "text", "text": "Fake reply to: notes describe (2 images)"}]
    parts = gpt.requests[-1].json["messages"][0]["content"]
    assert parts[:3] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "notes"},
    ]


async def test_stop_reasons_from_a_chat_target(sdk: anthropic.AsyncAnthropic) -> None:
    cut = await sdk.messages.create(model="gpt-4o", max_tokens=2, messages=HELLO)
    assert cut.stop_reason == "max_tokens"
    assert content_of(cut) == [{"type": "text", "text": "Fake reply"}]


async def test_stream_from_a_chat_target_rebuilds_the_same_message(sdk: anthropic.AsyncAnthropic, gw: RunningGateway) -> None:
    streamed, created = await stream_and_create(sdk, model="gpt-4o", max_tokens=100, messages=HELLO)
    assert content_of(streamed) == content_of(created) == [{"type": "text", "text": "Fake reply to: hello there"}]
    assert streamed.stop_reason == created.stop_reason == "end_turn"
    assert streamed.usage.to_dict() == created.usage.to_dict()
    assert streamed.model == "gpt-4o"
    assert gw.log.decisions[-2].protocol == "messages" and gw.log.decisions[-2].stream


async def test_stream_of_a_tool_call_from_a_chat_target(sdk: anthropic.AsyncAnthropic) -> None:
    params: dict[str, Any] = dict(model="gpt-4o", max_tokens=100, messages=HELLO, tools=[WEATHER])
    streamed, created = await stream_and_create(sdk, **params)
    assert content_of(streamed, ids=False) == content_of(created, ids=False) == [
        {"type": "tool_use", "name": "get_weather", "input": {"city": "text"}}
    ]
    assert streamed.stop_reason == "tool_use"


async def test_stream_events_are_the_messages_sequence(gw: RunningGateway) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{gw.root}/v1/messages", json={
            "model": "gpt-4o", "max_tokens": 50, "stream": True, "messages": HELLO,
        })
    events = [line.removeprefix("event: ") for line in resp.text.splitlines() if line.startswith("event: ")]
    assert events[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert resp.headers["content-type"].startswith("text/event-stream")


# --------------------------------------------------------------------------- #
# translated: reasoning and cache reads (a Gemini target reports both)
# --------------------------------------------------------------------------- #


@pytest.fixture
async def gemini_sdk(make_gateway: GatewayFactory) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, FakeGemini]]:
    async with FakeGemini(models=["gemini-2.5-pro"], api_key=GEMINI_KEY, thoughts="Let me think it over.",
                          cached_tokens=7) as fake:
        gw = await make_gateway(f'[providers.gemini]\nbase_url = "{fake.base_url}"\napi_key = "{GEMINI_KEY}"\n')
        async with client(gw) as c:
            yield c, fake


async def test_reasoning_becomes_a_thinking_block_and_cache_reads_are_reported(
    gemini_sdk: tuple[anthropic.AsyncAnthropic, FakeGemini],
) -> None:
    sdk, fake = gemini_sdk
    params: dict[str, Any] = dict(
        model="gemini-2.5-pro", max_tokens=2000, messages=HELLO, thinking={"type": "enabled", "budget_tokens": 1024},
    )
    streamed, created = await stream_and_create(sdk, **params)

    assert content_of(created) == [
        {"type": "thinking", "thinking": "Let me think it over.", "signature": ""},
        {"type": "text", "text": "Fake reply to: hello there"},
    ]
    assert content_of(streamed) == content_of(created)
    assert created.usage.cache_read_input_tokens == 7
    assert streamed.usage.to_dict() == created.usage.to_dict()
    assert created.usage.output_tokens > 4  # the reasoning is output too


async def test_thinking_maps_to_reasoning_effort(sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI) -> None:
    await sdk.messages.create(model="gpt-4o", max_tokens=18000, messages=HELLO, timeout=30,
                              thinking={"type": "enabled", "budget_tokens": 17000})
    sent = gpt.requests[-1].json
    assert sent["reasoning_effort"] == "high"
    assert "thinking" not in sent  # an Anthropic-only field is not forwarded to a chat upstream


async def test_thinking_history_and_top_k_are_dropped_for_a_chat_target(sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI) -> None:
    raw = await sdk.messages.with_raw_response.create(
        model="gpt-4o", max_tokens=100, extra_body={"top_k": 5},
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}, {"type": "text", "text": "hello"}]},
            {"role": "user", "content": "again"},
        ],
    )
    assert raw.headers["x-interlock-dropped"] == "thinking blocks in history, top_k"
    sent = gpt.requests[-1].json
    assert sent["messages"][1] == {"role": "assistant", "content": "hello"}
    assert "top_k" not in sent


async def test_server_tools_are_refused_for_a_chat_target(sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        await sdk.messages.create(
            model="gpt-4o", max_tokens=100, messages=HELLO,
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        )
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "tools.web_search_20250305" in exc.value.body["error"]["message"]
    assert gpt.requests == []  # refused before anything was sent


# --------------------------------------------------------------------------- #
# passed through: an Anthropic target
# --------------------------------------------------------------------------- #


async def test_anthropic_target_gets_the_clients_body_and_headers(
    sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic, gw: RunningGateway,
) -> None:
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "c2lnbmF0dXJl"}, {"type": "text", "text": "hello"}]},
        {"role": "user", "content": "again"},
    ]
    raw = await sdk.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=messages, metadata={"user_id": "u-7"},
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"},
    )
    message = (await raw.parse())

    assert content_of(message) == [{"type": "text", "text": "Fake reply to: again"}]
    assert message.id.startswith("msg_fake_")  # the upstream's own message
    assert "x-interlock-dropped" not in raw.headers
    received = claude.requests[-1]
    assert received.json == {
        "model": "claude-sonnet-4-6", "max_tokens": 100, "messages": messages, "metadata": {"user_id": "u-7"},
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    assert received.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert received.headers["anthropic-version"] == sdk.default_headers["anthropic-version"]
    assert received.headers["x-api-key"] == ANT_KEY
    assert gw.log.last.protocol == "messages" and gw.log.last.provider == "anthropic" and gw.log.last.user == "u-7"
    assert gw.log.last.usage is not None and gw.log.last.usage.prompt_tokens == message.usage.input_tokens


async def test_configured_and_client_betas_are_both_sent(
    claude: FakeAnthropic, gpt: FakeOpenAI, make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(config(claude, gpt).replace(
        f'api_key = "{ANT_KEY}"', f'api_key = "{ANT_KEY}"\nheaders = {{ "anthropic-beta" = "configured-beta" }}', 1))
    async with client(gw) as sdk:
        await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HELLO,
                                  extra_headers={"anthropic-beta": "client-beta"})
        await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HELLO)
    assert claude.requests[-2].headers["anthropic-beta"] == "configured-beta,client-beta"
    assert claude.requests[-1].headers["anthropic-beta"] == "configured-beta"


async def test_anthropic_target_stream_is_passed_through(
    sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic, gw: RunningGateway,
) -> None:
    claude.thinking = "Pondering."
    claude.cache_read_tokens, claude.cache_creation_tokens = 11, 5
    params: dict[str, Any] = dict(model="claude-sonnet-4-6", max_tokens=2000, messages=HELLO,
                                  thinking={"type": "enabled", "budget_tokens": 1024})
    streamed, created = await stream_and_create(sdk, **params)

    assert content_of(streamed) == content_of(created) == [
        {"type": "thinking", "thinking": "Pondering.", "signature": "c2lnbmF0dXJl"},
        {"type": "text", "text": "Fake reply to: hello there"},
    ]
    assert streamed.usage.cache_read_input_tokens == 11 and streamed.usage.cache_creation_input_tokens == 5
    assert claude.requests[-2].json["stream"] is True
    stream_decision = gw.log.decisions[-2]
    assert stream_decision.stream and stream_decision.protocol == "messages"
    usage = stream_decision.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (
        created.usage.input_tokens + 16, 11, 5)
    assert usage.completion_tokens == created.usage.output_tokens
    assert stream_decision.attempts[-1].finish_reasons == ["stop"]


async def test_stop_sequence_through_anthropic(sdk: anthropic.AsyncAnthropic) -> None:
    params: dict[str, Any] = dict(model="claude-sonnet-4-6", max_tokens=100, messages=HELLO, stop_sequences=["reply"])
    streamed, created = await stream_and_create(sdk, **params)
    assert content_of(streamed) == content_of(created) == [{"type": "text", "text": "Fake "}]
    assert (created.stop_reason, created.stop_sequence) == (streamed.stop_reason, streamed.stop_sequence) == (
        "stop_sequence", "reply")


async def test_tool_round_trip_through_anthropic(sdk: anthropic.AsyncAnthropic) -> None:
    params: dict[str, Any] = dict(model="claude-sonnet-4-6", max_tokens=100, messages=HELLO, tools=[WEATHER])
    streamed, created = await stream_and_create(sdk, **params)
    assert content_of(streamed, ids=False) == content_of(created, ids=False)
    [call] = created.content
    assert call.type == "tool_use"
    answer = await sdk.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, tools=[WEATHER],
        messages=[*HELLO, created.to_param(),
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "rain"}]}],
    )
    assert content_of(answer) == [{"type": "text", "text": "Tool result: rain"}]


# --------------------------------------------------------------------------- #
# fallback across protocols
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("status", [529, 500])
async def test_fallback_from_anthropic_to_a_chat_target(
    status: int, sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic, gpt: FakeOpenAI,
) -> None:
    claude.add_fault(Fault(status=status, times=2))
    raw = await sdk.messages.with_raw_response.create(model="claude-with-backup", max_tokens=100, messages=HELLO)
    assert raw.headers["x-interlock-fallback"] == "true" and raw.headers["x-interlock-provider"] == "openai"
    assert content_of((await raw.parse())) == [{"type": "text", "text": "Fake reply to: hello there"}]

    async with sdk.messages.stream(model="claude-with-backup", max_tokens=100, messages=HELLO) as stream:
        streamed = await stream.get_final_message()
    assert content_of(streamed) == [{"type": "text", "text": "Fake reply to: hello there"}]
    assert streamed.model == "gpt-4o"
    assert len(gpt.requests) == 2


async def test_stream_failing_before_its_content_falls_back_whole(
    sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic, gw: RunningGateway,
) -> None:
    claude.add_fault(Fault(error_event_at=0))  # message_start and ping were sent, then an error event
    async with sdk.messages.stream(model="claude-with-backup", max_tokens=100, messages=HELLO) as stream:
        streamed = await stream.get_final_message()
    assert content_of(streamed) == [{"type": "text", "text": "Fake reply to: hello there"}]
    assert streamed.model == "gpt-4o" and streamed.id.startswith("msg_")
    assert [a.provider for a in gw.log.last.attempts] == ["anthropic", "openai"]


@pytest.mark.parametrize("fault", [Fault(error_event_at=2), Fault(cut_after=2)], ids=["error-event", "cut"])
async def test_midstream_failure_ends_with_an_error_event(
    fault: Fault, sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic,
) -> None:
    claude.add_fault(fault)
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as exc:
        async with sdk.messages.stream(model="claude-with-backup", max_tokens=100, messages=HELLO) as stream:
            async for text in stream.text_stream:
                received.append(text)
    assert "".join(received) and "".join(received) != "Fake reply to: hello there"
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "api_error"


async def test_midstream_failure_of_a_chat_target_ends_with_an_error_event(
    sdk: anthropic.AsyncAnthropic, gpt: FakeOpenAI,
) -> None:
    gpt.add_fault(Fault(cut_after=2))
    with pytest.raises(anthropic.APIStatusError) as exc:
        async with sdk.messages.stream(model="gpt-4o", max_tokens=100, messages=HELLO) as stream:
            await stream.get_final_message()
    assert exc.value.body["error"]["type"] == "api_error"
    assert "stream" in exc.value.body["error"]["message"]


async def test_refused_feature_after_a_failed_anthropic_attempt(sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic) -> None:
    claude.add_fault(Fault(status=529))
    with pytest.raises(anthropic.BadRequestError) as exc:
        await sdk.messages.create(model="claude-with-backup", max_tokens=100, messages=HELLO,
                                  tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "openai/gpt-4o does not speak the Messages API" in exc.value.body["error"]["message"]


# --------------------------------------------------------------------------- #
# count_tokens
# --------------------------------------------------------------------------- #


async def test_count_tokens_upstream_and_estimated(sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic) -> None:
    counted = await sdk.messages.with_raw_response.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x" * 400}], system="sys")
    assert (await counted.parse()).input_tokens == 100  # the fake's count: (400 + 3) // 4
    assert "x-interlock-estimate" not in counted.headers
    assert claude.requests[-1].path == "/v1/messages/count_tokens"
    assert claude.requests[-1].json["model"] == "claude-sonnet-4-6"

    estimated = await sdk.messages.with_raw_response.count_tokens(
        model="gpt-4o", messages=[{"role": "user", "content": "x" * 400}])
    assert (await estimated.parse()).input_tokens == 100
    assert estimated.headers["x-interlock-estimate"] == "true"

    claude.add_fault(Fault(status=529))  # the upstream cannot count right now: the estimate answers
    fallback = await sdk.messages.with_raw_response.count_tokens(model="claude-sonnet-4-6", messages=HELLO)
    assert fallback.headers["x-interlock-estimate"] == "true"
    assert (await fallback.parse()).input_tokens == 3  # "hello there": 11 characters / 4, rounded up

    with pytest.raises(anthropic.NotFoundError) as exc:
        await sdk.messages.count_tokens(model="no-such-model", messages=HELLO)
    assert exc.value.body["error"]["type"] == "not_found_error"


# --------------------------------------------------------------------------- #
# errors, in Anthropic's shape
# --------------------------------------------------------------------------- #


async def test_missing_max_tokens_and_malformed_json(gw: RunningGateway, sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        await sdk.post("/v1/messages", cast_to=httpx.Response, body={"model": "gpt-4o", "messages": HELLO})
    assert exc.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}
    assert exc.value.request_id == exc.value.response.headers["x-request-id"]

    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{gw.root}/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("source", ["https://example.com/y.png", ["url"], True])
async def test_an_image_or_document_source_that_is_not_an_object_is_a_4xx(gw: RunningGateway, source: Any) -> None:
    """It was a 500 (the translation called .get on it), found by tests/chaos/test_fuzz.py."""
    for kind in ("image", "document"):
        body = {"model": "gpt-4o", "max_tokens": 8,
                "messages": [{"role": "user", "content": [{"type": kind, "source": source}]}]}
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{gw.root}/v1/messages", json=body)
        assert 400 <= resp.status_code < 500, (kind, resp.text)
        assert resp.json()["type"] == "error"


async def test_unknown_model_is_not_found(sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        await sdk.messages.create(model="no-such-model", max_tokens=10, messages=HELLO)
    assert exc.value.body["error"]["type"] == "not_found_error"


async def test_every_target_failing_is_an_api_error(sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic, gpt: FakeOpenAI) -> None:
    claude.add_fault(Fault(status=500, times=None))
    gpt.add_fault(Fault(status=500, times=None))
    with pytest.raises(anthropic.InternalServerError) as exc:
        await sdk.messages.create(model="claude-with-backup", max_tokens=10, messages=HELLO)
    assert exc.value.status_code == 502
    assert exc.value.body["error"]["type"] == "api_error"
    assert ANT_KEY not in exc.value.response.text and SECRET not in exc.value.response.text


async def test_rate_limited_everywhere_keeps_retry_after(sdk: anthropic.AsyncAnthropic, claude: FakeAnthropic) -> None:
    claude.add_fault(Fault(status=429, retry_after=3))
    with pytest.raises(anthropic.RateLimitError) as exc:
        await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HELLO)
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    assert exc.value.response.headers["retry-after"] == "3"


async def test_body_too_large(claude: FakeAnthropic, gpt: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway("[server]\nmax_body_bytes = 2000\n" + config(claude, gpt))
    async with client(gw) as sdk:
        with pytest.raises(anthropic.APIStatusError) as exc:
            await sdk.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x" * 5000}])
    assert exc.value.status_code == 413
    assert exc.value.body["error"]["type"] == "request_too_large"


async def test_gateway_keys_in_x_api_key(claude: FakeAnthropic, gpt: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    key = "gw-team-key-0123456789"
    gw = await make_gateway(config(claude, gpt, f'[[keys]]\nkey = "{key}"\nname = "search"\nteam = "search"\n'))
    async with client(gw, api_key="wrong-key-0123456789") as sdk:
        with pytest.raises(anthropic.AuthenticationError) as exc:
            await sdk.messages.create(model="gpt-4o", max_tokens=10, messages=HELLO)
        assert exc.value.body["error"]["type"] == "authentication_error"
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.messages.count_tokens(model="gpt-4o", messages=HELLO)
    async with client(gw, api_key=key) as sdk:  # this SDK version sends the key as a Bearer token
        assert (await sdk.messages.create(model="gpt-4o", max_tokens=10, messages=HELLO)).content
    # Anthropic's own header, as API clients of version 2023-06-01 send it
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{gw.root}/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                               json={"model": "claude-with-backup", "max_tokens": 10, "messages": HELLO})
    assert resp.status_code == 200 and resp.json()["type"] == "message"
    assert gw.log.last.team == "search"
    forwarded = claude.requests[-1].headers
    assert forwarded["x-api-key"] == ANT_KEY  # the provider's key upstream, never the gateway key
    assert key not in str(forwarded) and key not in str(gpt.requests[-1].headers)
