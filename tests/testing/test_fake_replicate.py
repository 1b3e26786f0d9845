"""FakeReplicate is only useful if the official SDK accepts it, so these tests drive it with ``replicate``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError
from replicate.stream import ServerSentEvent

from interlock.testing import FakeReplicate, Fault
from interlock.testing.fake_replicate import failed_prediction, last_user_text, version_id

KEY = "r8_fake_test_key_0123456789"
LLAMA = "meta/meta-llama-3-8b-instruct"
BIG = "meta/meta-llama-3-70b-instruct"
HELLO = {"prompt": "Hello there, how are you today?"}
REPLY = "Fake reply to: Hello there, how are you today?"
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAAAAgAB4iG8MwAAAABJRU5ErkJggg=="


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate(api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeReplicate) -> AsyncIterator[Client]:
    sdk = Client(api_token=KEY, base_url=fake.url)
    sdk.poll_interval = 0.01
    yield sdk
    await sdk._async_client.aclose()  # the SDK has no close(); its httpx client must not leak


async def _stream(client: Client, model: str = LLAMA, **inputs: Any) -> list[ServerSentEvent]:
    return [event async for event in await client.async_stream(model, input=inputs or HELLO)]


def _joined(output: Any) -> str:
    """``run``'s output for a language model: a list of tokens."""
    assert isinstance(output, list)
    return "".join(output)


def _text(events: list[ServerSentEvent]) -> str:
    return "".join(str(e) for e in events)


# -- models and versions -------------------------------------------------------------------------


async def test_models_and_versions(client: Client) -> None:
    page = await client.models.async_list()
    assert [m.id for m in page] == [LLAMA, BIG]
    model = await client.models.async_get(LLAMA)
    assert model.latest_version is not None and model.latest_version.id == version_id(LLAMA)
    assert model.latest_version.openapi_schema["components"]["schemas"]["Output"]["x-cog-array-type"] == "iterator"
    versions = model.versions
    assert [v.id for v in await versions.async_list()] == [version_id(LLAMA)]
    assert (await versions.async_get(version_id(LLAMA))).cog_version
    with pytest.raises(ReplicateError) as missing:
        await client.models.async_get("meta/nope")
    assert missing.value.status == 404 and missing.value.title == "Not found"


# -- predictions ---------------------------------------------------------------------------------


async def test_run_official_model_in_sync_mode(fake: FakeReplicate, client: Client) -> None:
    output = await client.async_run(LLAMA, input=HELLO)
    assert _joined(output) == REPLY
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", f"/v1/models/{LLAMA}/predictions")
    assert sent.headers["authorization"] == f"Bearer {KEY}" and sent.headers["prefer"] == "wait"
    assert sent.json == {"input": HELLO}


async def test_run_by_version_returns_the_token_iterator(fake: FakeReplicate, client: Client) -> None:
    output = await client.async_run(f"{LLAMA}:{version_id(LLAMA)}", input=HELLO)
    assert "".join([token async for token in output]) == REPLY
    create = next(r for r in fake.requests if r.method == "POST")
    assert create.path == "/v1/predictions" and create.json["version"] == version_id(LLAMA)
    assert fake.requests[-1].path == f"/v1/models/{LLAMA}/versions/{version_id(LLAMA)}"


async def test_sync_mode_returns_processing_then_polling_finishes(client: Client) -> None:
    # models.predictions: Predictions.async_create(model=...) drops `wait` before delegating (SDK 1.0.7)
    waited = await client.models.predictions.async_create(model=LLAMA, input=HELLO, wait=True)
    # like the real API: the whole output, but not yet succeeded and without metrics
    assert waited.status == "processing" and "".join(waited.output or []) == REPLY and waited.metrics is None
    done = await client.predictions.async_get(waited.id)
    assert done.status == "succeeded" and done.completed_at
    assert done.metrics is not None and done.metrics["output_token_count"] == 9
    assert done.metrics["input_token_count"] >= 1


async def test_wait_finishes_option() -> None:
    async with FakeReplicate(wait_finishes=True) as fake:
        sdk = Client(api_token="any", base_url=fake.url)
        prediction = await sdk.models.predictions.async_create(model=LLAMA, input=HELLO, wait=5)
        await sdk._async_client.aclose()
    assert prediction.status == "succeeded" and prediction.metrics and prediction.metrics["output_token_count"] == 9
    assert fake.requests[-1].headers["prefer"] == "wait=5"


async def test_create_then_poll_until_done(client: Client) -> None:
    prediction = await client.predictions.async_create(version=version_id(LLAMA), input=HELLO)
    assert prediction.status == "starting" and prediction.output is None
    assert prediction.urls is not None and prediction.urls["stream"].endswith(f"/v1/streams/{prediction.id}")
    await prediction.async_reload()
    assert prediction.status == "processing" and "".join(prediction.output or []) == "Fake reply to: Hello "
    await prediction.async_wait()
    assert prediction.status == "succeeded" and "".join(prediction.output or []) == REPLY


async def test_the_model_answers_the_rendered_prompt(client: Client) -> None:
    transcript = "User: first question\n\nAssistant: first answer\n\nUser: second question\n\nAssistant:"
    output = await client.async_run(LLAMA, input={"prompt": transcript, "system_prompt": "Be terse."})
    assert _joined(output) == "Fake reply to: second question"
    output = await client.async_run(LLAMA, input={"prompt": "what is this", "image": PNG})
    assert _joined(output) == "Fake reply to: what is this (1 image)"
    output = await client.async_run(LLAMA, input={"prompt": "cut me short please", "max_tokens": 2})
    assert _joined(output) == "Fake reply"


def test_last_user_text() -> None:
    assert last_user_text("just one message") == "just one message"
    assert last_user_text("User: a\n\nAssistant: b\n\nUser: c\nstill c\n\nAssistant:") == "c\nstill c"
    assert last_user_text("User: x\n\nTool: 21C\n\nAssistant:") == "x"
    assert last_user_text("Assistant: hi\n\nAssistant:") == ""


async def test_cancel() -> None:
    async with FakeReplicate(hold=True) as fake:
        sdk = Client(api_token="any", base_url=fake.url)
        prediction = await sdk.models.predictions.async_create(model=LLAMA, input=HELLO, wait=True)
        assert prediction.status == "starting"  # hold: the sync wait expired with nothing done
        await prediction.async_reload()
        assert prediction.status == "starting"
        await prediction.async_cancel()
        await sdk._async_client.aclose()
    assert prediction.status == "canceled" and fake.requests[-1].path.endswith("/cancel")


async def test_too_long_input_fails_the_prediction() -> None:
    async with FakeReplicate(max_input_tokens=3) as fake:
        sdk = Client(api_token="any", base_url=fake.url)
        with pytest.raises(ModelError) as info:
            await sdk.async_run(LLAMA, input={"prompt": "a prompt well over three tokens long"})
        assert info.value.prediction.status == "failed"
        assert str(info.value).startswith("Your input is too long. Max input length is 3 tokens")
        with pytest.raises(RuntimeError, match="Your input is too long"):
            await _stream(sdk, prompt="a prompt well over three tokens long")
        await sdk._async_client.aclose()


# -- streaming -----------------------------------------------------------------------------------


async def test_stream_events(fake: FakeReplicate, client: Client) -> None:
    events = await _stream(client)
    kinds = [e.event for e in events]
    assert kinds[0] == ServerSentEvent.EventType.LOGS and kinds[-1] == ServerSentEvent.EventType.DONE
    assert kinds.count(ServerSentEvent.EventType.OUTPUT) == 5 and _text(events) == REPLY
    assert events[-1].data == "{}"
    create, stream = fake.requests[-2:]
    assert create.json["stream"] is True and "prefer" not in create.headers
    pid = next(iter(fake.predictions))
    assert (stream.method, stream.path) == ("GET", f"/v1/streams/{pid}")
    assert stream.headers["accept"] == "text/event-stream" and stream.headers["cache-control"] == "no-store"
    prediction = await client.predictions.async_get(pid)
    assert prediction.status == "succeeded" and prediction.metrics and prediction.metrics["output_token_count"] == 9


async def test_multi_line_tokens_are_split_into_data_lines(client: Client) -> None:
    events = await _stream(client, prompt="line one\nline two")
    assert _text(events) == "Fake reply to: line one\nline two"


async def test_prediction_stream_method(client: Client) -> None:
    prediction = await client.predictions.async_create(model=LLAMA, input=HELLO, stream=True)
    assert _text([e async for e in prediction.async_stream()]) == REPLY


def test_sync_client_in_a_thread() -> None:
    with FakeReplicate(api_key=KEY, chunks=3).run_in_thread() as fake:
        sdk = Client(api_token=KEY, base_url=fake.url)
        try:
            assert _joined(sdk.run(LLAMA, input=HELLO)) == REPLY
            # by version, the SDK reads the version's schema and returns an iterator over the tokens
            assert "".join(sdk.run(f"{LLAMA}:{version_id(LLAMA)}", input=HELLO)) == REPLY
            events = list(sdk.stream(LLAMA, input=HELLO))
            assert len([e for e in events if e.event == ServerSentEvent.EventType.OUTPUT]) == 3
            assert _text(events) == REPLY
            fake.add_fault(Fault(cut_after=1))
            with pytest.raises(httpx.RemoteProtocolError):
                list(sdk.stream(LLAMA, input=HELLO))
        finally:
            sdk._client.close()


# -- errors --------------------------------------------------------------------------------------


async def test_auth(fake: FakeReplicate) -> None:
    sdk = Client(api_token="wrong", base_url=fake.url)
    with pytest.raises(ReplicateError) as info:
        await sdk.async_run(LLAMA, input=HELLO)
    assert info.value.status == 401 and info.value.title == "Unauthenticated"
    await sdk._async_client.aclose()
    # the legacy "Token" scheme is still accepted
    async with httpx.AsyncClient(base_url=fake.url, headers={"Authorization": f"Token {KEY}"}) as http:
        assert (await http.get(f"/v1/models/{LLAMA}")).status_code == 200


@pytest.mark.parametrize(
    ("status", "title"),
    [(402, "Insufficient credit"), (404, "Not found"), (429, "Request was throttled"),
     (500, "Internal server error"), (503, "Service unavailable")],
)  # fmt: skip
async def test_status_faults(fake: FakeReplicate, client: Client, status: int, title: str) -> None:
    fake.add_fault(Fault(status=status, retry_after=2 if status == 429 else None))
    with pytest.raises(ReplicateError) as info:
        await client.async_run(LLAMA, input=HELLO)
    assert info.value.status == status and info.value.title == title and info.value.detail
    assert fake.faults == []
    assert _joined(await client.async_run(LLAMA, input=HELLO)) == REPLY


async def test_retry_after_header(fake: FakeReplicate) -> None:
    fake.add_fault(Fault(status=429, retry_after=2))
    async with httpx.AsyncClient(base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        resp = await http.post(f"/v1/models/{LLAMA}/predictions", json={"input": HELLO})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
    assert resp.json() == {
        "title": "Request was throttled", "detail": "Request was throttled. Expected available in 1 second.", "status": 429,
    }  # fmt: skip


async def test_validation_errors(client: Client) -> None:
    with pytest.raises(ReplicateError) as version:
        await client.predictions.async_create(version="0" * 64, input=HELLO)
    assert version.value.status == 422 and version.value.title == "Invalid version or not permitted"
    with pytest.raises(ReplicateError) as bad_input:
        await client.async_run(LLAMA, input={"prompt": "x", "max_tokens": 0, "temperature": "hot"})
    assert bad_input.value.status == 422 and bad_input.value.title == "Input validation failed"
    assert "input.max_tokens" in (bad_input.value.detail or "") and "input.temperature" in (bad_input.value.detail or "")


async def test_failed_prediction_body_fault(fake: FakeReplicate, client: Client) -> None:
    fake.add_fault(Fault(status=201, body=failed_prediction("Prompt length (1240) exceeds maximum input length (1024).")))
    with pytest.raises(ModelError, match="exceeds maximum input length"):
        await client.async_run(LLAMA, input=HELLO)


async def test_cut_stream_raises(fake: FakeReplicate, client: Client) -> None:
    fake.add_fault(Fault(cut_after=2))
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async for event in await client.async_stream(LLAMA, input=HELLO):
            received.append(str(event))
    assert "".join(received) == "Fake reply to: Hello "  # the logs event, then exactly two output events


async def test_malformed_event_raises(fake: FakeReplicate, client: Client) -> None:
    fake.add_fault(Fault(malformed_at=1))
    with pytest.raises(ValueError, match="not a valid"):  # the SDK's EventType rejects the event name
        await _stream(client)


async def test_error_event_raises(fake: FakeReplicate, client: Client) -> None:
    fake.add_fault(Fault(error_event_at=1))
    with pytest.raises(RuntimeError, match="detail"):
        await _stream(client)
    failed = await client.predictions.async_get(next(iter(fake.predictions)))
    assert failed.status == "failed" and failed.error


async def test_latency_and_ttft_still_succeed(fake: FakeReplicate, client: Client) -> None:
    fake.add_fault(Fault(latency=0.05))
    fake.add_fault(Fault(ttft=0.05))
    assert _joined(await client.async_run(LLAMA, input=HELLO)) == REPLY
    assert _text(await _stream(client)) == REPLY
    assert fake.faults == []


async def test_faults_match_model_and_skip_polls(fake: FakeReplicate, client: Client) -> None:
    fake.add_fault(Fault(status=500, model=BIG))
    assert _joined(await client.async_run(LLAMA, input=HELLO)) == REPLY  # a GET poll does not take it either
    with pytest.raises(ReplicateError):
        await client.predictions.async_create(version=f"{BIG}:{version_id(BIG)}", input=HELLO)
    fake.add_fault(Fault(status=500, path="/v1/predictions"))
    with pytest.raises(ReplicateError):
        await client.predictions.async_create(version=version_id(BIG), input=HELLO)
    assert fake.faults == []


async def test_usage_knob_reaches_the_metrics(fake: FakeReplicate, client: Client) -> None:
    fake.usage = {"input_token_count": 2000, "output_token_count": 500}
    waited = await client.models.predictions.async_create(model=LLAMA, input=HELLO, wait=True)
    assert waited.metrics is None  # still running: no metrics yet, knob or not
    done = await client.predictions.async_get(waited.id)
    assert done.metrics is not None
    assert (done.metrics["input_token_count"], done.metrics["output_token_count"]) == (2000, 500)
    assert done.metrics["predict_time"] == 0.012
