"""Real-time spend: ``spend()``, ``GET /spend``, ``interlock costs`` and the SQL in docs/ledger.md,
all against a real ledger written by a gateway, checked against sums computed independently."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from sqlalchemy import insert, select

from interlock.accounting import ledger, spend
from interlock.testing import FakeOpenAI, Fault
from interlock.testing.gateway import RunningGateway, running_gateway
from tests import servers
from tests.conftest import SECRET

ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "hello there"}]
SEARCH_KEY = "ik_search-0123456789abcdef"
BILLING_KEY = "ik_billing-0123456789abcdef"
EPS = Decimal("1e-9")  # SQLite stores NUMERIC as a float: sums agree far below this


def config(fake: FakeOpenAI, db: Path | str, extra: str = "") -> str:
    """A gateway config; ``db`` is a SQLite file, or a database URL."""
    url = db if isinstance(db, str) else f"sqlite+aiosqlite:///{db}"
    return f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[providers.backup]
type = "openai"
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[routes.smart]
chain = "openai/gpt-4o > backup/gpt-4o-mini"
[database]
url = "{url}"
{extra}
"""


KEYS = f"""
[[keys]]
key = "{SEARCH_KEY}"
name = "search"
team = "search"
[[keys]]
key = "{BILLING_KEY}"
name = "billing"
team = "billing"
tags = ["batch"]
"""


@dataclass
class Ledger:
    gw: RunningGateway
    url: str  # a SQLite file or a PostgreSQL database

    @property
    def db(self) -> Path:
        """The SQLite file, for the tests that read it with sqlite3 (docs/ledger.md's SQLite queries)."""
        path = spend.sqlite_path(self.url)
        assert path is not None, "a SQLite-only test"
        return Path(path)


async def flush(gw: RunningGateway) -> None:
    for exporter in gw.gateway.exporters:
        await exporter.flush()


@pytest.fixture
async def real_ledger(fake: FakeOpenAI, database_url: str) -> AsyncIterator[Ledger]:
    """A gateway with two team keys, and a ledger holding a mix of requests (flushed).

    On a SQLite file and on a PostgreSQL database (``database_url``, tests/conftest.py).
    """
    async with filled_ledger(fake, database_url) as filled:
        yield filled


@pytest.fixture
async def sqlite_ledger(fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Ledger]:
    """``real_ledger`` on SQLite only: docs/ledger.md's example queries are SQLite's."""
    async with filled_ledger(fake, servers.sqlite_database(tmp_path)) as filled:
        yield filled


@contextlib.asynccontextmanager
async def filled_ledger(fake: FakeOpenAI, url: str, extra: str = "") -> AsyncIterator[Ledger]:
    async with running_gateway(config(fake, url, KEYS + extra)) as gw:
        search = gw.client.with_options(api_key=SEARCH_KEY)
        billing = gw.client.with_options(api_key=BILLING_KEY)
        for _ in range(3):
            await search.chat.completions.create(
                model="gpt-4o", messages=HI, user="alice", extra_headers={"x-interlock-tags": "summarize"}
            )
        for _ in range(2):
            await billing.chat.completions.create(
                model="gpt-4o-mini", messages=HI, user="bob", extra_headers={"x-interlock-tags": "summarize,nightly"}
            )
        fake.add_fault(Fault(status=503, model="gpt-4o"))  # the route falls back to gpt-4o-mini
        raw = await search.chat.completions.with_raw_response.create(model="smart", messages=HI, user="alice")
        assert raw.headers["x-interlock-fallback"] == "true"
        fake.add_fault(Fault(status=400, model="gpt-4o"))
        with pytest.raises(openai.BadRequestError):
            await billing.chat.completions.create(model="gpt-4o", messages=HI)
        await search.chat.completions.create(model="gpt-4o-mini", messages=HI)  # no user, no header tags
        await flush(gw)
        yield Ledger(gw, url)


# --------------------------------------------------------------------------- #
# independent sums, from the raw rows
# --------------------------------------------------------------------------- #

MONEY = ("cost_usd", "unreported_cost_max_usd", "fallback_cost_delta_usd")
_DIM_COLUMNS = {"model": "model", "provider": "provider", "team": "team", "route": "route", "user": "user",
                "api_key": "api_key_id"}


async def independent(url: str, by: list[str], where: dict[str, str] | None = None
                      ) -> tuple[dict[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """Groups and totals computed in Python from every raw row of ``requests`` (no SQL aggregate);
    with ``where``, from the rows whose dimensions have those values only."""
    engine = await ledger.open_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ledger.requests))).mappings().all()
    finally:
        await engine.dispose()

    def blank() -> dict[str, Any]:
        return {m: Decimal(0) if m in MONEY else 0 for m in spend.METRICS}

    def add(acc: dict[str, Any], r: Any) -> None:
        acc["requests"] += 1
        acc["input_tokens"] += r["input_tokens"] or 0
        acc["output_tokens"] += r["output_tokens"] or 0
        acc["cost_usd"] += Decimal(str(r["cost_usd"])) if r["cost_usd"] is not None else 0
        unreported = r["unreported_cost_max_usd"]
        acc["unreported_cost_max_usd"] += Decimal(str(unreported)) if unreported is not None else 0
        acc["fallbacks"] += 1 if r["fallback_used"] else 0
        acc["fallback_cost_delta_usd"] += Decimal(str(r["cost_delta_usd"])) if r["cost_delta_usd"] is not None else 0
        acc["errors"] += 1 if r["error_type"] is not None else 0

    groups: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(blank)
    total = blank()
    for r in rows:
        if any(r[_DIM_COLUMNS[dim]] != value for dim, value in (where or {}).items()):
            continue
        add(total, r)
        keys: list[list[Any]] = [[]]
        for dim in by:
            values = (json.loads(r["tags"]) or [None]) if dim == "tag" else [r[_DIM_COLUMNS[dim]]]
            keys = [k + [v] for k in keys for v in values]
        for k in keys:
            add(groups[tuple(k)], r)
    return dict(groups), total


def assert_metrics_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    for m in spend.METRICS:
        if m in MONEY:
            assert isinstance(got[m], Decimal), m
            assert abs(got[m] - want[m]) < EPS, (m, got[m], want[m])
        else:
            assert got[m] == want[m], (m, got[m], want[m])


# --------------------------------------------------------------------------- #
# spend()
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("by", [["model"], ["team"], ["provider", "model"], ["tag"], ["team", "tag"], ["user"],
                                ["route"], ["api_key"]])
async def test_spend_matches_independent_sums(real_ledger: Ledger, by: list[str]) -> None:
    engine = spend.open_read_only(real_ledger.url)
    try:
        report = await spend.spend(engine, by, timedelta(hours=1))
    finally:
        await engine.dispose()
    groups, total = await independent(real_ledger.url, by)
    assert_metrics_equal(report.total, total)
    assert {tuple(r[d] for d in by) for r in report.rows} == set(groups)
    for row in report.rows:
        assert_metrics_equal(row, groups[tuple(row[d] for d in by)])
    costs = [r["cost_usd"] for r in report.rows]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize(("by", "where"), [
    (["model"], {"team": "search"}), (["tag", "user"], {"team": "billing"}), (["team"], {"api_key": "cfg_billing"}),
    (["model"], {"team": "nobody"}), (["api_key"], {"team": "search", "model": "gpt-4o"}),
])
async def test_spend_where_counts_only_the_matching_requests(real_ledger: Ledger, by: list[str],
                                                            where: dict[str, str]) -> None:
    engine = spend.open_read_only(real_ledger.url)
    try:
        report = await spend.spend(engine, by, timedelta(hours=1), where=where)
        everything = await spend.spend(engine, by, timedelta(hours=1))
    finally:
        await engine.dispose()
    groups, total = await independent(real_ledger.url, by, where)
    assert report.filter == where and report.to_json()["filter"] == where
    assert_metrics_equal(report.total, total)
    assert {tuple(r[d] for d in by) for r in report.rows} == set(groups)
    for row in report.rows:
        assert_metrics_equal(row, groups[tuple(row[d] for d in by)])
    assert report.total["requests"] < everything.total["requests"] == 8  # the filter did leave requests out


async def test_spend_cannot_filter_on_tags() -> None:
    engine = spend.open_read_only("sqlite+aiosqlite:///unused.db")  # refused before any I/O
    try:
        with pytest.raises(ValueError, match="cannot filter on 'tag'"):
            await spend.spend(engine, ["model"], timedelta(hours=1), where={"tag": "batch"})
    finally:
        await engine.dispose()


async def test_spend_agrees_with_the_gateways_own_decisions(real_ledger: Ledger) -> None:
    decisions = real_ledger.gw.log.decisions
    engine = spend.open_read_only(real_ledger.url)
    try:
        report = await spend.spend(engine, ["team"], timedelta(hours=1))
    finally:
        await engine.dispose()
    rows = {r["team"]: r for r in report.rows}
    assert set(rows) == {"search", "billing"}
    for team in rows:
        mine = [d for d in decisions if d.team == team]
        assert rows[team]["requests"] == len(mine)
        assert abs(rows[team]["cost_usd"] - sum((d.cost_usd or Decimal(0) for d in mine), Decimal(0))) < EPS
    assert rows["search"]["fallbacks"] == 1 and rows["billing"]["errors"] == 1
    fallback = next(d for d in decisions if d.fallback_used)
    assert fallback.cost_delta_usd is not None and fallback.cost_delta_usd < 0  # gpt-4o-mini is cheaper
    assert abs(rows["search"]["fallback_cost_delta_usd"] - fallback.cost_delta_usd) < EPS
    assert report.total["cost_usd"] > 0 and report.total["requests"] == len(decisions) == 8


async def test_tags_explode_and_untagged_requests_keep_a_row(real_ledger: Ledger) -> None:
    engine = spend.open_read_only(real_ledger.url)
    try:
        report = await spend.spend(engine, ["tag"], timedelta(hours=1))
    finally:
        await engine.dispose()
    counts = {r["tag"]: r["requests"] for r in report.rows}
    # the billing key's default tag "batch" comes first, then the header's
    assert counts == {"summarize": 5, "batch": 3, "nightly": 2, None: 2}
    assert sum(counts.values()) > report.total["requests"] == 8


async def test_the_window_excludes_older_and_later_rows(real_ledger: Ledger) -> None:
    engine = spend.open_read_only(real_ledger.url)
    try:
        past = await spend.spend(engine, ["model"], timedelta(hours=1), until=datetime.now(UTC) - timedelta(hours=2))
        now = await spend.spend(engine, ["model"], timedelta(minutes=30))
    finally:
        await engine.dispose()
    assert past.rows == [] and past.total["requests"] == 0 and past.total["cost_usd"] == 0
    assert now.total["requests"] == 8


async def test_an_empty_or_unmigrated_ledger_reads_as_empty(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    sqlite3.connect(tmp_path / "empty.db").close()  # a database without the ledger's tables
    engine = spend.open_read_only(url)
    try:
        report = await spend.spend(engine, ["model", "tag"], timedelta(days=1))
        assert report.rows == [] and report.total["requests"] == 0
        assert await spend.anomalies(engine, timedelta(days=1)) == []
    finally:
        await engine.dispose()


async def test_the_read_only_engine_never_creates_or_writes(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    engine = spend.open_read_only(f"sqlite+aiosqlite:///{missing}")
    try:
        with pytest.raises(FileNotFoundError, match="no ledger database at"):
            await spend.spend(engine, ["model"], timedelta(days=1))
        with pytest.raises(FileNotFoundError):
            await spend.anomalies(engine, timedelta(days=1))
    finally:
        await engine.dispose()
    assert not missing.exists()


def test_durations_and_dimensions_are_validated() -> None:
    assert spend.parse_duration("30m") == timedelta(minutes=30)
    assert spend.parse_duration("24h") == timedelta(hours=24)
    assert spend.parse_duration("7d") == timedelta(days=7)
    assert spend.parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "24", "0h", "-1d", "1y", "h", "1.5h"):
        with pytest.raises(ValueError, match="not a duration"):
            spend.parse_duration(bad)
    assert spend.parse_by("model, team,tag") == ["model", "team", "tag"]
    with pytest.raises(ValueError, match="cannot group by 'cost'"):
        spend.parse_by("model,cost")
    with pytest.raises(ValueError, match="repeated"):
        spend.parse_by("model,model")
    with pytest.raises(ValueError, match="at least one"):
        spend.parse_by(" , ")


async def test_anomalies_lists_alert_rows_newest_first(real_ledger: Ledger) -> None:
    await add_alerts(real_ledger.url)
    engine = spend.open_read_only(real_ledger.url)
    try:
        rows = await spend.anomalies(engine, timedelta(days=1))
    finally:
        await engine.dispose()
    assert [r["kind"] for r in rows] == ["anomaly", "budget_soft"]  # the 3-day-old one is outside the window
    assert rows[0]["value_usd"] == Decimal("12.5") and rows[0]["details"] == {"baseline": "1.25"}
    assert rows[0]["ts"].tzinfo is not None


async def add_alerts(url: str) -> None:
    engine = await ledger.open_engine(url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(ledger.alerts), [
                {"ts": now - timedelta(days=3), "kind": "anomaly", "scope": "team:old", "message": "old",
                 "value_usd": None, "threshold_usd": None, "details": None},
                {"ts": now - timedelta(hours=2), "kind": "budget_soft", "scope": "team:search",
                 "message": "team:search reached 80% of its daily budget", "value_usd": Decimal("8"),
                 "threshold_usd": Decimal("10"), "details": None},
                {"ts": now - timedelta(minutes=5), "kind": "anomaly", "scope": "model:gpt-4o",
                 "message": "gpt-4o spend is 10x its baseline", "value_usd": Decimal("12.5"),
                 "threshold_usd": Decimal("1.25"), "details": '{"baseline": "1.25"}'},
            ])
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- #
# GET /spend
# --------------------------------------------------------------------------- #


async def test_get_spend_over_http_matches_spend(real_ledger: Ledger) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{real_ledger.gw.root}/spend", params={"by": "team,model", "since": "1h"}) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["by"] == ["team", "model"]
    assert body["since"].endswith("Z") and body["until"].endswith("Z")
    groups, total = await independent(real_ledger.url, ["team", "model"])
    assert body["total"]["requests"] == total["requests"] == 8
    assert isinstance(body["total"]["cost_usd"], str)  # exact decimals, never floats
    assert abs(Decimal(body["total"]["cost_usd"]) - total["cost_usd"]) < EPS
    for row in body["rows"]:
        want = groups[(row["team"], row["model"])]
        assert row["requests"] == want["requests"]
        assert abs(Decimal(row["cost_usd"]) - want["cost_usd"]) < EPS
        assert abs(Decimal(row["fallback_cost_delta_usd"]) - want["fallback_cost_delta_usd"]) < EPS


async def test_get_spend_sees_new_requests_after_a_flush(real_ledger: Ledger) -> None:
    gw = real_ledger.gw
    url = f"{gw.root}/spend"
    async with aiohttp.ClientSession() as s:
        async with s.get(url, params={"by": "model"}) as resp:  # defaults: by model, since 24h
            before = (await resp.json())["total"]["requests"]
        await gw.client.with_options(api_key=SEARCH_KEY).chat.completions.create(model="gpt-4o", messages=HI)
        await flush(gw)
        async with s.get(url) as resp:
            assert (await resp.json())["total"]["requests"] == before + 1


async def test_the_ledger_reader_opens_one_engine_lazily_and_closes_it(tmp_path: Path) -> None:
    reader = spend.LedgerReader(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    assert reader._engine is None  # nothing opened before the first GET /spend
    engine = reader.engine()
    assert reader.engine() is engine  # every request shares it
    await reader.close()
    assert reader._engine is None
    await reader.close()  # idempotent


@pytest.mark.parametrize(("query", "param"), [
    ({"by": "model,price"}, "by"), ({"by": ""}, "by"), ({"since": "yesterday"}, "since"), ({"since": "0h"}, "since"),
])
async def test_get_spend_rejects_bad_parameters(real_ledger: Ledger, query: dict[str, str], param: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{real_ledger.gw.root}/spend", params=query) as resp:
            assert resp.status == 400
            err = (await resp.json())["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["code"] == "invalid_value"


async def test_get_spend_needs_the_admin_key_when_one_is_set(fake: FakeOpenAI, tmp_path: Path) -> None:
    toml = config(fake, tmp_path / "ledger.db").replace("[database]", '[server]\nadmin_key = "adm-0123456789"\n[database]')
    async with running_gateway(toml) as gw:
        await gw.client.chat.completions.create(model="gpt-4o", messages=HI)
        await flush(gw)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gw.root}/spend") as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "invalid_admin_key"
            async with s.get(f"{gw.root}/spend", headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            async with s.get(f"{gw.root}/spend", headers={"Authorization": "Bearer adm-0123456789"}) as resp:
                assert resp.status == 200
                body = await resp.json()
    assert body["total"]["requests"] == 1 and Decimal(body["total"]["cost_usd"]) > 0


ADMIN = "adm-spend-0123456789"
READER = "read-spend-0123456789"
LONER_KEY = "ik_loner-0123456789abcdef"
SCOPED = f"""
[server]
admin_key = "{ADMIN}"
read_key = "{READER}"
[[keys]]
key = "{LONER_KEY}"
name = "loner"
"""


async def get_spend(gw: RunningGateway, token: str, **query: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gw.root}/spend", params=query, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()


async def test_a_gateway_key_reads_its_own_teams_spend_and_the_admin_reads_all(fake: FakeOpenAI, database_url: str
                                                                               ) -> None:
    async with filled_ledger(fake, database_url, SCOPED) as filled:
        gw = filled.gw
        for _ in range(2):  # a key without a team
            await gw.client.with_options(api_key=LONER_KEY).chat.completions.create(model="gpt-4o-mini", messages=HI)
        await flush(gw)
        groups, total = await independent(filled.url, ["team"])
        assert {team: g["requests"] for team, g in groups.items()} == {("search",): 5, ("billing",): 3, (None,): 2}

        # the administrator and the read key: every team, and every key without one
        for token in (ADMIN, READER):
            status, body = await get_spend(gw, token, by="team", since="1h")
            assert status == 200 and body["filter"] == {}
            assert {r["team"]: r["requests"] for r in body["rows"]} == {"search": 5, "billing": 3, None: 2}
            assert body["total"]["requests"] == total["requests"] == 10
        status, body = await get_spend(gw, ADMIN, by="api_key", team="billing")  # narrowed on request
        assert status == 200 and body["filter"] == {"team": "billing"}
        assert [(r["api_key"], r["requests"]) for r in body["rows"]] == [("cfg_billing", 3)]

        # a team key: its team's rows only, whatever it groups by; its total is its team's
        want = groups[("search",)]
        for by in ("team", "model,team", "api_key", "tag,user"):
            status, body = await get_spend(gw, SEARCH_KEY, by=by, since="1h")
            assert status == 200, body
            assert body["filter"] == {"team": "search"}
            assert body["total"]["requests"] == want["requests"] == 5
            assert abs(Decimal(body["total"]["cost_usd"]) - want["cost_usd"]) < EPS
            if "team" in by:
                assert {r["team"] for r in body["rows"]} == {"search"}
            if by == "api_key":
                assert [r["api_key"] for r in body["rows"]] == ["cfg_search"]
        status, body = await get_spend(gw, SEARCH_KEY, by="team", team="search")  # naming its own team is fine
        assert status == 200 and [r["team"] for r in body["rows"]] == ["search"]
        status, body = await get_spend(gw, SEARCH_KEY, team="billing")  # another team: refused, not narrowed
        assert status == 403
        assert body["error"]["code"] == "other_team" and body["error"]["param"] == "team"
        assert SEARCH_KEY not in json.dumps(body)

        # a key without a team: its own requests only
        status, body = await get_spend(gw, LONER_KEY, by="api_key,team")
        assert status == 200 and body["filter"] == {"api_key": "cfg_loner"}
        assert [(r["api_key"], r["team"], r["requests"]) for r in body["rows"]] == [("cfg_loner", None, 2)]
        assert body["total"]["requests"] == 2
        status, body = await get_spend(gw, LONER_KEY, team="search")
        assert status == 403 and body["error"]["code"] == "other_team"

        # a wrong or revoked key is not a team key: the admin key is asked for
        status, body = await get_spend(gw, "ik_nobody-0123456789abcdef")
        assert status == 401 and body["error"]["code"] == "invalid_admin_key"


async def test_get_spend_refuses_an_empty_team(real_ledger: Ledger) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{real_ledger.gw.root}/spend", params={"team": " "}) as resp:
            assert resp.status == 400
            err = (await resp.json())["error"]
    assert err["param"] == "team" and err["code"] == "invalid_value"


# --------------------------------------------------------------------------- #
# interlock costs
# --------------------------------------------------------------------------- #


def costs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "interlock"
    return subprocess.run([str(exe), "costs", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def db_config(tmp_path: Path, db: Path | str) -> str:
    """A config naming the ledger: a SQLite file, or a database URL."""
    url = db if isinstance(db, str) else f"sqlite+aiosqlite:///{db}"
    path = tmp_path / "costs.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    return str(path)


async def test_costs_prints_an_aligned_table_and_json(real_ledger: Ledger, tmp_path: Path) -> None:
    cfg = db_config(tmp_path, real_ledger.url)
    _, total = await independent(real_ledger.url, ["model"])
    text = costs("--config", cfg, "--by", "model,team", "--since", "1h", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("spend by model, team from ")
    header = lines[1].split()
    assert header[:3] == ["model", "team", "requests"]
    assert re.match(r"^gpt-4o\s+search\s+3\s", lines[2])  # the costliest group first
    assert any(re.match(r"^-\s+billing\s+1\s.*\s0\s.*\s1$", ln) for ln in lines)  # the failed request: no model, 1 error
    total_line = lines[-1].split()
    assert total_line[0] == "TOTAL" and total_line[1] == "8"
    assert abs(Decimal(total_line[4]) - total["cost_usd"]) < EPS
    # columns are aligned: every row is as wide as the widest, right-aligned numbers end together
    assert len({len(ln) for ln in lines[1:]}) == 1

    as_json = costs("--config", cfg, "--by", "model,team", "--since", "1h", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    engine = spend.open_read_only(real_ledger.url)
    try:
        report = (await spend.spend(engine, ["model", "team"], timedelta(hours=1))).to_json()
    finally:
        await engine.dispose()
    assert body["rows"] == report["rows"] and body["total"] == report["total"]


async def test_costs_by_tag(real_ledger: Ledger, tmp_path: Path) -> None:
    out = costs("--config", db_config(tmp_path, real_ledger.url), "--by", "tag", "--since", "30m", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {ln.split()[0]: ln.split()[1] for ln in out.stdout.splitlines()[2:] if ln and not ln.startswith("(")}
    assert rows["summarize"] == "5" and rows["batch"] == "3" and rows["nightly"] == "2" and rows["-"] == "2"
    assert rows["TOTAL"] == "8"
    assert "counts in each tag's row" in out.stdout


async def test_costs_anomalies(real_ledger: Ledger, tmp_path: Path) -> None:
    await add_alerts(real_ledger.url)
    cfg = db_config(tmp_path, real_ledger.url)
    text = costs("--config", cfg, "--anomalies", cwd=tmp_path)  # default window: 7 days
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:4] == ["ts", "(UTC)", "kind", "scope"]
    assert [ln.split()[2] for ln in lines[1:]] == ["anomaly", "budget_soft", "anomaly"]
    assert "gpt-4o spend is 10x its baseline" in lines[1] and "12.5" in lines[1]
    as_json = json.loads(costs("--config", cfg, "--anomalies", "--since", "1d", "--json", cwd=tmp_path).stdout)
    assert [a["scope"] for a in as_json] == ["model:gpt-4o", "team:search"]
    assert as_json[0]["value_usd"] == "12.5" and as_json[0]["ts"].endswith("Z")


async def test_costs_on_an_empty_ledger_and_a_missing_database(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    engine = await ledger.open_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await ledger.migrate(engine)
    finally:
        await engine.dispose()
    out = costs("--config", db_config(tmp_path, db), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no requests in the ledger from ")
    out = costs("--config", db_config(tmp_path, db), "--anomalies", cwd=tmp_path)
    window = r"\d{4}-\d\d-\d\d \d\d:\d\d to \d{4}-\d\d-\d\d \d\d:\d\d UTC"
    assert out.returncode == 0
    assert re.fullmatch(rf"no budget or anomaly alerts in the last 7 days \({window}\)\n", out.stdout), out.stdout
    out = costs("--config", db_config(tmp_path, db), "--anomalies", "--since", "24h", cwd=tmp_path)
    assert out.stdout.startswith("no budget or anomaly alerts in the last 24 hours (")

    missing = tmp_path / "nowhere" / "ledger.db"
    out = costs("--config", db_config(tmp_path, missing), cwd=tmp_path)
    assert out.returncode == 1
    assert "no ledger database at" in out.stderr and str(missing) in out.stderr
    assert not missing.exists()

    out = costs("--config", db_config(tmp_path, db), "--since", "yesterday", cwd=tmp_path)
    assert out.returncode == 2 and "not a duration" in out.stderr


# --------------------------------------------------------------------------- #
# docs/ledger.md
# --------------------------------------------------------------------------- #


def doc_queries() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / "ledger.md").read_text(), re.S)
    assert len(blocks) >= 8
    return blocks


async def test_every_sql_query_in_the_docs_runs_against_a_real_ledger(sqlite_ledger: Ledger) -> None:
    await add_alerts(sqlite_ledger.url)
    with sqlite3.connect(sqlite_ledger.db) as conn:
        for sql in doc_queries():
            try:
                conn.execute(sql).fetchall()
            except sqlite3.Error as exc:
                pytest.fail(f"docs/ledger.md query failed ({exc}):\n{sql}")


async def test_the_documented_per_team_query_returns_the_expected_rows(sqlite_ledger: Ledger) -> None:
    query = next(q for q in doc_queries() if "date(ts) AS day" in q)
    with sqlite3.connect(sqlite_ledger.db) as conn:
        rows = conn.execute(query).fetchall()
    today = datetime.now(UTC).date().isoformat()
    decisions = sqlite_ledger.gw.log.decisions
    want = {}
    for team in ("search", "billing"):
        mine = [d for d in decisions if d.team == team]
        want[team] = (len(mine), sum((d.cost_usd or Decimal(0) for d in mine), Decimal(0)))
    assert [(day, team) for day, team, _, _ in rows] == sorted(
        [(today, t) for t in want], key=lambda k: -want[k[1]][1]
    )
    for day, team, n, cost in rows:
        assert n == want[team][0]
        assert abs(Decimal(repr(cost)) - want[team][1].quantize(Decimal("0.000001"))) < Decimal("1e-9")


async def test_the_documented_fallback_and_percentile_queries_compute_what_they_say(sqlite_ledger: Ledger) -> None:
    queries = doc_queries()
    fallback = next(q for q in queries if "weekday 1" in q)
    percentiles = next(q for q in queries if "p95_ms" in q)
    fb = next(d for d in sqlite_ledger.gw.log.decisions if d.fallback_used)
    with sqlite3.connect(sqlite_ledger.db) as conn:
        rows = conn.execute(fallback).fetchall()
        assert [(r[0], r[1]) for r in rows] == [("smart", 1)]
        assert abs(Decimal(repr(rows[0][2])) - fb.cost_delta_usd.quantize(Decimal("1e-8"))) < Decimal("1e-12")
        latencies = sorted(r[0] for r in conn.execute(
            "SELECT latency_ms FROM requests WHERE model = 'gpt-4o' AND error_type IS NULL"))
        got = {r[0]: r for r in conn.execute(percentiles).fetchall()}
    n = len(latencies)
    assert got["gpt-4o"][1] == n == 3
    assert got["gpt-4o"][2] == round(latencies[1], 1)  # nearest rank: ceil(0.5 * 3) = 2nd
    assert got["gpt-4o"][3] == round(latencies[2], 1)  # ceil(0.95 * 3) = 3rd


# --------------------------------------------------------------------------- #
# billed and possibly billed spend, side by side
# --------------------------------------------------------------------------- #

#: 4,000 characters of prompt
LONG = [{"role": "user", "content": "abcd" * 1_000}]


async def test_reports_show_billed_and_possibly_billed_spend(fake: FakeOpenAI, database_url: str, tmp_path: Path) -> None:
    """An attempt cut off by the latency threshold: its possible cost is reported beside the billed spend
    by spend(), GET /spend and interlock costs (text and JSON), on SQLite and PostgreSQL."""
    from interlock.core.estimate import worst_case_usage
    from interlock.core.types import RequestContext

    toml = config(fake, database_url, '[prices."gpt-4o"]\ninput = 2.5\noutput = 10\n').replace(
        'chain = "openai/gpt-4o > backup/gpt-4o-mini"', 'chain = "openai/gpt-4o > backup/gpt-4o-mini"\nlatency_threshold = 0.3'
    )
    async with running_gateway(toml) as gw:
        await gw.client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # billed, nothing unreported
        fake.add_fault(Fault(latency=3, model="gpt-4o"))
        await gw.client.chat.completions.create(model="smart", messages=LONG)  # gpt-4o cut off, mini answers
        await flush(gw)
        billed = sum((d.cost_usd or Decimal(0) for d in gw.log.decisions), Decimal(0))
        async with aiohttp.ClientSession() as s, s.get(f"{gw.root}/spend", params={"by": "model"}) as resp:
            assert resp.status == 200
            body = await resp.json()
    # the prompt estimate (1,000 tokens for 4,000 characters today) at gpt-4o's $2.50 per million input tokens
    ctx = RequestContext(request_id="r", endpoint="chat", body={"model": "smart", "messages": LONG})
    possible = worst_case_usage(ctx, 0).prompt_tokens * Decimal("2.5") / Decimal(1_000_000)
    assert possible > 0 and billed > 0
    engine = spend.open_read_only(database_url)
    try:
        report = await spend.spend(engine, ["model"], timedelta(hours=1))
    finally:
        await engine.dispose()
    assert abs(report.total["cost_usd"] - billed) < EPS
    assert abs(report.total["unreported_cost_max_usd"] - possible) < EPS
    [mini] = [r for r in report.rows if r["model"] == "gpt-4o-mini"]  # both requests were answered by mini
    assert mini["requests"] == 2 and abs(mini["unreported_cost_max_usd"] - possible) < EPS
    assert Decimal(body["total"]["unreported_cost_max_usd"]) == report.total["unreported_cost_max_usd"]
    assert isinstance(body["rows"][0]["unreported_cost_max_usd"], str)  # an exact decimal, never a float

    cfg = db_config(tmp_path, database_url)
    text = costs("--config", cfg, "--by", "model", "--since", "1h", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    header = lines[1].split()
    assert header[header.index("cost_usd") + 1] == "unreported_max_usd"  # side by side
    total = lines[-2].split()  # the last line explains the two columns
    assert total[0] == "TOTAL"
    assert abs(Decimal(total[header.index("unreported_max_usd")]) - possible) < EPS
    assert "unreported_max_usd: the most attempts cut off" in lines[-1]
    as_json = json.loads(costs("--config", cfg, "--by", "model", "--since", "1h", "--json", cwd=tmp_path).stdout)
    assert as_json["total"]["unreported_cost_max_usd"] == body["total"]["unreported_cost_max_usd"]


async def test_a_ledger_before_migration_6_reads_with_nothing_unreported(tmp_path: Path) -> None:
    """A newer `interlock costs` on a ledger a gateway has not migrated yet: billed spend as before, 0 possible."""
    from sqlalchemy import Table

    url = f"sqlite+aiosqlite:///{tmp_path / 'v5.db'}"
    engine = await ledger.open_engine(url)
    try:
        async with engine.begin() as conn:
            def v5(sync_conn: Any) -> None:
                ledger.schema_version.create(sync_conn)
                for version, migration in enumerate(ledger.MIGRATIONS[:5], 1):
                    migration(sync_conn)
                    sync_conn.execute(insert(ledger.schema_version).values(version=version, applied_at=datetime.now(UTC)))
                old = Table("requests", ledger.MetaData(), autoload_with=sync_conn)
                sync_conn.execute(insert(old).values(
                    id="old", ts=datetime.now(UTC) - timedelta(minutes=5), endpoint="chat", requested_model="gpt-4o",
                    model="gpt-4o", tags="[]", status=200, stream=False, attempts=1, fallback_used=False,
                    latency_ms=1.0, input_tokens=10, output_tokens=2, cost_usd=Decimal("0.000045")))
            await conn.run_sync(v5)
    finally:
        await engine.dispose()
    reader = spend.open_read_only(url)
    try:
        report = await spend.spend(reader, ["model"], timedelta(hours=1))
    finally:
        await reader.dispose()
    assert report.total["requests"] == 1 and abs(report.total["cost_usd"] - Decimal("0.000045")) < EPS
    assert report.total["unreported_cost_max_usd"] == 0 == report.rows[0]["unreported_cost_max_usd"]
