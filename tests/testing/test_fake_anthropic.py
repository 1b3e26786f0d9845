"""FakeAnthropic is only useful if the official SDK accepts it, so these tests drive it with `anthropic`."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic.types import Message

from interlock.testing import FakeAnthropic, Fault

KEY = "sk-ant-test-key"
MODEL = "claude-sonnet-4-6"
HELLO: list[Any] = [{"role": "user", "content": "Hello there, how are you today?"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    },
}
PNG = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")
).decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key=KEY, max_retries=0) as sdk:
        yield sdk


def block(message: Message, index: int = 0, kind: str = "text") -> Any:
    """``message.content[index]``, checked to be a ``kind`` block (narrows the union for readers)."""
    item = message.content[index]
    assert item.type == kind, item
    return item


def text(message: Message, index: int = 0) -> str:
    return str(block(message, index).text)


async def _stream_text(client: anthropic.AsyncAnthropic, **kwargs: Any) -> str:
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO, **kwargs) as stream:
        return "".join([piece async for piece in stream.text_stream])


# -- happy paths ---------------------------------------------------------------------------------


async def test_message_non_stream_and_request_recording(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=HELLO,
        stop_sequences=["zzz"],
        extra_headers={"anthropic-version": "2023-06-01"},
        extra_body={"temperature": 0.5},
    )
    assert message.content[0].type == "text"
    assert text(message) == "Fake reply to: Hello there, how are you today?"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.model == MODEL and message.id.startswith("msg_")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 9
    assert message.usage.cache_read_input_tokens == 0
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert (
        sent.headers["authorization"] == f"Bearer {KEY}" and sent.headers["anthropic-version"] == "2023-06-01"
    )
    assert sent.json["system"] == "Be brief." and sent.json["temperature"] == 0.5


async def test_stream_matches_non_stream(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        streamed = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    plain = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert streamed == text(plain) == "Fake reply to: Hello there, how are you today?"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


async def test_raw_event_sequence(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO, stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[:2] == ["message_start", "content_block_start"]  # the SDK drops ping
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"} and len(kinds[2:-3]) == 5


async def test_image_blocks_are_counted(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                ],
            }
        ],
    )
    assert text(message) == "Fake reply to: what is this (2 images)"


async def test_tool_use_round_trip(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = block(first, 0, "tool_use")
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert call.input == {"city": "text", "days": 1}
    second = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            *HELLO,
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
    )
    assert text(second) == "Tool result: sunny" and second.stop_reason == "end_turn"


async def test_tool_choice_and_streamed_tool_use(client: anthropic.AsyncAnthropic) -> None:
    other: Any = {
        "name": "get_time",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
    }
    forced = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=HELLO,
        tools=[WEATHER, other],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    assert block(forced, 0, "tool_use").name == "get_time"
    none = await client.messages.create(
        model=MODEL, max_tokens=100, messages=HELLO, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert none.content[0].type == "text"
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO, tools=[WEATHER]) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert block(final, 0, "tool_use").input == {"city": "text", "days": 1}
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=HELLO,
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "nope"},
        )


async def test_json_when_the_system_prompt_asks(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL, max_tokens=100, system="Answer in JSON.", messages=HELLO
    )
    assert json.loads(text(message)) == {"reply": "Fake reply to: Hello there, how are you today?"}


async def test_system_messages_in_the_conversation(client: anthropic.AsyncAnthropic) -> None:
    # SDK 2.x (API 2026-10-21) accepts system messages anywhere in the conversation
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            *HELLO,
            {"role": "assistant", "content": "Hi!"},
            {"role": "system", "content": "Now answer in JSON."},
            {"role": "user", "content": "again"},
        ],
    )
    assert json.loads(text(message)) == {"reply": "Fake reply to: again"}


async def test_stop_sequences_and_max_tokens(client: anthropic.AsyncAnthropic) -> None:
    stopped = await client.messages.create(
        model=MODEL, max_tokens=100, messages=HELLO, stop_sequences=["how"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "how"
    assert text(stopped) == "Fake reply to: Hello there, "
    short = await client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert short.stop_reason == "max_tokens" and text(short) == "Fake reply to:"
    assert await _stream_text(client, stop_sequences=["there"]) == "Fake reply to: Hello "


async def test_thinking_cache_usage_and_forced_stop_reason(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.thinking = "Let me think about this"
    fake.cache_read_tokens, fake.cache_creation_tokens = 100, 20
    fake.stop_reason = "refusal"
    message = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert block(message, 0, "thinking").thinking == "Let me think about this"
    assert message.stop_reason == "refusal"
    assert message.usage.cache_read_input_tokens == 100 and message.usage.cache_creation_input_tokens == 20
    assert (
        message.usage.output_tokens_details is not None
        and message.usage.output_tokens_details.thinking_tokens == 5
    )
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        final = await stream.get_final_message()
    assert block(final, 0, "thinking").thinking == "Let me think about this"
    assert block(final, 0, "thinking").signature
    assert text(final, 1) == "Fake reply to: Hello there, how are you today?"
    assert final.usage.output_tokens == message.usage.output_tokens


async def test_models_and_count_tokens(client: anthropic.AsyncAnthropic) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    assert (await client.models.retrieve("claude-haiku-4-5")).id == "claude-haiku-4-5"
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("claude-nope")
    count = await client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert count.input_tokens > 0


# -- request validation ----------------------------------------------------------------------------


async def test_request_validation(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="role"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "tool", "content": "x"}])  # type: ignore[misc,list-item]
    with pytest.raises(anthropic.BadRequestError, match="tool_use_id"):
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}],
                }
            ],
        )
    with pytest.raises(anthropic.BadRequestError, match="without `tool_result`"):
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[
                *HELLO,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
                },
                {"role": "user", "content": "no result"},
            ],
        )
    with pytest.raises(anthropic.BadRequestError, match="non-empty"):
        await client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]
        )
    with pytest.raises(anthropic.BadRequestError, match="temperature"):  # over 1
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=HELLO,
            extra_body={"temperature": 1.5},
            extra_headers={"anthropic-version": "2023-06-01"},
        )
    with pytest.raises(
        anthropic.BadRequestError, match="top_p"
    ):  # SDK 2.x's default API version has no sampling
        await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_body={"top_p": 0.5})
    with pytest.raises(anthropic.BadRequestError, match="anthropic-version"):
        await client.messages.create(
            model=MODEL, max_tokens=10, messages=HELLO, extra_headers={"anthropic-version": "2020-01-01"}
        )
    with pytest.raises(anthropic.NotFoundError) as info:
        await client.messages.create(model="claude-nope", max_tokens=10, messages=HELLO)
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    async with aiohttp.ClientSession() as session:  # no anthropic-version header, no max_tokens
        headers = {"x-api-key": KEY}
        async with session.post(
            f"{fake.base_url}/v1/messages", json={"model": MODEL, "messages": HELLO}, headers=headers
        ) as resp:
            assert resp.status == 400 and "anthropic-version" in (await resp.json())["error"]["message"]
        headers["anthropic-version"] = "2023-06-01"
        async with session.post(
            f"{fake.base_url}/v1/messages", json={"model": MODEL, "messages": HELLO}, headers=headers
        ) as resp:
            assert (
                resp.status == 400 and (await resp.json())["error"]["message"] == "max_tokens: Field required"
            )


async def test_api_key_enforced(fake: FakeAnthropic) -> None:
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await bad.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": info.value.body["request_id"],  # type: ignore[index]
    }


# -- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exc", "etype"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_status_faults(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, status: int, exc: type[Exception], etype: str
) -> None:
    fake.add_fault(Fault(status=status, retry_after=2))
    with pytest.raises(exc) as info:
        await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    error = info.value
    assert isinstance(error, anthropic.APIStatusError) and error.status_code == status
    assert error.body["error"]["type"] == etype  # type: ignore[index]
    assert error.response.headers["retry-after"] == "2"
    assert (
        await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    ).stop_reason == "end_turn"


async def test_fault_with_native_body(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    body = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum",
        },
    }
    fake.add_fault(Fault(status=400, body=body))
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)


async def test_cut_stream_raises(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.add_fault(Fault(cut_after=2))
    seen: list[str] = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            async for piece in stream.text_stream:
                seen.append(piece)
    assert "".join(seen) == "Fake reply to: Hello "  # two of five pieces arrived


async def test_malformed_event_raises(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.add_fault(Fault(malformed_at=1))
    with pytest.raises(json.JSONDecodeError):
        await _stream_text(client)


async def test_error_event_raises_api_error(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.add_fault(Fault(error_event_at=2))
    with pytest.raises(anthropic.APIStatusError) as info:
        await _stream_text(client)
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_latency_and_ttft_still_succeed(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.add_fault(Fault(latency=0.05))
    fake.add_fault(Fault(ttft=0.05))
    assert (
        await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    ).stop_reason == "end_turn"
    assert await _stream_text(client) == "Fake reply to: Hello there, how are you today?"
    assert not fake.faults


async def test_failure_rate_answers_overloaded() -> None:
    async with (
        FakeAnthropic(failure_rate=1.0) as fake,
        anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0) as client,
    ):
        with pytest.raises(anthropic.InternalServerError) as info:
            await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert len((await client.models.list()).data) == 2  # listing is not a generation: never failed


async def test_usage_knob_reports_cache_lifetimes_and_searches_plain_and_streamed(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    default = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert default.usage.cache_creation is None and default.usage.server_tool_use is None
    fake.usage = {
        "input_tokens": 2000, "cache_read_input_tokens": 30000, "cache_creation_input_tokens": 8000,
        "cache_creation": {"ephemeral_5m_input_tokens": 5000, "ephemeral_1h_input_tokens": 3000},
        "output_tokens": 1500, "server_tool_use": {"web_search_requests": 2},
    }  # fmt: skip
    plain = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        events = [event async for event in stream]
        streamed = await stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.output_tokens == 1 and start.message.usage.server_tool_use is None
    assert start.message.usage.cache_creation is not None
    assert start.message.usage.cache_creation.ephemeral_1h_input_tokens == 3000
    for usage in (plain.usage, streamed.usage):
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
            2000, 30000, 8000,
        )
        assert usage.output_tokens == 1500 and usage.service_tier == "standard"  # the fake's own field kept
        assert usage.server_tool_use is not None and usage.server_tool_use.web_search_requests == 2
