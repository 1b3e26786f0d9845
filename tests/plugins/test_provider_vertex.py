"""The vertex provider through a real gateway: URLs, OAuth2 tokens, both publishers' translation, errors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import struct
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from interlock.core import config as config_mod
from interlock.core.config import ConfigError
from interlock.core.gateway import Gateway
from interlock.plugins.providers import _vertex_auth
from interlock.plugins.providers.vertex import Vertex, api_host, publisher_of
from interlock.testing import FakeVertex, Fault
from interlock.testing._replies import embed
from interlock.testing.fake_vertex import google_error
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

PROJECT, LOCATION = "acme-prod", "europe-west4"
GEMINI, CLAUDE = "gemini-2.5-flash", "claude-sonnet-4-5@20250929"
ROOT = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers"
HI = [{"role": "user", "content": "hi"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeVertex]:
    async with FakeVertex(project=PROJECT, location=LOCATION) as server:
        yield server


def vertex_toml(fake: FakeVertex, **options: Any) -> str:
    values: dict[str, Any] = {"type": "vertex", "base_url": fake.url, "project": PROJECT, "location": LOCATION,
                              "credentials_file": fake.credentials_file, **options}
    return provider_table("vertex", **{k: v for k, v in values.items() if v is not None}) + "[exporters.ledger]\nenabled = false\n"


@contextlib.asynccontextmanager
async def gateway(fake: FakeVertex, environ: dict[str, str] | None = None, **options: Any) -> AsyncIterator[RunningGateway]:
    async with running_gateway(vertex_toml(fake, **options), environ=environ or {}) as gw:
        yield gw


def provider(gw: RunningGateway) -> Vertex:
    p = gw.gateway.providers["vertex"]
    assert isinstance(p, Vertex)
    return p


async def stream_text(client: openai.AsyncOpenAI, **kwargs: Any) -> tuple[str, list[Any]]:
    stream = await client.chat.completions.create(stream=True, **kwargs)
    chunks = [c async for c in stream]
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


# -- routing and URLs ------------------------------------------------------------------------------


def test_publisher_and_host() -> None:
    assert publisher_of("claude-sonnet-4-5@20250929") == "anthropic" and publisher_of("gemini-2.5-pro") == "google"
    assert publisher_of("text-embedding-005") == "google"
    assert api_host("us-central1") == "https://us-central1-aiplatform.googleapis.com"
    assert api_host("global") == "https://aiplatform.googleapis.com"
    assert api_host("eu") == "https://aiplatform.eu.rep.googleapis.com"


async def test_default_host_comes_from_location(fake: FakeVertex) -> None:
    toml = vertex_toml(fake, base_url=None, location="asia-northeast1")
    async with running_gateway(toml, environ={}) as gw:
        vertex = provider(gw)
        assert vertex.url(CLAUDE, "rawPredict") == (
            "https://asia-northeast1-aiplatform.googleapis.com/v1/projects/acme-prod/locations/asia-northeast1"
            f"/publishers/anthropic/models/{CLAUDE}:rawPredict"
        )


async def test_gemini_request_and_response(fake: FakeVertex) -> None:
    fake.gemini.cached_tokens, fake.gemini.thoughts = 3, "let me think"
    async with gateway(fake) as gw:
        result = await gw.client.chat.completions.create(
            model=f"vertex/{GEMINI}",
            messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"},
                      {"role": "assistant", "content": "hi!"}, {"role": "user", "content": "and now?"}],
            max_tokens=50, temperature=0.3, stop=["END"], response_format={"type": "json_object"},
        )
    sent = fake.requests[-1]
    assert sent.path == f"{ROOT}/google/models/{GEMINI}:generateContent" and sent.query == {}
    assert sent.headers["authorization"].removeprefix("Bearer ") in fake.tokens
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [c["role"] for c in sent.json["contents"]] == ["user", "model", "user"]
    assert sent.json["generationConfig"] == {
        "temperature": 0.3, "maxOutputTokens": 50, "stopSequences": ["END"], "responseMimeType": "application/json",
    }
    choice = result.choices[0]
    assert choice.message.content == '{"reply":"Fake reply to: and now?"}' and choice.finish_reason == "stop"
    assert choice.model_extra and choice.model_extra["native_finish_reason"] == "STOP"
    assert choice.message.model_extra and choice.message.model_extra["reasoning_content"] == "let me think"
    usage = result.usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert usage.prompt_tokens_details.cached_tokens == 3 and usage.completion_tokens_details.reasoning_tokens == 3
    assert usage.completion_tokens == 5 + 3  # the answer's five words + the thoughts' three


async def test_gemini_tools_stream_and_finish_reasons(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        first = await gw.client.chat.completions.create(
            model=f"vertex/{GEMINI}", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        sent = fake.requests[-1].json
        assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
        assert first.choices[0].finish_reason == "tool_calls"
        call = (first.choices[0].message.tool_calls or [])[0]
        assert call.function.name == "get_weather" and call.function.arguments == '{"city":"text"}'

        text, chunks = await stream_text(gw.client, model=f"vertex/{GEMINI}", messages=HI,
                                         stream_options={"include_usage": True})
        assert text == "Fake reply to: hi" and chunks[-1].usage is not None
        assert fake.requests[-1].path.endswith(f"/{GEMINI}:streamGenerateContent") and fake.requests[-1].query == {"alt": "sse"}

        short = await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI, max_tokens=2)
        assert short.choices[0].finish_reason == "length"
        assert short.choices[0].model_extra and short.choices[0].model_extra["native_finish_reason"] == "MAX_TOKENS"

        blocked = {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "SAFETY"}],
                   "usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 1}}
        fake.add_fault(Fault(status=200, body=blocked))
        filtered = await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        assert filtered.choices[0].finish_reason == "content_filter"


async def test_claude_request_and_response(fake: FakeVertex) -> None:
    fake.claude.cache_read_tokens = 5
    async with gateway(fake, max_tokens_default=1000) as gw:
        result = await gw.client.chat.completions.create(
            model=f"vertex/{CLAUDE}", messages=[{"role": "system", "content": "Be terse."}, *HI], temperature=1.5,
        )
    sent = fake.requests[-1]
    assert sent.path == f"{ROOT}/anthropic/models/{CLAUDE}:rawPredict"
    assert sent.headers["authorization"].removeprefix("Bearer ") in fake.tokens
    assert "anthropic-version" not in sent.headers and "x-api-key" not in sent.headers
    assert sent.json == {
        "anthropic_version": "vertex-2023-10-16", "max_tokens": 1000, "system": "Be terse.",
        "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0,
    }
    choice = result.choices[0]
    assert choice.message.content == "Fake reply to: hi" and choice.finish_reason == "stop"
    assert choice.model_extra and choice.model_extra["native_finish_reason"] == "end_turn"
    assert result.usage is not None and result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 5


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("refusal", "content_filter"), ("stop_sequence", "stop")],
)
async def test_claude_finish_reasons(fake: FakeVertex, stop_reason: str, finish: str) -> None:
    fake.claude.stop_reason = stop_reason
    async with gateway(fake) as gw:
        result = await gw.client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=HI)
        _, chunks = await stream_text(gw.client, model=f"vertex/{CLAUDE}", messages=HI)
    assert result.choices[0].finish_reason == finish
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [finish]


async def test_claude_stream_and_tools(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        text, chunks = await stream_text(gw.client, model=f"vertex/{CLAUDE}", messages=HI,
                                         stream_options={"include_usage": True})
        sent = fake.requests[-1]
        assert sent.path == f"{ROOT}/anthropic/models/{CLAUDE}:streamRawPredict"
        assert sent.json["stream"] is True and "model" not in sent.json and sent.json["max_tokens"] == 4096
        assert text == "Fake reply to: hi" and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4

        first = await gw.client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=[{"role": "user", "content": "w?"}],
                                                        tools=[WEATHER])
        call = (first.choices[0].message.tool_calls or [])[0]
        assert first.choices[0].finish_reason == "tool_calls" and call.id.startswith("toolu_")
        follow = [{"role": "user", "content": "w?"}, first.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        second = await gw.client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=follow, tools=[WEATHER])
        assert second.choices[0].message.content == "Tool result: sunny"
        turns = fake.requests[-1].json["messages"]
        assert turns[1]["content"][0]["type"] == "tool_use"
        assert turns[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}


async def test_bare_claude_at_version_resolves_to_vertex(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        result = await gw.client.chat.completions.create(model=CLAUDE, messages=HI)
    assert result.choices[0].message.content == "Fake reply to: hi"
    assert fake.requests[-1].path.endswith(f"/anthropic/models/{CLAUDE}:rawPredict")


# -- embeddings ------------------------------------------------------------------------------------


async def test_text_embeddings(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        result = await gw.client.embeddings.create(model="vertex/text-embedding-005", input=["alpha", "beta gamma"],
                                                   dimensions=4)
        sent = fake.requests[-1]
        assert sent.path == f"{ROOT}/google/models/text-embedding-005:predict"
        assert sent.json == {"instances": [{"content": "alpha"}, {"content": "beta gamma"}],
                             "parameters": {"outputDimensionality": 4}}
        assert [len(d.embedding) for d in result.data] == [4, 4]
        assert result.usage.prompt_tokens == 3  # the token_count statistics, summed
        raw = await gw.client.embeddings.with_raw_response.create(model="vertex/text-embedding-005", input="alpha",
                                                                   encoding_format="base64")
        packed = raw.http_response.json()["data"][0]["embedding"]
        assert list(struct.unpack("<8f", base64.b64decode(packed))) == pytest.approx(embed("alpha", 8))


async def test_gemini_embedding_sends_one_instance_per_call(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        result = await gw.client.embeddings.create(model="vertex/gemini-embedding-001", input=["a", "b", "c"])
    calls = [r for r in fake.requests if r.path.endswith(":predict")]
    assert len(calls) == 3 and all(len(r.json["instances"]) == 1 for r in calls)
    assert sorted(r.json["instances"][0]["content"] for r in calls) == ["a", "b", "c"]
    assert [d.index for d in result.data] == [0, 1, 2] and result.data[0].embedding != result.data[1].embedding
    assert fake.token_grants == 1  # concurrent calls share one token


async def test_claude_has_no_embeddings(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        with pytest.raises(openai.NotFoundError):
            await gw.client.embeddings.create(model=f"vertex/{CLAUDE}", input="x")
        assert gw.log.last.attempts[0].outcome == "not_found"


# -- tokens ----------------------------------------------------------------------------------------


async def test_token_fetched_once_and_reused(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        await stream_text(gw.client, model=f"vertex/{CLAUDE}", messages=HI)
        await gw.client.embeddings.create(model="vertex/text-embedding-005", input="x")
        tokens = {r.headers["authorization"] for r in fake.requests if r.path != "/token"}
        assert fake.token_grants == 1 and len(tokens) == 1 and provider(gw).tokens.fetches == 1


async def test_concurrent_requests_share_one_refresh(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        await asyncio.gather(*(gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI) for _ in range(8)))
    assert fake.token_grants == 1


async def test_token_refreshed_when_about_to_expire(fake: FakeVertex) -> None:
    fake.token_lifetime = 60  # inside the five-minute refresh margin: stale as soon as it arrives
    async with gateway(fake) as gw:
        await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        await gw.client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=HI)
        assert fake.token_grants == 2
        first, second = (r.headers["authorization"] for r in fake.requests if r.path != "/token")
        assert first != second
        fake.token_lifetime = 3599
        await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        assert fake.token_grants == 3  # a long-lived token is kept again


async def test_rejected_token_is_dropped_and_replaced(fake: FakeVertex) -> None:
    async with gateway(fake) as gw:
        await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        fake.revoke_tokens()
        with pytest.raises(openai.APIStatusError):
            await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        assert gw.log.last.attempts[0].outcome == "auth"
        result = await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
    assert result.choices[0].message.content == "Fake reply to: hi" and fake.token_grants == 2


async def test_refresh_runs_off_the_event_loop(fake: FakeVertex, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    original = _vertex_auth.AccessTokens._refresh

    def spy(self: _vertex_auth.AccessTokens) -> tuple[str, float | None]:
        threads.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(_vertex_auth.AccessTokens, "_refresh", spy)
    async with gateway(fake) as gw:
        await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
    assert len(threads) == 1 and threads[0] != threading.main_thread().name


async def test_application_default_credentials(fake: FakeVertex, monkeypatch: pytest.MonkeyPatch) -> None:
    # no credentials_file and none in the gateway's environment: google.auth.default() finds the
    # process's GOOGLE_APPLICATION_CREDENTIALS (set here, so it never reaches for a metadata server)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", fake.credentials_file)
    async with gateway(fake, credentials_file=None) as gw:
        assert provider(gw).tokens.credentials_file is None
        result = await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
    assert result.choices[0].message.content == "Fake reply to: hi" and fake.token_grants == 1


async def test_token_never_logged_or_returned(fake: FakeVertex, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(fake) as gw:
        await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        fake.add_fault(Fault(status=401))
        with pytest.raises(openai.APIStatusError) as info:
            await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        described = str(provider(gw).describe())
    issued = [r.headers["authorization"].removeprefix("Bearer ") for r in fake.requests if r.path != "/token"]
    assert issued
    for token in issued:
        assert token not in caplog.text and token not in str(info.value.body) and token not in described
    private_key = fake.service_account_info()["private_key"].splitlines()[1]
    assert private_key not in caplog.text


# -- errors ----------------------------------------------------------------------------------------

RETRY_INFO = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "19s"}]


@pytest.mark.parametrize(
    ("model", "status", "body", "outcome"),
    [
        (GEMINI, 429, google_error(429, details=RETRY_INFO), "rate_limited"),
        (GEMINI, 503, None, "overloaded"),
        (GEMINI, 500, None, "server_error"),
        (GEMINI, 504, None, "timeout"),
        (GEMINI, 401, None, "auth"),
        (GEMINI, 403, None, "auth"),
        (GEMINI, 404, None, "not_found"),
        (GEMINI, 400, google_error(400, "The input token count (1200293) exceeds the maximum number of tokens allowed "
                                        "(1048576)."), "context_length"),
        (GEMINI, 400, google_error(400, "Project `acme-prod` is not allowed to use Publisher Model", status="FAILED_PRECONDITION"),
         "auth"),
        (GEMINI, 400, None, "bad_request"),
        (CLAUDE, 429, google_error(429, "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model"),
         "rate_limited"),
        (CLAUDE, 529, None, "overloaded"),
        (CLAUDE, 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": "prompt is too long: 208310 tokens > 200000 maximum"}},
         "context_length"),
        (CLAUDE, 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "messages: bad"}}, "bad_request"),
    ],
)
async def test_errors_are_classified(fake: FakeVertex, model: str, status: int, body: Any, outcome: str) -> None:
    fake.add_fault(Fault(status=status, body=body))
    async with gateway(fake) as gw:
        with pytest.raises(openai.APIStatusError):
            await gw.client.chat.completions.create(model=f"vertex/{model}", messages=HI)
        attempt = gw.log.last.attempts[0]
    assert attempt.outcome == outcome
    # Google's FAILED_PRECONDITION (project not allowed to use the model) is this instance's problem: 403
    assert attempt.status == (403 if body and body["error"].get("status") == "FAILED_PRECONDITION" else status)


async def test_retry_info_becomes_retry_after(fake: FakeVertex) -> None:
    fake.add_fault(Fault(status=429, body=google_error(429, details=RETRY_INFO)))
    async with gateway(fake) as gw:
        with pytest.raises(openai.RateLimitError) as info:
            await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
    assert info.value.response.headers["retry-after"] == "19"


@pytest.mark.parametrize("model", [GEMINI, CLAUDE])
@pytest.mark.parametrize("fault", [Fault(cut_after=0), Fault(malformed_at=0), Fault(error_event_at=0)], ids=repr)
async def test_stream_failures_are_stream_errors(fake: FakeVertex, model: str, fault: Fault) -> None:
    fake.add_fault(fault)
    async with gateway(fake) as gw:
        with pytest.raises(openai.APIError):
            await stream_text(gw.client, model=f"vertex/{model}", messages=HI)
        outcome = gw.log.last.attempts[0].outcome
    # Claude's in-band error event is overloaded_error; everything else is a broken stream
    assert outcome == ("overloaded" if model == CLAUDE and fault.error_event_at is not None else "stream_error")


async def test_token_endpoint_refusal_is_an_auth_failure(fake: FakeVertex) -> None:
    fake.token_error = (400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    async with gateway(fake) as gw:
        with pytest.raises(openai.APIStatusError):
            await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        attempt = gw.log.last.attempts[0]
    assert attempt.outcome == "auth" and "Invalid JWT Signature" in (attempt.error or "")
    assert not [r for r in fake.requests if r.path != "/token"]  # no API call without a token


async def test_unreachable_token_endpoint_is_a_connection_failure(fake: FakeVertex, tmp_path: Path) -> None:
    info = {**fake.service_account_info(), "token_uri": "http://127.0.0.1:9/token"}  # nothing listens on port 9
    key = tmp_path / "sa.json"
    key.write_text(__import__("json").dumps(info))
    async with gateway(fake, credentials_file=str(key)) as gw:
        with pytest.raises(openai.APIStatusError):
            await gw.client.chat.completions.create(model=f"vertex/{GEMINI}", messages=HI)
        assert gw.log.last.attempts[0].outcome == "connection"


# -- config ----------------------------------------------------------------------------------------


def _build(toml: str, tmp_path: Path, environ: dict[str, str] | None = None) -> Gateway:
    path = tmp_path / "interlock.toml"
    path.write_text(toml)
    env = environ or {}
    return Gateway(config_mod.load(str(path), environ=env), load_entrypoints=False, environ=env)


def _problems(toml: str, tmp_path: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        _build(toml, tmp_path, environ)
    return dict(info.value.problems)


def test_config_problems(tmp_path: Path) -> None:
    problems = _problems(
        '[providers.vertex]\napi_key = "k"\nlocation = "Europe West"\ncredentials_file = "/nonexistent/sa.json"\n'
        "max_tokens_default = 0\nzone = 1\n",
        tmp_path,
    )
    assert "Google Cloud project" in problems["providers.vertex.project"]
    assert "OAuth2" in problems["providers.vertex.api_key"]
    assert "location" in problems["providers.vertex.location"]
    assert "no such file" in problems["providers.vertex.credentials_file"]
    assert "positive" in problems["providers.vertex.max_tokens_default"]
    assert "unknown key" in problems["providers.vertex.zone"]
    user = tmp_path / "user.json"
    user.write_text('{"type": "authorized_user", "refresh_token": "r"}')
    problems = _problems(f'[providers.vertex]\nproject = "p"\ncredentials_file = "{user}"\n', tmp_path)
    assert "not a service-account key" in problems["providers.vertex.credentials_file"]


def test_project_and_location_from_the_environment(tmp_path: Path) -> None:
    gw = _build("[providers.vertex]\n", tmp_path, {"GOOGLE_CLOUD_PROJECT": "env-proj", "VERTEXAI_LOCATION": "global"})
    vertex = gw.providers["vertex"]
    assert isinstance(vertex, Vertex) and (vertex.project, vertex.location) == ("env-proj", "global")
    assert vertex.api_root == "https://aiplatform.googleapis.com/v1/projects/env-proj/locations/global"
    gw = _build('[providers.vertex]\nproject = "file-proj"\n', tmp_path, {"GOOGLE_CLOUD_PROJECT": "env-proj"})
    assert gw.providers["vertex"].project == "file-proj"  # type: ignore[attr-defined]


def test_embedded_defaults_enable_vertex_only_with_a_project() -> None:
    cfg = config_mod.load(None, environ={})
    assert "vertex" not in Gateway(cfg, load_entrypoints=False, environ={}).providers
    cfg = config_mod.load(None, environ={})
    gw = Gateway(cfg, load_entrypoints=False, environ={"VERTEXAI_PROJECT": "p1", "GOOGLE_CLOUD_LOCATION": "us-east5"})
    vertex = gw.providers["vertex"]
    assert isinstance(vertex, Vertex) and vertex.project == "p1" and vertex.base_url == "https://us-east5-aiplatform.googleapis.com"


def test_missing_google_auth_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.auth", None)  # import google.auth now raises ImportError
    problems = _problems('[providers.vertex]\nproject = "p"\n', tmp_path)
    assert "pip install 'interlock[vertex]'" in problems["providers.vertex.type"]


def test_describe_shows_no_secrets(tmp_path: Path) -> None:
    gw = _build('[providers.vertex]\nproject = "p"\n', tmp_path)
    described = gw.providers["vertex"].describe()
    assert described["project"] == "p" and described["key"] == "oauth2"
    assert described["credentials"] == "application default" and described["tokens_fetched"] == 0
