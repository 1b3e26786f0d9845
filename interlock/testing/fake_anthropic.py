"""A fake upstream that speaks the Anthropic Messages API, with fault injection.

``FakeAnthropic`` serves ``POST /v1/messages`` (plain and SSE streaming with Anthropic's
named events, tools, a ``thinking`` block on request), ``POST /v1/messages/count_tokens``
and ``GET /v1/models``, checks requests the way the real API does (``x-api-key``,
``anthropic-version``, ``max_tokens``, roles, ``tool_use``/``tool_result`` pairing) and
answers with Anthropic's error bodies. Answers come from the shared reply planner, so
they match every other fake. Anthropic on Vertex AI (same bodies, other URLs) can
subclass it and route its paths to :meth:`FakeAnthropic.answer`.

JSON mode: Anthropic has none; like a real model following its instructions, the fake
answers in JSON when the system prompt (or a ``system`` message) asks for JSON
(``json_schema`` answers arrive as a forced tool, which needs nothing special).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, merge_usage, request_state
from interlock.testing._replies import Reply, ReplyError, call_id, plan_reply, prompt_tokens, split

if TYPE_CHECKING:
    from interlock.testing.conformance import ProviderCase

__all__ = ["FakeAnthropic", "conformance_case"]

# error.type per status, as the Messages API reports them
_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    405: ("invalid_request_error", "Method not allowed"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}
_JSON_ASKED = re.compile(r"\bJSON\b")
_UNPAIRED_RESULT = (
    "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
)
_MISSING_RESULT = "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
#: the API versions the fake accepts (``anthropic-version`` header)
API_VERSIONS = ("2023-06-01", "2026-10-21")
_MODEL_CREATED = "2026-02-17T00:00:00Z"


def error_body(type_: str, message: str, request_id: str = "req_fake") -> dict[str, Any]:
    """Anthropic's error envelope."""
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _text(content: Any) -> str:
    """The text of a content value (string, or blocks; a tool_result's own content included)."""
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in _blocks(content) if b.get("type") == "text")


class FakeAnthropic(FakeServer):
    """A deterministic Anthropic Messages API; see :class:`FakeServer` for faults.

    Tests steer what the "model" reports through attributes: ``thinking`` (a thinking block
    before the answer), ``cache_read_tokens`` / ``cache_creation_tokens`` (prompt-cache
    usage), ``stop_reason`` (overrides the natural one, e.g. ``"refusal"``), and ``usage``
    (also a constructor argument): a Messages ``usage`` object deep-merged into the fake's own
    (:func:`~interlock.testing._base.merge_usage`), e.g. ``{"cache_creation_input_tokens": 4000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 3000},
    "server_tool_use": {"web_search_requests": 2}}``. A stream reports it as the API does:
    ``message_start`` carries it with ``output_tokens`` 1, ``message_delta`` the final counts.
    """

    prefix = ""
    auth_failure = (401, "invalid x-api-key")

    def __init__(
        self,
        models: Iterable[str] = ("claude-sonnet-4-6", "claude-haiku-4-5"),
        api_key: str | None = None,
        chunks: int = 5,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        self.models: list[str] = list(models)
        self.chunks = max(1, chunks)
        #: merged into every answer's ``usage`` (None: the fake's own counts only)
        self.usage: Mapping[str, Any] | None = usage
        self.thinking: str | None = None
        self.cache_read_tokens = 0
        self.cache_creation_tokens = 0
        self.stop_reason: str | None = None
        super().__init__(api_key=api_key, seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    # -- FakeServer hooks ------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/messages", self._messages)
        router.add_post("/v1/messages/count_tokens", self._count_tokens)
        router.add_get("/v1/models", self._list_models)
        router.add_get("/v1/models/{model_id}", self._get_model)

    def authorized(self, request: web.Request) -> bool:
        # API keys go in x-api-key (API version 2023-06-01 clients) or as a Bearer token (SDK 2.x)
        return self.api_key is None or self.api_key in (
            request.headers.get("x-api-key"),
            request.headers.get("Authorization", "").removeprefix("Bearer "),
        )

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        type_, default = _ERROR_TYPES.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
        )
        if message is not None and message.startswith("Unknown request URL"):
            type_ = "not_found_error"
        return _json(error_body(type_, message or default, self.next_id("req_fake_")), status)

    def is_generation(self, request: web.Request) -> bool:
        return request.path.endswith("/messages")

    # -- validation ------------------------------------------------------------------------

    def _invalid(self, message: str) -> web.Response:
        return self.error_response(400, message)

    def validate(
        self, request: web.Request, *, require_model: bool = True, require_max_tokens: bool = True
    ) -> dict[str, Any] | web.Response:
        """The request body, or the 400/404 the real API answers for what is wrong with it.

        ``require_model=False`` is for Anthropic on Vertex AI, whose body names no model (it is in
        the URL) and carries ``anthropic_version`` (checked by the caller) instead of the header.
        """
        version = request.headers.get("anthropic-version")
        if require_model and not version:
            return self._invalid("anthropic-version: header is required")
        if version is not None and version not in API_VERSIONS:
            return self._invalid(f"anthropic-version: invalid version {version!r}")
        state = request_state(request)
        body = state.json
        if state.malformed or not isinstance(body, dict):
            return self._invalid("There was an error parsing the body of your request.")
        if version == "2026-10-21":  # this API version removed the sampling parameters
            for name in ("temperature", "top_p", "top_k"):
                if name in body:
                    return self._invalid(f"{name}: is not supported in API version 2026-10-21")
        if require_model:
            if not isinstance(body.get("model"), str):
                return self._invalid("model: Field required")
            if body["model"] not in self.models:
                return self.error_response(404, f"model: {body['model']}")
        max_tokens = body.get("max_tokens")
        if (require_max_tokens or max_tokens is not None) and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            return self._invalid(
                "max_tokens: Field required" if max_tokens is None else "max_tokens: must be at least 1"
            )
        temperature = body.get("temperature")
        if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 1):
            return self._invalid("temperature: Input should be less than or equal to 1")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._invalid("messages: at least one message is required")
        return self._check_messages(messages) or body

    def _check_messages(self, messages: list[Any]) -> web.Response | None:
        pending: list[str] = []  # tool_use ids the next user turn must answer
        for n, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant", "system"):
                return self._invalid(f"messages.{n}.role: Input should be 'user', 'assistant' or 'system'")
            blocks = _blocks(message.get("content"))
            if role == "system":  # instructions from here on (newer API); text only, no turn of its own
                if any(b.get("type") != "text" for b in blocks):
                    return self._invalid(f"messages.{n}.content: system messages take text blocks only")
                continue
            if not isinstance(message.get("content"), str) and any(
                b.get("type") == "text" and not b.get("text") for b in blocks
            ):
                return self._invalid(f"messages.{n}: text content blocks must be non-empty")
            results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            if results and (role != "user" or not all(r in pending for r in results)):
                return self._invalid(
                    f"messages.{n}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{results[0]}. {_UNPAIRED_RESULT}"
                )
            if results and any(b.get("type") != "tool_result" for b in blocks[: len(results)]):
                return self._invalid(f"messages.{n}: `tool_result` blocks must come first in the content")
            if pending and role == "user" and set(pending) - set(results):
                return self._invalid(
                    f"messages.{n}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(sorted(set(pending) - set(results)))}. {_MISSING_RESULT}"
                )
            pending = (
                [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
                if role == "assistant"
                else []
            )
        return None

    # -- /v1/messages ----------------------------------------------------------------------

    def plan(self, body: dict[str, Any]) -> Reply | web.Response:
        """Turn a Messages request into the shared reply planner's inputs."""
        messages: list[dict[str, Any]] = body["messages"]
        turns = [m for m in messages if m.get("role") != "system"]
        last = _blocks(turns[-1].get("content")) if turns and turns[-1].get("role") == "user" else []
        tool_result = (
            _text(last[-1].get("content")) if last and last[-1].get("type") == "tool_result" else None
        )
        prompt, images = "", 0
        for message in reversed(messages):  # the last user turn that says something itself
            blocks = [b for b in _blocks(message.get("content")) if b.get("type") in ("text", "image")]
            if message.get("role") == "user" and blocks:
                prompt = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
                images = sum(1 for b in blocks if b.get("type") == "image")
                break
        tools = [
            {"name": t.get("name"), "parameters": t.get("input_schema")}
            for t in body.get("tools") or []
            if isinstance(t, dict)
            and "input_schema" in t  # server tools (web search...) are not the model's to fake
        ]
        system_texts = [_text(body.get("system") or "")]
        system_texts += [_text(m.get("content")) for m in messages if m.get("role") == "system"]
        choice = body.get("tool_choice") or {}
        tool_choice = {"auto": None, "any": "any", "none": "none"}.get(
            str(choice.get("type")), choice.get("name")
        )
        try:
            return plan_reply(
                prompt=prompt,
                images=images,
                tools=tools,
                tool_choice=tool_choice,
                tool_result=tool_result,
                json_mode=bool(_JSON_ASKED.search(" ".join(system_texts))),
                max_tokens=body["max_tokens"],
            )
        except ReplyError as exc:
            return self._invalid(f"tool_choice: {exc}")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = self.validate(request)
        if isinstance(body, web.Response):
            return body
        return await self.answer(request, body, body["model"])

    async def answer(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        """Answer a validated Messages request for ``model`` (plain or streamed)."""
        reply = self.plan(body)
        if isinstance(reply, web.Response):
            return reply
        message_id = self.next_id("msg_fake_")
        text = reply.content
        stop_reason = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[
            reply.finish_reason
        ]
        stop_sequence = None
        for sequence in body.get("stop_sequences") or []:
            if text is not None and sequence in text:
                text, stop_reason, stop_sequence = text[: text.index(sequence)], "stop_sequence", sequence
                break
        if self.stop_reason is not None:
            stop_reason = self.stop_reason
        texts = [_text(body.get("system") or "")]
        for message in body["messages"]:
            for block in _blocks(message.get("content")):
                texts.append(
                    _text(block.get("content"))
                    if block.get("type") == "tool_result"
                    else block.get("text", "")
                )
                if block.get("type") == "tool_use":
                    texts.append(orjson.dumps(block.get("input")).decode())
        thinking_tokens = len(self.thinking.split()) if self.thinking else 0
        usage: dict[str, Any] = {
            "input_tokens": prompt_tokens(texts),
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "output_tokens": reply.completion_tokens + thinking_tokens,
            "service_tier": "standard",
        }
        if thinking_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
        usage = merge_usage(usage, self.usage)
        tool_id = call_id(message_id, "toolu_") if reply.tool_name else None
        if body.get("stream") is True:
            return await self._stream(
                request, message_id, model, reply, text, tool_id, stop_reason, stop_sequence, usage
            )
        content: list[dict[str, Any]] = []
        if self.thinking:
            content.append({"type": "thinking", "thinking": self.thinking, "signature": "c2lnbmF0dXJl"})
        if reply.tool_name:
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": reply.tool_name,
                    "input": orjson.loads(reply.arguments or "{}"),
                }
            )
        else:
            content.append({"type": "text", "text": text or ""})
        return _json(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": usage,
            }
        )

    async def _stream(
        self,
        request: web.Request,
        message_id: str,
        model: str,
        reply: Reply,
        text: str | None,
        tool_id: str | None,
        stop_reason: str,
        stop_sequence: str | None,
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        """Anthropic's event sequence: message_start, ping, blocks, message_delta, message_stop."""
        start_usage = {**usage, "output_tokens": 1}
        start_usage.pop("output_tokens_details", None)
        start_usage.pop("server_tool_use", None)  # counted by the end of the message
        message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        head = [
            _event("message_start", {"type": "message_start", "message": message}),
            _event("ping", {"type": "ping"}),
        ]
        index = 0
        if self.thinking:
            head += [
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                ),
                *(
                    _event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "thinking_delta", "thinking": piece},
                        },
                    )
                    for piece in split(self.thinking, self.chunks)
                ),
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"},
                    },
                ),
                _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ]
            index = 1
        if reply.tool_name:
            block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": reply.tool_name, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in split(reply.arguments or "", self.chunks)
            ]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in split(text or "", self.chunks)]
        head.append(
            _event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
        )
        events = [
            _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        delta_usage: dict[str, Any] = {"output_tokens": usage["output_tokens"]}
        if "output_tokens_details" in usage:
            delta_usage["output_tokens_details"] = usage["output_tokens_details"]
        # the API's message_delta repeats the cumulative input-side counts (and the server tool
        # calls): what a test steers is reported there too
        delta_usage = merge_usage(delta_usage, self.usage)
        tail = [
            _event("content_block_stop", {"type": "content_block_stop", "index": index}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": delta_usage,
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        return await self.play(
            request,
            response,
            head=head,
            events=events,
            tail=tail,
            error_event=_event(
                "error", error_body("overloaded_error", "Overloaded", self.next_id("req_fake_"))
            ),
            malformed=b"event: content_block_delta\ndata: {not json\n\n",
        )

    # -- other endpoints -------------------------------------------------------------------

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = self.validate(request, require_max_tokens=False)
        if isinstance(body, web.Response):
            return body
        texts = [_text(body.get("system") or "")] + [_text(m.get("content")) for m in body["messages"]]
        return _json({"input_tokens": prompt_tokens(texts)})

    def _model(self, model: str) -> dict[str, Any]:
        return {"type": "model", "id": model, "display_name": model, "created_at": _MODEL_CREATED}

    async def _list_models(self, request: web.Request) -> web.Response:
        data = [self._model(m) for m in self.models]
        return _json(
            {
                "data": data,
                "has_more": False,
                "first_id": self.models[0] if self.models else None,
                "last_id": self.models[-1] if self.models else None,
            }
        )

    async def _get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model_id"]
        if model not in self.models:
            return self.error_response(404, f"model: {model}")
        return _json(self._model(model))


#: Anthropic's context-overflow error, verbatim
CONTEXT_LENGTH_ERROR = (
    400,
    error_body(
        "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum", "req_011CZAau32Qz"
    ),
)
OVERLOADED_ERROR = (529, error_body("overloaded_error", "Overloaded", "req_011CZAau32QzxDkriovTaFCB"))


def conformance_case() -> ProviderCase:
    """The conformance :class:`~interlock.testing.conformance.ProviderCase` for ``anthropic``."""
    from interlock.testing.conformance import FEATURES, ProviderCase
    from interlock.testing.gateway import provider_table

    key = "sk-ant-conformance-0123456789"
    return ProviderCase(
        name="anthropic",
        fake=lambda: FakeAnthropic(models=["conf-model"], api_key=key),
        provider_toml=lambda fake, timeout: provider_table(
            "anthropic", type="anthropic", base_url=fake.base_url, api_key=key, timeout=timeout
        ),
        model="anthropic/conf-model",
        features=FEATURES - {"embeddings"},
        # refusals arrive as stop_reason "refusal" (finish_reason content_filter), not as HTTP errors
        errors={"context_length": CONTEXT_LENGTH_ERROR, "overloaded": OVERLOADED_ERROR},
    )
