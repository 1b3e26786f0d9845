"""FakeOpenAI is only useful if the official SDK accepts it, so these tests drive it with `openai`."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pydantic
import pytest
import pytest_asyncio

from interlock.testing import FakeOpenAI, Fault

MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
HELLO: list[Any] = [{"role": "user", "content": "Hello there, how are you today?"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit", "days"],
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


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=MODELS) as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0) as sdk:
        yield sdk


async def _stream_text(client: openai.AsyncOpenAI, **kwargs: Any) -> str:
    stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True, **kwargs)
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


# -- happy paths ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_models_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == MODELS
    assert all(m.owned_by == "fake" and isinstance(m.created, int) for m in page.data)
    assert (await client.models.retrieve("gpt-4o-mini")).id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("nope")
    assert info.value.code == "model_not_found"


@pytest.mark.asyncio
async def test_chat_non_stream_and_request_recording(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        temperature=0.3,
        seed=7,
        stop=["\n"],
        extra_body={"x_custom": {"a": 1}},
    )
    assert result.id.startswith("chatcmpl-fake-")
    assert result.model == "gpt-4o" and result.system_fingerprint == "fp_fake"
    choice = result.choices[0]
    assert choice.message.content == "Fake reply to: Hello there, how are you today?"
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    usage = result.usage
    assert usage is not None and usage.prompt_tokens >= 1
    assert usage.completion_tokens == 9 and usage.total_tokens == usage.prompt_tokens + 9
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert (
        usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 0
    )

    recorded = fake.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer x"
    assert recorded.json["x_custom"] == {"a": 1} and recorded.json["temperature"] == 0.3
    assert recorded.json["seed"] == 7 and recorded.json["stop"] == ["\n"]


@pytest.mark.asyncio
async def test_stream_with_usage_matches_non_stream(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])

    # The SDK's accumulating helper must also be able to rebuild the completion.
    async with client.chat.completions.stream(model="gpt-4o", messages=HELLO) as helper:
        final = await helper.get_final_completion()
    assert final.choices[0].message.content == plain.choices[0].message.content


@pytest.mark.asyncio
async def test_raw_stream_wire_format(fake: FakeOpenAI) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
        async with http.post(f"{fake.base_url}/chat/completions", json=body) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = await resp.text()
    assert raw.endswith("data: [DONE]\n\n")
    events = [json.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: {")]
    assert all("usage" not in event for event in events)  # no include_usage: no usage key at all
    assert all(event["object"] == "chat.completion.chunk" for event in events)


@pytest.mark.asyncio
async def test_image_parts_are_counted(client: openai.AsyncOpenAI) -> None:
    content: list[Any] = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    result = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": content}]
    )
    assert result.choices[0].message.content == "Fake reply to: What is this? (1 image)"


@pytest.mark.asyncio
async def test_tool_call_round_trip(client: openai.AsyncOpenAI) -> None:
    first = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, tools=[WEATHER_TOOL, TIME_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1 and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "text", "unit": "celsius", "days": 1}  # type: ignore[union-attr]

    follow_up: list[Any] = [
        *HELLO,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny, 21 degrees"},
    ]
    second = await client.chat.completions.create(model="gpt-4o", messages=follow_up, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "Tool result: Sunny, 21 degrees"
    assert second.choices[0].finish_reason == "stop"

    named = await client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"  # type: ignore[index,union-attr]
    none = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


@pytest.mark.asyncio
async def test_tool_call_stream(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="gpt-4o", messages=HELLO, tools=[WEATHER_TOOL])
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, tools=[WEATHER_TOOL], stream=True
    )
    fragments = [
        c.choices[0].delta.tool_calls async for c in stream if c.choices and c.choices[0].delta.tool_calls
    ]
    head = fragments[0][0]
    assert head.index == 0 and head.id and head.type == "function"
    assert head.function is not None and head.function.name == "get_weather" and head.function.arguments == ""
    arguments = "".join(f[0].function.arguments or "" for f in fragments if f[0].function)
    assert arguments == plain.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]

    async with client.chat.completions.stream(model="gpt-4o", messages=HELLO, tools=[WEATHER_TOOL]) as helper:
        final = await helper.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments)["city"] == "text"  # type: ignore[index,union-attr]


class Person(pydantic.BaseModel):
    name: str
    age: int
    score: float
    active: bool
    tags: list[str]


@pytest.mark.asyncio
async def test_json_modes(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, response_format={"type": "json_object"}
    )
    assert json.loads(result.choices[0].message.content or "") == {
        "reply": "Fake reply to: Hello there, how are you today?"
    }

    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "ok": {"type": "boolean"},
            "items": {"type": "array", "items": {"type": "string"}},
            "nested": {"type": "object", "properties": {"inner": {"type": ["string", "null"]}}},
        },
        "required": ["title", "count", "ratio", "ok", "items", "nested"],
    }
    result = await client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": True},
        },
    )
    assert json.loads(result.choices[0].message.content or "") == {
        "title": "text",
        "count": 1,
        "ratio": 1,
        "ok": True,
        "items": [],
        "nested": {"inner": "text"},
    }
    streamed = await _stream_text(client, response_format={"type": "json_object"})
    assert json.loads(streamed)["reply"].startswith("Fake reply")

    # The SDK's own structured-output parsing validates against a pydantic model.
    parsed = await client.chat.completions.parse(model="gpt-4o", messages=HELLO, response_format=Person)
    assert parsed.choices[0].message.parsed == Person(name="text", age=1, score=1.0, active=True, tags=[])


@pytest.mark.asyncio
async def test_n_choices_and_max_tokens(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(model="gpt-4o", messages=HELLO, n=2)
    assert [c.index for c in result.choices] == [0, 1]
    assert result.choices[0].message.content == result.choices[1].message.content

    stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, n=2, stream=True)
    texts = ["", ""]
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [result.choices[0].message.content] * 2

    short = await client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=3)
    assert short.choices[0].message.content == "Fake reply to:"
    assert short.choices[0].finish_reason == "length" and short.usage and short.usage.completion_tokens == 3
    assert await _stream_text(client, max_completion_tokens=3) == "Fake reply to:"


@pytest.mark.asyncio
async def test_embeddings_float_and_base64(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    as_float = await client.embeddings.create(
        model="text-embedding-3-small", input=["a b", "c"], encoding_format="float"
    )
    assert [e.index for e in as_float.data] == [0, 1]
    vector = as_float.data[0].embedding
    assert len(vector) == 8 and math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert as_float.data[0].embedding != as_float.data[1].embedding
    assert as_float.usage.prompt_tokens == 3 and as_float.usage.total_tokens == 3

    # The SDK asks for base64 by default and decodes it; the values must be identical.
    decoded = await client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert fake.requests[-1].json["encoding_format"] == "base64"
    assert [e.embedding for e in decoded.data] == [e.embedding for e in as_float.data]

    wide = await client.embeddings.create(model="text-embedding-3-small", input="a b", dimensions=16)
    assert len(wide.data[0].embedding) == 16
    tokens = await client.embeddings.create(model="text-embedding-3-small", input=[1, 2, 3])
    assert len(tokens.data) == 1 and tokens.usage.prompt_tokens == 3
    batches = await client.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3]])
    assert len(batches.data) == 2
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="nope", input="x")


@pytest.mark.asyncio
async def test_request_validation(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await client.chat.completions.create(model="gpt-5-nope", messages=HELLO)
    assert (
        not_found.value.code == "model_not_found" and "`gpt-5-nope` does not exist" in not_found.value.message
    )

    url = f"{fake.base_url}/chat/completions"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{oops", headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request_error"
        for body, param in (({"messages": HELLO}, "model"), ({"model": "gpt-4o"}, "messages")):
            async with http.post(url, json=body) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["param"] == param
        async with http.get(f"{fake.base_url}/nowhere") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_url"


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_faults(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(status=429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.response.headers["retry-after-ms"] == "2000"
    assert limited.value.code == "rate_limit_exceeded" and limited.value.type == "rate_limit_error"

    fake.add_fault(Fault(status=500, retry_after=1.5, headers={"x-extra": "yes"}))
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert failed.value.status_code == 500 and failed.value.type == "server_error"
    assert failed.value.response.headers["retry-after"] == "1.5"
    assert failed.value.response.headers["x-extra"] == "yes"

    fake.add_fault(Fault(status=503))
    with pytest.raises(openai.InternalServerError) as overloaded:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert overloaded.value.code == "overloaded"

    fake.add_fault(Fault(status=502, body="<html>bad gateway</html>"))
    with pytest.raises(openai.InternalServerError) as html:
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert html.value.response.text == "<html>bad gateway</html>"

    # Every fault had times=1, so the next request is healthy again.
    assert fake.faults == []
    assert (await client.chat.completions.create(model="gpt-4o", messages=HELLO)).choices


@pytest.mark.asyncio
async def test_cut_after_breaks_the_stream(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(cut_after=2))
    stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["", "Fake reply ", "to: Hello "]  # role chunk, then exactly two content chunks


@pytest.mark.asyncio
async def test_malformed_chunk_raises(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(malformed_at=1))
    stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    received = 0
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's SSE decoder
        async for _ in stream:
            received += 1
    assert received == 2


@pytest.mark.asyncio
async def test_error_event_raises_api_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(error_event_at=2))
    stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert not isinstance(info.value, openai.APIConnectionError)
    assert info.value.code == "internal_error" and info.value.type == "server_error"


@pytest.mark.asyncio
async def test_latency_and_ttft_still_succeed(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(latency=0.05, times=2))
    fake.add_fault(Fault(ttft=0.05))
    assert (await client.chat.completions.create(model="gpt-4o", messages=HELLO)).choices[0].message.content
    assert (await _stream_text(client)).startswith("Fake reply to:")
    assert (await _stream_text(client)).startswith("Fake reply to:")  # consumes the ttft fault
    assert fake.faults == []


@pytest.mark.asyncio
async def test_fault_matching_by_model_path_and_times(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.add_fault(Fault(status=500, model="gpt-4o-mini", times=2))
    await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    fake.add_fault(Fault(status=400, path="/embeddings", times=None))
    await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="text-embedding-3-small", input="x")
    fake.clear_faults()
    await client.embeddings.create(model="text-embedding-3-small", input="x")


@pytest.mark.asyncio
async def test_failure_rate() -> None:
    async with (
        FakeOpenAI(failure_rate=1.0) as fake,
        openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)
        assert info.value.status_code == 503
        await client.models.list()  # only chat requests are subject to failure_rate

    async def pattern(seed: int) -> list[bool]:
        async with (
            FakeOpenAI(failure_rate=0.5, seed=seed) as fake,
            openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0) as client,
        ):
            outcomes = []
            for _ in range(12):
                try:
                    await client.chat.completions.create(model="gpt-4o", messages=HELLO)
                    outcomes.append(True)
                except openai.InternalServerError:
                    outcomes.append(False)
            return outcomes

    first = await pattern(3)
    assert first == await pattern(3) and True in first and False in first


@pytest.mark.asyncio
async def test_http_control_endpoint(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    control = f"http://127.0.0.1:{fake.port}/_fake"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{control}/faults", json={"status": 429, "retry_after": 1, "times": 1}) as resp:
            assert resp.status == 201
        async with http.post(f"{control}/faults", json={"status": 429, "bogus": 1}) as resp:
            assert resp.status == 400
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)

        async with http.post(f"{control}/faults", json={"status": 500, "times": None}) as resp:
            assert resp.status == 201
        async with http.delete(f"{control}/faults") as resp:
            assert resp.status == 200
        await client.chat.completions.create(model="gpt-4o", messages=HELLO)

        async with http.get(f"{control}/requests") as resp:
            recorded = await resp.json()
    assert [r["path"] for r in recorded] == ["/v1/chat/completions"] * 2  # control calls are not recorded
    assert recorded[0]["json"]["model"] == "gpt-4o" and recorded[0]["method"] == "POST"


@pytest.mark.asyncio
async def test_api_key_enforced() -> None:
    async with FakeOpenAI(api_key="sk-right") as fake:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as info:
                await wrong.models.list()
        assert info.value.code == "invalid_api_key" and info.value.message.endswith(
            "Incorrect API key provided"
        )
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-right", max_retries=0) as right:
            assert (await right.chat.completions.create(model="gpt-4o", messages=HELLO)).choices


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault(status=42)
    with pytest.raises(ValueError):
        Fault(times=0)
    with pytest.raises(ValueError):
        Fault.from_dict({"cut_after": 1, "unknown": True})
    assert Fault.from_dict({"cut_after": 1, "model": "gpt-4o"}) == Fault(cut_after=1, model="gpt-4o")


# -- other ways to run it ------------------------------------------------------------------------


def test_run_in_thread_with_sync_client() -> None:
    with (
        FakeOpenAI(models=MODELS, chunks=3).run_in_thread() as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0) as client,
    ):
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
        plain = client.chat.completions.create(model="gpt-4o", messages=HELLO)
        with client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True) as stream:
            chunks = list(stream)
        assert len(chunks) == 1 + 3 + 1  # role, three content chunks, finish
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content

        fake.add_fault(Fault(status=429))
        with pytest.raises(openai.RateLimitError):
            client.models.list()
        fake.add_fault(Fault(cut_after=1))
        with pytest.raises(openai.APIConnectionError):
            list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
        assert len(fake.requests) == 4


@pytest.mark.asyncio
async def test_app_with_aiohttp_test_client(aiohttp_client: Any) -> None:
    fake = FakeOpenAI(models=["m1"])
    http = await aiohttp_client(fake.app)
    resp = await http.get("/v1/models")
    assert (await resp.json())["data"][0]["id"] == "m1"
    resp = await http.post("/v1/chat/completions", json={"model": "m1", "messages": HELLO})
    assert (await resp.json())["choices"][0]["message"]["content"].startswith("Fake reply to:")


# -- /v1/responses (the Responses API) ----------------------------------------------------------

RESPONSES_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


def _without_ids(output: list[Any]) -> list[Any]:
    """Output items without what differs between two answers (ids) or only the stream helper adds (parsed)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("id", "call_id", "parsed", "parsed_arguments")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(item.model_dump()) for item in output]


@pytest.mark.asyncio
async def test_responses_text_stream_matches_non_stream(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    plain = await client.responses.create(model="gpt-4o", input="Hello there, how are you today?", instructions="Be brief")
    assert plain.id.startswith("resp_fake") and plain.status == "completed" and plain.model == "gpt-4o"
    assert plain.output_text == "Fake reply to: Hello there, how are you today?"
    assert plain.instructions == "Be brief"
    assert plain.usage is not None and plain.usage.output_tokens == 9
    assert plain.usage.total_tokens == plain.usage.input_tokens + 9
    assert fake.requests[-1].path == "/v1/responses"

    async with client.responses.stream(model="gpt-4o", input="Hello there, how are you today?") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [e.type for e in events[:4]] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]
    assert events[-1].type == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert len([e for e in events if e.type == "response.output_text.delta"]) == 5
    assert _without_ids(final.output) == _without_ids(plain.output)
    assert final.usage == plain.usage


@pytest.mark.asyncio
async def test_responses_function_call_round_trip(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[RESPONSES_TOOL])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "text"} and call.call_id.startswith("call_")

    async with client.responses.stream(model="gpt-4o", input="Weather in Paris?", tools=[RESPONSES_TOOL]) as stream:
        streamed = await stream.get_final_response()
    assert _without_ids(streamed.output) == _without_ids(first.output)

    second = await client.responses.create(
        model="gpt-4o", tools=[RESPONSES_TOOL],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
    )
    assert second.output_text == "Tool result: sunny, 21C"


@pytest.mark.asyncio
async def test_responses_json_schema_and_incomplete(client: openai.AsyncOpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    result = await client.responses.create(
        model="gpt-4o", input="Answer in JSON",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
    )
    assert json.loads(result.output_text) == {"answer": "text"}
    long = await client.responses.create(model="gpt-4o", input=" ".join(["a"] * 40), max_output_tokens=16)
    assert long.status == "incomplete" and long.incomplete_details is not None
    assert long.incomplete_details.reason == "max_output_tokens"


@pytest.mark.asyncio
async def test_responses_errors_and_faults(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nope", input="hi")
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_unknown")
    assert info.value.code == "previous_response_not_found"
    fake.add_fault(Fault(status=429, retry_after=2, path="/responses"))
    with pytest.raises(openai.RateLimitError) as limited:
        await client.responses.create(model="gpt-4o", input="hi")
    assert limited.value.response.headers["retry-after"] == "2"

    fake.add_fault(Fault(error_event_at=2, path="/responses"))
    async with client.responses.stream(model="gpt-4o", input="Hello there, how are you today?") as stream:
        events = [event async for event in stream]
        with pytest.raises(RuntimeError):
            await stream.get_final_response()  # the stream never completed
    assert events[-1].type == "error" and events[-1].code == "server_error"
    assert len([e for e in events if e.type == "response.output_text.delta"]) == 2


async def test_usage_knob_reaches_the_sdk_plain_and_streamed(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert plain.usage is not None and plain.usage.prompt_tokens_details is not None
    assert plain.usage.prompt_tokens_details.cached_tokens == 0  # the fake's own usage by default
    fake.usage = {"prompt_tokens": 9000, "total_tokens": 12000, "completion_tokens": 3000,
                  "prompt_tokens_details": {"cached_tokens": 4000},
                  "completion_tokens_details": {"reasoning_tokens": 2000}, "num_search_queries": 1}
    plain = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    chunks = [
        c async for c in await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
    ]
    for usage in (plain.usage, chunks[-1].usage):
        assert usage is not None and usage.prompt_tokens == 9000 and usage.completion_tokens == 3000
        assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 4000
        assert usage.prompt_tokens_details.audio_tokens is None  # merged, not replaced: only what was set
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 2000
        assert usage.model_extra == {"num_search_queries": 1}  # a provider's extra field passes through
