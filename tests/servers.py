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

    Dropped with the server at the end of the run (.ci/run removes its data directory), or
    earlier by :func:`drop_postgres_database` (the ``database_url`` fixture does).
    """
    if POSTGRES_URL is None:
        missing("PostgreSQL (INTERLOCK_TEST_POSTGRES_URL)")
    from sqlalchemy.engine import make_url

    base = make_url(str(POSTGRES_URL))
    name = f"interlock_{uuid.uuid4().hex[:12]}"
    _psql(str(POSTGRES_URL), f"CREATE DATABASE {name}")
    return base.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


def _psql(admin_url: str, sql: str) -> None:
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url).set(drivername="postgresql")
    env = {**os.environ, "PGPASSWORD": admin.password or ""}
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", admin.host or "127.0.0.1", "-p", str(admin.port or 5432),
         "-U", admin.username or "postgres", "-d", admin.database or "postgres", "-c", sql],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )


def drop_postgres_database(url: str) -> None:
    """Drop a database :func:`postgres_database` made (connections still open to it are ended)."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name and name.startswith("interlock_"), name  # never anything but a test's own database
    _psql(str(POSTGRES_URL), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sqlite_database(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'ledger.db'}"


def pg_bindir() -> str | None:
    """The PostgreSQL server binaries (initdb, pg_ctl) from the Debian packages, newest first."""
    import glob

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else None


class PostgresServer:
    """A PostgreSQL cluster of a test's own, on a fixed port, that can be stopped and started again.

    For outage tests: the run's server (INTERLOCK_TEST_POSTGRES_URL) is shared and must stay up.
    initdb into a temporary directory, trust authentication on 127.0.0.1; as root the cluster
    runs as the ``postgres`` user (postgres refuses to run as root).
    """

    def __init__(self, port: int | None = None) -> None:
        bindir = pg_bindir()
        if bindir is None:
            missing("PostgreSQL server binaries (initdb, pg_ctl)")
        self.bindir = str(bindir)
        self.port = port or free_port()
        self.root = os.geteuid() == 0
        if self.root:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                missing("the 'postgres' user (to run PostgreSQL as root)")
        self.dir = tempfile.mkdtemp(prefix="interlock-pg-")
        self.data = os.path.join(self.dir, "data")
        if self.root:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-locale", "--encoding=UTF8")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    @property
    def url(self) -> str:
        """An asyncpg SQLAlchemy URL of the cluster's ``postgres`` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60",
                  "-o", opts, "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
                                    "-p", str(self.port)], check=False)
            if ready.returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not start on port {self.port}")

    def stop(self) -> None:
        """Stop at once (connections are cut, as in a crash or a failover)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
