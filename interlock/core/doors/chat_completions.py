"""The OpenAI Chat Completions and Embeddings doors: the internal shape itself.

``POST /v1/chat/completions`` and ``POST /v1/embeddings`` (also without ``/v1``,
for clients configured that way). Their bodies are already the internal request,
so a request is validated (:mod:`interlock.core.validate`) and passed on with
unknown parameters kept; answers go back as the providers' OpenAI-shaped results.

Two things are specific to this protocol. A chat request may carry ``models``, an
OpenRouter-style list of 1 to 10 models to fall back along, which replaces the
route for that request and is never sent upstream. A stream carries the usage
chunk (``choices: []``) only when the client asked for it with
``stream_options.include_usage``; providers always report usage to the gateway,
so the writer drops that chunk otherwise. A stream ends with the cost as an SSE
comment (``: x-interlock-cost-usd=…``, and after a fallback ``: x-interlock-cost-delta-usd=…``,
which clients ignore: the headers are long gone) and ``data: [DONE]``; a failure after the start ends it with an ``error``
event in OpenAI's error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from aiohttp import web

from interlock.core.errors import GatewayError
from interlock.core.http_json import error_response, json_response
from interlock.core.lifecycle import StreamWriter
from interlock.core.router import Op, chat_op, embeddings_op, stream_op
from interlock.core.routing_headers import cost_comment
from interlock.core.sse import DONE, encode_event
from interlock.core.types import Chunk, Decision, RequestContext
from interlock.core.validate import validate_chat, validate_embeddings

MAX_FALLBACK_MODELS = 10


class ChatCompletions:
    """``POST /v1/chat/completions``, stream and non-stream."""

    endpoint = "chat"

    def parse(self, body: dict[str, Any]) -> RequestContext:
        validate_chat(body)
        models = body.pop("models", None)  # OpenRouter-style per-request fallback list; never sent upstream
        if models is not None and (
            not isinstance(models, list) or not models or len(models) > MAX_FALLBACK_MODELS
            or not all(isinstance(m, str) and m.strip() for m in models)
        ):
            raise GatewayError(400, "'models' must be a list of 1 to 10 model names", param="models", code="invalid_value")
        stream = bool(body.get("stream"))
        opts = body.get("stream_options")
        user = body.get("user")
        return RequestContext(
            request_id="",
            endpoint="chat",
            body=body,
            stream=stream,
            client_wants_usage=stream and isinstance(opts, dict) and bool(opts.get("include_usage")),
            user=user if isinstance(user, str) else None,
            models_override=models,
        )

    def operation(self, ctx: RequestContext) -> Op:
        return stream_op(ctx) if ctx.stream else chat_op(ctx)

    def respond(self, ctx: RequestContext, result: Any, headers: dict[str, str]) -> web.StreamResponse:
        return json_response(result.body, headers=headers)

    def error_response(self, err: GatewayError) -> web.Response:
        return error_response(err)

    def stream_writer(self, ctx: RequestContext) -> StreamWriter:
        return _ChatStream(drop_usage=not ctx.client_wants_usage)

    needs_prepare = False

    async def prepare(self, ctx: RequestContext) -> None:
        return None


class _ChatStream:
    """Server-sent events of ``chat.completion.chunk`` objects, passed through as the provider encoded them."""

    __slots__ = ("drop_usage",)
    content_type = "text/event-stream"
    extra_headers: Mapping[str, str] = MappingProxyType({})  # none beyond the routing headers

    def __init__(self, drop_usage: bool) -> None:
        self.drop_usage = drop_usage

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: Chunk) -> bytes:
        if self.drop_usage and chunk.usage_only:
            return b""
        return encode_event(chunk.payload)

    def end(self, decision: Decision) -> bytes:
        if decision.cost_usd is None:
            return DONE
        return cost_comment(decision) + DONE

    def error(self, err: GatewayError) -> bytes:
        return encode_event(err.encode())


class Embeddings:
    """``POST /v1/embeddings``; never streamed."""

    endpoint = "embeddings"

    def parse(self, body: dict[str, Any]) -> RequestContext:
        validate_embeddings(body)
        user = body.get("user")
        return RequestContext(request_id="", endpoint="embeddings", body=body, user=user if isinstance(user, str) else None)

    def operation(self, ctx: RequestContext) -> Op:
        return embeddings_op(ctx)

    def respond(self, ctx: RequestContext, result: Any, headers: dict[str, str]) -> web.StreamResponse:
        return json_response(result.body, headers=headers)

    def error_response(self, err: GatewayError) -> web.Response:
        return error_response(err)

    def stream_writer(self, ctx: RequestContext) -> StreamWriter:
        raise GatewayError(400, "embeddings are not streamed", param="stream", code="invalid_value")

    needs_prepare = False

    async def prepare(self, ctx: RequestContext) -> None:
        return None


#: the doors, one instance each (they hold no per-request state)
CHAT_COMPLETIONS = ChatCompletions()
EMBEDDINGS = Embeddings()
