"""A fake upstream that speaks Cohere's v2 API, with fault injection.

``FakeCohere`` serves ``POST /v2/chat`` (JSON, or SSE with Cohere's named events when
``"stream": true``), ``POST /v2/embed`` and ``GET /v1/models`` at the root of its URL, which is
what the official SDK takes as ``base_url``. Answers come from the shared
:func:`~interlock.testing._replies.plan_reply`, so they read exactly like every other fake's.

Shapes follow the official ``cohere`` SDK's v2 types: ``V2ChatResponse`` (content blocks,
``tool_plan``, ``tool_calls``, ``citations``, ``usage.billed_units``/``usage.tokens``), the
``V2ChatStreamResponse`` events (``message-start`` ... ``message-end``), ``EmbedByTypeResponse``,
and the ``{"id", "message"}`` error body. The in-band failure is Cohere's: a ``message-end``
whose ``finish_reason`` is ``ERROR`` with the reason in ``delta.error``.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, Fault, ReceivedRequest, merge_usage, request_state
from interlock.testing._replies import (
    WORD_RE, Reply, ReplyError, call_id, embed, plan_reply, prompt_tokens, split,
)

if TYPE_CHECKING:
    from interlock.testing.conformance import ProviderCase

__all__ = ["FakeCohere", "Fault", "ReceivedRequest", "conformance_case"]

#: Cohere's message for an oversized prompt, as its error reference documents it
CONTEXT_LENGTH_MESSAGE = (
    "too many tokens: total number of tokens in the prompt cannot exceed 4081 - received 4292. "
    "Try using a shorter prompt, or enabling prompt truncating. "
    "See https://docs.cohere.com/reference/generate for more details."
)
_DEFAULT_ERRORS: dict[int, str] = {
    400: "invalid request: the request body is not valid.",
    401: "invalid api token",
    402: "Please add or update your payment method at https://dashboard.cohere.com/billing to continue",
    403: "forbidden: you do not have access to this resource",
    404: "not found",
    422: "invalid request: the request could not be processed",
    429: "You are using a Trial key, which is limited to 20 API calls / minute.",
    498: "invalid token",
    499: "request cancelled",
    500: "internal server error, this has been reported to our developers",
    501: "not implemented",
    503: "service unavailable",
    504: "gateway timeout",
}
_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering", "image"})
_MAX_TEXTS = 96


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _event(data: dict[str, Any]) -> bytes:
    """One SSE frame the way Cohere sends it: the event name repeated as ``type`` in the data."""
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _content_event(kind: str, index: int, **content: str) -> bytes:
    return _event({"type": kind, "index": index, "delta": {"message": {"content": content}}})


def _text_of(content: Any) -> tuple[str, int]:
    """``(text, image_count)`` of Cohere message content: a string or a list of parts."""
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    images = 0
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "image_url":
            images += 1
        elif part.get("type") == "document":
            data = (part.get("document") or {}).get("data")
            texts.append(data if isinstance(data, str) else orjson.dumps(data).decode())
    return " ".join(texts), images


class FakeCohere(FakeServer):
    """A deterministic Cohere v2 server for tests and demos; see :class:`FakeServer`."""

    prefix = ""
    auth_failure = (401, "invalid api token")

    def __init__(
        self,
        models: Iterable[str] = ("command-a-03-2025", "embed-v4.0"),
        api_key: str | None = None,
        chunks: int = 5,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
        thinking: str | None = None,
        cached_tokens: int = 0,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """``thinking`` adds a thinking block before every text answer (a reasoning model);
        ``cached_tokens`` is reported as ``usage.cached_tokens`` (capped at the prompt size).
        Set :attr:`finish_reason` to make every answer end with that native reason.

        ``usage`` (also settable later as :attr:`usage`) is deep-merged into the chat ``usage``
        of every answer (the response's, or the stream's ``message-end`` delta) with
        :func:`~interlock.testing._base.merge_usage`, e.g. ``{"billed_units": {"input_tokens":
        1200, "output_tokens": 400}, "tokens": {"input_tokens": 1391, "output_tokens": 400}}``."""
        self.models: list[str] = list(models)
        self.chunks = max(1, chunks)
        self.thinking = thinking
        self.cached_tokens = cached_tokens
        #: merged into every chat answer's ``usage`` (None: the fake's own counts only)
        self.usage: Mapping[str, Any] | None = usage
        #: overrides the native finish reason of every answer (e.g. "ERROR", "TIMEOUT")
        self.finish_reason: str | None = None
        super().__init__(api_key=api_key, seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v2/chat", self._chat)
        router.add_post("/v2/embed", self._embed)
        router.add_get("/v1/models", self._list_models)

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        text = message or _DEFAULT_ERRORS.get(status, f"HTTP {status}")
        return _json({"id": self.next_id("fake-error-"), "message": text}, status)

    def is_generation(self, request: web.Request) -> bool:
        return request.path == "/v2/chat"

    def _invalid(self, message: str, status: int = 400) -> web.Response:
        return self.error_response(status, message)

    def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        state = request_state(request)
        body = state.json
        if state.malformed or not isinstance(body, dict):
            return self._invalid("invalid request: cannot parse the request body as JSON")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._invalid("invalid request: model is required")
        if model not in self.models:
            return self._invalid(
                f"model '{model}' not found, make sure the correct model ID was used "
                "and that you have access to the model.",
                404,
            )
        return body

    # -- /v2/chat ----------------------------------------------------------------------------

    def _check_messages(self, messages: Any) -> str | None:
        """Cohere's complaint about ``messages``, or None when they are acceptable."""
        if not isinstance(messages, list) or not messages:
            return "invalid request: messages must not be empty"
        for i, msg in enumerate(messages):
            role = msg.get("role") if isinstance(msg, dict) else None
            if role not in _ROLES:
                return f"invalid request: invalid role {role!r} at index {i}; must be system, user, assistant or tool"
            if role == "system" and i > 0:
                return "system turn must be the first in the list"
            if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
                return f"invalid request: tool message at index {i} must have a tool_call_id"
        return None

    def _plan(self, body: dict[str, Any]) -> Reply | web.Response:
        messages: list[dict[str, Any]] = body["messages"]
        tools = body.get("tools") or []
        functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
        choice = body.get("tool_choice")
        if choice is not None and choice not in ("REQUIRED", "NONE"):
            return self._invalid("invalid request: tool_choice must be one of REQUIRED, NONE")
        if choice is not None and not functions:
            return self._invalid("invalid request: tool_choice requires tools to be specified")
        limit = body.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            return self._invalid("invalid request: max_tokens must be a positive integer")
        fmt = body["response_format"] if isinstance(body.get("response_format"), dict) else {}
        users = [m for m in messages if m.get("role") == "user"]
        prompt, images = _text_of((users[-1] if users else {}).get("content"))
        last = messages[-1]
        try:
            return plan_reply(
                prompt=prompt,
                images=images,
                tools=functions,
                tool_choice={"REQUIRED": "required", "NONE": "none"}.get(choice or ""),
                tool_result=_text_of(last.get("content"))[0] if last.get("role") == "tool" else None,
                json_mode=fmt.get("type") == "json_object" and not fmt.get("json_schema"),
                schema=fmt.get("json_schema") if fmt.get("type") == "json_object" else None,
                max_tokens=limit,
            )
        except ReplyError as exc:
            return self._invalid(f"invalid request: {exc}")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request)
        if isinstance(body, web.Response):
            return body
        if (problem := self._check_messages(body.get("messages"))) is not None:
            return self._invalid(problem)
        stops = body.get("stop_sequences") or []
        if not isinstance(stops, list) or len(stops) > 5 or not all(isinstance(s, str) for s in stops):
            return self._invalid("invalid request: stop_sequences must be a list of at most 5 strings")
        reply = self._plan(body)
        if isinstance(reply, web.Response):
            return reply
        native = _FINISH[reply.finish_reason]
        text = reply.content
        if text is not None:
            hits = [text.index(s) for s in stops if s and s in text]
            if hits:  # generation stops before the earliest stop sequence, which is not returned
                text, native = text[: min(hits)], "STOP_SEQUENCE"
        native = self.finish_reason or native
        messages = body["messages"]
        texts = [_text_of(m.get("content"))[0] for m in messages]
        texts += [
            str((c.get("function") or {}).get("arguments", "")) for m in messages for c in m.get("tool_calls") or []
        ]
        prompt = prompt_tokens(texts)
        said = text if text is not None else reply.output
        output = max(1 if reply.tool_name else 0, len(WORD_RE.findall(said)))
        usage: dict[str, Any] = {
            "billed_units": {"input_tokens": prompt, "output_tokens": output},
            "tokens": {"input_tokens": prompt, "output_tokens": output},
        }
        if self.cached_tokens:
            usage["cached_tokens"] = min(self.cached_tokens, prompt)
        usage = merge_usage(usage, self.usage)
        response_id = self.next_id("fake-cohere-")
        citations = self._citations(body.get("documents"), text) if text else []
        call = None
        if reply.tool_name is not None:
            call = {
                "id": call_id(response_id, prefix=f"{reply.tool_name}_"),
                "type": "function",
                "function": {"name": reply.tool_name, "arguments": reply.arguments},
            }
        plan = f"I will use the {reply.tool_name} tool to answer." if call else ""
        if body.get("stream") is True:
            return await self._stream(request, response_id, text, plan, call, citations, native, usage)
        message: dict[str, Any] = {"role": "assistant"}
        if call is not None:
            message["tool_plan"] = plan
            message["tool_calls"] = [call]
        else:
            blocks = [{"type": "thinking", "thinking": self.thinking}] if self.thinking else []
            message["content"] = [*blocks, {"type": "text", "text": text or ""}]
        if citations:
            message["citations"] = citations
        return _json({"id": response_id, "message": message, "finish_reason": native, "usage": usage})

    @staticmethod
    def _citations(documents: Any, text: str) -> list[dict[str, Any]]:
        """One citation of the first document over the answer's first word, when documents were given."""
        if not isinstance(documents, list) or not documents:
            return []
        doc = documents[0]
        data = doc.get("data") if isinstance(doc, dict) else {"text": doc}
        doc_id = (doc.get("id") if isinstance(doc, dict) else None) or "doc:0"
        word = text.split(" ", 1)[0]
        document = {"id": doc_id, **(data if isinstance(data, dict) else {})}
        source = {"type": "document", "id": doc_id, "document": document}
        return [
            {"start": 0, "end": len(word), "text": word, "sources": [source], "type": "TEXT_CONTENT", "content_index": 0}
        ]

    async def _stream(
        self,
        request: web.Request,
        response_id: str,
        text: str | None,
        plan: str,
        call: dict[str, Any] | None,
        citations: list[dict[str, Any]],
        native: str,
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        """Send the answer as Cohere's event sequence, applying any streaming fault.

        The opening events (``message-start``, the first ``content-start``) form the head; every
        event carrying generated content (thinking, text, tool plan, tool call) is one fault index.
        """
        start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
        head = [_event({"type": "message-start", "id": response_id, "delta": {"message": start}})]
        events: list[bytes] = []
        tail: list[bytes] = []
        if call is not None:
            events += [_event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": p}}})
                       for p in split(plan, self.chunks)]
            opening = {**call, "function": {**call["function"], "arguments": ""}}
            events.append(
                _event({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": opening}}})
            )
            events += [
                _event({"type": "tool-call-delta", "index": 0,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}})
                for piece in split(call["function"]["arguments"] or "", self.chunks)
            ]
            tail.append(_event({"type": "tool-call-end", "index": 0}))
        else:
            index = 0
            text_start = _content_event("content-start", 0, type="text", text="")
            if self.thinking:
                head.append(_content_event("content-start", 0, type="thinking", thinking=""))
                events += [
                    _content_event("content-delta", 0, thinking=p) for p in split(self.thinking, self.chunks)
                ]
                index = 1
                # closing the thinking block and opening the text block ride with the first text piece
                text_start = _event({"type": "content-end", "index": 0}) + _content_event(
                    "content-start", 1, type="text", text=""
                )
            else:
                head.append(text_start)
                text_start = b""
            pieces = [_content_event("content-delta", index, text=p) for p in split(text or "", self.chunks)]
            if pieces:
                pieces[0] = text_start + pieces[0]
            elif text_start:
                tail.append(text_start)
            events += pieces
            tail.append(_event({"type": "content-end", "index": index}))
            for i, citation in enumerate(citations):
                delta = {"message": {"citations": citation}}
                tail.append(_event({"type": "citation-start", "index": i, "delta": delta}))
                tail.append(_event({"type": "citation-end", "index": i}))
        tail.append(_event({"type": "message-end", "delta": {"finish_reason": native, "usage": usage}}))
        failed = {"finish_reason": "ERROR", "error": _DEFAULT_ERRORS[500]}
        error = _event({"type": "message-end", "delta": failed})
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        response = web.StreamResponse(headers=headers)
        return await self.play(
            request, response, head=head, events=events, tail=tail, error_event=error,
            malformed=b"event: content-delta\ndata: {not json\n\n",
        )

    # -- /v2/embed ---------------------------------------------------------------------------

    async def _embed(self, request: web.Request) -> web.Response:
        body = self._body(request)
        if isinstance(body, web.Response):
            return body
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return self._invalid("invalid request: texts must be a non-empty list of strings")
        if len(texts) > _MAX_TEXTS:
            return self._invalid(
                f"invalid request: total number of texts must be at most {_MAX_TEXTS} - received {len(texts)}"
            )
        if body.get("input_type") not in _INPUT_TYPES:
            return self._invalid("invalid request: valid input_type must be provided with the provided model")
        types = body.get("embedding_types") or ["float"]
        if not isinstance(types, list) or not set(types) <= {"float", "base64"}:
            return self._invalid("invalid request: this fake embeds only the 'float' and 'base64' types")
        dims = body.get("output_dimension") or 8
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
            return self._invalid("invalid request: output_dimension must be a positive integer")
        vectors = [embed(t, dims) for t in texts]
        embeddings: dict[str, Any] = {}
        if "float" in types:
            embeddings["float"] = vectors
        if "base64" in types:
            embeddings["base64"] = [base64.b64encode(struct.pack(f"<{dims}f", *v)).decode() for v in vectors]
        tokens = sum(max(1, len(t.split())) for t in texts)
        return _json({
            "id": self.next_id("fake-embed-"),
            "texts": texts,
            "embeddings": embeddings,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
            "response_type": "embeddings_by_type",
        })

    # -- /v1/models --------------------------------------------------------------------------

    async def _list_models(self, request: web.Request) -> web.Response:
        models = [
            {"name": m, "endpoints": ["embed"] if m.startswith("embed") else ["chat"], "finetuned": False,
             "context_length": 128000}
            for m in self.models
        ]
        return _json({"models": models, "next_page_token": None})


def conformance_case() -> ProviderCase:
    """The conformance case for the ``cohere`` provider against :class:`FakeCohere`."""
    from interlock.testing.conformance import FEATURES, ProviderCase
    from interlock.testing.gateway import provider_table

    key = "co-conformance-0123456789"
    return ProviderCase(
        name="cohere",
        fake=lambda: FakeCohere(models=["conf-model", "conf-embed"], api_key=key),
        provider_toml=lambda fake, timeout: provider_table(
            "cohere", type="cohere", base_url=fake.base_url, api_key=key, timeout=timeout
        ),
        model="cohere/conf-model",
        embeddings_model="cohere/conf-embed",
        features=FEATURES,
        # Cohere reports no content-policy HTTP error, so that class is not declared
        errors={"context_length": (400, {"id": "conformance-error", "message": CONTEXT_LENGTH_MESSAGE})},
    )
