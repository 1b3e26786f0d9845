"""The Cohere provider through a real gateway: the openai SDK in front, FakeCohere behind.

Assertions are on the exact native request the fake received and on the OpenAI answer the
client got, so each translation rule (both ways) and each failure class is pinned down.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp import web

from interlock.core.config import ConfigError
from interlock.core.types import Usage
from interlock.plugins.providers.translation.cohere import usage_of
from interlock.testing import FakeCohere, Fault
from interlock.testing.conformance import PNG
from interlock.testing.fake_cohere import CONTEXT_LENGTH_MESSAGE
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

KEY = "co-secret-key-0123456789abcdef"
MODEL = "co/command-a-03-2025"
HI: list[Any] = [{"role": "user", "content": "hi there"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: Any = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@dataclass
class Env:
    fake: FakeCohere
    gw: RunningGateway

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self.gw.client

    @property
    def sent(self) -> dict[str, Any]:
        """The JSON body of the last request Cohere received."""
        body = self.fake.requests[-1].json
        assert isinstance(body, dict)
        return body

    @property
    def outcome(self) -> str:
        return self.gw.log.last.attempts[0].outcome


@contextlib.asynccontextmanager
async def cohere_env(fake: FakeCohere | None = None, timeout: float = 5, **options: Any) -> AsyncIterator[Env]:
    async with fake or FakeCohere(models=["command-a-03-2025", "embed-v4.0"], api_key=KEY) as server:
        toml = provider_table("co", type="cohere", base_url=server.base_url, api_key=KEY, timeout=timeout, **options)
        async with running_gateway(toml) as gw:
            yield Env(server, gw)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with cohere_env() as e:
        yield e


# -- requests ---------------------------------------------------------------------------------


async def test_request_translation(env: Env) -> None:
    await env.client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer"},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            ]},
        ],
        max_tokens=50, temperature=0.2, top_p=0.9, seed=7, frequency_penalty=0.1, presence_penalty=0.3,
        stop="END", user="u-1", logprobs=False, parallel_tool_calls=True, n=1,
    )
    request = env.fake.requests[-1]
    assert request.path == "/v2/chat"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert env.sent == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be terse.\n\nNo emoji."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            ]},
        ],
        "max_tokens": 50, "temperature": 0.2, "p": 0.9, "seed": 7, "frequency_penalty": 0.1,
        "presence_penalty": 0.3, "stop_sequences": ["END"],
    }


async def test_no_max_tokens_is_sent_unless_asked(env: Env) -> None:
    await env.client.chat.completions.create(model=MODEL, messages=HI)
    assert env.sent == {"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi there"}]}
    await env.client.chat.completions.create(model=MODEL, messages=HI, max_completion_tokens=9)
    assert env.sent["max_tokens"] == 9


@pytest.mark.parametrize(
    ("choice", "tools", "native_choice"),
    [
        (None, [WEATHER, TIME], None),
        ("auto", [WEATHER, TIME], None),
        ("required", [WEATHER, TIME], "REQUIRED"),
        ("none", [WEATHER, TIME], "NONE"),
        ({"type": "function", "function": {"name": "get_time"}}, [TIME], "REQUIRED"),
    ],
)
async def test_tools_and_tool_choice(env: Env, choice: Any, tools: list[Any], native_choice: str | None) -> None:
    kwargs: dict[str, Any] = {} if choice is None else {"tool_choice": choice}
    await env.client.chat.completions.create(model=MODEL, messages=HI, tools=[WEATHER, TIME], **kwargs)
    assert env.sent["tools"] == tools  # OpenAI's shape passes through; a named choice offers only that tool
    assert env.sent.get("tool_choice") == native_choice


async def test_named_tool_choice_forces_that_call(env: Env) -> None:
    done = await env.client.chat.completions.create(
        model=MODEL, messages=HI, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    calls = done.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]


async def test_strict_tools(env: Env) -> None:
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    await env.client.chat.completions.create(model=MODEL, messages=HI, tools=[strict])
    assert env.sent["strict_tools"] is True
    assert "strict" not in env.sent["tools"][0]["function"]


async def test_tool_round_trip(env: Env) -> None:
    first = await env.client.chat.completions.create(model=MODEL, messages=HI, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    message = choice.message
    assert message.content is None
    call = (message.tool_calls or [])[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "text"}
    assert call.id.startswith("get_weather_")
    plan = "I will use the get_weather tool to answer."
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == plan
    assert extra["tool_plan"] == plan
    replay = message.model_dump(exclude_none=True)  # what a client sends back, extras included
    second = await env.client.chat.completions.create(
        model=MODEL, tools=[WEATHER],
        messages=[*HI, replay, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
    )
    assert env.sent["messages"][1:] == [
        {"role": "assistant", "tool_plan": plan,
         "tool_calls": [{"id": call.id, "type": "function",
                         "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    assert second.choices[0].message.content == "Tool result: sunny"
    assert second.choices[0].finish_reason == "stop"


async def test_json_tool_results_become_documents(env: Env) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    await env.client.chat.completions.create(
        model=MODEL, tools=[WEATHER],
        messages=[*HI, {"role": "assistant", "content": None, "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": "c1", "content": '[{"temp": 21}, {"sky": "clear"}]'}],
    )
    assert env.sent["messages"][-1] == {
        "role": "tool", "tool_call_id": "c1",
        "content": [{"type": "document", "document": {"data": {"temp": 21}}},
                    {"type": "document", "document": {"data": {"sky": "clear"}}}],
    }
    assert env.sent["messages"][-2] == {"role": "assistant", "tool_calls": [call]}


async def test_legacy_function_messages(env: Env) -> None:
    await env.client.chat.completions.create(
        model=MODEL,
        messages=[*HI, {"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": ""}},
                  {"role": "function", "name": "get_time", "content": "noon"}],
    )
    assert env.sent["messages"][1:] == [
        {"role": "assistant",
         "tool_calls": [{"id": "get_time", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "get_time", "content": "noon"},
    ]


async def test_json_modes(env: Env) -> None:
    done = await env.client.chat.completions.create(model=MODEL, messages=HI, response_format={"type": "json_object"})
    assert env.sent["response_format"] == {"type": "json_object"}
    assert json.loads(done.choices[0].message.content or "") == {"reply": "Fake reply to: hi there"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    done = await env.client.chat.completions.create(
        model=MODEL, messages=HI, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    assert env.sent["response_format"] == {"type": "json_object", "json_schema": schema}
    assert json.loads(done.choices[0].message.content or "") == {"n": 1}


async def test_cohere_fields_pass_through_and_citations_come_back(env: Env) -> None:
    documents = [{"id": "d1", "data": {"text": "Paris is sunny."}}]
    done = await env.client.chat.completions.create(
        model=MODEL, messages=HI,
        extra_body={"documents": documents, "safety_mode": "STRICT", "citation_options": {"mode": "FAST"}},
    )
    assert env.sent["documents"] == documents
    assert env.sent["safety_mode"] == "STRICT" and env.sent["citation_options"] == {"mode": "FAST"}
    citations = (done.choices[0].message.model_extra or {})["citations"]
    assert citations[0]["text"] == "Fake" and citations[0]["sources"][0]["id"] == "d1"
    stream = await env.client.chat.completions.create(
        model=MODEL, messages=HI, stream=True, extra_body={"documents": documents}
    )
    streamed = [c.choices[0].delta.model_extra.get("citations") async for c in stream if c.choices]
    assert [c for c in streamed if c] == [[citations[0]]]


async def test_unsupported_requests_fail_fast(env: Env) -> None:
    with pytest.raises(openai.BadRequestError):
        await env.client.chat.completions.create(model=MODEL, messages=HI, n=2)
    with pytest.raises(openai.BadRequestError):
        await env.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}],
        )
    assert env.outcome == "bad_request"
    assert not env.fake.requests


# -- responses ---------------------------------------------------------------------------------


async def test_response_translation(env: Env) -> None:
    raw = await env.client.chat.completions.with_raw_response.create(model=MODEL, messages=HI)
    done = raw.parse()
    assert done.id.startswith("fake-cohere-")
    assert done.model == "command-a-03-2025"
    assert done.choices[0].message.content == "Fake reply to: hi there"
    assert done.choices[0].finish_reason == "stop"
    assert (done.choices[0].model_extra or {})["native_finish_reason"] == "COMPLETE"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (2, 5, 7)
    assert env.gw.log.last.usage == Usage(prompt_tokens=2, completion_tokens=5)


@pytest.mark.parametrize(
    ("kwargs", "finish", "native"),
    [
        ({}, "stop", "COMPLETE"),
        ({"stop": ["there"]}, "stop", "STOP_SEQUENCE"),
        ({"max_tokens": 2}, "length", "MAX_TOKENS"),
        ({"tools": [WEATHER]}, "tool_calls", "TOOL_CALL"),
    ],
)
async def test_finish_reasons(env: Env, kwargs: dict[str, Any], finish: str, native: str) -> None:
    done = await env.client.chat.completions.create(model=MODEL, messages=HI, **kwargs)
    assert done.choices[0].finish_reason == finish
    assert (done.choices[0].model_extra or {})["native_finish_reason"] == native
    stream = await env.client.chat.completions.create(model=MODEL, messages=HI, stream=True, **kwargs)
    finishes = [c.choices[0].finish_reason async for c in stream if c.choices and c.choices[0].finish_reason]
    assert finishes == [finish]


async def test_thinking_and_cached_tokens() -> None:
    fake = FakeCohere(models=["command-a-03-2025"], api_key=KEY, thinking="Pondering.", cached_tokens=1)
    async with cohere_env(fake) as env:
        done = await env.client.chat.completions.create(model=MODEL, messages=HI)
        message = done.choices[0].message
        assert message.content == "Fake reply to: hi there"
        assert (message.model_extra or {})["reasoning_content"] == "Pondering."
        assert done.usage is not None and done.usage.prompt_tokens_details is not None
        assert done.usage.prompt_tokens == 2 and done.usage.prompt_tokens_details.cached_tokens == 1
        stream = await env.client.chat.completions.create(
            model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True}
        )
        reasoning, text, usage = "", "", None
        async for chunk in stream:
            for choice in chunk.choices:
                reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
                text += choice.delta.content or ""
            usage = chunk.usage or usage
        assert (reasoning, text) == ("Pondering.", "Fake reply to: hi there")
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 1


def test_usage_casts_floats_and_counts_billed_units_over_processed_tokens() -> None:
    # Cohere bills billed_units; tokens also counts its prompt template, which is not billed
    both = {"tokens": {"input_tokens": 12.0, "output_tokens": 3.0}, "billed_units": {"input_tokens": 5, "output_tokens": 3},
            "cached_tokens": 4.0}
    assert usage_of(both) == Usage(prompt_tokens=5, completion_tokens=3, cached_tokens=4)
    assert usage_of({"billed_units": {"input_tokens": 5.0, "output_tokens": 2.0}}) == Usage(5, 2)
    assert usage_of({"tokens": {"input_tokens": 12.0, "output_tokens": 3.0}}) == Usage(12, 3)
    assert usage_of({"billed_units": {"search_units": 1}}) is None
    assert usage_of(None) is None


async def test_stream_translation(env: Env) -> None:
    stream = await env.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream this answer please"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("fake-cohere-")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Fake reply to: stream this answer please"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 7)
    assert env.sent["stream"] is True


async def test_streamed_tool_call(env: Env) -> None:
    stream = await env.client.chat.completions.create(model=MODEL, messages=HI, tools=[WEATHER], stream=True)
    calls: dict[int, dict[str, str]] = {}
    reasoning = ""
    async for chunk in stream:
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("get_weather_")
    assert json.loads(calls[0]["arguments"]) == {"city": "text"}
    assert reasoning == "I will use the get_weather tool to answer."


async def test_usage_is_metered_without_being_forwarded(env: Env) -> None:
    stream = await env.client.chat.completions.create(model=MODEL, messages=HI, stream=True)
    assert all(c.usage is None for c in [c async for c in stream])
    assert env.gw.log.last.usage == Usage(prompt_tokens=2, completion_tokens=5)


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, "bad_request"),
        (401, "auth"),
        (402, "quota"),
        (403, "auth"),
        (404, "not_found"),
        (422, "bad_request"),
        (429, "rate_limited"),
        (498, "auth"),
        (499, "server_error"),
        (500, "server_error"),
        (501, "server_error"),
        (503, "overloaded"),
        (504, "timeout"),
    ],
)
async def test_status_classes(env: Env, status: int, outcome: str) -> None:
    env.fake.add_fault(Fault(status=status, retry_after=3 if status == 429 else None))
    with pytest.raises(openai.APIStatusError) as info:
        await env.client.chat.completions.create(model=MODEL, messages=HI)
    assert env.outcome == outcome
    assert env.gw.log.last.attempts[0].status == status
    if status == 429:
        assert info.value.status_code == 429 and info.value.response.headers["retry-after"] == "3"


async def test_context_length(env: Env) -> None:
    env.fake.add_fault(Fault(status=400, body={"id": "e1", "message": CONTEXT_LENGTH_MESSAGE}))
    with pytest.raises(openai.BadRequestError) as info:
        await env.client.chat.completions.create(model=MODEL, messages=HI)
    assert env.outcome == "context_length"
    assert info.value.code == "context_length_exceeded"
    assert "too many tokens" in info.value.message


@pytest.mark.parametrize(("native", "outcome"), [("ERROR", "server_error"), ("TIMEOUT", "timeout")])
async def test_failed_generations_are_failures(env: Env, native: str, outcome: str) -> None:
    env.fake.finish_reason = native
    with pytest.raises(openai.APIStatusError):
        await env.client.chat.completions.create(model=MODEL, messages=HI)
    assert env.outcome == outcome
    # in a stream the text came first, so the failure reaches the client as an error event
    stream = await env.client.chat.completions.create(model=MODEL, messages=HI, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert env.outcome == ("stream_error" if native == "ERROR" else "timeout")


@pytest.mark.parametrize(
    "fault", [Fault(cut_after=0), Fault(malformed_at=0), Fault(error_event_at=0)],
    ids=["cut", "malformed", "error_event"],
)
async def test_stream_faults_before_content(env: Env, fault: Fault) -> None:
    env.fake.add_fault(fault)
    with pytest.raises(openai.APIStatusError) as info:
        stream = await env.client.chat.completions.create(model=MODEL, messages=HI, stream=True)
        async for _ in stream:
            pass
    assert env.outcome == "stream_error"
    if fault.cut_after == 0:
        assert info.value.status_code == 502


async def test_error_event_after_content_reaches_the_client(env: Env) -> None:
    env.fake.add_fault(Fault(error_event_at=2))
    stream = await env.client.chat.completions.create(model=MODEL, messages=HI, stream=True)
    text = ""
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == "Fake reply "
    assert "internal server error" in str(info.value)
    assert env.gw.log.last.error_type == "stream_error"


async def test_stream_without_message_end_is_broken(env: Env) -> None:
    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for data in ({"type": "message-start", "id": "m1"},
                     {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hel"}}}}):
            await response.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
        await response.write_eof()  # a clean end of body, but no message-end
        return response

    fake = FakeCohere(models=["command-a-03-2025"], api_key=KEY)
    fake.app.router.add_post("/truncated/v2/chat", truncated)
    async with fake:
        toml = provider_table("co", type="cohere", base_url=fake.url + "/truncated", api_key=KEY)
        async with running_gateway(toml) as gw:
            stream = await gw.client.chat.completions.create(model=MODEL, messages=HI, stream=True)
            text = ""
            with pytest.raises(openai.APIError, match="without message-end"):
                async for chunk in stream:
                    text += chunk.choices[0].delta.content or "" if chunk.choices else ""
            assert text == "Hel"
            assert gw.log.last.attempts[0].outcome == "stream_error"


async def test_timeout() -> None:
    async with cohere_env(timeout=0.3) as slow:
        slow.fake.add_fault(Fault(latency=1))
        with pytest.raises(openai.APIStatusError):
            await slow.client.chat.completions.create(model=MODEL, messages=HI)
        assert slow.outcome == "timeout"


async def test_key_never_leaks(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.fake.add_fault(Fault(status=500, body={"message": f"upstream saw key {KEY}"}))
    with caplog.at_level(logging.DEBUG), pytest.raises(openai.APIStatusError) as info:
        await env.client.chat.completions.create(model=MODEL, messages=HI)
    done = await env.client.chat.completions.create(model=MODEL, messages=HI)
    assert KEY not in str(info.value.body) and "****" in str(info.value.body)
    assert KEY not in done.model_dump_json()
    assert KEY not in caplog.text
    assert KEY not in (env.gw.log.last.attempts[0].error or "") and KEY not in str(env.gw.log.decisions)


# -- embeddings ---------------------------------------------------------------------------------


async def test_embeddings(env: Env) -> None:
    result = await env.client.embeddings.create(model="co/embed-v4.0", input=["alpha", "beta gamma"], dimensions=16)
    assert env.fake.requests[-1].path == "/v2/embed"
    assert env.sent == {
        "model": "embed-v4.0", "texts": ["alpha", "beta gamma"], "input_type": "search_document",
        "embedding_types": ["float"], "output_dimension": 16,
    }
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 16 for d in result.data)  # decoded from our base64 by the SDK
    assert result.usage.prompt_tokens == 3 and result.usage.total_tokens == 3
    assert env.gw.log.last.usage == Usage(prompt_tokens=3)
    floats = await env.client.embeddings.create(model="co/embed-v4.0", input="alpha", encoding_format="float",
                                                extra_body={"input_type": "search_query"})
    assert env.sent["texts"] == ["alpha"] and env.sent["input_type"] == "search_query"
    packed = base64.b64encode(struct.pack("<8f", *floats.data[0].embedding)).decode()
    raw = await env.client.embeddings.with_raw_response.create(model="co/embed-v4.0", input="alpha", encoding_format="base64")
    assert json.loads(raw.text)["data"][0]["embedding"] == packed


async def test_embeddings_options_and_limits() -> None:
    async with cohere_env(embed_input_type="clustering") as env:
        await env.client.embeddings.create(model="co/embed-v4.0", input="x")
        assert env.sent["input_type"] == "clustering"
        with pytest.raises(openai.BadRequestError):
            await env.client.embeddings.create(model="co/embed-v4.0", input=[[1, 2, 3]])
        assert env.outcome == "bad_request"


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("var", ["CO_API_KEY", "COHERE_API_KEY"])
async def test_key_from_env_and_client_name(var: str) -> None:
    async with FakeCohere(models=["command-a-03-2025"], api_key=KEY) as fake:
        toml = provider_table("co", type="cohere", base_url=fake.base_url, client_name="my-app")
        async with running_gateway(toml, environ={var: KEY}) as gw:
            await gw.client.chat.completions.create(model=MODEL, messages=HI)
        assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"
        assert fake.requests[-1].headers["x-client-name"] == "my-app"


async def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="embed_input_type"):
        async with running_gateway(provider_table("co", type="cohere", api_key=KEY, embed_input_type="poems")):
            pass
