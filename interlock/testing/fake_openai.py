"""A fake upstream that speaks the OpenAI wire protocol, with fault injection.

``FakeOpenAI`` serves ``/v1/models``, ``/v1/chat/completions`` (plain and SSE streaming, tools,
JSON modes, ``n``) and ``/v1/embeddings`` with deterministic answers, so the gateway's tests,
plugin authors and the ``--demo`` mode can run without a real provider.  Faults (error
statuses, latency, stalled or broken streams) are queued with :meth:`FakeOpenAI.add_fault`, or
over HTTP at ``/_fake/faults`` from another process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import math
import random
import re
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeGuard

import orjson
from aiohttp import web

__all__ = ["FakeOpenAI", "Fault", "ReceivedRequest"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A fixed timestamp for model listings so responses are reproducible.
_MODEL_CREATED = 1_700_000_000
# One "token" is a word plus its trailing whitespace; the `\s+` branch only catches leading
# whitespace, so "".join(findall(text)) == text always holds.
_WORD_RE = re.compile(r"\S+\s*|\s+")
_PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON.)"
)
# (type, code, message) per status, mirroring what OpenAI sends for those statuses.
_DEFAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided"),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to access this resource."),
    404: ("invalid_request_error", "not_found", "The requested resource was not found."),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached for requests. Try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "overloaded", "The engine is currently overloaded, please try again later."),
    504: ("server_error", "timeout", "The server timed out while processing your request."),
}


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> web.Response:
    return _json_response(_error_body(message, type_, param, code), status)


def _invalid(param: str | None, message: str, code: str | None = None) -> web.Response:
    """A 400 ``invalid_request_error`` naming the offending parameter, as OpenAI reports it."""
    return _error(400, message, "invalid_request_error", param, code)


def _is_int(value: Any, low: int = 0, high: int = 2**31) -> TypeGuard[int]:
    """``low <= value <= high`` for real ints; JSON booleans are ints to Python but not to OpenAI."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _default_error_body(status: int) -> dict[str, Any]:
    generic_type = "server_error" if status >= 500 else "invalid_request_error"
    type_, code, message = _DEFAULT_ERRORS.get(status, (generic_type, None, f"HTTP {status}"))
    return _error_body(message, type_, None, code)


@dataclass(kw_only=True)
class Fault:
    """One injected misbehaviour, applied to the next ``times`` matching requests (None: forever).

    A request matches when its path ends with ``path`` and its JSON ``model`` equals ``model``
    (None matches anything); the first queued fault that matches is used up, whatever the
    endpoint or streaming mode.  ``status`` (with optional ``body``; default: the OpenAI error
    for that status) replaces the response with an error; ``latency``, ``ttft``, ``cut_after``,
    ``malformed_at`` and ``error_event_at`` degrade an otherwise successful response (the last
    four only affect streams).  ``headers`` and ``retry_after`` are added to whichever response
    is sent.  Chunk indices count the content chunks after the initial role chunk (for tool
    calls: the tool-call fragments); an index past the last one acts just before the final chunk.
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

    json: Any = None
    malformed: bool = False
    fault: Fault | None = None


# aiohttp >= 3.14 warns about plain string keys in request storage; older versions lack RequestKey.
_STATE: Any = (
    web.RequestKey("interlock_fake_state", _RequestState)
    if hasattr(web, "RequestKey")
    else ("interlock_fake_state")
)


def _state(request: web.Request) -> _RequestState:
    state: _RequestState | None = request.get(_STATE)
    return state if state is not None else _RequestState()


@dataclass
class _Reply:
    """What every choice of one chat completion says (choices differ only by index and call id)."""

    content: str | None
    tool_name: str | None = None
    arguments: str | None = None
    finish_reason: str = "stop"


def _text_of(content: Any) -> tuple[str, int]:
    """Return ``(text, image_count)`` for message content given as a string or a list of parts."""
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    images = 0
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict) and part.get("type") in ("image_url", "input_image"):
            images += 1
    return " ".join(texts), images


def _prompt_tokens(messages: list[Any]) -> int:
    """Roughly 4 characters per token over all message text, like tiktoken on English."""
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        chars += len(_text_of(message.get("content"))[0])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                chars += len(str(call["function"].get("arguments", "")))
    return max(1, chars // 4)


def _example(schema: Any, root: Any, depth: int = 0) -> Any:
    """Build a minimal value that validates against a simple JSON schema."""
    if depth > 10 or not isinstance(schema, dict):
        return None  # recursive or unusable schema: stop rather than loop forever
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return _example(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # Prefer a non-null branch so Optional[...] fields still get a real value.
            real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _example((real or options)[0], root, depth + 1)
    type_ = schema.get("type")
    if isinstance(type_, list):
        type_ = next((t for t in type_ if t != "null"), "null")
    if type_ is None:
        type_ = "object" if "properties" in schema else "array" if "items" in schema else None
    if type_ == "string":
        return "text"
    if type_ in ("number", "integer"):
        return 1
    if type_ == "boolean":
        return True
    if type_ == "array":
        count = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
        return [_example(schema.get("items"), root, depth + 1) for _ in range(count)]
    if type_ == "object":
        props = schema.get("properties")
        return {k: _example(v, root, depth + 1) for k, v in props.items()} if isinstance(props, dict) else {}
    return None


def _split(text: str, parts: int) -> list[str]:
    """Split ``text`` into about ``parts`` pieces whose concatenation is exactly ``text``."""
    units: list[str] = _WORD_RE.findall(text)
    if len(units) <= 1 and parts > 1:
        units = list(text)  # no spaces (e.g. tool arguments): split by characters instead
    if not units:
        return []
    k = max(1, min(parts, len(units)))
    size, extra = divmod(len(units), k)
    pieces: list[str] = []
    start = 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        pieces.append("".join(units[start:end]))
        start = end
    return pieces


def _embed(text: str, dims: int) -> list[float]:
    """A deterministic unit vector derived from sha256 of ``text``."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range(math.ceil(dims / 8)))
    vec = [n / 2**31 - 1.0 for n in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    # Round-trip through float32 so the "float" and "base64" encodings carry identical values.
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vec))))


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


# What OpenAI sends when a stream fails after it started: an error object in place of a chunk.
_STREAM_ERROR = _sse(
    _error_body(
        "The server had an error while processing your request.", "server_error", code="internal_error"
    )
)


class FakeOpenAI:
    """A deterministic OpenAI-compatible server for tests and demos.

    Start it with ``await fake.start()``, ``async with FakeOpenAI() as fake`` or, from sync code,
    ``with FakeOpenAI().run_in_thread() as fake``; point a client at :attr:`base_url`.  Every
    request is recorded in :attr:`requests`.  An aiohttp app can run once, so start an instance
    only once (or serve :attr:`app` with aiohttp's ``TestServer`` instead).
    """

    def __init__(
        self,
        models: Iterable[str] = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small"),
        api_key: str | None = None,
        chunks: int = 5,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
    ) -> None:
        """Configure the served ``models``, optional required ``api_key``, stream ``chunks`` per
        reply, and a seeded ``failure_rate`` fraction of chat requests answered with 503.
        ``record_limit`` keeps only the newest requests in :attr:`requests` (long-running demos)."""
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self.models: list[str] = list(models)
        self.api_key = api_key
        self.chunks = max(1, chunks)
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
        self.app.router.add_get("/v1/models", self._list_models)
        self.app.router.add_get("/v1/models/{model_id:.+}", self._get_model)
        self.app.router.add_post("/v1/chat/completions", self._chat_completions)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_post("/_fake/faults", self._control_add_fault)
        self.app.router.add_delete("/_fake/faults", self._control_clear_faults)
        self.app.router.add_get("/_fake/requests", self._control_requests)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        """Bind ``host:port`` (port 0 picks a free one) and serve; returns ``self``."""
        if self._runner is not None:
            raise RuntimeError("FakeOpenAI is already running")
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
        thread = threading.Thread(target=loop.run_forever, name="FakeOpenAI", daemon=True)
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
            raise RuntimeError("FakeOpenAI has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """The URL an OpenAI client uses as ``base_url``, e.g. ``http://127.0.0.1:1234/v1``."""
        return f"http://{self._host}:{self.port}/v1"

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

    # -- plumbing ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Record the request, enforce the API key, then apply faults before the real handler."""
        if request.path.startswith("/_fake/"):
            return await handler(request)
        raw = await request.read()
        state = request[_STATE] = _RequestState()
        if raw:
            try:
                state.json = orjson.loads(raw)
            except orjson.JSONDecodeError:
                state.malformed = True
        parsed = state.json
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query)
        self.requests.append(ReceivedRequest(request.method, request.path, headers, parsed, query))
        if self.record_limit is not None and len(self.requests) > self.record_limit:
            del self.requests[: len(self.requests) - self.record_limit]
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided", "invalid_request_error", code="invalid_api_key")
        model = parsed.get("model") if isinstance(parsed, dict) else None
        fault = state.fault = self._take_fault(request.path, model)
        if fault is not None and fault.latency > 0:
            await asyncio.sleep(fault.latency)
        if fault is not None and fault.status is not None:
            body = _default_error_body(fault.status) if fault.body is None else fault.body
            if isinstance(body, str):
                return web.Response(text=body, status=fault.status)
            return _json_response(body, fault.status)
        if (
            request.path.endswith("/chat/completions")
            and self.failure_rate > 0
            and self._rng.random() < self.failure_rate
        ):
            return _json_response(_default_error_body(503), 503)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            # Unknown routes/methods: answer with an OpenAI-shaped error rather than aiohttp's text.
            message = f"Unknown request URL: {request.method} {request.path}."
            return _error(exc.status, message, "invalid_request_error", code="unknown_url")

    async def _on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        fault = _state(request).fault
        if fault is not None:
            response.headers.update(fault.response_headers())
        response.headers.setdefault("x-request-id", f"req_fake_{len(self.requests)}")

    def _next_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"chatcmpl-fake-{self._counter}"

    def _validated(self, request: web.Request, required: tuple[str, ...]) -> dict[str, Any] | web.Response:
        """The JSON body, or the error OpenAI would return for a malformed or incomplete one."""
        state = _state(request)
        body = state.json
        if state.malformed or not isinstance(body, dict):
            return _invalid(None, _PARSE_ERROR)
        for name in required:
            if body.get(name) is None:
                message = f"Missing required parameter: '{name}'."
                return _invalid(name, message, "missing_required_parameter")
        if body["model"] not in self.models:
            return self._model_not_found(body["model"])
        return body

    @staticmethod
    def _model_not_found(model: Any) -> web.Response:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(404, message, "invalid_request_error", code="model_not_found")

    # -- /v1/models -----------------------------------------------------------------------------

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "fake"}

    async def _list_models(self, request: web.Request) -> web.Response:
        return _json_response({"object": "list", "data": [self._model_object(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model_id"]
        if model not in self.models:
            return self._model_not_found(model)
        return _json_response(self._model_object(model))

    # -- /v1/chat/completions -------------------------------------------------------------------

    def _plan_reply(self, body: dict[str, Any]) -> _Reply | web.Response:
        """Decide the deterministic answer: a tool call, a tool-result echo, or a (JSON) reply."""
        messages: list[Any] = body["messages"]
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            return _invalid("tools", "'tools' must be an array.")
        functions = [
            t["function"] for t in tools or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        tool_choice = body.get("tool_choice")
        if functions and last.get("role") != "tool" and tool_choice != "none":
            function = functions[0]
            if isinstance(tool_choice, dict):
                wanted = (tool_choice.get("function") or {}).get("name")
                named = [f for f in functions if f.get("name") == wanted]
                if not named:
                    message = f"Invalid value for 'tool_choice': no function named '{wanted}' was specified."
                    return _invalid("tool_choice", message)
                function = named[0]
            params = function.get("parameters") or {"type": "object", "properties": {}}
            args = _example(params, params)
            arguments = orjson.dumps(args if isinstance(args, dict) else {}).decode()
            return _Reply(None, str(function.get("name", "")), arguments, "tool_calls")

        if last.get("role") == "tool":
            text = "Tool result: " + _text_of(last.get("content"))[0][:60]
        else:
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            user = users[-1] if users else {}
            prompt, images = _text_of(user.get("content"))
            text = f"Fake reply to: {prompt[:60]}"
            if images:
                text += f" ({images} image{'s' if images > 1 else ''})"
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_object":
            text = orjson.dumps({"reply": text}).decode()
        elif isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            text = orjson.dumps(_example(schema or {"type": "object"}, schema)).decode()

        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and not _is_int(limit, 1):
            return _invalid("max_tokens", "max_tokens must be a positive integer.")
        words = _WORD_RE.findall(text)
        if limit is not None and len(words) > limit:
            return _Reply("".join(words[:limit]).rstrip(), finish_reason="length")
        return _Reply(text)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = self._validated(request, ("model", "messages"))
        if isinstance(body, web.Response):
            return body
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return _invalid("messages", "'messages' must be a non-empty array.")
        n = body.get("n") if body.get("n") is not None else 1
        if not _is_int(n, 1, 128):
            return _invalid("n", "'n' must be an integer between 1 and 128.")
        reply = self._plan_reply(body)
        if isinstance(reply, web.Response):
            return reply

        completion_id = self._next_id()
        # Call ids derive from the completion id, so they are unique per call yet reproducible.
        call_ids = [
            f"call_{hashlib.sha256(f'{completion_id}:{i}'.encode()).hexdigest()[:24]}" for i in range(n)
        ]
        output = reply.content if reply.content is not None else reply.arguments or ""
        completion_tokens = max(1 if reply.tool_name else 0, len(_WORD_RE.findall(output)))
        usage = _usage(_prompt_tokens(messages), n * completion_tokens)
        base = {
            "id": completion_id,
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, base, reply, call_ids, usage if include_usage else None)

        choices = []
        for i in range(n):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply.content,
                "refusal": None,
                "annotations": [],
            }
            if reply.tool_name is not None:
                function = {"name": reply.tool_name, "arguments": reply.arguments}
                message["tool_calls"] = [{"id": call_ids[i], "type": "function", "function": function}]
            choices.append(
                {"index": i, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
            )
        return _json_response({**base, "object": "chat.completion", "choices": choices, "usage": usage})

    async def _stream(
        self,
        request: web.Request,
        base: dict[str, Any],
        reply: _Reply,
        call_ids: list[str],
        usage: dict[str, Any] | None,
    ) -> web.StreamResponse:
        """Send the reply as OpenAI-style SSE chunks, applying any streaming fault."""
        fault = _state(request).fault or Fault()

        def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            data = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            if usage is not None:
                data["usage"] = None  # include_usage: every chunk carries the key, only the last a value
            return _sse(data)

        # Content events interleave the choices piece by piece, as OpenAI does for n > 1.
        events: list[bytes] = []
        if reply.tool_name is None:
            pieces = _split(reply.content or "", self.chunks)
            for piece in pieces:
                events += [chunk(i, {"content": piece}) for i in range(len(call_ids))]
        else:
            pieces = _split(reply.arguments or "", self.chunks)
            function = {"name": reply.tool_name, "arguments": ""}
            for i, call_id in enumerate(call_ids):
                head = {"index": 0, "id": call_id, "type": "function", "function": function}
                events.append(chunk(i, {"tool_calls": [head]}))
            for piece in pieces:
                events += [
                    chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    for i in range(len(call_ids))
                ]

        def at(index: int | None) -> int | None:
            return None if index is None else min(index, len(events))

        cut, malformed, error_at = at(fault.cut_after), at(fault.malformed_at), at(fault.error_event_at)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            role_content = "" if reply.tool_name is None else None
            for i in range(len(call_ids)):
                await response.write(chunk(i, {"role": "assistant", "content": role_content}))
            if fault.ttft > 0:
                await asyncio.sleep(fault.ttft)
            for position in range(len(events) + 1):
                if position == cut:
                    # Abrupt close mid chunked-body: the client sees a broken stream, not a clean end.
                    if request.transport is not None:
                        request.transport.close()
                    return response
                if position == error_at:
                    await response.write(_STREAM_ERROR)
                    await response.write_eof()
                    return response
                if position == malformed:
                    await response.write(b"data: {not json\n\n")
                    continue
                if position < len(events):
                    await response.write(events[position])
            for i in range(len(call_ids)):
                await response.write(chunk(i, {}, reply.finish_reason))
            if usage is not None:
                await response.write(
                    _sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up mid-stream; nothing left to send
        return response

    # -- /v1/embeddings -------------------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = self._validated(request, ("model", "input"))
        if isinstance(body, web.Response):
            return body
        raw = body["input"]

        def is_tokens(value: Any) -> bool:
            return isinstance(value, list) and bool(value) and all(map(_is_int, value))

        items: list[str | list[int]]
        if isinstance(raw, str) or is_tokens(raw):
            items = [raw]
        elif (
            isinstance(raw, list)
            and raw
            and (all(isinstance(x, str) for x in raw) or all(map(is_tokens, raw)))
        ):
            items = list(raw)
        else:
            message = "'input' must be a string, an array of strings, or an array of token arrays."
            return _invalid("input", message)
        dims = body.get("dimensions") if body.get("dimensions") is not None else 8
        if not _is_int(dims, 1, 4096):
            return _invalid("dimensions", "'dimensions' must be an integer between 1 and 4096.")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return _invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'.")

        data = []
        tokens = 0
        for index, item in enumerate(items):
            text = item if isinstance(item, str) else ",".join(map(str, item))
            tokens += max(1, len(item.split())) if isinstance(item, str) else len(item)
            vector = _embed(text, dims)
            embedding: list[float] | str = vector
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})

    # -- /_fake control endpoints ----------------------------------------------------------------

    async def _control_add_fault(self, request: web.Request) -> web.Response:
        try:
            fault = Fault.from_dict(orjson.loads(await request.read()))
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            return _invalid(None, str(exc))
        self.add_fault(fault)
        return _json_response(dataclasses.asdict(fault), status=201)

    async def _control_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return _json_response({"cleared": True})

    async def _control_requests(self, request: web.Request) -> web.Response:
        return _json_response([r.to_dict() for r in self.requests])
