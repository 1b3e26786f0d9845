"""The Gemini provider: OpenAI requests in, GenerateContent out, and back, through a real gateway.

The client is the official ``openai`` SDK; the upstream is :class:`FakeGemini` (or, for event
sequences the fake never produces, a canned server), so what is checked is the exact native
request and the OpenAI response, stream and error classes that come back.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from interlock.core.config import ConfigError
from interlock.testing import FakeGemini, FakeOpenAI, FakeServer, Fault
from interlock.testing._replies import embed
from interlock.testing.fake_gemini import error_body
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

KEY = "AIzaSy-gemini-secret-0123456789"
MODEL = "gemini-2.5-flash"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
PNG_B64 = base64.b64encode(PNG).decode()
HELLO: list[Any] = [{"role": "user", "content": "hello there"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: Any = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


@contextlib.asynccontextmanager
async def gateway(
    fake: FakeServer, *, environ: dict[str, str] | None = None, **table: Any
) -> AsyncIterator[RunningGateway]:
    """A gateway with ``[providers.gemini]`` on ``fake`` and a route ``smart`` falling back to OpenAI."""
    async with FakeOpenAI(models=["gpt-4o-mini"]) as backup:
        values = {"type": "gemini", "base_url": fake.url, "api_key": KEY, "timeout": 5.0, **table}
        toml = "\n".join(
            [
                provider_table("gemini", **{k: v for k, v in values.items() if v is not None}),
                provider_table("backup", type="openai", base_url=backup.base_url, api_key="sk-backup"),
                "[routes.smart]",
                'strategy = "ordered"',  # a backup window larger than Gemini's: context errors may fall back
                f'targets = ["gemini/{MODEL}", {{ model = "backup/gpt-4o-mini", context_window = 100000000 }}]',
                "[routes.solo]",
                f'chain = "gemini/{MODEL}"',
                "[exporters.ledger]",
                "enabled = false",
            ]
        )
        async with running_gateway(toml, environ=environ or {}) as gw:
            yield gw


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(
        models=[MODEL, "gemini-3-pro-preview", "gemini-embedding-001"], api_key=KEY
    ) as server:
        yield server


@pytest.fixture
async def gw(fake: FakeGemini) -> AsyncIterator[RunningGateway]:
    async with gateway(fake) as running:
        yield running


def sent(fake: FakeServer) -> dict[str, Any]:
    body = fake.requests[-1].json
    assert isinstance(body, dict)
    return body


class CannedGemini(FakeServer):
    """Answers every POST with queued raw ``(status, body, content type)`` replies."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, bytes, str]] = []
        super().__init__()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(r"/{path:(?!_fake/).+}", self._reply)

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        return web.json_response(error_body(status, message), status=status)

    async def _reply(self, request: web.Request) -> web.Response:
        status, body, ctype = self.replies.pop(0)
        return web.Response(body=body, status=status, content_type=ctype)

    def sse(self, *events: Any) -> None:
        self.replies.append(
            (200, b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events), "text/event-stream")
        )


def candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
        "responseId": "r-1",
    }
    if finish:
        out["candidates"][0]["finishReason"] = finish
        out["usageMetadata"] = {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6}
    return out


# -- requests --------------------------------------------------------------------------------------


async def test_text_request_is_translated_exactly(fake: FakeGemini, gw: RunningGateway) -> None:
    raw = await gw.client.chat.completions.with_raw_response.create(
        model=f"gemini/{MODEL}",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second"},
            {"role": "user", "content": [{"type": "text", "text": "third"}]},
        ],
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop="END",
        max_tokens=50,
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    request = fake.requests[-1]
    assert request.path == f"/v1beta/models/{MODEL}:generateContent" and request.query == {}
    assert request.headers["x-goog-api-key"] == KEY and "authorization" not in request.headers
    assert request.json == {
        "contents": [
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "parts": [{"text": "an answer"}]},
            {
                "role": "user",
                "parts": [{"text": "second"}, {"text": "third"}],
            },  # merged: Gemini wants alternating turns
        ],
        "systemInstruction": {"parts": [{"text": "Be terse.\n\nUse metric."}]},
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.9,
            "seed": 7,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
            "maxOutputTokens": 50,
            "stopSequences": ["END"],
        },
    }
    completion = raw.parse()
    assert completion.choices[0].message.content == "Fake reply to: second third"
    assert completion.choices[0].finish_reason == "stop"
    assert json.loads(raw.text)["choices"][0]["native_finish_reason"] == "STOP"
    assert completion.id.startswith("fake-gemini-") and completion.model == MODEL
    usage = completion.usage
    assert (
        usage is not None and usage.completion_tokens == 5 and usage.total_tokens == usage.prompt_tokens + 5
    )


async def test_images_audio_and_files(fake: FakeGemini, gw: RunningGateway) -> None:
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/webp")

    app = web.Application()
    app.router.add_get("/cat.webp", png)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/cat.webp"
        content: Any = [
            {"type": "text", "text": "what are these"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {
                "type": "file",
                "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"},
            },
        ]
        completion = await gw.client.chat.completions.create(
            model=f"gemini/{MODEL}", messages=[{"role": "user", "content": content}]
        )
    finally:
        await runner.cleanup()
    assert sent(fake)["contents"][0]["parts"] == [
        {"text": "what are these"},
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
        {"inlineData": {"mimeType": "image/webp", "data": PNG_B64}},  # fetched: Gemini takes no http URLs
        {"fileData": {"fileUri": "gs://bucket/cat.jpg", "mimeType": "image/jpeg"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERg=="}},
    ]
    assert completion.choices[0].message.content == "Fake reply to: what are these (3 images)"


async def test_tool_schemas_are_sanitised_and_tool_choice_mapped(
    fake: FakeGemini, gw: RunningGateway
) -> None:
    pydantic_style: Any = {
        "type": "function",
        "function": {
            "name": "book",
            "strict": True,
            "parameters": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "additionalProperties": False,
                "$defs": {
                    "Room": {
                        "type": "object",
                        "properties": {"beds": {"type": "integer", "exclusiveMinimum": 0}},
                        "additionalProperties": False,
                    }
                },
                "properties": {
                    "room": {"$ref": "#/$defs/Room", "description": "which room"},
                    "note": {
                        "anyOf": [{"type": "string", "format": "uri"}, {"type": "null"}],
                        "default": None,
                    },
                    "when": {"type": ["string", "null"], "format": "date-time"},
                    "kind": {"const": "hotel"},
                    "floor": {"enum": [1, 2, None]},
                },
                "required": ["room", "kind", "ghost"],
            },
        },
    }
    completion = await gw.client.chat.completions.create(
        model=f"gemini/{MODEL}", messages=HELLO, tools=[pydantic_style]
    )
    assert sent(fake)["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "book",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {
                            "room": {
                                "type": "OBJECT",
                                "description": "which room",
                                "properties": {"beds": {"type": "INTEGER"}},
                            },
                            "note": {
                                "type": "STRING",
                                "nullable": True,
                            },  # a "null" default and the uri format dropped
                            "when": {"type": "STRING", "format": "date-time", "nullable": True},
                            "kind": {"type": "STRING", "enum": ["hotel"]},
                            "floor": {"type": "INTEGER", "enum": ["1", "2"], "nullable": True},
                        },
                        "required": ["room", "kind"],
                    },
                }
            ]
        }
    ]
    assert "toolConfig" not in sent(fake)  # no tool_choice: Gemini's default AUTO
    args = json.loads(completion.choices[0].message.tool_calls[0].function.arguments)  # type: ignore[index]
    assert args["room"] == {"beds": 1} and args["kind"] == "hotel"

    for choice, config in [
        ("auto", None),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
    ]:
        result = await gw.client.chat.completions.create(
            model=f"gemini/{MODEL}",
            messages=HELLO,
            tools=[WEATHER, TIME],
            tool_choice=choice,  # type: ignore[arg-type]
        )
        assert sent(fake).get("toolConfig") == (None if config is None else {"functionCallingConfig": config})
        calls = result.choices[0].message.tool_calls
        if choice == "none":
            assert calls is None and result.choices[0].finish_reason == "stop"
        else:
            assert calls and calls[0].function.name == (
                "get_time" if isinstance(choice, dict) else "get_weather"
            )


async def test_tool_call_round_trip(fake: FakeGemini, gw: RunningGateway) -> None:
    raw = await gw.client.chat.completions.with_raw_response.create(
        model=f"gemini/{MODEL}", messages=HELLO, tools=[WEATHER]
    )
    first = raw.parse()
    choice = first.choices[0]
    assert (
        choice.finish_reason == "tool_calls"
        and json.loads(raw.text)["choices"][0]["native_finish_reason"] == "STOP"
    )
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert (
        call.id.startswith("call_")
        and call.function.name == "get_weather"
        and json.loads(call.function.arguments) == {"city": "text"}
    )

    messages: list[Any] = [
        *HELLO,
        {
            "role": "assistant",
            "content": "checking",
            "tool_calls": [
                call.model_dump(exclude_none=True),
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21C"},
        {"role": "tool", "tool_call_id": "call_b", "content": '{"time": "12:00"}'},
    ]
    second = await gw.client.chat.completions.create(
        model=f"gemini/{MODEL}", messages=messages, tools=[WEATHER, TIME]
    )
    assert sent(fake)["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "checking"},
                {"functionCall": {"name": "get_weather", "args": {"city": "text"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [  # both results in one turn, matched to the calls by name
                {"functionResponse": {"name": "get_weather", "response": {"content": "sunny and 21C"}}},
                {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}},
            ],
        },
    ]
    assert second.choices[0].message.content == 'Tool result: {"time":"12:00"}'
    assert second.choices[0].finish_reason == "stop"

    orphan = [*HELLO, {"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}]
    with pytest.raises(openai.BadRequestError):
        await gw.client.chat.completions.create(model="smart", messages=orphan)
    assert gw.log.last.attempts[0].outcome == "bad_request" and len(gw.log.last.attempts) == 1


async def test_thought_signatures_round_trip() -> None:
    signature = base64.b64encode(b"sig-bytes").decode()
    async with (
        FakeGemini(models=[MODEL, "gemini-3-pro-preview"], api_key=KEY, thought_signature=signature) as fake,
        gateway(fake) as gw,
    ):
        raw = await gw.client.chat.completions.with_raw_response.create(
            model=f"gemini/{MODEL}", messages=HELLO, tools=[WEATHER]
        )
        wire_call = json.loads(raw.text)["choices"][0]["message"]["tool_calls"][0]
        assert wire_call["extra_content"] == {"google": {"thought_signature": signature}}
        call = raw.parse().choices[0].message.tool_calls[0]  # type: ignore[index]
        result: Any = {"role": "tool", "tool_call_id": call.id, "content": "ok"}
        await gw.client.chat.completions.create(
            model=f"gemini/{MODEL}",
            messages=[*HELLO, {"role": "assistant", "tool_calls": [call.model_dump()]}, result],
        )
        assert sent(fake)["contents"][1]["parts"][0]["thoughtSignature"] == signature

        stream = await gw.client.chat.completions.create(
            model=f"gemini/{MODEL}", messages=HELLO, tools=[WEATHER], stream=True
        )
        extras = [
            tc.model_extra
            for c in [c async for c in stream]
            if c.choices
            for tc in c.choices[0].delta.tool_calls or ()
        ]
        assert extras == [{"extra_content": {"google": {"thought_signature": signature}}}]

        # a client that dropped the signature: Gemini 3 gets Google's placeholder, Gemini 2.5 nothing
        bare: Any = {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        }
        for model, expected in [("gemini-3-pro-preview", "skip_thought_signature_validator"), (MODEL, None)]:
            await gw.client.chat.completions.create(
                model=f"gemini/{model}",
                messages=[*HELLO, bare, {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
            )
            assert sent(fake)["contents"][1]["parts"][0].get("thoughtSignature") == expected


async def test_json_modes(fake: FakeGemini, gw: RunningGateway) -> None:
    plain = await gw.client.chat.completions.create(
        model=f"gemini/{MODEL}", messages=HELLO, response_format={"type": "json_object"}
    )
    assert sent(fake)["generationConfig"] == {"responseMimeType": "application/json"}
    assert json.loads(plain.choices[0].message.content or "") == {"reply": "Fake reply to: hello there"}

    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["n", "tags"],
    }
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    typed = await gw.client.chat.completions.create(
        model=f"gemini/{MODEL}", messages=HELLO, response_format=fmt
    )
    assert sent(fake)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"n": {"type": "INTEGER"}, "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
            "required": ["n", "tags"],
        },
    }
    assert json.loads(typed.choices[0].message.content or "") == {"n": 1, "tags": []}


async def test_raw_schemas_option_sends_json_schema_untouched(fake: FakeGemini) -> None:
    schema = {"type": "object", "additionalProperties": False, "properties": {"n": {"type": "integer"}}}
    tool: Any = {"type": "function", "function": {"name": "f", "parameters": schema}}
    async with gateway(fake, raw_schemas=True) as gw:
        await gw.client.chat.completions.create(model=f"gemini/{MODEL}", messages=HELLO, tools=[tool])
        assert sent(fake)["tools"] == [
            {"functionDeclarations": [{"name": "f", "parametersJsonSchema": schema}]}
        ]
        fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        result = await gw.client.chat.completions.create(
            model=f"gemini/{MODEL}", messages=HELLO, response_format=fmt
        )
        assert sent(fake)["generationConfig"]["responseJsonSchema"] == schema
        assert json.loads(result.choices[0].message.content or "") == {"n": 1}


async def test_options_safety_settings_api_version_and_env_key(fake: FakeGemini) -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    async with gateway(
        fake, api_key=None, api_version="v1", safety_settings=safety, environ={"GOOGLE_API_KEY": KEY}
    ) as gw:
        completion = await gw.client.chat.completions.create(
            model=f"gemini/{MODEL}", messages=HELLO, reasoning_effort="low"
        )
    assert completion.choices[0].message.content == "Fake reply to: hello there"
    assert fake.requests[-1].path == f"/v1/models/{MODEL}:generateContent"
    assert fake.requests[-1].headers["x-goog-api-key"] == KEY  # the alias variable supplied the key
    assert sent(fake)["safetySettings"] == safety
    assert sent(fake)["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 1024,
        "includeThoughts": True,
    }
    # a base_url that already names the version is used as is
    async with gateway(fake, base_url=f"{fake.url}/v1alpha") as gw:
        await gw.client.chat.completions.create(model=f"gemini/{MODEL}", messages=HELLO)
    assert fake.requests[-1].path == f"/v1alpha/models/{MODEL}:generateContent"
    with pytest.raises(ConfigError) as bad:
        async with gateway(fake, api_version="v2", safety_settings=["high"]):
            pass
    assert {key for key, _ in bad.value.problems} == {
        "providers.gemini.api_version",
        "providers.gemini.safety_settings",
    }


async def test_n_candidates(fake: FakeGemini, gw: RunningGateway) -> None:
    completion = await gw.client.chat.completions.create(model=f"gemini/{MODEL}", messages=HELLO, n=2)
    assert sent(fake)["generationConfig"] == {"candidateCount": 2}
    assert [c.index for c in completion.choices] == [0, 1]
    assert (
        completion.choices[0].message.content
        == completion.choices[1].message.content
        == "Fake reply to: hello there"
    )
    with pytest.raises(openai.BadRequestError):
        await gw.client.chat.completions.create(model=f"gemini/{MODEL}", messages=HELLO, n=2, stream=True)


# -- responses -----------------------------------------------------------------------------------


async def test_reasoning_and_cached_usage() -> None:
    async with (
        FakeGemini(models=[MODEL], api_key=KEY, thoughts="Let me think hard", cached_tokens=10) as fake,
        gateway(fake) as gw,
    ):
        completion = await gw.client.chat.completions.create(model=f"gemini/{MODEL}", messages=HELLO)
        message: Any = completion.choices[0].message
        assert (
            message.content == "Fake reply to: hello there"
            and message.reasoning_content == "Let me think hard"
        )
        usage = completion.usage
        assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
        assert (
            usage.prompt_tokens_details.cached_tokens == 10 and usage.prompt_tokens > 10
        )  # prompt includes cached
        assert usage.completion_tokens_details.reasoning_tokens == 4 and usage.completion_tokens == 5 + 4

        stream = await gw.client.chat.completions.create(
            model=f"gemini/{MODEL}", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        reasoning = "".join(
            (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices
        )
        assert reasoning == "Let me think hard"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.model_dump() == usage.model_dump()


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ],
)
async def test_finish_reasons(fake: FakeGemini, gw: RunningGateway, native: str, expected: str) -> None:
    fake.add_fault(Fault(status=200, body=candidate([{"text": "partial"}], native)))
    raw = await gw.client.chat.completions.with_raw_response.create(model=f"gemini/{MODEL}", messages=HELLO)
    choice = json.loads(raw.text)["choices"][0]
    assert (choice["finish_reason"], choice["native_finish_reason"], choice["message"]["content"]) == (
        expected,
        native,
        "partial",
    )
    assert gw.log.last.attempts[0].finish_reasons == [expected]


async def test_stream_text_tools_and_length(fake: FakeGemini, gw: RunningGateway) -> None:
    stream = await gw.client.chat.completions.create(
        model=f"gemini/{MODEL}",
        messages=[{"role": "user", "content": "stream this answer please"}],
        stream=True,
    )
    chunks = [c async for c in stream]
    assert fake.requests[-1].path == f"/v1beta/models/{MODEL}:streamGenerateContent" and fake.requests[
        -1
    ].query == {"alt": "sse"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "Fake reply to: stream this answer please"
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert all(c.usage is None for c in chunks)  # not asked for: metered, not forwarded
    assert gw.log.last.usage is not None and gw.log.last.usage.completion_tokens == 7

    stream = await gw.client.chat.completions.create(
        model=f"gemini/{MODEL}", messages=HELLO, tools=[WEATHER], stream=True
    )
    deltas = [c.choices[0] for c in [c async for c in stream] if c.choices]
    calls = [tc for d in deltas for tc in d.delta.tool_calls or ()]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments or "") == {
        "city": "text"
    }  # type: ignore[union-attr]
    assert deltas[-1].finish_reason == "tool_calls"

    stream = await gw.client.chat.completions.create(
        model=f"gemini/{MODEL}", messages=HELLO, max_tokens=2, stream=True
    )
    finishes = [c.choices[0].finish_reason async for c in stream if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


async def test_embeddings(fake: FakeGemini, gw: RunningGateway) -> None:
    floats = await gw.client.embeddings.create(
        model="gemini/gemini-embedding-001",
        input=["alpha", "beta gamma"],
        dimensions=16,
        encoding_format="float",
    )
    assert sent(fake) == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "alpha"}]},
                "outputDimensionality": 16,
            },
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "beta gamma"}]},
                "outputDimensionality": 16,
            },
        ]
    }
    assert fake.requests[-1].path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [d.embedding for d in floats.data] == [embed("alpha", 16), embed("beta gamma", 16)]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    # the SDK asks for base64 by default: little-endian float32 our side, decoded to the same values
    decoded = await gw.client.embeddings.create(
        model="gemini/gemini-embedding-001", input="alpha", dimensions=16
    )
    assert decoded.data[0].embedding == floats.data[0].embedding
    raw = await gw.client.embeddings.with_raw_response.create(
        model="gemini/gemini-embedding-001", input="alpha", encoding_format="base64"
    )
    packed = base64.b64decode(json.loads(raw.text)["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == embed("alpha", 8)
    with pytest.raises(openai.BadRequestError):
        await gw.client.embeddings.create(model="gemini/gemini-embedding-001", input=[[1, 2, 3]])


# -- failures ------------------------------------------------------------------------------------

QUOTA_PER_DAY = error_body(
    429,
    "Quota exceeded for metric: generate_content_free_tier_requests",
    [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "250"}
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3600s"},
    ],
)
PRECONDITION = {
    "error": {
        "code": 400,
        "message": "User location is not supported for the API use.",
        "status": "FAILED_PRECONDITION",
    }
}
CONTEXT = error_body(
    400, "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."
)


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(status=429), "rate_limited"),
        (Fault(status=429, body=QUOTA_PER_DAY), "quota"),
        (Fault(status=503), "overloaded"),
        (Fault(status=500), "server_error"),
        (Fault(status=504), "timeout"),
        (Fault(status=403), "auth"),
        (Fault(status=404), "not_found"),
        (Fault(status=400, body=PRECONDITION), "auth"),
        (Fault(status=400, body=CONTEXT), "context_length"),
    ],
)
async def test_http_failures_fall_back(
    fake: FakeGemini, gw: RunningGateway, fault: Fault, outcome: str
) -> None:
    fake.add_fault(fault)
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert gw.log.last.attempts[0].outcome == outcome


async def test_rate_limit_retry_delay_reaches_the_client(fake: FakeGemini, gw: RunningGateway) -> None:
    fake.add_fault(Fault(status=429))  # RetryInfo "19s" in the body, no Retry-After header
    with pytest.raises(openai.RateLimitError) as info:
        await gw.client.chat.completions.create(model="solo", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "19"


async def test_invalid_key_is_auth_and_never_leaks(
    fake: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "AIzaSy-wrong-key-9876543210"
    async with gateway(fake, api_key=wrong) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.headers["x-interlock-provider"] == "backup"
        assert (
            gw.log.last.attempts[0].outcome == "auth"
        )  # Google's 400 API_KEY_INVALID is not the request's fault
        with pytest.raises(openai.APIStatusError) as info:
            await gw.client.chat.completions.create(model="solo", messages=HELLO)
    assert fake.requests[-1].query == {} and fake.requests[-1].headers["x-goog-api-key"] == wrong
    assert wrong not in info.value.response.text and wrong not in caplog.text
    assert all(wrong not in (a.error or "") for a in gw.log.last.attempts)


async def test_request_errors_fail_fast(fake: FakeGemini, gw: RunningGateway) -> None:
    fake.add_fault(Fault(status=400))
    with pytest.raises(openai.BadRequestError):
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert gw.log.last.attempts[0].outcome == "bad_request" and len(gw.log.last.attempts) == 1

    blocked = {
        "promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "unsafe"},
        "usageMetadata": {"promptTokenCount": 3},
    }
    fake.add_fault(Fault(status=200, body=blocked))
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert info.value.code == "content_policy_violation" and "SAFETY" in info.value.message
    assert gw.log.last.attempts[0].outcome == "content_policy" and len(gw.log.last.attempts) == 1


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(cut_after=0), "stream_error"),
        (Fault(malformed_at=0), "stream_error"),
        (Fault(error_event_at=0), "stream_error"),
        (Fault(status=429), "rate_limited"),
    ],
)
async def test_stream_failures_before_content_fall_back(
    fake: FakeGemini, gw: RunningGateway, fault: Fault, outcome: str
) -> None:
    fake.add_fault(fault)
    stream = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
    assert (
        "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        == "Fake reply to: hello there"
    )
    assert [a.outcome for a in gw.log.last.attempts] == [outcome, "ok"]


async def test_canned_streams() -> None:
    """Event sequences the fake never sends: in-band errors by status, a clean end without finishReason, a blocked prompt."""
    async with CannedGemini() as canned, gateway(canned) as gw:
        cases: list[tuple[list[Any], str]] = [
            ([error_body(503)], "overloaded"),
            ([error_body(429)], "rate_limited"),
            ([candidate([])], "stream_error"),  # the connection closed before any finishReason
            ([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}], "content_policy"),
        ]
        for events, outcome in cases:
            canned.sse(*events)
            if outcome == "content_policy":
                with pytest.raises(openai.BadRequestError):
                    await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
            else:
                stream = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
                assert (
                    "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                    == "Fake reply to: hello there"
                )
            assert gw.log.last.attempts[0].outcome == outcome

        canned.sse(candidate([{"text": "half"}]))  # ends cleanly, but without a finishReason, after content
        stream = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        assert gw.log.last.attempts[0].outcome == "stream_error" and len(gw.log.last.attempts) == 1

        # thoughts, a parallel pair of calls, finish and cumulative usage spread over fragments
        canned.sse(
            candidate([{"text": "hmm", "thought": True}]),
            candidate(
                [
                    {"functionCall": {"name": "a", "args": {"x": 1}}},
                    {"functionCall": {"id": "g-2", "name": "b", "args": {}}},
                ]
            ),
            {
                **candidate([], "STOP"),
                "usageMetadata": {
                    "promptTokenCount": 5,
                    "candidatesTokenCount": 3,
                    "thoughtsTokenCount": 2,
                    "cachedContentTokenCount": 1,
                    "toolUsePromptTokenCount": 2,
                },
            },
        )
        stream = await gw.client.chat.completions.create(
            model="solo", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
        assert [(tc.index, tc.function.name, tc.function.arguments) for tc in calls] == [
            (0, "a", '{"x":1}'),
            (1, "b", "{}"),
        ]  # type: ignore[union-attr]
        assert calls[1].id == "g-2"  # an upstream id is kept
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "tool_calls"
        ]
        usage = chunks[-1].usage
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            7,
            5,
            12,
        )
        assert (
            usage.prompt_tokens_details.cached_tokens == 1
            and usage.completion_tokens_details.reasoning_tokens == 2
        )  # type: ignore[union-attr]


async def test_stream_cut_after_content_is_an_error(fake: FakeGemini, gw: RunningGateway) -> None:
    fake.add_fault(Fault(cut_after=2))
    stream = await gw.client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "a longer answer to cut short"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert gw.log.last.attempts[0].outcome == "stream_error" and len(gw.log.last.attempts) == 1
