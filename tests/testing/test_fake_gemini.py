"""FakeGemini is only useful if Google's official SDK accepts it, so these tests drive it with `google-genai`."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pydantic
import pytest
from google import genai
from google.genai import errors, types

from interlock.testing import FakeGemini, Fault

# google-genai subclasses aiohttp.ClientSession, which aiohttp deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

KEY = "gemini-test-key"
MODEL = "gemini-2.5-flash"
HELLO = "Hello there, how are you today?"
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)  # we want to see the calls, not run them
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={
            "city": types.Schema(type=types.Type.STRING),
            "unit": types.Schema(type=types.Type.STRING, enum=["celsius", "fahrenheit"]),
            "days": types.Schema(type=types.Type.INTEGER),
        },
        required=["city", "unit", "days"],
    ),
)
TIME = types.FunctionDeclaration(
    name="get_time",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"tz": types.Schema(type=types.Type.STRING)}),
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as server:
        yield server


def _client(fake: FakeGemini, version: str = "v1beta", key: str = KEY) -> genai.Client:
    return genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=fake.base_url, api_version=version)
    )


@pytest.fixture
async def client(fake: FakeGemini) -> AsyncIterator[genai.Client]:
    sdk = _client(fake)
    yield sdk
    await sdk.aio.aclose()


def _config(**kwargs: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(automatic_function_calling=NO_AFC, **kwargs)


# -- happy paths ---------------------------------------------------------------------------------


async def test_generate_content_and_request_recording(fake: FakeGemini, client: genai.Client) -> None:
    result = await client.aio.models.generate_content(
        model=MODEL,
        contents=HELLO,
        config=_config(system_instruction="be brief", temperature=0.2, stop_sequences=["\n"]),
    )
    assert result.text == f"Fake reply to: {HELLO}"
    candidate = result.candidates[0]  # type: ignore[index]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.content.role == "model"  # type: ignore[union-attr]
    assert (
        result.model_version == MODEL and result.response_id and result.response_id.startswith("fake-gemini-")
    )
    usage = result.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count == 9
    assert usage.total_token_count == usage.prompt_token_count + 9

    recorded = fake.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", f"/v1beta/models/{MODEL}:generateContent")
    assert recorded.headers["x-goog-api-key"] == KEY
    assert recorded.json["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert recorded.json["generationConfig"]["temperature"] == 0.2


async def test_stream_matches_non_stream(fake: FakeGemini, client: genai.Client) -> None:
    plain = await client.aio.models.generate_content(model=MODEL, contents=HELLO)
    chunks = [c async for c in await client.aio.models.generate_content_stream(model=MODEL, contents=HELLO)]
    assert len(chunks) == 5
    assert "".join(c.text or "" for c in chunks) == plain.text
    assert [c.candidates[0].finish_reason for c in chunks][-1] == types.FinishReason.STOP  # type: ignore[index]
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])  # type: ignore[index]
    assert len({c.response_id for c in chunks}) == 1
    assert chunks[-1].usage_metadata.total_token_count == plain.usage_metadata.total_token_count  # type: ignore[union-attr]
    assert fake.requests[-1].query == {"alt": "sse"} and fake.requests[-1].path.endswith(
        ":streamGenerateContent"
    )


async def test_raw_sse_wire_format(fake: FakeGemini) -> None:
    """No [DONE], no event names: each event is one whole GenerateContentResponse."""
    async with aiohttp.ClientSession() as http:
        url = f"{fake.base_url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with http.post(url, json=body, headers={"x-goog-api-key": KEY}) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = await resp.text()
    events = [e for e in raw.split("\r\n\r\n") if e]
    assert all(e.startswith("data: {") for e in events) and "[DONE]" not in raw
    assert json.loads(events[-1][6:])["candidates"][0]["finishReason"] == "STOP"


async def test_images_are_counted(client: genai.Client) -> None:
    png = types.Part.from_bytes(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png")
    result = await client.aio.models.generate_content(
        model=MODEL, contents=[types.Content(role="user", parts=[types.Part(text="What is this?"), png])]
    )
    assert result.text == "Fake reply to: What is this? (1 image)"


async def test_function_call_round_trip(fake: FakeGemini, client: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[WEATHER, TIME])]
    first = await client.aio.models.generate_content(model=MODEL, contents=HELLO, config=_config(tools=tools))
    calls = first.function_calls
    assert calls is not None and len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].args == {"city": "text", "unit": "celsius", "days": 1}
    assert first.candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]

    history = [
        types.Content(role="user", parts=[types.Part(text=HELLO)]),
        first.candidates[0].content,  # type: ignore[index]
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"content": "Sunny, 21"})],
        ),
    ]
    second = await client.aio.models.generate_content(
        model=MODEL, contents=history, config=_config(tools=tools)
    )
    assert second.text == "Tool result: Sunny, 21"

    forced = _config(
        tools=tools,
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_time"]
            )
        ),
    )
    named = await client.aio.models.generate_content(model=MODEL, contents=HELLO, config=forced)
    assert named.function_calls[0].name == "get_time"  # type: ignore[index]
    off = _config(
        tools=tools,
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
        ),
    )
    none = await client.aio.models.generate_content(model=MODEL, contents=HELLO, config=off)
    assert none.function_calls is None and none.text

    stream = await client.aio.models.generate_content_stream(
        model=MODEL, contents=HELLO, config=_config(tools=tools)
    )
    streamed = [c async for c in stream]
    assert [fc.name for c in streamed for fc in c.function_calls or ()] == ["get_weather"]


async def test_thoughts_cache_and_signatures() -> None:
    signature = base64.b64encode(b"opaque-signature").decode()
    async with FakeGemini(thoughts="Let me think", cached_tokens=4, thought_signature=signature) as fake:
        client = _client(fake)
        try:
            tools = [types.Tool(function_declarations=[WEATHER])]
            result = await client.aio.models.generate_content(
                model=MODEL, contents="hi", config=_config(tools=tools)
            )
            parts = result.candidates[0].content.parts  # type: ignore[index,union-attr]
            assert parts[0].thought is True and parts[0].text == "Let me think"  # type: ignore[index]
            assert (
                parts[1].function_call.name == "get_weather"
                and parts[1].thought_signature == b"opaque-signature"
            )  # type: ignore[index,union-attr]
            usage = result.usage_metadata
            assert usage.thoughts_token_count == 3 and usage.cached_content_token_count == 4  # type: ignore[union-attr]
            assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + 3  # type: ignore[union-attr,operator]
            text = await client.aio.models.generate_content(model=MODEL, contents="hi")
            assert text.text == "Fake reply to: hi"  # the SDK's .text leaves thoughts out
        finally:
            await client.aio.aclose()


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]


async def test_json_modes(client: genai.Client) -> None:
    plain = await client.aio.models.generate_content(
        model=MODEL, contents=HELLO, config=_config(response_mime_type="application/json")
    )
    assert json.loads(plain.text or "") == {"reply": f"Fake reply to: {HELLO}"}
    typed = await client.aio.models.generate_content(
        model=MODEL,
        contents=HELLO,
        config=_config(response_mime_type="application/json", response_schema=Person),
    )
    assert typed.parsed == Person(name="text", age=1, tags=[])
    raw = await client.aio.models.generate_content(
        model=MODEL,
        contents=HELLO,
        config=_config(
            response_mime_type="application/json",
            response_json_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
        ),
    )
    assert json.loads(raw.text or "") == {"ok": True}


async def test_candidates_and_max_tokens(client: genai.Client) -> None:
    two = await client.aio.models.generate_content(
        model=MODEL, contents=HELLO, config=_config(candidate_count=2)
    )
    assert [c.index for c in two.candidates or ()] == [0, 1]
    short = await client.aio.models.generate_content(
        model=MODEL, contents=HELLO, config=_config(max_output_tokens=3)
    )
    assert (
        short.text == "Fake reply to:" and short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    )  # type: ignore[index]


async def test_embeddings(fake: FakeGemini, client: genai.Client) -> None:
    result = await client.aio.models.embed_content(
        model="gemini-embedding-001",
        contents=["a b", "c"],
        config=types.EmbedContentConfig(output_dimensionality=16),
    )
    vectors = [e.values or [] for e in result.embeddings or ()]
    assert len(vectors) == 2 and all(len(v) == 16 for v in vectors) and vectors[0] != vectors[1]
    assert math.isclose(math.fsum(v * v for v in vectors[0]), 1.0, rel_tol=1e-5)
    assert fake.requests[-1].path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"


async def test_models_list_and_get(client: genai.Client) -> None:
    names = [m.name async for m in await client.aio.models.list()]
    assert names == ["models/gemini-2.5-flash", "models/gemini-2.5-pro", "models/gemini-embedding-001"]
    model = await client.aio.models.get(model="gemini-2.5-pro")
    assert model.name == "models/gemini-2.5-pro" and "generateContent" in (model.supported_actions or [])


async def test_api_versions_and_vertex_paths(fake: FakeGemini) -> None:
    client = _client(fake, version="v1")
    try:
        assert (
            await client.aio.models.generate_content(model=MODEL, contents="hi")
        ).text == "Fake reply to: hi"
    finally:
        await client.aio.aclose()
    assert fake.requests[-1].path.startswith("/v1/models/")
    async with aiohttp.ClientSession() as http:  # Vertex AI's resource path, same body and answer
        url = (
            f"{fake.url}/v1/projects/p/locations/us-central1/publishers/google/models/{MODEL}:generateContent"
        )
        async with http.post(
            url,
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": KEY},
        ) as resp:
            assert (await resp.json())["candidates"][0]["content"]["parts"][0]["text"] == "Fake reply to: hi"
        async with http.get(f"{fake.url}/_fake/requests") as resp:  # control endpoints stay reachable
            assert resp.status == 200 and len(await resp.json()) == len(fake.requests)


# -- validation and errors -----------------------------------------------------------------------


async def test_request_validation(fake: FakeGemini, client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as missing:
        await client.aio.models.generate_content(model="gemini-0-nope", contents="hi")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"

    bad_key = _client(fake, key="wrong")
    try:
        with pytest.raises(errors.ClientError) as denied:
            await bad_key.aio.models.generate_content(model=MODEL, contents="hi")
    finally:
        await bad_key.aio.aclose()
    assert (
        denied.value.code == 400
        and denied.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    )

    url = f"{fake.base_url}/v1beta/models/{MODEL}:generateContent"
    cases: list[tuple[Any, str]] = [
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": []}, "contents is not specified"),
        (
            {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "temperature": 1},
            'Unknown name "temperature"',
        ),
        (
            {
                "contents": [{"role": "user", "parts": [{"text": "x"}]}],
                "tools": [
                    {
                        "functionDeclarations": [
                            {"name": "f", "parameters": {"type": "object", "additionalProperties": False}}
                        ]
                    }
                ],
            },
            'Unknown name "additionalProperties"',
        ),
    ]
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as http:
        for body, needle in cases:
            async with http.post(url, json=body) as resp:
                error = (await resp.json())["error"]
                assert (
                    resp.status == 400
                    and error["status"] == "INVALID_ARGUMENT"
                    and needle in error["message"]
                )


@pytest.mark.parametrize(
    ("status", "exc", "canonical"),
    [
        (400, errors.ClientError, "INVALID_ARGUMENT"),
        (403, errors.ClientError, "PERMISSION_DENIED"),
        (404, errors.ClientError, "NOT_FOUND"),
        (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
        (500, errors.ServerError, "INTERNAL"),
        (503, errors.ServerError, "UNAVAILABLE"),
        (504, errors.ServerError, "DEADLINE_EXCEEDED"),
    ],
)
async def test_status_faults(
    fake: FakeGemini, client: genai.Client, status: int, exc: type[errors.APIError], canonical: str
) -> None:
    fake.add_fault(Fault(status=status))
    with pytest.raises(exc) as info:
        await client.aio.models.generate_content(model=MODEL, contents="hi")
    assert info.value.code == status and info.value.status == canonical
    # the fault is used up: the next call succeeds
    assert (await client.aio.models.generate_content(model=MODEL, contents="hi")).text == "Fake reply to: hi"


async def test_rate_limit_body_and_retry_after(fake: FakeGemini) -> None:
    fake.add_fault(Fault(status=429, retry_after=7))
    async with aiohttp.ClientSession() as http:
        url = f"{fake.base_url}/v1beta/models/{MODEL}:generateContent"
        async with http.post(
            url, json={"contents": [{"parts": [{"text": "x"}]}]}, headers={"x-goog-api-key": KEY}
        ) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "7"
            details = (await resp.json())["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "19s"} in details


async def test_latency_and_ttft_faults_still_answer(fake: FakeGemini, client: genai.Client) -> None:
    fake.add_fault(Fault(latency=0.05))
    assert (await client.aio.models.generate_content(model=MODEL, contents="hi")).text == "Fake reply to: hi"
    fake.add_fault(Fault(ttft=0.05))
    chunks = [c async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="hi")]
    assert "".join(c.text or "" for c in chunks) == "Fake reply to: hi"
    assert not fake.faults


async def _drain(client: genai.Client) -> str:
    text = ""
    async for chunk in await client.aio.models.generate_content_stream(
        model=MODEL, contents="a longer answer to break"
    ):
        text += chunk.text or ""
    return text


async def test_cut_stream_raises(fake: FakeGemini, client: genai.Client) -> None:
    fake.add_fault(Fault(cut_after=2))
    with pytest.raises(aiohttp.ClientPayloadError):
        await _drain(client)


async def test_malformed_event_raises(fake: FakeGemini, client: genai.Client) -> None:
    fake.add_fault(Fault(malformed_at=1))
    with pytest.raises(errors.UnknownApiResponseError):
        await _drain(client)


async def test_in_band_error_event_raises(fake: FakeGemini, client: genai.Client) -> None:
    fake.add_fault(Fault(error_event_at=1))
    with pytest.raises(errors.ServerError) as info:
        await _drain(client)
    assert info.value.code == 500 and info.value.status == "INTERNAL"


async def test_usage_knob_reaches_the_sdk_plain_and_streamed() -> None:
    usage = {
        "promptTokenCount": 12000, "cachedContentTokenCount": 8000, "candidatesTokenCount": 700,
        "thoughtsTokenCount": 1300, "totalTokenCount": 14000,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9000}, {"modality": "AUDIO", "tokenCount": 3000}],
    }  # fmt: skip
    async with FakeGemini(usage=usage) as fake:
        client = _client(fake)
        try:
            plain = await client.aio.models.generate_content(model=MODEL, contents="hi")
            chunks = [c async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="hi")]
        finally:
            await client.aio.aclose()
    assert plain.text == "Fake reply to: hi"
    assert chunks[0].usage_metadata is not None and chunks[0].usage_metadata.prompt_token_count == 12000
    for meta in (plain.usage_metadata, chunks[-1].usage_metadata):
        assert meta is not None and meta.prompt_tokens_details is not None
        assert (meta.prompt_token_count, meta.cached_content_token_count, meta.thoughts_token_count) == (12000, 8000, 1300)
        assert [(d.modality, d.token_count) for d in meta.prompt_tokens_details] == [
            (types.MediaModality.TEXT, 9000), (types.MediaModality.AUDIO, 3000),
        ]  # the list replaces the fake's own
