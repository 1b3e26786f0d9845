"""The OpenAI Agents SDK runs an agent through the Responses door, as agent applications do.

An ``Agent`` with a ``@function_tool`` on ``OpenAIResponsesModel`` over an
``AsyncOpenAI`` pointed at the gateway; the fake upstream calls the tool on the
first turn and answers with its result on the next, so a run is several requests
carrying the growing conversation (or chained with ``previous_response_id``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from interlock.testing import FakeAnthropic, FakeOpenAI
from interlock.testing.response_store import MemoryResponseStore
from tests.conftest import GatewayFactory, RunningGateway

CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLS.append(city)
    return f"sunny in {city}"


@pytest.fixture
async def oai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def gw(oai: FakeOpenAI, make_gateway: GatewayFactory) -> AsyncIterator[RunningGateway]:
    async with FakeAnthropic() as claude:
        yield await make_gateway(
            f"""
[providers.openai]
base_url = "{oai.base_url}"
api_key = "sk-openai-agents"

[providers.anthropic]
base_url = "{claude.base_url}"
api_key = "sk-anthropic-agents"
""",
            response_store=MemoryResponseStore(),
        )


@contextlib.asynccontextmanager
async def agent(gw: RunningGateway, model: str) -> AsyncIterator[Agent[None]]:
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="agent-key", max_retries=0) as client:
        yield Agent(
            name="weather",
            instructions="Answer with the weather tool.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model=model, openai_client=client),
        )


@pytest.mark.parametrize("model", ["anthropic/claude-sonnet-4-6", "openai/gpt-4o"])
@pytest.mark.parametrize("chained", [False, True])
async def test_agent_calls_its_tool_then_answers(model: str, chained: bool, gw: RunningGateway, oai: FakeOpenAI) -> None:
    CALLS.clear()
    async with agent(gw, model) as weather:
        result = await Runner.run(
            weather, "What is the weather in Paris?", run_config=RunConfig(tracing_disabled=True),
            auto_previous_response_id=chained,
        )
    assert CALLS == ["text"]  # the fake fills the tool's schema with example values
    assert result.final_output == "Tool result: sunny in text"
    decisions = [d for d in gw.log.decisions if d.protocol == "responses"]
    assert len(decisions) == 2 and all(d.status == 200 for d in decisions)
    assert len(result.raw_responses) == 2
    store = gw.gateway.response_store
    assert isinstance(store, MemoryResponseStore)
    second = list(store.responses.values())[1]
    assert [item.get("type") for item in second.input][-2:] == ["function_call", "function_call_output"]
    if model.startswith("openai/"):
        # a native target sees the chain expanded by the gateway, which keeps the state (store: false upstream)
        assert oai.requests[-1].json.get("store") is (False if chained else None)
    else:  # the second request named the first response instead of resending the conversation
        assert second.response["previous_response_id"] == (result.raw_responses[0].response_id if chained else None)


@pytest.mark.parametrize("model", ["anthropic/claude-sonnet-4-6", "openai/gpt-4o"])
async def test_streamed_agent_run(model: str, gw: RunningGateway) -> None:
    CALLS.clear()
    async with agent(gw, model) as weather:
        run = Runner.run_streamed(weather, "What is the weather in Paris?", run_config=RunConfig(tracing_disabled=True))
        kinds = [event.type async for event in run.stream_events()]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert CALLS == ["text"] and run.final_output == "Tool result: sunny in text"
    assert [d.stream for d in gw.log.decisions] == [True, True]
