"""The conformance cases for the two other front doors: Anthropic Messages and OpenAI Responses.

A provider is reachable from every client protocol the gateway speaks, so the
suite drives each provider through ``POST /v1/messages`` with the official
``anthropic`` SDK and through ``POST /v1/responses`` with the official ``openai``
SDK, as well as through Chat Completions (:mod:`interlock.testing.conformance`):
text, a streamed answer rebuilt by the SDK's own accumulator, a tool-call round
trip, and failures (a fallback before anything was sent, a fail-fast request
error, an explicit error event after the stream started). Whether the door
translates or passes the request through to a target that speaks its protocol,
the client must see the same answers.

:class:`DoorConformance` is mixed into
:class:`~interlock.testing.conformance.ProviderConformance`; its tests use that
class's ``env`` fixture.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from interlock.testing._base import Fault
from interlock.testing._conformance_env import ConformanceEnv

#: the weather tool in each door's own shape (the fakes answer a tool request with {"city": "text"})
_WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
MESSAGES_TOOL: Any = {"name": "get_weather", "description": "Current weather in a city", "input_schema": _WEATHER_SCHEMA}
RESPONSES_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": _WEATHER_SCHEMA,
    "strict": False,
}


def anthropic_client(env: ConformanceEnv) -> anthropic.AsyncAnthropic:
    """An official Anthropic client pointed at the gateway (closed by the caller)."""
    return anthropic.AsyncAnthropic(base_url=env.gw.root, api_key="client-key", max_retries=0)


class DoorConformance:
    """Every provider through the Messages and Responses doors (mixed into ProviderConformance)."""

    @staticmethod
    def need(env: ConformanceEnv, feature: str) -> None:
        """Skip the test unless the case's provider offers ``feature``."""
        if feature not in env.case.features:
            pytest.skip(f"{env.case.name} does not offer {feature}")

    # -- Anthropic Messages ---------------------------------------------------------------

    async def test_messages_door_text(self, env: ConformanceEnv) -> None:
        async with anthropic_client(env) as client:
            raw = await client.messages.with_raw_response.create(
                model=env.case.model, max_tokens=256, messages=[{"role": "user", "content": "hello there"}]
            )
        message = await raw.parse()
        assert message.type == "message" and message.role == "assistant"
        assert [b.type for b in message.content] == ["text"]
        assert message.content[0].text == "Fake reply to: hello there"  # type: ignore[union-attr]
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        assert raw.headers["x-interlock-attempts"] == "1"
        assert env.gw.log.last.protocol == "messages"

    async def test_messages_door_stream(self, env: ConformanceEnv) -> None:
        async with anthropic_client(env) as client:
            async with client.messages.stream(
                model=env.case.model, max_tokens=256, messages=[{"role": "user", "content": "stream this answer please"}]
            ) as stream:
                text = "".join([t async for t in stream.text_stream])
                final = await stream.get_final_message()
        assert text == "Fake reply to: stream this answer please"
        assert final.content[0].text == text  # type: ignore[union-attr]
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens > 0
        assert env.gw.log.last.usage is not None and env.gw.log.last.usage.completion_tokens > 0

    async def test_messages_door_tool_round_trip(self, env: ConformanceEnv) -> None:
        self.need(env, "tools")
        messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
        async with anthropic_client(env) as client:
            first = await client.messages.create(
                model=env.case.model, max_tokens=256, messages=messages, tools=[MESSAGES_TOOL]
            )
            assert first.stop_reason == "tool_use"
            uses = [b for b in first.content if b.type == "tool_use"]
            assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == {"city": "text"}
            messages += [
                {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny and 21C"}]},
            ]
            second = await client.messages.create(
                model=env.case.model, max_tokens=256, messages=messages, tools=[MESSAGES_TOOL]
            )
        assert second.content[-1].text == "Tool result: sunny and 21C"  # type: ignore[union-attr]
        assert second.stop_reason == "end_turn"

    async def test_messages_door_failure_falls_back(self, env: ConformanceEnv) -> None:
        env.fake.add_fault(Fault(status=500))
        async with anthropic_client(env) as client:
            async with client.messages.stream(
                model="conformance", max_tokens=256, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                final = await stream.get_final_message()
        assert final.content[0].text == "Fake reply to: hi"  # type: ignore[union-attr]
        attempts = env.gw.log.last.attempts
        assert [a.provider for a in attempts][-1] == "conformance-backup" and attempts[0].outcome == "server_error"

    async def test_messages_door_bad_request_fails_fast(self, env: ConformanceEnv) -> None:
        status, body = env.case.errors.get("bad_request", (400, None))
        env.fake.add_fault(Fault(status=status, body=body))
        async with anthropic_client(env) as client:
            with pytest.raises(anthropic.BadRequestError) as caught:
                await client.messages.create(model="conformance", max_tokens=256, messages=[{"role": "user", "content": "hi"}])
        assert isinstance(caught.value.body, dict) and caught.value.body.get("type") == "error"
        assert not env.backup.requests, "a request error must fail fast, not burn through the chain"

    async def test_messages_door_stream_error_after_content(self, env: ConformanceEnv) -> None:
        env.fake.add_fault(Fault(cut_after=2))
        async with anthropic_client(env) as client:
            with pytest.raises(anthropic.APIError):
                async with client.messages.stream(
                    model=env.case.model, max_tokens=256,
                    messages=[{"role": "user", "content": "a longer answer to cut short"}],
                ) as stream:
                    async for _ in stream:
                        pass
        assert env.gw.log.last.error_type is not None

    # -- OpenAI Responses -----------------------------------------------------------------

    async def test_responses_door_text(self, env: ConformanceEnv) -> None:
        raw = await env.client.responses.with_raw_response.create(model=env.case.model, input="hello there", store=False)
        response = raw.parse()
        assert response.status == "completed"
        assert response.output_text == "Fake reply to: hello there"
        assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
        assert raw.headers["x-interlock-attempts"] == "1"
        assert env.gw.log.last.protocol == "responses"

    async def test_responses_door_stream(self, env: ConformanceEnv) -> None:
        async with env.client.responses.stream(
            model=env.case.model, input="stream this answer please", store=False
        ) as stream:
            deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        assert "".join(deltas) == "Fake reply to: stream this answer please"
        assert final.output_text == "".join(deltas) and final.status == "completed"
        assert final.usage is not None and final.usage.output_tokens > 0

    async def test_responses_door_tool_round_trip(self, env: ConformanceEnv) -> None:
        self.need(env, "tools")
        items: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
        first = await env.client.responses.create(model=env.case.model, input=items, tools=[RESPONSES_TOOL], store=False)
        calls = [item for item in first.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "text"}
        items += [
            {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name, "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny and 21C"},
        ]
        second = await env.client.responses.create(model=env.case.model, input=items, tools=[RESPONSES_TOOL], store=False)
        assert second.output_text == "Tool result: sunny and 21C"

    async def test_responses_door_failure_falls_back(self, env: ConformanceEnv) -> None:
        env.fake.add_fault(Fault(status=500))
        async with env.client.responses.stream(model="conformance", input="hi", store=False) as stream:
            final = await stream.get_final_response()
        assert final.output_text == "Fake reply to: hi"
        attempts = env.gw.log.last.attempts
        assert attempts[-1].provider == "conformance-backup" and attempts[0].outcome == "server_error"

    async def test_responses_door_bad_request_fails_fast(self, env: ConformanceEnv) -> None:
        status, body = env.case.errors.get("bad_request", (400, None))
        env.fake.add_fault(Fault(status=status, body=body))
        with pytest.raises(openai.BadRequestError):
            await env.client.responses.create(model="conformance", input="hi", store=False)
        assert not env.backup.requests, "a request error must fail fast, not burn through the chain"

    async def test_responses_door_stream_error_after_content(self, env: ConformanceEnv) -> None:
        # OpenAI ends a stream that failed after it started with response.failed, which the SDK
        # yields (it raises only for a failure before the stream started): either way, never a
        # stream that just stops, and never one that claims to be complete
        env.fake.add_fault(Fault(cut_after=2))
        seen: list[str] = []
        try:
            async with env.client.responses.stream(
                model=env.case.model, input="a longer answer to cut short", store=False
            ) as stream:
                seen += [event.type async for event in stream]
        except openai.APIError:
            seen.append("APIError")
        assert "response.completed" not in seen
        assert seen[-1] in ("response.failed", "APIError")
        assert env.gw.log.last.error_type is not None
