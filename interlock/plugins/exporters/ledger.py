"""``ledger``: every routing decision as SQL rows (see :mod:`interlock.core.ledger` for the schema).

Enabled by default; it writes to ``[database] url`` (SQLite ``interlock.db`` in
the working directory unless configured; a PostgreSQL URL such as
``postgresql+asyncpg://user:password@host/db`` works the same)::

    [exporters.ledger]
    enabled = true          # false: write nothing
    flush_interval = 1.0    # seconds between writes
    batch_size = 500        # rows buffered that trigger a write before the interval is up
    max_buffer = 100000     # rows kept while the database is unreachable; the oldest go first

How it writes: ``record`` (on the request path) only turns the decision into
row dicts and appends them to an in-memory buffer. A background task writes
the whole buffer in one transaction every ``flush_interval`` seconds, or as
soon as ``batch_size`` rows are waiting. If a write fails (database down,
locked, file not writable yet) the rows stay buffered and the write is retried
every ``flush_interval``; requests are never failed or slowed by the ledger.
Beyond ``max_buffer`` rows the oldest rows are dropped, counted in
``dropped`` and logged. Writes are idempotent (a row whose request id is
already stored is skipped), so a retried write never duplicates rows; note
that this also means a client reusing an ``x-request-id`` keeps only its
first request in the ledger.

What can be lost:

* graceful shutdown (SIGINT, SIGTERM): nothing; the exporter's ``close``
  writes everything still buffered before the process exits (if the database
  is unreachable then, the buffered rows are lost and the count is logged);
* hard kill (SIGKILL, crash, OOM, power loss): the rows not written yet, i.e.
  at most the last ``flush_interval`` seconds of requests and normally at most
  one batch (``batch_size`` rows); while the database is unreachable,
  everything buffered since it became unreachable (up to ``max_buffer`` rows).
  On SQLite, ``synchronous=NORMAL`` in WAL mode can additionally lose the last
  committed writes on power loss (not on a process crash).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from interlock import hookimpl
from interlock.core import jsonutil, ledger
from interlock.core.config import DEFAULT_DATABASE_URL
from interlock.core.exporter import Exporter
from interlock.core.types import Alert, Attempt, Decision, Usage

log = logging.getLogger("interlock.ledger")

DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_BATCH_SIZE = 500
DEFAULT_MAX_BUFFER = 100_000

_Entry = tuple[dict[str, Any], list[dict[str, Any]]]  # (requests row, attempts rows) of one decision


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
    ) -> None:
        opts = parse_options(
            {"flush_interval": flush_interval, "batch_size": batch_size, "max_buffer": max_buffer}
        )
        self.url = url
        self.flush_interval: float = opts["flush_interval"]
        self.batch_size: int = opts["batch_size"]
        self.max_buffer: int = opts["max_buffer"]
        #: rows dropped so far: buffer overflow while the database was unreachable, or rows the
        #: database refused (see :meth:`_write_one_by_one`)
        self.dropped = 0
        self._buffer: deque[_Entry] = deque()
        self._alerts: list[dict[str, Any]] = []  # ``alerts`` rows, written with the next flush
        self._rows = 0  # rows in _buffer
        self._engine: AsyncEngine | None = None
        self._migrated = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one flush at a time (the loop, an explicit flush, close)
        self._wake = asyncio.Event()
        self._failures = 0  # consecutive failed background flushes
        self._dropped_logged = 0
        self._inserts: tuple[Any, Any] | None = None
        self._insert_alerts: Any = None

    @property
    def buffered(self) -> int:
        """Rows waiting to be written."""
        return self._rows

    # -- the request path: no I/O ----------------------------------------- #

    def record(self, decision: Decision) -> None:
        try:
            entry = (request_row(decision), [attempt_row(decision.request_id, a) for a in decision.attempts])
        except Exception:  # a malformed decision must not break the request path
            log.exception("ledger: cannot convert decision %s; dropped", getattr(decision, "request_id", "?"))
            self.dropped += 1
            return
        self._buffer.append(entry)
        self._rows += 1 + len(entry[1])
        if self._rows > self.max_buffer:
            self._trim()
        if self._rows >= self.batch_size:
            self._wake.set()

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

    def _trim(self) -> None:
        """Drop the oldest decisions until the buffer fits ``max_buffer``."""
        while self._rows > self.max_buffer and self._buffer:
            _, atts = self._buffer.popleft()
            n = 1 + len(atts)
            self._rows -= n
            self.dropped += n

    # -- lifecycle -------------------------------------------------------- #

    async def start(self) -> None:
        """Open the engine, apply migrations and start the flush loop.

        A database that cannot be reached or written yet is not fatal: requests
        are served, rows are kept, and the migration is retried on every flush.
        An unusable URL (unknown dialect, missing or synchronous driver) is.
        """
        if self._engine is not None:
            return
        self._engine = await ledger.open_engine(self.url)
        dialect = self._engine.dialect.name
        self._inserts = (_insert(ledger.requests, dialect), _insert(ledger.attempts, dialect))
        self._insert_alerts = insert(ledger.alerts)
        try:
            await ledger.migrate(self._engine)
            self._migrated = True
        except Exception as exc:
            log.warning(
                "ledger: cannot prepare the database %s yet (%s: %s); requests are served, their rows kept "
                "in memory and the write retried every %gs",
                ledger.safe_url(self.url), type(exc).__name__, exc, self.flush_interval,
            )
        self._task = asyncio.create_task(self._run(), name="interlock-ledger-flush")

    async def close(self) -> None:
        """Stop the flush loop, write everything still buffered, release the engine."""
        task, self._task = self._task, None
        if task is not None:
            async with self._lock:  # let a flush in progress finish rather than cut it
                task.cancel()
                # wait() neither raises the task's CancelledError nor swallows our own cancellation;
                # (checking current_task().cancelling() would be wrong here: aiohttp runs cleanup
                # inside its main task after cancelling it, and the final flush must still happen)
                await asyncio.wait([task])
        engine = self._engine
        if engine is None:
            return
        try:
            await self.flush()
        except Exception as exc:
            log.error(
                "ledger: the final write to %s failed (%s: %s); %d rows are lost",
                ledger.safe_url(self.url), type(exc).__name__, exc, self._rows,
            )
        finally:
            self._log_dropped()
            self._engine = None
            await engine.dispose()

    # -- writing ---------------------------------------------------------- #

    async def flush(self) -> None:
        """Write every buffered row in one transaction; raises if the database refuses.

        On failure the rows stay buffered (bounded by ``max_buffer``) for the next try.
        Before :meth:`start` there is nowhere to write and this does nothing.
        """
        if self._engine is None:
            return
        async with self._lock:
            if not self._buffer and not self._alerts:
                return
            if not self._migrated:
                await ledger.migrate(self._engine)
                self._migrated = True
            batch, self._buffer, self._rows = self._buffer, deque(), 0
            alerts, self._alerts = self._alerts, []
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

    async def _write(self, batch: deque[_Entry] | list[_Entry], alerts: list[dict[str, Any]] | None = None) -> None:
        assert self._engine is not None and self._inserts is not None
        request_rows = [req for req, _ in batch]
        attempt_rows = [a for _, atts in batch for a in atts]
        insert_requests, insert_attempts = self._inserts
        async with self._engine.begin() as conn:
            if request_rows:
                await conn.execute(insert_requests, request_rows)
            if attempt_rows:
                await conn.execute(insert_attempts, attempt_rows)
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
                n = 1 + len(entry[1])
                self.dropped += n
                log.error(
                    "ledger: the database rejected the rows of request %s; %d rows dropped (%s: %s)",
                    entry[0].get("id"), n, type(exc).__name__, exc,
                )
            batch.popleft()

    async def _run(self) -> None:
        """Flush every ``flush_interval`` or when a batch is full; back off while failing."""
        while True:
            if self._failures:
                await asyncio.sleep(self.flush_interval)  # a full buffer must not cause a retry storm
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                self._failures += 1
                level = logging.WARNING if self._failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "ledger: cannot write to %s (%s: %s); %d rows kept, retrying every %gs",
                    ledger.safe_url(self.url), type(exc).__name__, exc, self._rows, self.flush_interval,
                )
            else:
                if self._failures:
                    log.warning("ledger: writing to the database again after %d failed tries", self._failures)
                self._failures = 0
            self._log_dropped()

    def _log_dropped(self) -> None:
        if self.dropped != self._dropped_logged:
            log.warning(
                "ledger: %d rows dropped since the last report (%d in total); raise "
                "[exporters.ledger] max_buffer or fix the database",
                self.dropped - self._dropped_logged, self.dropped,
            )
            self._dropped_logged = self.dropped


def _insert(table: Any, dialect: str) -> Any:
    """An INSERT that skips rows already stored, so a retried write never duplicates."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    return insert(table)


# database errors worth retrying: unreachable, locked, read-only, schema missing; the others
# (IntegrityError, DataError) mean the rows themselves are refused
_RETRYABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.ProgrammingError, sa_exc.InternalError)


def _transient(exc: BaseException) -> bool:
    """Worth retrying the same rows later (the database is down, locked, missing a table)."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, _RETRYABLE)
    return isinstance(exc, OSError | TimeoutError)


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


def _usage(usage: Usage | None) -> dict[str, int | None]:
    if usage is None:
        return {"input_tokens": None, "cached_tokens": None, "output_tokens": None, "reasoning_tokens": None}
    return {
        "input_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def request_row(d: Decision) -> dict[str, Any]:
    """The ``requests`` row of a decision."""
    limit = ledger.MAX_ERROR_CHARS
    return {
        "id": d.request_id,
        "ts": datetime.fromtimestamp(d.ts, UTC),
        "endpoint": d.endpoint,
        "api_key_id": _text(d.api_key_id),
        "team": _text(d.team),
        "tags": jsonutil.dumps_str(list(d.tags)),
        "user": _text(d.user, limit),
        "route": d.route,
        "requested_model": _text(d.requested_model, limit),
        "strategy": d.strategy,
        "provider": d.provider,
        "model": d.model,
        "status": int(d.status),
        "stream": bool(d.stream),
        "attempts": len(d.attempts),
        "fallback_used": d.fallback_used,
        "latency_ms": float(d.latency_ms),
        "ttft_ms": d.ttft_ms,
        **_usage(d.usage),
        "cost_usd": d.cost_usd,
        "error_type": _text(d.error_type, limit),
        "error_message": _text(d.error_message, limit),
        "cost_delta_usd": d.cost_delta_usd,
        "rule": _text(d.rule, limit),
        "hedged": bool(d.hedged),
        "events": jsonutil.dumps_str([_text(e, limit) for e in d.events]) if d.events else None,
    }


def alert_row(alert: Alert) -> dict[str, Any]:
    """The ``alerts`` row of an alert."""
    return {
        "ts": datetime.fromtimestamp(alert.ts, UTC),
        "kind": alert.kind,
        "scope": _text(alert.scope, ledger.MAX_ERROR_CHARS),
        "message": _text(alert.message, ledger.MAX_ERROR_CHARS),
        "value_usd": alert.value_usd,
        "threshold_usd": alert.threshold_usd,
        "details": jsonutil.dumps_str(alert.details),
    }


def attempt_row(request_id: str, a: Attempt) -> dict[str, Any]:
    """The ``attempts`` row of one attempt."""
    return {
        "request_id": request_id,
        "n": a.n,
        "provider": a.provider,
        "provider_type": a.provider_type,
        "model": _text(a.model, ledger.MAX_ERROR_CHARS),
        "outcome": a.outcome,
        "action": a.action,
        "status": a.status,
        "latency_ms": float(a.latency_ms),
        "ttft_ms": a.ttft_ms,
        **_usage(a.usage),
        "cost_usd": a.cost_usd,
        "error": _text(a.error, ledger.MAX_ERROR_CHARS),
        "response_id": _text(a.response_id, ledger.MAX_ERROR_CHARS),
        "hedge": bool(a.hedge),
        "start_ms": float(a.start_ms),
    }


# --------------------------------------------------------------------------- #
# configuration
# --------------------------------------------------------------------------- #

_OPTIONS = ("enabled", "flush_interval", "batch_size", "max_buffer")


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
    out: dict[str, Any] = {"enabled": enabled, "flush_interval": float(interval)}
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
    try:
        make_url(url).get_dialect()  # an unknown dialect is a config error; drivers load at start
    except Exception as exc:
        raise ValueError(f"database.url: cannot use {ledger.safe_url(url)!r}: {exc}") from None
    options = {k: opts[k] for k in ("flush_interval", "batch_size", "max_buffer")}
    register(LedgerExporter(url, **options))
