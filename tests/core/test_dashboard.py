"""The shipped Grafana dashboard (docs/grafana/interlock-dashboard.json) only queries what interlock exposes.

Prometheus names differ from the OpenTelemetry ones: ``opentelemetry-exporter-prometheus`` turns
dots into underscores, appends the unit (``s`` -> ``_seconds``, ``USD`` -> ``_USD``; ``{token}``-style
annotations and ``1`` add nothing), then the type suffix (``_total`` for counters; ``_bucket``,
``_sum``, ``_count`` for histograms; nothing for gauges and up-down counters). Two checks:

* statically: the instruments :class:`interlock.core.telemetry.runtime.Telemetry` creates, converted by
  those rules, cover every metric and label the dashboard's PromQL uses;
* for real, when the Prometheus exporter plugin is installed: a gateway with ``[telemetry]
  prometheus = true`` serves traffic that touches every metric (fallback, retry, breaker trip,
  stream), and each dashboard metric and label appears in its ``GET /metrics``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from interlock.core.telemetry import names as telemetry_names
from interlock.core.telemetry.runtime import Telemetry

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "interlock-dashboard.json"

#: every panel the dashboard must keep (issue 6 item 5)
REQUIRED_PANELS = {
    "Request rate by route",
    "Error rate by route and status class",
    "Fallbacks per route",
    "Retries per route",
    "Breaker state per target",
    "Breaker trips per target",
    "Upstream latency p50 / p95 / p99",
    "Time to first chunk p50 / p95 / p99 (streams)",
    "Cost by team (USD / hour)",
    "Cost by model (USD / hour)",
    "Tokens by type (tokens / s)",
    "Gateway overhead p50 / p99",
    "Requests in flight",
}

# --------------------------------------------------------------------------- #
# the exporter's naming rules (opentelemetry-exporter-prometheus 0.66b, _mapping.py + prometheus_client)
# --------------------------------------------------------------------------- #

_UNIT_MAPPINGS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "1": "", "%": "percent",
}
_PER_UNIT = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9:]+", "_", name)


def prom_label(key: str) -> str:
    """An attribute key as a Prometheus label name."""
    if key and key[0].isdigit():
        key = "_" + key[1:]
    return re.sub(r"[^a-zA-Z0-9]+", "_", key)


def prom_unit(unit: str) -> str:
    unit = re.sub(r"{.*}", "", unit)
    if unit in _UNIT_MAPPINGS:
        return _UNIT_MAPPINGS[unit]
    top, sep, bottom = unit.partition("/")
    if sep and _sanitize(bottom):
        top = _UNIT_MAPPINGS.get(_sanitize(top), _sanitize(top))
        bottom = _PER_UNIT.get(_sanitize(bottom), _sanitize(bottom))
        return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _sanitize(unit).strip("_")


def exposed_names(name: str, unit: str, kind: str) -> set[str]:
    """The sample names Prometheus sees for one OpenTelemetry instrument."""
    base = _sanitize(("_" + name[1:]) if name[:1].isdigit() else name)
    suffix = prom_unit(unit)
    if suffix and not base.endswith("_" + suffix):  # prometheus_client's Metric(unit=...) appends it
        base = f"{base}_{suffix}"
    if kind == "counter":
        return {base.removesuffix("_total") + "_total"}
    if kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}  # gauges, observable gauges, and up-down counters (non-monotonic sums become gauges)


class RecordingMeter:
    """Stands in for an OpenTelemetry meter and records every instrument created on it."""

    KINDS = {
        "create_counter": "counter", "create_observable_counter": "counter",
        "create_histogram": "histogram",
        "create_up_down_counter": "gauge", "create_observable_up_down_counter": "gauge",
        "create_gauge": "gauge", "create_observable_gauge": "gauge",
    }

    def __init__(self) -> None:
        self.instruments: list[tuple[str, str, str]] = []  # (name, unit, kind)

    def __getattr__(self, attr: str) -> Any:
        kind = self.KINDS.get(attr)
        if kind is None:
            raise AttributeError(attr)

        def create(name: str, *args: Any, **kwargs: Any) -> Any:
            unit = kwargs.get("unit")
            if unit is None:  # positional: (unit, ...) or, for observable instruments, (callbacks, unit, ...)
                pos = 1 if attr.startswith("create_observable") else 0
                unit = args[pos] if len(args) > pos and isinstance(args[pos], str) else ""
            self.instruments.append((name, unit, kind))
            return _NoopInstrument()

        return create


class _NoopInstrument:
    def add(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record(self, *args: Any, **kwargs: Any) -> None:
        return None

    def set(self, *args: Any, **kwargs: Any) -> None:
        return None


def telemetry_instruments() -> list[tuple[str, str, str]]:
    t = Telemetry()
    meter = RecordingMeter()
    t.meter = meter  # type: ignore[assignment]
    t._instruments()  # noqa: SLF001 - the one place every instrument is created
    return meter.instruments


def static_exposed() -> set[str]:
    names: set[str] = set()
    for name, unit, kind in telemetry_instruments():
        names |= exposed_names(name, unit, kind)
    return names


def telemetry_labels() -> set[str]:
    """Every attribute key in ``core/telemetry/names.py``, as a Prometheus label, plus histograms' ``le``."""
    keys = {v for k, v in vars(telemetry_names).items() if k.isupper() and isinstance(v, str) and "." in v
            and not k.startswith(("METRIC_", "EVENT_", "SCHEMA"))}
    return {prom_label(k) for k in keys} | {"le"}


# --------------------------------------------------------------------------- #
# PromQL: which metric and label names an expression uses
# --------------------------------------------------------------------------- #

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
             "unless", "inf", "nan"}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) referenced by a PromQL expression (the subset the dashboard uses)."""
    labels: set[str] = set()
    metrics: set[str] = set()
    # label_values(metric, label) — Grafana's variable query function
    for metric, label in re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*([a-zA-Z_]\w*)\s*\)", expr):
        metrics.add(metric)
        labels.add(label)
    expr = re.sub(r"label_values\([^)]*\)", " ", expr)
    expr = re.sub(r"\$__\w+|\$\{?\w+\}?", " ", expr)  # Grafana variables
    # label_replace(v, "dst", "replacement", "src", "regex"): dst and src are label names
    for dst, src in re.findall(r'label_replace\(.*?,\s*"([^"]*)"\s*,\s*"[^"]*"\s*,\s*"([^"]*)"\s*,\s*"[^"]*"\s*\)', expr):
        labels |= {dst, src}
    for block in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", block))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r'"[^"]*"', " ", expr)
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in clause.split(",") if x.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    for match in _IDENT.finditer(expr):
        word = match.group(0)
        rest = expr[match.end():].lstrip()
        if word.lower() in _KEYWORDS or rest.startswith("("):
            continue  # a keyword, a function or an aggregation
        if re.fullmatch(r"\d+(e\d+)?", word):
            continue
        metrics.add(word)
    return metrics, labels


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target.get('refId')}", target["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']!r}", query))
    return out


def dashboard_names() -> tuple[set[str], set[str]]:
    metrics: set[str] = set()
    labels: set[str] = set()
    for _, expr in expressions(dashboard()):
        m, labs = promql_names(expr)
        metrics |= m
        labels |= labs
    return metrics, labels


# --------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------- #


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dash = dashboard()
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["expr"].count("{") == target["expr"].count("}"), target["expr"]


def test_the_dashboard_has_every_required_panel() -> None:
    titles = {p["title"] for p in dashboard()["panels"]}
    assert REQUIRED_PANELS <= titles, sorted(REQUIRED_PANELS - titles)


def test_latency_panels_are_percentiles_of_the_histograms() -> None:
    exprs = {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in dashboard()["panels"]}
    for title, metric, quantiles in [
        ("Upstream latency p50 / p95 / p99", "gen_ai_client_operation_duration_seconds_bucket", ("0.5", "0.95", "0.99")),
        ("Time to first chunk p50 / p95 / p99 (streams)", "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
         ("0.5", "0.95", "0.99")),
        ("Gateway overhead p50 / p99", "interlock_overhead_seconds_bucket", ("0.5", "0.99")),
    ]:
        got = exprs[title]
        assert all(metric in e and "histogram_quantile" in e and "le" in e for e in got), got
        assert sorted(re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in got) == sorted(quantiles)  # type: ignore[union-attr]


def test_the_promql_parser_separates_metrics_from_labels() -> None:
    metrics, labels = promql_names(
        'histogram_quantile(0.95, sum by (le, gen_ai_request_model) (rate(a_b_bucket{x_y=~"$m", z="1"}[$__rate_interval])))'
        ' / on (k) group_left sum(increase(c_total[5m])) or vector(0) + 3600 * d_gauge'
    )
    assert metrics == {"a_b_bucket", "c_total", "d_gauge"}
    assert labels == {"le", "gen_ai_request_model", "x_y", "z", "k"}
    assert promql_names("label_values(m_total, lab)") == ({"m_total"}, {"lab"})


def test_the_naming_rules_match_the_documented_examples() -> None:
    assert exposed_names("gen_ai.client.operation.duration", "s", "histogram") == {
        "gen_ai_client_operation_duration_seconds_bucket", "gen_ai_client_operation_duration_seconds_sum",
        "gen_ai_client_operation_duration_seconds_count"}
    assert exposed_names("interlock.cost", "USD", "counter") == {"interlock_cost_USD_total"}
    assert exposed_names("gen_ai.client.token.usage", "{token}", "histogram") >= {"gen_ai_client_token_usage_bucket"}
    assert exposed_names("interlock.breaker.state", "1", "gauge") == {"interlock_breaker_state"}
    assert exposed_names("interlock.requests.in_flight", "{request}", "gauge") == {"interlock_requests_in_flight"}
    assert exposed_names("x.rate", "By/s", "gauge") == {"x_rate_bytes_per_second"}


def test_every_metric_name_in_telemetry_is_instrumented() -> None:
    created = {name for name, _, _ in telemetry_instruments()}
    declared = {v for k, v in vars(telemetry_names).items() if k.startswith("METRIC_") and isinstance(v, str)}
    assert declared <= created, sorted(declared - created)


def test_every_dashboard_query_uses_only_metrics_and_labels_interlock_exposes() -> None:
    exposed = static_exposed()
    known_labels = telemetry_labels()
    problems = []
    for where, expr in expressions(dashboard()):
        metrics, labels = promql_names(expr)
        assert metrics, f"{where}: no metric found in {expr!r}"
        problems += [f"{where}: metric {m!r} is not exposed" for m in sorted(metrics - exposed)]
        problems += [f"{where}: label {lab!r} is not an attribute interlock emits" for lab in sorted(labels - known_labels)]
    assert not problems, "\n".join(problems) + f"\nexposed: {sorted(exposed)}"


def test_the_dashboard_covers_every_metric_interlock_exposes() -> None:
    """Each instrument shows up in at least one panel (a new metric gets a panel, or this list)."""
    used, _ = dashboard_names()
    for name, unit, kind in telemetry_instruments():
        assert exposed_names(name, unit, kind) & used, f"{name} has no panel"


# --------------------------------------------------------------------------- #
# the real thing: scrape a gateway's /metrics
# --------------------------------------------------------------------------- #

def _prometheus_plugin_available() -> bool:
    if importlib.util.find_spec("prometheus_client") is None:
        return False
    try:
        return importlib.util.find_spec("interlock.plugins.exporters.prometheus") is not None
    except ModuleNotFoundError:
        return False


def parse_exposition(text: str) -> tuple[set[str], set[str]]:
    """(sample names, label names) of a Prometheus text exposition."""
    names: set[str] = set()
    labels: set[str] = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*?)\})?\s", line)
        if not m:
            continue
        names.add(m.group(1))
        if m.group(3):
            labels |= set(re.findall(r'([a-zA-Z_]\w*)="', m.group(3)))
    return names, labels


@pytest.mark.skipif(not _prometheus_plugin_available(),
                    reason="the Prometheus exporter plugin (and prometheus_client) is not installed")
async def test_a_scraped_gateway_exposes_every_dashboard_metric() -> None:
    import aiohttp

    from interlock.testing import FakeOpenAI, Fault
    from interlock.testing.gateway import provider_table, running_gateway

    async with FakeOpenAI(["gpt-4o", "gpt-4o-mini"]) as primary, FakeOpenAI(["gpt-4o-mini"]) as backup:
        toml = (
            provider_table("primary", type="openai", base_url=primary.base_url, api_key="k1", models=["gpt-4o"])
            + provider_table("backup", type="openai", base_url=backup.base_url, api_key="k2", models=["gpt-4o-mini"])
            + '[routes.smart]\nchain = "primary/gpt-4o > backup/gpt-4o-mini"\nretries = 1\nbackoff = 0.01\n'
            + "[breaker]\nfailures = 2\n"
            + "[telemetry]\nprometheus = true\n"
        )
        primary.add_fault(Fault(status=500, model="gpt-4o", times=None))
        async with running_gateway(toml) as gw:
            # 500, retry, 500 (trips the breaker), fallback to the backup
            await gw.client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
            stream = await gw.client.chat.completions.create(
                model="smart", messages=[{"role": "user", "content": "hi"}], stream=True,
                stream_options={"include_usage": True})
            async for _ in stream:
                pass
            async with aiohttp.ClientSession() as session, session.get(f"{gw.root}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
    exposed, exposed_labels = parse_exposition(text)
    wanted, wanted_labels = dashboard_names()
    assert not wanted - exposed, f"not in /metrics: {sorted(wanted - exposed)}\nexposed: {sorted(exposed)}"
    # interlock_team is only set for requests made with a team's key; the rest must be there
    missing = wanted_labels - exposed_labels - {"interlock_team"}
    assert not missing, f"labels not in /metrics: {sorted(missing)}"
