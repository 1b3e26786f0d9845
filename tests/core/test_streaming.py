"""End-to-end SSE streaming through the gateway, with the ``openai`` SDK and as raw bytes.

A stream commits to the client at its first content: failures before that fall back invisibly;
failures after it end the stream with an explicit ``data: {"error": ...}`` event and no ``[DONE]``.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from aiohttp import web

from interlock.testing import FakeOpenAI, Fault
from tests.conftest import SECRET, GatewayFactory, RunningGateway, openai_config
from tests.core._api_helpers import assert_no_secret, assert_openai_error, raw_request, sse_data

LONG: list[Any] = [{"role": "user", "content": "tell me a story about seven small brave dragons"}]
LONG_REPLY = "Fake reply to: tell me a story about seven small brave dragons"


def chat_requests(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


async def stream_chat(gw: RunningGateway, **kwargs: Any) -> tuple[dict[str, str], list[Any]]:
    """Stream with the SDK; return the response headers and every chunk."""
    kwargs.setdefault("messages", LONG)
    async with gw.client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as resp:
        headers = dict(resp.headers)
        stream = await resp.parse()
        chunks = [chunk async for chunk in stream]
    return headers, chunks


def text_of(chunks: list[Any], index: int = 0) -> str:
    return "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == index
    )


async def raw_stream(gw: RunningGateway, body: dict[str, Any]) -> tuple[int, dict[str, str], list[str]]:
    resp = await raw_request("POST", f"{gw.base_url}/chat/completions", json_body={"stream": True, **body})
    return resp.status, resp.headers, sse_data(resp.body)


# --------------------------------------------------------------------------- #
# happy path
# --------------------------------------------------------------------------- #


async def test_stream_content_equals_non_stream(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    headers, chunks = await stream_chat(gw, model="gpt-4o")
    full = await gw.client.chat.completions.create(model="gpt-4o", messages=LONG)

    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
    assert text_of(chunks) == full.choices[0].message.content == LONG_REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-interlock-provider"] == "openai"
    assert headers["x-interlock-model"] == "gpt-4o"
    assert headers["x-interlock-attempts"] == "1"
    assert headers["x-interlock-fallback"] == "false"
    assert headers["x-request-id"]


async def test_stream_request_id_is_echoed(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    headers, _ = await stream_chat(gw, model="gpt-4o", extra_headers={"x-request-id": "stream-req-9"})
    assert headers["x-request-id"] == "stream-req-9"


async def test_raw_sse_ends_with_done(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    status, headers, events = await raw_stream(gw, {"model": "smart", "messages": LONG})
    assert status == 200
    assert headers["x-interlock-provider"] == "openai"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == LONG_REPLY
    )
    assert not any("error" in c for c in chunks)


async def test_usage_forwarded_when_the_client_asks(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    _, chunks = await stream_chat(gw, model="gpt-4o", stream_options={"include_usage": True})

    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert (
        chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )
    sent = chat_requests(fake)[-1].json
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}])
async def test_usage_not_forwarded_unless_asked_but_always_requested_upstream(
    fake: FakeOpenAI, make_gateway: GatewayFactory, stream_options: dict[str, bool] | None
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    kwargs: dict[str, Any] = {"stream_options": stream_options} if stream_options is not None else {}
    _, chunks = await stream_chat(gw, model="gpt-4o", **kwargs)

    assert text_of(chunks) == LONG_REPLY
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # the usage-only chunk was dropped, not emptied
    sent = chat_requests(fake)[-1].json
    assert sent["stream"] is True
    assert sent["stream_options"]["include_usage"] is True  # the gateway always meters

    # the same on the wire
    body: dict[str, Any] = {"model": "gpt-4o", "messages": LONG}
    if stream_options is not None:
        body["stream_options"] = stream_options
    _, _, events = await raw_stream(gw, body)
    assert events[-1] == "[DONE]"
    assert all(json.loads(e).get("usage") is None for e in events[:-1])


async def test_stream_with_n_2(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    _, chunks = await stream_chat(gw, model="gpt-4o", n=2)
    assert text_of(chunks, 0) == LONG_REPLY
    assert text_of(chunks, 1) == LONG_REPLY


async def test_stream_tool_calls(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    tool: Any = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            },
        },
    }
    _, chunks = await stream_chat(gw, model="gpt-4o", tools=[tool], tool_choice="required")
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function is not None and calls[0].function.name == "lookup"
    arguments = "".join((tc.function.arguments or "") for tc in calls if tc.function is not None)
    assert json.loads(arguments) == {"query": "text", "limit": 1}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert chat_requests(fake)[-1].json["tool_choice"] == "required"


async def test_stream_passes_unknown_parameters(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    await stream_chat(gw, model="smart", extra_body={"custom_flag": {"a": 1}}, temperature=0.5, seed=3)
    sent = chat_requests(fake)[-1].json
    assert sent["model"] == "gpt-4o"
    assert sent["custom_flag"] == {"a": 1}
    assert sent["temperature"] == 0.5
    assert sent["seed"] == 3


async def test_stream_json_mode_parses(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    _, chunks = await stream_chat(gw, model="gpt-4o", response_format={"type": "json_object"})
    assert json.loads(text_of(chunks)) == {"reply": LONG_REPLY}


# --------------------------------------------------------------------------- #
# failures before the first content: invisible fallback
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503, model="gpt-4o"),
        Fault(status=429, model="gpt-4o"),
        Fault(status=500, model="gpt-4o"),
        Fault(cut_after=0, model="gpt-4o"),
        Fault(malformed_at=0, model="gpt-4o"),
        Fault(error_event_at=0, model="gpt-4o"),
    ],
    ids=["503", "429", "500", "cut_after=0", "malformed_at=0", "error_event_at=0"],
)
async def test_failure_before_content_falls_back_invisibly(
    fake: FakeOpenAI, make_gateway: GatewayFactory, fault: Fault
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(fault)
    headers, chunks = await stream_chat(gw, model="smart")

    assert text_of(chunks) == LONG_REPLY
    assert all(c.model == "gpt-4o-mini" for c in chunks)  # nothing from the failed target leaked through
    assert headers["x-interlock-provider"] == "backup"
    assert headers["x-interlock-model"] == "gpt-4o-mini"
    assert headers["x-interlock-attempts"] == "2"
    assert headers["x-interlock-fallback"] == "true"
    assert [r.json["model"] for r in chat_requests(fake)] == ["gpt-4o", "gpt-4o-mini"]

    # exactly one role chunk reached the client: the failed attempt's opening chunk was discarded
    roles = [c for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    assert len(roles) == 1


async def _role_then_done(request: web.Request) -> web.StreamResponse:
    """An upstream stream that says nothing: the opening role chunk, then ``[DONE]``."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    role = {"id": "chatcmpl-empty", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    await resp.write(b"data: " + json.dumps(role).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def test_a_stream_that_ends_before_any_content_falls_back(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _role_then_done)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        empty = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        toml = openai_config(fake.base_url) + f"""
[providers.empty]
type = "openai"
base_url = "{empty}"
api_key = "{SECRET}"

[routes.hollow]
chain = "empty/gpt-4o > backup/gpt-4o-mini"

[routes.hollow-alone]
chain = "empty/gpt-4o"
"""
        gw = await make_gateway(toml)
        # an empty answer is not passed on as one ([DONE] with no content, no finish reason)
        headers, chunks = await stream_chat(gw, model="hollow")
        assert text_of(chunks) == LONG_REPLY
        assert headers["x-interlock-provider"] == "backup" and headers["x-interlock-attempts"] == "2"
        assert gw.log.last.attempts[0].outcome == "stream_error"
        # and with nothing to fall back on, the client gets an error, not an empty 200
        resp = await raw_request(
            "POST", f"{gw.base_url}/chat/completions",
            json_body={"model": "hollow-alone", "messages": LONG, "stream": True},
        )
        assert resp.status == 502
        assert_openai_error(resp.json(), code="stream_error")
    finally:
        await runner.cleanup()


async def test_stall_before_first_token_times_out_and_falls_back(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    toml = openai_config(fake.base_url).replace(
        f'api_key = "{SECRET}"\n\n[providers.backup]',
        f'api_key = "{SECRET}"\ntimeout = 0.3\n\n[providers.backup]',
    )
    assert "timeout = 0.3" in toml
    gw = await make_gateway(toml)
    fake.add_fault(Fault(ttft=1.5, model="gpt-4o"))
    headers, chunks = await stream_chat(gw, model="smart")

    assert text_of(chunks) == LONG_REPLY
    assert headers["x-interlock-provider"] == "backup"
    assert headers["x-interlock-attempts"] == "2"
    health = (await raw_request("GET", f"{gw.root}/health/providers")).json()["targets"]
    assert health["openai/gpt-4o"]["last_failure_class"] == "timeout"


async def test_stream_retry_on_same_target(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, "retries = 1"))
    fake.add_fault(Fault(cut_after=0, model="gpt-4o"))
    headers, chunks = await stream_chat(gw, model="smart")
    assert text_of(chunks) == LONG_REPLY
    assert headers["x-interlock-provider"] == "openai"
    assert headers["x-interlock-attempts"] == "2"
    assert headers["x-interlock-fallback"] == "false"
    assert [r.json["model"] for r in chat_requests(fake)] == ["gpt-4o", "gpt-4o"]


async def test_stream_all_targets_fail_before_content_is_a_plain_http_error(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=503, times=2))
    with pytest.raises(openai.InternalServerError) as exc:
        await stream_chat(gw, model="smart")
    assert exc.value.status_code == 503
    assert exc.value.response.headers["x-interlock-attempts"] == "2"

    fake.add_fault(Fault(status=429, retry_after=2, times=2))
    with pytest.raises(openai.RateLimitError) as rate:
        await stream_chat(gw, model="smart")
    assert rate.value.response.headers["retry-after"] == "2"

    # a 429 with Retry-After trips both targets' breakers: a fresh gateway for the last case
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(cut_after=0, times=2))
    resp = await raw_request(
        "POST",
        f"{gw.base_url}/chat/completions",
        json_body={"model": "smart", "messages": LONG, "stream": True},
    )
    assert resp.status == 502
    assert resp.headers["content-type"].startswith("application/json")
    err = assert_openai_error(resp.json(), code="stream_error")
    assert "openai/gpt-4o" in err["message"] and "backup/gpt-4o-mini" in err["message"]


async def test_stream_upstream_bad_request_fails_fast(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=400, model="gpt-4o"))
    with pytest.raises(openai.BadRequestError) as exc:
        await stream_chat(gw, model="smart")
    assert exc.value.response.headers["x-interlock-attempts"] == "1"
    assert [r.json["model"] for r in chat_requests(fake)] == ["gpt-4o"]


async def test_stream_unknown_model_404(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.NotFoundError) as exc:
        await stream_chat(gw, model="no-such-model")
    assert exc.value.code == "model_not_found"


# --------------------------------------------------------------------------- #
# failures after content: explicit error event, no [DONE]
# --------------------------------------------------------------------------- #


MID_STREAM_FAULTS = [Fault(cut_after=2), Fault(malformed_at=2), Fault(error_event_at=2)]
MID_STREAM_IDS = ["cut_after=2", "malformed_at=2", "error_event_at=2"]


@pytest.mark.parametrize("fault", MID_STREAM_FAULTS, ids=MID_STREAM_IDS)
async def test_failure_after_content_raises_in_the_sdk(
    fake: FakeOpenAI, make_gateway: GatewayFactory, fault: Fault
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(fault)
    received: list[str] = []
    async with gw.client.chat.completions.with_streaming_response.create(
        model="smart", messages=LONG, stream=True
    ) as resp:
        assert resp.headers["x-interlock-provider"] == "openai"
        assert resp.headers["x-interlock-attempts"] == "1"
        stream = await resp.parse()
        with pytest.raises(openai.APIError) as exc:
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")

    text = "".join(received)
    assert text and text != LONG_REPLY and LONG_REPLY.startswith(text)  # a partial answer, then the error
    assert "stream" in exc.value.message
    assert_no_secret(exc.value.message, exc.value.body)
    # too late to fall back: the second target was never asked
    assert [r.json["model"] for r in chat_requests(fake)] == ["gpt-4o"]


@pytest.mark.parametrize("fault", MID_STREAM_FAULTS, ids=MID_STREAM_IDS)
async def test_failure_after_content_raw_sse(
    fake: FakeOpenAI, make_gateway: GatewayFactory, fault: Fault
) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(fault)
    status, headers, events = await raw_stream(
        gw, {"model": "smart", "messages": LONG, "stream_options": {"include_usage": True}}
    )

    assert status == 200
    assert "[DONE]" not in events
    payloads = [json.loads(e) for e in events]  # every event the gateway wrote is valid JSON
    err = assert_openai_error(payloads[-1])
    assert err["type"] == "upstream_error"
    assert err["code"] == "stream_error"
    assert "after it started" in err["message"]
    content = [p for p in payloads[:-1] if p["choices"] and p["choices"][0]["delta"].get("content")]
    assert len(content) == 2  # exactly the chunks sent before the fault
    assert not any("error" in p for p in payloads[:-1])
    assert all(p.get("usage") is None for p in payloads)  # no usage for a failed stream
    assert_no_secret("\n".join(events), headers)
