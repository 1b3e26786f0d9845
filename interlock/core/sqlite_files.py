"""Checks on a SQLite database path that need neither SQLAlchemy nor a connection.

Shared by :mod:`interlock.core.ledger` (which parses database URLs with
SQLAlchemy) and the ledger exporter's stdlib ``sqlite3`` writer (which must not
import SQLAlchemy): both refuse the same unopenable paths with the same words.
"""

from __future__ import annotations

import os


def file_problem(db: str) -> str | None:
    """Why ``db`` cannot be opened as a SQLite file, or None; never creates anything."""
    if not db or db == ":memory:":
        return None
    if os.path.isdir(db):
        return f"{db} is a directory, not a SQLite file"
    if not os.path.isdir(os.path.dirname(os.path.abspath(db))):
        return f"the directory of {db} does not exist"
    return None
