"""``ledger``: every routing decision as SQL rows (see :mod:`interlock.accounting.ledger` for the schema).

Enabled by default; it writes to ``[database] url`` (SQLite ``interlock.db`` in
the working directory unless configured; a PostgreSQL URL such as
``postgresql+asyncpg://user:password@host/db`` works the same)::

    [exporters.ledger]
    enabled = true          # false: write nothing
    flush_interval = 1.0    # seconds between writes
    batch_size = 500        # rows buffered that trigger a write before the interval is up
    max_buffer = 100000     # rows kept in memory while the database is unreachable; the oldest go first
    journal = "DIR"         # the journal's directory; false: no journal (default: next to a
                            # SQLite file, "<file>.journal"; else "interlock-ledger.journal")

How it writes: ``record`` (on the request path) only turns the decision into
row tuples and appends them to an in-memory buffer. A background task writes
the whole buffer in one transaction every ``flush_interval`` seconds, or as
soon as ``batch_size`` rows are waiting. On SQLite the tuples already hold
the values as SQLAlchemy's SQLite dialect would store them (timestamps as
``YYYY-MM-DD HH:MM:SS.ffffff`` text, decimals as floats, booleans as 0/1) and
go to the standard library's ``sqlite3`` ``executemany`` as they are, on a
low-priority writer thread (see :class:`_SQLiteWriter`), with INSERTs compiled once from the table definitions:
no statement compilation and no per-row bind processing runs on the event loop,
and the serving process never imports SQLAlchemy or aiosqlite (~20 MB). The
schema migration and the compilation of the INSERTs still go through
SQLAlchemy: in the process when it is already imported (tests, an application
embedding the gateway), else in a short-lived child process
(``python -m interlock.plugins.exporters.ledger migrate-json URL``) at start. Other
databases (PostgreSQL) get the same values through SQLAlchemy Core inserts. If a write fails (database down,
locked, file not writable yet) the rows stay buffered and the write is retried
every ``flush_interval``; requests are never failed or slowed by the ledger.
Beyond ``max_buffer`` rows the oldest rows are dropped, counted in
``dropped`` and logged. Writes are idempotent (a row whose request id is
already stored is skipped), so a retried write never duplicates rows; note
that this also means a client reusing an ``x-request-id`` keeps only its
first request in the ledger.

The journal (:mod:`interlock.plugins.exporters.ledger_journal`): ``record`` also
appends the request's rows to a local append-only file, one ``write`` to the OS
per request and before the answer leaves, and a gateway that starts replays
what a process that died left there. What can be lost:

* graceful shutdown (SIGINT, SIGTERM): nothing; the exporter's ``close``
  writes everything still buffered before the process exits; if the database
  is unreachable then, the rows stay in the journal and the next start writes them;
* a process crash (SIGKILL, the OOM killer, a segfault): nothing; the next start
  on the same journal directory writes the rows the database lacks;
* a power loss: what the journal had not synced, at most about one
  ``flush_interval`` of requests (it is synced after every write attempt), and
  on SQLite (``synchronous=NORMAL`` in WAL mode) the last committed writes;
* without a journal (``journal = false``, or a directory it cannot write, which
  is logged): what was not written yet, at most the last ``flush_interval``
  seconds of requests; while the database is unreachable, everything buffered.

A row is never dropped for its content: a value that cannot be stored as given
(text that is not valid UTF-8, a value the database refuses) is replaced and the
row stored with the replaced fields named in ``invalid_fields``.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import dataclasses
import json
import logging
import math
import os
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from interlock import hookimpl
from interlock.core import jsonutil
from interlock.core.exporter import Exporter
from interlock.accounting.database import (
    DEFAULT_DATABASE_URL,
    SQLITE_BUSY_TIMEOUT,
    file_problem,
    file_url,
    retryable_sqlstate,
    use_wal,
)
from interlock.core.threads import background_thread, idle_thread
from interlock.core.types import Alert, Attempt, Decision
from interlock.plugins.exporters.ledger_journal import Journal

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncEngine

# nothing here imports SQLAlchemy (or :mod:`interlock.accounting.ledger`, which does) at module level:
# a gateway on the default SQLite ledger never loads it (see the module docstring)

#: longest stored ``error_message`` / ``error`` text, in characters (``interlock.accounting.ledger.MAX_ERROR_CHARS``;
#: tests/plugins/test_ledger_rows.py checks they agree)
MAX_ERROR_CHARS = 1000

log = logging.getLogger("interlock.ledger")

DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_BATCH_SIZE = 500
DEFAULT_MAX_BUFFER = 100_000

#: SQLite: rows per executemany. The driver's thread binds and inserts a chunk in one go, and
#: while it does the event loop waits for the GIL (and, on one core, for the CPU): a whole
#: 1,000-row batch kept it waiting ~3-5 ms, 64 rows keep each wait well under a millisecond and
#: the loop runs between chunks. One transaction either way.
_SQLITE_CHUNK_ROWS = 64
_SQLITE_MAX_PIECES = 8  # per table and flush: under saturation each piece waits a full loop turn
# SQLite: an idle-priority write hands the rest of its batch over once this many batch_size's of
# rows are waiting behind it
_IDLE_MAX_ROWS = 2
_IDLE_BACKOFF = 5.0  # seconds of normal-priority writes after the idle thread was found starved

_Row = tuple[Any, ...]  # one row's values, in the order of its table's columns (see _REQUEST_COLUMNS)
_Entry = tuple[_Row, list[_Row]]  # (requests row, attempts rows) of one decision


class LedgerExporter(Exporter):
    """Buffers decisions as rows and writes them in batches from a background task.

    Nothing touches the database before :meth:`start`, so building a gateway
    (``interlock check``, ``interlock plugins``) opens no file or connection.
    """

    name = "ledger"

    def __init__(
        self,
        url: str = DEFAULT_DATABASE_URL,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        journal: str | bool = True,
    ) -> None:
        opts = parse_options(
            {"flush_interval": flush_interval, "batch_size": batch_size, "max_buffer": max_buffer, "journal": journal}
        )
        self.url = url
        #: the journal's directory (None: no journal)
        self.journal_dir: str | None = journal_directory(url, opts["journal"])
        self._journal: Journal | None = None
        self._journal_failed = False  # the directory could not be opened: retried on every flush
        #: requests replayed from the journal at start (rows a previous process had not written)
        self.replayed = 0
        #: rows stored with replaced values (see invalid_fields)
        self.salvaged = 0
        self.flush_interval: float = opts["flush_interval"]
        self.batch_size: int = opts["batch_size"]
        self.max_buffer: int = opts["max_buffer"]
        #: rows dropped so far: buffer overflow while the database was unreachable and no journal
        #: keeps them, or rows the database refused even with replaced values (see :meth:`_write_one_by_one`)
        self.dropped = 0
        #: rows that left the memory buffer (``max_buffer``) but stay in the journal for the next start
        self.spilled = 0
        self._spilled_logged = 0
        self._buffer: deque[_Entry] = deque()
        self._alerts: list[dict[str, Any]] = []  # ``alerts`` rows, written with the next flush
        self._rows = 0  # rows in _buffer
        self._engine: AsyncEngine | None = None
        self._migrated = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # close() has taken over: the flush loop must stop
        self._lock = asyncio.Lock()  # one flush at a time (the loop, an explicit flush, close)
        self._wake = asyncio.Event()
        self._failures = 0  # consecutive failed background flushes
        self._dropped_logged = 0
        self._inserts: tuple[Any, Any] | None = None
        self._insert_alerts: Any = None
        # rows are built in the form the database stores (SQLite) or SQLAlchemy takes (others)
        self._sqlite = _is_sqlite(url)
        self._row_values = _SQLITE_ROWS if self._sqlite else _GENERIC_ROWS
        self._form = _SQLITE_FORM if self._sqlite else _GENERIC_FORM  # the converters those builders use
        self._sql: tuple[str, str] | None = None  # SQLite: the driver-level INSERTs, compiled at start
        self._alerts_sql: str | None = None  # SQLite: the driver-level INSERT of an alerts row
        self._writer: _SQLiteWriter | None = None  # SQLite: the sqlite3 connection and its thread
        self._schema_target = 0  # SQLite: the schema version the migrations bring the file to
        self._hurry = threading.Event()  # SQLite: the idle-priority write should hand over (a backlog)
        self._idle_writing = False
        self._idle_until = 0.0  # loop time until which batches skip the idle thread (it was starved)

    @property
    def buffered(self) -> int:
        """Rows waiting to be written."""
        return self._rows

    # -- the request path: no I/O ----------------------------------------- #

    def record(self, decision: Decision) -> None:
        request_values, attempt_values = self._row_values
        journal = self._journal
        try:
            request_id = decision.request_id
            entry = (request_values(decision), [attempt_values(request_id, a) for a in decision.attempts])
            if journal is not None:
                journal.append(_journal_line(entry))
        except Exception:  # a value that cannot be stored as given must not cost the request its row
            entry = self._salvaged(decision)
        self._buffer.append(entry)
        self._rows += 1 + len(entry[1])
        if self._rows > self.max_buffer:
            self._trim()
        if self._rows >= self.batch_size:
            self._wake.set()
            if self._idle_writing and self._rows >= _IDLE_MAX_ROWS * self.batch_size:
                self._hurry.set()

    @hookimpl
    def alert(self, alert: Alert) -> None:
        """Buffer an alert as an ``alerts`` row (``interlock costs --anomalies`` lists them)."""
        try:
            self._alerts.append(alert_row(alert))
        except Exception:
            log.exception("ledger: cannot convert an alert; dropped")
            return
        if len(self._alerts) > self.max_buffer:
            del self._alerts[0]
            self.dropped += 1
        self._wake.set()

    def _salvaged(self, decision: Decision) -> _Entry:
        """The decision's rows with every value that cannot be stored replaced, named in ``invalid_fields``.

        Text that is not valid UTF-8 (a header's raw bytes) gets U+FFFD for what cannot be
        decoded, a number that is not finite becomes NULL. If the rows still cannot be built,
        only what accounting needs is kept (identity, status, usage, cost) and
        ``invalid_fields`` is ``*``. Journaled like any row.
        """
        request_values, attempt_values = self._row_values
        clean, fields = _scrubbed(decision)
        try:
            entry: _Entry = (request_values(clean), [attempt_values(clean.request_id, a) for a in clean.attempts])
            flag = ",".join(fields) or "unknown"
        except Exception:
            entry, flag = (self._essential_row(decision), []), "*"
        entry = (_flagged(entry[0], flag), entry[1])
        self.salvaged += 1
        log.warning("ledger: request %s is stored with replaced values (invalid_fields: %s)", entry[0][0], flag)
        if self._journal is not None:
            try:
                self._journal.append(_journal_line(entry))
            except Exception:
                log.exception("ledger: request %s cannot be journaled; it is kept in memory", entry[0][0])
        return entry

    def _essential_row(self, d: Decision) -> _Row:
        """A ``requests`` row with what accounting needs, each value got on its own (see :meth:`_salvaged`)."""
        timestamp, number, flag = self._form
        usage = _or_default(lambda: d.usage, None)
        values: dict[str, Any] = dict.fromkeys(_REQUEST_COLUMNS)
        values.update(
            id=_scrub(_or_default(lambda: str(d.request_id), "")) or f"req_unknown_{id(d):x}",
            ts=timestamp(_or_default(lambda: float(d.ts), None) or _now()),
            endpoint=_scrub(_or_default(lambda: str(d.endpoint), "unknown")),
            tags="[]",
            requested_model=_scrub(_or_default(lambda: str(d.requested_model), "")),
            provider=_or_default(lambda: _scrub(str(d.provider)) if d.provider is not None else None, None),
            model=_or_default(lambda: _scrub(str(d.model)) if d.model is not None else None, None),
            status=_or_default(lambda: int(d.status), 0),
            stream=flag(_or_default(lambda: bool(d.stream), False)),
            attempts=_or_default(lambda: len(d.attempts), 0),
            fallback_used=flag(False),
            latency_ms=number(_or_default(lambda: float(d.latency_ms), 0.0)),
            input_tokens=_or_default(lambda: int(usage.prompt_tokens), None),
            cached_tokens=_or_default(lambda: int(usage.cached_tokens), None),
            output_tokens=_or_default(lambda: int(usage.completion_tokens), None),
            reasoning_tokens=_or_default(lambda: int(usage.reasoning_tokens), None),
            cache_write_tokens=_or_default(lambda: int(usage.cache_write_tokens), None),
            cost_usd=number(_or_default(lambda: _finite_decimal(d.cost_usd), None)),
            unreported_cost_max_usd=number(_or_default(lambda: _finite_decimal(d.unreported_cost_max_usd), None)),
            api_key_id=_or_default(lambda: _scrub(str(d.api_key_id)) if d.api_key_id is not None else None, None),
            team=_or_default(lambda: _scrub(str(d.team)) if d.team is not None else None, None),
            protocol=_or_default(lambda: _scrub(str(d.protocol)), None),
        )
        return tuple(values[c] for c in _REQUEST_COLUMNS)

    def _trim(self) -> None:
        """Drop the oldest decisions until the buffer fits ``max_buffer`` (the journal keeps them)."""
        if self._rows <= self.max_buffer:
            return
        left = 0
        while self._rows > self.max_buffer and self._buffer:
            _, atts = self._buffer.popleft()
            n = 1 + len(atts)
            self._rows -= n
            left += n
        if self._journal is not None:
            self._journal.keep()  # their rows stay on disk for the next start
            self.spilled += left
        else:
            self.dropped += left

    # -- lifecycle -------------------------------------------------------- #

    @property
    def _started(self) -> bool:
        return self._engine is not None or self._writer is not None

    async def start(self) -> None:
        """Open the engine (or, on SQLite, the writer), apply migrations and start the flush loop.

        A database that cannot be reached or written yet is not fatal: requests
        are served, rows are kept, and the migration is retried on every flush.
        An unusable URL (unknown dialect, missing or synchronous driver) is.
        """
        if self._started:
            return
        self._closing = False
        if self._sqlite:
            try:
                prepared, error = await _prepare_sqlite(self.url)
            except _MigrationFailed as failed:  # the child could not even report: nothing to write with
                raise failed.error from None
            self._use(prepared)
        else:
            from sqlalchemy import insert

            from interlock.accounting import ledger

            self._engine = await ledger.open_engine(self.url)
            dialect = self._engine.dialect.name
            self._inserts = (_insert(ledger.requests, dialect), _insert(ledger.attempts, dialect))
            self._insert_alerts = insert(ledger.alerts)
            try:
                await ledger.migrate(self._engine)
                error = None
            except Exception as exc:
                error = exc
        if error is None:
            self._migrated = True
        else:
            log.warning(
                "ledger: cannot prepare the database %s yet (%s: %s); requests are served, their rows kept "
                "in memory and the write retried every %gs",
                _safe_url(self.url), type(error).__name__, error, self.flush_interval,
            )
        await self._open_journal()
        self._task = asyncio.create_task(self._run(), name="interlock-ledger-flush")

    async def _open_journal(self) -> None:
        """Open the journal and queue what processes that are gone left in it (see ledger_journal).

        A directory that cannot be created yet (its parent is missing, like a SQLite file's
        directory that does not exist yet) is retried on every flush; the first failure is logged.
        """
        directory = self.journal_dir
        if directory is None or self._journal is not None:
            return
        journal = Journal(directory, self.url)
        try:
            lines = await asyncio.to_thread(journal.open)
        except OSError as exc:
            if not self._journal_failed:
                log.error(
                    "ledger: cannot open the journal directory %s (%s); until it can, rows not yet written "
                    "are lost if the process dies (set [exporters.ledger] journal to a writable directory)",
                    directory, exc,
                )
            self._journal_failed = True
            return
        if self._journal_failed:
            log.warning("ledger: the journal directory %s is open now", directory)
        self._journal_failed = False
        self._journal = journal
        if not lines:
            return
        replayed = 0
        for line in lines:
            try:
                entry = self._replayed_entry(line)
            except Exception as exc:
                log.error("ledger: a journal row cannot be read back (%s: %s); skipped", type(exc).__name__, exc)
                continue
            self._buffer.append(entry)
            self._rows += 1 + len(entry[1])
            replayed += 1
        self.replayed += replayed
        self._trim()
        log.warning(
            "ledger: %d requests recorded by a process that stopped before writing them are written now "
            "(journal %s)", replayed, directory,
        )
        self._wake.set()

    def _replayed_entry(self, line: bytes) -> _Entry:
        """A journal line back as the entry :meth:`record` built (see :func:`_journal_line`)."""
        request, attempts = jsonutil.loads(line)
        request, attempts = _widened(request, attempts)
        if len(request) != len(_REQUEST_COLUMNS) or any(len(a) != len(_ATTEMPT_COLUMNS) for a in attempts):
            raise ValueError("the row does not have this schema's columns")
        if self._sqlite:  # JSON-native already: text timestamps, floats, 0/1
            return tuple(request), [tuple(a) for a in attempts]
        # the generic form: timestamps were written as ISO text, Numeric values as decimal text
        request[_REQUEST_TS] = datetime.fromisoformat(request[_REQUEST_TS])
        for i in _REQUEST_DECIMALS:
            request[i] = None if request[i] is None else Decimal(request[i])
        rows = []
        for a in attempts:
            for i in _ATTEMPT_DECIMALS:
                a[i] = None if a[i] is None else Decimal(a[i])
            rows.append(tuple(a))
        return tuple(request), rows

    def _use(self, prepared: Mapping[str, Any]) -> None:
        """Take the SQLite INSERTs and connection arguments :func:`_prepare_sqlite` produced."""
        self._sql = (prepared["requests_sql"], prepared["attempts_sql"])
        self._alerts_sql = prepared["alerts_sql"]
        self._schema_target = prepared["schema_version"]
        if self._writer is None:
            args, kwargs = prepared["connect"]
            self._writer = _SQLiteWriter(list(args), dict(kwargs))

    async def close(self) -> None:
        """Stop the flush loop, write everything still buffered, release the engine (or the writer)."""
        task, self._task = self._task, None
        if task is not None:
            async with self._lock:  # let a flush in progress finish rather than cut it
                self._closing = True  # stops the loop even if the cancellation were lost
                task.cancel()
                # wait() neither raises the task's CancelledError nor swallows our own cancellation;
                # (checking current_task().cancelling() would be wrong here: aiohttp runs cleanup
                # inside its main task after cancelling it, and the final flush must still happen)
                await asyncio.wait([task])
        if not self._started:
            return
        try:
            await self.flush()
        except Exception as exc:
            log.error(
                "ledger: the final write to %s failed (%s: %s); %d rows %s",
                _safe_url(self.url), type(exc).__name__, exc, self._rows,
                "stay in the journal for the next start" if self._journal is not None else "are lost",
            )
        finally:
            self._log_dropped()
            journal, self._journal = self._journal, None
            if journal is not None:
                journal.close(drained=not self._buffer)  # rows not written stay for the next start
            engine, self._engine = self._engine, None
            writer, self._writer = self._writer, None
            self._migrated = False
            if writer is not None:
                await writer.close()
            if engine is not None:
                await engine.dispose()

    # -- writing ---------------------------------------------------------- #

    async def flush(self) -> None:
        """Write every buffered row in one transaction; raises if the database refuses.

        On failure the rows stay buffered (bounded by ``max_buffer``) for the next try.
        Before :meth:`start` there is nowhere to write and this does nothing.
        """
        if not self._started:
            return
        async with self._lock:
            if not self._buffer and not self._alerts:
                return
            if not self._migrated:
                await self._migrate()
                self._migrated = True
            batch, self._buffer, self._rows = self._buffer, deque(), 0
            alerts, self._alerts = self._alerts, []
            journal = self._journal
            if journal is not None:
                journal.seal()  # the batch's rows are in sealed segments; new rows go to a new one
            try:
                try:
                    await self._write(batch, alerts)
                    batch.clear()
                    alerts = []
                except Exception as exc:
                    if _transient(exc):
                        raise
                    # the database rejects something in the batch: isolate it so the rest is kept
                    if alerts:
                        try:
                            await self._write([], alerts)
                        except Exception as alert_exc:
                            if _transient(alert_exc):
                                raise
                            self.dropped += len(alerts)
                            log.error("ledger: the database rejected %d alert rows (%s)", len(alerts), alert_exc)
                        alerts = []
                    await self._write_one_by_one(batch)
                if journal is not None and journal is self._journal:
                    journal.committed()  # every sealed row is in the database (or was refused, and counted)
            finally:
                if alerts:  # unwritten alerts go back ahead of newer ones
                    self._alerts = alerts + self._alerts
                    self._migrated = False
                if batch:  # unwritten rows go back, oldest first, ahead of what arrived meanwhile
                    batch.extend(self._buffer)
                    self._buffer = batch
                    self._rows = sum(1 + len(atts) for _, atts in batch)
                    self._trim()
                    self._migrated = False  # re-check the schema on the next try (cheap)
                    if journal is not None and journal is self._journal:
                        await asyncio.to_thread(journal.sync)  # they may wait a while: on disk, not only in the OS

    async def _migrate(self) -> None:
        """Bring the schema up to date before a write; raises what the migration raised."""
        if self._writer is None:
            from interlock.accounting import ledger

            assert self._engine is not None
            await ledger.migrate(self._engine)
            return
        # SQLite: one small SELECT on the writer's connection; only an outdated (or missing)
        # schema runs the migrations again (in the process, or in a child process)
        if await self._writer.run(_schema_version) == self._schema_target:
            return
        try:
            prepared, error = await _prepare_sqlite(self.url)
        except _MigrationFailed as failed:
            raise failed.error from None
        if error is not None:
            raise error
        self._use(prepared)

    async def _write(self, batch: deque[_Entry] | list[_Entry], alerts: list[dict[str, Any]] | None = None) -> None:
        request_rows = [req for req, _ in batch]
        attempt_rows = [a for _, atts in batch for a in atts]
        if self._writer is not None:
            # SQLite: plain tuples straight to sqlite3's executemany on the writer thread
            assert self._sql is not None and self._alerts_sql is not None
            pieces = [(sql, rows) for sql, rows in zip(self._sql, (request_rows, attempt_rows), strict=True) if rows]
            if alerts:
                pieces.append((self._alerts_sql, [_sqlite_alert_values(a) for a in alerts]))
            loop = asyncio.get_running_loop()
            if pieces and not self._closing and loop.time() >= self._idle_until:
                # A routine batch waits for an idle CPU. When rows pile up meanwhile (a core that is
                # never idle starves that thread) it stops after its current piece and commits; the
                # rest, and the batches of the next _IDLE_BACKOFF seconds, go at the normal priority.
                self._hurry.clear()
                self._idle_writing = True
                try:
                    pieces = await self._writer.run(_write_pieces, pieces, self._hurry, idle=True)
                finally:
                    self._idle_writing = False
                if pieces:
                    self._idle_until = loop.time() + _IDLE_BACKOFF
            if pieces:
                await self._writer.run(_write_pieces, pieces, None)
            return
        assert self._engine is not None and self._inserts is not None
        async with self._engine.begin() as conn:
            insert_requests, insert_attempts = self._inserts
            if request_rows:
                await conn.execute(insert_requests, [dict(zip(_REQUEST_COLUMNS, r)) for r in request_rows])
            if attempt_rows:
                await conn.execute(insert_attempts, [dict(zip(_ATTEMPT_COLUMNS, a)) for a in attempt_rows])
            if alerts:
                await conn.execute(self._insert_alerts, alerts)

    async def _write_one_by_one(self, batch: deque[_Entry]) -> None:
        """Write a batch the database rejected, one decision per transaction.

        Written entries leave ``batch``; entries the database rejects are dropped
        (counted and logged). A transient failure stops here and is raised, with
        the unwritten rest still in ``batch``.
        """
        while batch:
            entry = batch[0]
            try:
                await self._write([entry])
            except Exception as exc:
                if _transient(exc):
                    raise
                if (safer := _database_safe(entry)) is not None:
                    try:
                        await self._write([safer])
                    except Exception as again:
                        if _transient(again):
                            raise
                    else:
                        self.salvaged += 1
                        log.warning(
                            "ledger: the database refused the rows of request %s (%s: %s); stored with replaced "
                            "values (invalid_fields: %s)", entry[0][0], type(exc).__name__, exc, safer[0][_INVALID_FIELDS],
                        )
                        batch.popleft()
                        continue
                n = 1 + len(entry[1])
                self.dropped += n
                log.error(
                    "ledger: the database rejected the rows of request %s; %d rows dropped (%s: %s)",
                    entry[0][0], n, type(exc).__name__, exc,
                )
            batch.popleft()

    async def _run(self) -> None:
        """Flush every ``flush_interval`` or when a batch is full; back off while failing."""
        while await self._flush_due():
            try:
                await self.flush()
            except Exception as exc:
                self._failures += 1
                level = logging.WARNING if self._failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "ledger: cannot write to %s (%s: %s); %d rows kept, retrying every %gs",
                    _safe_url(self.url), type(exc).__name__, exc, self._rows, self.flush_interval,
                )
            else:
                if self._failures:
                    log.warning("ledger: writing to the database again after %d failed tries", self._failures)
                self._failures = 0
            await self._sync_journal()
            await self._open_journal()  # after a failure to open it: the directory may exist now
            self._log_dropped()

    async def _sync_journal(self) -> None:
        """``fdatasync`` what the journal holds, on a thread: a power loss then loses at most one interval."""
        async with self._lock:  # a flush deletes and closes segments: not while they are being synced
            journal = self._journal
            if journal is not None and journal.unsynced:
                await asyncio.to_thread(journal.sync)

    async def _flush_due(self) -> bool:
        """Wait for the next flush; False when close() has taken over (before or during the wait).

        A method of its own so the flag is read afresh after the wait: inside one
        function a type checker takes the ``_closing`` tested before an ``await``
        to be the one after it.
        """
        if self._closing:
            return False
        if self._failures:
            await asyncio.sleep(self.flush_interval)  # a full buffer must not cause a retry storm
        else:
            # not wait_for: on Python 3.11 it swallows a cancellation that arrives as the wait
            # ends (a batch filled up just as close() cancelled this task), and close() would
            # then wait forever for this task, which would wait forever for close()'s lock
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()
        return not self._closing  # closing: close() writes what is left

    def _log_dropped(self) -> None:
        if self.spilled != self._spilled_logged:
            log.warning(
                "ledger: %d rows left the memory buffer since the last report (%d in total); the journal "
                "keeps them and the next start writes them; raise [exporters.ledger] max_buffer or fix the database",
                self.spilled - self._spilled_logged, self.spilled,
            )
            self._spilled_logged = self.spilled
        if self.dropped != self._dropped_logged:
            log.warning(
                "ledger: %d rows dropped since the last report (%d in total); raise "
                "[exporters.ledger] max_buffer or fix the database",
                self.dropped - self._dropped_logged, self.dropped,
            )
            self._dropped_logged = self.dropped


# --------------------------------------------------------------------------- #
# URLs, without SQLAlchemy
# --------------------------------------------------------------------------- #

def _is_sqlite(url: str) -> bool:
    """A SQLite file the writer thread can write with :mod:`sqlite3` (see the module docstring).

    Only the URL form SQLAlchemy's aiosqlite dialect understands, naming a file: an in-memory
    database lives in one connection, which only the SQLAlchemy engine keeps (the generic path),
    and other SQLite URLs (a synchronous driver) are refused at start by ``open_engine``.
    """
    parsed = file_url(url)
    return parsed is not None and parsed[0] != ":memory:" and "mode=memory" not in parsed[1]


def _safe_url(url: str) -> str:
    """``interlock.accounting.ledger.safe_url`` (a SQLite file URL has no password to hide, so no SQLAlchemy)."""
    if _is_sqlite(url) and "@" not in url and "sqlalchemy" not in sys.modules:
        return url
    from interlock.accounting import ledger

    return ledger.safe_url(url)


def _driver_sql(
    statement: Any, dialect: Dialect, columns: tuple[str, ...], column_keys: list[str] | None = None
) -> str:
    """``statement`` (an INSERT of every column) compiled once for ``dialect``'s driver.

    Positional parameters in the order of ``columns``, which the row tuples follow.
    """
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    if not dialect.positional or tuple(compiled.positiontup or ()) != columns:
        raise RuntimeError(f"ledger: the compiled INSERT does not take the row columns in order: {compiled}")
    return str(compiled)


def _insert(table: Any, dialect: str) -> Any:
    """An INSERT that skips rows already stored, so a retried write never duplicates."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy import insert

    return insert(table)


def _transient(exc: BaseException) -> bool:
    """Worth retrying the same rows later (the database is down, locked, missing a table).

    Database errors worth retrying: unreachable, locked, read-only, schema missing; the others
    (IntegrityError, DataError) mean the rows themselves are refused. SQLite through
    :mod:`sqlite3` raises the driver's classes, which SQLAlchemy would wrap in the same-named ones.
    """
    if isinstance(exc, sqlite3.Error):
        return isinstance(exc, _SQLITE_RETRYABLE)
    if "sqlalchemy" in sys.modules:  # a generic-path (SQLAlchemy) error
        from sqlalchemy import exc as sa_exc

        if isinstance(exc, sa_exc.DBAPIError):
            retryable = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.ProgrammingError, sa_exc.InternalError)
            # a server that cannot take the rows now (starting up, too many connections, ...) is
            # not refusing them: keep them (see database.retryable_sqlstate)
            return exc.connection_invalidated or isinstance(exc, retryable) or retryable_sqlstate(exc)
    return isinstance(exc, OSError | TimeoutError)


_SQLITE_RETRYABLE = (sqlite3.OperationalError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.InternalError)


# --------------------------------------------------------------------------- #
# SQLite: migrations and INSERTs (SQLAlchemy, here or in a child process)
# --------------------------------------------------------------------------- #

#: the order of the values in an ``alerts`` row tuple (its ``id`` is the database's)
_ALERT_COLUMNS: tuple[str, ...] = ("ts", "kind", "scope", "message", "value_usd", "threshold_usd", "details")


class _MigrationFailed(Exception):
    """The child process produced no INSERTs: ``error`` says why."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def prepare_sqlite_in_process(url: str) -> tuple[dict[str, Any], Exception | None]:
    """Migrate the SQLite ledger at ``url`` and compile its INSERTs, with SQLAlchemy.

    Returns (what the writer needs, the migration's error or None). The INSERTs and
    the connection arguments come back even when the migration fails (the flush
    retries it); an unusable URL raises ``ValueError`` as ``open_engine`` does.
    """
    from interlock.accounting import ledger

    engine = await ledger.open_engine(url)
    try:
        dialect = engine.dialect
        args, kwargs = dialect.create_connect_args(engine.url)
        prepared: dict[str, Any] = {
            "schema_version": ledger.SCHEMA_VERSION,
            "requests_sql": _driver_sql(_insert(ledger.requests, "sqlite"), dialect, _REQUEST_COLUMNS),
            "attempts_sql": _driver_sql(_insert(ledger.attempts, "sqlite"), dialect, _ATTEMPT_COLUMNS),
            "alerts_sql": _driver_sql(_insert(ledger.alerts, "generic"), dialect, _ALERT_COLUMNS, list(_ALERT_COLUMNS)),
            "alerts_columns": list(_ALERT_COLUMNS),
            "connect": [list(args), dict(kwargs)],
        }
        try:
            prepared["version"] = await ledger.migrate(engine)
            error = None
        except Exception as exc:
            error = exc
    finally:
        await engine.dispose()
    return prepared, error


def _sqlalchemy_loaded() -> bool:
    return "sqlalchemy" in sys.modules


async def _prepare_sqlite(url: str) -> tuple[dict[str, Any], Exception | None]:
    """:func:`prepare_sqlite_in_process`, in a child process unless SQLAlchemy is already loaded.

    The child (``python -m interlock.plugins.exporters.ledger migrate-json URL``) prints one JSON
    line; its errors come back as exceptions of the same name and message, so the
    log reads as it would in-process. Raises ``ValueError`` for an unusable URL,
    :class:`_MigrationFailed` when the child gave no answer at all.
    """
    if _sqlalchemy_loaded():  # already paid for: no child
        return await prepare_sqlite_in_process(url)
    import interlock

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(interlock.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "interlock.plugins.exporters.ledger", "migrate-json", url,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        out, err = await proc.communicate()
    except OSError as exc:
        raise _MigrationFailed(exc) from None
    answer: dict[str, Any] | None = None
    for line in reversed(out.decode("utf-8", "replace").splitlines()):
        try:
            answer = json.loads(line)
            break
        except ValueError:
            continue
    if not isinstance(answer, dict):
        detail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise _MigrationFailed(RuntimeError(f"the ledger migration process failed: {detail[0]}"))
    for level, message in answer.get("log", []):
        log.log(level, "%s", message)
    error = None
    if answer.get("error_type"):
        error = _rebuilt_error(answer["error_type"], answer.get("error", ""))
        if "requests_sql" not in answer:  # could not even open an engine: an unusable URL
            raise error
    return answer, error


def _rebuilt_error(name: str, message: str) -> Exception:
    """An exception named ``name`` (a builtin one when it is) carrying ``message``."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(message)
    # a RuntimeError subclass named as the child's error (type() is typed as returning a plain type)
    error: Exception = type(name, (RuntimeError,), {"__module__": __name__})(message)
    return error


# --------------------------------------------------------------------------- #
# SQLite: the writer thread
# --------------------------------------------------------------------------- #


class _SQLiteWriter:
    """One :mod:`sqlite3` connection, used by one write at a time from one of two low-priority threads.

    Routine batches go to a thread with Linux's ``SCHED_IDLE`` policy: it runs
    only when the CPU has nothing else to do, so a write never takes CPU time
    from the event loop while a request is being served (on a busy core, a
    ``nice`` thread still gets its share and a request waits for it).
    A core that is never idle would starve that thread, so a backlog (and the
    final write at shutdown) goes to a second thread at ``nice`` +5. Where
    ``SCHED_IDLE`` does not exist both threads are just ``nice``.
    """

    def __init__(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = {**kwargs, "isolation_level": None, "check_same_thread": False}  # BEGIN/COMMIT are ours
        self.kwargs.setdefault("timeout", SQLITE_BUSY_TIMEOUT)  # unless the URL's ?timeout= says otherwise
        self.conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interlock-ledger")
        self._idle_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interlock-ledger-idle")
        self._prioritised: set[int] = set()

    async def run(self, fn: Callable[..., Any], *args: Any, idle: bool = False) -> Any:
        """``fn(connection, *args)`` on a writer thread; a transient failure closes the connection."""
        executor = self._idle_executor if idle else self._executor
        return await asyncio.get_running_loop().run_in_executor(executor, self._call, fn, args, idle)

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], idle: bool = False) -> Any:
        thread = threading.current_thread()
        if thread.ident not in self._prioritised:
            self._prioritised.add(thread.ident)  # type: ignore[arg-type]
            if not (idle and idle_thread(thread)):
                background_thread(thread)
        try:
            return fn(self._connection(), *args)
        except Exception as exc:
            if _transient(exc):
                self._close()  # reopen on the next try (a locked, replaced or vanished file)
            raise

    def _connection(self) -> sqlite3.Connection:
        if self.conn is None:
            if self.args and isinstance(self.args[0], str) and not self.kwargs.get("uri"):
                if problem := file_problem(self.args[0]):
                    raise OSError(f"cannot open the SQLite database: {problem}")
            conn = sqlite3.connect(*self.args, **self.kwargs)
            try:
                # interlock.accounting.ledger._sqlite_pragmas: WAL lets readers (your queries) run while
                # the gateway writes; NORMAL is durable across application crashes
                use_wal(conn.execute)  # retried: another process may be migrating a new file
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn

    def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)
            self._idle_executor.shutdown(wait=False)


def _schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (0 before the first migration)."""
    try:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return int(row[0] or 0)


def _write_pieces(conn: sqlite3.Connection, pieces: list[tuple[str, list[_Row]]],
                  hurry: threading.Event | None = None) -> list[tuple[str, list[_Row]]]:
    """The (INSERT, rows) pieces in one transaction, in pieces of at most ``_SQLITE_CHUNK_ROWS``-ish rows.

    When ``hurry`` is set between two pieces, what is written so far is
    committed and the unwritten pieces are returned (rows are idempotent, so
    a batch may span transactions); otherwise ``[]``.
    """
    # between pieces the GIL goes back to the event loop; a backlog goes in at most ~8 larger pieces per table
    chunks = []
    for sql, rows in pieces:
        chunk = max(_SQLITE_CHUNK_ROWS, -(-len(rows) // _SQLITE_MAX_PIECES))
        chunks += [(sql, rows[start : start + chunk]) for start in range(0, len(rows), chunk)]
    # IMMEDIATE: take the write lock now, waiting (busy timeout) for another process's writer if need be
    conn.execute("BEGIN IMMEDIATE")
    try:
        for i, (sql, rows) in enumerate(chunks):
            if i and hurry is not None and hurry.is_set():
                conn.execute("COMMIT")
                return chunks[i:]
            _insert_rows(conn, sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction left to roll back (SQLite ended it on the error)
        raise
    return []


_ROWS_PER_STATEMENT = 64
_MULTI_ROW_SQL: dict[tuple[str, int], str | None] = {}


def _multi_row_sql(sql: str, n: int) -> str | None:
    """``INSERT ... VALUES (?, ...) [ON CONFLICT ...]`` with ``n`` row groups; None if ``sql`` is not that shape."""
    key = (sql, n)
    if key not in _MULTI_ROW_SQL:
        head, sep, rest = sql.partition(" VALUES (")
        close = rest.find(")")
        group = "(" + rest[: close + 1]
        if not sep or close < 0 or set(group) - set("(?, )"):
            _MULTI_ROW_SQL[key] = None
        else:
            _MULTI_ROW_SQL[key] = f"{head} VALUES {', '.join([group] * n)}{rest[close + 1:]}"
    return _MULTI_ROW_SQL[key]


def _insert_rows(conn: sqlite3.Connection, sql: str, rows: list[_Row]) -> None:
    """Insert ``rows`` with one ``sql`` statement per ``_ROWS_PER_STATEMENT`` rows, the rest row by row.

    ``executemany`` steps the statement once per row, and sqlite3 releases the
    GIL around every step and takes it back after: with the event loop busy,
    each of those is a hand-over between the threads that the loop pays for
    (measured: the ledger's share of the loop thread's CPU). A multi-row
    INSERT binds 64 rows and steps once. ``ON CONFLICT DO NOTHING`` applies to
    each row of it as to separate INSERTs.
    """
    if not rows:
        return
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(conn, "getlimit") else 999
    per = min(_ROWS_PER_STATEMENT, limit // max(1, len(rows[0])))
    full = len(rows) - len(rows) % per if per > 1 else 0
    multi = _multi_row_sql(sql, per) if full else None
    if multi is None:
        full = 0
    for start in range(0, full, per):
        conn.execute(multi, [value for row in rows[start : start + per] for value in row])  # type: ignore[arg-type]
    if full < len(rows):
        conn.executemany(sql, rows[full:])


def _sqlite_alert_values(row: Mapping[str, Any]) -> _Row:
    """An :func:`alert_row` as SQLAlchemy's SQLite dialect stores it (see the row builders below)."""
    ts = row["ts"]
    return (
        ts.astimezone(UTC).isoformat(" ", "microseconds")[:26],
        row["kind"],
        row["scope"],
        row["message"],
        _float_or_none(row["value_usd"]),
        _float_or_none(row["threshold_usd"]),
        row["details"],
    )


# --------------------------------------------------------------------------- #
# decision -> rows (pure, no I/O)
# --------------------------------------------------------------------------- #


def _text(value: str | None, limit: int | None = None) -> str | None:
    """Cut to ``limit`` characters; NUL, which PostgreSQL text cannot hold, becomes U+FFFD."""
    if value is None:
        return None
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


# Row tuples. One pair of builders makes both forms of a row: the values SQLAlchemy takes
# (datetimes, Decimals, bools: the generic form, written through Core inserts), and the values
# SQLAlchemy's SQLite dialect would hand the driver for them (the SQLite form, written with
# executemany). They differ only in the converters passed in, which mirror the SQLite bind
# processors of the column types: DateTime -> DATETIME's storage format, Float and Numeric ->
# float, Boolean -> 0/1; String, Text and Integer columns have none. tests/plugins/
# test_ledger_rows.py checks both forms store identical rows.

#: the order of the values in a ``requests`` / ``attempts`` row tuple: the tables' column order
_REQUEST_COLUMNS: tuple[str, ...] = (
    "id", "ts", "endpoint", "api_key_id", "team", "tags", "user", "route", "requested_model", "strategy",
    "provider", "model", "status", "stream", "attempts", "fallback_used", "latency_ms", "ttft_ms",
    "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "error_type",
    "error_message", "cost_delta_usd", "rule", "hedged", "events", "protocol", "invalid_fields",
    "cache_write_tokens", "unreported_cost_max_usd",
)
_ATTEMPT_COLUMNS: tuple[str, ...] = (
    "request_id", "n", "provider", "provider_type", "model", "outcome", "action", "status", "latency_ms",
    "ttft_ms", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "error",
    "response_id", "hedge", "start_ms", "cache_write_tokens", "unreported_cost_max_usd",
)
#: where a row's ``invalid_fields`` is (set after the row was built, see ``_flagged``)
_INVALID_FIELDS = _REQUEST_COLUMNS.index("invalid_fields")
#: how many values a journal line's rows had before migration 6 added two columns to each table: a
#: journal left by an older interlock is replayed with those columns NULL (columns are only appended)
_JOURNAL_V5_WIDTHS = (len(_REQUEST_COLUMNS) - 2, len(_ATTEMPT_COLUMNS) - 2)



def _utc_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


_last_second: tuple[float, str] = (math.nan, "")  # the last whole second formatted, and its text


def _sqlite_timestamp(ts: float) -> str:
    """``ts`` as SQLite's DATETIME stores ``datetime.fromtimestamp(ts, UTC)``: ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    global _last_second
    if type(ts) is float and ts >= 0.0:
        # datetime.fromtimestamp's own arithmetic (CPython's _PyTime_DoubleToDenominator): the
        # fraction's microseconds rounded half to even, carried into the second; the date and time
        # of the second are formatted once per second
        fraction, second = math.modf(ts)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            micros -= 1_000_000
            second += 1.0
        last, prefix = _last_second
        if second != last:
            prefix = datetime.fromtimestamp(second, UTC).isoformat(" ")[:19]
            _last_second = (second, prefix)
        return f"{prefix}.{micros:06d}"
    # aware isoformat with explicit microseconds: 'YYYY-MM-DD HH:MM:SS.ffffff+00:00'
    return datetime.fromtimestamp(ts, UTC).isoformat(" ", "microseconds")[:26]


def _same(value: Any) -> Any:
    return value


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _make_builders(
    timestamp: Callable[[float], Any], number: Callable[[Any], Any], flag: Callable[[bool], Any]
) -> tuple[Callable[[Decision], _Row], Callable[[str, Attempt], _Row]]:
    """The (request, attempt) row builders for one set of value converters.

    ``timestamp`` takes the unix time of a DateTime column, ``number`` the value of a Float or
    Numeric column that may be None, ``flag`` the bool of a Boolean column.
    """
    limit = MAX_ERROR_CHARS
    dumps = jsonutil.dumps_str
    text = _text

    def request_values(d: Decision) -> _Row:
        usage = d.usage
        events = d.events
        return (
            d.request_id,
            timestamp(d.ts),
            d.endpoint,
            text(d.api_key_id),
            text(d.team),
            dumps(list(d.tags)),
            text(d.user, limit),
            d.route,
            text(d.requested_model, limit),
            d.strategy,
            d.provider,
            d.model,
            int(d.status),
            flag(bool(d.stream)),
            len(d.attempts),
            flag(bool(d.fallback_used)),
            number(float(d.latency_ms)),
            number(d.ttft_ms),
            None if usage is None else usage.prompt_tokens,
            None if usage is None else usage.cached_tokens,
            None if usage is None else usage.completion_tokens,
            None if usage is None else usage.reasoning_tokens,
            number(d.cost_usd),
            text(d.error_type, limit),
            text(d.error_message, limit),
            number(d.cost_delta_usd),
            text(d.rule, limit),
            flag(bool(d.hedged)),
            dumps([text(e, limit) for e in events]) if events else None,
            d.protocol,
            None,  # invalid_fields: set by _salvaged
            None if usage is None else usage.cache_write_tokens,
            number(d.unreported_cost_max_usd),
        )

    def attempt_values(request_id: str, a: Attempt) -> _Row:
        usage = a.usage
        return (
            request_id,
            a.n,
            a.provider,
            a.provider_type,
            text(a.model, limit),
            a.outcome,
            a.action,
            a.status,
            number(float(a.latency_ms)),
            number(a.ttft_ms),
            None if usage is None else usage.prompt_tokens,
            None if usage is None else usage.cached_tokens,
            None if usage is None else usage.completion_tokens,
            None if usage is None else usage.reasoning_tokens,
            number(a.cost_usd),
            text(a.error, limit),
            text(a.response_id, limit),
            flag(bool(a.hedge)),
            number(float(a.start_ms)),
            None if usage is None else usage.cache_write_tokens,
            number(a.unreported_cost_max_usd),
        )

    return request_values, attempt_values


_Converters = tuple[Callable[[float], Any], Callable[[Any], Any], Callable[[bool], Any]]
_GENERIC_FORM: _Converters = (_utc_datetime, _same, _same)
_SQLITE_FORM: _Converters = (_sqlite_timestamp, _float_or_none, int)
#: rows as SQLAlchemy takes them (datetime, Decimal, bool): written through Core inserts
_GENERIC_ROWS = _make_builders(*_GENERIC_FORM)
#: rows as SQLAlchemy's SQLite dialect stores them (text, float, 0/1): written with executemany
_SQLITE_ROWS = _make_builders(*_SQLITE_FORM)

#: positions of the values the generic form's journal lines carry as text (see _journal_line)
_REQUEST_TS = _REQUEST_COLUMNS.index("ts")
_REQUEST_DECIMALS = tuple(
    _REQUEST_COLUMNS.index(c) for c in ("cost_usd", "cost_delta_usd", "unreported_cost_max_usd")
)
_ATTEMPT_DECIMALS = tuple(_ATTEMPT_COLUMNS.index(c) for c in ("cost_usd", "unreported_cost_max_usd"))


def _flagged(row: _Row, flag: str) -> _Row:
    """A ``requests`` row with ``invalid_fields`` set to ``flag``."""
    return row[:_INVALID_FIELDS] + (flag,) + row[_INVALID_FIELDS + 1 :]


def _widened(request: list[Any], attempts: list[list[Any]]) -> tuple[list[Any], list[list[Any]]]:
    """A journal line's rows as today's columns: a line an interlock before migration 6 wrote
    lacks the columns it added (at the end of each row), which are NULL for it."""
    old_request, old_attempt = _JOURNAL_V5_WIDTHS
    if len(request) == old_request and all(len(a) == old_attempt for a in attempts):
        pad = [None] * (len(_REQUEST_COLUMNS) - old_request)
        return request + pad, [a + [None] * (len(_ATTEMPT_COLUMNS) - old_attempt) for a in attempts]
    return request, attempts


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a ledger value")


def _journal_line(entry: _Entry) -> bytes:
    """One journal line: ``[request_row, [attempt_rows]]`` as JSON and a newline.

    The SQLite form is JSON-native; the generic form's datetimes become ISO text and its
    Decimals decimal text (exact), read back by ``LedgerExporter._replayed_entry``.
    Raises for a value JSON cannot hold (text that is not valid UTF-8).
    """
    return jsonutil.dumps_line(entry, default=_decimal_text)


# --------------------------------------------------------------------------- #
# rows that cannot be stored as recorded
# --------------------------------------------------------------------------- #


def _scrub(value: Any) -> Any:
    """``value`` with what no database or JSON can hold replaced: returns ``value`` itself when it is fine.

    Text that is not valid UTF-8 (aiohttp hands a header's undecodable bytes over as lone
    surrogates) gets U+FFFD where it cannot be decoded; NaN and infinities become None;
    lists, tuples and dicts are scrubbed item by item.
    """
    if isinstance(value, str):
        try:
            value.encode()
            return value
        except UnicodeEncodeError:
            try:
                return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            except UnicodeEncodeError:
                return value.encode("utf-8", "replace").decode()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, list | tuple):
        items = [_scrub(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
    if isinstance(value, dict):
        pairs = [(_scrub(k), _scrub(v)) for k, v in value.items()]
        return value if all(a is k and b is v for (a, b), (k, v) in zip(pairs, value.items(), strict=True)) else dict(pairs)
    return value


def _scrubbed(d: Decision) -> tuple[Decision, list[str]]:
    """A copy of ``d`` with its values scrubbed (:func:`_scrub`), and the names of the fields that changed."""
    clean = copy.copy(d)
    fields: list[str] = []
    for f in dataclasses.fields(d):
        value = getattr(d, f.name)
        if f.name == "attempts":
            attempts = []
            for a in value:
                copied = copy.copy(a)
                for af in dataclasses.fields(a):
                    av = getattr(a, af.name)
                    if (scrubbed := _scrub(av)) is not av:
                        setattr(copied, af.name, scrubbed)
                        if f"attempts.{af.name}" not in fields:
                            fields.append(f"attempts.{af.name}")
                attempts.append(copied)
            clean.attempts = attempts
        elif (scrubbed := _scrub(value)) is not value:
            setattr(clean, f.name, scrubbed)
            fields.append(f.name)
    return clean, fields


def _or_default(get: Callable[[], Any], default: Any) -> Any:
    """``get()``, or ``default`` when it raises (one value of an essential row, see ``_essential_row``)."""
    try:
        return get()
    except Exception:
        return default


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _finite_decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    number = Decimal(value)
    return number if number.is_finite() else None


#: the largest magnitude a Numeric(18, 10) column holds
_NUMERIC_LIMIT = Decimal("1e8")


def _fits_numeric(value: float | Decimal) -> bool:
    """A finite number a Numeric(18, 10) column holds."""
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    return finite and abs(Decimal(value)) < _NUMERIC_LIMIT


def _database_safe(entry: _Entry) -> _Entry | None:
    """The entry with what a database may refuse replaced: text as ASCII, out-of-range decimals as NULL.

    None when nothing would change (retrying would be refused again). The request
    row's ``invalid_fields`` names the replaced columns.
    """
    request, attempts = entry
    changed: list[str] = []

    def safe(row: _Row, columns: tuple[str, ...], prefix: str) -> _Row:
        out = list(row)
        for i, value in enumerate(row):
            if columns[i] in ("id", "request_id", "invalid_fields"):
                continue
            new = value
            if isinstance(value, str) and not value.isascii():
                new = value.encode("ascii", "backslashreplace").decode()
            elif isinstance(value, float | Decimal) and not _fits_numeric(value):
                new = None
            if new is not value:
                out[i] = new
                if prefix + columns[i] not in changed:
                    changed.append(prefix + columns[i])
        return tuple(out)

    new_request = safe(request, _REQUEST_COLUMNS, "")
    new_attempts = [safe(a, _ATTEMPT_COLUMNS, "attempts.") for a in attempts]
    if not changed:
        return None
    flags = [f for f in (request[_INVALID_FIELDS] or "").split(",") if f]
    flags += [c for c in changed if c not in flags]
    return _flagged(new_request, ",".join(flags)), new_attempts


def journal_directory(url: str, option: str | bool) -> str | None:
    """Where the journal of the ledger at ``url`` lives (``option``: the ``journal`` setting); None: nowhere.

    ``true`` (the default): next to a SQLite file, ``<file>.journal``; for other databases
    ``interlock-ledger.journal`` in the working directory. An in-memory database has none.
    """
    if option is False:
        return None
    if isinstance(option, str):
        return option
    parsed = file_url(url)
    if parsed is not None:
        path, query = parsed
        if path == ":memory:" or "mode=memory" in query or not path:
            return None
        return path + ".journal"
    if url.startswith("sqlite"):
        return None  # an in-memory SQLite URL: nothing outlives the process anyway
    return "interlock-ledger.journal"


def request_row(d: Decision) -> dict[str, Any]:
    """The ``requests`` row of a decision, as SQLAlchemy takes it."""
    return dict(zip(_REQUEST_COLUMNS, _GENERIC_ROWS[0](d), strict=True))


def attempt_row(request_id: str, a: Attempt) -> dict[str, Any]:
    """The ``attempts`` row of one attempt, as SQLAlchemy takes it."""
    return dict(zip(_ATTEMPT_COLUMNS, _GENERIC_ROWS[1](request_id, a), strict=True))


def alert_row(alert: Alert) -> dict[str, Any]:
    """The ``alerts`` row of an alert."""
    return {
        "ts": datetime.fromtimestamp(alert.ts, UTC),
        "kind": alert.kind,
        "scope": _text(alert.scope, MAX_ERROR_CHARS),
        "message": _text(alert.message, MAX_ERROR_CHARS),
        "value_usd": alert.value_usd,
        "threshold_usd": alert.threshold_usd,
        "details": jsonutil.dumps_str(alert.details),
    }


# --------------------------------------------------------------------------- #
# configuration
# --------------------------------------------------------------------------- #

_OPTIONS = ("enabled", "flush_interval", "batch_size", "max_buffer", "journal")


def parse_options(table: Any) -> dict[str, Any]:
    """Validate an ``[exporters.ledger]`` table; raises ``ValueError`` naming the key."""
    if not isinstance(table, Mapping):
        raise ValueError(f"exporters.ledger: must be a table, not {type(table).__name__}")
    for key in table:
        if key not in _OPTIONS:
            raise ValueError(f"exporters.ledger.{key}: unknown key (known: {', '.join(_OPTIONS)})")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"exporters.ledger.enabled: must be true or false, not {enabled!r}")
    interval = table.get("flush_interval", DEFAULT_FLUSH_INTERVAL)
    if (
        not isinstance(interval, int | float)
        or isinstance(interval, bool)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        raise ValueError(
            f"exporters.ledger.flush_interval: must be a positive number of seconds, not {interval!r}"
        )
    journal = table.get("journal", True)
    if not (isinstance(journal, bool) or (isinstance(journal, str) and journal.strip())):
        raise ValueError(
            f"exporters.ledger.journal: must be a directory path, true (the default place) or false, not {journal!r}"
        )
    out: dict[str, Any] = {"enabled": enabled, "flush_interval": float(interval), "journal": journal}
    for key, default in (("batch_size", DEFAULT_BATCH_SIZE), ("max_buffer", DEFAULT_MAX_BUFFER)):
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"exporters.ledger.{key}: must be a positive integer (rows), not {value!r}")
        out[key] = value
    if out["max_buffer"] < out["batch_size"]:
        raise ValueError(
            f"exporters.ledger.max_buffer: must be at least batch_size ({out['batch_size']}), "
            f"not {out['max_buffer']}"
        )
    return out


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    opts = parse_options((settings.get("exporters") or {}).get("ledger", {}))
    if not opts["enabled"]:
        return
    url = (settings.get("database") or {}).get("url") or DEFAULT_DATABASE_URL
    if not _is_sqlite(url):  # a SQLite file URL is known good without loading SQLAlchemy
        from sqlalchemy.engine import make_url

        from interlock.accounting import ledger

        try:
            make_url(url).get_dialect()  # an unknown dialect is a config error; drivers load at start
        except Exception as exc:
            raise ValueError(f"database.url: cannot use {ledger.safe_url(url)!r}: {exc}") from None
    options = {k: opts[k] for k in ("flush_interval", "batch_size", "max_buffer", "journal")}
    register(LedgerExporter(url, **options))


# --------------------------------------------------------------------------- #
# ``python -m interlock.plugins.exporters.ledger migrate-json URL``
# --------------------------------------------------------------------------- #


def main(argv: list[str]) -> int:
    """Migrate a SQLite ledger and print, as one JSON line, what its writer needs.

    The exporter runs this in a child process so that a gateway on the default
    SQLite ledger never imports SQLAlchemy (see the module docstring). The line holds ``schema_version``
    (the version this code migrates to), ``version`` (the file's, after migrating),
    ``requests_sql``, ``attempts_sql`` and ``alerts_sql`` (the INSERTs compiled for the
    SQLite driver, positional parameters in the order of the row tuples),
    ``alerts_columns``, ``connect`` (sqlite3.connect's arguments) and ``log`` (the
    messages logged meanwhile, as [level, text]). On failure it also holds
    ``error_type`` and ``error``, the exception the in-process path raises (without
    the INSERTs when the URL itself is unusable), prints it to stderr and exits 1.
    """
    if len(argv) != 2 or argv[0] != "migrate-json":
        print("usage: python -m interlock.plugins.exporters.ledger migrate-json DATABASE_URL", file=sys.stderr)
        return 2
    records: list[list[Any]] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append([record.levelno, record.getMessage()])

    log.addHandler(_Keep(logging.INFO))  # the schema's migrations log to this same "interlock.ledger" logger
    log.setLevel(logging.INFO)
    log.propagate = False
    out: dict[str, Any]
    error: Exception | None
    try:
        out, error = asyncio.run(prepare_sqlite_in_process(argv[1]))
    except Exception as exc:
        out, error = {}, exc
    if error is not None:
        out["error_type"], out["error"] = type(error).__name__, str(error)
    out["log"] = records
    print(json.dumps(out), flush=True)
    if error is not None:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from interlock.plugins.exporters import ledger as _ledger  # the importable copy, not this __main__ one

    sys.exit(_ledger.main(sys.argv[1:]))
