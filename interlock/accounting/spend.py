"""Real-time spend: aggregations over the SQL ledger for ``GET /spend`` and ``interlock costs``.

Everything here reads the tables :mod:`interlock.accounting.ledger` defines, with
SQLAlchemy Core, so it runs unchanged on SQLite and PostgreSQL. The only
dialect-specific part is exploding the ``requests.tags`` JSON list for
``by=tag`` (SQLite ``json_each``, PostgreSQL ``jsonb_array_elements_text``).

"Real time" means within the ledger exporter's flush interval: the gateway
buffers rows in memory and writes them every ``[exporters.ledger]
flush_interval`` seconds (1 s by default), so a request is counted here at
most that long after it finished.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from interlock.core import jsonutil

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# SQLAlchemy (and interlock.accounting.ledger, which defines the tables with it) is imported by the
# functions that query, not here: the HTTP app imports this module, and a gateway that never
# serves GET /spend must not pay for SQLAlchemy's memory

#: the ``by`` dimensions and the ``requests`` column each groups on (``tag`` is exploded, see ``_tag_source``)
DIMENSIONS: dict[str, str | None] = {
    "model": "model",
    "provider": "provider",
    "team": "team",
    "tag": None,
    "route": "route",
    "user": "user",
    "api_key": "api_key_id",
    "protocol": "protocol",
}

#: the aggregate columns of every row and of the total, in output order. ``cost_usd`` is the billed
#: spend (what upstreams reported); ``unreported_cost_max_usd`` beside it the most that attempts cut
#: off before reporting usage may have cost on top (see interlock.accounting.ledger)
METRICS = (
    "requests", "input_tokens", "output_tokens", "cost_usd", "unreported_cost_max_usd", "fallbacks",
    "fallback_cost_delta_usd", "errors",
)
_MONEY = ("cost_usd", "unreported_cost_max_usd", "fallback_cost_delta_usd")

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TEN_PLACES = Decimal("0.0000000001")  # the ledger's Numeric(18, 10) scale


def parse_duration(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``2w`` -> a positive timedelta; ``ValueError`` otherwise."""
    m = _DURATION.match(text or "")
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration: use a positive number and a unit, e.g. 30m, 24h, 7d, 2w")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def parse_by(text: str | Sequence[str]) -> list[str]:
    """``"model,team"`` (or a list) -> validated dimension names; ``ValueError`` naming the bad one."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"name at least one dimension to group by: {', '.join(DIMENSIONS)}")
    for n in names:
        if n not in DIMENSIONS:
            raise ValueError(f"cannot group by {n!r}; choose from {', '.join(DIMENSIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a dimension is repeated in {','.join(names)!r}")
    return names


def usd(value: Decimal) -> str:
    """A dollar amount as an exact decimal string (at most 10 places, no exponent)."""
    return f"{value.quantize(_TEN_PLACES).normalize():f}"


@dataclass
class SpendReport:
    """What :func:`spend` returns: grouped rows (costliest first) and the window's totals.

    With ``tag`` among ``by``, a request with several tags counts in each of its
    tags' rows (and untagged requests in a row whose ``tag`` is None), so the rows
    can add up to more than ``total``, which counts every request once.
    """

    by: list[str]
    since: datetime
    until: datetime
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] = field(default_factory=dict)
    filter: dict[str, str] = field(default_factory=dict)  # dimension -> the one value counted (empty: every request)

    def to_json(self) -> dict[str, Any]:
        """The ``GET /spend`` body: ISO 8601 UTC times, money as exact decimal strings."""

        def encode(row: dict[str, Any]) -> dict[str, Any]:
            return {k: usd(v) if k in _MONEY else v for k, v in row.items()}

        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "by": self.by,
            "filter": dict(self.filter),
            "rows": [encode(r) for r in self.rows],
            "total": encode(self.total),
        }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _aggregates(unreported: bool = True) -> list[Any]:
    """The :data:`METRICS` as SQL; ``unreported=False`` for a ledger before migration 6 (counted as 0)."""
    from sqlalchemy import Numeric, case, func, null

    from interlock.accounting.ledger import requests

    r = requests.c
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(r.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(r.output_tokens), 0).label("output_tokens"),
        func.sum(r.cost_usd).label("cost_usd"),
        (func.sum(r.unreported_cost_max_usd) if unreported else null().cast(Numeric(18, 10))).label(
            "unreported_cost_max_usd"
        ),
        func.coalesce(func.sum(case((r.fallback_used, 1), else_=0)), 0).label("fallbacks"),
        func.sum(r.cost_delta_usd).label("fallback_cost_delta_usd"),
        func.coalesce(func.sum(case((r.error_type.is_not(None), 1), else_=0)), 0).label("errors"),
    ]


def _tag_source(dialect: str) -> Any:
    """A table-valued function yielding one ``value`` row per element of ``requests.tags``."""
    from sqlalchemy import cast, func

    from interlock.accounting.ledger import requests

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        fn = func.jsonb_array_elements_text(cast(requests.c.tags, JSONB))
    else:  # SQLite (json_each is built in since 3.38, and in every bundled Python build before)
        fn = func.json_each(requests.c.tags)
    return fn.table_valued("value", name="tag_each")


def _metrics(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in METRICS:
        value = getattr(row, name)
        if name in _MONEY:
            out[name] = Decimal(0) if value is None else Decimal(value).quantize(_TEN_PLACES)
        else:
            out[name] = int(value or 0)
    return out


def _require_file(engine: AsyncEngine) -> None:
    """A SQLite ledger file must exist: say so plainly (aiosqlite's failed connect also leaks a thread)."""
    if engine.dialect.name == "sqlite" and engine.url.query.get("mode") == "ro" and engine.url.database:
        path = engine.url.database.removeprefix("file:")
        if not os.path.isfile(unquote(path)):
            raise FileNotFoundError(f"no ledger database at {unquote(path)}")


async def _has_table(engine: AsyncEngine, name: str) -> bool:
    from sqlalchemy import inspect

    async with engine.connect() as conn:
        return bool(await conn.run_sync(lambda c: inspect(c).has_table(name)))


async def _has_column(engine: AsyncEngine, table: str, column: str) -> bool:
    from sqlalchemy import inspect

    async with engine.connect() as conn:
        return column in await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns(table)})


async def spend(
    engine: AsyncEngine, by: Sequence[str], since: timedelta, until: datetime | None = None,
    where: Mapping[str, str] | None = None,
) -> SpendReport:
    """Spend per ``by`` group over ``[until - since, until)`` (``until`` defaults to now).

    Rows are dicts of the group values (keyed by dimension name, None where the
    ledger has NULL) and :data:`METRICS`; costs are Decimals, sorted costliest
    first. ``where`` (``{"team": "search"}``, ``{"api_key": "key_..."}``; any
    dimension but ``tag``) counts only the requests with those values, in the rows
    and in the total alike. A ledger whose tables do not exist yet reads as empty; a
    SQLite file that does not exist raises ``FileNotFoundError``.
    """
    from sqlalchemy import and_, func, select, true
    from sqlalchemy import exc as sa_exc

    from interlock.accounting.ledger import requests

    by = parse_by(list(by))
    conditions = []
    for name, value in (where or {}).items():
        column = DIMENSIONS.get(name)
        if column is None:
            raise ValueError(f"cannot filter on {name!r}; choose from {', '.join(d for d, c in DIMENSIONS.items() if c)}")
        conditions.append(requests.c[column] == value)
    _require_file(engine)
    until = (until or datetime.now(UTC)).astimezone(UTC)
    start = until - since
    report = SpendReport(by=by, since=start, until=until, filter=dict(where or {}))
    window = and_(requests.c.ts >= start, requests.c.ts < until, *conditions)

    groups = []
    source: Any = requests
    for name in by:
        if name == "tag":
            tags = _tag_source(engine.dialect.name)
            source = source.outerjoin(tags, true())  # untagged requests keep a row, tag NULL
            groups.append(tags.c.value.label(f"g_{name}"))
        else:
            column = DIMENSIONS[name]
            assert column is not None  # only "tag" has no column, and it is exploded above
            groups.append(requests.c[column].label(f"g_{name}"))

    def queries(unreported: bool) -> tuple[Any, Any]:
        grouped = (
            select(*groups, *_aggregates(unreported))
            .select_from(source)
            .where(window)
            .group_by(*groups)
            .order_by(func.coalesce(func.sum(requests.c.cost_usd), 0).desc(), func.count().desc(), *groups)
        )
        return grouped, select(*_aggregates(unreported)).where(window)

    try:
        grouped, totals = queries(unreported=True)
        async with engine.connect() as conn:
            rows = (await conn.execute(grouped)).all()
            total = (await conn.execute(totals)).one()
    except sa_exc.DBAPIError:
        if not await _has_table(engine, requests.name):
            report.total = _metrics(_Zero())
            return report
        if await _has_column(engine, requests.name, "unreported_cost_max_usd"):
            raise
        # a ledger the gateway has not migrated to schema 6 yet (this reader is newer): nothing unreported known
        grouped, totals = queries(unreported=False)
        async with engine.connect() as conn:
            rows = (await conn.execute(grouped)).all()
            total = (await conn.execute(totals)).one()
    report.rows = [{**{name: row._mapping[f"g_{name}"] for name in by}, **_metrics(row)} for row in rows]
    report.total = _metrics(total)
    return report


async def scope_spend(engine: AsyncEngine, scope: str, start: datetime, until: datetime) -> Decimal:
    """The cost of ``scope``'s requests that arrived in ``[start, until)`` (budget scopes:
    ``key:<id>``, ``team:<name>``, ``user:<name>``, ``tag:<tag>``, ``global``); 0 for a ledger with no tables yet.

    How budget counters are re-seeded after a restart (:mod:`interlock.accounting.budgets`),
    through the same table and the same ``ts`` column as :func:`spend`.
    """
    from sqlalchemy import and_, func, select
    from sqlalchemy import exc as sa_exc

    from interlock.accounting.ledger import requests

    _require_file(engine)
    r = requests.c
    kind, _, name = scope.partition(":")
    where = [r.ts >= start.astimezone(UTC), r.ts < until.astimezone(UTC)]
    source: Any = requests
    if kind == "key":
        where.append(r.api_key_id == name)
    elif kind == "team":
        where.append(r.team == name)
    elif kind == "user":
        where.append(r.user == name)
    elif kind == "tag":
        tags = _tag_source(engine.dialect.name)
        source = requests.join(tags, tags.c.value == name)
    elif kind != "global":
        raise ValueError(f"not a budget scope: {scope!r}")
    query = select(func.sum(r.cost_usd)).select_from(source).where(and_(*where))
    try:
        async with engine.connect() as conn:
            value = (await conn.execute(query)).scalar()
    except sa_exc.DBAPIError:
        if not await _has_table(engine, requests.name):
            return Decimal(0)
        raise
    return Decimal(0) if value is None else Decimal(value)


async def last_reset(engine: AsyncEngine, scope: str, period: str, since: datetime) -> datetime | None:
    """When ``scope``'s budget for ``period`` was last reset by an admin (a ``budget_reset`` alert), if it was."""
    from sqlalchemy import and_, select
    from sqlalchemy import exc as sa_exc

    from interlock.accounting.ledger import alerts

    a = alerts.c
    query = select(a.ts, a.details).where(and_(a.kind == "budget_reset", a.scope == scope, a.ts >= since.astimezone(UTC)))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query.order_by(a.ts.desc()).limit(50))).all()
    except sa_exc.DBAPIError:
        if not await _has_table(engine, alerts.name):
            return None
        raise
    for ts, details in rows:
        try:
            info = jsonutil.loads(details) if details else {}
        except jsonutil.JSONDecodeError:
            continue
        if isinstance(info, dict) and period in (info.get("periods") or []):
            when: datetime = ts
            return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return None


async def bucket_spend(engine: AsyncEngine, since: datetime, until: datetime,
                       bucket_seconds: float) -> dict[str, dict[int, Decimal]]:
    """Spend per anomaly scope per time bucket in ``[since, until)``.

    Scopes: ``global``, ``key:<api key id>``, ``team:<t>``, ``model:<m>``, ``tag:<t>``.

    Buckets are ``floor(unix time / bucket_seconds)``, as the anomaly detector numbers
    them; summed in the database, one grouped query per dimension.
    """
    from sqlalchemy import Float, and_, cast, func, literal, select, true
    from sqlalchemy import exc as sa_exc

    from interlock.accounting.ledger import requests

    _require_file(engine)
    r = requests.c
    if engine.dialect.name == "sqlite":
        epoch: Any = cast(func.strftime("%s", r.ts), Float) + cast(func.strftime("%f", r.ts), Float) % 1
    else:
        epoch = func.extract("epoch", r.ts)
    bucket = func.floor(epoch / bucket_seconds).label("bucket")
    window = and_(r.ts >= since.astimezone(UTC), r.ts < until.astimezone(UTC), r.cost_usd.is_not(None))
    tags = _tag_source(engine.dialect.name)
    queries = {
        "global": select(literal(None), bucket, func.sum(r.cost_usd)).where(window).group_by(bucket),
        "key": select(r.api_key_id, bucket, func.sum(r.cost_usd)).where(window, r.api_key_id.is_not(None))
        .group_by(r.api_key_id, bucket),
        "team": select(r.team, bucket, func.sum(r.cost_usd)).where(window, r.team.is_not(None)).group_by(r.team, bucket),
        "model": select(func.coalesce(r.model, r.requested_model), bucket, func.sum(r.cost_usd)).where(window)
        .group_by(func.coalesce(r.model, r.requested_model), bucket),
        "tag": select(tags.c.value, bucket, func.sum(r.cost_usd)).select_from(requests.join(tags, true()))
        .where(window).group_by(tags.c.value, bucket),
    }
    out: dict[str, dict[int, Decimal]] = {}
    try:
        async with engine.connect() as conn:
            for dimension, query in queries.items():
                for name, number, cost in (await conn.execute(query)).all():
                    if dimension == "global" and cost is not None:
                        out.setdefault("global", {})[int(number)] = Decimal(cost)
                    elif name is not None and cost is not None:
                        out.setdefault(f"{dimension}:{name}", {})[int(number)] = Decimal(cost)
    except sa_exc.DBAPIError:
        if not await _has_table(engine, requests.name):
            return {}
        raise
    return out


class LedgerHistory:
    """Budgets' :class:`~interlock.accounting.budgets.SpendHistory` over the ledger (read-only).

    Opens its engine on first use: a gateway whose budgets never need seeding never
    imports SQLAlchemy for it. A SQLite ledger that does not exist yet holds no spend.
    """

    def __init__(self, url: str) -> None:
        self.reader = LedgerReader(url)

    def _no_ledger_yet(self) -> bool:
        """A SQLite ledger file that does not exist: nothing to read, and no SQLAlchemy import to read it."""
        path = sqlite_path(self.reader.url)
        return path not in (None, ":memory:") and not os.path.exists(str(path))

    async def spent(self, scope: str, period: str, start: datetime, until: datetime) -> Decimal:
        if self._no_ledger_yet():
            return Decimal(0)
        engine = self.reader.engine()
        reset = await last_reset(engine, scope, period, start)
        return await scope_spend(engine, scope, max(start, reset) if reset else start, until)

    async def buckets(self, since: datetime, until: datetime, bucket_seconds: float) -> dict[str, dict[int, Decimal]]:
        """Spend per anomaly key and bucket (:func:`bucket_spend`); empty for a SQLite ledger not created yet."""
        if self._no_ledger_yet():
            return {}
        return await bucket_spend(self.reader.engine(), since, until, bucket_seconds)

    async def close(self) -> None:
        await self.reader.close()


class _Zero:
    def __getattr__(self, name: str) -> None:
        return None


async def anomalies(engine: AsyncEngine, since: timedelta, limit: int = 200) -> list[dict[str, Any]]:
    """Rows of the ``alerts`` table from the last ``since``, newest first (``details`` parsed)."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    from interlock.accounting.ledger import alerts

    _require_file(engine)
    start = datetime.now(UTC) - since
    query = select(alerts).where(alerts.c.ts >= start).order_by(alerts.c.ts.desc(), alerts.c.id.desc()).limit(limit)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
    except sa_exc.DBAPIError:
        if not await _has_table(engine, alerts.name):
            return []
        raise
    out = []
    for row in rows:
        item = dict(row)
        ts = item["ts"]
        item["ts"] = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)  # SQLite gives naive UTC
        if item.get("details"):
            try:
                item["details"] = jsonutil.loads(item["details"])
            except jsonutil.JSONDecodeError:
                pass  # keep the text as written
        out.append(item)
    return out


# --------------------------------------------------------------------------- #
# text and JSON for ``interlock costs``
# --------------------------------------------------------------------------- #

_HEADINGS = {
    "input_tokens": "input_tok", "output_tokens": "output_tok", "unreported_cost_max_usd": "unreported_max_usd",
    "fallback_cost_delta_usd": "fallback_delta_usd",
}


def _table(header: list[str], lines: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = []
    for row in [header, *lines]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out


def _window(since: datetime, until: datetime) -> str:
    return f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


def format_report(report: SpendReport) -> str:
    """An aligned text table: one line per group, then TOTAL (each request counted once)."""
    if not report.total.get("requests"):
        return f"no requests in the ledger from {_window(report.since, report.until)}"
    header = [*report.by, *(_HEADINGS.get(m, m) for m in METRICS)]

    def cells(row: dict[str, Any]) -> list[str]:
        return [str(row[m]) if m not in _MONEY else usd(row[m]) for m in METRICS]

    lines = [["-" if row[b] is None else str(row[b]) for b in report.by] + cells(row) for row in report.rows]
    lines.append(["TOTAL"] + [""] * (len(report.by) - 1) + cells(report.total))
    right = set(range(len(report.by), len(header)))
    title = f"spend by {', '.join(report.by)} from {_window(report.since, report.until)}"
    note = []
    if "tag" in report.by:
        note = ["(a request with several tags counts in each tag's row; '-' is untagged; TOTAL counts it once)"]
    if report.total.get("unreported_cost_max_usd"):
        note.append("(cost_usd: billed, the usage upstreams reported; unreported_max_usd: the most attempts cut off "
                    "before they reported usage may have cost on top)")
    return "\n".join([title, *_table(header, lines, right), *note])


def alerts_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alert rows with ISO times and money as exact decimal strings."""
    return [
        {k: _iso(v) if k == "ts" else usd(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in rows
    ]


def _span(since: timedelta) -> str:
    """A window as people say it: 7 days, 24 hours, 30 minutes (not ``7 days, 0:00:00``)."""
    seconds = int(since.total_seconds())
    units = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
    exact = [(unit, seconds // size) for unit, size in units if seconds >= size and seconds % size == 0]
    if not exact:
        return f"{since.total_seconds():g} seconds"
    unit, n = next(((u, n) for u, n in exact if n >= 2), exact[0])  # "24 hours" rather than "1 day"
    return f"{n} {unit}{'s' if n != 1 else ''}"


def format_alerts(rows: list[dict[str, Any]], since: timedelta, until: datetime | None = None) -> str:
    """An aligned table of alert rows, newest first; a sentence naming the window when there are none."""
    if not rows:
        end = until or datetime.now(UTC)
        return f"no budget or anomaly alerts in the last {_span(since)} ({_window(end - since, end)})"
    header = ["ts (UTC)", "kind", "scope", "value_usd", "threshold_usd", "message"]
    lines = [
        [f"{r['ts']:%Y-%m-%d %H:%M:%S}", r["kind"], r["scope"],
         "-" if r["value_usd"] is None else usd(r["value_usd"]),
         "-" if r["threshold_usd"] is None else usd(r["threshold_usd"]), r["message"]]
        for r in rows
    ]
    return "\n".join(_table(header, lines, {3, 4}))


# --------------------------------------------------------------------------- #
# a read-only engine
# --------------------------------------------------------------------------- #


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL points to; None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    if u.database.startswith("file:"):
        return None  # already a URI; leave it to SQLite
    return u.database


def read_only_url(url: str) -> str:
    """For a SQLite file: the same file opened ``mode=ro`` (never created or written)."""
    from sqlalchemy.engine import make_url

    path = sqlite_path(url)
    if path is None:
        return url
    u = make_url(url)
    ro = u.set(database=f"file:{quote(path, safe='/:')}", query={**u.query, "mode": "ro", "uri": "true"})
    return ro.render_as_string(hide_password=False)


def _read_only_session(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    finally:
        cursor.close()


def open_read_only(url: str) -> AsyncEngine:
    """An async engine that can only read the ledger at ``url``; no connection is made yet.

    SQLite opens the file ``mode=ro`` (a missing file is an error, not a new empty
    database); PostgreSQL sessions are ``READ ONLY``. Raises ``ValueError`` for an
    unusable URL.
    """
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    from interlock.accounting.ledger import safe_url

    try:
        engine = create_async_engine(read_only_url(url))
    except Exception as exc:
        raise ValueError(f"database.url: cannot use {safe_url(url)!r}: {type(exc).__name__}: {exc}") from exc
    if engine.dialect.name == "postgresql":
        event.listen(engine.sync_engine, "connect", _read_only_session)
    return engine


class LedgerReader:
    """One lazily opened read-only engine, shared by every ``GET /spend``; closed with the app."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = open_read_only(self.url)  # creating it does no I/O, so no lock is needed
        return self._engine

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()


__all__ = [
    "DIMENSIONS", "METRICS", "LedgerHistory", "bucket_spend", "LedgerReader", "SpendReport", "alerts_json", "anomalies", "format_alerts",
    "format_report", "last_reset", "open_read_only", "parse_by", "parse_duration", "read_only_url", "scope_spend", "spend",
    "sqlite_path", "usd",
]

