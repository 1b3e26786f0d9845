"""The OpenAI Responses door: ``POST /v1/responses``, stream and non-stream, onto every provider.

The client's body is kept as the native request (``ctx.native``, for targets that
speak Responses: OpenAI, Azure's v1 API, OpenAI-compatible instances with
``responses = true``) and translated into a Chat Completions request
(``ctx.body``, for every other target; :mod:`.responses_request`). Answers come back
as a ``response`` object (:mod:`.responses_output`) or its event stream
(:mod:`.responses_stream`); a native target's answer is passed through as it is.

Every answer is stored (``store``, default true) when the gateway has a
:class:`~.stored_responses.ResponseStore`: under the gateway's own ``resp_…`` id for
a translated answer, and under the upstream's id for a passed-through one (the id
the client saw). ``previous_response_id`` is resolved here, in :meth:`prepare`: the
stored conversation plus this turn's input is translated again, and a native target
receives it expanded, without ``previous_response_id`` and with ``store: false``
(it never saw the gateway's ids, and the gateway keeps the chain). ``docs/responses.md``
lists what is passed through, translated, dropped or refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from interlock.core.doors.responses_output import OutputBuilder, new_id, response_object, status_of
from interlock.core.doors.responses_request import Translation, input_items, native_items, translate
from interlock.core.doors.responses_stream import ResponsesStream
from interlock.core.doors.stored_endpoints import storage_off
from interlock.core.doors.stored_responses import ResponseStore, StoredResponse
from interlock.core.errors import GatewayError
from interlock.core.http_json import error_response, json_response
from interlock.core.lifecycle import StreamWriter
from interlock.core.provider import Provider
from interlock.core.router import Op, chat_op, stream_op
from interlock.core.types import Attempt, ChatResult, NativeResult, RequestContext, Target, UpstreamError, Usage


@dataclass(slots=True)
class ResponsesContext(RequestContext):
    """A request that came in by the Responses door: what answering and storing it needs besides the chat request."""

    #: the client's body as it arrived (echoed in the response object)
    request: dict[str, Any] = field(default_factory=dict)
    #: this turn's input items
    items: list[dict[str, Any]] = field(default_factory=list)
    #: the whole conversation's input up to this turn (previous turns' inputs and outputs, then ``items``)
    conversation: list[dict[str, Any]] = field(default_factory=list)
    translation: Translation | None = None
    response_id: str = ""
    created_at: float = 0.0
    store: bool = True
    #: fields a native target's answer echoes differently from what the client sent, because the
    #: gateway rewrote them (a chained request goes upstream expanded, without previous_response_id
    #: and with store false): set back on the response objects the client receives
    echoed: dict[str, Any] = field(default_factory=dict)


class ResponsesDoor:
    """``POST /v1/responses``; ``store`` is where responses are kept (None: storing is off)."""

    endpoint = "chat"
    needs_prepare = True

    def __init__(self, store: ResponseStore | None) -> None:
        self.store = store

    # -- request ------------------------------------------------------------- #

    def parse(self, body: dict[str, Any]) -> RequestContext:
        items = input_items(body)
        stream = bool(body.get("stream"))
        user = body.get("user")
        ctx = ResponsesContext(
            request_id="", endpoint="chat", body={}, stream=stream, client_wants_usage=stream,
            user=user if isinstance(user, str) else None, protocol="responses",
            request=body, items=items, conversation=list(items), response_id=new_id("resp"), created_at=time.time(),
            store=body.get("store", True) is not False,
        )
        if body.get("previous_response_id"):
            # translated in prepare, once the stored conversation is loaded; attribution reads metadata first
            ctx.body = {"model": body["model"], "metadata": body.get("metadata")}
        else:
            self._translate(ctx, items)
        return ctx

    def _translate(self, ctx: ResponsesContext, conversation: list[dict[str, Any]]) -> None:
        ctx.conversation = conversation
        ctx.translation = translate(ctx.request, conversation)
        ctx.body = ctx.translation.body
        native = dict(ctx.request)
        kept = native_items(conversation)
        if len(kept) != len(conversation) or ctx.request.get("previous_response_id"):
            native["input"] = kept
        if native.pop("previous_response_id", None) is not None:
            native["store"] = False  # the gateway keeps the chain; the upstream never saw its ids
            # what the upstream's answer echoes back is set to what the client sent (see echoed)
            ctx.echoed = {"previous_response_id": ctx.request["previous_response_id"], "store": ctx.store}
        ctx.native = native

    async def prepare(self, ctx: RequestContext) -> None:
        """Load the conversation ``previous_response_id`` names and translate the whole of it."""
        assert isinstance(ctx, ResponsesContext)
        previous = ctx.request.get("previous_response_id")
        if not previous:
            return
        if self.store is None:
            err = storage_off(previous)  # the same answer as GET/DELETE give with storing off
            err.param = "previous_response_id"
            raise err
        stored = await self.store.get(previous, ctx.team)
        if stored is None:
            raise GatewayError(
                404, f"Previous response with id '{previous}' not found.", param="previous_response_id",
                code="previous_response_not_found",
            )
        output = stored.response.get("output") or []
        self._translate(ctx, [*stored.input, *output, *ctx.items])

    def operation(self, ctx: RequestContext) -> Op:
        """The chat or stream operation, refusing what a translated target cannot serve before calling it."""
        assert isinstance(ctx, ResponsesContext)
        inner = stream_op(ctx) if ctx.stream else chat_op(ctx)
        translation = ctx.translation
        assert translation is not None

        async def op(provider: Provider, target: Target, attempt: Attempt) -> Any:
            if provider.speaks("responses", target.model):
                ctx.dropped = []
            else:
                if translation.refusal is not None:
                    code, message = translation.refusal
                    raise UpstreamError(
                        f"{target.key} takes requests in Chat Completions shape: {message}", kind="http", status=400,
                        code=code,
                    )
                ctx.dropped = list(translation.dropped)  # the header reports the path the answer took
            return await inner(provider, target, attempt)

        return op

    # -- answers ------------------------------------------------------------- #

    def respond(self, ctx: RequestContext, result: Any, headers: dict[str, str]) -> web.StreamResponse:
        assert isinstance(ctx, ResponsesContext)
        if isinstance(result, NativeResult):
            body = {**result.body, **ctx.echoed} if ctx.echoed else result.body
            self._keep(ctx, body)
            return json_response(body, headers=headers)
        assert isinstance(result, ChatResult)
        body = result.body
        choice = (body.get("choices") or [{}])[0]
        builder = OutputBuilder()
        builder.message(choice.get("message") or {})
        status, incomplete = status_of(choice.get("finish_reason"))
        usage = result.usage or Usage.from_openai(body.get("usage"))
        response = response_object(
            ctx.request, ctx.response_id, ctx.created_at, str(body.get("model") or ctx.request["model"]),
            status=status, output=builder.finish(status), usage=usage, incomplete=incomplete,
        )
        self._keep(ctx, response)
        return json_response(response, headers=headers)

    def stream_writer(self, ctx: RequestContext) -> StreamWriter:
        assert isinstance(ctx, ResponsesContext)
        return ResponsesStream(
            ctx.request, ctx.response_id, ctx.created_at, str(ctx.request["model"]), lambda r: self._keep(ctx, r),
            echoed=ctx.echoed,
        )

    def error_response(self, err: GatewayError) -> web.Response:
        return error_response(err)

    def _keep(self, ctx: ResponsesContext, response: dict[str, Any]) -> None:
        """Store a finished response with its whole conversation, when asked to and a store exists."""
        if self.store is None or not ctx.store or not isinstance(response.get("id"), str):
            return
        self.store.put(StoredResponse(
            id=response["id"], created_at=ctx.created_at, team=ctx.team, api_key_id=ctx.api_key_id,
            request_id=ctx.request_id, model=str(ctx.request["model"]), input=ctx.conversation, response=response,
        ))


#: a door for writing errors in this protocol's shape (the serving instance is the gateway's, with its store)
RESPONSES_ERRORS = ResponsesDoor(None)
