"""Cohere (API v2): chat and embeddings translated to and from Cohere's own wire format.

Requests go to ``POST {base_url}/v2/chat`` (``"stream": true`` for SSE with named events) and
``POST {base_url}/v2/embed`` with ``Authorization: Bearer <key>``; ``base_url`` is the API root,
as in the official SDK (default ``https://api.cohere.com``, or ``CO_API_URL``). The key comes
from ``api_key``, ``CO_API_KEY`` or ``COHERE_API_KEY``.

Config keys besides the common ones (``base_url``, ``api_key``, ``headers``, ``timeout``, ...):

* ``embed_input_type``: Cohere's ``input_type`` for embeddings (``search_document`` by default;
  also ``search_query``, ``classification``, ``clustering``, ``image``). A client may send
  ``input_type`` in the request body to choose per request.
* ``client_name``: sent as Cohere's ``X-Client-Name`` header, to tell projects apart in its dashboard.

::

    [providers.cohere]
    api_key = "${CO_API_KEY}"
    embed_input_type = "search_query"
    client_name = "interlock"

Translation notes (see :mod:`interlock.plugins.providers.translation.cohere`): system and developer
messages become one leading system turn; ``top_p`` is ``p``; ``stop`` is ``stop_sequences``;
``tool_choice`` ``required``/``none`` are ``REQUIRED``/``NONE`` and a named function is forced by
offering only that function with ``REQUIRED``; JSON mode and JSON schema are
``{"type": "json_object", "json_schema"?}``; ``reasoning_effort`` and ``logprobs`` are not sent
(send Cohere's ``thinking`` to control reasoning). Cohere-only request fields (``documents``,
``citation_options``, ``safety_mode``, ``thinking``, ``priority``, ``strict_tools``) pass through,
and the answer's ``citations`` come back on the message (streams: ``delta.citations``).
``tool_plan`` is reported as ``reasoning_content`` and, on non-stream answers, also as
``message.tool_plan``, which is sent back to Cohere when a client replays the turn.

Failures: a generation that ends with ``finish_reason: ERROR`` is an upstream failure (a stream
error in streams, a 502-classed server error otherwise) and ``TIMEOUT`` is a timeout, so the
router retries or falls back instead of returning a truncated answer. HTTP 498 (invalid token) is
an auth failure and 499 (request cancelled upstream) a server error; ``too many tokens: ...``
400s are context-length failures.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from interlock.plugins.providers.translation.cohere import (
    chat_body,
    embed_body,
    finish_reason,
    object_of,
    split_content,
    tool_calls_of,
    usage_of,
)
from interlock.provider_api import (
    ChatResult,
    Chunk,
    ChunkWriter,
    Classification,
    EmbeddingsResult,
    FailureClass,
    HTTPProvider,
    ProviderSettings,
    RequestContext,
    UpstreamError,
    Usage,
    classify_as,
    completion,
    embeddings_body,
    hookimpl,
    iter_sse,
    jsonutil,
    new_id,
)

EMBED_INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering", "image"})

# Cohere's documented 400s for oversized input all start "too many tokens: ..." (the prompt,
# the inputs, or a max_tokens above the model's output limit: a bigger model may take each).
_TOO_MANY_TOKENS = re.compile(r"^\s*too many tokens", re.IGNORECASE)

# statuses only Cohere uses, and what they mean to the router
_NATIVE_STATUS: dict[int, FailureClass] = {
    498: FailureClass.AUTH,  # "invalid token"
    499: FailureClass.SERVER_ERROR,  # cancelled on Cohere's side; the gateway did not cancel it
}


class Cohere(HTTPProvider):
    """Cohere's v2 API: ``/v2/chat`` and ``/v2/embed``."""

    type_name = "cohere"
    display_name = "Cohere"
    env_key = "CO_API_KEY"
    env_key_aliases = ("COHERE_API_KEY",)
    env_base_url = "CO_API_URL"
    default_base_url = "https://api.cohere.com"
    option_keys = frozenset({"embed_input_type", "client_name"})

    chat_path: ClassVar[str] = "/v2/chat"
    embed_path: ClassVar[str] = "/v2/embed"

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        input_type = settings.options.get("embed_input_type")
        if input_type is not None and input_type not in EMBED_INPUT_TYPES:
            problems.append(("embed_input_type", f"must be one of {', '.join(sorted(EMBED_INPUT_TYPES))}"))
        name = settings.options.get("client_name")
        if name is not None and not isinstance(name, str):
            problems.append(("client_name", "must be a string"))
        return problems

    @property
    def embed_input_type(self) -> str:
        return str(self.settings.options.get("embed_input_type") or "search_document")

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if name := self.settings.options.get("client_name"):
            headers.setdefault("X-Client-Name", str(name))
        return headers

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        """Cohere's error body is ``{"id"?, "message"}``; oversized input gets OpenAI's code."""
        if not (isinstance(body, dict) and isinstance(body.get("message"), str)):
            return super().error_fields(body)  # a proxy's or load balancer's page, not Cohere's body
        message = body["message"]
        return message, ("context_length_exceeded" if _TOO_MANY_TOKENS.match(message) else None), None

    def classify(self, error: UpstreamError) -> Classification | None:
        """Cohere's own statuses (498, 499); everything else is left to the generic rules."""
        if error.kind != "http" or error.status is None:
            return None
        failure = _NATIVE_STATUS.get(error.status)
        return classify_as(failure, error) if failure is not None else None

    # -- chat ------------------------------------------------------------ #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        resp = await self.post(self.base_url + self.chat_path, chat_body(ctx.body, model, stream=False))
        body = await self.read_object(resp)
        native = body.get("finish_reason")
        if native == "ERROR":
            # the generation failed inside Cohere after a 200: a server-side failure, worth a retry
            raise UpstreamError(
                f"{self.name}: the generation failed (finish_reason ERROR)", kind="http", status=502, body=body
            )
        if native == "TIMEOUT":
            raise _timed_out(self.name)
        message = object_of(body.get("message"))
        text, thinking = split_content(message.get("content"))
        plan = message.get("tool_plan") or ""
        calls = tool_calls_of(message)
        usage = usage_of(body.get("usage"))
        out = completion(
            response_id=str(body.get("id") or new_id()),
            model=model,
            content=text,
            tool_calls=calls,
            finish_reason=finish_reason(native, tool_calls=bool(calls)),
            usage=usage,
            reasoning="\n\n".join(r for r in (thinking, plan) if r) or None,
            native_finish_reason=native,
        )
        reply = out["choices"][0]["message"]
        if plan:
            reply["tool_plan"] = plan
        if message.get("citations"):
            reply["citations"] = message["citations"]
        return ChatResult(out, usage)

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        resp = await self.post(
            self.base_url + self.chat_path, chat_body(ctx.body, model, stream=True), stream=True,
            headers={"Accept": "text/event-stream"},
        )
        state = _StreamState(self.name, model)
        async with self.reading(resp, lambda: state.ended, "message-end"):
            async for _event, data in iter_sse(resp.content):
                if data == b"[DONE]":
                    break
                if state.ended:
                    continue  # drain what follows message-end so the connection can be reused
                try:
                    obj = jsonutil.loads(data)
                except jsonutil.JSONDecodeError:
                    raise UpstreamError(f"{self.name}: malformed stream event", kind="stream") from None
                if not isinstance(obj, dict):
                    raise UpstreamError(f"{self.name}: stream event is not a JSON object", kind="stream")
                for chunk in state.feed(obj):
                    yield chunk

    # -- embeddings ------------------------------------------------------ #

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        request = embed_body(ctx.body, model, self.embed_input_type)
        resp = await self.post(self.base_url + self.embed_path, request)
        body = await self.read_object(resp)
        embeddings = body.get("embeddings")
        # embeddings_by_type ({"float": [[...]]}) is what v2 returns; v1's bare list is accepted too
        vectors = embeddings.get("float") if isinstance(embeddings, dict) else embeddings
        if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
            message = f"{self.name}: the embed response has no float vectors"
            raise UpstreamError(message, kind="stream", body=body)
        billed = ((body.get("meta") or {}).get("billed_units") or {}).get("input_tokens")
        tokens = int(billed) if isinstance(billed, int | float) else 0
        out = embeddings_body(vectors, model, tokens, ctx.body.get("encoding_format"))
        return EmbeddingsResult(out, Usage(prompt_tokens=tokens))


def _timed_out(name: str) -> UpstreamError:
    """Cohere's ``finish_reason: TIMEOUT``: the generation ran out of time on Cohere's side."""
    return UpstreamError(f"{name}: the generation timed out (finish_reason TIMEOUT)", kind="timeout")


class _Writer(ChunkWriter):
    """ChunkWriter plus the one Cohere extra: citations as ``delta.citations``."""

    __slots__ = ()

    def citations(self, items: list[Any]) -> Chunk:
        return Chunk(self._chunk({"citations": items}))


class _StreamState:
    """Turns Cohere's named stream events into OpenAI chunks, one event at a time."""

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.model = model
        self.writer: _Writer | None = None
        self.tool_index = -1  # position of the current tool call among this answer's tool calls
        self.ended = False

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        """The chunks for one event; raises :class:`UpstreamError` for an in-band failure."""
        kind = event.get("type")
        out: list[Chunk] = []
        if self.writer is None:
            response_id = event.get("id") if kind == "message-start" else None
            self.writer = _Writer(str(response_id or new_id()), self.model)
            out.append(self.writer.role())
        w = self.writer
        delta = object_of(event.get("delta"))
        message = object_of(delta.get("message"))
        if kind in ("content-start", "content-delta"):
            content = object_of(message.get("content"))
            if content.get("thinking"):
                out.append(w.reasoning(content["thinking"]))
            if content.get("text"):
                out.append(w.text(content["text"]))
        elif kind == "tool-plan-delta":
            if message.get("tool_plan"):
                out.append(w.reasoning(message["tool_plan"]))
        elif kind == "tool-call-start":
            calls = message.get("tool_calls")  # one object on the wire; a list is read too
            call = object_of(calls[0] if calls else None) if isinstance(calls, list) else object_of(calls)
            fn = object_of(call.get("function"))
            self.tool_index += 1
            out.append(w.tool_call(self.tool_index, str(call.get("id") or new_id("call_")),
                                   str(fn.get("name") or ""), fn.get("arguments") or ""))
        elif kind == "tool-call-delta":
            call = object_of(message.get("tool_calls"))
            fragment = object_of(call.get("function")).get("arguments")
            if fragment and self.tool_index >= 0:
                out.append(w.tool_arguments(self.tool_index, fragment))
        elif kind == "citation-start":
            if message.get("citations"):
                out.append(w.citations([message["citations"]]))
        elif kind == "message-end":
            self.ended = True
            out += self._end(delta)
        # content-end, tool-call-end, citation-end, debug and future events carry nothing to forward
        return out

    def _end(self, delta: dict[str, Any]) -> list[Chunk]:
        assert self.writer is not None
        native = delta.get("finish_reason")
        if native == "ERROR" or delta.get("error"):
            reason = delta.get("error") or "the generation failed"
            raise UpstreamError(f"{self.name} stream error: {reason}", kind="stream", body=delta)
        if native == "TIMEOUT":
            raise _timed_out(self.name)
        out = [self.writer.finish(finish_reason(native, tool_calls=self.tool_index >= 0))]
        if (usage := usage_of(delta.get("usage"))) is not None:
            out.append(self.writer.usage(usage))
        return out


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Cohere)
