"""The Responses door (POST /v1/responses), driven by the official openai SDK.

Each behaviour runs against a target the request is translated for (the fake
Anthropic upstream, and the fake OpenAI with ``responses = false``: Chat
Completions only) and one that takes it natively (the fake OpenAI's /v1/responses).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from interlock.testing import FakeAnthropic, FakeOpenAI, Fault
from interlock.testing.response_store import MemoryResponseStore
from tests.conftest import GatewayFactory, RunningGateway

NATIVE = "openai/gpt-4o"
CHAT_ONLY = "chatonly/gpt-4o"
CLAUDE = "anthropic/claude-sonnet-4-6"
TARGETS = [NATIVE, CHAT_ONLY, CLAUDE]
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


@pytest.fixture
async def oai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


def config(oai: FakeOpenAI, claude: FakeAnthropic, extra: str = "") -> str:
    return f"""
[providers.openai]
base_url = "{oai.base_url}"
api_key = "sk-openai"

[providers.chatonly]
type = "openai"
base_url = "{oai.base_url}"
api_key = "sk-openai"
responses = false

[providers.anthropic]
base_url = "{claude.base_url}"
api_key = "sk-anthropic"
{extra}
"""


@pytest.fixture
async def gw(oai: FakeOpenAI, claude: FakeAnthropic, make_gateway: GatewayFactory) -> RunningGateway:
    return await make_gateway(config(oai, claude), response_store=MemoryResponseStore())


def store_of(gw: RunningGateway) -> MemoryResponseStore:
    store = gw.gateway.response_store
    assert isinstance(store, MemoryResponseStore)
    return store


def upstream(target: str, oai: FakeOpenAI, claude: FakeAnthropic) -> Any:
    """The last request the target's upstream received (its JSON body)."""
    fake = claude if target == CLAUDE else oai
    return fake.requests[-1]


def comparable(value: Any) -> Any:
    """A response's output or usage without what differs between two answers (ids, the stream helper's parsed fields)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in ("id", "call_id", "parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


# -- plain text, stream -------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
async def test_text_answer_and_stream_agree(target: str, gw: RunningGateway, oai: FakeOpenAI, claude: FakeAnthropic) -> None:
    plain = await gw.client.responses.create(
        model=target, input="Hello there, how are you?", instructions="Answer briefly", max_output_tokens=200,
        temperature=0.5, metadata={"team": "search"},
    )
    assert plain.status == "completed" and plain.output_text == "Fake reply to: Hello there, how are you?"
    assert plain.output[0].type == "message" and plain.output[0].role == "assistant"
    assert plain.instructions == "Answer briefly" and plain.temperature == 0.5
    assert plain.usage is not None and plain.usage.output_tokens > 0
    assert plain.usage.total_tokens == plain.usage.input_tokens + plain.usage.output_tokens
    decision = gw.log.last
    assert decision.protocol == "responses" and decision.status == 200
    assert decision.usage is not None and decision.usage.completion_tokens == plain.usage.output_tokens

    sent = upstream(target, oai, claude)
    if target == NATIVE:
        assert plain.id.startswith("resp_fake")  # the upstream's own id, passed through
        assert sent.path == "/v1/responses"
        assert sent.json["input"] == "Hello there, how are you?" and sent.json["instructions"] == "Answer briefly"
        assert sent.json["max_output_tokens"] == 200 and sent.json["metadata"] == {"team": "search"}
    else:
        assert plain.id.startswith("resp_")and not plain.id.startswith("resp_fake")
        if target == CHAT_ONLY:
            assert sent.path == "/v1/chat/completions"
            assert sent.json["messages"][0] == {"role": "system", "content": "Answer briefly"}
            assert sent.json["max_completion_tokens"] == 200
        else:
            assert sent.json["system"] in ("Answer briefly", [{"type": "text", "text": "Answer briefly"}])
            assert sent.json["max_tokens"] == 200

    async with gw.client.responses.stream(
        model=target, input="Hello there, how are you?", instructions="Answer briefly", max_output_tokens=200,
        temperature=0.5, metadata={"team": "search"},
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert comparable(final.output) == comparable(plain.output)
    assert final.usage == plain.usage and final.status == "completed"
    assert gw.log.last.protocol == "responses" and gw.log.last.stream


# -- tools --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
async def test_function_call_round_trip(target: str, gw: RunningGateway, oai: FakeOpenAI, claude: FakeAnthropic) -> None:
    first = await gw.client.responses.create(model=target, input="Weather in Paris?", tools=[WEATHER], tool_choice="auto")
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "text"}
    call = calls[0]

    async with gw.client.responses.stream(model=target, input="Weather in Paris?", tools=[WEATHER]) as stream:
        kinds = [event.type async for event in stream]
        streamed = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert comparable(streamed.output) == comparable(first.output)

    second = await gw.client.responses.create(
        model=target, tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
    )
    assert second.output_text == "Tool result: sunny, 21C"
    sent = upstream(target, oai, claude).json
    if target == CHAT_ONLY:
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}
        assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tools"][0]["function"]["strict"] is True
    elif target == CLAUDE:
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == call.call_id
    else:
        assert sent["input"][-1] == {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}


@pytest.mark.parametrize("target", TARGETS)
async def test_json_schema_output(target: str, gw: RunningGateway, oai: FakeOpenAI, claude: FakeAnthropic) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    result = await gw.client.responses.create(
        model=target, input="Which city?",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert json.loads(result.output_text) == {"city": "text"}
    assert result.text is not None and result.text.format.type == "json_schema"
    if target == CHAT_ONLY:
        fmt = upstream(target, oai, claude).json["response_format"]
        assert fmt == {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}


# -- reasoning ----------------------------------------------------------------------------------


async def test_reasoning_becomes_a_reasoning_item(gw: RunningGateway, claude: FakeAnthropic) -> None:
    claude.thinking = "The user greets me, so I greet back."
    plain = await gw.client.responses.create(model=CLAUDE, input="Hello", reasoning={"effort": "low"})
    reasoning, message = plain.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "The user greets me, so I greet back."
    assert message.type == "message" and plain.output_text == "Fake reply to: Hello"
    assert plain.usage is not None and plain.usage.output_tokens_details.reasoning_tokens >= 0

    async with gw.client.responses.stream(model=CLAUDE, input="Hello", reasoning={"effort": "low"}) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.reasoning_text.delta" in kinds and "response.reasoning_text.done" in kinds
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert comparable(final.output) == comparable(plain.output)

    # the next turn replays the answer, not the reasoning (a translated target gets no foreign reasoning)
    await gw.client.responses.create(model=CLAUDE, input="And now?", previous_response_id=plain.id)
    replayed = claude.requests[-1].json["messages"]
    assert [m["role"] for m in replayed] == ["user", "assistant", "user"]
    assert "thinking" not in json.dumps(replayed[1])


# -- stored responses and previous_response_id ----------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
async def test_previous_response_id_chains_turns(
    target: str, gw: RunningGateway, oai: FakeOpenAI, claude: FakeAnthropic
) -> None:
    first = await gw.client.responses.create(model=target, input="My name is Ada.")
    stored = store_of(gw).responses[first.id]
    assert stored.input == [{"type": "message", "role": "user", "content": "My name is Ada."}]
    assert stored.response["output"][0]["content"][0]["text"] == first.output_text and stored.model == target

    async with gw.client.responses.stream(model=target, input="What is my name?", previous_response_id=first.id) as stream:
        second = await stream.get_final_response()
    assert second.output_text == "Fake reply to: What is my name?"
    # the client sees its own chain whichever way the turn went (a native upstream echoes null/false)
    assert second.previous_response_id == first.id and second.store is True
    sent = upstream(target, oai, claude).json
    if target == NATIVE:
        assert "previous_response_id" not in sent and sent["store"] is False
        assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]
        assert sent["input"][1]["content"][0]["text"] == first.output_text
    else:
        messages = sent["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert "My name is Ada." in json.dumps(messages[0]) and first.output_text in json.dumps(messages[1])
    # the chain goes on from the streamed turn, which was stored when its stream completed
    assert len(store_of(gw).responses[second.id].input) == 3
    third = await gw.client.responses.create(model=target, input="Bye", previous_response_id=second.id, store=False)
    assert third.output_text == "Fake reply to: Bye" and third.id not in store_of(gw).responses
    assert third.previous_response_id == second.id and third.store is False
    sent = upstream(target, oai, claude).json
    history = sent["input"] if target == NATIVE else sent["messages"]
    assert len(history) == 5


async def test_previous_response_is_scoped_and_must_exist(oai: FakeOpenAI, claude: FakeAnthropic, make_gateway: GatewayFactory) -> None:
    keys = """
[[keys]]
key = "key-alpha-0123456789"
name = "a"
team = "alpha"

[[keys]]
key = "key-beta-0123456789"
name = "b"
team = "beta"
"""
    gw = await make_gateway(config(oai, claude, keys), response_store=MemoryResponseStore())
    alpha = gw.client.with_options(api_key="key-alpha-0123456789")
    beta = gw.client.with_options(api_key="key-beta-0123456789")
    first = await alpha.responses.create(model=CLAUDE, input="hi")
    with pytest.raises(openai.NotFoundError) as info:
        await beta.responses.create(model=CLAUDE, input="again", previous_response_id=first.id)
    assert info.value.code == "previous_response_not_found" and info.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        await alpha.responses.create(model=CLAUDE, input="again", previous_response_id="resp_unknown")
    assert (await alpha.responses.create(model=CLAUDE, input="again", previous_response_id=first.id)).status == "completed"


async def test_previous_response_id_without_a_store_is_refused(oai: FakeOpenAI, claude: FakeAnthropic, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(config(oai, claude, "[responses]\nstore = false"))
    assert gw.gateway.response_store is None
    plain = await gw.client.responses.create(model=CLAUDE, input="hi")  # answering works without a store
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.responses.create(model=CLAUDE, input="again", previous_response_id=plain.id)
    assert info.value.code == "response_storage_disabled" and "store = false" in info.value.message


# -- errors ----------------------------------------------------------------------------------------


async def test_bad_requests_get_openai_errors(gw: RunningGateway, oai: FakeOpenAI, claude: FakeAnthropic) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.base_url}/responses", data=b"{not json", headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
            body = await resp.json()
    assert body["error"]["code"] == "invalid_json" and body["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.responses.create(model=CLAUDE, input=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item]
    assert info.value.param == "input[0].role"
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.responses.create(model=CLAUDE, input="hi", max_output_tokens=0)
    assert info.value.param == "max_output_tokens"
    with pytest.raises(openai.NotFoundError):
        await gw.client.responses.create(model="nobody/knows-this-model", input="hi")


async def test_hosted_tools_only_reach_native_targets(gw: RunningGateway, oai: FakeOpenAI, claude: FakeAnthropic) -> None:
    seen = len(claude.requests)
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.responses.create(model=CLAUDE, input="News?", tools=[{"type": "web_search"}])
    assert info.value.code == "unsupported_tool" and "web_search" in info.value.message
    assert len(claude.requests) == seen  # refused before any upstream call
    assert gw.log.last.status == 400 and gw.log.last.protocol == "responses"
    result = await gw.client.responses.create(model=NATIVE, input="News?", tools=[{"type": "web_search"}])
    assert result.status == "completed" and oai.requests[-1].json["tools"] == [{"type": "web_search"}]


async def test_dropped_parameters_are_named_for_translated_targets(gw: RunningGateway) -> None:
    kwargs: Any = {"input": "hi", "include": ["reasoning.encrypted_content"], "truncation": "auto", "top_logprobs": 2}
    raw = await gw.client.responses.with_raw_response.create(model=CLAUDE, **kwargs)
    assert raw.headers["x-interlock-dropped"] == "include, truncation, top_logprobs"
    raw = await gw.client.responses.with_raw_response.create(model=NATIVE, **kwargs)
    assert "x-interlock-dropped" not in raw.headers


# -- fallback and failures ------------------------------------------------------------------------


async def test_fallback_from_native_to_translated(oai: FakeOpenAI, claude: FakeAnthropic, make_gateway: GatewayFactory) -> None:
    route = f'\n[routes.smart]\nchain = "{NATIVE} > {CLAUDE}"\n'
    gw = await make_gateway(config(oai, claude, route), response_store=MemoryResponseStore())
    oai.add_fault(Fault(status=503, path="/responses", times=2))
    plain = await gw.client.responses.create(model="smart", input="Hello")
    assert plain.output_text == "Fake reply to: Hello" and plain.model == "claude-sonnet-4-6"
    assert gw.log.last.fallback_used and gw.log.last.provider == "anthropic"
    async with gw.client.responses.stream(model="smart", input="Hello") as stream:
        final = await stream.get_final_response()
    assert comparable(final.output) == comparable(plain.output)
    assert gw.log.last.fallback_used and gw.log.last.protocol == "responses"
    # and the other way round: nothing wrong upstream, the native target answers in its own words
    assert (await gw.client.responses.create(model="smart", input="Hello")).id.startswith("resp_fake")


@pytest.mark.parametrize("target", [NATIVE, CHAT_ONLY])
async def test_mid_stream_failure_ends_with_response_failed(target: str, gw: RunningGateway, oai: FakeOpenAI) -> None:
    if target == NATIVE:
        oai.add_fault(Fault(error_event_at=2, path="/responses"))
    else:
        oai.add_fault(Fault(cut_after=2, path="/chat/completions"))
    async with gw.client.responses.stream(model=target, input="Hello there, how are you today?") as stream:
        events = [event async for event in stream]
        with pytest.raises(RuntimeError, match="response.completed"):
            await stream.get_final_response()
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed" and failed.response.error is not None
    assert failed.response.error.code == "server_error" and "stream failed" in failed.response.error.message
    assert failed.response.id == events[0].response.id  # the same response the stream began
    assert failed.sequence_number > events[-2].sequence_number
    assert gw.log.last.status == 502
    if target == CHAT_ONLY:  # the text that made it is in the failed response, its message marked incomplete
        sent = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        message = failed.response.output[0]
        assert message.type == "message" and message.status == "incomplete"
        assert sent and message.content[0].text == sent  # type: ignore[union-attr]


@pytest.mark.parametrize("target", [CHAT_ONLY, CLAUDE])
async def test_output_limit_makes_an_incomplete_response(target: str, gw: RunningGateway) -> None:
    prompt = " ".join(["a"] * 40)  # the fake's reply is longer than the limit
    plain = await gw.client.responses.create(model=target, input=prompt, max_output_tokens=5)
    assert plain.status == "incomplete" and plain.incomplete_details is not None
    assert plain.incomplete_details.reason == "max_output_tokens"
    assert plain.output[0].type == "message" and plain.output[0].status == "incomplete"
    async with gw.client.responses.stream(model=target, input=prompt, max_output_tokens=5) as stream:
        events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.status == "incomplete"
    assert comparable(last.response.output) == comparable(plain.output)
    assert last.response.usage == plain.usage
