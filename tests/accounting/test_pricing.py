"""The price table: shipped data, name normalisation, config overrides and exact Decimal arithmetic."""

from __future__ import annotations

import datetime
import tomllib
from decimal import Decimal
from typing import Any

import pytest

from interlock import hookimpl
from interlock.core import config as config_mod
from interlock.accounting import pricing
from interlock.core.config import ConfigError
from interlock.core.gateway import Gateway
from interlock.core.plugins import make_plugin_manager
from interlock.accounting.pricing import FREE, Price, PriceTable, cost
from interlock.core.types import Usage
from interlock.plugins.detection import detect

BUILTIN = PriceTable.builtin()


def parse(toml: str) -> config_mod.Config:
    return config_mod.parse(tomllib.loads(toml), environ={})


def problems(toml: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(toml)
    return dict(info.value.problems)


# --------------------------------------------------------------------------- #
# the shipped data set (genai-prices)
# --------------------------------------------------------------------------- #


def rates(price: Price | None) -> tuple[Decimal | None, ...] | None:
    """What a price charges per token kind (two lookups through different providers compare equal)."""
    if price is None:
        return None
    return (price.input, price.output, price.cached_input, price.cache_write)


def test_the_data_set_loads_once_and_lists_models_for_every_hosted_provider_type() -> None:
    assert PriceTable.builtin() is BUILTIN  # loaded once, then cached
    listed = {ptype for ptype, _ in BUILTIN.models()}
    assert listed >= {
        "openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "perplexity", "cohere", "groq", "together",
        "fireworks", "bedrock", "openrouter", "azure",
    }
    assert len(list(BUILTIN.models())) >= 500
    assert BUILTIN.data is not None and BUILTIN.data.source == "built-in"
    assert BUILTIN.data.as_of is not None and BUILTIN.data.as_of.date() <= datetime.date.today()
    # the rest price through another list, or are free
    assert rates(BUILTIN.lookup("vertex", "gemini-2.5-flash")) == rates(BUILTIN.lookup("gemini", "gemini-2.5-flash"))
    haiku = BUILTIN.lookup("anthropic", "claude-haiku-4-5")
    assert rates(BUILTIN.lookup("bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0")) == rates(haiku)
    # AWS bills in-Region use of the 4.5-and-later Claude models 10% above Anthropic's list price
    in_region = BUILTIN.lookup("bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0")
    assert in_region is not None and haiku is not None and in_region.input == haiku.input * Decimal("1.1")
    assert rates(BUILTIN.lookup("openrouter", "openai/gpt-4o"))[:2] == rates(BUILTIN.lookup("openai", "gpt-4o"))[:2]  # type: ignore[index]
    assert BUILTIN.lookup("ollama", "llama3.2:3b") == FREE
    assert BUILTIN.lookup("gpustack", "qwen3-8b") == FREE


def test_every_listed_openai_anthropic_and_gemini_model_is_sent_where_detection_sends_it() -> None:
    for ptype, model in BUILTIN.models():
        if ptype in ("openai", "anthropic") and not model.startswith(("ft:", "text-", "dall-e", "tts", "whisper")):
            assert detect(model) in (ptype, None), model


def test_known_prices_from_the_data_set() -> None:
    gpt4o = BUILTIN.lookup("openai", "gpt-4o")
    assert gpt4o is not None and gpt4o.source == "built-in" and gpt4o.matched == "gpt-4o"
    assert (gpt4o.input, gpt4o.cached_input, gpt4o.output) == (Decimal("2.5"), Decimal("1.25"), Decimal("10"))
    assert gpt4o.context_window == 128_000
    sonnet = BUILTIN.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    assert (sonnet.input, sonnet.cached_input, sonnet.cache_write, sonnet.cache_write_1h, sonnet.output) == tuple(
        map(Decimal, ("3", "0.3", "3.75", "6", "15"))
    )
    assert sonnet.web_search == Decimal("0.01")  # $10 per 1,000 searches
    assert [threshold for threshold, _ in sonnet.tiers] == [200_000]  # the long-context tier
    sonar = BUILTIN.lookup("perplexity", "sonar")
    assert sonar is not None and sonar.per_request == Decimal("0.012")  # $12 per 1,000 requests


@pytest.mark.parametrize(
    ("provider_type", "model"),
    [  # the names the issue found unpriced in the old hand-kept table
        ("gemini", "gemini-2.0-flash"), ("xai", "grok-3"), ("xai", "grok-3-mini"), ("mistral", "mistral-large-latest"),
        ("mistral", "mistral-small-latest"), ("gemini", "gemini-1.5-pro"), ("openai", "gpt-4-turbo"), ("openai", "o1"),
        ("openai", "o3-mini"),
    ],
)
def test_models_the_hand_kept_table_missed_have_prices(provider_type: str, model: str) -> None:
    price = BUILTIN.lookup(provider_type, model)
    assert price is not None and price.input > 0 and price.output > 0


# --------------------------------------------------------------------------- #
# name normalisation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("provider_type", "model", "base_type", "base"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "openai", "gpt-4o-mini"),
        ("openai", "o4-mini-2025-04-16", "openai", "o4-mini"),
        ("openai", "gpt-5-2025-08-07", "openai", "gpt-5"),
        ("anthropic", "claude-3-5-haiku-20241022", "anthropic", "claude-3-5-haiku"),
        ("anthropic", "claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-3-7-sonnet-latest", "anthropic", "claude-3-7-sonnet"),
        ("anthropic", "claude-opus-4-20250514", "anthropic", "claude-opus-4-0"),
        ("anthropic", "claude-sonnet-4-20250514", "anthropic", "claude-sonnet-4-0"),
        ("gemini", "gemini-2.5-flash-001", "gemini", "gemini-2.5-flash"),
        ("gemini", "models/gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
        ("cohere", "command-a-03-2025", "cohere", "command-a"),
        ("xai", "grok-4-latest", "xai", "grok-4"),
        ("fireworks", "accounts/fireworks/models/deepseek-r1-0528", "fireworks", "deepseek-r1-0528"),
        (
            "together", "META-LLAMA/llama-3.3-70b-instruct-turbo", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"
        ),
        # provider prefixes written out
        ("openai", "openai/gpt-4o", "openai", "gpt-4o"),
        ("anthropic", "backup/claude-haiku-4-5", "anthropic", "claude-haiku-4-5"),
        # Bedrock ids and ARNs price as the vendor's model
        ("bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic", "claude-sonnet-4-0"),
        ("bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic", "claude-haiku-4-5"),
        ("bedrock", "eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic", "claude-3-7-sonnet"),
        (
            "bedrock",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0",
            "anthropic",
            "claude-sonnet-4-0",
        ),
        # Vertex: Gemini and Claude under their own names, Claude snapshots with @
        ("vertex", "claude-sonnet-4-5@20250929", "anthropic", "claude-sonnet-4-5"),
        ("vertex", "gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
        # OpenRouter: vendor/model, dotted Claude versions
        ("openrouter", "anthropic/claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5"),
        ("openrouter", "google/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
    ],
)
def test_snapshots_aliases_and_provider_ids_price_like_their_base_model(
    provider_type: str, model: str, base_type: str, base: str
) -> None:
    expected = BUILTIN.lookup(base_type, base)
    assert expected is not None
    assert rates(BUILTIN.lookup(provider_type, model))[:2] == rates(expected)[:2]  # type: ignore[index]


@pytest.mark.parametrize(
    ("provider_type", "model"),
    [
        ("openai", "house-model"),
        ("house", "gpt-4o"),  # an unknown provider type has no list
        ("replicate", "meta/meta-llama-3-8b-instruct"),  # billed per second of hardware, not per token
        ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"),
        ("openai", ""),
    ],
)
def test_unknown_models_have_no_price(provider_type: str, model: str) -> None:
    assert BUILTIN.lookup(provider_type, model) is None
    assert BUILTIN.cost(Usage(prompt_tokens=10), provider_type, model) is None
    assert BUILTIN.context_window(provider_type, model) is None


def test_context_windows() -> None:
    assert BUILTIN.context_window("openai", "gpt-4o-2024-11-20") == 128_000
    assert BUILTIN.context_window("anthropic", "claude-haiku-4-5-20251001") == 200_000
    assert BUILTIN.context_window("vertex", "gemini-2.5-flash") == 1_048_576


def test_time_dependent_prices_are_remembered_only_until_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSeek's off-peak hours: the price found holds until the next boundary, then is looked up again."""
    from interlock.accounting import price_data

    data = price_data.builtin()
    peak = datetime.datetime(2026, 12, 8, 3, 0, tzinfo=datetime.UTC)
    off_peak = datetime.datetime(2026, 12, 8, 17, 0, tzinfo=datetime.UTC)
    at_peak = data.find("deepseek", ["deepseek-chat"], peak)
    at_night = data.find("deepseek", ["deepseek-chat"], off_peak)
    assert at_peak is not None and at_night is not None
    assert at_peak.price.input == 2 * at_night.price.input  # the off-peak discount
    assert at_peak.until == datetime.datetime(2026, 12, 8, 16, 30, tzinfo=datetime.UTC).timestamp()
    plain = data.find("openai", ["gpt-4o"], peak)
    assert plain is not None and plain.until is None  # no schedule: held until the data changes
    table = PriceTable(data)
    clock = [peak.timestamp()]
    monkeypatch.setattr(pricing.time, "time", lambda: clock[0])
    monkeypatch.setattr(
        price_data.datetime, "datetime",
        type("Frozen", (datetime.datetime,), {"now": classmethod(lambda cls, tz=None: datetime.datetime.fromtimestamp(clock[0], tz))}),
    )
    first = table.lookup("deepseek", "deepseek-chat")
    assert first is not None and first.input == at_peak.price.input
    clock[0] = off_peak.timestamp()
    later = table.lookup("deepseek", "deepseek-chat")
    assert later is not None and later.input == at_night.price.input


# --------------------------------------------------------------------------- #
# arithmetic
# --------------------------------------------------------------------------- #


def test_cost_of_plain_usage_is_exact() -> None:
    price = BUILTIN.lookup("openai", "gpt-4o-mini")
    assert price is not None
    # 1000 x 0.15 + 500 x 0.6 = 450 per million
    got = cost(Usage(prompt_tokens=1000, completion_tokens=500), price)
    assert got == Decimal("0.00045") and isinstance(got, Decimal)
    # three cheap calls add up exactly (a float would give 0.0013500000000000001)
    assert got * 3 == Decimal("0.00135")


def test_cached_input_is_priced_at_the_cached_rate() -> None:
    price = BUILTIN.lookup("openai", "gpt-4o")
    assert price is not None
    usage = Usage(prompt_tokens=10_000, cached_tokens=4_000, completion_tokens=2_000)
    # 6000 x 2.5 + 4000 x 1.25 + 2000 x 10 = 40000 per million
    assert cost(usage, price) == Decimal("0.04")


def test_cache_writes_are_priced_at_the_write_rate() -> None:
    price = BUILTIN.lookup("anthropic", "claude-sonnet-4-5-20250929")
    assert price is not None
    usage = Usage(prompt_tokens=10_000, cached_tokens=3_000, cache_write_tokens=2_000, completion_tokens=1_000)
    # uncached 5000 x 3 + read 3000 x 0.3 + write 2000 x 3.75 + out 1000 x 15 = 38400 per million
    assert cost(usage, price) == Decimal("0.0384")


def test_reasoning_tokens_use_their_own_price_when_it_differs() -> None:
    price = Price(input=Decimal("2"), output=Decimal("8"), reasoning=Decimal("12"))
    usage = Usage(prompt_tokens=1_000, completion_tokens=1_000, reasoning_tokens=600)
    # 1000 x 2 + (1000 - 600) x 8 + 600 x 12 = 12400 per million
    assert cost(usage, price) == Decimal("0.0124")
    # without a separate price, reasoning is output: 1000 x 2 + 1000 x 8
    assert cost(usage, Price(input=Decimal("2"), output=Decimal("8"))) == Decimal("0.01")


def test_missing_rates_fall_back_and_inconsistent_usage_never_goes_negative() -> None:
    price = Price(input=Decimal("1"), output=Decimal("2"))  # no cached or write price: input rate
    usage = Usage(prompt_tokens=100, cached_tokens=60, cache_write_tokens=40, completion_tokens=10)
    assert cost(usage, price) == Decimal("0.00012")  # (0 + 60 + 40) x 1 + 10 x 2
    odd = Usage(prompt_tokens=10, cached_tokens=50, completion_tokens=5, reasoning_tokens=9)
    assert cost(odd, price) == Decimal("0.00006")  # 50 cached + 5 output (reasoning capped at completion)
    assert cost(Usage(), price) == 0


def test_long_context_tiers_price_the_whole_prompt_at_the_tier_rate() -> None:
    """Gemini 2.5 Pro above 200k prompt tokens: $2.50 in / $15 out instead of $1.25 / $10."""
    price = BUILTIN.lookup("gemini", "gemini-2.5-pro")
    assert price is not None
    at_limit = Usage(prompt_tokens=200_000, completion_tokens=1_000)
    assert cost(at_limit, price) == Decimal("0.26")  # 200000 x 1.25 + 1000 x 10
    above = Usage(prompt_tokens=250_000, completion_tokens=1_000)
    assert cost(above, price) == Decimal("0.64")  # 250000 x 2.5 + 1000 x 15, not 0.3225
    sonnet = BUILTIN.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    long = Usage(prompt_tokens=300_000, cached_tokens=100_000, completion_tokens=2_000)
    # the 1M-context tier: 200000 x 6 + 100000 x 0.6 (reads) + 2000 x 22.5
    assert cost(long, sonnet) == Decimal("1.305")


def test_one_hour_cache_writes_are_priced_at_their_own_rate() -> None:
    price = BUILTIN.lookup("anthropic", "claude-sonnet-4-5")
    assert price is not None
    usage = Usage(prompt_tokens=10_000, cache_write_tokens=8_000, cache_write_1h_tokens=5_000, completion_tokens=0)
    # uncached 2000 x 3 + five-minute writes 3000 x 3.75 + hour writes 5000 x 6 = 47250 per million
    assert cost(usage, price) == Decimal("0.04725")
    # without an hour rate they cost what five-minute writes cost
    plain = Price(input=Decimal("1"), output=Decimal("1"), cache_write=Decimal("1.25"))
    assert cost(Usage(prompt_tokens=100, cache_write_tokens=100, cache_write_1h_tokens=100), plain) == Decimal("0.000125")


def test_fees_per_request_and_per_search_come_on_top_of_tokens() -> None:
    sonar = BUILTIN.lookup("perplexity", "sonar")
    assert sonar is not None
    # 1000 x 1 + 500 x 1 per million, plus $12 per 1,000 requests
    assert cost(Usage(prompt_tokens=1_000, completion_tokens=500), sonar) == Decimal("0.0135")
    sonnet = BUILTIN.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    searched = Usage(prompt_tokens=1_000, completion_tokens=100, web_search_requests=3)
    # 1000 x 3 + 100 x 15 per million, plus 3 searches at $10 per 1,000
    assert cost(searched, sonnet) == Decimal("0.0345")


def test_audio_and_image_tokens_use_their_rates_where_the_price_has_them() -> None:
    price = Price(
        input=Decimal("2.5"), output=Decimal("10"), input_audio=Decimal("40"), output_audio=Decimal("80"),
        input_image=Decimal("5"),
    )
    usage = Usage(prompt_tokens=1_000, input_audio_tokens=300, input_image_tokens=200, completion_tokens=500,
                  output_audio_tokens=100)
    # text 500 x 2.5 + audio 300 x 40 + image 200 x 5 + text out 400 x 10 + audio out 100 x 80
    assert cost(usage, price) == Decimal("0.02625")
    # a price without modality rates charges them as text
    assert cost(usage, Price(input=Decimal("2.5"), output=Decimal("10"))) == Decimal("0.0075")


# --------------------------------------------------------------------------- #
# config overrides
# --------------------------------------------------------------------------- #

OVERRIDES = """
[providers.openai]
api_key = "k"

[providers.local]
type = "ollama"
base_url = "http://127.0.0.1:11434"

[prices."gpt-4o"]                 # a negotiated rate, for every target serving gpt-4o
input = 2
output = 8
cached_input = 0.5

[prices."openai/gpt-4o-mini"]     # one target only
input = 0.1
output = 0.4
context_window = 64000

[prices."gpt-4o-mini"]
input = 0.12
output = 0.5

[prices."local/*"]                # amortised GPU cost for everything on this instance
input = 0.01
output = 0.02

[prices."house-model"]            # a model the table does not know
input = "0.3"
output = 1
reasoning = 2.5
"""


def test_config_prices_are_parsed_as_decimals() -> None:
    cfg = parse(OVERRIDES)
    assert set(cfg.prices) == {"gpt-4o", "openai/gpt-4o-mini", "gpt-4o-mini", "local/*", "house-model"}
    house = cfg.prices["house-model"]
    assert (house.input, house.output, house.reasoning) == (Decimal("0.3"), Decimal("1"), Decimal("2.5"))
    assert house.source == "config" and house.cached_input is None
    assert cfg.prices["gpt-4o"].cached_input == Decimal("0.5")  # 0.5 from a TOML float, exactly


def test_overrides_win_over_the_table_and_target_keys_over_model_keys() -> None:
    instances = {"openai": "openai", "backup": "openai", "local": "ollama"}
    table = PriceTable.for_config(parse(OVERRIDES).prices, instances)
    negotiated = table.lookup("openai", "gpt-4o", "openai")
    assert negotiated is not None and (negotiated.input, negotiated.output) == (Decimal("2"), Decimal("8"))
    # a model key covers the model's snapshots and every instance serving it
    assert table.lookup("openai", "gpt-4o-2024-08-06", "backup") == negotiated
    assert table.for_target("backup", "gpt-4o") == negotiated
    # the target key wins on its instance; elsewhere the model key applies
    own = table.for_target("openai", "gpt-4o-mini")
    assert own is not None and own.input == Decimal("0.1") and own.context_window == 64_000
    other = table.for_target("backup", "gpt-4o-mini")
    assert other is not None and other.input == Decimal("0.12")
    # an override without a context window keeps the table's
    assert other.context_window == 128_000
    # globs, and a self-hosted instance priced by config instead of free
    local = table.for_target("local", "llama3.2:3b")
    assert local is not None and local.output == Decimal("0.02")
    # models the table does not know
    thinking = Usage(prompt_tokens=1000, completion_tokens=1000, reasoning_tokens=1000)
    assert table.cost(thinking, "openai", "house-model") == Decimal("0.0028")
    # the shipped table is untouched
    assert BUILTIN.lookup("openai", "gpt-4o") != negotiated


def test_lookups_are_remembered_per_table_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every priced request asks the same few questions, so a table keeps its answers (it never
    changes once built; a reload builds a new one). The memory is per table, so a config's prices
    never answer for the shipped table, and it is bounded: clients choose the model names."""
    table = PriceTable.for_config(parse(OVERRIDES).prices, {"openai": "openai"})
    negotiated = table.lookup("openai", "gpt-4o", "openai")
    assert negotiated is not None and negotiated.input == Decimal("2")
    assert table.lookup("openai", "gpt-4o", "openai") is negotiated
    shipped = BUILTIN.lookup("openai", "gpt-4o", "openai")
    assert shipped is not None and shipped.input != negotiated.input
    assert table.lookup("openai", "no-such-model") is None
    assert table.lookup("openai", "no-such-model") is None  # a miss is remembered as a miss

    monkeypatch.setattr(pricing, "_FOUND_MAX", 3)
    for i in range(10):
        assert table.lookup("openai", f"unknown-{i}") is None
    assert len(table._found) <= 3
    assert table.lookup("openai", "gpt-4o", "openai") == negotiated  # asked again after the memory was cleared


def test_config_price_problems_are_reported_with_key_paths() -> None:
    found = problems(
        """
[prices]
weird = 3

[prices."gpt-4.1"]
input = 2

[prices.cheap]
input = -1
output = "lots"
cahced_input = 0.1

[prices."o3"]
input = true
output = 8
context_window = 0

[prices.flat]
input = 1
output = nan
"""
    )
    assert found['prices."gpt-4.1".output'].startswith("missing")
    assert found["prices.cheap.input"] == "must be a number >= 0 (USD per 1M tokens)"
    assert "'lots' is not a number" in found["prices.cheap.output"]
    assert found["prices.cheap.cahced_input"].startswith("unknown key (known: input, output, cached_input")
    assert found["prices.o3.input"].startswith("must be a number")
    assert found["prices.o3.context_window"] == "must be a positive whole number of tokens"
    assert found["prices.flat.output"] == "must be a finite number"
    assert found["prices.weird"].startswith("must be a table")


def test_prices_must_be_a_table_and_is_a_known_section() -> None:
    assert problems("prices = 3\n") == {"prices": "must be a table of model names, not int"}
    assert parse("").prices == {}


# --------------------------------------------------------------------------- #
# the hook and the gateway's table
# --------------------------------------------------------------------------- #


def test_builtin_compute_cost_hook_uses_the_table_it_is_given() -> None:
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    usage = Usage(prompt_tokens=1000, completion_tokens=500)
    args: dict[str, Any] = {"usage": usage, "provider": "openai", "provider_type": "openai"}
    assert pm.hook.compute_cost(**args, model="gpt-4o-mini-2024-07-18", prices=None) == Decimal("0.00045")
    assert pm.hook.compute_cost(**args, model="house-model", prices=None) is None
    table = PriceTable.for_config(parse(OVERRIDES).prices)
    assert pm.hook.compute_cost(**args, model="house-model", prices=table) == Decimal("0.0008")

    class Flat:
        @hookimpl
        def compute_cost(self, provider: str) -> Decimal | None:
            return Decimal("1") if provider == "openai" else None

    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("flat", Flat())], environ={})
    assert pm.hook.compute_cost(**args, model="gpt-4o", prices=table) == Decimal("1")  # a plugin answers first
    assert pm.hook.compute_cost(**{**args, "provider": "other"}, model="gpt-4o", prices=table) == Decimal("0.006")


def test_the_gateway_builds_its_table_once_per_config_and_hands_it_to_the_router() -> None:
    gateway = Gateway(parse(OVERRIDES), environ={}, load_entrypoints=False)
    assert gateway.router.prices is gateway.prices and gateway.router.metadata is gateway.prices
    assert gateway.prices.for_target("local", "anything") == parse(OVERRIDES).prices["local/*"]
    old = gateway.prices
    gateway.reload(parse('[providers.openai]\napi_key = "k"\n[prices."gpt-4o"]\ninput = 1\noutput = 1\n'))
    assert gateway.router.prices is gateway.prices is not old
    expected = Price(Decimal(1), Decimal(1), context_window=128_000, source="config")
    assert gateway.prices.for_target("openai", "gpt-4o") == expected

# --------------------------------------------------------------------------- #
# the billed dimensions each wire format reports
# --------------------------------------------------------------------------- #


def test_each_wire_format_reports_its_billed_dimensions() -> None:
    from interlock.core.responses_wire import usage_from_responses
    from interlock.plugins.providers.translation import anthropic as anthropic_wire
    from interlock.plugins.providers.translation import gemini as gemini_wire

    claude = anthropic_wire.usage_of({
        "input_tokens": 100, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 30, "output_tokens": 20,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        "server_tool_use": {"web_search_requests": 2},
    })
    assert (claude.prompt_tokens, claude.cached_tokens, claude.cache_write_tokens, claude.cache_write_1h_tokens) == (
        180, 50, 30, 20
    )
    assert claude.web_search_requests == 2
    gemini = gemini_wire.usage_of({
        "promptTokenCount": 300, "candidatesTokenCount": 40, "thoughtsTokenCount": 10,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 200}, {"modality": "AUDIO", "tokenCount": 60},
                                {"modality": "IMAGE", "tokenCount": 40}],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 15}],
    })
    assert gemini is not None
    assert (gemini.input_audio_tokens, gemini.input_image_tokens, gemini.output_audio_tokens) == (60, 40, 15)
    assert (gemini.completion_tokens, gemini.reasoning_tokens) == (50, 10)
    openai_usage = Usage.from_openai({
        "prompt_tokens": 90, "completion_tokens": 30, "prompt_tokens_details": {"audio_tokens": 70},
        "completion_tokens_details": {"audio_tokens": 25}, "num_search_queries": 3,
    })
    assert openai_usage is not None
    assert (openai_usage.input_audio_tokens, openai_usage.output_audio_tokens, openai_usage.web_search_requests) == (
        70, 25, 3
    )
    responses = usage_from_responses(
        {"input_tokens": 10, "output_tokens": 5},
        [{"type": "web_search_call", "status": "completed"}, {"type": "web_search_call"}, {"type": "message"}],
    )
    assert responses is not None and responses.web_search_requests == 2
