"""A fake upstream that speaks the OpenAI wire protocol, with fault injection.

``FakeOpenAI`` serves ``/v1/models``, ``/v1/chat/completions`` (plain and SSE streaming, tools,
JSON modes, ``n``), ``/v1/responses`` (the Responses API, :mod:`._openai_responses`) and ``/v1/embeddings`` with deterministic answers, so the gateway's tests,
plugin authors and the ``--demo`` mode can run without a real provider.  Faults (error
statuses, latency, stalled or broken streams) are queued with :meth:`FakeOpenAI.add_fault`, or
over HTTP at ``/_fake/faults`` from another process. The ``usage`` knob makes chat answers
report any OpenAI usage shape (cached, reasoning and audio tokens, Perplexity's
``num_search_queries``...).
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, Fault, ReceivedRequest, merge_usage, request_state
from interlock.testing._openai_responses import responses
from interlock.testing._replies import Reply, ReplyError, call_id, embed, plan_reply, prompt_tokens, split

__all__ = ["FakeOpenAI", "Fault", "ReceivedRequest"]

# A fixed timestamp for model listings so responses are reproducible.
_MODEL_CREATED = 1_700_000_000
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
    405: ("invalid_request_error", "unknown_url", "Method not allowed."),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached for requests. Try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "overloaded", "The engine is currently overloaded, please try again later."),
    504: ("server_error", "timeout", "The server timed out while processing your request."),
}


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _invalid(param: str | None, message: str, code: str | None = None) -> web.Response:
    """A 400 ``invalid_request_error`` naming the offending parameter, as OpenAI reports it."""
    return _json_response(_error_body(message, "invalid_request_error", param, code), 400)


def _is_int(value: Any, low: int = 0, high: int = 2**31) -> TypeGuard[int]:
    """``low <= value <= high`` for real ints; JSON booleans are ints to Python but not to OpenAI."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def text_of(content: Any) -> tuple[str, int]:
    """Return ``(text, image_count)`` for OpenAI message content: a string or a list of parts."""
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
    _error_body("The server had an error while processing your request.", "server_error", code="internal_error")
)


class FakeOpenAI(FakeServer):
    """A deterministic OpenAI-compatible server for tests and demos; see :class:`FakeServer`."""

    prefix = "/v1"
    auth_failure = (401, "Incorrect API key provided")

    def __init__(
        self,
        models: Iterable[str] = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small"),
        api_key: str | None = None,
        chunks: int = 5,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
        always_stream_usage: bool = False,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """Configure the served ``models``, optional required ``api_key``, stream ``chunks`` per
        reply, and a seeded ``failure_rate`` fraction of chat requests answered with 503.
        ``record_limit`` keeps only the newest requests in :attr:`requests` (long-running demos).
        ``always_stream_usage`` puts usage on the final chunk unasked, as Mistral's API does.

        ``usage`` (also settable later as :attr:`usage`) is deep-merged into the Chat Completions
        ``usage`` object of every answer, plain or streamed (the ``include_usage`` chunk, or the
        final chunk with ``always_stream_usage``), with :func:`~interlock.testing._base.merge_usage`:
        e.g. ``{"prompt_tokens": 9000, "prompt_tokens_details": {"cached_tokens": 3000}}`` makes
        the fake report a prompt-cache hit the way OpenAI does. Set every count the test relies on
        (``total_tokens`` is not recomputed). The Responses API and embeddings ignore it."""
        self.models: list[str] = list(models)
        self.always_stream_usage = always_stream_usage
        #: merged into every chat answer's ``usage`` (None: the fake's own counts only)
        self.usage: Mapping[str, Any] | None = usage
        self.chunks = max(1, chunks)
        super().__init__(api_key=api_key, seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self._list_models)
        router.add_get("/v1/models/{model_id:.+}", self._get_model)
        router.add_post("/v1/chat/completions", self._chat_completions)
        router.add_post("/v1/embeddings", self._embeddings)
        router.add_post("/v1/responses", self._responses)
        # Azure OpenAI's URL shapes: the deployment in the path (classic) or the unversioned v1 API
        router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat_completions)
        router.add_post("/openai/deployments/{deployment}/embeddings", self._embeddings)
        router.add_post("/openai/v1/chat/completions", self._chat_completions)
        router.add_post("/openai/v1/embeddings", self._embeddings)
        router.add_post("/openai/v1/responses", self._responses)

    def authorized(self, request: web.Request) -> bool:
        # OpenAI's Bearer token, or Azure's api-key header
        return super().authorized(request) or (self.api_key is not None and request.headers.get("api-key") == self.api_key)

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        generic_type = "server_error" if status >= 500 else "invalid_request_error"
        type_, code, default = _DEFAULT_ERRORS.get(status, (generic_type, None, f"HTTP {status}"))
        if message is not None and message.startswith("Unknown request URL"):
            code = "unknown_url"
        return _json_response(_error_body(message or default, type_, None, code), status)

    def is_generation(self, request: web.Request) -> bool:
        return request.path.endswith("/chat/completions")

    def _validated(self, request: web.Request, required: tuple[str, ...]) -> dict[str, Any] | web.Response:
        """The JSON body, or the error OpenAI would return for a malformed or incomplete one."""
        state = request_state(request)
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
        return _json_response(_error_body(message, "invalid_request_error", code="model_not_found"), 404)

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

    def _plan_reply(self, body: dict[str, Any]) -> Reply | web.Response:
        """Turn an OpenAI request into the shared reply planner's inputs."""
        messages: list[Any] = body["messages"]
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            return _invalid("tools", "'tools' must be an array.")
        functions = [
            t["function"] for t in tools or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt, images = text_of((users[-1] if users else {}).get("content"))
        fmt = body["response_format"] if isinstance(body.get("response_format"), dict) else {}
        spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and not _is_int(limit, 1):
            return _invalid("max_tokens", "max_tokens must be a positive integer.")
        try:
            return plan_reply(
                prompt=prompt,
                images=images,
                tools=functions,
                tool_choice=choice if isinstance(choice, str) else None,
                tool_result=text_of(last.get("content"))[0] if last.get("role") == "tool" else None,
                json_mode=fmt.get("type") == "json_object",
                schema=((spec.get("schema") if isinstance(spec, dict) else None) or {"type": "object"})
                if fmt.get("type") == "json_schema"
                else None,
                max_tokens=limit,
            )
        except ReplyError as exc:
            return _invalid("tool_choice", f"Invalid value for 'tool_choice': {exc}.")

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

        completion_id = self.next_id("chatcmpl-fake-")
        # Call ids derive from the completion id, so they are unique per call yet reproducible.
        call_ids = [call_id(f"{completion_id}:{i}") for i in range(n)]
        texts = [text_of(m.get("content"))[0] for m in messages if isinstance(m, dict)]
        texts += [
            str(c["function"].get("arguments", ""))
            for m in messages
            if isinstance(m, dict)
            for c in m.get("tool_calls") or []
            if isinstance(c, dict) and isinstance(c.get("function"), dict)
        ]
        usage = merge_usage(_usage(prompt_tokens(texts), n * reply.completion_tokens), self.usage)
        base = {
            "id": completion_id,
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(
                request, base, reply, call_ids, usage if include_usage else None,
                usage if self.always_stream_usage and not include_usage else None,
            )

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
        reply: Reply,
        call_ids: list[str],
        usage: dict[str, Any] | None,
        final_usage: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        """Send the reply as OpenAI-style SSE chunks, applying any streaming fault.

        ``usage`` is sent as the extra ``choices: []`` chunk (``include_usage``);
        ``final_usage`` rides on the last finish chunk instead (Mistral's habit).
        """

        def chunk(
            index: int, delta: dict[str, Any], finish_reason: str | None = None, with_usage: dict[str, Any] | None = None
        ) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            data = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            if usage is not None:
                data["usage"] = None  # include_usage: every chunk carries the key, only the last a value
            if with_usage is not None:
                data["usage"] = with_usage
            return _sse(data)

        # Content events interleave the choices piece by piece, as OpenAI does for n > 1.
        events: list[bytes] = []
        if reply.tool_name is None:
            for piece in split(reply.content or "", self.chunks):
                events += [chunk(i, {"content": piece}) for i in range(len(call_ids))]
        else:
            function = {"name": reply.tool_name, "arguments": ""}
            for i, cid in enumerate(call_ids):
                head = {"index": 0, "id": cid, "type": "function", "function": function}
                events.append(chunk(i, {"tool_calls": [head]}))
            for piece in split(reply.arguments or "", self.chunks):
                events += [
                    chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    for i in range(len(call_ids))
                ]
        role_content = "" if reply.tool_name is None else None
        last = len(call_ids) - 1
        tail = [chunk(i, {}, reply.finish_reason, final_usage if i == last else None) for i in range(len(call_ids))]
        if usage is not None:
            tail.append(_sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
        tail.append(b"data: [DONE]\n\n")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        return await self.play(
            request,
            response,
            head=[chunk(i, {"role": "assistant", "content": role_content}) for i in range(len(call_ids))],
            events=events,
            tail=tail,
            error_event=_STREAM_ERROR,
            malformed=b"data: {not json\n\n",
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await responses(self, request, self.models, self.chunks)

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
            vector = embed(text, dims)
            embedding: list[float] | str = vector
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})
