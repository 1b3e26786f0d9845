"""The Bedrock provider's translation through a real gateway: the openai SDK in front, FakeBedrock behind.

Credentials, signing, config and embeddings are in ``test_provider_bedrock_aws.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web

from interlock.testing import FakeBedrock, Fault
from interlock.testing._eventstream import encode_frame, event_frame
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway
from tests.plugins._bedrock import CLAUDE, HI, PNG, PNG_BYTES, WEATHER, gateway, native_reason, new_fake, sent


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with new_fake() as server:
        yield server


@pytest.fixture
async def gw(fake: FakeBedrock) -> AsyncIterator[RunningGateway]:
    async with gateway(fake) as running:
        yield running


# -- request translation ----------------------------------------------------------------------------


async def test_request_translation_is_exact(fake: FakeBedrock, gw: RunningGateway) -> None:
    messages: Any = [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "weather?"},
                {"type": "image_url", "image_url": {"url": PNG}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call 2/x",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call 2/x", "content": [{"type": "text", "text": "25C"}]},
        {"role": "user", "content": "thanks, and tomorrow?"},
    ]
    completion = await gw.client.chat.completions.create(
        model=f"bedrock/{CLAUDE}",
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=300,
        temperature=0.3,
        top_p=0.9,
        stop="END",
        seed=7,  # Converse has no seed: dropped
    )
    assert completion.choices[0].finish_reason == "tool_calls"  # tools are required and the turn is a question
    assert sent(fake) == {
        "system": [{"text": "Be terse."}, {"text": "Use metric units."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "weather?"},
                    {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG_BYTES).decode()}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "call_2_x", "name": "get_weather", "input": {"city": "Rome"}}},
                ],
            },
            {
                "role": "user",
                "content": [  # tool results and the next user turn merge into one user message
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}},
                    {"toolResult": {"toolUseId": "call_2_x", "content": [{"text": "25C"}]}},
                    {"text": "thanks, and tomorrow?"},
                ],
            },
        ],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "inputSchema": {"json": WEATHER["function"]["parameters"]},
                    }
                }
            ],
            "toolChoice": {"any": {}},
        },
    }


async def test_tool_choice_variants(fake: FakeBedrock, gw: RunningGateway) -> None:
    model = f"bedrock/{CLAUDE}"
    await gw.client.chat.completions.create(
        model=model,
        messages=HI,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert sent(fake)["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    await gw.client.chat.completions.create(model=model, messages=HI, tools=[WEATHER], tool_choice="auto")
    assert "toolChoice" not in sent(fake)["toolConfig"]
    none = await gw.client.chat.completions.create(
        model=model, messages=HI, tools=[WEATHER], tool_choice="none"
    )
    assert "toolConfig" not in sent(fake) and none.choices[0].message.content == "Fake reply to: hi"
    history: Any = [
        *HI,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
    ]
    await gw.client.chat.completions.create(
        model=model, messages=history, tools=[WEATHER], tool_choice="none"
    )
    # Converse rejects tool blocks without a toolConfig, so the tools stay, without a choice
    assert sent(fake)["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "inputSchema": {"json": WEATHER["function"]["parameters"]},
                }
            }
        ]
    }
    assert sent(fake)["messages"][-1] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "call_1", "content": []}}],
    }


async def test_json_modes_become_a_system_instruction(fake: FakeBedrock, gw: RunningGateway) -> None:
    model = f"bedrock/{CLAUDE}"
    plain = await gw.client.chat.completions.create(
        model=model, messages=HI, response_format={"type": "json_object"}
    )
    assert json.loads(plain.choices[0].message.content or "") == {"reply": "Fake reply to: hi"}
    assert sent(fake)["system"][-1]["text"].startswith("Respond with a single valid JSON object")
    schema: Any = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    shaped = await gw.client.chat.completions.create(
        model=model,
        messages=HI,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert json.loads(shaped.choices[0].message.content or "") == {"answer": "text"}
    assert sent(fake)["system"] == [
        {
            "text": (
                "Respond with a single valid JSON object and nothing else: no prose before or after it, no code fences. "
                f"The object must conform to this JSON Schema: {json.dumps(schema, separators=(',', ':'))}"
            )
        }
    ]
    assert "outputConfig" not in sent(fake)


async def test_remote_image_is_fetched_and_odd_formats_refused(fake: FakeBedrock, gw: RunningGateway) -> None:
    async def cat(request: web.Request) -> web.Response:
        return web.Response(body=PNG_BYTES, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/cat.jpg", cat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/cat.jpg"
        content: Any = [{"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": url}}]
        completion = await gw.client.chat.completions.create(
            model=f"bedrock/{CLAUDE}", messages=[{"role": "user", "content": content}]
        )
    finally:
        await runner.cleanup()
    assert completion.choices[0].message.content == "Fake reply to: what (1 image)"
    image = sent(fake)["messages"][0]["content"][1]["image"]
    assert image == {"format": "jpeg", "source": {"bytes": base64.b64encode(PNG_BYTES).decode()}}
    bmp: Any = [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]
    with pytest.raises(openai.BadRequestError):
        await gw.client.chat.completions.create(
            model=f"bedrock/{CLAUDE}", messages=[{"role": "user", "content": bmp}]
        )
    assert gw.log.last.attempts[0].outcome == "bad_request"


# -- responses ---------------------------------------------------------------------------------------


async def test_text_response_usage_with_cache_and_reasoning(fake: FakeBedrock, gw: RunningGateway) -> None:
    fake.cache_read_tokens, fake.cache_write_tokens, fake.reasoning = 40, 6, "Short thought here."
    raw = await gw.client.chat.completions.with_raw_response.create(model=f"bedrock/{CLAUDE}", messages=HI)
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.message.content == "Fake reply to: hi"
    assert choice.finish_reason == "stop"
    assert native_reason(choice) == "end_turn"
    assert (choice.message.model_extra or {})["reasoning_content"] == "Short thought here."
    assert completion.id.startswith("chatcmpl-0000")  # AWS's request id, for tracing
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens == 1 + 40 + 6 and usage.prompt_tokens_details.cached_tokens == 40
    assert usage.completion_tokens == 4 + 3  # the answer's words plus the reasoning's
    assert json.loads(raw.text)["usage"]["prompt_tokens_details"]["cache_write_tokens"] == 6
    assert gw.log.last.usage is not None and gw.log.last.usage.cached_tokens == 40


def converse_body(stop_reason: str, content: list[Any] | None = None) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content or [{"text": "partial answer"}]}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 10, "outputTokens": 2, "totalTokens": 12},
        "metrics": {"latencyMs": 5},
    }


@pytest.mark.parametrize(
    ("native", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("malformed_model_output", "stop"),
        ("malformed_tool_use", "stop"),
    ],
)
async def test_each_stop_reason(fake: FakeBedrock, gw: RunningGateway, native: str, finish: str) -> None:
    fake.add_fault(Fault(status=200, body=converse_body(native)))
    completion = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
    assert completion.choices[0].finish_reason == finish
    assert native_reason(completion.choices[0]) == native
    fake.stop_reason = native
    stream = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI, stream=True)
    finishes = [c.choices[0].finish_reason async for c in stream if c.choices and c.choices[0].finish_reason]
    assert finishes == [finish]


async def test_tool_calls_non_stream_and_stream(fake: FakeBedrock, gw: RunningGateway) -> None:
    model = f"bedrock/{CLAUDE}"
    completion = await gw.client.chat.completions.create(model=model, messages=HI, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and native_reason(choice) == "tool_use"
    calls: Any = choice.message.tool_calls or []
    (call,) = calls
    assert call.id.startswith("tooluse_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "text"}
    assert choice.message.content is None
    stream = await gw.client.chat.completions.create(model=model, messages=HI, tools=[WEATHER], stream=True)
    ids, name, args, finish = set(), "", "", None
    async for chunk in stream:
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                assert delta.index == 0
                ids.add(delta.id) if delta.id else None
                name += (delta.function.name or "") if delta.function else ""
                args += (delta.function.arguments or "") if delta.function else ""
            finish = c.finish_reason or finish
    assert len(ids) == 1 and next(iter(ids)).startswith("tooluse_")
    assert (name, json.loads(args), finish) == ("get_weather", {"city": "text"}, "tool_calls")


async def test_stream_text_reasoning_and_usage(fake: FakeBedrock, gw: RunningGateway) -> None:
    fake.reasoning, fake.cache_read_tokens = "Pondering deeply.", 12
    stream = await gw.client.chat.completions.create(
        model=f"bedrock/{CLAUDE}",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, thought, usage, roles = "", "", None, 0
    async for chunk in stream:
        for c in chunk.choices:
            roles += c.delta.role == "assistant"
            text += c.delta.content or ""
            thought += getattr(c.delta, "reasoning_content", None) or ""
        usage = chunk.usage or usage
    assert (text, thought, roles) == ("Fake reply to: stream please", "Pondering deeply.", 1)
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 12 and usage.completion_tokens == 5 + 2
    quiet = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI, stream=True)
    assert all(chunk.usage is None for chunk in [c async for c in quiet])
    assert gw.log.last.usage is not None and gw.log.last.usage.completion_tokens > 0


# -- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(status=429, retry_after=2), "rate_limited"),
        (
            Fault(
                status=429, headers={"x-amzn-ErrorType": "ModelNotReadyException:http://internal.amazon.com/"}
            ),
            "overloaded",
        ),
        (Fault(status=503), "overloaded"),
        (Fault(status=408), "timeout"),
        (Fault(status=500), "server_error"),
        (Fault(status=424), "server_error"),
        (Fault(status=400), "bad_request"),
        (Fault(status=400, body={"message": "Input is too long for requested model."}), "context_length"),
        (
            Fault(
                status=400,
                body={
                    "message": "The model returned the following errors: input length and `max_tokens` "
                    "exceed context limit: 199000 + 8192 > 200000"
                },
            ),
            "context_length",
        ),
        (
            Fault(
                status=400,
                body={"message": "Too many tokens per day."},
                headers={"x-amzn-ErrorType": "ServiceQuotaExceededException:http://internal.amazon.com/"},
            ),
            "quota",
        ),
        (Fault(status=403), "auth"),
        (Fault(status=404), "not_found"),
    ],
)
async def test_http_errors_are_classified(
    fake: FakeBedrock, gw: RunningGateway, fault: Fault, outcome: str
) -> None:
    fake.add_fault(fault)
    with pytest.raises(openai.APIStatusError):
        await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
    assert gw.log.last.attempts[0].outcome == outcome
    assert gw.log.last.attempts[0].status == fault.status


async def test_unknown_model_is_not_found(fake: FakeBedrock, gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError):
        await gw.client.chat.completions.create(model="bedrock/meta.llama-nope-v1:0", messages=HI)
    attempt = gw.log.last.attempts[0]
    assert attempt.outcome == "not_found" and "model identifier is invalid" in (attempt.error or "")


@pytest.mark.parametrize(
    ("exception", "outcome"),
    [
        ("throttlingException", "rate_limited"),
        ("serviceUnavailableException", "overloaded"),
        ("internalServerException", "server_error"),
        ("modelStreamErrorException", "stream_error"),
        ("validationException", "context_length"),  # the fake's says "Input is too long"
    ],
)
async def test_in_stream_exceptions_are_classified(
    fake: FakeBedrock, gw: RunningGateway, exception: str, outcome: str
) -> None:
    fake.stream_exception = exception
    fake.add_fault(Fault(error_event_at=0))
    with pytest.raises(openai.APIStatusError):
        stream = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI, stream=True)
        async for _ in stream:
            pass
    attempt = gw.log.last.attempts[0]
    assert attempt.outcome == outcome and exception in (attempt.error or "")


@pytest.mark.parametrize("fault", [Fault(cut_after=0), Fault(malformed_at=0), Fault(cut_after=99)])
async def test_broken_streams_are_stream_errors(fake: FakeBedrock, gw: RunningGateway, fault: Fault) -> None:
    """Before content the client gets an error status; after it (cut before messageStop) an error event."""
    fake.add_fault(fault)
    with pytest.raises(openai.APIError):
        stream = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI, stream=True)
        async for _ in stream:
            pass
    assert gw.log.last.attempts[0].outcome == "stream_error"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (
            encode_frame({":event-type": "contentBlockDelta", ":message-type": "event"}, b"{not json"),
            "malformed stream event",
        ),
        (
            encode_frame(
                {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""
            ),
            "InternalFailure: boom",
        ),
        (
            event_frame("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{"}}}),
            "never started",
        ),
    ],
)
async def test_undecodable_stream_events_are_stream_errors(frame: bytes, error: str) -> None:
    """Frames FakeBedrock never sends: a valid frame with a non-JSON payload, an ``error`` message
    and a tool delta without its start, served by a bare endpoint (Bedrock API-key auth)."""

    async def converse_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await response.prepare(request)
        await response.write(event_frame("messageStart", {"role": "assistant"}) + frame)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/model/{model}/converse-stream", converse_stream)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        toml = provider_table("bedrock", type="bedrock", base_url=url, api_key="k", region="us-east-1")
        async with running_gateway(toml, environ={}) as gw:
            with pytest.raises(openai.APIStatusError):
                await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI, stream=True)
            attempt = gw.log.last.attempts[0]
    finally:
        await runner.cleanup()
    assert attempt.outcome == "stream_error" and error in (attempt.error or "")
