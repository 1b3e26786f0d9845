"""The aiohttp application: OpenAI-compatible endpoints, health and introspection.

Every error leaves as an OpenAI error body; every response carries
``x-request-id`` and, once routing happened, ``x-interlock-provider``,
``x-interlock-model``, ``x-interlock-attempts`` and ``x-interlock-fallback``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from interlock.core import jsonutil
from interlock.core.errors import GatewayError
from interlock.core.gateway import Gateway
from interlock.core.plugins import plugin_info
from interlock.core.router import StreamStart, chat_op, embeddings_op, note_chunk
from interlock.core.sse import DONE, encode_event
from interlock.core.types import Attempt, Decision, RequestContext, Target, UpstreamError
from interlock.core.validate import require_object, validate_chat, validate_embeddings

log = logging.getLogger("interlock.app")

T = TypeVar("T")
GATEWAY = web.AppKey("gateway", Gateway)
# typed request storage on aiohttp >= 3.14, a plain key before it
REQUEST_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_JSON = "application/json"


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=gateway.cfg.max_body_bytes, middlewares=[error_middleware])
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)  # clients configured without /v1
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/health/providers", health_providers)
    app.router.add_get("/-/plugins", plugins)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    await gateway.start()
    yield
    await gateway.close()  # flushes exporters on graceful shutdown


# --------------------------------------------------------------------------- #
# errors and request ids
# --------------------------------------------------------------------------- #


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=jsonutil.dumps(body), status=status, content_type=_JSON, headers=headers)


def error_response(err: GatewayError) -> web.Response:
    return web.Response(body=err.encode(), status=err.status, content_type=_JSON, headers=err.headers)


_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
    request[REQUEST_ID] = request_id
    try:
        resp = await handler(request)
    except GatewayError as err:
        resp = error_response(err)
    except web.HTTPException as exc:
        etype, code = _HTTP_ERRORS.get(exc.status, ("invalid_request_error", None))
        message = f"{exc.reason}: {request.method} {request.path}"
        if exc.status == 413:
            message = f"request body exceeds the gateway's limit of {request.app[GATEWAY].cfg.max_body_bytes} bytes"
        # keep aiohttp's Allow header: a 405 must say which methods are allowed
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        resp = error_response(GatewayError(exc.status, message, type=etype, code=code, headers=allow))
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request_id)
        resp = error_response(
            GatewayError(500, f"internal gateway error (request id {request_id})", type="server_error", code="internal_error")
        )
    if not resp.prepared:
        resp.headers["x-request-id"] = request_id
    return resp


async def read_json(request: web.Request) -> dict[str, Any]:
    limit = request.app[GATEWAY].cfg.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError(413, f"request body exceeds the gateway's limit of {limit} bytes", code="request_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise GatewayError(413, f"request body exceeds the gateway's limit of {limit} bytes", code="request_too_large") from None
    if not raw:
        raise GatewayError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    return require_object(body)


def _context(request: web.Request, body: dict[str, Any], endpoint: str) -> RequestContext:
    stream = bool(body.get("stream")) if endpoint == "chat" else False
    opts = body.get("stream_options")
    tags_header = request.headers.get("x-interlock-tags", "")
    return RequestContext(
        request_id=request[REQUEST_ID],
        endpoint=endpoint,  # type: ignore[arg-type]
        body=body,
        stream=stream,
        client_wants_usage=stream and isinstance(opts, dict) and bool(opts.get("include_usage")),
        headers={k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"},
        user=body.get("user") if isinstance(body.get("user"), str) else None,
        tags=[t.strip() for t in tags_header.split(",") if t.strip()],
    )


def _routing_headers(decision: Decision, attempt: Attempt | None, target: Target | None) -> dict[str, str]:
    headers = {"x-interlock-attempts": str(len(decision.attempts))}
    if attempt is not None and target is not None:
        headers["x-interlock-provider"] = target.provider
        headers["x-interlock-model"] = target.model
        headers["x-interlock-fallback"] = "true" if decision.fallback_used else "false"
    if decision.route:
        headers["x-interlock-route"] = decision.route
    return headers


async def _routed(gateway: Gateway, ctx: RequestContext, decision: Decision, routing: Awaitable[T]) -> T:
    """Await the router; when no target can answer, record the decision and let the error out."""
    try:
        return await routing
    except GatewayError as err:
        decision.status = err.status
        decision.error_type = decision.error_type or err.code or err.type
        decision.error_message = decision.error_message or err.message
        err.headers.update(_routing_headers(decision, None, None))
        _finish(gateway, ctx, decision, None)
        raise


def _finish(gateway: Gateway, ctx: RequestContext, decision: Decision, attempt: Attempt | None) -> None:
    decision.latency_ms = (time.perf_counter() - ctx.started) * 1000
    if attempt is not None:
        decision.provider, decision.model, decision.usage = attempt.provider, attempt.model, attempt.usage
    gateway.record(decision)


# --------------------------------------------------------------------------- #
# OpenAI-compatible endpoints
# --------------------------------------------------------------------------- #


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    body = await read_json(request)
    validate_chat(body)
    ctx = _context(request, body, "chat")
    decision = gateway.router.new_decision(ctx, body["model"])
    if ctx.stream:
        return await _stream(request, gateway, ctx, decision)
    result, attempt, target = await _routed(gateway, ctx, decision, gateway.router.run(ctx, decision, chat_op(ctx)))
    _finish(gateway, ctx, decision, attempt)
    return json_response(result.body, headers=_routing_headers(decision, attempt, target))


async def _stream(request: web.Request, gateway: Gateway, ctx: RequestContext, decision: Decision) -> web.StreamResponse:
    start = await _routed(gateway, ctx, decision, gateway.router.stream(ctx, decision))
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "x-request-id": ctx.request_id,
            **_routing_headers(decision, start.attempt, start.target),
        }
    )
    try:
        await resp.prepare(request)
        await _relay(resp, gateway, ctx, decision, start)
    except (ConnectionResetError, asyncio.CancelledError):
        decision.status, decision.error_type = 499, "client_disconnected"
        raise
    finally:
        if start.rest is not None:
            await start.rest.aclose()  # releases the upstream connection whatever happened
        start.ended()
        _finish(gateway, ctx, decision, start.attempt)
    return resp


async def _relay(resp: web.StreamResponse, gateway: Gateway, ctx: RequestContext, decision: Decision, start: StreamStart) -> None:
    drop_usage = not ctx.client_wants_usage
    for chunk in start.buffered:
        if not (drop_usage and chunk.usage_only):
            await resp.write(encode_event(chunk.payload))
    decision.ttft_ms = (time.perf_counter() - ctx.started) * 1000
    if start.rest is not None:
        try:
            async for chunk in start.rest:
                note_chunk(start.attempt, chunk)
                if drop_usage and chunk.usage_only:
                    continue
                await resp.write(encode_event(chunk.payload))
        except UpstreamError as err:
            verdict = gateway.router.stream_failed(start, err)
            decision.status, decision.error_type, decision.error_message = 502, verdict.failure_class.value, err.message
            error = GatewayError(
                502, f"the upstream stream failed after it started: {err.message}", type="upstream_error",
                code=verdict.failure_class.value,
            )
            await resp.write(encode_event(error.encode()))  # explicit, never a silent truncation
            return
    await resp.write(DONE)


async def embeddings(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    body = await read_json(request)
    validate_embeddings(body)
    ctx = _context(request, body, "embeddings")
    decision = gateway.router.new_decision(ctx, body["model"])
    result, attempt, target = await _routed(gateway, ctx, decision, gateway.router.run(ctx, decision, embeddings_op(ctx)))
    _finish(gateway, ctx, decision, attempt)
    return json_response(result.body, headers=_routing_headers(decision, attempt, target))


async def models(request: web.Request) -> web.Response:
    """Routes and configured models: everything a client can name."""
    gateway = request.app[GATEWAY]
    created = int(time.time())
    data: list[dict[str, Any]] = []
    for name, route in gateway.resolver.routes.items():
        data.append({"id": name, "object": "model", "created": created, "owned_by": "interlock",
                     "targets": [t.key for t in route.targets], "strategy": route.strategy})
    for name, provider in gateway.providers.items():
        for model in provider.settings.models:
            data.append({"id": f"{name}/{model}", "object": "model", "created": created, "owned_by": name})
    return json_response({"object": "list", "data": data})


# --------------------------------------------------------------------------- #
# health and introspection
# --------------------------------------------------------------------------- #


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def health_providers(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    return json_response(
        {
            "providers": [p.describe() for p in gateway.providers.values()],
            "targets": gateway.health.snapshot(),
        }
    )


async def plugins(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    return json_response({"plugins": plugin_info(gateway.pm, gateway.registry)})
