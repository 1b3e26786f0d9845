"""The routing engine end to end: breaker, retries, thresholds, hedging, continuation, overrides.

Two targets on one fake, told apart by model: ``openai/gpt-4o`` (primary) and
``backup/gpt-4o-mini``; faults aimed at the primary with ``Fault(model="gpt-4o")``.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from interlock.testing import FakeOpenAI, Fault
from interlock.testing.gateway import RunningGateway, running_gateway
from tests.conftest import SECRET

HI = [{"role": "user", "content": "hi"}]
PRIMARY = "gpt-4o"


def config(fake: FakeOpenAI, route: str = "", extra: str = "", chain: str = "openai/gpt-4o > backup/gpt-4o-mini") -> str:
    return f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[providers.backup]
type = "openai"
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[routes.smart]
chain = "{chain}"
{route}
[exporters.ledger]
enabled = false
{extra}
"""


async def chat(gw: RunningGateway, **kwargs: object) -> openai.types.chat.ChatCompletion:
    raw = await gw.client.chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "smart"), messages=kwargs.pop("messages", HI), **kwargs  # type: ignore[arg-type]
    )
    chat.headers = raw.headers  # type: ignore[attr-defined]
    return raw.parse()


async def providers_health(gw: RunningGateway) -> dict[str, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.get(f"{gw.root}/health/providers") as r:
        return (await r.json())["targets"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- #
# circuit breaker
# --------------------------------------------------------------------------- #


async def test_breaker_trips_skips_and_a_half_open_probe_restores(fake: FakeOpenAI) -> None:
    breaker = "[breaker]\nfailures = 2\ncooldown = 0.2\nwindow = 60"
    async with running_gateway(config(fake, extra=breaker)) as gw:
        fake.add_fault(Fault(status=500, model=PRIMARY, times=None))
        for _ in range(2):
            await chat(gw)
            assert chat.headers["x-interlock-provider"] == "backup"  # type: ignore[attr-defined]
        assert any("closed -> open" in e for e in gw.log.last.events)
        # tripped: the primary is skipped without an attempt
        calls = len(fake.requests)
        await chat(gw)
        assert chat.headers["x-interlock-attempts"] == "1"  # type: ignore[attr-defined]
        assert len(fake.requests) == calls + 1
        assert gw.log.last.skipped and gw.log.last.skipped[0].startswith("openai/gpt-4o: breaker open")
        assert (await providers_health(gw))["openai/gpt-4o"]["breaker"]["state"] == "open"  # type: ignore[index]
        # the primary recovers; after the cooldown one probe goes through and closes the breaker
        fake.clear_faults()
        await asyncio.sleep(0.25)
        await chat(gw)
        assert chat.headers["x-interlock-provider"] == "openai"  # type: ignore[attr-defined]
        assert any("open -> half_open" in e for e in gw.log.last.events)
        assert any("half_open -> closed" in e for e in gw.log.last.events)
        assert (await providers_health(gw))["openai/gpt-4o"]["breaker"]["state"] == "closed"  # type: ignore[index]


async def test_a_failed_probe_reopens_with_a_longer_cooldown(fake: FakeOpenAI) -> None:
    breaker = "[breaker]\nfailures = 1\ncooldown = 0.1\nbackoff = 100\nmax_cooldown = 60"
    async with running_gateway(config(fake, extra=breaker)) as gw:
        fake.add_fault(Fault(status=503, model=PRIMARY, times=None))
        await chat(gw)  # trips (cooldown 0.1s)
        await asyncio.sleep(0.15)
        await chat(gw)  # half-open probe fails: open again for 0.1 * 100 = 10s
        assert any("half_open -> open" in e for e in gw.log.last.events)
        await asyncio.sleep(0.15)
        await chat(gw)
        assert chat.headers["x-interlock-attempts"] == "1"  # type: ignore[attr-defined]  # still cooling down


async def test_429_with_retry_after_trips_at_once(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake)) as gw:
        fake.add_fault(Fault(status=429, retry_after=30, model=PRIMARY))
        await chat(gw)
        assert any("rate_limited with Retry-After 30s" in e for e in gw.log.last.events)
        await chat(gw)
        assert chat.headers["x-interlock-provider"] == "backup"  # type: ignore[attr-defined]
        assert chat.headers["x-interlock-attempts"] == "1"  # type: ignore[attr-defined]


async def test_when_every_target_cools_down_the_longest_tripped_is_still_tried(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake)) as gw:
        fake.add_fault(Fault(status=429, retry_after=30, times=2))
        with pytest.raises(openai.RateLimitError):
            await chat(gw)
        reply = await chat(gw)  # both open; the first one tripped is tried rather than failing outright
        assert reply.choices[0].message.content == "Fake reply to: hi"
        assert chat.headers["x-interlock-provider"] == "openai"  # type: ignore[attr-defined]
        assert any("every target is cooling down" in r for r in gw.log.last.reasons)


# --------------------------------------------------------------------------- #
# retries
# --------------------------------------------------------------------------- #


async def test_retries_with_backoff_then_success_on_the_same_target(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="retries = 2\nbackoff = 0.01")) as gw:
        fake.add_fault(Fault(status=500, model=PRIMARY, times=2))
        await chat(gw)
        assert chat.headers["x-interlock-provider"] == "openai"  # type: ignore[attr-defined]
        assert [a.outcome for a in gw.log.last.attempts] == ["server_error", "server_error", "ok"]
        assert [a.action for a in gw.log.last.attempts] == ["retry", "retry", None]
        assert sum("retry openai/gpt-4o" in e for e in gw.log.last.events) == 2


async def test_retry_budget_is_per_request_then_fallback(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="retries = 1\nbackoff = 0.01")) as gw:
        fake.add_fault(Fault(status=500, model=PRIMARY, times=5))
        await chat(gw)
        assert [a.action for a in gw.log.last.attempts] == ["retry", "fallback", None]
        assert chat.headers["x-interlock-provider"] == "backup"  # type: ignore[attr-defined]


async def test_retry_after_is_honoured_when_short_and_not_when_long(fake: FakeOpenAI) -> None:
    route = "retries = 1\nmax_retry_wait = 5"
    async with running_gateway(config(fake, route=route, chain="openai/gpt-4o")) as gw:
        fake.add_fault(Fault(status=429, retry_after=0.05, model=PRIMARY))
        reply = await chat(gw)  # the only target: wait what it asked, then retry
        assert reply.choices[0].message.content == "Fake reply to: hi"
        assert [a.action for a in gw.log.last.attempts] == ["retry", None]
        assert any(e.startswith("retry openai/gpt-4o in 0.05s") for e in gw.log.last.events)
    async with running_gateway(config(fake, route=route, chain="openai/gpt-4o")) as gw:
        fake.add_fault(Fault(status=429, retry_after=60, model=PRIMARY))
        with pytest.raises(openai.RateLimitError) as info:
            await chat(gw)  # longer than max_retry_wait: the client is told when to come back
        assert info.value.response.headers["retry-after"] == "60"
        assert len(gw.log.last.attempts) == 1


# --------------------------------------------------------------------------- #
# timeouts and latency thresholds
# --------------------------------------------------------------------------- #


async def test_latency_threshold_falls_back_for_a_slow_response(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="latency_threshold = 0.3")) as gw:
        fake.add_fault(Fault(latency=3, model=PRIMARY))
        await chat(gw)
        assert chat.headers["x-interlock-provider"] == "backup"  # type: ignore[attr-defined]
        first = gw.log.last.attempts[0]
        assert first.outcome == "timeout" and "no response within 0.3s" in (first.error or "")


async def test_stream_ttft_stall_falls_back_invisibly(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="latency_threshold = 0.3")) as gw:
        fake.add_fault(Fault(ttft=3, model=PRIMARY))
        stream = await gw.client.chat.completions.create(model="smart", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Fake reply to: hi"
        assert [a.provider for a in gw.log.last.attempts] == ["openai", "backup"]
        assert "no first token within 0.3s" in (gw.log.last.attempts[0].error or "")


async def test_per_target_timeout_overrides_the_route(fake: FakeOpenAI) -> None:
    route = 'strategy = "ordered"\nlatency_threshold = 30'
    toml = config(fake).replace(
        'chain = "openai/gpt-4o > backup/gpt-4o-mini"',
        'targets = [{ model = "openai/gpt-4o", timeout = 0.3 }, "backup/gpt-4o-mini"]\n' + route,
    )
    async with running_gateway(toml) as gw:
        fake.add_fault(Fault(latency=3, model=PRIMARY))
        await chat(gw)
        assert gw.log.last.attempts[0].outcome == "timeout"
        assert chat.headers["x-interlock-provider"] == "backup"  # type: ignore[attr-defined]


async def test_total_timeout_bounds_the_whole_request(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="total_timeout = 0.4")) as gw:
        fake.add_fault(Fault(latency=3, times=2))
        with pytest.raises(openai.APIStatusError) as info:
            await chat(gw)
        assert info.value.status_code == 504


# --------------------------------------------------------------------------- #
# per-request chains, context windows, content policy
# --------------------------------------------------------------------------- #


async def test_a_request_can_bring_its_own_fallback_list(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake)) as gw:
        fake.add_fault(Fault(status=500, model="gpt-4o-mini"))
        await chat(gw, model="ignored", extra_body={"models": ["backup/gpt-4o-mini", "openai/gpt-4o"]})
        assert [a.provider for a in gw.log.last.attempts] == ["backup", "openai"]
        assert "models" not in fake.requests[-1].json  # consumed by the gateway, never sent upstream
        with pytest.raises(openai.BadRequestError):
            await chat(gw, extra_body={"models": "gpt-4o"})
        with pytest.raises(openai.NotFoundError):
            await chat(gw, extra_body={"models": ["no-such-model-xyz"]})


async def test_context_length_falls_back_only_to_larger_windows(fake: FakeOpenAI) -> None:
    toml = config(fake).replace(
        'chain = "openai/gpt-4o > backup/gpt-4o-mini"',
        'strategy = "ordered"\ntargets = [{ model = "openai/gpt-4o", context_window = 8000 }, '
        '{ model = "backup/gpt-4o", context_window = 8000 }, { model = "backup/gpt-4o-mini", context_window = 128000 }]',
    )
    body = {"error": {"message": "This model's maximum context length is 8000 tokens.", "type": "invalid_request_error",
                      "param": "messages", "code": "context_length_exceeded"}}
    async with running_gateway(toml) as gw:
        fake.add_fault(Fault(status=400, body=body, model=PRIMARY))
        await chat(gw)
        assert chat.headers["x-interlock-model"] == "gpt-4o-mini"  # type: ignore[attr-defined]
        assert [a.outcome for a in gw.log.last.attempts] == ["context_length", "ok"]
        assert gw.log.last.skipped == ["backup/gpt-4o: context window 8000 <= 8000"]


async def test_content_policy_fails_fast_unless_the_route_says_fallback(fake: FakeOpenAI) -> None:
    body = {"error": {"message": "filtered", "type": "invalid_request_error", "param": None, "code": "content_filter"}}
    async with running_gateway(config(fake)) as gw:
        fake.add_fault(Fault(status=400, body=body, model=PRIMARY))
        with pytest.raises(openai.BadRequestError):
            await chat(gw)
    async with running_gateway(config(fake, route='on_content_policy = "fallback"')) as gw:
        fake.add_fault(Fault(status=400, body=body, model=PRIMARY))
        await chat(gw)
        assert chat.headers["x-interlock-provider"] == "backup"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- #
# hedging and continuation
# --------------------------------------------------------------------------- #


async def test_hedge_returns_the_faster_target_and_cancels_the_other(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="hedge_delay = 0.1")) as gw:
        fake.add_fault(Fault(latency=5, model=PRIMARY))
        await chat(gw)
        assert chat.headers["x-interlock-provider"] == "backup"  # type: ignore[attr-defined]
        attempts = gw.log.last.attempts
        assert [(a.provider, a.outcome, a.hedge) for a in attempts] == [
            ("openai", "cancelled", False), ("backup", "ok", True)
        ]
        assert gw.log.last.hedged and any(e.startswith("hedge: started backup/gpt-4o-mini") for e in gw.log.last.events)
        # a fast primary is never hedged
        await chat(gw)
        assert [a.provider for a in gw.log.last.attempts] == ["openai"]


async def test_hedged_stream_commits_the_first_token_to_arrive(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="hedge_delay = 0.1")) as gw:
        fake.add_fault(Fault(ttft=5, model=PRIMARY))
        stream = await gw.client.chat.completions.create(model="smart", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Fake reply to: hi"
        assert gw.log.last.provider == "backup"


async def test_requests_with_tools_are_not_hedged_unless_asked(fake: FakeOpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    async with running_gateway(config(fake, route="hedge_delay = 0.05\nlatency_threshold = 0.5")) as gw:
        fake.add_fault(Fault(latency=0.2, model=PRIMARY))
        await chat(gw, tools=tools)
        assert [a.provider for a in gw.log.last.attempts] == ["openai"]


async def test_mid_stream_continuation_splices_the_next_target(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake, route="continue_stream = true")) as gw:
        fake.add_fault(Fault(cut_after=2, model=PRIMARY))
        messages = [{"role": "user", "content": "tell me a long story about a cat"}]
        raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=messages, stream=True)
        assert raw.headers["x-interlock-continuation"] == "enabled"
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
        sent = fake.requests[-1].json["messages"]
        assert sent[-1]["role"] == "assistant" and sent[-1]["content"]  # the partial answer as a prefix
        assert text.startswith(sent[-1]["content"]) and text != sent[-1]["content"]
        assert [a.action for a in gw.log.last.attempts] == ["fail", "continuation"]
        assert gw.log.last.status == 200


# --------------------------------------------------------------------------- #
# decision summary
# --------------------------------------------------------------------------- #


async def test_the_decision_summary_header_lists_every_attempt(fake: FakeOpenAI) -> None:
    async with running_gateway(config(fake)) as gw:
        fake.add_fault(Fault(status=503, model=PRIMARY))
        await chat(gw)
        assert chat.headers["x-interlock-decision"] == (  # type: ignore[attr-defined]
            "openai/gpt-4o=overloaded:fallback, backup/gpt-4o-mini=ok"
        )
        assert gw.log.last.reasons == ["1. openai/gpt-4o (strategy ordered)", "2. backup/gpt-4o-mini (strategy ordered)"]
        assert json.dumps(gw.log.last.events)  # plain strings: exporters can store them as they are


async def test_context_windows_default_to_the_price_table() -> None:
    # gpt-4o and gpt-4o-mini both have 128k windows in the shipped table, gpt-4.1 has ~1M
    body = {"error": {"message": "This model's maximum context length is 128000 tokens.",
                      "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
    async with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "gpt-4.1"]) as fake:
        chain = "openai/gpt-4o > backup/gpt-4o-mini > backup/gpt-4.1"
        async with running_gateway(config(fake, chain=chain)) as gw:
            fake.add_fault(Fault(status=400, body=body, model=PRIMARY))
            await chat(gw)
            assert chat.headers["x-interlock-model"] == "gpt-4.1"  # type: ignore[attr-defined]
            assert gw.log.last.skipped == ["backup/gpt-4o-mini: context window 128000 <= 128000"]
