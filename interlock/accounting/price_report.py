"""What ``interlock prices`` reports: a model's price per billing dimension and where it comes from,
and the configured or recently routed models that have no price.

Read-only, for people: the gateway itself only ever asks the :class:`PriceTable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from interlock.accounting.pricing import PriceTable
from interlock.core.catalog import Price

#: (field, label, unit) in the order a price is shown
DIMENSIONS: tuple[tuple[str, str, str], ...] = (
    ("input", "input", "per 1M tokens"),
    ("cached_input", "cache reads", "per 1M tokens"),
    ("cache_write", "cache writes (5 minutes)", "per 1M tokens"),
    ("cache_write_1h", "cache writes (1 hour)", "per 1M tokens"),
    ("output", "output", "per 1M tokens"),
    ("reasoning", "reasoning", "per 1M tokens"),
    ("input_audio", "audio input", "per 1M tokens"),
    ("input_image", "image input", "per 1M tokens"),
    ("output_audio", "audio output", "per 1M tokens"),
    ("per_request", "per request", "each"),
    ("web_search", "web search", "per search"),
)

SOURCES = {
    "built-in": "the genai-prices snapshot shipped with interlock",
    "refreshed": "the refreshed price data file",
    "config": "a [prices] entry in the config",
    "self-hosted": "self-hosted: no per-token price",
}


@dataclass(frozen=True, slots=True)
class Target:
    """A provider instance and model to price, with the reason it is listed."""

    provider: str
    provider_type: str
    model: str
    why: str


def price_json(price: Price) -> dict[str, Any]:
    """A price as JSON: every dimension it sets (exact decimal strings), tiers, and its source."""
    out: dict[str, Any] = {name: str(getattr(price, name)) for name, _, _ in DIMENSIONS if getattr(price, name) is not None}
    if price.tiers:
        out["tiers"] = [{"above_prompt_tokens": threshold, **price_json(tier)} for threshold, tier in price.tiers]
    out["source"] = price.source
    if price.matched:
        out["matched"] = price.matched
    if price.context_window:
        out["context_window"] = price.context_window
    return out


def format_price(target: Target, price: Price | None, table: PriceTable) -> str:
    """Lines for one target: each dimension's rate, the tiers, and where the price comes from."""
    head = f"{target.provider}/{target.model} ({target.provider_type})"
    if price is None:
        return f"{head}: no price — add [prices.\"{target.model}\"] with input and output (USD per 1M tokens)"
    lines = [f"{head}: {describe_source(price, table)}"]
    lines += _rates(price, indent="  ")
    for threshold, tier in price.tiers:
        lines.append(f"  prompts above {threshold:,} tokens:")
        lines += _rates(tier, indent="    ", only_tokens=True)
    if price.context_window:
        lines.append(f"  context window: {price.context_window:,} tokens")
    return "\n".join(lines)


def describe_source(price: Price, table: PriceTable) -> str:
    where = SOURCES.get(price.source, price.source)
    if price.source in ("built-in", "refreshed") and table.data is not None:
        where = table.data.describe()
    return f"from {where}" + (f", as {price.matched!r}" if price.matched else "")


def _rates(price: Price, *, indent: str, only_tokens: bool = False) -> list[str]:
    lines = []
    for name, label, unit in DIMENSIONS:
        value = getattr(price, name)
        if value is None or (only_tokens and unit != "per 1M tokens"):
            continue
        lines.append(f"{indent}{label + ':':<27} ${_plain(value)} {unit}")
    return lines


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def configured(gateway: Any) -> list[Target]:
    """Every (instance, model) the running config can send to: route targets and providers' model lists."""
    out: dict[tuple[str, str], Target] = {}
    for name, route in gateway.resolver.routes.items():
        for t in route.targets:
            provider = gateway.providers.get(t.provider)
            ptype = provider.type_name if provider is not None else t.provider
            out.setdefault((t.provider, t.model), Target(t.provider, ptype, t.model, f"route {name!r}"))
    for instance, provider in gateway.providers.items():
        for model in provider.settings.models or ():
            out.setdefault((instance, model), Target(instance, provider.type_name, model, f"[providers.{instance}] models"))
    return list(out.values())


async def routed(engine: AsyncEngine, since: timedelta) -> list[Target]:
    """The (instance, type, model) triples the ledger's attempts used in the window, most used first."""
    from interlock.accounting.ledger import attempts, requests

    a, r = attempts.c, requests.c
    n = func.count().label("n")
    query = (
        select(a.provider, a.provider_type, a.model, n)
        .select_from(attempts.join(requests, r.id == a.request_id))
        .where(r.ts >= datetime.now(UTC) - since)
        .group_by(a.provider, a.provider_type, a.model)
        .order_by(n.desc())
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [Target(str(p), str(t), str(m), f"routed {n} times") for p, t, m, n in rows]


def missing(table: PriceTable, targets: Iterable[Target]) -> list[Target]:
    """The targets the table cannot price (each instance/model once, first reason kept)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for t in targets:
        if (t.provider, t.model) in seen:
            continue
        seen.add((t.provider, t.model))
        if table.lookup(t.provider_type, t.model, t.provider) is None:
            out.append(t)
    return out


def data_summary(table: PriceTable, stale_after: timedelta, overrides: Mapping[str, Price]) -> list[str]:
    """Which price data is in use, whether it is stale, and how many overrides sit on top."""
    data = table.data
    lines = []
    if data is not None:
        lines.append(f"prices: {data.describe()}")
        if data.problem:
            lines.append(f"  note: {data.path} {data.problem}; the built-in snapshot is used")
        if data.stale(stale_after):
            lines.append(f"  stale: older than {stale_after.days} days; run `interlock prices --update` to refresh")
    lines.append(f"overrides: {len(overrides)} [prices] entr{'y' if len(overrides) == 1 else 'ies'} in the config")
    return lines
