"""The Anthropic Messages door: ``POST /v1/messages``, stream and non-stream, onto every provider.

A request is checked as the Messages API checks it (:mod:`.messages_request`), kept
as it came (``ctx.native``, ``ctx.protocol = "messages"``) and translated into the
internal Chat Completions body (``ctx.body``, the model name still the client's, so
routes and rules resolve it as for any request). Each attempt then goes one of two
ways (:meth:`AnthropicMessages.operation`):

* a target that speaks Messages (``Provider.speaks("messages", model)``: Anthropic)
  is sent the client's own body and answers in Messages; its ``message`` or events go
  back untouched;
* any other target is sent the chat translation. Before it is, the request is checked
  for what a chat target cannot carry: features it would answer without (server tools,
  MCP servers, containers, search results) fail that attempt fast with a 400 naming
  them; hints it would only ignore (``top_k``, earlier turns' thinking blocks) are
  named in ``x-interlock-dropped``. Its answer is translated back
  (:mod:`.messages_response`, :mod:`.messages_stream`).

Errors are Anthropic's envelope (``{"type": "error", "error": {"type", "message"}}``)
with the gateway's status, so the ``anthropic`` SDK raises its matching exception
class. ``docs/messages.md`` has the feature table.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from interlock.core import jsonutil
from interlock.core.doors.messages_request import Translation, translate, validate
from interlock.core.doors.messages_response import error_body, to_message
from interlock.core.doors.messages_stream import MessagesStream
from interlock.core.errors import GatewayError
from interlock.core.http_json import json_response
from interlock.core.lifecycle import StreamWriter
from interlock.core.provider import Provider
from interlock.core.router import Op, chat_op, stream_op
from interlock.core.types import Attempt, NativeResult, RequestContext, Target, UpstreamError

#: the client protocol this door speaks (``RequestContext.protocol``, ``Provider.native_protocols``)
PROTOCOL = "messages"


def context(body: dict[str, Any], *, count: bool = False) -> RequestContext:
    """The internal request for a Messages body (``count``: a ``count_tokens`` body, never streamed)."""
    validate(body, count=count)
    stream = not count and body.get("stream") is True
    metadata = body.get("metadata") or {}
    user = metadata.get("user_id")
    return RequestContext(
        request_id="",
        endpoint="chat",
        body=translate(body).body,
        stream=stream,
        client_wants_usage=stream,  # message_delta carries the usage
        user=user if isinstance(user, str) and user else None,
        protocol=PROTOCOL,
        native=body,
    )


class AnthropicMessages:
    """``POST /v1/messages``; see the module docstring."""

    endpoint = "chat"

    def parse(self, body: dict[str, Any]) -> RequestContext:
        return context(body)

    def operation(self, ctx: RequestContext) -> Op:
        inner = stream_op(ctx) if ctx.stream else chat_op(ctx)
        notes: Translation | None = None

        async def op(provider: Provider, target: Target, attempt: Attempt) -> Any:
            nonlocal notes
            if ctx.native is not None and not provider.speaks(ctx.protocol, target.model):
                if notes is None:  # only requests that reach a chat target pay for the second look
                    notes = translate(ctx.native)
                if notes.refused:
                    raise UpstreamError(
                        f"{target.key} does not speak the Messages API and cannot take: {', '.join(notes.refused)}"
                        " (only Anthropic-family targets can)",
                        kind="http", status=400, code="unsupported_feature", error_type="invalid_request_error",
                    )
                ctx.dropped.extend(name for name in notes.dropped if name not in ctx.dropped)
            return await inner(provider, target, attempt)

        return op

    def respond(self, ctx: RequestContext, result: Any, headers: dict[str, str]) -> web.StreamResponse:
        if isinstance(result, NativeResult):
            return json_response(result.body, headers=headers)
        return json_response(to_message(result.body, result.usage), headers=headers)

    def error_response(self, err: GatewayError) -> web.Response:
        body = jsonutil.dumps(error_body(err))
        return web.Response(body=body, status=err.status, content_type="application/json", headers=err.headers)

    def stream_writer(self, ctx: RequestContext) -> StreamWriter:
        return MessagesStream(ctx.request_id)

    needs_prepare = False

    async def prepare(self, ctx: RequestContext) -> None:
        return None


#: the door, one instance (it holds no per-request state)
ANTHROPIC_MESSAGES = AnthropicMessages()
