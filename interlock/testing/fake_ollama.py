"""A fake Ollama server speaking the native API (``/api/chat``, ``/api/embed``, ``/api/tags``).

Answers come from :func:`~interlock.testing._replies.plan_reply`, like every
fake, rendered the way Ollama renders them: one JSON object for
``"stream": false``, otherwise NDJSON lines (``done: false`` deltas, tool calls
whole in one line, a final ``done: true`` line with ``done_reason`` and the
token counts). Ollama streams unless the request says ``"stream": false``, and
so does this fake. Errors are ``{"error": "..."}``; a mid-stream error is an
``{"error": ...}`` line after a 200, as ``docs/api/errors.mdx`` describes.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, merge_usage, request_state
from interlock.testing._replies import (
    WORD_RE,
    Reply,
    ReplyError,
    call_id,
    embed,
    plan_reply,
    prompt_tokens,
    split,
)

if TYPE_CHECKING:
    from interlock.testing.conformance import ProviderCase

__all__ = ["CONTEXT_LENGTH_ERROR", "FakeOllama", "conformance_case"]

#: what Ollama's runner answers (HTTP 400) when an input exceeds the context and truncation is off
CONTEXT_LENGTH_ERROR = "the input length exceeds the context length"
#: the in-band error line of a failed stream (the example in Ollama's docs/api/errors.mdx)
STREAM_ERROR = "an error was encountered while running the model"
_DEFAULT_ERRORS: dict[int, str] = {
    400: "invalid request",
    401: "unauthorized",
    403: "forbidden",
    404: "model not found, try pulling it first",
    405: "method not allowed",
    429: "too many requests, please try again later",
    500: "the model failed to generate a response",
    502: "bad gateway: the cloud model could not be reached",
    # Ollama's ErrMaxQueue, when OLLAMA_MAX_QUEUE requests are already waiting
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_MODIFIED_AT = "2024-06-01T12:00:00.000000000Z"  # fixed, so listings are reproducible


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _line(data: Any) -> bytes:
    return orjson.dumps(data) + b"\n"


def _now() -> str:
    """``created_at`` the way Go formats a ``time.Time``: RFC 3339 with nanoseconds."""
    ns = time.time_ns()
    moment = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def _words(text: str) -> int:
    return len(WORD_RE.findall(text))


class FakeOllama(FakeServer):
    """A deterministic Ollama server; see :class:`~interlock.testing._base.FakeServer` for faults."""

    prefix = ""
    auth_failure = (401, "unauthorized")

    def __init__(
        self,
        models: Iterable[str] = ("llama3.2", "llava", "all-minilm"),
        *,
        api_key: str | None = None,
        chunks: int = 5,
        tool_call_ids: bool = True,
        embed_context: int = 512,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """Serve ``models``; require ``Authorization: Bearer api_key`` if given (Ollama's cloud).

        ``chunks`` is the number of content lines per streamed reply; ``tool_call_ids`` False
        omits tool-call ids as Ollama releases before ids did; ``embed_context`` is the token
        window ``/api/embed`` enforces when a request sets ``truncate: false``.

        ``usage`` (also settable later as :attr:`usage`) is merged into the counters of every
        chat answer (the response object, or the stream's final ``done: true`` line) with
        :func:`~interlock.testing._base.merge_usage`, e.g. ``{"prompt_eval_count": 4096,
        "eval_count": 512}``: Ollama has no usage object, its counts are top-level fields.
        """
        self.models = list(models)
        self.chunks = max(1, chunks)
        self.tool_call_ids = tool_call_ids
        self.embed_context = embed_context
        #: merged into every chat answer's counters (None: the fake's own counts only)
        self.usage: Mapping[str, Any] | None = usage
        super().__init__(api_key=api_key, seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/chat", self._chat)
        router.add_post("/api/embed", self._embed)
        router.add_get("/api/tags", self._tags)
        router.add_get("/api/version", self._version)

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        default = _DEFAULT_ERRORS.get(status, "internal server error" if status >= 500 else "invalid request")
        return _json({"error": message or default}, status)

    def is_generation(self, request: web.Request) -> bool:
        return request.path == "/api/chat"

    def serves(self, model: str) -> bool:
        """Whether ``model`` is pulled; like Ollama, a name without a tag means ``:latest``."""
        names = {m if ":" in m else f"{m}:latest" for m in self.models}
        return (model if ":" in model else f"{model}:latest") in names

    # -- validation ------------------------------------------------------------------------

    def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        state = request_state(request)
        if state.malformed or not isinstance(state.json, dict):
            return self.error_response(400, "invalid character in request body: not JSON")
        body: dict[str, Any] = state.json
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error_response(400, "model is required")
        if not self.serves(model):
            return self.error_response(404, f'model "{model}" not found, try pulling it first')
        if "stream" in body and not isinstance(body["stream"], bool):
            return self.error_response(
                400, "json: cannot unmarshal into Go struct field ChatRequest.stream of type bool"
            )
        if "options" in body and not isinstance(body["options"], dict):
            return self.error_response(
                400, "json: cannot unmarshal into Go struct field options of type map[string]interface {}"
            )
        return body

    @staticmethod
    def _message_problem(message: Any) -> str | None:
        """Why Ollama's Go decoder would reject this message, if it would."""
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return "invalid message: each message needs a string role"
        if not isinstance(message.get("content", ""), str):
            return "json: cannot unmarshal array into Go struct field Message.messages.content of type string"
        for image in message.get("images") or ():
            if not isinstance(image, str) or image.startswith("data:"):
                return "illegal base64 data at input byte 4"
            try:
                base64.b64decode(image, validate=True)
            except binascii.Error:
                return "illegal base64 data at input byte 0"
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("arguments", {}), dict):
                return (
                    "json: cannot unmarshal string into Go struct field ToolCallFunction"
                    ".messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments"
                )
        return None

    # -- /api/chat ------------------------------------------------------------------------------

    def _plan(self, body: dict[str, Any]) -> Reply | web.Response:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return self.error_response(400, "messages must be an array")
        for message in messages:
            if problem := self._message_problem(message):
                return self.error_response(400, problem)
        users = [m for m in messages if m["role"] == "user"]
        last_user = users[-1] if users else {}
        last = messages[-1] if messages else {}
        tools = body.get("tools") or []
        functions = [
            t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        fmt = body.get("format")
        limit = (body.get("options") or {}).get("num_predict")
        try:
            return plan_reply(
                prompt=str(last_user.get("content") or ""),
                images=len(last_user.get("images") or ()),
                tools=functions,
                tool_result=str(last.get("content") or "") if last.get("role") == "tool" else None,
                json_mode=fmt == "json",
                schema=fmt if isinstance(fmt, dict) else None,
                # Ollama reads num_predict <= 0 as "no limit"
                max_tokens=limit if isinstance(limit, int) and limit > 0 else None,
            )
        except ReplyError as exc:  # cannot happen without tool_choice, kept for safety
            return self.error_response(400, str(exc))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request)
        if isinstance(body, web.Response):
            return body
        reply = self._plan(body)
        if isinstance(reply, web.Response):
            return reply
        messages: list[dict[str, Any]] = body["messages"]
        texts = [str(m.get("content") or "") for m in messages]
        texts += [
            orjson.dumps(c["function"].get("arguments", {})).decode()
            for m in messages
            for c in m.get("tool_calls") or ()
        ]
        # thinking models answer with their reasoning first when asked to think
        users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
        think = body.get("think")
        thinking = f"Thinking about: {(users or [''])[-1][:40]}" if think not in (None, False) else None
        completion_tokens = reply.completion_tokens + (_words(thinking) if thinking else 0)
        # Ollama says "stop" after a tool call too; only a num_predict cut is "length"
        done_reason = "length" if reply.finish_reason == "length" else "stop"
        final = {
            "model": body["model"],
            "created_at": _now(),
            "done": True,
            "done_reason": done_reason,
            "total_duration": 1_200_000_000,
            "load_duration": 2_000_000,
            "prompt_eval_count": prompt_tokens(texts),
            "prompt_eval_duration": 300_000_000,
            "eval_count": completion_tokens,
            "eval_duration": 900_000_000,
        }
        final = merge_usage(final, self.usage)
        calls = self._tool_calls(reply)
        if body.get("stream", True) is False:
            message: dict[str, Any] = {"role": "assistant", "content": reply.content or ""}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            return _json(
                {"model": body["model"], "created_at": final["created_at"], "message": message, **final}
            )
        return await self._stream(request, body["model"], reply, thinking, calls, final)

    def _tool_calls(self, reply: Reply) -> list[dict[str, Any]]:
        if reply.tool_name is None:
            return []
        function = {"index": 0, "name": reply.tool_name, "arguments": orjson.loads(reply.arguments or "{}")}
        call: dict[str, Any] = {"function": function}
        if self.tool_call_ids:
            # shaped like the ids Ollama generates: call_ and 8 characters
            call = {"id": call_id(self.next_id("ollama-call-"))[:13], **call}
        return [call]

    async def _stream(
        self,
        request: web.Request,
        model: str,
        reply: Reply,
        thinking: str | None,
        calls: list[dict[str, Any]],
        final: dict[str, Any],
    ) -> web.StreamResponse:
        def delta(**message: Any) -> bytes:
            return _line(
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", **message},
                    "done": False,
                }
            )

        events = [delta(content="", thinking=piece) for piece in split(thinking or "", 2)]
        if calls:
            events.append(delta(content="", tool_calls=calls))  # Ollama sends a tool call whole, in one line
        else:
            events += [delta(content=piece) for piece in split(reply.content or "", self.chunks)]
        tail = [_line({**final, "message": {"role": "assistant", "content": ""}})]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        return await self.play(
            request,
            response,
            head=[],
            events=events,
            tail=tail,
            error_event=_line({"error": STREAM_ERROR}),
            malformed=b'{"model": "' + model.encode() + b'", "message": {"content": \n',
        )

    # -- /api/embed -----------------------------------------------------------------------------

    async def _embed(self, request: web.Request) -> web.Response:
        body = self._body(request)
        if isinstance(body, web.Response):
            return body
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = list(raw)
        else:
            return self.error_response(400, "invalid input type")
        dims = body.get("dimensions") or 8
        if not isinstance(dims, int) or dims < 1:
            return self.error_response(400, "dimensions must be a positive integer")
        counts = [max(1, len(text.split())) for text in inputs]
        if body.get("truncate") is False and any(c > self.embed_context for c in counts):
            return self.error_response(400, CONTEXT_LENGTH_ERROR)
        return _json(
            {
                "model": body["model"],
                "embeddings": [embed(text, dims) for text in inputs],
                "total_duration": 14_143_917,
                "load_duration": 1_019_500,
                "prompt_eval_count": sum(min(c, self.embed_context) for c in counts),
            }
        )

    # -- /api/tags, /api/version ----------------------------------------------------------------

    async def _tags(self, request: web.Request) -> web.Response:
        def entry(name: str) -> dict[str, Any]:
            full = name if ":" in name else f"{name}:latest"
            return {
                "name": full,
                "model": full,
                "modified_at": _MODIFIED_AT,
                "size": 2_019_393_189,
                "digest": call_id(full, "")[:24].ljust(64, "0"),
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            }

        return _json({"models": [entry(m) for m in self.models]})

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"version": "0.12.6"})


def conformance_case() -> ProviderCase:
    """The conformance suite's case for the ``ollama`` provider, against :class:`FakeOllama`."""
    from interlock.testing.conformance import FEATURES, ProviderCase
    from interlock.testing.gateway import provider_table

    return ProviderCase(
        name="ollama",
        fake=lambda: FakeOllama(models=["conf-model", "conf-embed"]),
        provider_toml=lambda fake, timeout: provider_table(
            "ollama", type="ollama", base_url=fake.url, timeout=timeout
        ),
        model="ollama/conf-model",
        embeddings_model="ollama/conf-embed",
        features=FEATURES,
        # Ollama truncates over-long prompts by default; with truncation off its runner answers this
        errors={"context_length": (400, {"error": CONTEXT_LENGTH_ERROR})},
    )
