"""FakeCohere is only useful if the official SDK accepts it, so these tests drive it with `cohere`.

The SDK's own behaviour decides what "right" means: it raises its typed errors for the
documented statuses, skips (and logs) an event it cannot parse, surfaces an in-band failure as
a ``message-end`` with ``finish_reason`` ``ERROR``, and raises when the connection drops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import cohere
import httpx
import pytest
from cohere.core.api_error import ApiError

from interlock.testing import FakeCohere, Fault

KEY = "co-test-key"
MODELS = ["command-a-03-2025", "embed-v4.0"]
HELLO: list[Any] = [{"role": "user", "content": "Hello there, how are you today?"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeCohere]:
    async with FakeCohere(models=MODELS, api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeCohere) -> AsyncIterator[cohere.AsyncClientV2]:
    # our own httpx client, closed here: the SDK would otherwise leave its default one open
    async with httpx.AsyncClient() as http:
        yield cohere.AsyncClientV2(api_key=KEY, base_url=fake.base_url, httpx_client=http, max_retries=0)


async def _events(client: cohere.AsyncClientV2, **kwargs: Any) -> list[Any]:
    kwargs.setdefault("messages", HELLO)
    return [event async for event in client.chat_stream(model="command-a-03-2025", **kwargs)]


def _text(events: list[Any]) -> str:
    return "".join(e.delta.message.content.text or "" for e in events if e.type == "content-delta")


# -- chat ------------------------------------------------------------------------------------


async def test_chat_parses_and_hits_the_sdk_path(client: cohere.AsyncClientV2, fake: FakeCohere) -> None:
    response = await client.chat(
        model="command-a-03-2025",
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
    )
    assert response.finish_reason == "COMPLETE"
    assert response.message.content is not None
    assert response.message.content[0].type == "text"
    assert response.message.content[0].text == "Fake reply to: Hello there, how are you today?"
    assert response.usage is not None and response.usage.tokens is not None
    assert response.usage.tokens.input_tokens and response.usage.tokens.output_tokens == 9
    assert response.usage.billed_units is not None and response.usage.billed_units.output_tokens == 9
    request = fake.requests[-1]
    assert request.path == "/v2/chat"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["model"] == "command-a-03-2025"


async def test_image_parts_are_counted(client: cohere.AsyncClientV2) -> None:
    response = await client.chat(
        model="command-a-03-2025",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]}],
    )
    assert response.message.content is not None
    assert response.message.content[0].text == "Fake reply to: what is this (1 image)"


async def test_thinking_and_cached_tokens() -> None:
    async with FakeCohere(models=MODELS, thinking="Let me think.", cached_tokens=3) as fake, httpx.AsyncClient() as http:
        client = cohere.AsyncClientV2(api_key="k", base_url=fake.base_url, httpx_client=http)
        response = await client.chat(model="command-a-03-2025", messages=HELLO)
        events = await _events(client)
    assert response.message.content is not None
    assert [c.type for c in response.message.content] == ["thinking", "text"]
    assert response.message.content[0].thinking == "Let me think."
    assert response.usage is not None and response.usage.cached_tokens == 3
    thinking = "".join(e.delta.message.content.thinking or "" for e in events if e.type == "content-delta")
    assert thinking == "Let me think."
    assert _text(events) == "Fake reply to: Hello there, how are you today?"


async def test_tool_call_and_result(client: cohere.AsyncClientV2) -> None:
    first = await client.chat(model="command-a-03-2025", messages=HELLO, tools=[WEATHER_TOOL])
    assert first.finish_reason == "TOOL_CALL"
    assert first.message.tool_plan
    calls = first.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments or "") == {"city": "text"}
    second = await client.chat(
        model="command-a-03-2025",
        tools=[WEATHER_TOOL],
        messages=[
            *HELLO,
            {"role": "assistant", "tool_plan": first.message.tool_plan,
             "tool_calls": [calls[0].dict(exclude_none=True)]},
            {"role": "tool", "tool_call_id": calls[0].id,
             "content": [{"type": "document", "document": {"data": {"forecast": "sunny"}}}]},
        ],
    )
    assert second.finish_reason == "COMPLETE"
    assert second.message.content is not None
    assert second.message.content[0].text == 'Tool result: {"forecast":"sunny"}'


async def test_tool_choice_none_and_json_schema(client: cohere.AsyncClientV2) -> None:
    plain = await client.chat(model="command-a-03-2025", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="NONE")
    assert plain.finish_reason == "COMPLETE" and not plain.message.tool_calls
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    shaped = await client.chat(
        model="command-a-03-2025", messages=HELLO, response_format={"type": "json_object", "json_schema": schema}
    )
    assert shaped.message.content is not None
    assert json.loads(shaped.message.content[0].text) == {"n": 1}


async def test_stop_sequences_and_max_tokens(client: cohere.AsyncClientV2) -> None:
    stopped = await client.chat(model="command-a-03-2025", messages=HELLO, stop_sequences=["there"])
    assert stopped.finish_reason == "STOP_SEQUENCE"
    assert stopped.message.content is not None and stopped.message.content[0].text == "Fake reply to: Hello "
    cut = await client.chat(model="command-a-03-2025", messages=HELLO, max_tokens=2)
    assert cut.finish_reason == "MAX_TOKENS"
    assert cut.message.content is not None and cut.message.content[0].text == "Fake reply"


async def test_documents_get_citations(client: cohere.AsyncClientV2) -> None:
    documents: Any = [{"id": "doc-1", "data": {"text": "Paris is sunny."}}]
    response = await client.chat(model="command-a-03-2025", messages=HELLO, documents=documents)
    citations = response.message.citations or []
    assert len(citations) == 1 and citations[0].text == "Fake"
    assert citations[0].sources and citations[0].sources[0].id == "doc-1"
    events = await _events(client, documents=documents)
    starts = [e for e in events if e.type == "citation-start"]
    assert len(starts) == 1 and starts[0].delta.message.citations.text == "Fake"


# -- streaming -------------------------------------------------------------------------------


async def test_stream_event_sequence(client: cohere.AsyncClientV2) -> None:
    events = await _events(client)
    types = [e.type for e in events]
    assert types[:2] == ["message-start", "content-start"]
    assert types[-2:] == ["content-end", "message-end"]
    assert set(types[2:-2]) == {"content-delta"}
    assert events[0].id and events[0].delta.message.role == "assistant"
    assert _text(events) == "Fake reply to: Hello there, how are you today?"
    end = events[-1]
    assert end.delta.finish_reason == "COMPLETE"
    assert end.delta.usage.tokens.output_tokens == 9


async def test_stream_tool_call(client: cohere.AsyncClientV2) -> None:
    events = await _events(client, tools=[WEATHER_TOOL])
    types = [e.type for e in events]
    assert types[0] == "message-start" and "tool-plan-delta" in types
    assert types[-2:] == ["tool-call-end", "message-end"]
    start = next(e for e in events if e.type == "tool-call-start")
    # Cohere sends the started call as one object, not a list
    assert start.delta.message.tool_calls.function.name == "get_weather"
    args = "".join(e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta")
    assert json.loads(args) == {"city": "text"}
    assert events[-1].delta.finish_reason == "TOOL_CALL"


# -- embeddings and models -------------------------------------------------------------------


async def test_embed(client: cohere.AsyncClientV2, fake: FakeCohere) -> None:
    result = await client.embed(
        model="embed-v4.0", texts=["alpha", "beta gamma"], input_type="search_document",
        embedding_types=["float"], output_dimension=16,
    )
    vectors = result.embeddings.float_ or []
    assert len(vectors) == 2 and all(len(v) == 16 for v in vectors) and vectors[0] != vectors[1]
    assert result.meta is not None and result.meta.billed_units is not None
    assert result.meta.billed_units.input_tokens == 3
    assert fake.requests[-1].path == "/v2/embed"


async def test_embed_requires_input_type(fake: FakeCohere) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{fake.base_url}/v2/embed", json={"model": "embed-v4.0", "texts": ["a"]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert resp.status_code == 400
    assert resp.json()["message"] == "invalid request: valid input_type must be provided with the provided model"


async def test_models_list(client: cohere.AsyncClientV2) -> None:
    listed = await client.models.list()
    assert [m.name for m in listed.models or []] == MODELS


# -- errors and faults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, cohere.BadRequestError),
        (401, cohere.UnauthorizedError),
        (403, cohere.ForbiddenError),
        (404, cohere.NotFoundError),
        (422, cohere.UnprocessableEntityError),
        (429, cohere.TooManyRequestsError),
        (498, cohere.InvalidTokenError),
        (499, cohere.ClientClosedRequestError),
        (500, cohere.InternalServerError),
        (501, cohere.NotImplementedError),
        (503, cohere.ServiceUnavailableError),
        (504, cohere.GatewayTimeoutError),
    ],
)
async def test_status_faults_raise_the_sdk_error(
    client: cohere.AsyncClientV2, fake: FakeCohere, status: int, error: type[ApiError]
) -> None:
    fake.add_fault(Fault(status=status, retry_after=2 if status == 429 else None))
    with pytest.raises(error) as info:
        await client.chat(model="command-a-03-2025", messages=HELLO)
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["message"] and "id" in info.value.body
    if status == 429:
        assert info.value.headers is not None and info.value.headers["retry-after"] == "2"


async def test_stream_status_fault(client: cohere.AsyncClientV2, fake: FakeCohere) -> None:
    fake.add_fault(Fault(status=429))
    with pytest.raises(cohere.TooManyRequestsError):
        await _events(client)


async def test_bad_key_and_unknown_model(fake: FakeCohere) -> None:
    async with httpx.AsyncClient() as http:
        wrong = cohere.AsyncClientV2(api_key="wrong", base_url=fake.base_url, httpx_client=http)
        with pytest.raises(cohere.UnauthorizedError) as info:
            await wrong.chat(model="command-a-03-2025", messages=HELLO)
        assert info.value.body == {"id": info.value.body["id"], "message": "invalid api token"}
        right = cohere.AsyncClientV2(api_key=KEY, base_url=fake.base_url, httpx_client=http)
        with pytest.raises(cohere.NotFoundError) as missing:
            await right.chat(model="command-z", messages=HELLO)
        assert "model 'command-z' not found" in missing.value.body["message"]


async def test_system_turn_must_come_first(client: cohere.AsyncClientV2) -> None:
    with pytest.raises(cohere.BadRequestError) as info:
        await client.chat(model="command-a-03-2025", messages=[*HELLO, {"role": "system", "content": "late"}])
    assert info.value.body["message"] == "system turn must be the first in the list"


async def test_cut_stream_raises(client: cohere.AsyncClientV2, fake: FakeCohere) -> None:
    fake.add_fault(Fault(cut_after=2))
    seen: list[Any] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async for event in client.chat_stream(model="command-a-03-2025", messages=HELLO):
            seen.append(event)
    assert [e.type for e in seen if e.type == "content-delta"] == ["content-delta"] * 2
    assert all(e.type != "message-end" for e in seen)


async def test_malformed_event_is_skipped_and_logged(
    client: cohere.AsyncClientV2, fake: FakeCohere, caplog: pytest.LogCaptureFixture
) -> None:
    # The SDK does not raise on an unparsable event: it logs a warning and goes on without its data.
    fake.add_fault(Fault(malformed_at=0))
    with caplog.at_level(logging.WARNING):
        events = await _events(client)
    assert "Failed to parse SSE data field as JSON" in caplog.text
    assert events[-1].type == "message-end"
    assert _text(events) == "to: Hello there, how are you today?"  # the first piece ("Fake reply ") is gone


async def test_in_band_error_event(client: cohere.AsyncClientV2, fake: FakeCohere) -> None:
    # Cohere's in-band failure is a message-end with finish_reason ERROR; the SDK hands it over as such.
    fake.add_fault(Fault(error_event_at=1))
    events = await _events(client)
    assert [e.type for e in events].count("content-delta") == 1
    assert events[-1].type == "message-end"
    assert events[-1].delta.finish_reason == "ERROR"
    assert events[-1].delta.error


async def test_latency_and_ttft_still_answer(client: cohere.AsyncClientV2, fake: FakeCohere) -> None:
    fake.add_fault(Fault(latency=0.05))
    fake.add_fault(Fault(ttft=0.05))
    response = await client.chat(model="command-a-03-2025", messages=HELLO)
    assert response.finish_reason == "COMPLETE"
    assert _text(await _events(client)) == "Fake reply to: Hello there, how are you today?"
    assert not fake.faults


async def test_finish_reason_override(fake: FakeCohere, client: cohere.AsyncClientV2) -> None:
    fake.finish_reason = "TIMEOUT"
    response = await client.chat(model="command-a-03-2025", messages=HELLO)
    assert response.finish_reason == "TIMEOUT"
    assert (await _events(client))[-1].delta.finish_reason == "TIMEOUT"


async def test_usage_knob_reaches_the_sdk_plain_and_streamed(fake: FakeCohere, client: cohere.AsyncClientV2) -> None:
    fake.usage = {"billed_units": {"input_tokens": 1200, "output_tokens": 400},
                  "tokens": {"input_tokens": 1391, "output_tokens": 400}}
    plain = await client.chat(model="command-a-03-2025", messages=HELLO)
    ends = [e async for e in client.chat_stream(model="command-a-03-2025", messages=HELLO) if e.type == "message-end"]
    streamed = ends[0].delta.usage if ends[0].delta is not None else None
    for usage in (plain.usage, streamed):
        assert usage is not None and usage.billed_units is not None and usage.tokens is not None
        assert (usage.billed_units.input_tokens, usage.billed_units.output_tokens) == (1200, 400)
        assert usage.tokens.input_tokens == 1391
