"""FakeOllama is only useful if the official SDK accepts it, so these tests drive it with ``ollama``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import ollama
import pytest

from interlock.testing import FakeOllama, Fault
from interlock.testing.fake_ollama import CONTEXT_LENGTH_ERROR, STREAM_ERROR

MODELS = ["llama3.2", "qwen3:8b", "all-minilm"]
HELLO: list[Any] = [{"role": "user", "content": "Hello there, how are you today?"}]
WEATHER: Any = {
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
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama(models=MODELS) as server:
        yield server


@pytest.fixture
async def client(fake: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ollama.AsyncClient]:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)  # the SDK would send it as a Bearer token
    async with ollama.AsyncClient(host=fake.url) as sdk:
        yield sdk


async def _collect(stream: AsyncIterator[ollama.ChatResponse]) -> list[ollama.ChatResponse]:
    return [part async for part in stream]


# -- happy paths ---------------------------------------------------------------------------------


async def test_list_models(client: ollama.AsyncClient) -> None:
    listing = await client.list()
    assert [m.model for m in listing.models] == ["llama3.2:latest", "qwen3:8b", "all-minilm:latest"]
    first = listing.models[0]
    assert isinstance(first.modified_at, datetime)
    assert first.details is not None and first.details.format == "gguf"


async def test_chat_non_stream(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    result = await client.chat(model="llama3.2", messages=HELLO, options={"temperature": 0.2, "seed": 3})
    assert result.message.role == "assistant"
    assert result.message.content == "Fake reply to: Hello there, how are you today?"
    assert result.done is True and result.done_reason == "stop"
    assert result.eval_count == 9 and result.prompt_eval_count is not None and result.prompt_eval_count > 0
    assert result.created_at is not None
    assert datetime.fromisoformat(result.created_at.replace("Z", "+00:00")).year >= 2024
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/api/chat")
    assert sent.json["stream"] is False and sent.json["options"] == {"temperature": 0.2, "seed": 3}


async def test_model_with_and_without_latest_tag(client: ollama.AsyncClient) -> None:
    tagged = await client.chat(model="llama3.2:latest", messages=HELLO)
    assert tagged.message.content and tagged.message.content.startswith("Fake reply to:")
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="qwen3", messages=HELLO)  # only qwen3:8b is pulled
    assert info.value.status_code == 404
    assert info.value.error == 'model "qwen3" not found, try pulling it first'


async def test_stream_matches_non_stream(client: ollama.AsyncClient) -> None:
    plain = await client.chat(model="llama3.2", messages=HELLO)
    parts = await _collect(await client.chat(model="llama3.2", messages=HELLO, stream=True))
    assert [p.done for p in parts] == [False] * 5 + [True]
    assert "".join(p.message.content or "" for p in parts) == plain.message.content
    final = parts[-1]
    assert final.done_reason == "stop" and final.message.content == ""
    assert (final.prompt_eval_count, final.eval_count) == (plain.prompt_eval_count, plain.eval_count)
    assert all(p.done_reason is None and p.eval_count is None for p in parts[:-1])


async def test_streams_by_default_as_ndjson(fake: FakeOllama) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.url}/api/chat", json={"model": "llama3.2", "messages": HELLO}) as resp:
            assert resp.headers["Content-Type"].startswith("application/x-ndjson")
            raw = await resp.text()
    assert raw.endswith("\n")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["done"] for line in lines] == [False] * 5 + [True]
    assert lines[-1]["done_reason"] == "stop" and "eval_count" in lines[-1]


async def test_tool_call_and_tool_result(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    ask = [{"role": "user", "content": "weather in Paris?"}]
    first = await client.chat(model="llama3.2", messages=ask, tools=[WEATHER])
    calls = first.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert dict(calls[0].function.arguments) == {"city": "text", "days": 1}
    assert first.done_reason == "stop"  # Ollama reports stop after a tool call
    assert first.message.content == ""
    recorded_call = fake.requests[-1]
    assert recorded_call.json["tools"][0]["function"]["name"] == "get_weather"

    history: list[Any] = [
        *ask,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny and 21C", "tool_name": "get_weather"},
    ]
    second = await client.chat(model="llama3.2", messages=history, tools=[WEATHER])
    assert second.message.content == "Tool result: sunny and 21C" and not second.message.tool_calls


async def test_streamed_tool_call_arrives_whole(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    parts = await _collect(
        await client.chat(
            model="llama3.2", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], stream=True
        )
    )
    with_calls = [p for p in parts if p.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done
    assert dict(with_calls[0].message.tool_calls[0].function.arguments) == {"city": "text", "days": 1}  # type: ignore[index]
    assert parts[-1].done and parts[-1].done_reason == "stop"


async def test_tool_call_ids_present_or_omitted() -> None:
    for with_ids in (True, False):
        async with (
            FakeOllama(models=["llama3.2"], tool_call_ids=with_ids) as fake,
            aiohttp.ClientSession() as http,
        ):
            body = {"model": "llama3.2", "messages": HELLO, "tools": [WEATHER], "stream": False}
            async with http.post(f"{fake.url}/api/chat", json=body) as resp:
                call = (await resp.json())["message"]["tool_calls"][0]
        assert call["function"]["index"] == 0
        assert ("id" in call) is with_ids
        if with_ids:
            assert call["id"].startswith("call_") and len(call["id"]) == 13


async def test_image_input(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    result = await client.chat(
        model="llama3.2", messages=[{"role": "user", "content": "what is this?", "images": [PNG]}]
    )
    assert result.message.content == "Fake reply to: what is this? (1 image)"
    sent_image = fake.requests[-1].json["messages"][0]["images"][0]
    assert not sent_image.startswith("data:")  # the SDK sends bare base64, as Ollama expects


async def test_json_format_and_schema(client: ollama.AsyncClient) -> None:
    plain = await client.chat(
        model="llama3.2", messages=[{"role": "user", "content": "in JSON"}], format="json"
    )
    assert json.loads(plain.message.content or "") == {"reply": "Fake reply to: in JSON"}
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "ok": {"type": "boolean"}}}
    shaped = await client.chat(model="llama3.2", messages=HELLO, format=schema)
    assert json.loads(shaped.message.content or "") == {"age": 1, "ok": True}


async def test_num_predict_ends_with_length(client: ollama.AsyncClient) -> None:
    result = await client.chat(model="llama3.2", messages=HELLO, options={"num_predict": 2})
    assert result.message.content == "Fake reply"
    assert result.done_reason == "length" and result.eval_count == 2


async def test_think_adds_thinking(client: ollama.AsyncClient) -> None:
    result = await client.chat(model="qwen3:8b", messages=HELLO, think=True)
    assert result.message.thinking == "Thinking about: Hello there, how are you today?"
    assert result.message.content == "Fake reply to: Hello there, how are you today?"
    assert result.eval_count == 9 + 8  # Ollama's eval_count covers the thinking too
    parts = await _collect(await client.chat(model="qwen3:8b", messages=HELLO, think="high", stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == result.message.thinking
    no_think = await client.chat(model="qwen3:8b", messages=HELLO, think=False)
    assert no_think.message.thinking is None


async def test_embed(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    one = await client.embed(model="all-minilm", input="alpha")
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 8
    many = await client.embed(model="all-minilm", input=["alpha", "beta gamma"], dimensions=4)
    assert [len(v) for v in many.embeddings] == [4, 4] and many.embeddings[0] != many.embeddings[1]
    assert many.prompt_eval_count == 3
    assert fake.requests[-1].json == {
        "model": "all-minilm",
        "input": ["alpha", "beta gamma"],
        "dimensions": 4,
    }


async def test_embed_context_length_error_without_truncation(client: ollama.AsyncClient) -> None:
    long_text = "word " * 600
    fits = await client.embed(model="all-minilm", input=long_text)  # Ollama truncates by default
    assert fits.prompt_eval_count == 512
    with pytest.raises(ollama.ResponseError) as info:
        await client.embed(model="all-minilm", input=long_text, truncate=False)
    assert info.value.status_code == 400 and info.value.error == CONTEXT_LENGTH_ERROR


async def test_unknown_route_answers_in_ollama_shape(fake: FakeOllama) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{fake.url}/api/nope", json={}) as resp:
        assert resp.status == 404
        assert "error" in await resp.json()


# -- auth and faults ------------------------------------------------------------------------------


async def test_cloud_bearer_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    async with FakeOllama(models=["llama3.2"], api_key="ok-key") as fake:
        async with ollama.AsyncClient(host=fake.url) as anonymous:
            with pytest.raises(ollama.ResponseError) as info:
                await anonymous.chat(model="llama3.2", messages=HELLO)
            assert (info.value.status_code, info.value.error) == (401, "unauthorized")
        async with ollama.AsyncClient(host=fake.url, headers={"Authorization": "Bearer ok-key"}) as keyed:
            assert (await keyed.chat(model="llama3.2", messages=HELLO)).done


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "invalid request"),
        (429, "too many requests, please try again later"),
        (500, "the model failed to generate a response"),
        (502, "bad gateway: the cloud model could not be reached"),
        (503, "server busy, please try again.  maximum pending requests exceeded"),
    ],
)
async def test_status_faults(fake: FakeOllama, client: ollama.AsyncClient, status: int, message: str) -> None:
    fake.add_fault(Fault(status=status, retry_after=2 if status == 429 else None))
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="llama3.2", messages=HELLO)
    assert (info.value.status_code, info.value.error) == (status, message)
    if status == 429:
        assert fake.requests[-1].path == "/api/chat"


async def test_retry_after_header_and_custom_body(fake: FakeOllama) -> None:
    fake.add_fault(Fault(status=429, retry_after=3))
    fake.add_fault(Fault(status=400, body={"error": CONTEXT_LENGTH_ERROR}))
    async with aiohttp.ClientSession() as http:
        body = {"model": "llama3.2", "messages": HELLO, "stream": False}
        async with http.post(f"{fake.url}/api/chat", json=body) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "3"
        async with http.post(f"{fake.url}/api/chat", json=body) as resp:
            assert resp.status == 400 and await resp.json() == {"error": CONTEXT_LENGTH_ERROR}


async def test_status_fault_on_stream(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    fake.add_fault(Fault(status=503))
    with pytest.raises(ollama.ResponseError) as info:
        await _collect(await client.chat(model="llama3.2", messages=HELLO, stream=True))
    assert info.value.status_code == 503


async def test_cut_stream_raises(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    fake.add_fault(Fault(cut_after=2))
    seen: list[str] = []
    with pytest.raises(httpx.HTTPError):
        async for part in await client.chat(model="llama3.2", messages=HELLO, stream=True):
            seen.append(part.message.content or "")
    assert len(seen) == 2  # the two lines before the cut arrived


async def test_malformed_line_raises(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    fake.add_fault(Fault(malformed_at=1))
    with pytest.raises(json.JSONDecodeError):
        await _collect(await client.chat(model="llama3.2", messages=HELLO, stream=True))


async def test_in_band_error_line_raises(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    fake.add_fault(Fault(error_event_at=1))
    seen: list[str] = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in await client.chat(model="llama3.2", messages=HELLO, stream=True):
            seen.append(part.message.content or "")
    assert info.value.error == STREAM_ERROR and len(seen) == 1


async def test_ttft_stall_trips_a_client_read_timeout(fake: FakeOllama) -> None:
    fake.add_fault(Fault(ttft=5))
    async with ollama.AsyncClient(host=fake.url, timeout=httpx.Timeout(5.0, read=0.2)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await _collect(await impatient.chat(model="llama3.2", messages=HELLO, stream=True))


async def test_latency_applies_before_the_answer(fake: FakeOllama) -> None:
    fake.add_fault(Fault(latency=5))
    async with ollama.AsyncClient(host=fake.url, timeout=0.2) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.chat(model="llama3.2", messages=HELLO)


async def test_rejects_what_ollama_rejects(fake: FakeOllama) -> None:
    bad_messages: list[Any] = [
        [{"role": "user", "content": "hi", "images": ["data:image/png;base64,AAAA"]}],
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
            }
        ],
    ]
    async with aiohttp.ClientSession() as http:
        for messages in bad_messages:
            body = {"model": "llama3.2", "messages": messages, "stream": False}
            async with http.post(f"{fake.url}/api/chat", json=body) as resp:
                assert resp.status == 400, messages
                assert isinstance((await resp.json())["error"], str)


async def test_usage_knob_reaches_the_sdk_plain_and_streamed(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    fake.usage = {"prompt_eval_count": 4096, "eval_count": 512}
    plain = await client.chat(model="llama3.2", messages=HELLO, stream=False)
    last = [part async for part in await client.chat(model="llama3.2", messages=HELLO, stream=True)][-1]
    for answer in (plain, last):
        assert answer.done and (answer.prompt_eval_count, answer.eval_count) == (4096, 512)
        assert answer.eval_duration == 900_000_000  # the fake's other counters are kept
