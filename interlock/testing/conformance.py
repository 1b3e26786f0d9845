"""The provider conformance suite: one set of cases every provider plugin must pass.

Each case drives the gateway with the official ``openai`` SDK against a fake of
the provider's own wire protocol, so what is checked is the translation both
ways: text, system prompt, multi-turn, image input, a tool-call round trip, JSON
mode, streaming with usage, embeddings, and every failure class the routing
engine acts on (each one must reach the router as the right class, and fall
back or fail fast accordingly). The same provider is then driven through the
Anthropic Messages and OpenAI Responses doors with those protocols' official
SDKs (:mod:`interlock.testing.conformance_doors`).

Built-in providers run it from ``tests/plugins/test_conformance.py``. A
third-party plugin runs it against its own provider in a few lines::

    from interlock.testing.conformance import ProviderCase, ProviderConformance
    from interlock.testing.gateway import provider_table

    class TestAcme(ProviderConformance):
        CASE = ProviderCase(
            name="acme",
            fake=lambda: FakeAcme(),                       # a FakeServer speaking Acme's protocol
            provider_toml=lambda fake, timeout: provider_table(
                "acme", type="acme", base_url=fake.base_url, api_key="k", timeout=timeout),
            model="acme/acme-large",
            extra_plugins=(("interlock_acme", interlock_acme),),  # or installed via entry point
        )

Fakes answer through :func:`interlock.testing._replies.plan_reply`, so the
expected texts below ("Fake reply to: ...", "Tool result: ...") are the same
for every provider.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from interlock.testing._base import Fault
# re-exported: plugin authors and the fakes' ready-made cases import them from here
from interlock.testing._conformance_env import FEATURES as FEATURES
from interlock.testing._conformance_env import ConformanceEnv as ConformanceEnv
from interlock.testing._conformance_env import ProviderCase as ProviderCase
from interlock.testing.conformance_doors import DoorConformance
from interlock.testing.fake_openai import FakeOpenAI
from interlock.testing.gateway import provider_table, running_gateway


#: attempt timeout the suite configures, and the latency that must exceed it
TIMEOUT = 0.5
SLOW = 2.0

# a 1x1 transparent PNG, as a data URL
PNG = "data:image/png;base64," + base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


# failure class -> (default status, fallback expected); a non-fallback class must fail fast
HTTP_FAILURES: dict[str, tuple[int, bool]] = {
    "rate_limited": (429, True),
    "overloaded": (503, True),
    "server_error": (500, True),
    "auth": (401, True),
    "not_found": (404, True),
    "bad_request": (400, False),
    "context_length": (400, True),
    "content_policy": (400, False),
}

# stream faults before the first content: each must fall back invisibly
STREAM_FAULTS: dict[str, Fault] = {
    "cut": Fault(cut_after=0),
    "malformed": Fault(malformed_at=0),
    "error_event": Fault(error_event_at=0),
}


class ProviderConformance(DoorConformance):
    """Subclass with ``CASE = ProviderCase(...)`` (or override the ``case`` fixture) to run the suite.

    The Messages and Responses door cases come with it (:class:`DoorConformance`).
    """

    CASE: ClassVar[ProviderCase | None] = None

    @pytest.fixture
    def case(self) -> ProviderCase:
        if self.CASE is None:
            pytest.fail("set CASE = ProviderCase(...) on the conformance test class")
        return self.CASE

    @pytest.fixture
    async def env(self, case: ProviderCase) -> AsyncIterator[ConformanceEnv]:
        async with case.fake() as fake, FakeOpenAI(models=["gpt-4o-mini"]) as backup:
            toml = "\n".join(
                [
                    case.provider_toml(fake, TIMEOUT),
                    provider_table("conformance-backup", type="openai", base_url=backup.base_url, api_key="sk-backup"),
                    "[routes.conformance]",
                    'strategy = "ordered"',
                    # the backup's window is declared larger than any model's, so a context-length
                    # failure may fall back to it (the router only falls back to larger windows)
                    f'targets = ["{case.model}", {{ model = "conformance-backup/gpt-4o-mini", context_window = 100000000 }}]',
                    "[exporters.ledger]",
                    "enabled = false",
                ]
            )
            async with running_gateway(toml, environ=dict(case.environ), extra_plugins=case.extra_plugins) as gw:
                yield ConformanceEnv(case, fake, backup, gw)

    # -- happy paths ------------------------------------------------------------------------

    async def test_text(self, env: ConformanceEnv) -> None:
        raw = await env.client.chat.completions.with_raw_response.create(
            model=env.case.model, messages=[{"role": "user", "content": "hello there"}]
        )
        completion = raw.parse()
        assert completion.choices[0].message.content == "Fake reply to: hello there"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
        assert raw.headers["x-interlock-attempts"] == "1"
        assert env.gw.log.last.attempts[0].outcome == "ok"

    async def test_system_prompt(self, env: ConformanceEnv) -> None:
        self.need(env, "system")
        completion = await env.client.chat.completions.create(
            model=env.case.model,
            messages=[
                {"role": "system", "content": "You are a terse assistant (marker-7f3a)."},
                {"role": "user", "content": "hi"},
            ],
        )
        assert completion.choices[0].message.content == "Fake reply to: hi"
        sent = json.dumps([r.json for r in env.fake.requests if r.json is not None])
        assert "marker-7f3a" in sent, "the system prompt never reached the provider"

    async def test_multi_turn(self, env: ConformanceEnv) -> None:
        completion = await env.client.chat.completions.create(
            model=env.case.model,
            messages=[
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ],
        )
        assert completion.choices[0].message.content == "Fake reply to: second question"
        sent = json.dumps([r.json for r in env.fake.requests if r.json is not None])
        assert "first answer" in sent, "earlier turns never reached the provider"

    async def test_image_input(self, env: ConformanceEnv) -> None:
        self.need(env, "images")
        completion = await env.client.chat.completions.create(
            model=env.case.model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": PNG}},
                    ],
                }
            ],
        )
        assert completion.choices[0].message.content == "Fake reply to: what is this (1 image)"

    async def test_tool_call_round_trip(self, env: ConformanceEnv) -> None:
        self.need(env, "tools")
        messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
        first = await env.client.chat.completions.create(model=env.case.model, messages=messages, tools=[WEATHER_TOOL])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert len(calls) == 1 and isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
        assert calls[0].function.name == "get_weather"
        assert json.loads(calls[0].function.arguments) == {"city": "text"}
        assert calls[0].id
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny and 21C"},
        ]
        second = await env.client.chat.completions.create(model=env.case.model, messages=messages, tools=[WEATHER_TOOL])
        assert second.choices[0].message.content == "Tool result: sunny and 21C"
        assert second.choices[0].finish_reason == "stop"

    async def test_streamed_tool_call(self, env: ConformanceEnv) -> None:
        self.need(env, "tools")
        stream = await env.client.chat.completions.create(
            model=env.case.model, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], stream=True
        )
        name, args, finish = "", "", None
        async for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    name += call.function.name or "" if call.function else ""
                    args += call.function.arguments or "" if call.function else ""
                finish = choice.finish_reason or finish
        assert name == "get_weather"
        assert json.loads(args) == {"city": "text"}
        assert finish == "tool_calls"

    async def test_json_mode(self, env: ConformanceEnv) -> None:
        self.need(env, "json")
        completion = await env.client.chat.completions.create(
            model=env.case.model,
            messages=[{"role": "user", "content": "reply in JSON"}],
            response_format={"type": "json_object"},
        )
        assert json.loads(completion.choices[0].message.content or "") == {"reply": "Fake reply to: reply in JSON"}

    async def test_stream_with_usage(self, env: ConformanceEnv) -> None:
        stream = await env.client.chat.completions.create(
            model=env.case.model,
            messages=[{"role": "user", "content": "stream this answer please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, None
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
        assert text == "Fake reply to: stream this answer please"
        assert finish == "stop"
        if "stream_usage" in env.case.features:
            assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
        # usage is metered whether or not the client asked for it
        assert env.gw.log.last.usage is not None and env.gw.log.last.usage.completion_tokens > 0

    async def test_stream_without_usage_request(self, env: ConformanceEnv) -> None:
        stream = await env.client.chat.completions.create(
            model=env.case.model, messages=[{"role": "user", "content": "no usage please"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        assert all(chunk.usage is None for chunk in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Fake reply to: no usage please"

    async def test_embeddings(self, env: ConformanceEnv) -> None:
        self.need(env, "embeddings")
        assert env.case.embeddings_model, "a case offering embeddings must name embeddings_model"
        result = await env.client.embeddings.create(model=env.case.embeddings_model, input=["alpha", "beta"])
        assert [d.index for d in result.data] == [0, 1]
        assert all(len(d.embedding) > 0 for d in result.data)
        assert result.data[0].embedding != result.data[1].embedding

    # -- failures ---------------------------------------------------------------------------

    @pytest.mark.parametrize("failure", sorted(HTTP_FAILURES))
    async def test_failure_class(self, env: ConformanceEnv, failure: str) -> None:
        default_status, falls_back = HTTP_FAILURES[failure]
        if failure in ("context_length", "content_policy") and failure not in env.case.errors:
            if failure == "context_length":
                pytest.fail(f"{env.case.name}: ProviderCase.errors needs a native 'context_length' error")
            pytest.skip(f"{env.case.name} reports no content-policy HTTP error")
        status, body = env.case.errors.get(failure, (default_status, None))
        env.fake.add_fault(Fault(status=status, body=body, retry_after=1 if failure == "rate_limited" else None))
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
        if falls_back:
            raw = await env.client.chat.completions.with_raw_response.create(model="conformance", messages=messages)
            assert raw.headers["x-interlock-provider"] == "conformance-backup"
            assert raw.headers["x-interlock-attempts"] == "2"
        else:
            with pytest.raises(openai.BadRequestError):
                await env.client.chat.completions.create(model="conformance", messages=messages)
            assert not env.backup.requests, "a request error must fail fast, not burn through the chain"
        assert env.gw.log.last.attempts[0].outcome == failure

    async def test_timeout_falls_back(self, env: ConformanceEnv) -> None:
        env.fake.add_fault(Fault(latency=SLOW))
        raw = await env.client.chat.completions.with_raw_response.create(
            model="conformance", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-interlock-provider"] == "conformance-backup"
        assert env.gw.log.last.attempts[0].outcome == "timeout"

    @pytest.mark.parametrize("fault", sorted(STREAM_FAULTS))
    async def test_stream_failure_before_content_falls_back(self, env: ConformanceEnv, fault: str) -> None:
        env.fake.add_fault(STREAM_FAULTS[fault])
        stream = await env.client.chat.completions.create(
            model="conformance", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Fake reply to: hi"
        attempts = env.gw.log.last.attempts
        assert [a.provider for a in attempts] == [env.gw.log.last.candidates[0].split("/")[0], "conformance-backup"]
        assert attempts[0].outcome != "ok"

    async def test_stream_failure_after_content_is_an_error_event(self, env: ConformanceEnv) -> None:
        env.fake.add_fault(Fault(cut_after=2))
        stream = await env.client.chat.completions.create(
            model=env.case.model, messages=[{"role": "user", "content": "a longer answer to cut short"}], stream=True
        )
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        assert env.gw.log.last.error_type is not None
