"""Prices: the genai-prices data set, config overrides, and cost arithmetic.

Money is :class:`~decimal.Decimal` throughout, never float: the data set's prices are
Decimals and config numbers go through their shortest ``repr``, so ``0.075`` stays exactly
``0.075``. Token rates are USD per million tokens; fees are USD each.

A lookup takes the provider *type* (which of the data set's providers to read, see
:data:`~interlock.accounting.price_data.PROVIDERS`), the model name as sent upstream and,
optionally, the provider *instance* (for per-target overrides). The data set matches model
names itself (dated snapshots, ``-latest`` aliases, Bedrock ids, ``vendor/model`` on
OpenRouter); interlock also tries the name's normalised forms, most specific first, so that

* ``instance/model`` and ``models/`` / ``publishers/.../models/`` prefixes are stripped;
* Vertex's ``claude-sonnet-4-5@20250929`` and Bedrock ARNs price as the vendor's model;
* a snapshot suffix the data set does not list (``-2025-06-01``, ``-001``) prices as its base model.

Config overrides (``[prices]``, see :func:`parse_prices`) are keyed by model name, or by
``"instance/model"`` for one target; ``*`` globs are allowed (``"ollama/*"``). A target key
wins over a model key, an exact key over a glob, and any override over the data set.

:class:`PriceTable` objects are immutable. The gateway builds one per configuration
(:meth:`PriceTable.for_config`) and hands it to the engine, which knows it only as a
:class:`~interlock.core.catalog.PriceBook` (``compute_cost``'s ``prices``, a strategy's
``prices`` attribute) and a :class:`~interlock.core.catalog.ModelMetadata` (context
windows). Each ``(provider type, model, instance)`` is resolved once and remembered (until
the price changes, for time-dependent prices); costs are computed by :func:`cost`.
"""

from __future__ import annotations

import datetime
import fnmatch
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from interlock.accounting.price_data import SELF_HOSTED, PriceData
from interlock.accounting.price_data import builtin as builtin_data
from interlock.core.catalog import Price as Price  # re-exported: the table's entries
from interlock.core.types import Usage

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)

#: the rates a ``[prices."model"]`` table accepts (USD per million tokens), and its fees (USD each)
_RATE_KEYS = (
    "input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning", "input_audio", "input_image",
    "output_audio",
)
_FEE_KEYS = ("per_request", "web_search")
#: the keys a ``[prices."model"]`` table accepts
PRICE_KEYS = (*_RATE_KEYS, *_FEE_KEYS, "context_window")

# snapshot suffixes, stripped one at a time (repeatedly) after the exact name failed
_SNAPSHOT = re.compile(
    r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{2}-\d{4}|-\d{4}|-\d{3}|-latest|@[\w.-]+)$"
)
_DOTTED_VERSION = re.compile(r"(\d)\.(\d)")
_PREFIXES = (
    "models/", "accounts/fireworks/models/", "publishers/google/models/", "publishers/anthropic/models/",
)


FREE = Price(ZERO, ZERO, source="self-hosted")


def cost(usage: Usage, price: Price) -> Decimal:
    """The price of ``usage`` in USD, exactly.

    Usage is in OpenAI semantics: ``prompt_tokens`` includes cache reads and writes,
    ``completion_tokens`` includes reasoning. So uncached input is prompt - cached -
    cache_write (never below 0) at the input price; cache reads at ``cached_input``;
    cache writes at ``cache_write`` (the hour-long ones at ``cache_write_1h``); reasoning
    tokens at ``reasoning`` and the rest of the completion at ``output``; audio and image
    tokens at their own rates where the price has them. A prompt larger than a tier's
    threshold is priced at that tier's rates. Fees come on top: ``per_request`` once and
    ``web_search`` per search.
    """
    prompt = usage.prompt_tokens
    if price.tiers:
        price = _tier(price, prompt)
    cached = max(0, usage.cached_tokens)
    written = max(0, usage.cache_write_tokens)
    uncached = max(0, prompt - cached - written)
    completion = max(0, usage.completion_tokens)
    reasoning = min(max(0, usage.reasoning_tokens), completion)
    total = (
        uncached * price.input
        + cached * _or(price.cached_input, price.input)
        + (completion - reasoning) * price.output
        + reasoning * _or(price.reasoning, price.output)
    )
    if written:
        hour = min(max(0, usage.cache_write_1h_tokens), written)
        five_minutes = _or(price.cache_write, price.input)
        total += (written - hour) * five_minutes + hour * _or(price.cache_write_1h, five_minutes)
    if usage.input_audio_tokens or usage.input_image_tokens or usage.output_audio_tokens:
        total += _modalities(usage, price, uncached, completion - reasoning)
    total /= MILLION
    if price.per_request is not None:
        total += price.per_request
    if usage.web_search_requests > 0 and price.web_search is not None:
        total += usage.web_search_requests * price.web_search
    return total


def _tier(price: Price, prompt_tokens: int) -> Price:
    """The rates that apply to a ``prompt_tokens`` prompt: the last tier whose threshold it exceeds."""
    chosen = price
    for threshold, tier in price.tiers:
        if prompt_tokens > threshold:
            chosen = tier
    return chosen


def _modalities(usage: Usage, price: Price, uncached: int, plain_output: int) -> Decimal:
    """What audio and image tokens cost beyond the text rates :func:`cost` charged them at.

    They are part of the uncached prompt and of the non-reasoning completion, so each is
    capped by what is left of those (usage that does not add up never goes negative)."""
    extra = ZERO
    left = uncached
    for tokens, rate in ((usage.input_audio_tokens, price.input_audio), (usage.input_image_tokens, price.input_image)):
        counted = min(max(0, tokens), left)
        left -= counted
        if rate is not None:
            extra += counted * (rate - price.input)
    if price.output_audio is not None:
        extra += min(max(0, usage.output_audio_tokens), plain_output) * (price.output_audio - price.output)
    return extra


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


# --------------------------------------------------------------------------- #
# the table
# --------------------------------------------------------------------------- #


_FOUND_MAX = 4096  # remembered lookups per table


class PriceTable:
    """Prices by provider type and model: the data set, with config overrides layered on top."""

    def __init__(
        self,
        data: PriceData | None = None,
        *,
        overrides: Mapping[str, Price] | None = None,
        instance_types: Mapping[str, str] | None = None,
    ) -> None:
        self.data = data
        self._instance_types = dict(instance_types or {})
        self._overrides = {k.lower(): v for k, v in (overrides or {}).items()}
        self._exact = {k: v for k, v in self._overrides.items() if "*" not in k}
        self._globs = [(k, v) for k, v in self._overrides.items() if "*" in k]
        # lookup()'s answers with the unix time each stops holding (None: never): a table never
        # changes once built (a reload builds a new one), and every priced request asks the same
        # few questions; bounded, clients name the models
        self._found: dict[tuple[str, str, str | None], tuple[Price | None, float | None]] = {}

    # -- construction ----------------------------------------------------- #

    @classmethod
    def builtin(cls) -> PriceTable:
        """The data set shipped with interlock, without overrides."""
        return _builtin()

    @classmethod
    def for_config(
        cls,
        overrides: Mapping[str, Price] | None,
        instance_types: Mapping[str, str] | None = None,
        data: PriceData | None = None,
    ) -> PriceTable:
        """``data`` (the shipped snapshot when None) with a config's ``[prices]`` on top.

        ``instance_types`` maps provider instance names to their types, so
        :meth:`for_target` can price a :class:`~interlock.core.types.Target`.
        """
        return cls(data or builtin_data(), overrides=overrides, instance_types=instance_types)

    def with_overrides(
        self, overrides: Mapping[str, Price] | None, instance_types: Mapping[str, str] | None = None
    ) -> PriceTable:
        return PriceTable(self.data, overrides=overrides, instance_types=instance_types)

    # -- lookups ---------------------------------------------------------- #

    def lookup(self, provider_type: str, model: str, provider: str | None = None) -> Price | None:
        """The price of ``model`` served by a ``provider_type`` instance named ``provider``, or None."""
        key = (provider_type, model, provider)
        hit = self._found.get(key)
        if hit is not None and (hit[1] is None or hit[1] > time.time()):
            return hit[0]
        found = self._found
        if len(found) >= _FOUND_MAX:
            found.clear()
        price, until = self._lookup(provider_type, model, provider)
        found[key] = (price, until)
        return price

    def _lookup(self, provider_type: str, model: str, provider: str | None) -> tuple[Price | None, float | None]:
        builtin, until = self._builtin(provider_type, model)
        override = self._override(provider, model)
        if override is None:
            return builtin, until
        if override.context_window is None and builtin is not None and builtin.context_window is not None:
            return replace(override, context_window=builtin.context_window), until
        return override, until

    def for_target(self, provider: str, model: str) -> Price | None:
        """The price of ``model`` on provider instance ``provider`` (its type from ``instance_types``;
        an instance not listed is taken to be named after its type, as auto-enabled ones are)."""
        return self.lookup(self._instance_types.get(provider, provider), model, provider)

    def target_cost(self, usage: Usage, provider: str, model: str) -> Decimal | None:
        """:func:`cost` of ``model`` on provider instance ``provider`` (see :meth:`for_target`), or None."""
        price = self.for_target(provider, model)
        return None if price is None else cost(usage, price)

    def context_window(self, provider_type: str, model: str, provider: str | None = None) -> int | None:
        """The model's context window in tokens, when known (for context-length fallback)."""
        price = self.lookup(provider_type, model, provider)
        return None if price is None else price.context_window

    def cost(
        self, usage: Usage, provider_type: str, model: str, provider: str | None = None
    ) -> Decimal | None:
        """:func:`cost` at this table's price, or None when the model has no price."""
        price = self.lookup(provider_type, model, provider)
        return None if price is None else cost(usage, price)

    def models(self) -> Iterator[tuple[str, str]]:
        """Every current model of the data set as ``(provider type, model name)``."""
        if self.data is not None:
            yield from self.data.models()

    def overrides(self) -> Mapping[str, Price]:
        """The config's ``[prices]``, keys lowercased."""
        return self._overrides

    # -- internals -------------------------------------------------------- #

    def _override(self, provider: str | None, model: str) -> Price | None:
        if not self._overrides:
            return None
        names = list(_names(model.strip().lower()))
        if provider:
            for name in names:
                hit = self._exact.get(f"{provider.lower()}/{name}")
                if hit is not None:
                    return hit
        for name in names:
            hit = self._exact.get(name)
            if hit is not None:
                return hit
        subjects = ([f"{provider.lower()}/{model.lower()}"] if provider else []) + [model.lower()]
        for subject in subjects:
            for pattern, price in self._globs:
                if fnmatch.fnmatchcase(subject, pattern):
                    return price
        return None

    def _builtin(self, provider_type: str, model: str) -> tuple[Price | None, float | None]:
        ptype = provider_type.lower()
        if ptype in SELF_HOSTED:
            return FREE, None
        if self.data is None:
            return None, None
        model = model.strip().lower()
        if ptype == "bedrock" and model.startswith("arn:"):
            model = model.rsplit("/", 1)[-1]
        found = self.data.find(ptype, _names(model))
        if found is None and "/" in model and ptype != "openrouter":  # "instance/model" written out in full
            return self._builtin(provider_type, model.split("/", 1)[1])
        if found is None:
            return None, None
        return found.price, found.until


def _names(model: str) -> Iterator[str]:
    """``model`` and its normalised forms, most specific first."""
    seen: set[str] = set()
    name = model
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            yield name
            seen.add(name)
            name = name[len(prefix) :]
    while True:
        if name not in seen:
            seen.add(name)
            yield name
        shorter = _SNAPSHOT.sub("", name)
        if shorter == name or not shorter:
            break
        name = shorter
    dotted = _DOTTED_VERSION.sub(r"\1-\2", model)  # OpenRouter's claude-sonnet-4.5
    if dotted != model:
        for other in _names(dotted):
            if other not in seen:
                seen.add(other)
                yield other


_BUILTIN: PriceTable | None = None


def _builtin() -> PriceTable:
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = PriceTable(builtin_data())
    return _BUILTIN


# --------------------------------------------------------------------------- #
# config: [prices]
# --------------------------------------------------------------------------- #


def parse_prices(value: Any, problems: list[tuple[str, str]]) -> dict[str, Price]:
    """Validate a config's ``[prices]`` table: ``"model"`` or ``"instance/model"`` -> price table.

    Each entry needs ``input`` and ``output`` (USD per million tokens, >= 0) and may set
    the other rates (``cached_input``, ``cache_write``, ``cache_write_1h``, ``reasoning``,
    ``input_audio``, ``input_image``, ``output_audio``), the fees ``per_request`` and
    ``web_search`` (USD per request / per search) and ``context_window``. Problems are
    reported with key paths (``prices."gpt-4o".output``).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(("prices", f"must be a table of model names, not {type(value).__name__}"))
        return {}
    out: dict[str, Price] = {}
    for name, entry in value.items():
        path = f"prices.{_key(name)}"
        if not name.strip() or name.strip() != name:
            problems.append((path, "a model name, 'instance/model', or a glob such as 'ollama/*'"))
            continue
        if not isinstance(entry, dict):
            problems.append((path, "must be a table like { input = 2.5, output = 10 }"))
            continue
        price = _price(entry, path, problems, source="config")
        if price is not None:
            out[name] = price
    return out


def _price(
    entry: Mapping[str, Any], path: str, problems: list[tuple[str, str]], *, source: str
) -> Price | None:
    known = (*PRICE_KEYS, "checked") if source == "built-in" else PRICE_KEYS
    before = len(problems)
    for key in entry:
        if key not in known:
            problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(known)})"))
    rates: dict[str, Any] = {}
    for key in (*_RATE_KEYS, *_FEE_KEYS):
        if key not in entry:
            if key in ("input", "output"):
                message = "missing: every price needs input and output (USD per 1M tokens)"
                problems.append((f"{path}.{key}", message))
            rates[key] = None
            continue
        rates[key] = _decimal(entry[key], f"{path}.{key}", problems, "USD" if key in _FEE_KEYS else "USD per 1M tokens")
    window = entry.get("context_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        problems.append((f"{path}.context_window", "must be a positive whole number of tokens"))
    checked = entry.get("checked")
    if checked is not None and not isinstance(checked, datetime.date):
        problems.append((f"{path}.checked", "must be a date (2026-01-31)"))
    if len(problems) > before:
        return None
    input_, output = rates.pop("input"), rates.pop("output")
    assert input_ is not None and output is not None
    return Price(input=input_, output=output, context_window=window, checked=checked, source=source, **rates)


def _decimal(value: Any, path: str, problems: list[tuple[str, str]], unit: str = "USD per 1M tokens") -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        problems.append((path, f"must be a number of {unit}, not {type(value).__name__}"))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append((path, "must be a finite number"))
        return None
    try:
        # a float's shortest repr is what was written in the TOML (0.075, not 0.07499999...)
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        problems.append((path, f"{value!r} is not a number"))
        return None
    if not number.is_finite() or number < 0:
        problems.append((path, f"must be a number >= 0 ({unit})"))
        return None
    return number


def _key(name: str) -> str:
    """A table key as written in TOML key paths: bare when it can be, quoted otherwise."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('"', '\\"') + '"'
