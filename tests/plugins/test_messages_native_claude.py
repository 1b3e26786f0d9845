"""Anthropic Messages clients passed through to Claude on Vertex AI and on Bedrock, untranslated.

First the providers alone (``native`` / ``native_stream`` against the fakes, what reaches the
upstream read back from the fake's request log), then the gateway's ``/v1/messages`` door driven
by the official ``anthropic`` SDK.
"""

from __future__ import annotations

import base64
import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import anthropic
import pytest

from interlock.core import jsonutil
from interlock.core.provider import HttpPool, ProviderSettings
from interlock.core.types import Chunk, RequestContext, UpstreamError
from interlock.plugins.providers.bedrock import Bedrock
from interlock.plugins.providers.vertex import Vertex
from interlock.testing import FakeBedrock, FakeVertex, Fault
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway
from tests.plugins._bedrock import ENV, REGION, new_fake

PROJECT, LOCATION = "acme-prod", "europe-west4"
VERTEX_CLAUDE, GEMINI = "claude-sonnet-4-5@20250929", "gemini-2.5-flash"
BEDROCK_CLAUDE, BEDROCK_PROFILE = "anthropic.claude-3-5-haiku-20241022-v1:0", "us.anthropic.claude-sonnet-4-20250514-v1:0"
NOVA = "amazon.nova-pro-v1:0"
BETAS = "interleaved-thinking-2025-05-14, context-1m-2025-08-07"
# a thinking signature as Claude issues them: opaque base64, with the characters a re-encoder would touch
SIGNATURE = "EqoBCkgIBhABGAIiQL+/x3y9Jw+0Z1c=\u2028/tail"
#: a Messages body with everything that must reach Claude untouched: cache breakpoints, a signed
#: thinking block from the previous turn, a tool with a cache breakpoint, top_k (no OpenAI counterpart)
MESSAGES: dict[str, Any] = {
    "model": "the-client-s-name-for-it",
    "max_tokens": 256,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Simple sum.", "signature": SIGNATURE},
            {"type": "text", "text": "4"},
        ]},
        {"role": "user", "content": "And 3+3?"},
    ],
    "tools": [{"name": "calc", "description": "Arithmetic", "cache_control": {"type": "ephemeral"},
               "input_schema": {"type": "object", "properties": {"expr": {"type": "string"}}}}],
    "tool_choice": {"type": "none"},  # a text answer, with the tool (and its cache breakpoint) still sent
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "top_k": 5,
}
REPLY = "Fake reply to: And 3+3?"


def context(*, stream: bool, headers: dict[str, str] | None = None) -> RequestContext:
    """A request as the Messages door hands it on: the chat translation beside the client's own body."""
    native = copy.deepcopy(MESSAGES)
    if stream:
        native["stream"] = True
    chat = {"model": native["model"], "messages": [{"role": "user", "content": "And 3+3?"}], "stream": stream}
    return RequestContext(request_id="t", endpoint="chat", body=chat, protocol="messages", native=native,
                          stream=stream, headers=headers if headers is not None else {"anthropic-beta": BETAS})


def without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def events_of(chunks: list[Chunk]) -> list[tuple[str, bytes]]:
    """Each native chunk's payload split back into ``(event, data)``: it must be one whole SSE event."""
    out = []
    for chunk in chunks:
        assert chunk.native and chunk.payload.endswith(b"\n\n") and chunk.payload.count(b"\n\n") == 1
        name, data = chunk.payload[:-2].split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        out.append((name[7:].decode(), data[6:]))
    return out


async def collect(stream: AsyncIterator[Chunk], into: list[Chunk]) -> None:
    async for chunk in stream:
        into.append(chunk)


# -- Vertex AI ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def vertex_provider(headers: dict[str, str] | None = None) -> AsyncIterator[tuple[Vertex, FakeVertex]]:
    async with FakeVertex(project=PROJECT, location=LOCATION) as fake:
        pool = HttpPool()
        await pool.start()
        try:
            settings = ProviderSettings(name="vertex", type="vertex", base_url=fake.url, headers=headers or {}, options={
                "project": PROJECT, "location": LOCATION, "credentials_file": fake.credentials_file})
            yield Vertex(settings, pool), fake
        finally:
            await pool.close()


def test_vertex_speaks_messages_for_claude_only() -> None:
    vertex = Vertex(ProviderSettings(name="vertex", type="vertex", options={"project": PROJECT}), HttpPool())
    assert vertex.speaks("messages", VERTEX_CLAUDE)
    assert not vertex.speaks("messages", GEMINI)
    assert not vertex.speaks("responses", VERTEX_CLAUDE) and not vertex.speaks("chat_completions", VERTEX_CLAUDE)


async def test_vertex_native_sends_the_body_as_the_client_wrote_it() -> None:
    async with vertex_provider() as (vertex, fake):
        fake.claude.cache_read_tokens, fake.claude.cache_creation_tokens = 40, 12
        result = await vertex.native(context(stream=False), VERTEX_CLAUDE)
    sent = fake.requests[-1]
    assert sent.path == f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/anthropic/models/{VERTEX_CLAUDE}:rawPredict"
    # only the top level differs: model in the URL, the version in the body; nothing else touched
    assert sent.json == {**without(MESSAGES, "model"), "anthropic_version": "vertex-2023-10-16"}
    assert sent.json["messages"][1]["content"][0]["signature"] == SIGNATURE
    assert sent.headers["anthropic-beta"] == BETAS  # Vertex takes betas as Anthropic's API does: a header
    assert "anthropic-version" not in sent.headers
    body = result.body
    assert body["type"] == "message" and body["model"] == VERTEX_CLAUDE
    assert body["content"] == [{"type": "text", "text": REPLY}] and body["stop_reason"] == "end_turn"
    fresh = body["usage"]["input_tokens"]
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.cached_tokens, result.usage.cache_write_tokens) == (
        fresh + 40 + 12, 40, 12)
    assert result.usage.completion_tokens == body["usage"]["output_tokens"] > 0


async def test_vertex_native_without_betas_sends_no_beta_header() -> None:
    async with vertex_provider() as (vertex, fake):
        await vertex.native(context(stream=False, headers={"anthropic-version": "2023-06-01"}), VERTEX_CLAUDE)
    assert "anthropic-beta" not in fake.requests[-1].headers and "anthropic-version" not in fake.requests[-1].headers


async def test_vertex_native_keeps_a_configured_beta_beside_the_client_s() -> None:
    async with vertex_provider({"anthropic-beta": "output-128k-2025-02-19"}) as (vertex, fake):
        await vertex.native(context(stream=False), VERTEX_CLAUDE)
        assert fake.requests[-1].headers["anthropic-beta"] == f"output-128k-2025-02-19,{BETAS}"
        await vertex.native(context(stream=False, headers={}), VERTEX_CLAUDE)
        assert fake.requests[-1].headers["anthropic-beta"] == "output-128k-2025-02-19"


async def test_vertex_native_error_in_a_200_body_is_a_failure() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    async with vertex_provider() as (vertex, fake):
        fake.add_fault(Fault(status=200, body=error))
        with pytest.raises(UpstreamError) as info:
            await vertex.native(context(stream=False), VERTEX_CLAUDE)
    assert info.value.status == 502 and info.value.error_type == "overloaded_error"


async def test_vertex_native_http_error_is_classifiable() -> None:
    async with vertex_provider() as (vertex, fake):
        fake.add_fault(Fault(status=429, retry_after=3))
        with pytest.raises(UpstreamError) as info:
            await vertex.native(context(stream=False), VERTEX_CLAUDE)
    assert info.value.kind == "http" and info.value.status == 429 and info.value.headers["retry-after"] == "3"


async def test_vertex_counts_tokens_with_claude() -> None:
    async with vertex_provider() as (vertex, fake):
        tokens = await vertex.count_tokens(context(stream=False), VERTEX_CLAUDE)
        short = context(stream=False)
        assert short.native is not None
        short.native["messages"] = [{"role": "user", "content": "hi"}]
        fewer = await vertex.count_tokens(short, VERTEX_CLAUDE)
    assert tokens > fewer > 0
    sent = fake.requests[-2]
    assert sent.path == f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/anthropic/models/count-tokens:rawPredict"
    assert sent.json == {**MESSAGES, "model": VERTEX_CLAUDE, "anthropic_version": "vertex-2023-10-16"}
    assert sent.headers["anthropic-beta"] == BETAS


async def test_vertex_native_stream_hands_each_event_on() -> None:
    async with vertex_provider() as (vertex, fake):
        fake.claude.thinking = "two plus two, then three plus three"
        fake.claude.cache_read_tokens, fake.claude.cache_creation_tokens = 40, 12
        chunks: list[Chunk] = []
        await collect(vertex.native_stream(context(stream=True), VERTEX_CLAUDE), chunks)
    sent = fake.requests[-1]
    assert sent.path.endswith(f"/models/{VERTEX_CLAUDE}:streamRawPredict")
    assert sent.json == {**without(MESSAGES, "model"), "stream": True, "anthropic_version": "vertex-2023-10-16"}
    assert sent.headers["anthropic-beta"] == BETAS
    check_stream(chunks, VERTEX_CLAUDE)


def check_stream(chunks: list[Chunk], model: str) -> None:
    """The whole Messages event sequence, each event one chunk, read right for the router."""
    events = events_of(chunks)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    objects = [jsonutil.loads(data) for _, data in events]
    assert [o["type"] for o in objects] == names  # the event name is the event's own type
    deltas = [o["delta"] for o in objects if o["type"] == "content_block_delta"]
    assert {"type": "signature_delta", "signature": "c2lnbmF0dXJl"} in deltas
    assert "".join(d.get("text", "") for d in deltas) == REPLY
    # content (the commit point) is exactly the content deltas
    assert [c.content for c in chunks] == [n == "content_block_delta" for n in names]
    assert chunks[0].response_id == objects[0]["message"]["id"] and chunks[0].response_model == model
    # usage and the stop reason: once, on message_delta, start and delta usage combined
    assert [c.usage is not None for c in chunks] == [n == "message_delta" for n in names]
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    usage = chunks[names.index("message_delta")].usage
    start_usage, delta_usage = objects[0]["message"]["usage"], objects[names.index("message_delta")]["usage"]
    assert usage is not None
    assert usage.prompt_tokens == start_usage["input_tokens"] + 40 + 12
    assert (usage.cached_tokens, usage.cache_write_tokens) == (40, 12)
    assert usage.completion_tokens == delta_usage["output_tokens"] > start_usage["output_tokens"]


async def test_vertex_native_stream_in_band_error_after_content() -> None:
    async with vertex_provider() as (vertex, fake):
        fake.add_fault(Fault(error_event_at=2))
        chunks: list[Chunk] = []
        with pytest.raises(UpstreamError) as info:
            await collect(vertex.native_stream(context(stream=True), VERTEX_CLAUDE), chunks)
    assert info.value.kind == "stream" and info.value.error_type == "overloaded_error"
    assert sum(c.content for c in chunks) == 2  # what came before the error was handed on


@pytest.mark.parametrize("fault", [Fault(cut_after=1), Fault(malformed_at=1)])
async def test_vertex_native_stream_broken(fault: Fault) -> None:
    async with vertex_provider() as (vertex, fake):
        fake.add_fault(fault)
        chunks: list[Chunk] = []
        with pytest.raises(UpstreamError) as info:
            await collect(vertex.native_stream(context(stream=True), VERTEX_CLAUDE), chunks)
    assert info.value.kind == "stream"
    assert not any(c.usage for c in chunks)


# -- Bedrock --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bedrock_provider(headers: dict[str, str] | None = None) -> AsyncIterator[tuple[Bedrock, FakeBedrock]]:
    async with new_fake((BEDROCK_CLAUDE, BEDROCK_PROFILE, NOVA)) as fake:
        pool = HttpPool()
        await pool.start()
        try:
            settings = ProviderSettings(name="bedrock", type="bedrock", base_url=fake.url, options={"region": REGION},
                                        headers=headers or {}, environ=ENV)
            yield Bedrock(settings, pool), fake
        finally:
            await pool.close()


def test_bedrock_speaks_messages_for_claude_ids_only() -> None:
    bedrock = Bedrock(ProviderSettings(name="bedrock", type="bedrock", environ=ENV), HttpPool())
    assert bedrock.speaks("messages", BEDROCK_CLAUDE) and bedrock.speaks("messages", BEDROCK_PROFILE)
    assert bedrock.speaks("messages", "global.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert not bedrock.speaks("messages", NOVA)
    # an ARN does not say what it serves: it stays on the Converse translation
    assert not bedrock.speaks("messages", "arn:aws:bedrock:us-west-2:123456789012:inference-profile/x")
    assert not bedrock.speaks("responses", BEDROCK_CLAUDE)


async def test_bedrock_native_sends_the_body_as_the_client_wrote_it() -> None:
    async with bedrock_provider() as (bedrock, fake):
        fake.claude.cache_read_tokens, fake.claude.cache_creation_tokens = 40, 12
        result = await bedrock.native(context(stream=False), BEDROCK_PROFILE)
    sent = fake.requests[-1]
    assert sent.path == f"/model/{BEDROCK_PROFILE}/invoke"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")  # signed, and the fake checked it
    assert sent.json == {
        **without(MESSAGES, "model"),
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"],  # in the body on Bedrock
    }
    assert sent.json["messages"][1]["content"][0]["signature"] == SIGNATURE
    body = result.body
    assert body["type"] == "message" and body["content"] == [{"type": "text", "text": REPLY}]
    assert result.usage is not None
    assert (result.usage.cached_tokens, result.usage.cache_write_tokens) == (40, 12)
    assert result.usage.prompt_tokens == body["usage"]["input_tokens"] + 52


async def test_bedrock_native_keeps_a_beta_list_the_client_put_in_the_body() -> None:
    ctx = context(stream=False, headers={})
    assert ctx.native is not None
    ctx.native["anthropic_beta"] = ["token-efficient-tools-2025-02-19"]
    async with bedrock_provider() as (bedrock, fake):
        await bedrock.native(ctx, BEDROCK_CLAUDE)
    assert fake.requests[-1].json["anthropic_beta"] == ["token-efficient-tools-2025-02-19"]
    assert fake.requests[-1].path == f"/model/{quote(BEDROCK_CLAUDE, safe=':')}/invoke"


async def test_bedrock_native_puts_a_configured_beta_in_the_list_too() -> None:
    async with bedrock_provider({"anthropic-beta": "output-128k-2025-02-19"}) as (bedrock, fake):
        await bedrock.native(context(stream=False), BEDROCK_CLAUDE)
    assert fake.requests[-1].json["anthropic_beta"] == [
        "output-128k-2025-02-19", "interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]


async def test_bedrock_native_http_error_is_classified() -> None:
    async with bedrock_provider() as (bedrock, fake):
        fake.add_fault(Fault(status=429))
        with pytest.raises(UpstreamError) as info:
            await bedrock.native(context(stream=False), BEDROCK_CLAUDE)
    assert info.value.status == 429 and info.value.error_type == "ThrottlingException"


async def test_bedrock_counts_tokens_with_count_tokens() -> None:
    async with bedrock_provider() as (bedrock, fake):
        tokens = await bedrock.count_tokens(context(stream=False), BEDROCK_CLAUDE)
        short = context(stream=False)
        assert short.native is not None
        short.native["messages"] = [{"role": "user", "content": "hi"}]
        fewer = await bedrock.count_tokens(short, BEDROCK_CLAUDE)
    assert tokens > fewer > 0
    sent = fake.requests[-2]
    assert sent.path == f"/model/{BEDROCK_CLAUDE}/count-tokens"
    counted = jsonutil.loads(base64.b64decode(sent.json["input"]["invokeModel"]["body"]))
    assert counted == {**without(MESSAGES, "model"), "anthropic_version": "bedrock-2023-05-31",
                       "anthropic_beta": ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]}


async def test_bedrock_native_stream_hands_each_event_on() -> None:
    async with bedrock_provider() as (bedrock, fake):
        fake.claude.thinking = "two plus two, then three plus three"
        fake.claude.cache_read_tokens, fake.claude.cache_creation_tokens = 40, 12
        chunks: list[Chunk] = []
        await collect(bedrock.native_stream(context(stream=True), BEDROCK_CLAUDE), chunks)
    sent = fake.requests[-1]
    assert sent.path == f"/model/{BEDROCK_CLAUDE}/invoke-with-response-stream"
    assert "stream" not in sent.json and sent.json["anthropic_version"] == "bedrock-2023-05-31"
    check_stream(chunks, BEDROCK_CLAUDE)


@pytest.mark.parametrize(("exception", "status"), [("throttlingException", 429), ("modelStreamErrorException", 424)])
async def test_bedrock_native_stream_in_band_exception(exception: str, status: int) -> None:
    async with bedrock_provider() as (bedrock, fake):
        fake.stream_exception = exception
        fake.add_fault(Fault(error_event_at=1))
        chunks: list[Chunk] = []
        with pytest.raises(UpstreamError) as info:
            await collect(bedrock.native_stream(context(stream=True), BEDROCK_CLAUDE), chunks)
    assert info.value.kind == "stream" and info.value.error_type == exception and info.value.status == status
    assert sum(c.content for c in chunks) == 1


@pytest.mark.parametrize("fault", [Fault(cut_after=1), Fault(malformed_at=1)])
async def test_bedrock_native_stream_broken(fault: Fault) -> None:
    async with bedrock_provider() as (bedrock, fake):
        fake.add_fault(fault)
        chunks: list[Chunk] = []
        with pytest.raises(UpstreamError) as info:
            await collect(bedrock.native_stream(context(stream=True), BEDROCK_CLAUDE), chunks)
    assert info.value.kind == "stream"
    assert not any(c.usage for c in chunks)


# -- end to end: the official anthropic SDK on the gateway's /v1/messages -------------------------


@contextlib.asynccontextmanager
async def claude_gateway() -> AsyncIterator[tuple[RunningGateway, anthropic.AsyncAnthropic, FakeVertex, FakeBedrock]]:
    """A gateway with Claude on a fake Vertex AI and a fake Bedrock; ``claude`` falls back from one to the other."""
    async with FakeVertex(project=PROJECT, location=LOCATION) as vfake, new_fake((BEDROCK_CLAUDE, NOVA)) as bfake:
        toml = (
            provider_table("vertex", type="vertex", base_url=vfake.url, project=PROJECT, location=LOCATION,
                           credentials_file=vfake.credentials_file)
            + provider_table("bedrock", type="bedrock", base_url=bfake.url, region=REGION)
            + f'[routes.claude]\nchain = "vertex/{VERTEX_CLAUDE} > bedrock/{BEDROCK_CLAUDE}"\n'
            + f'[routes.claude-b]\nchain = "bedrock/{BEDROCK_CLAUDE} > vertex/{VERTEX_CLAUDE}"\n'
            + "[exporters.ledger]\nenabled = false\n"
        )
        async with running_gateway(toml, environ=ENV) as gw:
            client = anthropic.AsyncAnthropic(base_url=gw.root, api_key="x", max_retries=0)
            try:
                yield gw, client, vfake, bfake
            finally:
                await client.close()


def sdk_request(**overrides: Any) -> dict[str, Any]:
    """The test body as keyword arguments of ``messages.create`` / ``messages.stream``.

    Without ``top_k``: the SDK's API version has no sampling parameters any more.
    """
    return {**without(copy.deepcopy(MESSAGES), "model", "top_k"), **overrides}


@pytest.mark.parametrize("host", ["vertex", "bedrock"])
async def test_sdk_message_through_the_gateway(host: str) -> None:
    model = f"vertex/{VERTEX_CLAUDE}" if host == "vertex" else f"bedrock/{BEDROCK_CLAUDE}"
    async with claude_gateway() as (gw, client, vfake, bfake):
        fake = vfake if host == "vertex" else bfake
        fake.claude.cache_read_tokens, fake.claude.cache_creation_tokens = 40, 12
        message = await client.beta.messages.create(
            model=model, betas=["interleaved-thinking-2025-05-14"], **sdk_request())
        sent = fake.requests[-1].json
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.cache_read_input_tokens == 40 and message.usage.cache_creation_input_tokens == 12
    # what reached Claude: the client's blocks as written
    assert sent["system"] == MESSAGES["system"] and sent["messages"] == MESSAGES["messages"]
    assert sent["tools"] == MESSAGES["tools"] and sent["thinking"] == MESSAGES["thinking"] and "model" not in sent
    if host == "vertex":
        assert vfake.requests[-1].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    else:
        assert sent["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    decision = gw.log.last
    assert decision.protocol == "messages" and decision.provider == host and decision.usage is not None
    assert (decision.usage.cached_tokens, decision.usage.cache_write_tokens) == (40, 12)


@pytest.mark.parametrize("host", ["vertex", "bedrock"])
async def test_sdk_stream_through_the_gateway(host: str) -> None:
    model = f"vertex/{VERTEX_CLAUDE}" if host == "vertex" else f"bedrock/{BEDROCK_CLAUDE}"
    async with claude_gateway() as (gw, client, vfake, bfake):
        fake = vfake if host == "vertex" else bfake
        fake.claude.thinking = "three plus three is six"
        fake.claude.cache_read_tokens = 40
        async with client.messages.stream(model=model, **sdk_request()) as stream:
            message = await stream.get_final_message()
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "three plus three is six"
    assert thinking.signature == "c2lnbmF0dXJl"  # the signature the client must send back, intact
    assert text.type == "text" and text.text == REPLY and message.stop_reason == "end_turn"
    assert message.usage.cache_read_input_tokens == 40 and message.usage.output_tokens > 1
    decision = gw.log.last
    assert decision.stream and decision.protocol == "messages" and decision.provider == host
    assert decision.usage is not None and decision.usage.cached_tokens == 40


async def test_sdk_failure_before_content_falls_back() -> None:
    async with claude_gateway() as (gw, client, vfake, bfake):
        vfake.add_fault(Fault(status=529))
        message = await client.messages.create(model="claude", **sdk_request())
        assert message.content[0].type == "text" and message.content[0].text == REPLY
        assert gw.log.last.provider == "bedrock" and gw.log.last.fallback_used
        vfake.add_fault(Fault(error_event_at=0))  # Claude's overloaded event before any content
        async with client.messages.stream(model="claude", **sdk_request()) as stream:
            streamed = await stream.get_final_message()
        assert streamed.content[0].type == "text" and streamed.content[0].text == REPLY
        assert gw.log.last.provider == "bedrock" and gw.log.last.fallback_used
    assert bfake.requests[-1].path.endswith("/invoke-with-response-stream")


async def test_sdk_bedrock_exception_before_content_falls_back() -> None:
    async with claude_gateway() as (gw, client, vfake, bfake):
        bfake.add_fault(Fault(error_event_at=0))  # modelStreamErrorException, after message_start
        async with client.messages.stream(model="claude-b", **sdk_request()) as stream:
            message = await stream.get_final_message()
        decision = gw.log.last
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert decision.provider == "vertex" and decision.fallback_used
    assert decision.attempts[0].outcome == "stream_error"


@pytest.mark.parametrize("host", ["vertex", "bedrock"])
async def test_sdk_error_after_content_ends_with_an_error_event(host: str) -> None:
    model = f"vertex/{VERTEX_CLAUDE}" if host == "vertex" else f"bedrock/{BEDROCK_CLAUDE}"
    async with claude_gateway() as (gw, client, vfake, bfake):
        (vfake if host == "vertex" else bfake).add_fault(Fault(error_event_at=2))
        texts: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as info:
            async with client.messages.stream(model=model, **sdk_request()) as stream:
                async for text in stream.text_stream:
                    texts.append(text)
    assert "".join(texts) and REPLY.startswith("".join(texts)) and "".join(texts) != REPLY
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["message"]
    assert gw.log.last.status == 502


@pytest.mark.parametrize("host", ["vertex", "bedrock"])
async def test_sdk_count_tokens_is_claude_s_own_count(host: str) -> None:
    model = f"vertex/{VERTEX_CLAUDE}" if host == "vertex" else f"bedrock/{BEDROCK_CLAUDE}"
    request = without(sdk_request(), "max_tokens", "tool_choice")
    async with claude_gateway() as (gw, client, vfake, bfake):
        raw = await client.messages.with_raw_response.count_tokens(model=model, **request)
        fake = vfake if host == "vertex" else bfake
        sent = fake.requests[-1]
    counted = await raw.parse()
    assert counted.input_tokens > 0
    assert "x-interlock-estimate" not in raw.headers  # counted upstream, not estimated
    assert sent.path.endswith("count-tokens:rawPredict" if host == "vertex" else f"/model/{BEDROCK_CLAUDE}/count-tokens")
