"""Failed attempts are costed: usage reported before a failure, and what cut-off attempts may have cost.

Real gateways, real fakes (their fault API) and the official SDKs. Every expected dollar
figure is computed by hand in the test from the ``[prices]`` the config sets (USD per million
tokens), so the checks do not depend on the shipped price table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from interlock.core.telemetry import names as T
from interlock.core.telemetry.runtime import Telemetry
from interlock.testing import FakeAnthropic, FakeGemini, FakeOpenAI, Fault
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway
from tests.chaos._upstream import ChaosUpstream

CLAUDE = "claude-sonnet-4-6"
MILLION = Decimal(1_000_000)
#: the prices every test config sets, USD per million tokens
PRICES = """
[prices."claude-sonnet-4-6"]
input = 3
output = 15
[prices."gpt-4o-mini"]
input = 0.15
output = 0.6
[prices."gpt-4o"]
input = 2.5
output = 10
[prices."gemini-2.5-flash"]
input = 0.3
output = 2.5
[prices."no_done--priced"]
input = 2.5
output = 10
"""
#: 100,000 characters: 25,000 prompt tokens to the fakes (4 characters a token)
LONG_PROMPT = "abcd" * 25_000


@dataclass
class Env:
    gw: RunningGateway
    db: Path
    spans: InMemorySpanExporter

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, args).fetchall()

    async def flush(self) -> None:
        for exporter in self.gw.gateway.exporters:
            await exporter.flush()

    def attempt_spans(self) -> list[Any]:
        found = [s for s in self.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
        return sorted(found, key=lambda s: s.attributes[T.INTERLOCK_ATTEMPT_N])


@pytest.fixture
async def claude_env(tmp_path: Path) -> AsyncIterator[tuple[FakeAnthropic, FakeOpenAI, Env]]:
    """``smart``: Claude (FakeAnthropic) then gpt-4o-mini (FakeOpenAI); ``solo``: Claude alone."""
    async with FakeAnthropic(models=[CLAUDE], api_key="sk-ant") as claude, FakeOpenAI(models=["gpt-4o-mini"]) as backup:
        db = tmp_path / "ledger.db"
        toml = "\n".join([
            provider_table("claude", type="anthropic", base_url=claude.base_url, api_key="sk-ant"),
            provider_table("backup", type="openai", base_url=backup.base_url, api_key="sk-backup"),
            "[routes.smart]",
            f'chain = "claude/{CLAUDE} > backup/gpt-4o-mini"',
            "[routes.solo]",
            f'chain = "claude/{CLAUDE}"',
            "[database]",
            f'url = "sqlite+aiosqlite:///{db}"',
            PRICES,
        ])
        spans = InMemorySpanExporter()
        async with running_gateway(toml, telemetry=Telemetry.for_tests(spans, InMemoryMetricReader())) as gw:
            yield claude, backup, Env(gw, db, spans)


def claude_cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * Decimal(3) + output_tokens * Decimal(15)) / MILLION


def mini_cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * Decimal("0.15") + output_tokens * Decimal("0.6")) / MILLION


def stored(value: Any) -> Decimal:
    """A Numeric(18, 10) value read back from SQLite (a float) at the column's 10 places."""
    return Decimal(str(value)).quantize(Decimal("1e-10"))


# --------------------------------------------------------------------------- #
# usage reported before a failure
# --------------------------------------------------------------------------- #


async def test_anthropic_message_start_then_an_error_event_is_costed(
    claude_env: tuple[FakeAnthropic, FakeOpenAI, Env],
) -> None:
    """message_start reports 25,000 input tokens, then an error event: that attempt is billed and costed."""
    claude, _, env = claude_env
    claude.add_fault(Fault(error_event_at=0, model=CLAUDE))  # message_start, ping, block start, then `error`
    async with anthropic.AsyncAnthropic(base_url=env.gw.root, api_key="k", max_retries=0) as sdk:
        async with sdk.messages.stream(
            model="smart", max_tokens=64, messages=[{"role": "user", "content": LONG_PROMPT}]
        ) as stream:
            message = await stream.get_final_message()
    assert message.content[0].type == "text" and message.content[0].text.startswith("Fake reply to: abcd")
    await env.flush()
    # the fake's message_start usage: 25,000 input tokens and 1 output token
    failed = claude_cost(25_000, 1)
    assert failed == Decimal("0.075015")
    d = env.gw.log.last
    first, second = d.attempts
    assert (first.outcome, first.action) == ("overloaded", "fallback")
    assert first.usage is not None and (first.usage.prompt_tokens, first.usage.completion_tokens) == (25_000, 1)
    assert first.cost_usd == failed and first.unreported_cost_max_usd is None  # billed and known: not "unreported"
    assert second.usage is not None
    answer = mini_cost(second.usage.prompt_tokens, second.usage.completion_tokens)
    assert d.cost_usd == failed + answer
    # the fallback's delta counts what the failed attempt was billed: the request cost the failed
    # attempt and the answer, against the answer's usage on Claude
    on_claude = claude_cost(second.usage.prompt_tokens, second.usage.completion_tokens)
    assert d.cost_delta_usd == failed + answer - on_claude > 0
    [(n, tokens, out, cost, unreported)] = env.rows(
        "SELECT n, input_tokens, output_tokens, cost_usd, unreported_cost_max_usd FROM attempts WHERE n = 1")
    assert (n, tokens, out, stored(cost), unreported) == (1, 25_000, 1, failed, None)
    [(request_cost,)] = env.rows("SELECT cost_usd FROM requests")
    assert stored(request_cost) == (failed + answer).quantize(Decimal("1e-10"))
    # the failed attempt's span carries the usage and the cost it reported
    span = env.attempt_spans()[0]
    assert span.attributes[T.GEN_AI_USAGE_INPUT_TOKENS] == 25_000
    assert span.attributes[T.GEN_AI_USAGE_OUTPUT_TOKENS] == 1
    assert span.attributes[T.INTERLOCK_COST_USD] == pytest.approx(float(failed))


async def test_the_fallback_cost_delta_includes_the_failed_attempts_cost(
    claude_env: tuple[FakeAnthropic, FakeOpenAI, Env],
) -> None:
    """Chat Completions stream, Claude billed 25,000 input tokens before its error, gpt-4o-mini answered:
    the delta in the ledger and in the stream's trailer is the whole request's cost minus the answer on Claude."""
    claude, _, env = claude_env
    claude.add_fault(Fault(error_event_at=0, model=CLAUDE))
    body = {"model": "smart", "messages": [{"role": "user", "content": LONG_PROMPT}], "stream": True}
    async with aiohttp.ClientSession() as session, session.post(f"{env.gw.base_url}/chat/completions", json=body) as resp:
        assert resp.headers["x-interlock-fallback"] == "true"  # committed on the answer, after the failure
        text = await resp.text()
    await env.flush()
    d = env.gw.log.last
    answer_usage = d.attempts[1].usage
    assert answer_usage is not None and d.fallback_used
    failed = claude_cost(25_000, 1)
    answer = mini_cost(answer_usage.prompt_tokens, answer_usage.completion_tokens)
    delta = failed + answer - claude_cost(answer_usage.prompt_tokens, answer_usage.completion_tokens)
    # without the failed attempt's cost the fallback would look like a saving: mini is 20x cheaper
    assert answer - claude_cost(answer_usage.prompt_tokens, answer_usage.completion_tokens) < 0 < delta
    assert d.cost_delta_usd == delta
    assert f": x-interlock-cost-usd={(failed + answer).normalize():f}" in text
    assert f": x-interlock-cost-delta-usd={delta.quantize(Decimal('1e-10')).normalize():f}" in text
    [(cost_delta,)] = env.rows("SELECT cost_delta_usd FROM requests")
    assert stored(cost_delta) == delta.quantize(Decimal("1e-10"))


async def test_a_translated_claude_stream_that_fails_everywhere_reports_its_cost(
    claude_env: tuple[FakeAnthropic, FakeOpenAI, Env],
) -> None:
    """An OpenAI client, Claude translated, every try ends in an error event after message_start:
    the 502 carries the cost of what was billed, and the ledger has it."""
    claude, _, env = claude_env
    claude.add_fault(Fault(error_event_at=0, model=CLAUDE, times=None))
    prompt = "abcd" * 1_000  # 1,000 prompt tokens
    with pytest.raises(openai.APIStatusError) as info:
        await env.gw.client.chat.completions.create(
            model="solo", messages=[{"role": "user", "content": prompt}], stream=True
        )
    attempts = env.gw.log.last.attempts
    assert [a.outcome for a in attempts] == ["overloaded"] * len(attempts) and attempts
    want = claude_cost(1_000, 1) * len(attempts)
    assert info.value.status_code == 503
    assert Decimal(info.value.response.headers["x-interlock-cost-usd"]) == want
    await env.flush()
    [(cost, input_tokens)] = env.rows("SELECT cost_usd, input_tokens FROM requests")
    assert stored(cost) == want and input_tokens is None  # no attempt answered: the request has no usage of its own
    assert env.rows("SELECT input_tokens FROM attempts") == [(1_000,)] * len(attempts)


async def test_an_openai_stream_that_broke_after_its_usage_chunk_is_costed(tmp_path: Path) -> None:
    """The usage chunk arrived, then the stream ended without [DONE]: the client gets an error event,
    the attempt keeps the usage and its cost."""
    db = tmp_path / "ledger.db"
    async with ChaosUpstream() as upstream:
        toml = "\n".join([
            provider_table("chaos", type="openai", base_url=upstream.base_url, api_key="sk-chaos"),
            "[database]",
            f'url = "sqlite+aiosqlite:///{db}"',
            PRICES,
        ])
        async with running_gateway(toml) as gw:
            stream = await gw.client.chat.completions.create(
                model="chaos/no_done--priced", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            with pytest.raises(openai.APIError, match="stream"):
                async for _ in stream:
                    pass
            for exporter in gw.gateway.exporters:
                await exporter.flush()
            d = gw.log.last
    # the chaos upstream's usage: 9 prompt and 5 completion tokens, at 2.5 and 10 per million
    want = (9 * Decimal("2.5") + 5 * Decimal(10)) / MILLION
    [attempt] = d.attempts
    assert attempt.outcome == "stream_error" and attempt.cost_usd == want == d.cost_usd
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT input_tokens, output_tokens, cost_usd FROM attempts").fetchone()
        status, cost = conn.execute("SELECT status, cost_usd FROM requests").fetchone()
    assert (row[0], row[1], stored(row[2])) == (9, 5, want)
    assert status == 502 and stored(cost) == want


async def test_a_gemini_stream_that_failed_after_usage_metadata_is_costed(tmp_path: Path) -> None:
    """Gemini's fragments carry usageMetadata (the prompt's count) before the stream's error."""
    db = tmp_path / "ledger.db"
    async with FakeGemini(models=["gemini-2.5-flash"], api_key="g-key") as fake:
        toml = "\n".join([
            provider_table("gemini", type="gemini", base_url=fake.url, api_key="g-key"),
            "[database]",
            f'url = "sqlite+aiosqlite:///{db}"',
            PRICES,
        ])
        fake.add_fault(Fault(error_event_at=1))  # one content fragment (with usageMetadata), then an error
        async with running_gateway(toml) as gw:
            stream = await gw.client.chat.completions.create(
                model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "abcd" * 500}], stream=True
            )
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
            for exporter in gw.gateway.exporters:
                await exporter.flush()
            d = gw.log.last
    want = 500 * Decimal("0.3") / MILLION  # 500 prompt tokens reported; no output count yet
    [attempt] = d.attempts
    assert attempt.outcome != "ok" and attempt.usage is not None and attempt.usage.prompt_tokens == 500
    assert attempt.cost_usd == want == d.cost_usd
    with sqlite3.connect(db) as conn:
        tokens, cost = conn.execute("SELECT input_tokens, cost_usd FROM attempts").fetchone()
    assert tokens == 500 and stored(cost) == want


# --------------------------------------------------------------------------- #
# attempts cut off before any usage arrived
# --------------------------------------------------------------------------- #

#: 4,000 characters of prompt
PROMPT = [{"role": "user", "content": "abcd" * 1_000}]


def prompt_estimate() -> int:
    """The request's prompt estimate, as the gateway makes it (core.estimate)."""
    from interlock.core.estimate import worst_case_usage
    from interlock.core.types import RequestContext

    ctx = RequestContext(request_id="r", endpoint="chat", body={"model": "smart", "messages": PROMPT})
    return worst_case_usage(ctx, 0).prompt_tokens


@pytest.fixture
async def openai_env(tmp_path: Path) -> AsyncIterator[tuple[FakeOpenAI, Path, str]]:
    async with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "gpt-unpriced"]) as fake:
        db = tmp_path / "ledger.db"
        toml = "\n".join([
            provider_table("openai", type="openai", base_url=fake.base_url, api_key="sk-a"),
            provider_table("backup", type="openai", base_url=fake.base_url, api_key="sk-b"),
            "[database]",
            f'url = "sqlite+aiosqlite:///{db}"',
            PRICES,
        ])
        yield fake, db, toml


def route(chain: str, setting: str) -> str:
    return f'[routes.smart]\nchain = "{chain}"\n{setting}\n'


async def finished(gw: RunningGateway) -> None:
    for exporter in gw.gateway.exporters:
        await exporter.flush()


@pytest.mark.parametrize("stream", [False, True])
async def test_an_attempt_cut_off_by_the_latency_threshold_carries_its_possible_cost(
    openai_env: tuple[FakeOpenAI, Path, str], stream: bool
) -> None:
    fake, db, toml = openai_env
    fake.add_fault(Fault(latency=3, ttft=3, model="gpt-4o"))
    async with running_gateway(toml + route("openai/gpt-4o > backup/gpt-4o-mini", "latency_threshold = 0.3")) as gw:
        if stream:
            chunks = await gw.client.chat.completions.create(model="smart", messages=PROMPT, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            text = (await gw.client.chat.completions.create(model="smart", messages=PROMPT)).choices[0].message.content
        assert text and text.startswith("Fake reply to: abcd")
        await finished(gw)
        d = gw.log.last
    # the prompt estimate (1,000 tokens: 4,000 characters at 4 a token) at gpt-4o's 2.5 per million
    want = prompt_estimate() * Decimal("2.5") / MILLION
    assert want > 0
    cut, answer = d.attempts
    assert (cut.outcome, cut.status, cut.usage, cut.cost_usd) == ("timeout", None, None, None)
    assert cut.unreported_cost_max_usd == want == d.unreported_cost_max_usd
    assert answer.unreported_cost_max_usd is None and d.cost_usd == answer.cost_usd  # billed spend: the answer only
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT n, cost_usd, unreported_cost_max_usd FROM attempts ORDER BY n").fetchall()
        [(cost, unreported)] = conn.execute("SELECT cost_usd, unreported_cost_max_usd FROM requests").fetchall()
    assert [(n, c is None, u is None) for n, c, u in rows] == [(1, True, False), (2, False, True)]
    assert stored(rows[0][2]) == want and stored(unreported) == want and cost is not None


async def test_a_lost_hedge_carries_its_possible_cost(openai_env: tuple[FakeOpenAI, Path, str]) -> None:
    fake, db, toml = openai_env
    fake.add_fault(Fault(latency=5, model="gpt-4o"))
    spans = InMemorySpanExporter()
    telemetry = Telemetry.for_tests(spans, InMemoryMetricReader())
    chain = route("openai/gpt-4o > backup/gpt-4o-mini", "hedge_delay = 0.1")
    async with running_gateway(toml + chain, telemetry=telemetry) as gw:
        await gw.client.chat.completions.create(model="smart", messages=PROMPT)
        await finished(gw)
        d = gw.log.last
    want = prompt_estimate() * Decimal("2.5") / MILLION
    [routing] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.INTERNAL]
    assert routing.attributes[T.INTERLOCK_UNREPORTED_COST_MAX_USD] == pytest.approx(float(want))
    lost, won = d.attempts
    assert (lost.outcome, lost.action, lost.cost_usd) == ("cancelled", "hedge_lost", None)
    assert won.hedge and won.outcome == "ok"
    assert lost.unreported_cost_max_usd == want == d.unreported_cost_max_usd
    with sqlite3.connect(db) as conn:
        [(unreported,)] = conn.execute("SELECT unreported_cost_max_usd FROM attempts WHERE outcome = 'cancelled'")
    assert stored(unreported) == want


async def test_an_attempt_cut_off_on_a_model_without_a_price_has_no_estimate(
    openai_env: tuple[FakeOpenAI, Path, str],
) -> None:
    fake, db, toml = openai_env
    fake.add_fault(Fault(latency=3, model="gpt-unpriced"))
    async with running_gateway(toml + route("openai/gpt-unpriced > backup/gpt-4o-mini", "latency_threshold = 0.3")) as gw:
        await gw.client.chat.completions.create(model="smart", messages=PROMPT)
        await finished(gw)
        d = gw.log.last
    assert d.attempts[0].outcome == "timeout"
    assert d.attempts[0].unreported_cost_max_usd is None and d.unreported_cost_max_usd is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT unreported_cost_max_usd FROM requests").fetchall() == [(None,)]


async def test_an_upstream_error_status_is_not_a_possible_cost(openai_env: tuple[FakeOpenAI, Path, str]) -> None:
    """A 503 answer billed nothing: no estimate, only a cut-off attempt gets one."""
    fake, _, toml = openai_env
    fake.add_fault(Fault(status=503, model="gpt-4o"))
    async with running_gateway(toml + route("openai/gpt-4o > backup/gpt-4o-mini", "")) as gw:
        await gw.client.chat.completions.create(model="smart", messages=PROMPT)
        d = gw.log.last
    assert d.attempts[0].outcome == "overloaded"
    assert d.attempts[0].unreported_cost_max_usd is None and d.unreported_cost_max_usd is None
