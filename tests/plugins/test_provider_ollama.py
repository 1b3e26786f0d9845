"""The Ollama provider: OpenAI requests in, Ollama's native API out, and back, through a real gateway.

The client is the official ``openai`` SDK; the upstream is :class:`FakeOllama` (or, for replies the
fake never produces, a canned NDJSON server), so what is checked is the exact native request and
the OpenAI response, stream and error classes that come back.
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

from interlock.core.provider import HttpPool, ProviderSettings
from interlock.plugins.providers.translation.ollama import normalise_host
from interlock.plugins.providers.ollama import Ollama
from interlock.testing import FakeOllama, FakeOpenAI, FakeServer, Fault
from interlock.testing._replies import embed
from interlock.testing.fake_ollama import CONTEXT_LENGTH_ERROR, STREAM_ERROR
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
PNG_B64 = base64.b64encode(PNG).decode()
KEY = "ollama-cloud-key-0123456789abcdef"
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
async def gateway(fake: FakeServer, **table: Any) -> AsyncIterator[RunningGateway]:
    """A gateway with ``[providers.ollama]`` on ``fake`` and a route ``smart`` falling back to OpenAI."""
    async with FakeOpenAI(models=["gpt-4o-mini"]) as backup:
        toml = "\n".join(
            [
                provider_table("ollama", type="ollama", base_url=fake.url, **{"timeout": 5.0, **table}),
                provider_table("backup", type="openai", base_url=backup.base_url, api_key="sk-backup"),
                "[routes.smart]",
                'chain = "ollama/llama3.2 > backup/gpt-4o-mini"',
                "[exporters.ledger]",
                "enabled = false",
            ]
        )
        async with running_gateway(toml, environ={}) as gw:
            yield gw


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama(models=["llama3.2", "qwen3:8b", "all-minilm"]) as server:
        yield server


@pytest.fixture
async def gw(fake: FakeOllama) -> AsyncIterator[RunningGateway]:
    async with gateway(fake) as running:
        yield running


class CannedOllama(FakeServer):
    """Answers ``/api/chat`` and ``/api/embed`` with queued raw bodies (shapes FakeOllama never sends)."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, bytes, str]] = []
        super().__init__()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/chat", self._reply)
        router.add_post("/api/embed", self._reply)
        router.add_get("/image.png", self._image)

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        return web.json_response({"error": message or "error"}, status=status)

    def queue(self, body: Any, *, status: int = 200, ndjson: bool = False) -> None:
        if ndjson:
            raw = b"".join(orjson.dumps(line) + b"\n" for line in body)
            self.replies.append((status, raw, "application/x-ndjson"))
        else:
            self.replies.append((status, orjson.dumps(body), "application/json"))

    async def _reply(self, request: web.Request) -> web.Response:
        status, raw, content_type = self.replies.pop(0)
        return web.Response(body=raw, status=status, content_type=content_type)

    async def _image(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")


@pytest.fixture
async def canned() -> AsyncIterator[CannedOllama]:
    async with CannedOllama() as server:
        yield server


def _final(**extra: Any) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "created_at": "2024-07-22T20:33:28.123648123Z",
        "done": True,
        "done_reason": "stop",
        **extra,
    }


# -- the outgoing request ----------------------------------------------------------------------------


async def test_full_request_translation(fake: FakeOllama, gw: RunningGateway) -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"answer": {"type": "string"}}}
    await gw.client.chat.completions.create(
        model="ollama/llama3.2",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Dev rules."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
            {"role": "user", "content": "thanks"},
        ],
        tools=[WEATHER, TIME],
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop="END",
        max_tokens=50,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        reasoning_effort="medium",
    )
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/api/chat")
    assert "authorization" not in sent.headers  # a local server needs no key
    assert sent.json == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "system", "content": "Dev rules."},
            {"role": "user", "content": "what is this", "images": [PNG_B64]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            {"role": "user", "content": "thanks"},
        ],
        "stream": False,
        "tools": [WEATHER, TIME],
        "format": schema,
        "options": {
            "temperature": 0.3,
            "top_p": 0.9,
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "num_predict": 50,
            "stop": ["END"],
        },
        "think": "medium",
    }


async def test_minimal_request_and_stream_flag(fake: FakeOllama, gw: RunningGateway) -> None:
    await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO)
    assert fake.requests[-1].json == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": False,
    }
    stream = await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO, stream=True)
    _ = [chunk async for chunk in stream]
    assert fake.requests[-1].json["stream"] is True
    assert fake.requests[-1].headers["accept"] == "application/x-ndjson"


async def test_config_defaults_and_client_overrides(fake: FakeOllama) -> None:
    async with gateway(fake, num_ctx=8192, keep_alive="10m", options={"top_k": 20, "temperature": 0.5}) as gw:
        await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO, temperature=0.1)
        sent = fake.requests[-1].json
        assert sent["keep_alive"] == "10m"
        assert sent["options"] == {"top_k": 20, "temperature": 0.1, "num_ctx": 8192}
        await gw.client.chat.completions.create(
            model="ollama/llama3.2",
            messages=HELLO,
            max_completion_tokens=3,
            stop=["a", "b"],
            extra_body={"top_k": 5},
        )
        assert fake.requests[-1].json["options"] == {
            "top_k": 5,
            "temperature": 0.5,
            "num_ctx": 8192,
            "num_predict": 3,
            "stop": ["a", "b"],
        }


async def test_remote_image_is_fetched_and_inlined(
    fake: FakeOllama, canned: CannedOllama, gw: RunningGateway
) -> None:
    result = await gw.client.chat.completions.create(
        model="ollama/llama3.2",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": f"{canned.url}/image.png"}},
                ],
            }
        ],
    )
    assert result.choices[0].message.content == "Fake reply to: look (1 image)"
    assert fake.requests[-1].json["messages"][0]["images"] == [PNG_B64]


@pytest.mark.parametrize(
    ("tool_choice", "offered"),
    [
        (None, ["get_weather", "get_time"]),
        ("auto", ["get_weather", "get_time"]),
        ("required", ["get_weather", "get_time"]),
        ({"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
        ("none", None),
    ],
)
async def test_tool_choice(
    fake: FakeOllama, gw: RunningGateway, tool_choice: Any, offered: list[str] | None
) -> None:
    kwargs: dict[str, Any] = {"tool_choice": tool_choice} if tool_choice is not None else {}
    result = await gw.client.chat.completions.create(
        model="ollama/llama3.2", messages=HELLO, tools=[WEATHER, TIME], **kwargs
    )
    sent = fake.requests[-1].json
    if offered is None:
        assert "tools" not in sent
        assert result.choices[0].message.content == "Fake reply to: hello there"
    else:
        assert [t["function"]["name"] for t in sent["tools"]] == offered
        calls = result.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == offered[:1]


async def test_untranslatable_requests_fail_fast(fake: FakeOllama, gw: RunningGateway) -> None:
    cases: list[dict[str, Any]] = [
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "missing"}}},
        {"n": 2},
        {"reasoning_effort": "extreme"},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
                }
            ]
        },
    ]
    for extra in cases:
        body = {"model": "smart", "messages": HELLO, **extra}
        with pytest.raises(openai.BadRequestError):
            await gw.client.chat.completions.create(**body)
        assert gw.log.last.attempts[0].outcome == "bad_request"
        assert len(gw.log.last.attempts) == 1, "a request Ollama cannot express must not fall back"
    assert fake.requests == []  # none of them reached the upstream


@pytest.mark.parametrize(
    ("effort", "think"), [("none", False), ("minimal", "low"), ("low", "low"), ("high", "high")]
)
async def test_reasoning_effort_becomes_think(
    fake: FakeOllama, gw: RunningGateway, effort: str, think: Any
) -> None:
    await gw.client.chat.completions.create(model="ollama/qwen3:8b", messages=HELLO, reasoning_effort=effort)  # type: ignore[call-overload]
    assert fake.requests[-1].json["think"] == think


async def test_json_object_mode(fake: FakeOllama, gw: RunningGateway) -> None:
    result = await gw.client.chat.completions.create(
        model="ollama/llama3.2", messages=HELLO, response_format={"type": "json_object"}
    )
    assert fake.requests[-1].json["format"] == "json"
    assert json.loads(result.choices[0].message.content or "") == {"reply": "Fake reply to: hello there"}


async def test_cloud_key_is_a_bearer_token_and_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeOllama(models=["llama3.2"], api_key=KEY) as cloud, gateway(cloud, api_key=KEY) as gw:
        caplog.set_level(logging.DEBUG)
        result = await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO)
        assert result.choices[0].message.content == "Fake reply to: hello there"
        assert cloud.requests[-1].headers["authorization"] == f"Bearer {KEY}"
        cloud.add_fault(Fault(status=401, body={"error": f"unauthorized: key {KEY} revoked"}))
        raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.headers["x-interlock-provider"] == "backup"
        attempt = gw.log.last.attempts[0]
        assert attempt.outcome == "auth" and KEY not in (attempt.error or "")
        assert KEY not in raw.http_response.text
        assert KEY not in caplog.text
        described = gw.gateway.providers["ollama"].describe()
        assert KEY not in json.dumps(described) and described["key"] == "set"


# -- the response ----------------------------------------------------------------------------------


async def test_text_response_usage_and_native_finish(fake: FakeOllama, gw: RunningGateway) -> None:
    raw = await gw.client.chat.completions.with_raw_response.create(model="ollama/llama3.2", messages=HELLO)
    body = raw.http_response.json()
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Fake reply to: hello there"}
    assert (choice["finish_reason"], choice["native_finish_reason"]) == ("stop", "stop")
    assert (
        body["model"] == "llama3.2"
        and body["object"] == "chat.completion"
        and body["id"].startswith("chatcmpl-")
    )
    assert body["usage"] == {
        "prompt_tokens": 2,  # FakeOllama's prompt_eval_count for "hello there"
        "completion_tokens": 5,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    usage = gw.log.last.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 5)


async def test_length_finish(gw: RunningGateway) -> None:
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="ollama/llama3.2", messages=HELLO, max_tokens=2
    )
    choice = raw.http_response.json()["choices"][0]
    assert (choice["finish_reason"], choice["native_finish_reason"]) == ("length", "length")
    assert choice["message"]["content"] == "Fake reply"


async def test_tool_call_response(gw: RunningGateway) -> None:
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="ollama/llama3.2", messages=HELLO, tools=[WEATHER]
    )
    choice = raw.http_response.json()["choices"][0]
    assert (choice["finish_reason"], choice["native_finish_reason"]) == ("tool_calls", "stop")
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"text"}'}


async def test_missing_tool_call_ids_are_generated_unique(canned: CannedOllama) -> None:
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_time", "arguments": {}}},
    ]
    canned.queue(
        _final(
            message={"role": "assistant", "content": "", "tool_calls": calls},
            prompt_eval_count=5,
            eval_count=9,
        )
    )
    async with gateway(canned) as gw:
        result = await gw.client.chat.completions.create(
            model="ollama/llama3.2", messages=HELLO, tools=[WEATHER, TIME]
        )
    out: list[Any] = list(result.choices[0].message.tool_calls or [])
    assert [c.function.name for c in out] == ["get_weather", "get_time"]
    assert [c.function.arguments for c in out] == ['{"city":"Paris"}', "{}"]
    assert all(c.id.startswith("call_") for c in out) and out[0].id != out[1].id
    assert result.created == 1721680408  # created_at, nanoseconds and all


async def test_thinking_becomes_reasoning_content(gw: RunningGateway) -> None:
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="ollama/qwen3:8b", messages=HELLO, reasoning_effort="high"
    )
    message = raw.http_response.json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Thinking about: hello there"
    assert message["content"] == "Fake reply to: hello there"
    stream = await gw.client.chat.completions.create(
        model="ollama/qwen3:8b", messages=HELLO, reasoning_effort="high", stream=True
    )
    reasoning, text = "", ""
    async for chunk in stream:
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            text += choice.delta.content or ""
    assert (reasoning, text) == ("Thinking about: hello there", "Fake reply to: hello there")


async def test_missing_prompt_count_means_zero(canned: CannedOllama) -> None:
    # Ollama omits prompt_eval_count when the whole prompt came from its cache
    canned.queue(_final(message={"role": "assistant", "content": "cached"}, eval_count=1))
    canned.queue(
        [
            {"model": "llama3.2", "message": {"role": "assistant", "content": "cached"}, "done": False},
            _final(eval_count=1),
        ],
        ndjson=True,
    )
    async with gateway(canned) as gw:
        result = await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO)
        assert result.usage is not None and (result.usage.prompt_tokens, result.usage.completion_tokens) == (
            0,
            1,
        )
        stream = await gw.client.chat.completions.create(
            model="ollama/llama3.2", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.prompt_tokens == 0
        and chunks[-1].usage.completion_tokens == 1
    )


# -- streams ----------------------------------------------------------------------------------------


async def test_stream_text_finish_and_usage(fake: FakeOllama, gw: RunningGateway) -> None:
    stream = await gw.client.chat.completions.create(
        model="ollama/llama3.2", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Fake reply to: hello there"
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 5)
    assert len({c.id for c in chunks}) == 1


async def test_stream_tool_call_and_length(gw: RunningGateway) -> None:
    stream = await gw.client.chat.completions.create(
        model="ollama/llama3.2", messages=HELLO, tools=[WEATHER], stream=True
    )
    calls = [
        call
        for chunk in [c async for c in stream]
        for choice in chunk.choices
        for call in choice.delta.tool_calls or []
    ]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id and calls[0].function is not None
    assert (calls[0].function.name, calls[0].function.arguments) == ("get_weather", '{"city":"text"}')
    assert gw.log.last.attempts[0].finish_reasons == ["tool_calls"]
    stream = await gw.client.chat.completions.create(
        model="ollama/llama3.2", messages=HELLO, max_tokens=1, stream=True
    )
    finishes = [c.choices[0].finish_reason async for c in stream if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


async def test_very_long_stream_line(canned: CannedOllama) -> None:
    # one NDJSON line beyond aiohttp's own line limit (2 x read_bufsize: 512 KiB on aiohttp 3.14,
    # 128 KiB before), as a big tool call arriving whole in one line would be
    big = {"payload": "x" * 1_500_000}
    lines = [
        {
            "model": "llama3.2",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "save", "arguments": big}}],
            },
            "done": False,
        },
        _final(prompt_eval_count=3, eval_count=100_000),
    ]
    canned.queue(lines, ndjson=True)
    async with gateway(canned) as gw:
        stream = await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO, stream=True)
        chunks = [c async for c in stream]
    args = "".join(
        call.function.arguments or ""
        for c in chunks
        for choice in c.choices
        for call in choice.delta.tool_calls or []
        if call.function
    )
    assert json.loads(args) == big


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(cut_after=0), "stream_error"),
        (Fault(malformed_at=0), "stream_error"),
        (Fault(error_event_at=0), "stream_error"),
    ],
)
async def test_stream_faults_before_content_fall_back(
    fake: FakeOllama, gw: RunningGateway, fault: Fault, outcome: str
) -> None:
    fake.add_fault(fault)
    stream = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Fake reply to: hello there"
    attempts = gw.log.last.attempts
    assert [(a.provider, a.outcome) for a in attempts] == [("ollama", outcome), ("backup", "ok")]


async def test_in_band_error_message_is_kept(fake: FakeOllama, gw: RunningGateway) -> None:
    fake.add_fault(Fault(error_event_at=0))
    stream = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
    _ = [c async for c in stream]
    assert STREAM_ERROR in (gw.log.last.attempts[0].error or "")


async def test_stream_without_done_line_is_broken(canned: CannedOllama) -> None:
    canned.queue(
        [{"model": "llama3.2", "message": {"role": "assistant", "content": "partial"}, "done": False}],
        ndjson=True,
    )
    async with gateway(canned) as gw:
        stream = await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError):
            _ = [c async for c in stream]
        assert gw.log.last.attempts[0].outcome == "stream_error"
        assert "done" in (gw.log.last.attempts[0].error or "")


async def test_cut_after_content_is_an_error_event(fake: FakeOllama, gw: RunningGateway) -> None:
    fake.add_fault(Fault(cut_after=2))
    stream = await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError):
        _ = [c async for c in stream]
    assert gw.log.last.attempts[0].outcome == "stream_error"


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (404, {"error": 'model "llama3.2" not found, try pulling it first'}, "not_found"),
        (400, {"error": CONTEXT_LENGTH_ERROR}, "context_length"),
        (429, None, "rate_limited"),
        (401, None, "auth"),
        (403, None, "auth"),
        (500, None, "server_error"),
        (502, None, "server_error"),
        (503, None, "overloaded"),
    ],
)
async def test_http_errors_fall_back_with_their_class(
    fake: FakeOllama, gw: RunningGateway, status: int, body: Any, outcome: str
) -> None:
    fake.add_fault(Fault(status=status, body=body, retry_after=7 if status == 429 else None))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.headers["x-interlock-provider"] == "backup"
    attempt = gw.log.last.attempts[0]
    assert (attempt.outcome, attempt.status) == (outcome, status)
    if body is not None:
        assert body["error"] in (attempt.error or "")


async def test_rate_limit_keeps_retry_after(fake: FakeOllama) -> None:
    fake.add_fault(Fault(status=429, retry_after=7))
    async with gateway(fake) as gw:
        with pytest.raises(openai.RateLimitError) as info:
            await gw.client.chat.completions.create(model="ollama/llama3.2", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "7"


async def test_bad_request_fails_fast(fake: FakeOllama, gw: RunningGateway) -> None:
    fake.add_fault(Fault(status=400, body={"error": "invalid options: num_ctx must be positive"}))
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.chat.completions.create(model="smart", messages=HELLO)
    assert "num_ctx must be positive" in str(info.value)
    assert [a.outcome for a in gw.log.last.attempts] == ["bad_request"]


async def test_context_error_on_stream(fake: FakeOllama, gw: RunningGateway) -> None:
    fake.add_fault(Fault(status=400, body={"error": CONTEXT_LENGTH_ERROR}))
    stream = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
    _ = [c async for c in stream]
    assert [a.outcome for a in gw.log.last.attempts] == ["context_length", "ok"]


async def test_in_band_context_error_is_context_length(canned: CannedOllama) -> None:
    canned.queue([{"error": CONTEXT_LENGTH_ERROR}], ndjson=True)
    async with gateway(canned) as gw:
        stream = await gw.client.chat.completions.create(model="smart", messages=HELLO, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Fake reply to: hello there"
    assert [a.outcome for a in gw.log.last.attempts] == ["context_length", "ok"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"error": CONTEXT_LENGTH_ERROR}, (CONTEXT_LENGTH_ERROR, "context_length_exceeded", None)),
        (
            {"error": 'model "x" not found, try pulling it first'},
            ('model "x" not found, try pulling it first', "model_not_found", None),
        ),
        ({"error": "unauthorized"}, ("unauthorized", None, None)),
        ("upstream proxy said no", ("upstream proxy said no", None, None)),
    ],
)
def test_error_fields(body: Any, fields: tuple[str, str | None, str | None]) -> None:
    provider = Ollama(ProviderSettings(name="ollama", type="ollama"), HttpPool())
    assert provider.error_fields(body) == fields


async def test_timeout_falls_back(fake: FakeOllama) -> None:
    fake.add_fault(Fault(latency=3))
    async with gateway(fake, timeout=0.3) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert gw.log.last.attempts[0].outcome == "timeout"


# -- embeddings --------------------------------------------------------------------------------------


async def test_embeddings(fake: FakeOllama, gw: RunningGateway) -> None:
    result = await gw.client.embeddings.create(
        model="ollama/all-minilm", input=["alpha", "beta gamma"], dimensions=4
    )
    assert [d.index for d in result.data] == [0, 1] and all(len(d.embedding) == 4 for d in result.data)
    assert result.usage.prompt_tokens == 3 and result.usage.total_tokens == 3
    assert result.model == "all-minilm"
    # the openai SDK asks for base64 unless told otherwise; Ollama only speaks floats
    assert fake.requests[-1].json == {
        "model": "all-minilm",
        "input": ["alpha", "beta gamma"],
        "dimensions": 4,
    }
    plain = await gw.client.embeddings.create(
        model="ollama/all-minilm", input="alpha", encoding_format="float"
    )
    assert fake.requests[-1].json["input"] == "alpha"  # a single string stays a string
    assert plain.data[0].embedding == pytest.approx(embed("alpha", 8))  # FakeOllama's default size


async def test_embeddings_base64_encoding(fake: FakeOllama, gw: RunningGateway) -> None:
    floats = await gw.client.embeddings.create(
        model="ollama/all-minilm", input="alpha", encoding_format="float"
    )
    raw = await gw.client.embeddings.with_raw_response.create(
        model="ollama/all-minilm", input="alpha", encoding_format="base64"
    )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = list(struct.unpack("<8f", base64.b64decode(encoded)))
    assert decoded == pytest.approx(floats.data[0].embedding)


async def test_embeddings_options_and_errors(fake: FakeOllama) -> None:
    async with gateway(fake, truncate=False, keep_alive=300, num_ctx=2048) as gw:
        await gw.client.embeddings.create(model="ollama/all-minilm", input="short text")
        assert fake.requests[-1].json == {
            "model": "all-minilm",
            "input": "short text",
            "truncate": False,
            "keep_alive": 300,
            "options": {"num_ctx": 2048},
        }
        with pytest.raises(openai.BadRequestError) as info:
            await gw.client.embeddings.create(model="ollama/all-minilm", input="word " * 600)
        assert info.value.code == "context_length_exceeded"
        assert gw.log.last.attempts[0].outcome == "context_length"
        with pytest.raises(openai.BadRequestError):
            await gw.client.embeddings.create(model="ollama/all-minilm", input=[[1, 2, 3]])
        assert gw.log.last.attempts[0].outcome == "bad_request"


async def test_embeddings_count_mismatch_is_an_upstream_error(canned: CannedOllama) -> None:
    canned.queue({"model": "all-minilm", "embeddings": [[0.1, 0.2]]})
    async with gateway(canned) as gw:
        with pytest.raises(openai.APIStatusError):
            await gw.client.embeddings.create(model="ollama/all-minilm", input=["a", "b"])
        assert gw.log.last.attempts[0].outcome == "stream_error"


# -- config and the base URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        (":56789", "http://127.0.0.1:56789"),
        ("[::]:11434", "http://[::1]:11434"),
        ("example.com", "http://example.com:11434"),
        ("http://example.com", "http://example.com"),
        ("https://ollama.com/api", "https://ollama.com"),
        ("https://ollama.com/", "https://ollama.com"),
        ("http://gpu-box:11434/ollama/", "http://gpu-box:11434/ollama"),
    ],
)
def test_normalise_host(value: str | None, expected: str) -> None:
    assert normalise_host(value) == expected


async def test_ollama_host_enables_the_provider(fake: FakeOllama) -> None:
    toml = "[server]\nauto_providers = true\n[exporters.ledger]\nenabled = false\n"
    environ = {"OLLAMA_HOST": f"127.0.0.1:{fake.port}"}
    async with running_gateway(toml, environ=environ) as gw:
        provider = gw.gateway.providers["ollama"]
        assert provider.base_url == f"http://127.0.0.1:{fake.port}" and provider.settings.api_key is None
        # a bare model:tag name is detected as an Ollama model
        result = await gw.client.chat.completions.create(model="qwen3:8b", messages=HELLO)
    assert result.choices[0].message.content == "Fake reply to: hello there"
    assert fake.requests[-1].json["model"] == "qwen3:8b"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"num_ctx": 0}, "num_ctx"),
        ({"num_ctx": "big"}, "num_ctx"),
        ({"keep_alive": True}, "keep_alive"),
        ({"truncate": "no"}, "truncate"),
        ({"options": "top_k=1"}, "options"),
        ({"temperature": 1}, "temperature"),
    ],
)
def test_validate_rejects_bad_options(options: dict[str, Any], key: str) -> None:
    settings = ProviderSettings(name="ollama", type="ollama", options=options)
    assert [k for k, _ in Ollama.validate(settings)] == [key]


def test_validate_accepts_good_options_without_a_key() -> None:
    settings = ProviderSettings(
        name="ollama",
        type="ollama",
        options={"num_ctx": 4096, "keep_alive": "5m", "truncate": True, "options": {"top_k": 1}},
    )
    assert Ollama.validate(settings) == []
    provider = Ollama(settings, HttpPool())
    assert provider.base_url == "http://localhost:11434"
    assert (Ollama.requires_key, Ollama.env_base_url, Ollama.env_key) == (
        False,
        "OLLAMA_HOST",
        "OLLAMA_API_KEY",
    )
