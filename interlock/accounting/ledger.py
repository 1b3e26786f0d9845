"""The SQL ledger: every routing decision as rows you query directly.

Two tables hold the ledger, one row per client request in ``requests`` and one
row per upstream attempt in ``attempts`` (join on ``attempts.request_id =
requests.id``). The same code runs on SQLite (the default,
``sqlite+aiosqlite:///interlock.db``) and PostgreSQL
(``postgresql+asyncpg://user:password@host/db``): only portable column types
are used, and lists are stored as JSON text.

Conventions, for whoever writes the queries:

* ``ts`` is the UTC time the request arrived. SQLite stores it as text,
  ``YYYY-MM-DD HH:MM:SS.ffffff``, which sorts and compares correctly and works
  with SQLite's date functions; PostgreSQL stores a ``timestamptz``.
* Durations are milliseconds as floats (``latency_ms``, ``ttft_ms``).
* Token counts use OpenAI semantics: ``input_tokens`` includes ``cached_tokens``
  and ``output_tokens`` includes ``reasoning_tokens``. They are ``NULL`` when
  the upstream reported no usage (a failed request, a provider that does not
  report it), ``0`` when it reported zero.
* ``cost_usd`` is a fixed-point ``Numeric(18, 10)`` in US dollars, from the
  price table (``NULL`` when the model has no known price or no usage was
  reported); a request's cost is the sum of its attempts' costs, failed ones
  that reported usage included. ``unreported_cost_max_usd`` is apart from it:
  the most that attempts cut off before any usage arrived may have cost.
* ``user`` is a reserved word in PostgreSQL: write ``"user"`` there.

Example (SQLite)::

    SELECT model, count(*), sum(input_tokens), sum(output_tokens), avg(latency_ms)
    FROM requests WHERE ts >= datetime('now', '-1 day') GROUP BY model;

The schema is versioned: ``schema_version`` holds one row per applied
migration, and :func:`migrate` applies the missing ones, in order, at startup.
Applying them twice is a no-op, so every process may call it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from interlock.accounting.database import SQLITE_BUSY_TIMEOUT, use_wal

log = logging.getLogger("interlock.ledger")

#: longest stored ``error_message`` / ``error`` text, in characters
MAX_ERROR_CHARS = 1000

# --------------------------------------------------------------------------- #
# The schema
# --------------------------------------------------------------------------- #


def _v1_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The ``requests`` and ``attempts`` tables exactly as migration 1 creates them.

    Migration 1 must keep creating exactly this schema forever. When a later
    migration changes a table, define the current tables separately below and
    leave this function alone.
    """
    requests = Table(
        "requests",
        metadata,
        # the request id: the client's x-request-id when it sent a valid one, else req_<hex>.
        # Also returned to the client in the x-request-id response header.
        Column("id", String, primary_key=True),
        # UTC time the request arrived at the gateway
        Column("ts", DateTime(timezone=True), nullable=False),
        # "chat" or "embeddings"
        Column("endpoint", String, nullable=False),
        # attribution: the gateway API key's id and its team, once gateway keys exist (else NULL)
        Column("api_key_id", String),
        Column("team", String),
        # the x-interlock-tags header as a JSON list of strings, e.g. '["a","b"]'; '[]' when none
        Column("tags", Text, nullable=False),
        # the OpenAI "user" field of the request body, when it was a string
        Column("user", String),
        # the configured route that served the request; NULL for a bare or instance/model name
        Column("route", String),
        # the "model" the client asked for, verbatim
        Column("requested_model", String, nullable=False),
        # the strategy that ordered the targets ("ordered", "weighted", ...); NULL if routing never ran
        Column("strategy", String),
        # the provider instance and model that answered; NULL when none did
        Column("provider", String),
        Column("model", String),
        # the HTTP status the client got (499: the client disconnected during a stream)
        Column("status", Integer, nullable=False),
        # whether the client asked for a stream
        Column("stream", Boolean, nullable=False),
        # how many upstream attempts were made (rows in ``attempts``); 0 if none was possible
        Column("attempts", Integer, nullable=False),
        # true when the answer came from a target other than the first one tried
        Column("fallback_used", Boolean, nullable=False),
        # milliseconds from the request's arrival to the end of the response
        Column("latency_ms", Float, nullable=False),
        # streams: milliseconds until the first content was sent to the client; NULL otherwise
        Column("ttft_ms", Float),
        # the answering attempt's usage (see the module docstring); NULL when unknown
        Column("input_tokens", Integer),
        Column("cached_tokens", Integer),
        Column("output_tokens", Integer),
        Column("reasoning_tokens", Integer),
        # US dollars; NULL until pricing is implemented
        Column("cost_usd", Numeric(18, 10)),
        # on failure: a short machine-readable kind (a failure class such as "server_error",
        # or a gateway code such as "model_not_found") and the message the client got,
        # cut to MAX_ERROR_CHARS; NULL on success
        Column("error_type", String),
        Column("error_message", Text),
        Index("ix_requests_ts", "ts"),
        Index("ix_requests_team_ts", "team", "ts"),
        Index("ix_requests_model_ts", "model", "ts"),
    )
    attempts = Table(
        "attempts",
        metadata,
        # requests.id of the request this attempt belongs to (not a declared foreign key, so
        # the ledger can be pruned table by table)
        Column("request_id", String, nullable=False),
        # 1, 2, ... in the order the attempts were made
        Column("n", Integer, nullable=False),
        # the provider instance ([providers.NAME]), its type (plugin) and the model sent upstream
        Column("provider", String, nullable=False),
        Column("provider_type", String, nullable=False),
        Column("model", String, nullable=False),
        # "ok", or the failure class: rate_limited, overloaded, server_error, timeout, connection,
        # stream_error, auth, bad_request, context_length, content_policy, not_found, quota, unknown
        Column("outcome", String, nullable=False),
        # after a failure, what the router did next: "retry", "fallback" or "fail"; NULL on success
        Column("action", String),
        # the upstream HTTP status of a failed attempt; NULL on success and for failures
        # without one (timeouts, connection errors)
        Column("status", Integer),
        # milliseconds the attempt took; for a stream, until the stream ended
        Column("latency_ms", Float, nullable=False),
        # streams: milliseconds from the attempt's start to its first content; NULL otherwise
        Column("ttft_ms", Float),
        # the usage this attempt reported; NULL when unknown
        Column("input_tokens", Integer),
        Column("cached_tokens", Integer),
        Column("output_tokens", Integer),
        Column("reasoning_tokens", Integer),
        # US dollars; NULL until pricing is implemented
        Column("cost_usd", Numeric(18, 10)),
        # the failure's message, cut to MAX_ERROR_CHARS; NULL on success
        Column("error", Text),
        # the upstream's response id (chatcmpl-...), when it sent one
        Column("response_id", String),
        PrimaryKeyConstraint("request_id", "n", name="pk_attempts"),
    )
    return requests, attempts


metadata = MetaData()

#: one row per applied migration
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),  # 1, 2, ...
    Column("applied_at", DateTime(timezone=True), nullable=False),  # UTC
)

def _v2_columns() -> tuple[list[Column[Any]], list[Column[Any]]]:
    """Columns migration 2 adds to ``requests`` and ``attempts`` (fresh objects per call)."""
    return (
        [
            # US dollars the request cost (the answer and its failed attempts' known cost; rows
            # written before migration 6 count the answer only) minus what the answer's usage
            # would have cost on the first-choice target: negative when the fallback saved money,
            # positive when it cost more; NULL when no fallback happened or a price is unknown
            Column("cost_delta_usd", Numeric(18, 10)),
            Column("rule", Text),  # the routing rule that changed the route, with its reason
            Column("hedged", Boolean),  # a hedge attempt was started
            Column("events", Text),  # JSON list: retries, fallbacks, hedges, breaker transitions
        ],
        [
            Column("hedge", Boolean),  # this attempt was started as a hedge
            Column("start_ms", Float),  # when the attempt started, from the request's arrival
        ],
    )


def _v2_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Tables migration 2 creates: gateway API keys and alerts."""
    api_keys = Table(
        "api_keys",
        metadata,
        Column("id", String, primary_key=True),  # "key_<hex>", shown in requests.api_key_id
        Column("name", String),  # a label for humans
        # sha256 hex of the key: the key itself is never stored (keys are random and long, so a
        # fast hash is the right tool, as for bearer tokens generally)
        Column("key_hash", String, nullable=False, unique=True),
        Column("prefix", String, nullable=False),  # the key's first characters, to recognise it
        Column("team", String),
        Column("tags", Text),  # JSON list of default tags for the key's requests
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True)),  # NULL while the key is valid
    )
    alerts = Table(
        "alerts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("kind", String, nullable=False),  # budget_soft, budget_hard, anomaly
        Column("scope", String, nullable=False),  # e.g. "team:search", "model:gpt-4o", "key:key_12ab"
        Column("message", Text, nullable=False),
        Column("value_usd", Numeric(18, 10)),  # the spend that triggered it
        Column("threshold_usd", Numeric(18, 10)),  # the budget or the baseline it departed from
        Column("details", Text),  # JSON object
        Index("ix_alerts_ts", "ts"),
    )
    return api_keys, alerts


def _v3_columns() -> list[Column[Any]]:
    """Columns migration 3 adds to ``requests`` (fresh objects per call)."""
    return [
        # the protocol the client spoke: "chat_completions" (also embeddings), "responses" (the
        # OpenAI Responses API) or "messages" (the Anthropic Messages API); NULL on rows written
        # before migration 3, which were all chat_completions
        Column("protocol", String),
    ]


def _v3_tables(metadata: MetaData) -> tuple[Table]:
    """Tables migration 3 creates: stored Responses API responses (``store``, ``previous_response_id``)."""
    stored = Table(
        "stored_responses",
        metadata,
        Column("id", String, primary_key=True),  # "resp_<hex>": the id the client chains with
        Column("created_at", DateTime(timezone=True), nullable=False),  # UTC
        # removed after this time (the [responses] retention); NULL: kept until deleted
        Column("expires_at", DateTime(timezone=True)),
        # the team and key that created it: only the same team may read, chain or delete it
        Column("team", String),
        Column("api_key_id", String),
        Column("request_id", String),  # requests.id of the request that produced it
        Column("model", String),  # the model the client asked for
        # JSON list of Responses input items: the whole conversation up to this turn (previous
        # turns included), so a chain is rebuilt from one row on any upstream
        Column("input", Text, nullable=False),
        Column("response", Text, nullable=False),  # JSON: the response object the client received
        Index("ix_stored_responses_expires_at", "expires_at"),
    )
    return (stored,)


def _v4_columns() -> list[Column[Any]]:
    """Columns migration 4 adds to ``api_keys`` (fresh objects per call): rate limits, allowlist, expiry."""
    return [
        # requests per minute, tokens (prompt + completion) per minute, requests in flight;
        # NULL: not limited (see interlock.accounting.rate_limits)
        Column("rpm", Integer),
        Column("tpm", Integer),
        Column("max_concurrent", Integer),
        # JSON list of the model or route names (``*`` patterns) the key may ask for; NULL: any
        Column("models", Text),
        # UTC time after which the key is refused; NULL: never expires
        Column("expires_at", DateTime(timezone=True)),
    ]


def _v5_columns() -> list[Column[Any]]:
    """Columns migration 5 adds to ``requests`` (fresh objects per call)."""
    return [
        # NULL when the row is stored as recorded; otherwise the names of the fields whose values
        # could not be stored as given and were replaced (comma-separated, e.g. "tags,user": text
        # that was not valid UTF-8, a value the database refused), so a hostile or broken value
        # never costs the request its row. "*": only the request's identity, status, usage and
        # cost could be kept.
        Column("invalid_fields", Text),
    ]


def _v6_columns() -> tuple[list[Column[Any]], list[Column[Any]]]:
    """Columns migration 6 adds to ``requests`` and ``attempts`` (fresh objects per call).

    The same two on both tables; on ``requests`` each is the answer's (cache writes) or the
    sum over the request's attempts (the unreported cost).
    """

    def columns() -> list[Column[Any]]:
        return [
            # prompt tokens written to the provider's prompt cache (part of input_tokens, priced at
            # the cache-write rate); NULL when no usage was reported, and on rows written before
            # migration 6
            Column("cache_write_tokens", Integer),
            # US dollars: the most an upstream may have billed for an attempt that was cancelled or
            # cut off before it reported any usage (a latency threshold or timeout, a lost hedge,
            # the client gone, a stream broken before its usage): the request's prompt estimate at
            # the target's input price. Not in cost_usd, which is what was reported; NULL when no
            # such attempt was made or its model has no price
            Column("unreported_cost_max_usd", Numeric(18, 10)),
        ]

    return columns(), columns()


#: the current schema (see :func:`_v1_tables`, :func:`_v2_columns`, :func:`_v3_columns`,
#: :func:`_v4_columns`, :func:`_v5_columns` and :func:`_v6_columns` for the column documentation)
requests, attempts = _v1_tables(metadata)
for _table, _columns in zip((requests, attempts), _v2_columns(), strict=True):
    for _column in _columns:
        _table.append_column(_column)
for _column in (*_v3_columns(), *_v5_columns()):
    requests.append_column(_column)
for _table, _columns in zip((requests, attempts), _v6_columns(), strict=True):
    for _column in _columns:
        _table.append_column(_column)
api_keys, alerts = _v2_tables(metadata)
(stored_responses,) = _v3_tables(metadata)
for _column in _v4_columns():
    api_keys.append_column(_column)


# --------------------------------------------------------------------------- #
# Migrations
# --------------------------------------------------------------------------- #


def _add_columns(conn: Connection, table: str, columns: list[Column[Any]]) -> None:
    """``ALTER TABLE table ADD COLUMN`` for each of ``columns`` it does not have yet."""
    preparer = conn.dialect.identifier_preparer
    existing = {c["name"] for c in inspect(conn).get_columns(table)}
    for column in columns:
        if column.name in existing:
            continue  # a half-applied run on non-transactional DDL
        ddl = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column.name)} {ddl}"))


def _migration_1(conn: Connection) -> None:
    """Create ``requests`` and ``attempts`` with their indexes."""
    for table in _v1_tables(MetaData()):
        table.create(conn, checkfirst=True)  # tolerate a half-applied run on non-transactional DDL


def _migration_2(conn: Connection) -> None:
    """Cost delta and decision details on requests and attempts; api_keys and alerts tables."""
    for table, columns in zip(("requests", "attempts"), _v2_columns(), strict=True):
        _add_columns(conn, table, columns)
    for new_table in _v2_tables(MetaData()):
        new_table.create(conn, checkfirst=True)


def _migration_3(conn: Connection) -> None:
    """The client's protocol on requests; the stored_responses table."""
    _add_columns(conn, "requests", _v3_columns())
    for new_table in _v3_tables(MetaData()):
        new_table.create(conn, checkfirst=True)


def _migration_4(conn: Connection) -> None:
    """Rate limits, model allowlist and expiry of stored API keys."""
    _add_columns(conn, "api_keys", _v4_columns())


def _migration_5(conn: Connection) -> None:
    """Which fields of a request's row had to be replaced to store it."""
    _add_columns(conn, "requests", _v5_columns())


def _migration_6(conn: Connection) -> None:
    """Cache-write tokens and the unreported cost of cut-off attempts on requests and attempts."""
    for table, columns in zip(("requests", "attempts"), _v6_columns(), strict=True):
        _add_columns(conn, table, columns)


#: ordered: MIGRATIONS[i] brings the schema from version i to version i + 1. Append only.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5, _migration_6,
)

#: the schema version this code writes
SCHEMA_VERSION = len(MIGRATIONS)


def _migrate(conn: Connection) -> int:
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"the ledger database is at schema version {current}, newer than this interlock's "
            f"{SCHEMA_VERSION}; upgrade interlock"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](conn)
        # version is the primary key: two processes migrating at once cannot both record it
        conn.execute(insert(schema_version).values(version=version, applied_at=datetime.now(UTC)))
        log.info("ledger: applied schema migration %d", version)
    return SCHEMA_VERSION


def sqlite_path_problem(url: Any) -> str | None:
    """Why a SQLite database file cannot be opened, found without opening it (None: it can, or not SQLite).

    aiosqlite reports a failed connect from its worker thread, which can then
    outlive the event loop that waited for it; a path that is a directory, or
    whose directory is missing, is caught here instead.
    """
    from interlock.accounting.database import file_problem

    url = make_url(str(url)) if not hasattr(url, "get_backend_name") else url
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return file_problem(db)


async def migrate(engine: AsyncEngine) -> int:
    """Apply every missing migration in one transaction; returns the schema version.

    Idempotent: on an up-to-date database it only reads ``schema_version``.
    """
    if problem := sqlite_path_problem(engine.url):
        raise OSError(f"cannot open the SQLite database: {problem}")
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            return await conn.run_sync(_migrate_sqlite)
    async with engine.begin() as conn:
        return await conn.run_sync(_migrate)


def _migrate_sqlite(conn: Connection) -> int:
    """:func:`_migrate` holding SQLite's write lock from the first read of ``schema_version`` to the commit.

    Python's sqlite3 runs DDL outside any transaction unless one was begun
    explicitly, so without this several processes migrating a new file at once
    (``serve --workers N``) each find it empty and collide ("table ... already
    exists", a duplicate ``schema_version``). ``BEGIN IMMEDIATE`` takes the
    write lock first (waiting up to the connection's busy timeout for another
    process's migration or write); whoever comes second finds the schema
    current and changes nothing.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        version = _migrate(conn)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return version


# --------------------------------------------------------------------------- #
# Engine
# --------------------------------------------------------------------------- #


def safe_url(url: str) -> str:
    """``url`` with any password masked, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database url>"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets readers (your queries) run while the gateway writes; NORMAL is durable
    # across application crashes and loses at most the last commits on power loss.
    cursor = dbapi_connection.cursor()
    try:
        use_wal(cursor.execute)  # retried: another process may be migrating a new file
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


async def open_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url``; no connection is made yet.

    Raises ``ValueError`` naming ``database.url`` when the URL cannot work at all
    (unparseable, unknown dialect, a synchronous or missing driver).
    """
    try:
        if make_url(url).get_backend_name() == "sqlite" and "timeout" not in make_url(url).query:
            # several processes may write one file (serve --workers): wait for their write lock
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT, **kwargs.get("connect_args", {})}
        engine = create_async_engine(url, **kwargs)
    except Exception as exc:
        raise ValueError(
            f"database.url: cannot use {safe_url(url)!r}: {type(exc).__name__}: {exc} "
            "(use an async driver, e.g. sqlite+aiosqlite:///interlock.db or postgresql+asyncpg://...)"
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine
