"""Real Redis and PostgreSQL servers for tests (from the Debian packages; .ci/run installs them).

``INTERLOCK_TEST_REDIS_URL`` / ``INTERLOCK_TEST_POSTGRES_URL`` name servers .ci/run
started for the whole run (PostgreSQL: a URL whose user may create databases; each
test session gets databases of its own). Without them, a test that needs a server
skips, unless ``INTERLOCK_REQUIRE_SERVICES=1`` (set by .ci/run), where it fails: CI
never passes by skipping the real servers.

Tests that stop and restart a server (outages) start their own ``redis-server`` with
:class:`RedisServer`, on a port of their own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("INTERLOCK_TEST_REDIS_URL")
POSTGRES_URL = os.environ.get("INTERLOCK_TEST_POSTGRES_URL")
REQUIRED = os.environ.get("INTERLOCK_REQUIRE_SERVICES") == "1"


def missing(what: str) -> None:
    """Skip (locally) or fail (in CI) a test whose server is not available."""
    if REQUIRED:
        pytest.fail(f"{what} is required in CI (INTERLOCK_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)), None
    )


class RedisServer:
    """A ``redis-server`` of a test's own, on a fixed port, that can be stopped and started again."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        binary = redis_binary()
        if binary is None:
            missing("redis-server")
        self.binary = str(binary)
        self.port = port or free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="interlock-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_url() -> str:
    """The run's Redis (INTERLOCK_TEST_REDIS_URL), skipping or failing without one."""
    if REDIS_URL is None:
        missing("Redis (INTERLOCK_TEST_REDIS_URL)")
    return str(REDIS_URL)


def unique_prefix() -> str:
    """A key prefix no other test uses, so tests share one Redis without seeing each other's keys."""
    return f"t{uuid.uuid4().hex[:12]}:"


def postgres_database() -> str:
    """A new, empty PostgreSQL database on the run's server, as an asyncpg SQLAlchemy URL.

    Dropped with the server at the end of the run (.ci/run removes its data directory).
    """
    if POSTGRES_URL is None:
        missing("PostgreSQL (INTERLOCK_TEST_POSTGRES_URL)")
    from sqlalchemy.engine import make_url

    base = make_url(str(POSTGRES_URL))
    name = f"interlock_{uuid.uuid4().hex[:12]}"
    admin = base.set(drivername="postgresql", database=base.database or "postgres")
    env = {**os.environ, "PGPASSWORD": admin.password or ""}
    subprocess.run(
        ["psql", "-q", "-h", admin.host or "127.0.0.1", "-p", str(admin.port or 5432), "-U", admin.username or "postgres",
         "-d", admin.database or "postgres", "-c", f"CREATE DATABASE {name}"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    return base.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


def sqlite_database(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'ledger.db'}"
