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
# the shipped table
# --------------------------------------------------------------------------- #


def test_the_table_loads_once_with_at_least_60_dated_models() -> None:
    assert PriceTable.builtin() is BUILTIN  # loaded once, then cached
    entries = list(BUILTIN.models())
    assert len(entries) >= 60
    today = datetime.date.today()
    for ptype, model, price in entries:
        assert isinstance(price.checked, datetime.date), (ptype, model)
        assert datetime.date(2025, 1, 1) <= price.checked <= today, (ptype, model)
        for field in ("input", "output", "cached_input", "cache_write", "reasoning"):
            value = getattr(price, field)
            assert value is None or (isinstance(value, Decimal) and value >= 0), (ptype, model, field)
        assert price.input > 0, (ptype, model)
        assert price.context_window is None or price.context_window >= 100_000, (ptype, model)


def test_the_table_covers_every_hosted_provider_type() -> None:
    listed = {ptype for ptype, _, _ in BUILTIN.models()}
    assert listed >= {
        "openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "perplexity", "cohere", "groq", "together",
        "fireworks",
    }
    # the rest price through another list, or are free
    assert BUILTIN.lookup("vertex", "gemini-2.5-flash") == BUILTIN.lookup("gemini", "gemini-2.5-flash")
    haiku = BUILTIN.lookup("anthropic", "claude-haiku-4-5")
    assert BUILTIN.lookup("bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0") == haiku
    assert BUILTIN.lookup("openrouter", "openai/gpt-4o") == BUILTIN.lookup("openai", "gpt-4o")
    assert BUILTIN.lookup("ollama", "llama3.2:3b") == FREE
    assert BUILTIN.lookup("gpustack", "qwen3-8b") == FREE


def test_every_entry_is_listed_under_the_provider_detection_sends_it_to() -> None:
    for ptype, model, _ in BUILTIN.models():
        if ptype == "fireworks":
            assert detect(f"accounts/fireworks/models/{model}") == ptype, model
        elif ptype == "together" or "/" in model:
            assert detect(model) is None, model  # served by several hosts: never auto-detected
        else:
            assert detect(model) == ptype, model


def test_known_prices_from_the_sources() -> None:
    gpt4o = BUILTIN.lookup("openai", "gpt-4o")
    assert gpt4o is not None
    assert (gpt4o.input, gpt4o.cached_input, gpt4o.output) == (Decimal("2.5"), Decimal("1.25"), Decimal("10"))
    assert gpt4o.checked == datetime.date(2025, 7, 4) and gpt4o.context_window == 128_000
    sonnet = BUILTIN.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    assert (sonnet.input, sonnet.cached_input, sonnet.cache_write, sonnet.output) == tuple(
        map(Decimal, ("3", "0.3", "3.75", "15"))
    )
    v4 = BUILTIN.lookup("deepseek", "deepseek-v4-pro")
    assert v4 is not None and v4.cached_input == Decimal("0.003625")  # exact, not a float's neighbour


# --------------------------------------------------------------------------- #
# name normalisation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("provider_type", "model", "base_type", "base"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "openai", "gpt-4o-mini"),
        ("openai", "gpt-4o-2024-08-06", "openai", "gpt-4o"),
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
        ("mistral", "mistral-medium-latest", "mistral", "mistral-medium-3"),
        ("mistral", "mistral-medium-2508", "mistral", "mistral-medium-3"),
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
        ("bedrock", "anthropic.claude-opus-4-6-v1", "anthropic", "claude-opus-4-6"),
        ("bedrock", "eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic", "claude-3-7-sonnet"),
        (
            "bedrock",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic",
            "claude-sonnet-4-5",
        ),
        # Vertex: Gemini and Claude under their own names, Claude snapshots with @
        ("vertex", "claude-sonnet-4-5@20250929", "anthropic", "claude-sonnet-4-5"),
        ("vertex", "gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
        # OpenRouter: vendor/model, dotted Claude versions
        ("openrouter", "anthropic/claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5"),
        ("openrouter", "google/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("openrouter", "x-ai/grok-4", "xai", "grok-4"),
    ],
)
def test_snapshots_aliases_and_provider_ids_price_like_their_base_model(
    provider_type: str, model: str, base_type: str, base: str
) -> None:
    expected = BUILTIN.lookup(base_type, base)
    assert expected is not None and expected.checked is not None
    assert BUILTIN.lookup(provider_type, model) == expected


@pytest.mark.parametrize(
    ("provider_type", "model"),
    [
        ("openai", "gpt-4o-mini-unknown"),
        ("openai", "house-model"),
        ("house", "gpt-4o"),  # an unknown provider type has no list
        ("mistral", "mistral-large-latest"),  # which snapshot it means is not known
        ("openrouter", "meta-llama/llama-3.3-70b-instruct"),  # open weights: many hosts, many prices
        ("bedrock", "meta.llama3-8b-instruct-v1:0"),
        ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"),
        ("openai", ""),
    ],
)
def test_unknown_models_have_no_price(provider_type: str, model: str) -> None:
    assert BUILTIN.lookup(provider_type, model) is None
    assert BUILTIN.cost(Usage(prompt_tokens=10), provider_type, model) is None
    assert BUILTIN.context_window(provider_type, model) is None


def test_context_windows() -> None:
    assert BUILTIN.context_window("openai", "gpt-4.1-2025-04-14") == 1_047_576
    assert BUILTIN.context_window("anthropic", "claude-haiku-4-5-20251001") == 200_000
    assert BUILTIN.context_window("vertex", "gemini-2.5-flash") == 1_048_576
    assert BUILTIN.context_window("bedrock", "us.anthropic.claude-opus-4-7") == 1_000_000
    assert BUILTIN.context_window("mistral", "mistral-medium-3") is None  # priced, window not sourced


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