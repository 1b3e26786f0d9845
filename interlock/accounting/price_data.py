"""The built-in prices: the genai-prices data set, read into interlock's :class:`Price` once per model.

`genai-prices <https://github.com/pydantic/genai-prices>`_ (MIT) is a maintained data set of
LLM prices: per-provider model matching, cache reads and writes (five-minute and one-hour),
long-context tiers, per-request and per-search fees, and price history. Its own
``calc_price`` is too slow for the request path (well over 100 µs a call), so interlock reads
the data only to *find* a model's rates: :meth:`PriceData.find` resolves a
``(provider type, model)`` pair to a :class:`Price` once, and the price table
(:mod:`interlock.accounting.pricing`) remembers the answer and computes every cost in its
own Decimal arithmetic.

Where the data comes from:

* ``"built-in"``: the snapshot inside the installed ``genai-prices`` package, which ships
  with interlock (its dependency pin decides the version);
* ``"refreshed"``: a JSON file written by ``interlock prices --update`` (or the scheduled
  updater, ``[price_data] refresh``), preferred when it exists and reads cleanly. A file
  that does not read is reported and the built-in snapshot is used instead: prices are
  never fatal.

A snapshot's age is the date of the newest price it records (built-in) or the time it was
fetched (refreshed); :attr:`PriceData.stale` says whether it is older than the configured
``stale_after``.

Prices that depend on the time (DeepSeek's off-peak hours, a price that changes on a given
date) are resolved for the current time and remembered only until the next change
(:meth:`PriceData.find` returns the instant it stops being valid).
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from interlock.core.catalog import Price

log = logging.getLogger("interlock.prices")

#: where ``interlock prices --update`` fetches the data set from (genai-prices' published JSON)
DEFAULT_UPDATE_URL = "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/prices/new_data/v2/data.json"
#: the refreshed data file, relative to the working directory like the default SQLite ledger
DEFAULT_FILE = "interlock-prices.json"
#: a snapshot older than this is reported as stale (never fatal)
DEFAULT_STALE_AFTER = datetime.timedelta(days=90)

#: interlock provider type -> the data set's providers to look in, in order
PROVIDERS: Mapping[str, tuple[str, ...]] = {
    "openai": ("openai",),
    "azure": ("azure", "openai"),
    "anthropic": ("anthropic",),
    "gemini": ("google",),
    "vertex": ("google", "anthropic"),  # Gemini and Claude on Vertex AI, at the vendors' list prices
    "mistral": ("mistral",),
    "deepseek": ("deepseek",),
    "xai": ("x-ai",),
    "perplexity": ("perplexity",),
    "cohere": ("cohere",),
    "groq": ("groq",),
    "together": ("together",),
    "fireworks": ("fireworks",),
    "bedrock": ("aws",),
    "openrouter": ("openrouter",),
}
#: provider types whose models cost nothing per token (self-hosted servers)
SELF_HOSTED = frozenset({"ollama", "gpustack"})
#: how a provider's API names its models when clients may leave the prefix out
_NAME_PREFIXES: Mapping[str, str] = {"fireworks": "accounts/fireworks/models/"}

# the data set's price keys -> Price fields; rates are USD per million tokens, fees per thousand calls
_RATES = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cached_input",
    "cache_write_mtok": "cache_write",
    "cache_write_1h_mtok": "cache_write_1h",
    "output_reasoning_mtok": "reasoning",
    "input_audio_mtok": "input_audio",
    "input_image_mtok": "input_image",
    "output_audio_mtok": "output_audio",
}
_FEES = {"requests_kcount": "per_request", "web_searches_kcount": "web_search"}
#: price keys interlock does not cost (no usage field reports them on the protocols it speaks)
UNMODELLED = (
    "storage_searches_kcount", "cache_audio_read_mtok", "cache_image_read_mtok", "output_image_mtok",
    "input_video_mtok", "output_video_mtok", "input_text_messages_kcount", "output_citation_mtok",
)
_THOUSAND = Decimal(1000)
_CHECKED = re.compile(r"checked (20\d\d-\d\d-\d\d)")


@dataclass(frozen=True, slots=True)
class PriceDataSettings:
    """``[price_data]``: where a refreshed data set lives, and whether and how often to refresh it."""

    file: str = DEFAULT_FILE
    update_url: str = DEFAULT_UPDATE_URL
    refresh: datetime.timedelta | None = None  # off by default: the built-in snapshot is used until --update
    stale_after: datetime.timedelta = DEFAULT_STALE_AFTER

    @classmethod
    def parse(cls, table: Any, problems: list[tuple[str, str]]) -> PriceDataSettings:
        """Validate ``[price_data]`` (``file``, ``update_url``, ``refresh = "24h"``, ``stale_after = "90d"``)."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            problems.append(("price_data", f"must be a table, not {type(table).__name__}"))
            return cls()
        known = ("file", "update_url", "refresh", "stale_after")
        for key in table:
            if key not in known:
                problems.append((f"price_data.{key}", f"unknown key (known: {', '.join(known)})"))
        changes: dict[str, Any] = {}
        for key in ("file", "update_url"):
            value = table.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                problems.append((f"price_data.{key}", "must be a non-empty string"))
            elif key == "update_url" and not value.startswith(("https://", "http://", "file://")):
                problems.append(("price_data.update_url", f"{value!r} is not an http(s) or file URL"))
            else:
                changes[key] = value
        refresh = table.get("refresh")
        if refresh is not None and refresh != "off":
            changes["refresh"] = _duration(refresh, "price_data.refresh", problems, "off")
        stale = table.get("stale_after")
        if stale is not None:
            changes["stale_after"] = _duration(stale, "price_data.stale_after", problems) or DEFAULT_STALE_AFTER
        return replace(cls(), **changes)


def _duration(value: Any, path: str, problems: list[tuple[str, str]], alternative: str = "") -> datetime.timedelta | None:
    from interlock.accounting.spend import parse_duration

    try:
        if not isinstance(value, str):
            raise ValueError(value)
        duration = parse_duration(value)
        if duration <= datetime.timedelta(0):
            raise ValueError(value)
        return duration
    except ValueError:
        also = f" or {alternative!r}" if alternative else ""
        problems.append((path, f"{value!r} is not a duration: use a number and a unit (30m, 24h, 30d){also}"))
        return None


@dataclass(frozen=True, slots=True)
class Found:
    """A model found in the data set: its price, and until when (unix time) that price holds."""

    price: Price
    until: float | None  # None: until the data changes


@dataclass
class PriceData:
    """One snapshot of the data set, and the lookups interlock makes in it."""

    providers: list[Any]  # genai_prices.types.Provider
    source: str  # "built-in" or "refreshed"
    as_of: datetime.datetime | None  # newest price recorded (built-in) or when fetched (refreshed)
    version: str  # the genai-prices package (built-in) or "data file" (refreshed)
    path: str | None = None  # the refreshed file
    problem: str | None = None  # why a refreshed file configured was not used
    _by_id: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {p.id: p for p in self.providers}

    # -- lookups ---------------------------------------------------------- #

    def find(self, provider_type: str, names: Iterable[str], now: datetime.datetime | None = None) -> Found | None:
        """The price of the first of ``names`` (most specific first) that a ``provider_type`` provider lists."""
        ids = PROVIDERS.get(provider_type)
        if not ids:
            return None
        prefix = _NAME_PREFIXES.get(provider_type)
        now = now or datetime.datetime.now(datetime.UTC)
        for name in names:
            for candidate in ((name, prefix + name) if prefix and not name.startswith(prefix) else (name,)):
                for pid in ids:
                    provider = self._by_id.get(pid)
                    if provider is None:
                        continue
                    info = provider.find_model(candidate, all_providers=self.providers)
                    if info is not None:
                        return _found(info, self.source, now)
        return None

    def models(self) -> Iterator[tuple[str, str]]:
        """Every ``(provider type, model name)`` the data set lists as current, by the name clients send."""
        for ptype, ids in PROVIDERS.items():
            for info in self._by_id[ids[0]].models if ids[0] in self._by_id else ():
                if getattr(info, "deprecated", False):
                    continue
                yield ptype, _sent_name(info)

    def stale(self, after: datetime.timedelta, now: datetime.datetime | None = None) -> bool:
        """Whether the snapshot is older than ``after``."""
        if self.as_of is None:
            return False
        return (now or datetime.datetime.now(datetime.UTC)) - self.as_of > after

    def describe(self) -> str:
        """One line: which snapshot this is and how old."""
        when = self.as_of.date().isoformat() if self.as_of else "an unknown date"
        if self.source == "refreshed":
            return f"refreshed data file {self.path} (fetched {when})"
        return f"built-in snapshot (genai-prices {self.version}, prices as of {when})"


def _sent_name(info: Any) -> str:
    """The name a client sends for a data-set model: its exact-match name when it has one, else its id."""
    equals = getattr(info.match, "equals", None)
    return str(equals) if isinstance(equals, str) else str(info.id)


def _found(info: Any, source: str, now: datetime.datetime) -> Found | None:
    model_price = info.get_prices(now)
    price = _price(model_price, info, source)
    if price is None:
        return None
    return Found(price, _next_change(info, now))


def _price(model_price: Any, info: Any, source: str) -> Price | None:
    """A data-set ``ModelPrice`` as a :class:`Price` (None without an input price)."""
    from genai_prices.types import TieredPrices

    values: dict[str, Any] = dict(model_price.__dict__)
    if values.get("input_mtok") is None:
        return None
    base: dict[str, Any] = {}
    thresholds: set[int] = set()
    for key, name in _RATES.items():
        value = values.get(key)
        if isinstance(value, TieredPrices):
            thresholds.update(t.start for t in value.tiers)
            base[name] = value.base
        else:
            base[name] = value
    fees = {name: (values[key] / _THOUSAND if values.get(key) is not None else None) for key, name in _FEES.items()}
    output = base.pop("output") or Decimal(0)  # embeddings have no output price
    input_ = base.pop("input")
    assert input_ is not None
    common: dict[str, Any] = {"context_window": info.context_window, "source": source, "matched": info.id, **fees}
    tiers: list[tuple[int, Price]] = []
    for threshold in sorted(thresholds):
        rates: dict[str, Any] = {name: _at(values.get(key), threshold) for key, name in _RATES.items()}
        tier_input = rates.pop("input")
        assert tier_input is not None
        tiers.append((threshold, Price(input=tier_input, output=rates.pop("output") or Decimal(0), **rates, **common)))
    return Price(input=input_, output=output, **base, **common, tiers=tuple(tiers))


def _at(value: Any, threshold: int) -> Decimal | None:
    """A rate for prompts larger than ``threshold``: a tiered rate's last tier starting at or below it."""
    from genai_prices.types import TieredPrices

    if not isinstance(value, TieredPrices):
        return value if value is None else Decimal(value)
    rate = value.base
    for tier in value.tiers:
        if tier.start <= threshold:
            rate = tier.price
    return Decimal(rate)


def _next_change(info: Any, now: datetime.datetime) -> float | None:
    """When the price found for ``now`` may stop applying: the next start date or time-of-day boundary."""
    from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

    conditionals = info.prices if isinstance(info.prices, list) else []
    changes: list[datetime.datetime] = []
    for conditional in conditionals:
        constraint = conditional.constraint
        if isinstance(constraint, StartDateConstraint):
            start = datetime.datetime.combine(constraint.start_date, datetime.time(), datetime.UTC)
            if start > now:
                changes.append(start)
        elif isinstance(constraint, TimeOfDateConstraint):
            for moment in (constraint.start_time, constraint.end_time):
                at = datetime.datetime.combine(now.date(), moment.replace(tzinfo=moment.tzinfo or datetime.UTC))
                at = at.astimezone(datetime.UTC)
                while at <= now:
                    at += datetime.timedelta(days=1)
                changes.append(at)
    return min(changes).timestamp() if changes else None


# --------------------------------------------------------------------------- #
# loading and refreshing
# --------------------------------------------------------------------------- #


@functools.cache
def builtin() -> PriceData:
    """The snapshot inside the installed genai-prices package (read once per process)."""
    from genai_prices.data import providers

    return PriceData(list(providers), "built-in", _newest_price(providers), importlib.metadata.version("genai-prices"))


def load(settings: PriceDataSettings | None = None) -> PriceData:
    """The refreshed data file when ``settings.file`` holds a readable one, else the built-in snapshot."""
    settings = settings or PriceDataSettings()
    path = Path(settings.file)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return builtin()
    except OSError as exc:
        return _fallback(path, f"cannot be read: {exc.strerror}")
    try:
        return _read_file(str(path.resolve()), stat.st_mtime_ns)
    except (OSError, ValueError) as exc:
        return _fallback(path, str(exc))


def _fallback(path: Path, problem: str) -> PriceData:
    log.warning("price data file %s %s; using the built-in snapshot", path, problem)
    built = builtin()
    return PriceData(built.providers, built.source, built.as_of, built.version, str(path), problem)


@functools.lru_cache(maxsize=4)
def _read_file(path: str, mtime_ns: int) -> PriceData:
    """A refreshed data file (cached by path and modification time: one parse per change)."""
    with open(path, "rb") as fh:
        try:
            document = json.load(fh, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(document, dict) or not isinstance(document.get("providers"), list):
        raise ValueError("is not an interlock price data file (no 'providers' list)")
    providers = parse_providers(document["providers"])
    fetched = _timestamp(document.get("fetched_at"))
    return PriceData(providers, "refreshed", fetched, str(document.get("source") or "data file"), path)


def parse_providers(raw: Any) -> list[Any]:
    """The data set's providers from its published JSON (raises ValueError when it does not validate)."""
    from genai_prices.types import _providers_from_raw

    try:
        providers = _providers_from_raw(raw)
    except Exception as exc:  # pydantic's ValidationError and whatever a newer schema trips over
        raise ValueError(f"does not hold valid price data: {str(exc).splitlines()[0]}") from None
    if not providers:
        raise ValueError("holds no providers")
    return list(providers)


def fetch(url: str, timeout: float = 30.0) -> bytes:
    """Download the published data set (blocking: call it from a thread or the CLI)."""
    import httpx2

    if url.startswith("file://"):
        return Path(url[len("file://"):]).read_bytes()
    response = httpx2.get(url, timeout=timeout, follow_redirects=True)
    response.raise_for_status()
    return response.content


def update(settings: PriceDataSettings, now: datetime.datetime | None = None) -> PriceData:
    """Fetch the data set, validate it, and write it to ``settings.file`` atomically.

    Raises :class:`OSError` or :class:`ValueError` (with a sentence saying why) and leaves
    the existing file untouched when the download or validation fails.
    """
    try:
        body = fetch(settings.update_url)
    except OSError:
        raise
    except Exception as exc:  # httpx2's transport and status errors
        raise OSError(f"cannot download {settings.update_url}: {exc}") from None
    try:
        raw = json.loads(body)  # floats for writing back: their shortest repr is the text that came
        providers = parse_providers(json.loads(body, parse_float=Decimal))  # exact for validating
    except json.JSONDecodeError as exc:
        raise ValueError(f"{settings.update_url} did not return JSON: {exc}") from None
    fetched = now or datetime.datetime.now(datetime.UTC)
    document = {"fetched_at": fetched.isoformat(), "source": settings.update_url, "providers": raw}
    path = Path(settings.file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("price data refreshed from %s: %d providers, written to %s", settings.update_url, len(providers), path)
    return load(settings)


def _timestamp(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _newest_price(providers: Iterable[Any]) -> datetime.datetime | None:
    """The newest date the data records: a price's start date, or a 'checked YYYY-MM-DD' note."""
    from genai_prices.types import StartDateConstraint

    today = datetime.date.today()
    newest: datetime.date | None = None
    for provider in providers:
        for info in provider.models:
            dates: list[datetime.date] = []
            if isinstance(info.prices, list):
                dates += [c.constraint.start_date for c in info.prices if isinstance(c.constraint, StartDateConstraint)]
            for found in _CHECKED.findall(info.price_comments or ""):
                try:
                    dates.append(datetime.date.fromisoformat(found))
                except ValueError:
                    continue
            for when in dates:
                if when <= today and (newest is None or when > newest):
                    newest = when
    return datetime.datetime.combine(newest, datetime.time(), datetime.UTC) if newest else None
