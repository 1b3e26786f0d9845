"""The aiohttp application: HTTP glue around the front doors, health and introspection.

Each client endpoint is a front door (:mod:`interlock.core.doors`) on the one
request lifecycle (:mod:`interlock.core.lifecycle`); what happens here is only what
HTTP needs before it: a request id, the caller's gateway key, its attribution
(team, tags) and, for errors, the door's own error shape. Every response carries
``x-request-id``; once routing happened also ``x-interlock-provider``,
``x-interlock-model``, ``x-interlock-attempts`` and ``x-interlock-fallback``. The
admin endpoints live in :mod:`interlock.core.admin`.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from interlock.accounting import spend
from interlock.accounting.keys import ApiKey, request_tags
from interlock.core import admin, model_list, stats
from interlock.core.doors import stored_endpoints
from interlock.core.doors.anthropic_messages import ANTHROPIC_MESSAGES
from interlock.core.doors.anthropic_messages import context as messages_context
from interlock.core.doors.chat_completions import CHAT_COMPLETIONS, EMBEDDINGS
from interlock.core.doors.messages_count import ESTIMATE_HEADER
from interlock.core.doors.messages_count import count_tokens as count_message_tokens
from interlock.core.doors.openai_responses import RESPONSES_ERRORS
from interlock.core.errors import GatewayError
from interlock.core.gateway import GATEWAY as GATEWAY  # re-exported: the app's key for its gateway
from interlock.core.gateway import Gateway
from interlock.core.http_json import error_response, json_response, read_json
from interlock.core.lifecycle import FrontDoor
from interlock.core.types import RequestContext

log = logging.getLogger("interlock.app")

# typed request storage on aiohttp >= 3.14, a plain key before it
REQUEST_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
API_KEY: Any = web.RequestKey("api_key", ApiKey) if hasattr(web, "RequestKey") else "api_key"
# request ids: a random per-process prefix and a counter, unique across processes without a
# uuid4 (an os.urandom call) on every request
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# headers that carry a gateway key: never handed to rules, plugins or upstreams
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: the handlers of the routes telemetry exporters added (Prometheus' GET /metrics)
_TELEMETRY_HANDLERS = web.AppKey("telemetry_handlers", frozenset)


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=gateway.cfg.max_body_bytes, middlewares=[gateway_middleware])
    app[GATEWAY] = gateway
    app[admin.LEDGER_READER] = spend.LedgerReader(gateway.cfg.database_url)  # opened on the first GET /spend
    app.cleanup_ctx.append(_lifecycle)
    before = set(app.router.routes())
    gateway.telemetry.add_routes(app, gateway.exporters)  # e.g. Prometheus' GET /metrics
    # what an exporter serves is information about the whole gateway: guarded (admin.require_metrics)
    app[_TELEMETRY_HANDLERS] = frozenset(r.handler for r in app.router.routes() if r not in before)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)  # clients configured without /v1
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    app.router.add_get("/v1/responses/{response_id}", retrieve_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_get("/v1/responses/{response_id}/input_items", response_input_items)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", messages_count_tokens)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/responses", responses)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_get("/v1/models/{model_id:.+}", model_info)  # ids may hold a slash: openai/gpt-4o
    app.router.add_get("/models/{model_id:.+}", model_info)
    app.router.add_get("/health", health)
    app.router.add_get("/health/providers", health_providers)
    admin.add_routes(app)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    await gateway.start()
    yield
    try:
        await gateway.close()  # flushes exporters on graceful shutdown
    finally:
        await app[admin.LEDGER_READER].close()


# --------------------------------------------------------------------------- #
# the front doors
# --------------------------------------------------------------------------- #


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, CHAT_COMPLETIONS)


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _serve(request, EMBEDDINGS)


async def messages(request: web.Request) -> web.StreamResponse:
    return await _serve(request, ANTHROPIC_MESSAGES)


async def messages_count_tokens(request: web.Request) -> web.StreamResponse:
    """The Messages door's token count: the first target's own count, else the gateway's estimate."""
    gateway = request.app[GATEWAY]
    ctx = messages_context(await read_json(request, gateway.cfg.max_body_bytes, gateway.cfg.limits.body_timeout),
                           count=True)
    _attribute(request, ctx)
    tokens, estimated = await count_message_tokens(gateway.lifecycle.router, ctx)
    return json_response({"input_tokens": tokens}, headers={ESTIMATE_HEADER: "true"} if estimated else None)


async def responses(request: web.Request) -> web.StreamResponse:
    return await _serve(request, request.app[GATEWAY].responses_door)  # the gateway's: it holds the response store


#: each door's handler, for the middleware: its errors are written in the door's protocol
_DOORS: dict[Handler, FrontDoor] = {
    chat_completions: CHAT_COMPLETIONS, embeddings: EMBEDDINGS, responses: RESPONSES_ERRORS,
    messages: ANTHROPIC_MESSAGES, messages_count_tokens: ANTHROPIC_MESSAGES,
}
_TRACED_HANDLERS = frozenset(_DOORS)


async def _serve(request: web.Request, door: FrontDoor) -> web.StreamResponse:
    """Read the door's request, attribute it, and run it on the gateway's current lifecycle."""
    gateway = request.app[GATEWAY]
    ctx = door.parse(await read_json(request, gateway.cfg.max_body_bytes, gateway.cfg.limits.body_timeout))
    _attribute(request, ctx)
    if door.needs_prepare:
        await door.prepare(ctx)
    return await gateway.lifecycle.serve(request, door, ctx)


def _attribute(request: web.Request, ctx: RequestContext) -> None:
    """Who is asking: the request id, the headers without credentials, the key's id and team, the tags."""
    key: ApiKey | None = request.get(API_KEY)
    ctx.request_id = request[REQUEST_ID]
    ctx.headers = {lk: v for k, v in request.headers.items() if (lk := k.lower()) not in _CREDENTIAL_HEADERS}
    if key is not None:
        ctx.api_key_id, ctx.team = key.id, key.team
    ctx.tags = request_tags(key.tags if key else (), request.headers.get("x-interlock-tags", ""), ctx.body.get("metadata"))


# --------------------------------------------------------------------------- #
# request ids, gateway keys, errors
# --------------------------------------------------------------------------- #

_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's one middleware layer (each layer costs a coroutine per request).

    Outermost first: a SERVER span and request metrics for the front doors
    (core.telemetry.runtime; nothing when telemetry is off), then :func:`_answer`: the
    request id, gateway API keys and errors in the door's protocol.
    """
    telemetry = request.app[GATEWAY].telemetry
    if telemetry.active and request.match_info.handler in _TRACED_HANDLERS:
        return await telemetry.serve(request, handler, _answer)
    return await _answer(request, handler)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run ``handler`` with a request id and the caller's gateway key; every error becomes an error body."""
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else f"req_{_ID_PREFIX}{next(_ID_COUNTER):012x}"
    request[REQUEST_ID] = request_id
    try:
        if request.match_info.handler in _AUTHENTICATED_HANDLERS:
            # gateway API keys (see :mod:`interlock.accounting.keys`); memory only
            key = request.app[GATEWAY].keys.authenticate(request.headers)
            if key is not None:
                request[API_KEY] = key
        elif request.match_info.handler in request.app[_TELEMETRY_HANDLERS]:
            admin.require_metrics(request)
        resp = await handler(request)
    except GatewayError as err:
        resp = _error(request, err)
        if err.status == 408:  # the body never arrived in full: this connection cannot carry another request
            resp.force_close()
    except web.HTTPException as exc:
        etype, code = _HTTP_ERRORS.get(exc.status, ("invalid_request_error", None))
        message = f"{exc.reason}: {request.method} {request.path}"
        if exc.status == 413:
            message = f"request body exceeds the gateway's limit of {request.app[GATEWAY].cfg.max_body_bytes} bytes"
        # keep aiohttp's Allow header: a 405 must say which methods are allowed
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        resp = _error(request, GatewayError(exc.status, message, type=etype, code=code, headers=allow))
    except ConnectionError as exc:  # ConnectionResetError, aiohttp's ClientConnectionResetError, a broken pipe
        if request.transport is not None and not request.transport.is_closing():
            resp = _unhandled(request, request_id)  # the client is still there: not its disconnect
        else:  # the client went away (mid-body, mid-stream): nothing to answer, nothing broken
            log.info("client disconnected during %s %s (request %s): %s", request.method, request.path, request_id,
                     exc or type(exc).__name__)
            resp = web.Response(status=499)  # never sent; what telemetry records (nginx's "client closed request")
    except Exception:
        resp = _unhandled(request, request_id)
    if not resp.prepared:
        resp.headers["x-request-id"] = request_id
        if request.match_info.handler in _REQUEST_ID_HANDLERS:
            resp.headers["request-id"] = request_id  # the anthropic SDK's name for it
    return resp


def _unhandled(request: web.Request, request_id: str) -> web.Response:
    """A bug or a failing dependency, inside ``except``: logged with its traceback, a 500 for the client."""
    log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request_id)
    return _error(request, GatewayError(
        500, f"internal gateway error (request id {request_id})", type="server_error", code="internal_error"
    ))


def _error(request: web.Request, err: GatewayError) -> web.Response:
    """``err`` in the protocol of the door the request came to (OpenAI's shape elsewhere)."""
    door = _DOORS.get(request.match_info.handler)
    if door is not None:
        return door.error_response(err)
    if request.match_info.handler in (models, model_info) and model_list.wants_anthropic(request.headers):
        return ANTHROPIC_MESSAGES.error_response(err)  # an Anthropic client listing models
    return error_response(err)


# --------------------------------------------------------------------------- #
# models, health
# --------------------------------------------------------------------------- #


async def models(request: web.Request) -> web.Response:
    """Everything a client can name (:mod:`interlock.core.model_list`), in OpenAI's or Anthropic's shape."""
    anthropic = model_list.wants_anthropic(request.headers)
    query = request.query
    lifecycle = [*query.getall("lifecycle", ()), *query.getall("lifecycle[]", ())]  # the SDK sends lifecycle[]=
    return json_response(model_list.list_body(_model_list(request), query, anthropic, lifecycle))


async def model_info(request: web.Request) -> web.Response:
    """One listed model, or a 404 in the caller's protocol."""
    anthropic = model_list.wants_anthropic(request.headers)
    return json_response(model_list.model_body(_model_list(request), request.match_info["model_id"], anthropic))


def _model_list(request: web.Request) -> model_list.ModelList:
    gateway = request.app[GATEWAY]
    return model_list.model_list(gateway.resolver, gateway.prices.models)


# --------------------------------------------------------------------------- #
# stored responses (the Responses API's GET/DELETE /v1/responses/{id}), scoped to the key's team
# --------------------------------------------------------------------------- #


def _team(request: web.Request) -> str | None:
    key: ApiKey | None = request.get(API_KEY)
    return key.team if key is not None else None


async def retrieve_response(request: web.Request) -> web.Response:
    rid, gateway = request.match_info["response_id"], request.app[GATEWAY]
    return json_response(await stored_endpoints.retrieve(gateway.response_store, rid, _team(request), request.query))


async def delete_response(request: web.Request) -> web.Response:
    rid, gateway = request.match_info["response_id"], request.app[GATEWAY]
    return json_response(await stored_endpoints.delete(gateway.response_store, rid, _team(request)))


async def response_input_items(request: web.Request) -> web.Response:
    rid, gateway = request.match_info["response_id"], request.app[GATEWAY]
    return json_response(await stored_endpoints.input_items(gateway.response_store, rid, _team(request), request.query))


#: the endpoints whose clients read the request id from ``request-id`` (the anthropic SDK)
_REQUEST_ID_HANDLERS: frozenset[Handler] = frozenset({messages, messages_count_tokens, models, model_info})

#: the endpoints that identify their caller by gateway API key (the doors, stored responses, the model list)
_AUTHENTICATED_HANDLERS: frozenset[Handler] = frozenset(
    {*_DOORS, retrieve_response, delete_response, response_input_items, models, model_info}
)


async def health(request: web.Request) -> web.Response:
    # the liveness probe: answers anyone, and says nothing but that this process is up
    # pid: which process answered (``serve --workers N`` runs several on one port)
    return json_response({"status": "ok", "pid": os.getpid()})


async def health_providers(request: web.Request) -> web.Response:
    """Each provider instance, and per target: counts, breaker state and requests in flight (an
    information endpoint: base URLs and health are not for everyone, :func:`admin.require_reader`)."""
    admin.require_reader(request)
    gateway = request.app[GATEWAY]
    router = gateway.router
    targets = gateway.health.snapshot()
    breakers = await router.breaker.snapshot()
    for key in sorted(set(targets) | set(breakers)):
        entry = targets.setdefault(key, {})
        entry["breaker"] = breakers.get(key, {"state": "closed", "trips": 0})
        entry["state"] = entry["breaker"]["state"] if entry["breaker"]["state"] != "closed" else entry.get("state", "healthy")
        entry["inflight"] = await stats.inflight(gateway.store, key)
    return json_response(
        {
            "providers": [p.describe() for p in gateway.providers.values()],
            "targets": targets,
            "store": gateway.store.status(),  # kind, shared, degraded (shared store unreachable) and since when
            "reloads": gateway.reloads,
        }
    )
