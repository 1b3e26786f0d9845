"""The cost table: every built-in provider type, a realistic usage report, a hand-computed price.

Each row sends one request through the real gateway to the fake of that provider's wire
protocol, with the fake made to report the usage the real provider reports for such a
request (its own wire shape, through the fakes' ``usage`` knob). The ledger's
``requests.cost_usd`` and ``attempts.cost_usd`` (read back from the SQLite file with the
standard library once the gateway has shut down and flushed) and the cost the client got
(the ``x-interlock-cost-usd`` header, or the ``: x-interlock-cost-usd=`` comment that ends a
stream) must equal the dollar amount written in the row, worked out by hand from the data
set's list prices (``interlock prices MODEL --provider TYPE``) in the comment next to it.

docs/cost-examples.md walks through the same rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

from interlock.testing import (
    FakeAnthropic, FakeBedrock, FakeCohere, FakeGemini, FakeOllama, FakeOpenAI, FakeReplicate, FakeServer, FakeVertex,
)
from interlock.testing import fake_bedrock
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

KEY = "sk-cost-table-0123456789"
HELLO = "Summarise the attached report in three sentences."


@dataclass
class Row:
    """One line of the cost table."""

    id: str
    provider: str  # the provider type, also the instance's name
    fake: Callable[[], FakeServer]
    model: str  # the model the client names ("instance/model")
    expected: Decimal | None  # US dollars; None: the model has no price (NULL cost, no header)
    stream: bool = False
    client: str = "openai"  # or "anthropic": the Messages door with the anthropic SDK
    table: Callable[[Any], str] | None = None  # the [providers.X] table (default: OpenAI-compatible)
    extra: str = ""  # more config ([prices] overrides)
    environ: Mapping[str, str] = field(default_factory=dict)


def _openai_compatible(kind: str) -> Callable[[Any], str]:
    return lambda fake: provider_table(kind, type=kind, base_url=fake.base_url, api_key=KEY)


def _openai(models: list[str], usage: dict[str, Any], **kwargs: Any) -> Callable[[], FakeServer]:
    return lambda: FakeOpenAI(models=models, api_key=KEY, usage=usage, **kwargs)


# --------------------------------------------------------------------------- #
# the usage each provider reports, in its own wire shape
# --------------------------------------------------------------------------- #

# OpenAI o-series: 9,000 prompt tokens of which 4,000 were a prompt-cache hit; 3,000 completion
# tokens of which 2,000 were reasoning (completion includes reasoning)
O4_MINI = {
    "prompt_tokens": 9000, "completion_tokens": 3000, "total_tokens": 12000,
    "prompt_tokens_details": {"cached_tokens": 4000, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 2000, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}  # fmt: skip
# gpt-audio: 1,000 of 1,500 prompt tokens were audio; 600 of 800 completion tokens were audio
GPT_AUDIO = {
    "prompt_tokens": 1500, "completion_tokens": 800, "total_tokens": 2300,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 1000, "text_tokens": 500, "image_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 600, "text_tokens": 200},
}  # fmt: skip
AZURE_4O = {
    "prompt_tokens": 9000, "completion_tokens": 800, "total_tokens": 9800,
    "prompt_tokens_details": {"cached_tokens": 3000, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}  # fmt: skip
# Anthropic: input_tokens excludes cache reads and writes; cache_creation splits the writes by lifetime
CLAUDE_CACHED = {
    "input_tokens": 2000, "cache_read_input_tokens": 30000, "cache_creation_input_tokens": 8000,
    "cache_creation": {"ephemeral_5m_input_tokens": 5000, "ephemeral_1h_input_tokens": 3000},
    "output_tokens": 1500, "server_tool_use": {"web_search_requests": 2}, "service_tier": "standard",
}  # fmt: skip
# 150,000 fresh + 60,000 cached = a 210,000-token prompt: past the 200k threshold
CLAUDE_LONG = {
    "input_tokens": 150000, "cache_read_input_tokens": 60000, "cache_creation_input_tokens": 0,
    "output_tokens": 2000, "service_tier": "standard",
}  # fmt: skip
CLAUDE_HOUR_WRITE = {
    "input_tokens": 1000, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 10000,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 10000}, "output_tokens": 500,
}  # fmt: skip
# Gemini: promptTokenCount includes the cached tokens; candidatesTokenCount excludes the thoughts
GEMINI_PRO_LONG = {
    "promptTokenCount": 250000, "candidatesTokenCount": 1000, "totalTokenCount": 251000,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 250000}],
}  # fmt: skip
GEMINI_FLASH_AUDIO = {
    "promptTokenCount": 12000, "cachedContentTokenCount": 8000, "candidatesTokenCount": 700,
    "thoughtsTokenCount": 1300, "totalTokenCount": 14000,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9000}, {"modality": "AUDIO", "tokenCount": 3000}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 8000}],
}  # fmt: skip
VERTEX_FLASH = {
    "promptTokenCount": 20000, "cachedContentTokenCount": 15000, "candidatesTokenCount": 1000,
    "thoughtsTokenCount": 2000, "totalTokenCount": 23000,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20000}],
}  # fmt: skip
MISTRAL = {"prompt_tokens": 4000, "completion_tokens": 1000, "total_tokens": 5000}
# DeepSeek reports its cache both ways: prompt_cache_hit/miss_tokens and prompt_tokens_details
DEEPSEEK = {
    "prompt_tokens": 10000, "completion_tokens": 2000, "total_tokens": 12000,
    "prompt_tokens_details": {"cached_tokens": 6000}, "prompt_cache_hit_tokens": 6000, "prompt_cache_miss_tokens": 4000,
}  # fmt: skip
# xAI: completion_tokens *excludes* the reasoning tokens (total = 5000 + 500 + 2000)
GROK_MINI = {
    "prompt_tokens": 5000, "completion_tokens": 500, "total_tokens": 7500,
    "prompt_tokens_details": {"text_tokens": 5000, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 2000},
    "completion_tokens_details": {"reasoning_tokens": 2000, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    "num_sources_used": 0,
}  # fmt: skip
SONAR = {
    "prompt_tokens": 1200, "completion_tokens": 800, "total_tokens": 2000,
    "search_context_size": "low", "num_search_queries": 1,
}  # fmt: skip
# OpenRouter: OpenAI's shape plus its own cost figure (which interlock does not take on trust)
OPENROUTER_LONG = {
    "prompt_tokens": 300000, "completion_tokens": 4000, "total_tokens": 304000,
    "prompt_tokens_details": {"cached_tokens": 100000}, "completion_tokens_details": {"reasoning_tokens": 0},
    "cost": 1.35, "is_byok": False,
}  # fmt: skip
GROQ = {
    "prompt_tokens": 2000, "completion_tokens": 1000, "total_tokens": 3000,
    "queue_time": 0.02, "prompt_time": 0.05, "completion_time": 0.4, "total_time": 0.45,
}  # fmt: skip
TOGETHER = {"prompt_tokens": 3000, "completion_tokens": 1000, "total_tokens": 4000, "cached_tokens": 0}
FIREWORKS = {"prompt_tokens": 5000, "completion_tokens": 1000, "total_tokens": 6000}
GPUSTACK = {"prompt_tokens": 3000, "completion_tokens": 1000, "total_tokens": 4000}
# Bedrock Converse: inputTokens excludes cache reads and writes, as with Claude's own API
BEDROCK = {
    "inputTokens": 500, "cacheReadInputTokens": 6000, "cacheWriteInputTokens": 2000,
    "outputTokens": 300, "totalTokens": 8800,
}  # fmt: skip
# Cohere bills billed_units; tokens counts what the model saw, including its prompt template
COHERE = {
    "billed_units": {"input_tokens": 1200, "output_tokens": 400},
    "tokens": {"input_tokens": 1391, "output_tokens": 400},
}  # fmt: skip
OLLAMA = {"prompt_eval_count": 4096, "eval_count": 512}
REPLICATE = {"input_token_count": 2000, "output_token_count": 500}


# --------------------------------------------------------------------------- #
# providers that need more than an OpenAI-compatible table
# --------------------------------------------------------------------------- #


def _anthropic(usage: dict[str, Any], thinking: str | None = None) -> Callable[[], FakeServer]:
    def make() -> FakeServer:
        fake = FakeAnthropic(models=["claude-sonnet-4-5"], api_key=KEY, usage=usage)
        fake.thinking = thinking
        return fake

    return make


def _anthropic_table(fake: Any) -> str:
    return provider_table("anthropic", type="anthropic", base_url=fake.base_url, api_key=KEY)


def _gemini_table(fake: Any) -> str:
    return provider_table("gemini", type="gemini", base_url=fake.base_url, api_key=KEY)


def _vertex(publisher: str, usage: dict[str, Any]) -> Callable[[], FakeServer]:
    def make() -> FakeServer:
        fake = FakeVertex()
        getattr(fake, publisher).usage = usage  # each publisher reports usage in its own shape
        return fake

    return make


def _vertex_table(fake: Any) -> str:
    return provider_table(
        "vertex", type="vertex", base_url=fake.url, project=fake.project, location=fake.location,
        credentials_file=fake.credentials_file,
    )  # fmt: skip


BEDROCK_CASE = fake_bedrock.conformance_case()  # its signing credentials and isolated AWS environment
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"


def _bedrock() -> FakeServer:
    fake = BEDROCK_CASE.fake()
    assert isinstance(fake, FakeBedrock)
    fake.models.append(BEDROCK_MODEL)
    fake.usage = BEDROCK
    return fake


ROWS = [
    # 5,000 uncached x $1.1 + 4,000 cached x $0.275 + 3,000 output (2,000 of it reasoning) x $4.4
    #   = 5,500 + 1,100 + 13,200 = 19,800 per million = $0.0198
    Row("openai-o4-mini-cached-reasoning", "openai", _openai(["o4-mini"], O4_MINI), "openai/o4-mini",
        Decimal("0.0198")),
    Row("openai-o4-mini-stream", "openai", _openai(["o4-mini"], O4_MINI), "openai/o4-mini",
        Decimal("0.0198"), stream=True),
    # 500 text x $2.5 + 1,000 audio in x $32 + 200 text out x $10 + 600 audio out x $64
    #   = 1,250 + 32,000 + 2,000 + 38,400 = 73,650 per million = $0.07365
    Row("openai-gpt-audio", "openai", _openai(["gpt-audio"], GPT_AUDIO), "openai/gpt-audio", Decimal("0.07365")),
    # 6,000 uncached x $2.5 + 3,000 cached x $1.25 + 800 output x $10 = 15,000 + 3,750 + 8,000
    #   = 26,750 per million = $0.02675
    Row("azure-gpt-4o-cached", "azure", _openai(["gpt-4o", "prod-gpt-4o"], AZURE_4O), "azure/gpt-4o",
        Decimal("0.02675"),
        table=lambda fake: provider_table("azure", type="azure", base_url=fake.url, api_key=KEY,
                                          deployments={"gpt-4o": "prod-gpt-4o"})),
    # 2,000 fresh x $3 + 30,000 cache reads x $0.3 + 5,000 5-minute writes x $3.75
    #   + 3,000 1-hour writes x $6 + 1,500 output (thinking included) x $15
    #   = 6,000 + 9,000 + 18,750 + 18,000 + 22,500 = 74,250 per million = $0.07425,
    #   + 2 web searches x $0.01 = $0.09425
    Row("anthropic-cache-writes-thinking-search", "anthropic",
        _anthropic(CLAUDE_CACHED, thinking="The report has three findings worth keeping."),
        "anthropic/claude-sonnet-4-5", Decimal("0.09425"), client="anthropic", table=_anthropic_table),
    Row("anthropic-stream", "anthropic",
        _anthropic(CLAUDE_CACHED, thinking="The report has three findings worth keeping."),
        "anthropic/claude-sonnet-4-5", Decimal("0.09425"), client="anthropic", stream=True, table=_anthropic_table),
    # a 210,000-token prompt is past 200k: the long-context rates apply to the whole request
    # 150,000 fresh x $6 + 60,000 cache reads x $0.6 + 2,000 output x $22.5
    #   = 900,000 + 36,000 + 45,000 = 981,000 per million = $0.981
    Row("anthropic-sonnet-4-5-above-200k", "anthropic", _anthropic(CLAUDE_LONG), "anthropic/claude-sonnet-4-5",
        Decimal("0.981"), table=_anthropic_table),
    # 250,000 prompt tokens is past 200k: 250,000 x $2.5 + 1,000 output x $15 = 625,000 + 15,000
    #   = 640,000 per million = $0.64 (the base rates would say $0.3225)
    Row("gemini-2-5-pro-above-200k", "gemini",
        lambda: FakeGemini(models=["gemini-2.5-pro"], api_key=KEY, usage=GEMINI_PRO_LONG),
        "gemini/gemini-2.5-pro", Decimal("0.64"), table=_gemini_table),
    Row("gemini-2-5-pro-stream", "gemini",
        lambda: FakeGemini(models=["gemini-2.5-pro"], api_key=KEY, usage=GEMINI_PRO_LONG),
        "gemini/gemini-2.5-pro", Decimal("0.64"), stream=True, table=_gemini_table),
    # 1,000 uncached text x $0.3 + 3,000 audio x $1 + 8,000 cached x $0.03
    #   + (700 + 1,300 thoughts) output x $2.5 = 300 + 3,000 + 240 + 5,000 = 8,540 per million = $0.00854
    Row("gemini-2-5-flash-audio-cached-thoughts", "gemini",
        lambda: FakeGemini(models=["gemini-2.5-flash"], api_key=KEY, usage=GEMINI_FLASH_AUDIO),
        "gemini/gemini-2.5-flash", Decimal("0.00854"), table=_gemini_table),
    # 5,000 uncached x $0.3 + 15,000 cached x $0.03 + (1,000 + 2,000 thoughts) x $2.5
    #   = 1,500 + 450 + 7,500 = 9,450 per million = $0.00945
    Row("vertex-gemini-cached-thoughts", "vertex", _vertex("gemini", VERTEX_FLASH), "vertex/gemini-2.5-flash",
        Decimal("0.00945"), table=_vertex_table),
    # 1,000 fresh x $3 + 10,000 1-hour cache writes x $6 + 500 output x $15
    #   = 3,000 + 60,000 + 7,500 = 70,500 per million = $0.0705
    Row("vertex-claude-1h-cache-write", "vertex", _vertex("claude", CLAUDE_HOUR_WRITE),
        "vertex/claude-sonnet-4-5@20250929", Decimal("0.0705"), table=_vertex_table),
    # Mistral puts usage on its last chunk unasked: 4,000 x $2 + 1,000 x $6 = 14,000 per million = $0.014
    Row("mistral-large-stream", "mistral", _openai(["mistral-large-latest"], MISTRAL, always_stream_usage=True),
        "mistral/mistral-large-latest", Decimal("0.014"), stream=True, table=_openai_compatible("mistral")),
    # DeepSeek's list price changes with the time of day (off-peak discounts), so the row pins it
    # with a [prices] override at the standard rates ($0.27 / $0.07 cached / $1.1):
    # 4,000 cache misses x $0.27 + 6,000 hits x $0.07 + 2,000 x $1.1 = 1,080 + 420 + 2,200
    #   = 3,700 per million = $0.0037
    Row("deepseek-chat-cache-hits", "deepseek", _openai(["deepseek-chat"], DEEPSEEK), "deepseek/deepseek-chat",
        Decimal("0.0037"), table=_openai_compatible("deepseek"),
        extra='[prices."deepseek/deepseek-chat"]\ninput = 0.27\ncached_input = 0.07\noutput = 1.1\n'),
    # xAI's completion_tokens leaves the reasoning out; the bill does not:
    # 3,000 uncached x $0.3 + 2,000 cached x $0.075 + (500 + 2,000 reasoning) x $0.5
    #   = 900 + 150 + 1,250 = 2,300 per million = $0.0023
    Row("xai-grok-3-mini-reasoning", "xai", _openai(["grok-3-mini"], GROK_MINI), "xai/grok-3-mini",
        Decimal("0.0023"), table=_openai_compatible("xai")),
    # 1,200 x $1 + 800 x $1 = 2,000 per million = $0.002, + the $0.012 request fee = $0.014
    # (sonar has no per-search price: its one search query is paid for by the request fee)
    Row("perplexity-sonar-request-fee", "perplexity", _openai(["sonar"], SONAR), "perplexity/sonar",
        Decimal("0.014"), table=_openai_compatible("perplexity")),
    # self-hosted: nothing per token, however many
    Row("ollama-self-hosted", "ollama", lambda: FakeOllama(models=["llama3.2"], usage=OLLAMA), "ollama/llama3.2",
        Decimal(0), table=lambda fake: provider_table("ollama", type="ollama", base_url=fake.url)),
    # Cohere bills its billed_units: 1,200 x $2.5 + 400 x $10 = 3,000 + 4,000 = 7,000 per million = $0.007
    Row("cohere-command-a-billed-units", "cohere",
        lambda: FakeCohere(models=["command-a-03-2025"], api_key=KEY, usage=COHERE), "cohere/command-a-03-2025",
        Decimal("0.007"),
        table=lambda fake: provider_table("cohere", type="cohere", base_url=fake.base_url, api_key=KEY)),
    # the data set has no Replicate prices: the cost is unknown (NULL), not $0
    Row("replicate-unpriced", "replicate", lambda: FakeReplicate(api_key=KEY, usage=REPLICATE),
        "replicate/meta/meta-llama-3-8b-instruct", None,
        table=lambda fake: provider_table("replicate", type="replicate", base_url=fake.url, api_key=KEY)),
    # ... until a [prices] override prices it: 2,000 x $0.05 + 500 x $0.25 = 100 + 125
    #   = 225 per million = $0.000225
    Row("replicate-priced-by-override", "replicate", lambda: FakeReplicate(api_key=KEY, usage=REPLICATE),
        "replicate/meta/meta-llama-3-8b-instruct", Decimal("0.000225"),
        table=lambda fake: provider_table("replicate", type="replicate", base_url=fake.url, api_key=KEY),
        extra='[prices."replicate/meta/meta-llama-3-8b-instruct"]\ninput = 0.05\noutput = 0.25\n'),
    # 500 fresh x $3 + 6,000 cache reads x $0.3 + 2,000 cache writes x $3.75 + 300 output x $15
    #   = 1,500 + 1,800 + 7,500 + 4,500 = 15,300 per million = $0.0153
    Row("bedrock-converse-cache-write", "bedrock", _bedrock, f"bedrock/{BEDROCK_MODEL}", Decimal("0.0153"),
        table=lambda fake: BEDROCK_CASE.provider_toml(fake, 30.0), environ=BEDROCK_CASE.environ),
    # Claude Sonnet 4.5 through OpenRouter, a 300,000-token prompt (its 1M context): past 200k, so
    # 200,000 uncached x $6 + 100,000 cached x $0.6 + 4,000 output x $22.5
    #   = 1,200,000 + 60,000 + 90,000 = 1,350,000 per million = $1.35
    Row("openrouter-claude-above-200k", "openrouter", _openai(["anthropic/claude-sonnet-4.5"], OPENROUTER_LONG),
        "openrouter/anthropic/claude-sonnet-4.5", Decimal("1.35"), table=_openai_compatible("openrouter")),
    # self-hosted: nothing per token
    Row("gpustack-self-hosted", "gpustack", _openai(["qwen3-8b"], GPUSTACK), "gpustack/qwen3-8b", Decimal(0),
        table=_openai_compatible("gpustack")),
    # 2,000 x $0.59 + 1,000 x $0.79 = 1,180 + 790 = 1,970 per million = $0.00197
    Row("groq-llama-3-3-70b", "groq", _openai(["llama-3.3-70b-versatile"], GROQ), "groq/llama-3.3-70b-versatile",
        Decimal("0.00197"), table=_openai_compatible("groq")),
    # 3,000 x $0.88 + 1,000 x $0.88 = 3,520 per million = $0.00352
    Row("together-llama-3-3-70b", "together", _openai(["meta-llama/Llama-3.3-70B-Instruct-Turbo"], TOGETHER),
        "together/meta-llama/Llama-3.3-70B-Instruct-Turbo", Decimal("0.00352"), table=_openai_compatible("together")),
    # 5,000 x $0.2 + 1,000 x $0.2 = 1,200 per million = $0.0012
    Row("fireworks-llama-3-1-8b", "fireworks", _openai(["accounts/fireworks/models/llama-v3p1-8b-instruct"], FIREWORKS),
        "fireworks/accounts/fireworks/models/llama-v3p1-8b-instruct", Decimal("0.0012"),
        table=_openai_compatible("fireworks")),
]  # fmt: skip


def test_the_table_covers_every_builtin_provider_type() -> None:
    from interlock.testing.cases import builtin_cases

    types = {case.name.split("-")[0] for case in builtin_cases()}
    assert len(types) == 18
    assert {row.provider for row in ROWS} == types
    assert {row.provider for row in ROWS if row.stream} >= {"openai", "anthropic", "gemini"}


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_cost_matches_the_hand_computed_price(row: Row, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    fake = row.fake()
    table = row.table or _openai_compatible(row.provider)
    async with fake:
        toml = f'{table(fake)}\n[database]\nurl = "sqlite+aiosqlite:///{ledger}"\n{row.extra}'
        async with running_gateway(toml, environ=row.environ, workdir=tmp_path) as gw:
            told = await _send(gw, row)
    assert told == row.expected
    with sqlite3.connect(ledger) as db:
        requests = db.execute("SELECT id, provider, cost_usd FROM requests").fetchall()
        attempts = db.execute("SELECT request_id, provider_type, outcome, cost_usd FROM attempts").fetchall()
    assert len(requests) == 1 and len(attempts) == 1
    (request_id, provider, request_cost), (attempt_of, provider_type, outcome, attempt_cost) = requests[0], attempts[0]
    assert (provider, provider_type, outcome, attempt_of) == (row.provider, row.provider, "ok", request_id)
    assert _stored(request_cost) == row.expected
    assert _stored(attempt_cost) == row.expected


def _stored(value: float | int | None) -> Decimal | None:
    """A ``cost_usd`` as SQLite hands it back: NUMERIC is kept as a double (or an integer when
    whole), whose shortest repr is the exact decimal for the few digits these amounts have."""
    return None if value is None else Decimal(repr(value))


async def _send(gw: RunningGateway, row: Row) -> Decimal | None:
    """Send the row's request; the cost the client was told (header, or the stream's last comment)."""
    messages: Any = [{"role": "user", "content": HELLO}]
    if row.client == "anthropic":
        async with anthropic.AsyncAnthropic(base_url=gw.root, api_key="client-key", max_retries=0) as sdk:
            if row.stream:
                async with sdk.messages.with_streaming_response.create(
                    model=row.model, max_tokens=1024, messages=messages, stream=True
                ) as resp:
                    return _stream_cost([line async for line in resp.iter_lines()])
            answer = await sdk.messages.with_raw_response.create(model=row.model, max_tokens=1024, messages=messages)
            assert (await answer.parse()).content  # the SDK accepts the answer
            return _header_cost(answer.headers)
    if row.stream:
        async with gw.client.chat.completions.with_streaming_response.create(
            model=row.model, messages=messages, stream=True
        ) as resp:
            return _stream_cost([line async for line in resp.iter_lines()])
    raw = await gw.client.chat.completions.with_raw_response.create(model=row.model, messages=messages)
    assert raw.parse().choices[0].message.content
    return _header_cost(raw.headers)


def _header_cost(headers: Mapping[str, str]) -> Decimal | None:
    value = headers.get("x-interlock-cost-usd")
    return None if value is None else Decimal(value)


def _stream_cost(lines: list[str]) -> Decimal | None:
    costs = [line.split("=", 1)[1] for line in lines if line.startswith(": x-interlock-cost-usd=")]
    assert len(costs) <= 1
    return Decimal(costs[0]) if costs else None
