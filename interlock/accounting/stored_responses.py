"""Stored Responses API responses in the ledger's database (the ``stored_responses`` table).

:class:`SqlResponseStore` is the :class:`~interlock.core.doors.stored_responses.ResponseStore`
the assembly gives the Responses door. How it keeps requests fast:

* :meth:`~SqlResponseStore.put` (on the request path) only places the record in an
  in-memory *pending* map, where :meth:`~SqlResponseStore.get` finds it at once. A
  background task writes the pending records in batches, one transaction per batch,
  every ``flush_interval`` seconds or as soon as ``batch_size`` records wait; a record
  leaves the map only after its batch committed, so at every moment it is in the map,
  in the database, or both. Nothing else is cached: a read that misses the map asks the
  database.
* The database is opened (and :func:`interlock.accounting.ledger.migrate` applied) on
  first use, not at start: a gateway that never serves a Responses request never loads
  SQLAlchemy for this.
* A database that cannot be reached fails no request: records stay pending, a warning is
  logged once, and when more than ``max_pending`` records wait the oldest are dropped and
  counted in ``dropped``. Reads and deletes that need the database answer 503
  (``response_store_unavailable``) meanwhile.

Scoping: a record belongs to the team of the key that created it; :meth:`get` and
:meth:`delete` with another team answer as if it did not exist (``team`` None is the
teamless scope: a gateway without keys, or keys without a team).

Retention: ``expires_at = created_at + retention`` (``retention`` None: kept until
deleted). Expired records are never returned; once the database is open the flush task
also deletes them, at most ``purge_batch`` rows per statement, every ``purge_interval``
seconds.

Shutdown: :meth:`close` writes everything still pending, so a graceful stop loses
nothing; a hard kill loses what was not written yet (normally under ``flush_interval``
seconds of responses).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from interlock.accounting.database import file_url
from interlock.core import jsonutil
from interlock.core.doors.stored_responses import StoredResponse
from interlock.core.errors import GatewayError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# SQLAlchemy (and interlock.accounting.ledger, which defines the table with it) is imported
# when the database is first needed, not here (see the module docstring)

log = logging.getLogger("interlock.responses")

DEFAULT_RETENTION = timedelta(days=30)
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_BATCH_SIZE = 100  # records per transaction; a record carries a whole conversation
DEFAULT_MAX_PENDING = 1000  # records kept in memory while the database is unreachable
DEFAULT_PURGE_INTERVAL = 600.0
DEFAULT_PURGE_BATCH = 1000
#: ``[responses] retention`` that keeps responses until they are deleted
FOREVER = "forever"


@dataclass(frozen=True, slots=True)
class ResponsesSettings:
    """``[responses]``: whether responses are stored, and for how long."""

    store: bool = True  # false: nothing is stored; previous_response_id and GET answer that storing is off
    retention: timedelta | None = DEFAULT_RETENTION  # None: kept until deleted ("forever")

    @classmethod
    def parse(cls, table: Any, problems: list[tuple[str, str]]) -> ResponsesSettings:
        """Validate ``[responses]`` (``store = true``, ``retention = "30d"`` or ``"forever"``), with key paths."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            problems.append(("responses", f"must be a table, not {type(table).__name__}"))
            return cls()
        for key in table:
            if key not in ("store", "retention"):
                problems.append((f"responses.{key}", "unknown key (known: retention, store)"))
        store = table.get("store", True)
        if not isinstance(store, bool):
            problems.append(("responses.store", f"must be true or false, not {store!r}"))
            store = True
        value = table.get("retention", None)
        retention: timedelta | None = DEFAULT_RETENTION
        if value == FOREVER:
            retention = None
        elif value is not None:
            from interlock.accounting.spend import parse_duration

            try:
                if not isinstance(value, str):
                    raise ValueError(value)
                retention = parse_duration(value)
            except ValueError:
                problems.append(("responses.retention", f"{value!r} is not a duration: use a number and a unit "
                                 f"(30m, 24h, 30d, 4w) or {FOREVER!r} to keep responses until they are deleted"))
        return cls(store, retention)


@dataclass(slots=True)
class _Pending:
    stored: StoredResponse
    expires_at: float | None  # unix time; None: kept until deleted


def unavailable() -> GatewayError:
    """The error a read or delete gets while the database cannot be reached (no URL, no credentials)."""
    return GatewayError(503, "stored responses cannot be read right now: their database is unreachable; retry shortly",
                        type="server_error", code="response_store_unavailable")


class SqlResponseStore:
    """Stored responses in the ``stored_responses`` table, written in batches off the request path."""

    def __init__(
        self,
        database_url: str,
        retention: timedelta | None = DEFAULT_RETENTION,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pending: int = DEFAULT_MAX_PENDING,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
        purge_batch: int = DEFAULT_PURGE_BATCH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database_url = database_url
        #: applies to records put from now on (a reload may change it)
        self.retention = retention
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.purge_interval = purge_interval
        self.purge_batch = purge_batch
        self._clock = clock  # tests move time to expire records
        #: records dropped: the pending map overflowed, or the database refused them
        self.dropped = 0
        #: consecutive failed background writes (0 again once the database answers)
        self.failed_writes = 0
        self._pending: dict[str, _Pending] = {}  # insertion order: the oldest first
        self._engine: AsyncEngine | None = None
        self._migrated = False
        self._open_lock = asyncio.Lock()  # one engine, one migration
        self._lock = asyncio.Lock()  # one write at a time: a flush, a purge or a delete
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._overflowing = False  # the pending map is full: the oldest are being dropped
        self._next_purge = 0.0  # loop time of the next purge

    @property
    def pending(self) -> int:
        """Records not written to the database yet."""
        return len(self._pending)

    # -- the ResponseStore protocol ---------------------------------------- #

    def put(self, stored: StoredResponse) -> None:
        """Keep ``stored``: visible to :meth:`get` at once, written by the flush task."""
        expires = None if self.retention is None else stored.created_at + self.retention.total_seconds()
        self._pending[stored.id] = _Pending(stored, expires)
        if len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            if not self._overflowing:
                log.warning("responses: more than %d stored responses wait for the database; dropping the oldest "
                            "until it answers (counted in dropped)", self.max_pending)
            self._overflowing = True
            self.dropped += 1
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def get(self, response_id: str, team: str | None) -> StoredResponse | None:
        """The record if it exists, has not expired and belongs to ``team``; else None."""
        now = self._clock()
        entry = self._pending.get(response_id)
        if entry is not None:  # ids are unique: a pending record is not also another team's row
            return entry.stored if _visible(entry, team, now) else None
        if self._engine is None and self._no_database_yet():
            return None
        from sqlalchemy import select

        from interlock.accounting.ledger import stored_responses as t

        try:
            engine = await self._open()
            async with engine.connect() as conn:
                row = (await conn.execute(
                    select(t.c.created_at, t.c.team, t.c.api_key_id, t.c.request_id, t.c.model, t.c.input,
                           t.c.response).where(t.c.id == response_id, *_scope(t, team, now))
                )).first()
        except Exception as exc:
            self._read_failed(exc)
            raise unavailable() from None
        if row is None:
            return None
        return StoredResponse(
            id=response_id, created_at=_unix(row.created_at), team=row.team, api_key_id=row.api_key_id,
            request_id=row.request_id or "", model=row.model or "", input=jsonutil.loads(row.input),
            response=jsonutil.loads(row.response),
        )

    async def delete(self, response_id: str, team: str | None) -> bool:
        """Delete the record (True) if it exists, has not expired and belongs to ``team``."""
        now = self._clock()
        entry = self._pending.get(response_id)
        if entry is not None:
            if not _visible(entry, team, now):
                return False
            del self._pending[response_id]
            if self._engine is not None or self._lock.locked():
                # a flush may be writing it right now (or wrote it without learning so): remove
                # the row too, after that write; the record is gone for readers already
                try:
                    await self._delete_row(response_id, team, now)
                except Exception as exc:
                    log.warning("responses: cannot delete %s from the database yet (%s: %s)",
                                response_id, type(exc).__name__, exc)
            return True
        if self._engine is None and self._no_database_yet():
            return False
        try:
            return await self._delete_row(response_id, team, now)
        except Exception as exc:
            self._read_failed(exc)
            raise unavailable() from None

    async def _delete_row(self, response_id: str, team: str | None, now: float) -> bool:
        from sqlalchemy import delete

        from interlock.accounting.ledger import stored_responses as t

        engine = await self._open()
        async with self._lock, engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.id == response_id, *_scope(t, team, now)))
        return bool(result.rowcount)

    # -- lifecycle ---------------------------------------------------------- #

    async def start(self) -> None:
        """Start the flush task; the database itself is opened when first needed."""
        if self._task is None:
            self._next_purge = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="interlock-responses-flush")

    async def close(self) -> None:
        """Stop the flush task, write everything pending, release the engine."""
        task, self._task = self._task, None
        if task is not None:
            async with self._lock:  # never cut a write: the driver's thread would outlive the loop
                task.cancel()
                await asyncio.wait([task])
        try:
            await self.flush()
        except Exception as exc:
            log.error("responses: the final write failed (%s: %s); %d stored responses are lost",
                      type(exc).__name__, exc, len(self._pending))
        finally:
            if self.dropped:
                log.warning("responses: %d stored responses were dropped in this run", self.dropped)
            engine, self._engine = self._engine, None
            self._migrated = False
            if engine is not None:
                await engine.dispose()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                if self._engine is not None and loop.time() >= self._next_purge:
                    full = await self.purge() >= self.purge_batch
                    # a full batch: more may be waiting, delete the next one on the next pass
                    self._next_purge = loop.time() + (0.0 if full else self.purge_interval)
            except Exception as exc:
                self._write_failed(exc)

    # -- writing ------------------------------------------------------------ #

    async def flush(self) -> None:
        """Write the records pending now, ``batch_size`` per transaction; raises if the database refuses.

        Records stay pending until their batch committed.
        """
        if not self._pending:
            return
        async with self._lock:
            todo = list(self._pending.values())
            for start in range(0, len(todo), self.batch_size):
                batch = [e for e in todo[start:start + self.batch_size] if self._pending.get(e.stored.id) is e]
                if batch:
                    await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        engine = await self._open()
        rows: dict[str, dict[str, Any]] = {}
        for entry in batch:
            try:
                rows[entry.stored.id] = _row(entry)
            except Exception as exc:  # e.g. a value JSON cannot encode: it could never be written
                self._refused(entry.stored.id, exc)
        try:
            await self._insert(engine, list(rows.values()))
        except Exception as exc:
            if _transient(exc):
                raise
            # the database refuses something in this batch: one by one, so only that is lost
            for response_id, row in rows.items():
                try:
                    await self._insert(engine, [row])
                except Exception as one:
                    if _transient(one):
                        raise
                    self._refused(response_id, one)
                else:
                    self._pending.pop(response_id, None)
            self._write_ok()
            return
        for response_id in rows:
            self._pending.pop(response_id, None)
        self._write_ok()

    async def _insert(self, engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` in one transaction, skipping ids already stored (a retried write)."""
        from sqlalchemy import insert, select

        from interlock.accounting.ledger import stored_responses as t

        if not rows:
            return
        async with engine.begin() as conn:
            stored = set((await conn.execute(select(t.c.id).where(t.c.id.in_([r["id"] for r in rows])))).scalars())
            new = [r for r in rows if r["id"] not in stored]
            if new:
                await conn.execute(insert(t), new)

    def _refused(self, response_id: str, exc: Exception) -> None:
        log.error("responses: the database refused stored response %s (%s: %s); dropped",
                  response_id, type(exc).__name__, exc)
        self._pending.pop(response_id, None)
        self.dropped += 1

    async def purge(self) -> int:
        """Delete up to ``purge_batch`` expired rows (one statement); returns how many went."""
        from sqlalchemy import delete, select

        from interlock.accounting.ledger import stored_responses as t

        now = datetime.fromtimestamp(self._clock(), UTC)
        engine = await self._open()
        oldest = select(t.c.id).where(t.c.expires_at <= now).order_by(t.c.expires_at).limit(self.purge_batch)
        async with self._lock, engine.begin() as conn:
            # the sub-select bounds the DELETE on every database (no DELETE ... LIMIT in PostgreSQL)
            result = await conn.execute(delete(t).where(t.c.id.in_(oldest.scalar_subquery())))
        if result.rowcount:
            log.info("responses: purged %d expired stored responses", result.rowcount)
        return int(result.rowcount or 0)

    # -- the database --------------------------------------------------------- #

    async def _open(self) -> AsyncEngine:
        from interlock.accounting import ledger

        async with self._open_lock:
            if self._engine is None:
                # the rows hold conversations: a logged database error must not quote them
                self._engine = await ledger.open_engine(self.database_url, hide_parameters=True)
            if not self._migrated:
                await ledger.migrate(self._engine)
                self._migrated = True
            return self._engine

    def _no_database_yet(self) -> bool:
        """A default-form SQLite URL whose file does not exist holds nothing: do not create it to read."""
        parsed = file_url(self.database_url)
        return parsed is not None and parsed[0] != ":memory:" and not os.path.exists(parsed[0])

    def _write_failed(self, exc: Exception) -> None:
        from interlock.accounting.ledger import safe_url

        self.failed_writes += 1
        if not self._failing:
            log.warning("responses: cannot write stored responses to %s (%s: %s); they are kept in memory "
                        "(at most %d) and the write retried every %gs", safe_url(self.database_url),
                        type(exc).__name__, exc, self.max_pending, self.flush_interval)
        self._failing = True

    def _write_ok(self) -> None:
        if self._failing:
            log.info("responses: the database answers again; stored responses are written")
        self._failing = self._overflowing = False
        self.failed_writes = 0

    def _read_failed(self, exc: Exception) -> None:
        from interlock.accounting.ledger import safe_url

        log.warning("responses: cannot read stored responses from %s (%s: %s)", safe_url(self.database_url),
                    type(exc).__name__, exc)


def _visible(entry: _Pending, team: str | None, now: float) -> bool:
    return entry.stored.team == team and (entry.expires_at is None or entry.expires_at > now)


def _scope(t: Any, team: str | None, now: float) -> list[Any]:
    """WHERE terms: the caller's team (NULL matches only NULL) and not expired."""
    from sqlalchemy import or_

    return [t.c.team.is_(None) if team is None else t.c.team == team,
            or_(t.c.expires_at.is_(None), t.c.expires_at > datetime.fromtimestamp(now, UTC))]


def _row(entry: _Pending) -> dict[str, Any]:
    s = entry.stored
    return {
        "id": s.id,
        "created_at": datetime.fromtimestamp(s.created_at, UTC),
        "expires_at": None if entry.expires_at is None else datetime.fromtimestamp(entry.expires_at, UTC),
        "team": s.team,
        "api_key_id": s.api_key_id,
        "request_id": s.request_id,
        "model": s.model,
        "input": jsonutil.dumps_str(s.input),
        "response": jsonutil.dumps_str(s.response),
    }


def _unix(value: datetime) -> float:
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _transient(exc: Exception) -> bool:
    """Whether a failed write may succeed later as it is (database down, locked, not there yet).

    The rest (an integrity or data error, a value the driver cannot bind) is the
    database refusing these rows: retrying would block every later record behind them.
    """
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError

    from interlock.accounting.database import retryable_sqlstate

    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or retryable_sqlstate(exc)):
        return True  # e.g. PostgreSQL starting up, or out of connections: not these rows' fault
    return not isinstance(exc, StatementError)


__all__ = ["DEFAULT_RETENTION", "FOREVER", "ResponsesSettings", "SqlResponseStore", "unavailable"]
