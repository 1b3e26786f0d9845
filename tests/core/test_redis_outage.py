"""RedisStore through outages, against a redis-server of this module's own that the tests stop and start.

Down means: requests keep working on process-local state (or, for budget and rate-limit
decisions under ``on_error = "reject"``, refuse with StoreUnavailable), the status says
so, and when Redis is back the shared state is used again and on_reconnect callbacks run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from interlock.core.store import StoreSettings, StoreUnavailable, open_store
from tests.servers import RedisServer, unique_prefix

pytest.importorskip("redis")

from interlock.core.redis_store import RedisStore  # noqa: E402  (after the skip: needs redis)


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], deadline: float = 20.0) -> None:
    """Poll until ``check`` holds; fail after ``deadline`` seconds (a bound on waiting, not on speed)."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > end:
            pytest.fail("condition did not hold within the deadline")
        await asyncio.sleep(0.02)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, not started."""
    srv = RedisServer()
    yield srv
    srv.close()


def raw_get(server: RedisServer, key: str) -> Any:
    """A key as a second, independent client sees it on the server."""
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        return client.get(key)
    finally:
        client.close()


def redis_store(server: RedisServer, **settings: Any) -> RedisStore:
    # short backoff so the tests do not wait seconds for the supervisor's next probe
    return RedisStore(StoreSettings(url=server.url, **{"prefix": unique_prefix(), "connect_timeout": 0.5, **settings}),
                      backoff=(0.05, 0.5))


def healthy(store: RedisStore) -> Callable[[], bool]:
    return lambda: store.status()["degraded"] is False


def degraded(store: RedisStore) -> Callable[[], bool]:
    return lambda: store.status()["degraded"] is True


async def test_started_while_down_works_locally_then_shares_when_redis_starts(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="interlock.store")
    prefix = unique_prefix()
    store = open_store(StoreSettings(url=server.url, prefix=prefix, connect_timeout=0.5))
    assert isinstance(store, RedisStore)
    reconnected: list[int] = []

    async def on_reconnect() -> None:
        reconnected.append(await store.incr("seeded"))

    store.on_reconnect(on_reconnect)
    await store.start()  # returns although nothing listens on the port
    try:
        assert await store.incr("local") == 1
        assert await store.incr("local") == 2
        await store.set("k", {"v": 1})
        assert await store.get("k") == {"v": 1}
        assert await store.reserve(["b"], [5], 2) == (None, [2])  # on_error = "local": decided locally
        status = store.status()
        assert status["degraded"] is True and status["since"] is not None
        assert status["outages"] == 1 and status["fallback_ops"] >= 5
        assert status["kind"] == "redis" and status["shared"] is True and status["on_error"] == "local"
        assert reconnected == []

        server.start()
        await eventually(healthy(store))
        assert store.status()["since"] is None
        await eventually(lambda: reconnected == [1])  # ran once, against Redis
        assert await store.incr("shared", 5) == 5
        await store.set("doc", {"x": [1]})
        assert raw_get(server, f"{prefix}shared") == b"5"
        assert raw_get(server, f"{prefix}doc") == b'{"x":[1]}'
        assert raw_get(server, f"{prefix}seeded") == b"1"
        # what was written locally during the outage is not Redis's state
        assert raw_get(server, f"{prefix}local") is None
        assert await store.get("local") is None
    finally:
        await store.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "reachable again" in r.getMessage()]
    assert len(warnings) == 1 and len(infos) == 1


async def test_outage_under_use_falls_back_and_recovers(server: RedisServer) -> None:
    server.start()
    store, other = redis_store(server), None
    await store.start()
    runs: list[str] = []

    async def on_reconnect() -> None:
        runs.append("again")

    store.on_reconnect(on_reconnect)
    heard: list[str] = []
    store.subscribe("news", heard.append)
    try:
        assert await store.incr("n") == 1
        await store.set("p", {"state": "closed"})
        assert await store.peek("p") == {"state": "closed"}

        server.stop()
        assert await store.incr("n") == 1  # the local counter: Redis's 1 is out of reach
        assert await store.incr("n") == 2
        await store.update("p", lambda old: {"state": "local"})
        assert await store.peek("p") == {"state": "local"}
        assert await store.lease("l", "m", 1, ttl=60) == (True, 1)
        status = store.status()
        assert status["degraded"] is True and status["outages"] == 1
        # publish still reaches this process's subscribers while degraded
        await store.publish("news", "while-down")
        assert heard == ["while-down"]

        server.start()
        await eventually(healthy(store))
        await eventually(lambda: runs == ["again"])
        # Redis again (restarted without persistence: empty), not the local counter at 2
        assert await store.incr("n") == 1
        assert raw_get(server, f"{store.settings.prefix}n") == b"1"
        assert await store.get("p") is None
        assert await store.peek("p") is None

        # the subscription came back with Redis: another store's message arrives
        other = redis_store(server, prefix=store.settings.prefix)

        async def arrived() -> bool:
            assert other is not None
            await other.publish("news", "after")
            return "after" in heard

        await eventually(arrived)

        # a second outage is counted as one more, and recovered from again
        server.stop()
        assert await store.incr("n") == 3  # the local counter continues from the first outage
        await eventually(degraded(store))
        assert store.status()["outages"] == 2
        server.start()
        await eventually(healthy(store))
        await eventually(lambda: runs == ["again", "again"])
        assert await store.incr("n") == 1
    finally:
        await store.close()
        if other is not None:
            await other.close()


async def test_idle_store_notices_an_outage_through_its_subscription(server: RedisServer) -> None:
    server.start()
    store = redis_store(server)
    await store.start()
    try:
        await eventually(lambda: store._pubsub is not None)
        server.stop()
        await eventually(degraded(store))  # no operation ran: the listener saw the connection drop
        server.start()
        await eventually(healthy(store))
    finally:
        await store.close()


async def test_reject_policy_refuses_decisions_but_not_routing_state(server: RedisServer) -> None:
    store = redis_store(server, on_error="reject")
    await store.start()
    try:
        with pytest.raises(StoreUnavailable):
            await store.reserve(["budget"], [10], 1)
        with pytest.raises(StoreUnavailable):
            await store.lease("rl", "m", 5, ttl=60)
        # everything else falls back to process-local state
        assert await store.incr("c") == 1
        assert await store.add(["a", "b"], 2) == [2, 2]
        assert await store.add_once("m", "a", 1) is True
        await store.set("s", 1)
        assert await store.update("s", lambda old: old + 1) == 2
        assert await store.setdefault("s", 9) == 2
        assert await store.get("s") == 2 and await store.peek("s") == 2
        assert await store.leases("rl") == 0
        await store.unlease("rl", "m")
        assert await store.items("") == {"c": 1, "a": 3, "b": 2, "m": 1, "s": 2}
        assert await store.delete("c") == 1
        await store.publish("ch", "x")
        assert store.status()["on_error"] == "reject" and store.status()["degraded"] is True

        server.start()
        await eventually(healthy(store))
        assert await store.reserve(["budget"], [10], 1) == (None, [1])
        assert await store.lease("rl", "m", 5, ttl=60) == (True, 1)
    finally:
        await store.close()


async def test_a_hung_redis_does_not_hang_operations() -> None:
    # accepts connections and never answers: operations give up after connect_timeout
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    store = RedisStore(StoreSettings(url=f"redis://127.0.0.1:{port}/0", connect_timeout=0.2), backoff=(0.05, 0.5))
    try:
        # the bound only keeps a broken build from hanging the test run
        assert await asyncio.wait_for(store.incr("c"), 30) == 1
        assert store.status()["degraded"] is True
        # degraded: no Redis round trip is even attempted
        assert await asyncio.wait_for(store.incr("c"), 30) == 2
    finally:
        await store.close()
        listener.close()
        await listener.wait_closed()


async def test_password_never_appears_in_status_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-Pa55word"
    srv = RedisServer(password=secret).start()
    wrong = RedisServer(port=srv.port, password="wrong-Pa55word")  # the same server, a wrong password
    store = redis_store(srv)
    bad = redis_store(wrong)
    try:
        await store.start()
        await bad.start()
        assert await store.incr("c") == 1  # authenticated
        assert await bad.incr("c") == 1  # refused by the server: local
        assert bad.status()["degraded"] is True
        srv.stop()
        assert await store.incr("c") == 1
        srv.start()
        await eventually(healthy(store))
        shown = repr(store.status()) + repr(bad.status()) + caplog.text
        assert "***" in store.status()["url"]
        assert any("unreachable" in r.getMessage() for r in caplog.records)
        assert secret not in shown and "wrong-Pa55word" not in shown
    finally:
        await store.close()
        await bad.close()
        srv.close()
        wrong.close()


# -- URLs and packaging ---------------------------------------------------------------- #


async def test_valkey_and_unix_socket_urls_reach_the_server(tmp_path: Any) -> None:
    import subprocess

    from interlock.core.redis_store import redis_url
    from tests.servers import redis_binary

    assert redis_url("valkey://h:1/2") == "redis://h:1/2"
    assert redis_url("valkeys://:pw@h:1/0") == "rediss://:pw@h:1/0"
    assert redis_url("unix:///run/redis.sock?db=3") == "unix:///run/redis.sock?db=3"
    tls = RedisStore(StoreSettings(url="valkeys://:pw@127.0.0.1:1/0"))
    assert "SSL" in tls._client.connection_pool.connection_class.__name__
    await tls.close()

    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not available")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await eventually(sock.exists)
        store = RedisStore(StoreSettings(url=f"unix://{sock}?db=2", prefix="u:"))
        await store.start()
        try:
            assert await store.incr("n") == 1
            assert store.status()["degraded"] is False
        finally:
            await store.close()
        import redis

        client = redis.Redis(unix_socket_path=str(sock), db=2)
        assert client.get("u:n") == b"1"  # db 2 of the URL, with the prefix
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_without_the_redis_package_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)  # `import redis...` now fails as if not installed
    monkeypatch.delitem(sys.modules, "interlock.core.redis_store")
    with pytest.raises(ImportError, match=r"pip install 'interlock\[redis\]'"):
        open_store(StoreSettings(url="redis://127.0.0.1:1/0"))


def test_the_core_imports_and_runs_without_redis() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['redis'] = None\n"
            "import interlock.core.app, interlock.core.gateway, interlock.core.store as s\n"
            "assert isinstance(s.open_store(s.StoreSettings()), s.MemoryStore)\n"
            "assert not any(m == 'redis' or m.startswith('redis.') for m in sys.modules if sys.modules[m] is not None)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
