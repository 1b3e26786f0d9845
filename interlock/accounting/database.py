"""Where the ledger lives: the default database URL, and checks on a SQLite path.

Nothing here needs SQLAlchemy or a connection. Shared by the config (the default
``[database] url``), :mod:`interlock.accounting.ledger` (which parses database URLs
with SQLAlchemy) and the ledger exporter's stdlib ``sqlite3`` writer (which must not
import SQLAlchemy): both refuse the same unopenable paths with the same words.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

#: the ledger's database when the config names none: a SQLite file in the working directory
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///interlock.db"

#: SQLite: seconds a statement waits for another connection's write lock before failing with "database
#: is locked" (sqlite3's default is 5). Several processes writing one file (``serve --workers``) take
#: turns; waiting is cheap (a driver or writer thread sleeps, the rows stay buffered, no request waits).
#: The ledger's engines and its exporter's writer use the same figure.
SQLITE_BUSY_TIMEOUT = 30.0

#: ``sqlite+aiosqlite:///path[?query]``, the form of the default database URL
_FILE_URL = re.compile(r"sqlite\+aiosqlite:///([^?#]+)(\?[^#]*)?")


def file_url(url: str) -> tuple[str, str] | None:
    """``(path, query)`` of a ``sqlite+aiosqlite:///path[?query]`` URL (query ``""`` when absent), else None.

    The path as SQLAlchemy reads it from that form (``:memory:`` included); found
    without importing SQLAlchemy.
    """
    m = _FILE_URL.fullmatch(url)
    return None if m is None else (m.group(1), m.group(2) or "")


def file_problem(db: str) -> str | None:
    """Why ``db`` cannot be opened as a SQLite file, or None; never creates anything."""
    if not db or db == ":memory:":
        return None
    if os.path.isdir(db):
        return f"{db} is a directory, not a SQLite file"
    if not os.path.isdir(os.path.dirname(os.path.abspath(db))):
        return f"the directory of {db} does not exist"
    return None


#: SQLSTATE classes (first two characters) of a PostgreSQL server that cannot take a write *now*,
#: as opposed to refusing the rows themselves: connection exception (08), transaction rollback
#: (40: serialization failure, deadlock), insufficient resources (53: too many connections, disk
#: full), operator intervention (57: shutting down, starting up, recovering), and invalid catalog
#: name (3D: the database is not created yet). asyncpg reports most of these through SQLAlchemy as
#: a plain ``DBAPIError``, with no invalidated connection, which reads like a refused row.
RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "3D", "40", "53", "57"})


def retryable_sqlstate(exc: BaseException) -> bool:
    """Whether ``exc`` (a SQLAlchemy ``DBAPIError``, or a driver error) carries a retryable SQLSTATE."""
    for err in (exc, getattr(exc, "orig", None)):
        code = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(code, str) and code[:2] in RETRYABLE_SQLSTATE_CLASSES:
            return True
    return False


def use_wal(execute: Callable[[str], Any], timeout: float = SQLITE_BUSY_TIMEOUT) -> None:
    """``PRAGMA journal_mode=WAL`` through ``execute``, retried while another connection holds a lock.

    Switching a new database file to WAL needs an exclusive lock, and SQLite answers
    "database is locked" at once, without waiting for the busy timeout, while another
    process (a ``serve --workers`` worker) migrates or writes the file. Retried for up to
    ``timeout`` seconds (sleeping: call it where blocking is fine, a driver thread or a
    start-up). Once the file is in WAL mode the pragma needs no lock.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
