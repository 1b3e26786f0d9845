"""Prices: the built-in table (``interlock/data/prices.toml``), config overrides, and cost arithmetic.

Money is :class:`~decimal.Decimal` throughout, never float: the data file is parsed
with ``parse_float=Decimal`` and config numbers go through their shortest ``repr``,
so ``0.075`` stays exactly ``0.075``. Prices are USD per million tokens.

A lookup takes the provider *type* (which list to read), the model name as sent
upstream and, optionally, the provider *instance* (for per-target overrides). Model
names are normalised so that

* dated snapshots and aliases price like their base model: ``gpt-4o-mini-2024-07-18``,
  ``claude-3-5-haiku-20241022``, ``command-a-03-2025``, ``claude-3-7-sonnet-latest``,
  ``gemini-2.5-flash-001``, Vertex's ``claude-sonnet-4-5@20250929``;
* Bedrock ids (``us.anthropic.claude-sonnet-4-20250514-v1:0``, ARNs) and OpenRouter ids
  (``anthropic/claude-sonnet-4.5``) price as the vendor's own model;
* ``instance/model`` and ``models/`` / ``accounts/fireworks/models/`` prefixes are stripped.

Config overrides (``[prices]``, see :func:`parse_prices`) are keyed by model name, or by
``"instance/model"`` for one target; ``*`` globs are allowed (``"ollama/*"``). A target key
wins over a model key, an exact key over a glob, and any override over the built-in table.

:class:`PriceTable` objects are immutable. The gateway builds one per configuration
(:meth:`PriceTable.for_config`) and hands it to the engine, which knows it only as a
:class:`~interlock.core.catalog.PriceBook` (``compute_cost``'s ``prices``, a strategy's
``prices`` attribute) and a :class:`~interlock.core.catalog.ModelMetadata` (context
windows).
"""

from __future__ import annotations

import datetime
import fnmatch
import functools
import importlib.resources
import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from interlock.core.catalog import Price as Price  # re-exported: the table's entries
from interlock.core.types import Usage

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)

#: the keys a ``[prices."model"]`` table accepts
PRICE_KEYS = ("input", "output", "cached_input", "cache_write", "reasoning", "context_window")
_RATE_KEYS = ("input", "output", "cached_input", "cache_write", "reasoning")

_BEDROCK_REGION = re.compile(r"^(us|eu|apac|global|jp|au|ca|us-gov)\.")
_BEDROCK_VERSION = re.compile(r"(-v\d+(:\d+)?|:\d+)$")
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
    cache writes at ``cache_write``; reasoning tokens at ``reasoning`` and the rest of
    the completion at ``output``.
    """
    cached = max(0, usage.cached_tokens)
    written = max(0, usage.cache_write_tokens)
    uncached = max(0, usage.prompt_tokens - cached - written)
    completion = max(0, usage.completion_tokens)
    reasoning = min(max(0, usage.reasoning_tokens), completion)
    total = (
        uncached * price.input
        + cached * _or(price.cached_input, price.input)
        + written * _or(price.cache_write, price.input)
        + (completion - reasoning) * price.output
        + reasoning * _or(price.reasoning, price.output)
    )
    return total / MILLION


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


# --------------------------------------------------------------------------- #
# the table
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class _ProviderRule:
    inherit: tuple[str, ...] = ()  # provider types whose lists this one shares
    vendors: Mapping[str, str] | None = None  # "vendor" of vendor/model or vendor.model -> provider type
    self_hosted: bool = False


_FOUND_MAX = 4096  # remembered lookups per table


class PriceTable:
    """Prices by provider type and model, with config overrides layered on top."""

    def __init__(
        self,
        models: Mapping[str, Mapping[str, Price]],
        *,
        rules: Mapping[str, _ProviderRule] | None = None,
        aliases: Mapping[str, Mapping[str, str]] | None = None,
        overrides: Mapping[str, Price] | None = None,
        instance_types: Mapping[str, str] | None = None,
    ) -> None:
        self._instance_types = dict(instance_types or {})
        self._models = {ptype: {m.lower(): p for m, p in table.items()} for ptype, table in models.items()}
        self._rules = dict(rules or {})
        self._aliases = {
            ptype: {a.lower(): m.lower() for a, m in table.items()} for ptype, table in (aliases or {}).items()
        }
        self._overrides = {k.lower(): v for k, v in (overrides or {}).items()}
        self._exact = {k: v for k, v in self._overrides.items() if "*" not in k}
        self._globs = [(k, v) for k, v in self._overrides.items() if "*" in k]
        # lookup()'s answers: a table never changes once built (a reload builds a new one), and
        # every priced request asks the same few questions; bounded, clients name the models
        self._found: dict[tuple[str, str, str | None], Price | None] = {}

    # -- construction ----------------------------------------------------- #

    @classmethod
    def builtin(cls) -> PriceTable:
        """The shipped table without overrides; the file is read once per process."""
        return _builtin()

    @classmethod
    def for_config(
        cls, overrides: Mapping[str, Price] | None, instance_types: Mapping[str, str] | None = None
    ) -> PriceTable:
        """The shipped table with a config's ``[prices]`` on top.

        ``instance_types`` maps provider instance names to their types, so
        :meth:`for_target` can price a :class:`~interlock.core.types.Target`.
        """
        return cls.builtin().with_overrides(overrides, instance_types)

    def with_overrides(
        self, overrides: Mapping[str, Price] | None, instance_types: Mapping[str, str] | None = None
    ) -> PriceTable:
        table = PriceTable({}, overrides=overrides, instance_types=instance_types)
        table._models, table._rules, table._aliases = self._models, self._rules, self._aliases
        return table

    # -- lookups ---------------------------------------------------------- #

    def lookup(self, provider_type: str, model: str, provider: str | None = None) -> Price | None:
        """The price of ``model`` served by a ``provider_type`` instance named ``provider``, or None."""
        key = (provider_type, model, provider)
        found = self._found
        if key in found:
            return found[key]
        if len(found) >= _FOUND_MAX:
            found.clear()
        price = found[key] = self._lookup(provider_type, model, provider)
        return price

    def _lookup(self, provider_type: str, model: str, provider: str | None) -> Price | None:
        builtin = self._builtin(provider_type, model)
        override = self._override(provider, model)
        if override is None:
            return builtin
        if override.context_window is None and builtin is not None and builtin.context_window is not None:
            return replace(override, context_window=builtin.context_window)
        return override

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

    def models(self) -> Iterator[tuple[str, str, Price]]:
        """Every built-in entry as ``(provider type, model, price)``."""
        for ptype, table in self._models.items():
            for model, price in table.items():
                yield ptype, model, price

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

    def _builtin(self, provider_type: str, model: str) -> Price | None:
        ptype = provider_type.lower()
        rule = self._rules.get(ptype, _ProviderRule())
        if rule.self_hosted:
            return FREE
        model = model.strip().lower()
        found = self._in(ptype, model)
        if found is not None:
            return found
        for other in rule.inherit:
            found = self._in(other, model)
            if found is not None:
                return found
        if rule.vendors:
            vendor, rest = _split_vendor(ptype, model)
            if vendor is not None and vendor in rule.vendors:
                found = self._in(rule.vendors[vendor], rest)
                if found is not None:
                    return found
        if "/" in model:  # "instance/model" or "type/model" written out in full
            return self._builtin(provider_type, model.split("/", 1)[1])
        return None

    def _in(self, ptype: str, model: str) -> Price | None:
        table = self._models.get(ptype)
        if not table:
            return None
        aliases = self._aliases.get(ptype, {})
        for name in _names(model):
            hit = table.get(name) or table.get(aliases.get(name, ""))
            if hit is not None:
                return hit
        return None


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


def _split_vendor(ptype: str, model: str) -> tuple[str | None, str]:
    """``(vendor, vendor's model)`` of a Bedrock or OpenRouter id."""
    if ptype == "bedrock":
        if model.startswith("arn:"):
            model = model.rsplit("/", 1)[-1]
        model = _BEDROCK_REGION.sub("", model)
        if "." not in model:
            return None, model
        vendor, rest = model.split(".", 1)
        return vendor, _BEDROCK_VERSION.sub("", rest)
    if "/" in model:
        vendor, rest = model.split("/", 1)
        return vendor, rest
    return None, model


@functools.cache
def _builtin() -> PriceTable:
    path = importlib.resources.files("interlock.data").joinpath("prices.toml")
    with path.open("rb") as fh:
        data = tomllib.load(fh, parse_float=Decimal)
    return _from_data(data)


def _from_data(data: Mapping[str, Any]) -> PriceTable:
    """Build a table from the data file's structure (also used by tests with their own data)."""
    models: dict[str, dict[str, Price]] = {}
    for ptype, table in data.get("models", {}).items():
        models[ptype] = {}
        for model, entry in table.items():
            problems: list[tuple[str, str]] = []
            price = _price(entry, f"models.{ptype}.{_key(model)}", problems, source="built-in")
            if problems or price is None:
                raise ValueError(f"interlock's price table is invalid: {problems}")
            models[ptype][model] = price
    rules = {
        ptype: _ProviderRule(
            inherit=tuple(spec.get("inherit", ())),
            vendors=dict(spec["vendors"]) if "vendors" in spec else None,
            self_hosted=bool(spec.get("self_hosted", False)),
        )
        for ptype, spec in data.get("providers", {}).items()
    }
    return PriceTable(models, rules=rules, aliases=data.get("aliases", {}))


# --------------------------------------------------------------------------- #
# config: [prices]
# --------------------------------------------------------------------------- #


def parse_prices(value: Any, problems: list[tuple[str, str]]) -> dict[str, Price]:
    """Validate a config's ``[prices]`` table: ``"model"`` or ``"instance/model"`` -> price table.

    Each entry needs ``input`` and ``output`` (USD per million tokens, >= 0) and may set
    ``cached_input``, ``cache_write``, ``reasoning`` and ``context_window``. Problems are
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
    rates: dict[str, Decimal | None] = {}
    for key in _RATE_KEYS:
        if key not in entry:
            if key in ("input", "output"):
                message = "missing: every price needs input and output (USD per 1M tokens)"
                problems.append((f"{path}.{key}", message))
            rates[key] = None
            continue
        rates[key] = _decimal(entry[key], f"{path}.{key}", problems)
    window = entry.get("context_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        problems.append((f"{path}.context_window", "must be a positive whole number of tokens"))
    checked = entry.get("checked")
    if checked is not None and not isinstance(checked, datetime.date):
        problems.append((f"{path}.checked", "must be a date (2026-01-31)"))
    if len(problems) > before:
        return None
    assert rates["input"] is not None and rates["output"] is not None
    return Price(
        input=rates["input"],
        output=rates["output"],
        cached_input=rates["cached_input"],
        cache_write=rates["cache_write"],
        reasoning=rates["reasoning"],
        context_window=window,
        checked=checked,
        source=source,
    )


def _decimal(value: Any, path: str, problems: list[tuple[str, str]]) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        problems.append((path, f"must be a number of USD per 1M tokens, not {type(value).__name__}"))
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
        problems.append((path, "must be a number >= 0 (USD per 1M tokens)"))
        return None
    return number


def _key(name: str) -> str:
    """A table key as written in TOML key paths: bare when it can be, quoted otherwise."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('"', '\\"') + '"'
