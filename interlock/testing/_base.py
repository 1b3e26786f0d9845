"""What every fake upstream shares: lifecycle, request recording, and fault injection.

A provider's fake subclasses :class:`FakeServer`, adds its routes, says how its
errors look and how to find the model in a request, and streams through
:meth:`FakeServer.play` so every wire protocol degrades the same way under a
:class:`Fault` (status, Retry-After, latency, TTFT stall, mid-stream cut,
malformed event, in-band error).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import random
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson
from aiohttp import web

__all__ = ["Fault", "FakeServer", "ReceivedRequest", "merge_usage", "request_state"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(kw_only=True)
class Fault:
    """One injected misbehaviour, applied to the next ``times`` matching requests (None: forever).

    A request matches when its path ends with ``path`` and its JSON ``model`` equals ``model``
    (None matches anything); the first queued fault that matches is used up, whatever the
    endpoint or streaming mode.  ``status`` (with optional ``body``; default: the provider's own
    error for that status) replaces the response with an error; ``latency``, ``ttft``, ``cut_after``,
    ``malformed_at`` and ``error_event_at`` degrade an otherwise successful response (the last
    four only affect streams).  ``headers`` and ``retry_after`` are added to whichever response
    is sent.  Chunk indices count the content events after the stream's opening events (for tool
    calls: the tool-call fragments); an index past the last one acts just before the final events.
    """

    status: int | None = None
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    latency: float = 0.0
    ttft: float = 0.0
    cut_after: int | None = None
    malformed_at: int | None = None
    error_event_at: int | None = None
    model: str | None = None
    path: str | None = None
    times: int | None = 1

    def __post_init__(self) -> None:
        # Validate eagerly so a bad fault posted to /_fake/faults is a 400, not a broken server.
        if self.status is not None and not (isinstance(self.status, int) and 100 <= self.status <= 599):
            raise ValueError(f"status must be an HTTP status code, got {self.status!r}")
        if not isinstance(self.headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise ValueError("headers must be a mapping of strings")
        for name in ("latency", "ttft"):
            if not isinstance(getattr(self, name), int | float) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative number")
        for name in ("cut_after", "malformed_at", "error_event_at"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer")
        if self.times is not None and (not isinstance(self.times, int) or self.times < 1):
            raise ValueError("times must be a positive integer or None (forever)")
        if self.retry_after is not None and not isinstance(self.retry_after, int | float):
            raise ValueError("retry_after must be a number of seconds")

    @classmethod
    def from_dict(cls, data: Any) -> Fault:
        """Build a fault from a JSON object using the dataclass field names."""
        if not isinstance(data, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**data)

    def matches(self, path: str, model: Any) -> bool:
        """Whether this fault applies to a request for ``path`` naming ``model``."""
        if self.path is not None and not path.endswith(self.path):
            return False
        return self.model is None or model == self.model

    def response_headers(self) -> dict[str, str]:
        """Extra headers this fault adds to the response, including ``Retry-After``."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            seconds = float(self.retry_after)
            headers["Retry-After"] = str(int(seconds)) if seconds.is_integer() else str(seconds)
            headers["retry-after-ms"] = str(round(seconds * 1000))
        return headers


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as the fake received it (``json`` is None for empty or malformed bodies)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    query: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, as served by ``GET /_fake/requests``."""
        return dataclasses.asdict(self)


@dataclass
class _FaultSlot:
    fault: Fault
    remaining: int | None


@dataclass
class _RequestState:
    """What the middleware learned about a request, handed on to the endpoint handlers."""

    raw: bytes = b""
    json: Any = None
    malformed: bool = False
    fault: Fault | None = None


# aiohttp >= 3.14 warns about plain string keys in request storage; older versions lack RequestKey.
_STATE: Any = (
    web.RequestKey("interlock_fake_state", _RequestState)
    if hasattr(web, "RequestKey")
    else ("interlock_fake_state")
)


def merge_usage(native: dict[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``native`` (a fake's own usage object) with ``override`` deep-merged into it.

    This is what a fake's ``usage`` knob does: nested objects merge key by key, anything else
    (numbers, strings, lists) replaces the fake's value, and keys the fake does not send are
    added. So a test can make a fake report the usage a real provider reports (cache writes,
    reasoning tokens, search counts...) in that provider's own wire shape, while the fake keeps
    whatever the override leaves out. ``None`` (the default knob) returns ``native`` unchanged.
    """
    if not override:
        return native
    merged = dict(native)
    for key, value in override.items():
        mine = merged.get(key)
        if isinstance(mine, dict) and isinstance(value, Mapping):
            merged[key] = merge_usage(mine, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def request_state(request: web.Request) -> _RequestState:
    """What the middleware recorded about ``request`` (raw body, parsed JSON, the fault)."""
    state: _RequestState | None = request.get(_STATE)
    return state if state is not None else _RequestState()


class FakeServer:
    """Base of every fake upstream: start it, point a client at :attr:`base_url`, inject faults.

    Start with ``await fake.start()``, ``async with fake`` or, from sync code,
    ``with fake.run_in_thread()``. Every request is recorded in :attr:`requests`. An aiohttp
    app can run once, so start an instance only once (or serve :attr:`app` with aiohttp's
    ``TestServer``). Subclasses implement :meth:`add_routes` and :meth:`error_response`, and
    may override :meth:`authorized`, :meth:`model_of` and :meth:`is_generation`.
    """

    #: path prefix clients put in their base URL (``/v1`` for OpenAI, ``""`` for Anthropic)
    prefix: ClassVar[str] = ""
    #: status and message of an unauthorised request
    auth_failure: ClassVar[tuple[int, str]] = (401, "invalid api key")

    def __init__(
        self,
        *,
        api_key: str | None = None,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self.api_key = api_key
        self.seed = seed
        self.failure_rate = failure_rate
        self.requests: list[ReceivedRequest] = []
        self.record_limit = record_limit
        self._rng = random.Random(seed)
        self._faults: list[_FaultSlot] = []
        # Faults may be added from the test thread while the server runs in run_in_thread's loop.
        self._lock = threading.Lock()
        self._counter = 0
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None
        # Generous body limit: multimodal requests with inline base64 images easily exceed 1 MiB.
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        self.app.on_response_prepare.append(self._on_response_prepare)
        self.add_routes(self.app.router)
        self.app.router.add_post("/_fake/faults", self._control_add_fault)
        self.app.router.add_delete("/_fake/faults", self._control_clear_faults)
        self.app.router.add_get("/_fake/requests", self._control_requests)

    # -- what a provider's fake defines ---------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the provider's endpoints."""
        raise NotImplementedError

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        """The provider's error for ``status`` (``message`` None: its usual text for that status)."""
        raise NotImplementedError

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries :attr:`api_key` the way this provider expects it."""
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def model_of(self, request: web.Request, body: Any) -> Any:
        """The model a request names, for :attr:`Fault.model` matching."""
        return body.get("model") if isinstance(body, dict) else None

    def is_generation(self, request: web.Request) -> bool:
        """Whether ``failure_rate`` applies to this request (generation endpoints only)."""
        return request.method == "POST"

    def faultable(self, request: web.Request) -> bool:
        """Whether queued faults may apply to this request (False for e.g. an OAuth token endpoint)."""
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        """Bind ``host:port`` (port 0 picks a free one) and serve; returns ``self``."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        # A short shutdown timeout: a client that abandoned a stalled stream must not hang stop().
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        self._port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop serving and close all connections; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[Self]:
        """Serve from a private event loop in a daemon thread for the duration of the block."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(host, port), loop).result(timeout=30)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
                loop.close()

    @property
    def port(self) -> int:
        """The bound TCP port (only after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:1234``."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client of this provider uses as its base URL (root plus :attr:`prefix`)."""
        return self.url + self.prefix

    def next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}{self._counter}"

    # -- faults ------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Queue ``fault``; faults are tried in the order they were added."""
        with self._lock:
            self._faults.append(_FaultSlot(fault, fault.times))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Faults that still have uses left, in matching order."""
        with self._lock:
            return [slot.fault for slot in self._faults]

    def _take_fault(self, path: str, model: Any) -> Fault | None:
        with self._lock:
            for slot in self._faults:
                if slot.fault.matches(path, model):
                    if slot.remaining is not None:
                        slot.remaining -= 1
                        if slot.remaining <= 0:
                            self._faults.remove(slot)
                    return slot.fault
        return None

    def fault_response(self, fault: Fault) -> web.Response:
        """The error response a status fault sends."""
        assert fault.status is not None
        if fault.body is None:
            return self.error_response(fault.status)
        if isinstance(fault.body, str):
            return web.Response(text=fault.body, status=fault.status)
        return web.Response(body=orjson.dumps(fault.body), status=fault.status, content_type="application/json")

    # -- plumbing ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Record the request, enforce the API key, then apply faults before the real handler."""
        if request.path.startswith("/_fake/"):
            return await handler(request)
        raw = await request.read()
        state = request[_STATE] = _RequestState(raw=raw)
        if raw:
            try:
                state.json = orjson.loads(raw)
            except orjson.JSONDecodeError:
                state.malformed = True
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(ReceivedRequest(request.method, request.path, headers, state.json, dict(request.query)))
        if self.record_limit is not None and len(self.requests) > self.record_limit:
            del self.requests[: len(self.requests) - self.record_limit]
        if not self.authorized(request):
            return self.error_response(self.auth_failure[0], self.auth_failure[1])
        fault = state.fault = (
            self._take_fault(request.path, self.model_of(request, state.json)) if self.faultable(request) else None
        )
        if fault is not None and fault.latency > 0:
            await asyncio.sleep(fault.latency)
        if fault is not None and fault.status is not None:
            return self.fault_response(fault)
        if self.failure_rate > 0 and self.is_generation(request) and self._rng.random() < self.failure_rate:
            return self.error_response(503)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            # Unknown routes/methods: answer in the provider's error shape rather than aiohttp's text.
            return self.error_response(exc.status, f"Unknown request URL: {request.method} {request.path}.")

    async def _on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        fault = request_state(request).fault
        if fault is not None:
            response.headers.update(fault.response_headers())
        response.headers.setdefault("x-request-id", f"req_fake_{len(self.requests)}")

    async def play(
        self,
        request: web.Request,
        response: web.StreamResponse,
        *,
        head: Sequence[bytes],
        events: Sequence[bytes],
        tail: Sequence[bytes],
        error_event: bytes,
        malformed: bytes,
    ) -> web.StreamResponse:
        """Stream ``head``, then ``events`` (the content), then ``tail``, applying the request's fault.

        ``ttft`` stalls after the head; at content index ``cut_after`` the connection is
        dropped mid-body; at ``error_event_at`` the provider's in-band ``error_event`` is sent
        and the stream ends; at ``malformed_at`` the ``malformed`` bytes replace that event
        (the stream then goes on). Indices past the end act just before the tail.
        """
        fault = request_state(request).fault or Fault()

        def at(index: int | None) -> int | None:
            return None if index is None else min(index, len(events))

        cut, malformed_at, error_at = at(fault.cut_after), at(fault.malformed_at), at(fault.error_event_at)
        try:
            if not response.prepared:
                await response.prepare(request)
            for data in head:
                await response.write(data)
            if fault.ttft > 0:
                await asyncio.sleep(fault.ttft)
            for position in range(len(events) + 1):
                if position == cut:
                    # Abrupt close mid-body: the client sees a broken stream, not a clean end.
                    if request.transport is not None:
                        request.transport.close()
                    return response
                if position == error_at:
                    await response.write(error_event)
                    await response.write_eof()
                    return response
                if position == malformed_at:
                    await response.write(malformed)  # in place of this event
                    continue
                if position < len(events):
                    await response.write(events[position])
            for data in tail:
                await response.write(data)
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up mid-stream; nothing left to send
        return response

    # -- /_fake control endpoints ----------------------------------------------------------------

    async def _control_add_fault(self, request: web.Request) -> web.Response:
        try:
            fault = Fault.from_dict(orjson.loads(await request.read()))
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            return web.Response(
                body=orjson.dumps({"error": {"message": str(exc), "type": "invalid_request_error"}}),
                status=400,
                content_type="application/json",
            )
        self.add_fault(fault)
        return web.Response(body=orjson.dumps(dataclasses.asdict(fault)), status=201, content_type="application/json")

    async def _control_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.Response(body=orjson.dumps({"cleared": True}), content_type="application/json")

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps([r.to_dict() for r in self.requests]), content_type="application/json")
