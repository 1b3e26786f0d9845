"""The replicate provider through a real gateway: the exact predictions it creates, and what clients get back."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp import web

from interlock.core.provider import ProviderSettings, Secret
from interlock.plugins.providers.translation.replicate import render_prompt
from interlock.plugins.providers.replicate import Replicate
from interlock.testing import FakeOpenAI, FakeReplicate, Fault
from interlock.testing.conformance import PNG, WEATHER_TOOL
from interlock.testing.fake_replicate import failed_prediction, version_id
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

KEY = "r8_provider_test_0123456789abcdef"
MODEL = "meta/meta-llama-3-8b-instruct"
TARGET = f"replicate/{MODEL}"
HI: list[Any] = [{"role": "user", "content": "hi"}]
CREATE_PATH = f"/v1/models/{MODEL}/predictions"


@dataclass
class Env:
    fake: FakeReplicate
    backup: FakeOpenAI
    gw: RunningGateway

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self.gw.client

    @property
    def creates(self) -> list[Any]:
        return [r for r in self.fake.requests if r.method == "POST" and r.path.endswith("/predictions")]

    @property
    def sent(self) -> dict[str, Any]:
        """The last create-prediction body the provider sent."""
        return self.creates[-1].json  # type: ignore[no-any-return]

    @property
    def outcome(self) -> str:
        return self.gw.log.last.attempts[0].outcome


class ScriptedStream(FakeReplicate):
    """FakeReplicate whose stream endpoint sends :attr:`script` verbatim (for broken event sequences)."""

    script: bytes = b""
    final_status: str | None = None  # what the prediction reads as afterwards

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        prediction = self.predictions[request.match_info["id"]]
        prediction.run(finish=True)
        if self.final_status is not None:
            prediction.status, prediction.error = self.final_status, f"prediction was {self.final_status}"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(self.script)
        await response.write_eof()
        return response


async def _env(fake: FakeReplicate | None = None, *, chain: bool = True, **options: Any) -> AsyncIterator[Env]:
    fake = fake or FakeReplicate(api_key=KEY)
    async with fake, FakeOpenAI(models=["gpt-4o-mini"]) as backup:
        base_url = options.pop("base_url", fake.url)
        tables = [
            provider_table("replicate", type="replicate", base_url=base_url, api_key=KEY, **options),
            provider_table("backup", type="openai", base_url=backup.base_url, api_key="sk-backup"),
            "[exporters.ledger]",
            "enabled = false",
        ]
        if chain:
            tables += ["[routes.smart]", f'chain = "{TARGET} > backup/gpt-4o-mini"']
        async with running_gateway("\n".join(tables)) as gw:
            yield Env(fake, backup, gw)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async for e in _env():
        yield e


async def _raw(env: Env, **kwargs: Any) -> dict[str, Any]:
    """The gateway's JSON response body (keeps non-standard fields like ``native_finish_reason``)."""
    kwargs.setdefault("model", TARGET)
    kwargs.setdefault("messages", HI)
    raw = await env.client.chat.completions.with_raw_response.create(**kwargs)
    return json.loads(raw.text)  # type: ignore[no-any-return]


async def _stream(env: Env, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("model", TARGET)
    kwargs.setdefault("messages", HI)
    stream = await env.client.chat.completions.create(stream=True, **kwargs)
    return [chunk.model_dump(exclude_none=True) async for chunk in stream]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- the outgoing request -----------------------------------------------------------------------


async def test_minimal_request_and_response(env: Env) -> None:
    body = await _raw(env)
    create = env.creates[-1]
    assert (create.method, create.path) == ("POST", CREATE_PATH)
    assert create.json == {"input": {"prompt": "hi"}}
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.headers["prefer"] == "wait"  # the default 600 s timeout allows the full 60 s sync wait
    # the sync wait came back "processing" (as the real API does), so the provider polled once
    poll = env.fake.requests[-1]
    assert (poll.method, poll.path) == ("GET", f"/v1/predictions/{body['id']}")
    assert body["id"] in env.fake.predictions and body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Fake reply to: hi"}
    assert choice["finish_reason"] == "stop" and choice["native_finish_reason"] == "succeeded"
    assert body["usage"]["prompt_tokens"] == 1 and body["usage"]["completion_tokens"] == 4
    assert env.gw.log.last.usage is not None and env.gw.log.last.usage.total_tokens == 5


async def test_sync_wait_is_bounded_by_the_timeout() -> None:
    async for env in _env(timeout=7.5):
        await _raw(env)
        assert env.creates[-1].headers["prefer"] == "wait=7"


async def test_finished_sync_response_needs_no_poll() -> None:
    async for env in _env(FakeReplicate(api_key=KEY, wait_finishes=True)):
        body = await _raw(env)
        assert body["choices"][0]["message"]["content"] == "Fake reply to: hi"
        assert [r.method for r in env.fake.requests] == ["POST"]


async def test_system_and_conversation_rendering(env: Env) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny and 21C"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}]},
    ]  # fmt: skip
    body = await _raw(env, messages=messages)
    assert body["choices"][0]["message"]["content"] == "Fake reply to: and tomorrow?"
    assert env.sent["input"] == {
        "prompt": (
            "User: weather in Paris?\n\n"
            'Assistant: [called get_weather({"city":"Paris"})]\n\n'
            "Tool: sunny and 21C\n\n"
            "Assistant: It is sunny.\n\n"
            "User: and tomorrow?\n\n"
            "Assistant:"
        ),
        "system_prompt": "You are terse.\n\nUse metric units.",
    }


def test_render_prompt_edge_cases() -> None:
    assert render_prompt([{"role": "system", "content": "s"}, {"role": "user", "content": "only"}]) == "only"
    # a trailing assistant message is a prefill to continue, so no cue follows it
    assert render_prompt(HI + [{"role": "assistant", "content": "Sure,"}]) == "User: hi\n\nAssistant: Sure,"
    assert render_prompt([{"role": "assistant", "content": "Hello!"}, *HI]) == "Assistant: Hello!\n\nUser: hi\n\nAssistant:"


async def test_sampling_parameters_and_stop(env: Env) -> None:
    await _raw(env, max_tokens=64, temperature=0.2, top_p=0.5, seed=7, stop=["###", "\nUser:"],
               presence_penalty=0.1, frequency_penalty=0.3, user="someone", logit_bias={"1": 1})  # fmt: skip
    assert env.sent["input"] == {
        "prompt": "hi", "max_tokens": 64, "temperature": 0.2, "top_p": 0.5, "seed": 7,
        "stop_sequences": "###,\nUser:", "presence_penalty": 0.1, "frequency_penalty": 0.3,
    }  # fmt: skip
    await _raw(env, max_completion_tokens=9, stop="END")
    assert env.sent["input"] == {"prompt": "hi", "max_tokens": 9, "stop_sequences": "END"}


async def test_max_tokens_reaches_the_model(env: Env) -> None:
    body = await _raw(env, messages=[{"role": "user", "content": "say a lot of words"}], max_tokens=2)
    # Replicate has no length signal: a truncated prediction still "succeeded"
    assert body["choices"][0]["message"]["content"] == "Fake reply"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_input_overrides_are_merged_last() -> None:
    async for env in _env(input_overrides={"top_k": 40, "temperature": 0.9, "prompt_template": "{prompt}"}):
        await _raw(env, temperature=0.1)
        assert env.sent["input"] == {"prompt": "hi", "top_k": 40, "temperature": 0.9, "prompt_template": "{prompt}"}


async def test_version_references(env: Env) -> None:
    version = version_id(MODEL)
    body = await _raw(env, model=f"{TARGET}:{version}")
    assert body["choices"][0]["message"]["content"] == "Fake reply to: hi"
    assert env.creates[-1].path == "/v1/predictions"
    assert env.sent == {"version": version, "input": {"prompt": "hi"}}
    await _raw(env, model=f"replicate/{version}")
    assert env.sent == {"version": version, "input": {"prompt": "hi"}}
    # owner/name:version is Replicate's own naming, so a bare one is detected without the instance prefix
    await _raw(env, model=f"{MODEL}:{version}")
    assert env.sent["version"] == version


async def test_images(env: Env) -> None:
    body = await _raw(env, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": PNG}}]}])  # fmt: skip
    assert body["choices"][0]["message"]["content"] == "Fake reply to: what is this (1 image)"
    assert env.sent["input"] == {"prompt": "what is this", "image": PNG}
    # only one image input exists: the newest one goes, as sent (URLs are not fetched)
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "A pixel."},
        {"role": "user", "content": [{"type": "text", "text": "and this?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
    ]  # fmt: skip
    await _raw(env, messages=messages)
    assert env.sent["input"]["image"] == "https://example.com/cat.png"
    assert env.sent["input"]["prompt"] == "User:\n\nAssistant: A pixel.\n\nUser: and this?\n\nAssistant:"


async def test_tools_without_a_forced_call_are_ignored(env: Env) -> None:
    body = await _raw(env, tools=[WEATHER_TOOL])
    assert body["choices"][0]["message"]["content"] == "Fake reply to: hi"
    assert env.sent == {"input": {"prompt": "hi"}}
    assert env.gw.log.last.attempts[0].provider == "replicate"


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
        {"tools": [WEATHER_TOOL], "tool_choice": "required"},
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"n": 2},
    ],
)
async def test_unsupported_features_fall_back(env: Env, extra: dict[str, Any]) -> None:
    raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=HI, **extra)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert env.outcome == "bad_request" and "Replicate" in (env.gw.log.last.attempts[0].error or "")
    assert not env.creates, "nothing was sent to Replicate"


async def test_unsupported_feature_without_fallback_is_a_400(env: Env) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await env.client.chat.completions.create(model=TARGET, messages=HI, response_format={"type": "json_object"})
    assert "JSON mode" in info.value.message


# -- streaming ----------------------------------------------------------------------------------


async def test_stream_with_usage(env: Env) -> None:
    chunks = await _stream(env, stream_options={"include_usage": True})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert _text(chunks) == "Fake reply to: hi"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] in env.fake.predictions
    create, stream, final = env.fake.requests[-3:]
    assert create.json == {"input": {"prompt": "hi"}, "stream": True} and "prefer" not in create.headers
    assert (stream.method, stream.path) == ("GET", f"/v1/streams/{chunks[0]['id']}")
    assert stream.headers["accept"] == "text/event-stream" and stream.headers["cache-control"] == "no-store"
    assert stream.headers["authorization"] == f"Bearer {KEY}"
    assert (final.method, final.path) == ("GET", f"/v1/predictions/{chunks[0]['id']}")


async def test_stream_content_pieces_and_metered_usage(env: Env) -> None:
    chunks = await _stream(env, messages=[{"role": "user", "content": "stream this answer please"}])
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert pieces == ["Fake reply ", "to: stream ", "this ", "answer ", "please"]
    assert all(c.get("usage") is None for c in chunks)
    assert env.gw.log.last.usage is not None and env.gw.log.last.usage.completion_tokens == 7


async def test_stream_tokens_with_newlines(env: Env) -> None:
    chunks = await _stream(env, messages=[{"role": "user", "content": "line one\n\nline two\n"}])
    assert _text(chunks) == "Fake reply to: line one\n\nline two\n"


async def test_no_metrics_means_no_usage() -> None:
    async for env in _env(FakeReplicate(api_key=KEY, report_metrics=False)):
        body = await _raw(env)
        assert "usage" not in body
        chunks = await _stream(env, stream_options={"include_usage": True})
        assert _text(chunks) == "Fake reply to: hi" and all(c.get("usage") is None for c in chunks)
        assert env.gw.log.last.usage is None


async def test_model_without_a_stream_url_streams_one_chunk() -> None:
    async for env in _env(FakeReplicate(api_key=KEY, streaming=False)):
        chunks = await _stream(env, stream_options={"include_usage": True})
        assert [c["choices"][0]["delta"].get("content") for c in chunks[1:2]] == ["Fake reply to: hi"]
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["total_tokens"] == 5
        assert [r.method for r in env.fake.requests] == ["POST", "GET", "GET"]  # created, then polled


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(401, "auth"), (402, "quota"), (404, "not_found"), (422, "not_found"), (429, "rate_limited"),
     (500, "server_error"), (503, "overloaded")],
)  # fmt: skip
async def test_http_errors_fall_back(env: Env, status: int, outcome: str) -> None:
    env.fake.add_fault(Fault(status=status))
    raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert env.outcome == outcome and env.gw.log.last.attempts[0].status == status


async def test_invalid_input_fails_fast() -> None:
    async for env in _env(input_overrides={"max_tokens": 0}):
        with pytest.raises(openai.BadRequestError) as info:
            await env.client.chat.completions.create(model="smart", messages=HI)
        assert "input.max_tokens" in info.value.message
        assert env.outcome == "bad_request" and not env.backup.requests


async def test_rate_limit_retry_hints() -> None:
    async for env in _env(chain=False):
        env.fake.add_fault(Fault(status=429, retry_after=3))
        with pytest.raises(openai.RateLimitError) as limited:
            await env.client.chat.completions.create(model=TARGET, messages=HI)
        assert limited.value.response.headers["retry-after"] == "3"
        # without Retry-After, Replicate's ratelimit-reset is the hint
        env.fake.add_fault(Fault(status=429, headers={"ratelimit-reset": "7", "ratelimit-remaining": "0"}))
        with pytest.raises(openai.RateLimitError) as reset:
            await env.client.chat.completions.create(model=TARGET, messages=HI)
        assert reset.value.response.headers["retry-after"] == "7"


async def test_unknown_model_and_bad_names(env: Env) -> None:
    with pytest.raises(openai.NotFoundError):
        await env.client.chat.completions.create(model="replicate/meta/no-such-model", messages=HI)
    assert env.outcome == "not_found"
    with pytest.raises(openai.NotFoundError):
        await env.client.chat.completions.create(model="replicate/llama", messages=HI)
    assert "owner/name" in (env.gw.log.last.attempts[0].error or "")


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        ("Your input is too long. Max input length is 4096 tokens, but you supplied 5441 tokens.", "context_length"),
        ("[TensorRT-LLM][ERROR] Cannot process new request: Prompt length (1240) exceeds maximum input length (1024).",
         "context_length"),
        ("E1001 Model Out of Memory", "unknown"),
    ],
)  # fmt: skip
async def test_failed_predictions(env: Env, error: str, outcome: str) -> None:
    env.fake.add_fault(Fault(status=201, body=failed_prediction(error)))
    raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert env.outcome == outcome and error[:40] in (env.gw.log.last.attempts[0].error or "")


async def test_too_long_prompt_fails_while_polling_and_while_streaming() -> None:
    async for env in _env(FakeReplicate(api_key=KEY, max_input_tokens=3, hold=False)):
        long: list[Any] = [{"role": "user", "content": "a prompt well over three tokens long"}]
        raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=long)
        assert raw.headers["x-interlock-provider"] == "backup" and env.outcome == "context_length"
        stream = await env.client.chat.completions.create(model="smart", messages=long, stream=True)
        assert [c async for c in stream]
        assert env.outcome == "context_length"


async def test_canceled_prediction_is_a_failure(env: Env) -> None:
    canceled = failed_prediction("") | {"status": "canceled", "error": None}
    env.fake.add_fault(Fault(status=201, body=canceled))
    raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert "canceled" in (env.gw.log.last.attempts[0].error or "")


async def test_not_a_prediction(env: Env) -> None:
    env.fake.add_fault(Fault(status=201, body={"unexpected": True}))
    raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    assert raw.headers["x-interlock-provider"] == "backup" and env.outcome == "stream_error"


async def test_poll_timeout_cancels_the_prediction() -> None:
    async for env in _env(FakeReplicate(api_key=KEY, hold=True), timeout=0.4):
        raw = await env.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
        assert raw.headers["x-interlock-provider"] == "backup" and env.outcome == "timeout"
        assert env.creates[0].headers["prefer"] == "wait=1"
        assert env.fake.requests[-1].path.endswith("/cancel")
        assert [p.status for p in env.fake.predictions.values()] == ["canceled"]


@pytest.mark.parametrize("fault", [Fault(error_event_at=0), Fault(cut_after=0), Fault(malformed_at=0), Fault(ttft=2)])
async def test_stream_faults_before_content_fall_back(fault: Fault) -> None:
    async for env in _env(timeout=0.5):
        env.fake.add_fault(fault)
        stream = await env.client.chat.completions.create(model="smart", messages=HI, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Fake reply to: hi"
        expected = "timeout" if fault.ttft else "stream_error"
        assert env.outcome == expected and env.gw.log.last.attempts[1].provider == "backup"


async def test_error_event_after_content(env: Env) -> None:
    env.fake.add_fault(Fault(error_event_at=2))
    stream = await env.client.chat.completions.create(model=TARGET, messages=HI, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert env.gw.log.last.attempts[0].outcome == "stream_error"
    assert "Prediction interrupted" in (env.gw.log.last.attempts[0].error or "")


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\nid: 1:0\ndata: {data}\n\n".encode()


@pytest.mark.parametrize(
    ("script", "final_status", "message"),
    [
        (_event("done", '{"reason":"canceled"}'), "canceled", "prediction canceled"),
        (_event("done", '{"reason":"error"}'), None, "ended: error"),
        (_event("logs", "starting"), None, "without a done event"),
        (_event("warning", "x"), None, "unknown event"),
        (_event("done", "not json"), None, "done event is not JSON"),
        (b"event: output\nid: 1:0\ndata: \xff\xfe\n\n", None, "not UTF-8"),
        (_event("error", "plain text failure"), None, "plain text failure"),
    ],
)
async def test_broken_event_sequences(script: bytes, final_status: str | None, message: str) -> None:
    """Each breaks before any content, so the router falls back invisibly."""
    fake = ScriptedStream(api_key=KEY)
    fake.script, fake.final_status = script, final_status
    async for env in _env(fake):
        stream = await env.client.chat.completions.create(model="smart", messages=HI, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Fake reply to: hi"
        attempt = env.gw.log.last.attempts[0]
        assert attempt.outcome == "stream_error" and message in (attempt.error or ""), attempt.error


async def test_logs_events_are_ignored() -> None:
    fake = ScriptedStream(api_key=KEY)
    fake.script = _event("logs", "loading") + _event("output", "Hel") + _event("logs", "x") + _event("output", "lo") + _event("done", "")
    async for env in _env(fake):
        assert _text(await _stream(env)) == "Hello"


# -- config and secrets -------------------------------------------------------------------------


def test_input_overrides_must_be_a_table() -> None:
    settings = ProviderSettings(name="r", type="replicate", api_key=Secret("k"), options={"input_overrides": "top_k=1"})
    assert [key for key, _ in Replicate.validate(settings)] == ["input_overrides"]
    ok = ProviderSettings(name="r", type="replicate", api_key=Secret("k"), options={"input_overrides": {"top_k": 1}})
    assert Replicate.validate(ok) == []
    unknown = ProviderSettings(name="r", type="replicate", api_key=Secret("k"), options={"max_new_tokens": 1})
    assert [key for key, _ in Replicate.validate(unknown)] == ["max_new_tokens"]
    assert Replicate.validate(ProviderSettings(name="r", type="replicate"))[0][0] == "api_key"


async def test_key_from_env_alias_and_v1_base_url() -> None:
    async with FakeReplicate(api_key=KEY) as fake:
        toml = "[server]\nauto_providers = true\n[exporters.ledger]\nenabled = false\n"
        environ = {"REPLICATE_API_KEY": KEY, "REPLICATE_BASE_URL": fake.url + "/v1"}
        async with running_gateway(toml, environ=environ) as gw:
            completion = await gw.client.chat.completions.create(model=TARGET, messages=HI)
        assert completion.choices[0].message.content == "Fake reply to: hi"
        assert fake.requests[0].path == CREATE_PATH and fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert Replicate.key_from_env({"REPLICATE_API_TOKEN": "a", "REPLICATE_API_KEY": "b"}) == "a"


async def test_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async for env in _env(chain=False):
        env.fake.add_fault(Fault(status=401))
        with pytest.raises(openai.APIStatusError) as info:
            await env.client.chat.completions.create(model=TARGET, messages=HI)
        assert KEY not in info.value.message and KEY not in str(info.value.body)
        env.fake.add_fault(Fault(error_event_at=1))
        stream = await env.client.chat.completions.create(model=TARGET, messages=HI, stream=True)
        with pytest.raises(openai.APIError) as broken:
            async for _ in stream:
                pass
        assert KEY not in str(broken.value)
        assert all(KEY not in (a.error or "") for d in env.gw.log.decisions for a in d.attempts)
        assert KEY not in repr(env.gw.gateway.resolver.providers["replicate"].describe())
    assert KEY not in caplog.text


async def test_stream_ending_early_after_content_is_an_error_event() -> None:
    fake = ScriptedStream(api_key=KEY)
    fake.script = _event("output", "Fake ")  # no done event: the connection just ended
    async for env in _env(fake):
        stream = await env.client.chat.completions.create(model="smart", messages=HI, stream=True)
        received: list[str] = []
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                received += [c.delta.content or "" for c in chunk.choices]
        assert "".join(received) == "Fake " and env.outcome == "stream_error"
