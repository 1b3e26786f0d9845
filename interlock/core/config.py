"""TOML configuration: loading, ``${ENV}`` expansion, and validation with key paths.

Every problem is reported as ``key.path: what is wrong`` and all problems are
reported at once, so ``interlock check`` shows a whole broken file in one go.
Provider- and route-level checks that need the plugin registry (is this
provider type registered? does this chain element resolve?) happen in
:mod:`interlock.core.resolve` and report through the same :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from interlock.accounting.anomaly import AnomalySettings
from interlock.accounting.database import DEFAULT_DATABASE_URL
from interlock.core.breaker import BreakerSettings
from interlock.accounting.budgets import Budget, parse_budgets
from interlock.accounting.price_data import PriceDataSettings
from interlock.accounting.pricing import Price, parse_prices
from interlock.core.http_server import ConnectionLimits
from interlock.core.provider import PoolSettings, ProviderSettings, Secret
from interlock.accounting.keys import KeySpec, hash_key, parse_keys
from interlock.accounting.rate_limits import Limits, parse_model_limits, parse_teams
from interlock.accounting.stored_responses import ResponsesSettings
from interlock.core.rules import Rule, parse_rules
from interlock.core.store import StoreSettings
from interlock.core.telemetry.settings import check_config as check_telemetry
from interlock.core.errors import ConfigError as ConfigError  # re-exported: what load() and parse() raise
from interlock.core.route_settings import (
    TARGET_KEYS,
    RouteSettings,
    RouteSpec,
    TargetSettings,
    parse_route_settings,
    parse_target_settings,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # base64 images make large bodies legitimate

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# keys of [providers.NAME] the core itself understands; the rest are provider options
_PROVIDER_CORE_KEYS = {"type", "base_url", "api_key", "headers", "timeout", "connect_timeout", "models"}
_ROUTE_KEYS = {"chain", "targets", "strategy", "description", *RouteSettings.keys()}
_TOP_KEYS = {
    "server", "database", "providers", "routes", "rules", "plugins", "logging", "exporters", "breaker", "prices", "keys",
    "telemetry", "budgets", "anomaly", "responses", "store", "teams", "rate_limits", "price_data",
}
_SERVER_KEYS = {
    "host", "port", "max_body_bytes", "auto_providers", "admin_key", "read_key", "public_metrics",
    # client connections (core.http_server, core.http_json): header_timeout, body_timeout, ...
    *(f.name for f in dataclasses.fields(ConnectionLimits)),
    # the upstream pool (core.provider): upstream_connections_per_host, upstream_keepalive_timeout
    *(f"upstream_{f.name}" for f in dataclasses.fields(PoolSettings)),
}


@dataclass(slots=True)
class Config:
    """The validated configuration."""

    source: str | None = None  # file path, or None for embedded defaults
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY
    auto_providers: bool = False  # also enable every provider whose key env var is set
    database_url: str = DEFAULT_DATABASE_URL
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    routes: dict[str, RouteSpec] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)  # [[rules]], in file order
    disabled_plugins: list[str] = field(default_factory=list)
    log_level: str = "info"
    log_decisions: bool = False
    exporters: dict[str, Any] = field(default_factory=dict)  # [exporters.*] tables, for exporter plugins
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    admin_key: Secret | None = None  # guards admin endpoints; without it they answer loopback clients only
    read_key: Secret | None = None  # reads the information endpoints (core.admin), changes nothing
    public_metrics: bool = False  # GET /metrics answers anyone (for scrapers without a credential)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)  # [server] client connection bounds
    pool: PoolSettings = field(default_factory=PoolSettings)  # [server] upstream_*: the upstream connection pool
    prices: dict[str, Price] = field(default_factory=dict)  # [prices]: "model" or "instance/model" -> price
    price_data: PriceDataSettings = field(default_factory=PriceDataSettings)  # [price_data]: refreshed data set
    budgets: list[Budget] = field(default_factory=list)  # [[budgets]] (core.budgets)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)  # [anomaly] (core.anomaly)
    keys: list[KeySpec] = field(default_factory=list)  # [[keys]]: gateway API keys (hashes only)
    telemetry: dict[str, Any] = field(default_factory=dict)  # [telemetry], see core.telemetry.settings
    responses: ResponsesSettings = field(default_factory=ResponsesSettings)  # [responses]: stored Responses API responses
    store: StoreSettings = field(default_factory=StoreSettings)  # [store]: shared routing state (in-memory when absent)
    teams: dict[str, Limits] = field(default_factory=dict)  # [teams.NAME]: rate limits and allowlist per team
    rate_limits: dict[str, Limits] = field(default_factory=dict)  # [rate_limits."MODEL"]: per model or route

    def settings_view(self) -> dict[str, Any]:
        """What exporter plugins receive: everything but provider credentials."""
        return {
            "source": self.source,
            "database": {"url": self.database_url},
            "logging": {"level": self.log_level, "decisions": self.log_decisions},
            "exporters": self.exporters,
        }


def load(path: str | None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read and validate a config file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config(auto_providers=True)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([("", f"config file {path!r} does not exist")], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], path) from None
    return parse(data, source=path, environ=environ)


def parse(data: Mapping[str, Any], *, source: str | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Validate an already-parsed TOML document."""
    problems: list[tuple[str, str]] = []
    data = _expand(data, "", environ, problems)
    cfg = Config(source=source)

    for key in data:
        if key not in _TOP_KEYS:
            problems.append((key, f"unknown section (known: {', '.join(sorted(_TOP_KEYS))})"))

    server = _table(data, "server", problems)
    _unknown(server, _SERVER_KEYS, "server", problems)
    cfg.host = _typed(server, "host", str, "server", problems, DEFAULT_HOST)
    cfg.port = _typed(server, "port", int, "server", problems, DEFAULT_PORT)
    if not 0 <= cfg.port <= 65535:
        problems.append(("server.port", f"{cfg.port} is not a TCP port (0-65535)"))
    cfg.max_body_bytes = _typed(server, "max_body_bytes", int, "server", problems, DEFAULT_MAX_BODY)
    if cfg.max_body_bytes <= 0:
        problems.append(("server.max_body_bytes", "must be a positive number of bytes"))
    cfg.auto_providers = _typed(server, "auto_providers", bool, "server", problems, False)
    cfg.limits = _positive_settings(server, ConnectionLimits, "", problems)
    cfg.pool = _positive_settings(server, PoolSettings, "upstream_", problems)
    admin_key = _typed(server, "admin_key", str, "server", problems, None)
    cfg.admin_key = Secret(admin_key) if admin_key else None
    read_key = _typed(server, "read_key", str, "server", problems, None)
    cfg.read_key = Secret(read_key) if read_key else None
    if read_key and read_key == admin_key:
        problems.append(("server.read_key", "must differ from server.admin_key"))
    cfg.public_metrics = _typed(server, "public_metrics", bool, "server", problems, False)
    cfg.breaker = BreakerSettings.parse(_table(data, "breaker", problems), problems)

    database = _table(data, "database", problems)
    _unknown(database, {"url"}, "database", problems)
    cfg.database_url = _typed(database, "url", str, "database", problems, DEFAULT_DATABASE_URL)
    if "://" not in cfg.database_url:
        problems.append(("database.url", f"{cfg.database_url!r} is not a SQLAlchemy URL (e.g. {DEFAULT_DATABASE_URL})"))

    for name, table in _table(data, "providers", problems).items():
        settings = _provider(name, table, problems)
        if settings is not None:
            cfg.providers[name] = settings

    for name, table in _table(data, "routes", problems).items():
        spec = _route(name, table, problems)
        if spec is not None:
            cfg.routes[name] = spec

    cfg.rules = parse_rules(data.get("rules"), problems)
    cfg.prices = parse_prices(data.get("prices"), problems)
    cfg.price_data = PriceDataSettings.parse(data.get("price_data"), problems)
    cfg.budgets = parse_budgets(data.get("budgets"), problems)
    cfg.anomaly = AnomalySettings.parse(data.get("anomaly"), problems)
    cfg.keys = parse_keys(data.get("keys"), problems)
    gateway_keys = {spec.key_hash for spec in cfg.keys}
    for name, secret in (("admin_key", cfg.admin_key), ("read_key", cfg.read_key)):
        if secret is not None and hash_key(secret.get()) in gateway_keys:  # a gateway key is never an admin credential
            problems.append((f"server.{name}", "must differ from every [[keys]] key"))
    cfg.responses = ResponsesSettings.parse(data.get("responses"), problems)
    cfg.store = StoreSettings.parse(data.get("store"), problems)
    cfg.teams = parse_teams(data.get("teams"), problems)  # accounting.rate_limits
    cfg.rate_limits = parse_model_limits(data.get("rate_limits"), problems)

    plugins = _table(data, "plugins", problems)
    _unknown(plugins, {"disabled"}, "plugins", problems)
    cfg.disabled_plugins = _str_list(plugins, "disabled", "plugins", problems)

    logging_ = _table(data, "logging", problems)
    _unknown(logging_, {"level", "decisions"}, "logging", problems)
    cfg.log_level = _typed(logging_, "level", str, "logging", problems, "info").lower()
    if cfg.log_level not in {"debug", "info", "warning", "error"}:
        problems.append(("logging.level", f"{cfg.log_level!r} is not one of debug, info, warning, error"))
    cfg.log_decisions = _typed(logging_, "decisions", bool, "logging", problems, False)
    cfg.exporters = dict(_table(data, "exporters", problems))
    cfg.telemetry = check_telemetry(_table(data, "telemetry", problems), problems)

    if problems:
        raise ConfigError(problems, source)
    return cfg


def _positive_settings(server: Mapping[str, Any], cls: Any, prefix: str, problems: list[tuple[str, str]]) -> Any:
    """A settings dataclass of positive numbers (seconds: float, counts: int) from [server] keys ``prefix + field``."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key, default = prefix + f.name, f.default
        value = _typed(server, key, type(default), "server", problems, default)
        if not 0 < value < float("inf"):  # TOML has inf and nan
            unit = "seconds" if isinstance(default, float) else "connections"
            problems.append((f"server.{key}", f"must be a positive number of {unit}, not {value!r}"))
            value = default
        values[f.name] = value
    return cls(**values)


# --------------------------------------------------------------------------- #


def _expand(value: Any, path: str, environ: Mapping[str, str], problems: list[tuple[str, str]]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recording unset variables."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if default is not None:  # shell semantics: ${VAR:-default} also replaces an empty VAR
                return environ.get(var) or default
            if var in environ:
                return environ[var]
            problems.append((path, f"environment variable {var} is not set"))
            return ""

        return _ENV_REF.sub(sub, value) if "${" in value else value
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else k, environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(value)]
    return value


def _table(data: Mapping[str, Any], key: str, problems: list[tuple[str, str]], path: str = "") -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        problems.append((f"{path}{key}", f"must be a table, not {type(value).__name__}"))
        return {}
    return value


def _unknown(table: Mapping[str, Any], known: set[str], path: str, problems: list[tuple[str, str]]) -> None:
    for key in table:
        if key not in known:
            problems.append((f"{path}.{key}", f"unknown key (known: {', '.join(sorted(known))})"))


def _typed(table: Mapping[str, Any], key: str, typ: type, path: str, problems: list[tuple[str, str]], default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    # TOML ints are acceptable where floats are asked for; bools are not ints here
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        shown = "" if "key" in key or "secret" in key or "token" in key else f" ({value!r})"  # never echo credentials
        problems.append((f"{path}.{key}", f"must be {typ.__name__}, not {type(value).__name__}{shown}"))
        return default
    return value


def _str_list(table: Mapping[str, Any], key: str, path: str, problems: list[tuple[str, str]]) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append((f"{path}.{key}", "must be a list of strings"))
        return []
    return list(value)


def _provider(name: str, table: Any, problems: list[tuple[str, str]]) -> ProviderSettings | None:
    path = f"providers.{name}"
    if not isinstance(table, dict):
        problems.append((path, "must be a table"))
        return None
    if not _NAME.match(name) or "/" in name:
        problems.append((path, "instance names may use letters, digits, '.', '_' and '-' only"))
    ptype = _typed(table, "type", str, path, problems, name)
    base_url = _typed(table, "base_url", str, path, problems, None)
    if base_url is not None and not re.match(r"^https?://", base_url):
        problems.append((f"{path}.base_url", f"{base_url!r} must start with http:// or https://"))
    api_key = _typed(table, "api_key", str, path, problems, None)
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        problems.append((f"{path}.headers", "must be a table of strings"))
        headers = {}
    timeout = _typed(table, "timeout", float, path, problems, 600.0)
    connect_timeout = _typed(table, "connect_timeout", float, path, problems, 10.0)
    for key, val in (("timeout", timeout), ("connect_timeout", connect_timeout)):
        if val <= 0:
            problems.append((f"{path}.{key}", "must be a positive number of seconds"))
    return ProviderSettings(
        name=name,
        type=ptype,
        base_url=base_url,
        api_key=Secret(api_key) if api_key else None,
        headers=dict(headers),
        timeout=timeout,
        connect_timeout=connect_timeout,
        models=_str_list(table, "models", path, problems),
        options={k: v for k, v in table.items() if k not in _PROVIDER_CORE_KEYS},
    )


def _route(name: str, table: Any, problems: list[tuple[str, str]]) -> RouteSpec | None:
    path = f"routes.{name}"
    if not isinstance(table, dict):
        problems.append((path, "must be a table"))
        return None
    _unknown(table, _ROUTE_KEYS, path, problems)
    has_chain, has_targets = "chain" in table, "targets" in table
    if has_chain == has_targets:
        problems.append((path, "needs exactly one of 'chain' (\"a > b > c\") or 'targets' (a list)"))
        return None
    elements: list[tuple[str, float, TargetSettings]] = []
    if has_chain:
        chain = table["chain"]
        parts = chain.split(">") if isinstance(chain, str) else chain if isinstance(chain, list) else None
        if parts is None or not all(isinstance(p, str) for p in parts):
            problems.append((f"{path}.chain", 'must be a string like "gpt-4o > claude-sonnet-4-20250514"'))
            return None
        for i, part in enumerate(parts):
            if not part.strip():
                problems.append((f"{path}.chain[{i}]", "empty element (check the '>' separators)"))
            elements.append((part.strip(), 1.0, TargetSettings()))
    else:
        targets = table["targets"]
        if not isinstance(targets, list) or not targets:
            problems.append((f"{path}.targets", "must be a non-empty list of models or {model, weight} tables"))
            return None
        for i, t in enumerate(targets):
            tpath = f"{path}.targets[{i}]"
            if isinstance(t, str):
                elements.append((t.strip(), 1.0, TargetSettings()))
                continue
            if not isinstance(t, dict) or not isinstance(t.get("model"), str):
                problems.append((tpath, "must be a model name or a table with a 'model' string"))
                continue
            _unknown(t, set(TARGET_KEYS), tpath, problems)
            weight = _typed(t, "weight", float, tpath, problems, 1.0)
            if weight < 0:
                problems.append((f"{tpath}.weight", "must not be negative"))
            elements.append((t["model"].strip(), weight, parse_target_settings(t, tpath, problems)))
    default_strategy = "ordered" if has_chain else "weighted"
    strategy = _typed(table, "strategy", str, path, problems, default_strategy)
    settings = parse_route_settings(table, path, problems)
    return RouteSpec(name, elements, strategy, settings, key="chain" if has_chain else "targets")
