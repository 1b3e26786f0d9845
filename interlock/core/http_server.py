"""The HTTP server under the app: aiohttp's, with bounds on slow, idle and excess client connections.

``interlock serve`` (one process, or each ``--workers`` worker) runs the app with
:func:`run`, and the in-process test gateway listens with :func:`listen`: the app
on aiohttp's :class:`~aiohttp.web.AppRunner`, each accepted connection handled by
:class:`_Connection`, aiohttp's ``RequestHandler`` plus what aiohttp lacks. The
bounds (:class:`ConnectionLimits`, ``[server]`` in the config):

* ``header_timeout``: a request's header block must be complete within this many
  seconds of its first byte, and a new connection's first request within this of
  the connect. It is a deadline for the whole block, not per line: a client that
  trickles a line every half second is cut off too. It gets a 408 and the
  connection is closed.
* ``keepalive_timeout``: an idle connection between requests is closed after this
  (aiohttp's own keep-alive timer).
* ``max_connections``: while this many client connections are open, a new one is
  answered ``503`` (``Retry-After: 1``, ``Connection: close``) without its request
  being read, and closed; open connections are not affected.
* ``body_timeout`` is applied where a body is read (:func:`interlock.core.http_json.read_json`).

The cost on the hot path: a timer handle per connection (armed at the connect,
cancelled when a header block completes) and one more Python frame per chunk a
client sends (a few attribute reads; ~0.3% of a request's instructions, measured
with bench/instructions.py). :func:`run` also gives memory back once requests
have stopped after a burst (:func:`_give_memory_back_when_quiet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.streams import StreamReader

from interlock.core import jsonutil

log = logging.getLogger("interlock.http")

#: the listening socket's accept queue (aiohttp's own default)
BACKLOG = 128
#: seconds a refused connection stays open after its 503 (half-closed), so the client reads the
#: answer before the close; closing at once could reset the connection under the unread answer
REFUSED_LINGER = 1.0
#: at most one warning about refused connections per this many seconds
REFUSED_LOG_INTERVAL = 10.0
#: serve gives memory back once no request has started for QUIET_CHECKS checks this many seconds apart
#: (30-45s after a burst: after the upstream pool closed its idle connections, 15-30s)
QUIET_CHECK_INTERVAL = 15.0
QUIET_CHECKS = 2


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on client connections (``[server]``): seconds, and a count."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    max_connections: int = 10_000


def _answer(status: str, message: str, etype: str, code: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 answer that closes the connection, with an OpenAI-shaped error body."""
    body = jsonutil.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n")
    return head.encode() + body


class Listener:
    """The protocol factory of one listening socket: counts open connections, refuses beyond the limit."""

    def __init__(self, server: web.Server, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server  # aiohttp's: dispatches requests to the app, drains connections on shutdown
        self.limits = limits
        self.loop = loop
        self.open = 0  # client connections accepted and not yet lost
        self.refused = 0  # connections refused since the start
        self.sockets: asyncio.Server | None = None  # set by listen()
        self.refusal = _answer(
            "503 Service Unavailable",
            f"the gateway has {limits.max_connections} client connections open (its max_connections); retry shortly",
            "server_error", "too_many_connections", "Retry-After: 1\r\n",
        )
        self.headers_late = _answer(
            "408 Request Timeout", f"the request headers were not complete within {limits.header_timeout:g}s",
            "invalid_request_error", "request_timeout",
        )
        self._refused_logged = 0  # self.refused when last logged
        self._refused_log_at = 0.0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limits.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now >= self._refused_log_at:
                self._refused_log_at = now + REFUSED_LOG_INTERVAL
                log.warning("refused %d client connection(s): %d are open, the [server] max_connections",
                            self.refused - self._refused_logged, self.open)
                self._refused_logged = self.refused
            return _Refused(self.refusal)
        self.open += 1  # given back in _Connection.connection_lost
        return _Connection(self)

    @property
    def port(self) -> int:
        """The port listened on (the real one when port 0 was asked for)."""
        assert self.sockets is not None
        return int(self.sockets.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting connections (open ones are drained by the runner's cleanup)."""
        if self.sockets is not None:
            self.sockets.close()


class _Connection(web.RequestHandler):
    """One client connection: aiohttp's handler with the header deadline and the connection count."""

    __slots__ = ("_listener", "_header_timeout", "_header_timer", "_body")

    def __init__(self, listener: Listener) -> None:
        # no access log (as `interlock serve` always ran): aiohttp accepts None there, its annotation does not
        super().__init__(listener.server, loop=listener.loop, keepalive_timeout=listener.limits.keepalive_timeout,
                         access_log=None)  # type: ignore[arg-type]
        self._listener: Listener | None = listener
        self._header_timeout = listener.limits.header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        # the payload of the last request whose header block completed, while its body is still
        # arriving: the bytes that arrive until it ends are body, after that the next header block
        self._body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first request's headers are due within header_timeout of the connect

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._listener is not None:
            self._listener.open -= 1
            self._listener = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._body = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        seen = self._request_count  # aiohttp counts the header blocks it parsed
        body = self._body
        _data_received(self, data)  # (not super(): this runs for every chunk a client sends)
        if self._request_count != seen:  # a header block completed: no deadline until the next one starts
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            messages = self._messages
            payload = messages[-1][1] if messages else None
            self._body = payload if payload is not None and not payload.is_eof() else None
        elif body is None:  # no body was awaited: these are the first bytes of a header block
            if self._header_timer is None and data:
                self._arm()
        elif body.is_eof():  # this chunk ended the body (bytes after it in the same chunk are not timed)
            self._body = None

    def _arm(self) -> None:
        loop = self._loop
        self._header_timer = loop.call_at(loop.time() + self._header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        transport, waiter = self.transport, self._waiter
        # only while aiohttp waits for a request: when one is pending or being handled, the late
        # bytes were pipelined behind it, and the keep-alive timer bounds them once it is answered
        if transport is None or self._force_close or waiter is None or waiter.done():
            return
        log.info("closed the connection from %s: its request headers were not complete within %gs",
                 _peer(transport), self._header_timeout)
        transport.write(self._listener.headers_late if self._listener is not None else b"")
        self.force_close()


_data_received = web.RequestHandler.data_received


class _Refused(asyncio.Protocol):
    """A connection over ``max_connections``: the 503, a half-close, and the close shortly after."""

    __slots__ = ("_answer", "_timer")

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        transport.write(self._answer)
        if transport.can_write_eof():
            transport.write_eof()  # the client sees the answer end; what it still sends is read and dropped
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read

    def eof_received(self) -> bool:
        return False  # the client is done too: close now

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def close_after_answer(request: web.BaseRequest) -> None:
    """The answer to ``request`` ends its connection: close it once written.

    For a body that stopped coming (``body_timeout``): aiohttp would otherwise linger up to
    10s reading the rest of it before closing. A no-op on a server other than this one.
    """
    protocol = request.protocol
    if isinstance(protocol, _Connection):
        protocol._lingering_time = 0.0


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "?")


async def listen(runner: web.BaseRunner, host: str, port: int, limits: ConnectionLimits, *,
                 reuse_port: bool | None = None) -> Listener:
    """Accept connections on ``host:port`` for ``runner``'s app (after ``runner.setup()``)."""
    if runner.server is None:
        raise RuntimeError("call runner.setup() before listen()")
    loop = asyncio.get_running_loop()
    listener = Listener(runner.server, limits, loop)
    listener.sockets = await loop.create_server(listener, host, port, backlog=BACKLOG, reuse_port=reuse_port)
    return listener


def run(app: web.Application, *, host: str, port: int, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop,
        ready: Callable[[], None] | None = None, reuse_port: bool | None = None,
        shutdown_timeout: float = 60.0) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then drain it (in-flight requests get ``shutdown_timeout``).

    ``ready()`` is called once the socket listens. What ``aiohttp.web.run_app`` does, on a
    :class:`Listener` instead of aiohttp's sites.
    """
    _raise_open_files_limit(limits.max_connections)

    async def serve() -> None:
        runner = web.AppRunner(app, handle_signals=True, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        listener = None
        try:
            listener = await listen(runner, host, port, limits, reuse_port=reuse_port)
            if ready is not None:
                ready()
            assert runner.server is not None
            await _give_memory_back_when_quiet(runner.server)  # runs until cancelled
        finally:
            if listener is not None:
                listener.close()
            await runner.cleanup()  # idle connections closed, in-flight requests finish, app cleanup

    main = loop.create_task(serve())
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)


async def _give_memory_back_when_quiet(server: web.Server) -> None:
    """After a burst, once no request has started for ``QUIET_CHECKS`` checks: collect and trim the heap.

    What a burst of concurrent requests allocated is freed when they end, but the allocators
    keep it: the cyclic GC runs rarely here (``interlock.cli`` raises its threshold), and glibc's
    malloc keeps freed heap. A full collection (the start-up objects are frozen, so it walks only
    what is alive since) and ``malloc_trim`` return part of it; CPython's small-object arenas that
    still hold one live object cannot be returned (docs/connections.md has the figures).
    Costs a few milliseconds once per quiet period, never while requests keep arriving.
    """
    trim = _malloc_trim()
    seen = trimmed = server.requests_count
    quiet = 0
    while True:
        await asyncio.sleep(QUIET_CHECK_INTERVAL)
        count = server.requests_count
        quiet = quiet + 1 if count == seen else 0
        seen = count
        if quiet >= QUIET_CHECKS and count != trimmed:
            trimmed = count
            gc.collect()
            if trim is not None:
                trim(0)


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another libc, or not Linux)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception during shutdown",
                                         "exception": task.exception(), "task": task})


def _raise_open_files_limit(max_connections: int) -> None:
    """Lift the soft open-files limit towards the hard one when it is too low for ``max_connections``.

    Each client connection, upstream connection and ledger file is a descriptor; a soft
    limit of 1024 (systemd's default) would make accept() fail long before 10,000 clients.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return
    wanted = max_connections * 2 + 1024  # a client connection may hold an upstream one; plus files, the store
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft < max_connections + 1024:  # not even the clients fit
        log.warning("the open-files limit is %d: fewer than max_connections (%d) clients with their upstream "
                    "connections; raise it (ulimit -n, systemd LimitNOFILE) or lower [server] max_connections",
                    soft, max_connections)
