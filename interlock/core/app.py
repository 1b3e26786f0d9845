"""The aiohttp application: OpenAI-compatible endpoints, health and introspection.

Every error leaves as an OpenAI error body; every response carries
``x-request-id`` and, once routing happened, ``x-interlock-provider``,
``x-interlock-model``, ``x-interlock-attempts`` and ``x-interlock-fallback``.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import re
import time
from decimal import Decimal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from interlock.accounting import spend
from interlock.core import jsonutil, stats
from interlock.accounting.budgets import Reservation
from interlock.core.config import ConfigError
from interlock.core.errors import GatewayError
from interlock.core.gateway import Gateway
from interlock.accounting.keys import ApiKey, check_tags, request_tags
from interlock.core.plugins import plugin_info
from interlock.core.router import StreamStart, chat_op, embeddings_op, note_chunk
from interlock.core.sse import DONE, encode_event
from interlock.core.types import Attempt, Chunk, Decision, RequestContext, Target, UpstreamError
from interlock.core.validate import require_object, validate_chat, validate_embeddings

log = logging.getLogger("interlock.app")

T = TypeVar("T")
GATEWAY = web.AppKey("gateway", Gateway)
LEDGER_READER = web.AppKey("ledger_reader", spend.LedgerReader)  # GET /spend's read-only engine
# typed request storage on aiohttp >= 3.14, a plain key before it
REQUEST_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
# request ids: a random per-process prefix and a counter, unique across processes without a
# uuid4 (an os.urandom call) on every request
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
API_KEY: Any = web.RequestKey("api_key", ApiKey) if hasattr(web, "RequestKey") else "api_key"
_JSON = "application/json"


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=gateway.cfg.max_body_bytes, middlewares=[gateway_middleware])
    app[GATEWAY] = gateway
    app[LEDGER_READER] = spend.LedgerReader(gateway.cfg.database_url)  # opened on the first GET /spend
    app.cleanup_ctx.append(_lifecycle)
    gateway.telemetry.add_routes(app, gateway.exporters)  # e.g. Prometheus' GET /metrics
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)  # clients configured without /v1
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/health/providers", health_providers)
    app.router.add_get("/-/plugins", plugins)
    app.router.add_post("/-/reload", reload_config)
    app.router.add_post("/-/keys", create_key)
    app.router.add_get("/-/keys", list_keys)
    app.router.add_delete("/-/keys/{id}", revoke_key)
    app.router.add_get("/spend", spend_report)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    await gateway.start()
    yield
    try:
        await gateway.close()  # flushes exporters on graceful shutdown
    finally:
        await app[LEDGER_READER].close()


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
async def gateway_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every request's one middleware layer (each layer costs a coroutine per request).

    Outermost first: a SERVER span and request metrics for the OpenAI endpoints
    (core.telemetry.runtime; nothing when telemetry is off), then :func:`_answer`: the
    request id, gateway API keys and OpenAI-style errors.
    """
    telemetry = request.app[GATEWAY].telemetry
    if telemetry.active and request.match_info.handler in _TRACED_HANDLERS:
        return await telemetry.serve(request, handler, _answer)
    return await _answer(request, handler)


async def _answer(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Run ``handler`` with a request id and the caller's gateway key; every error becomes an OpenAI error body."""
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else f"req_{_ID_PREFIX}{next(_ID_COUNTER):012x}"
    request[REQUEST_ID] = request_id
    try:
        if request.match_info.handler in _OPENAI_HANDLERS:
            # gateway API keys (see :mod:`interlock.accounting.keys`); memory only
            key = request.app[GATEWAY].keys.authenticate(request.headers)
            if key is not None:
                request[API_KEY] = key
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


# headers that carry a gateway key: never handed to rules, plugins or upstreams
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})


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
    key: ApiKey | None = request.get(API_KEY)
    return RequestContext(
        request_id=request[REQUEST_ID],
        endpoint=endpoint,  # type: ignore[arg-type]
        body=body,
        stream=stream,
        client_wants_usage=stream and isinstance(opts, dict) and bool(opts.get("include_usage")),
        headers={lk: v for k, v in request.headers.items() if (lk := k.lower()) not in _CREDENTIAL_HEADERS},
        user=body.get("user") if isinstance(body.get("user"), str) else None,
        api_key_id=key.id if key else None,
        team=key.team if key else None,
        tags=request_tags(key.tags if key else (), tags_header, body.get("metadata")),
    )


def _routing_headers(decision: Decision, attempt: Attempt | None, target: Target | None) -> dict[str, str]:
    headers = {"x-interlock-attempts": str(len(decision.attempts))}
    if attempt is not None and target is not None:
        headers["x-interlock-provider"] = target.provider
        headers["x-interlock-model"] = target.model
        headers["x-interlock-fallback"] = "true" if decision.fallback_used else "false"
    if decision.route:
        headers["x-interlock-route"] = decision.route
    if decision.rule:
        headers["x-interlock-rule"] = _header_safe(decision.rule)
    if decision.attempts:
        # a compact summary of every attempt: target=outcome[:what the router did next]
        summary = ", ".join([_summary(a) for a in decision.attempts])
        headers["x-interlock-decision"] = _header_safe(summary)
    return headers


def _summary(a: Attempt) -> str:
    return f"{a.provider}/{a.model}={a.outcome}:{a.action}" if a.action else f"{a.provider}/{a.model}={a.outcome}"


def _header_safe(value: str, limit: int = 1024) -> str:
    if not (value.isascii() and value.isprintable()):
        value = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


async def _reserve(gateway: Gateway, ctx: RequestContext, decision: Decision) -> Reservation | None:
    """Reserve the request's worst-case cost on its budgets (core.budgets); an exhausted one is a 429."""
    try:
        return await gateway.budgets.reserve(ctx, gateway.router)
    except GatewayError as err:
        decision.status, decision.error_type, decision.error_message = err.status, err.code, err.message
        await _finish(gateway, ctx, decision, None)
        raise


async def _routed(
    gateway: Gateway, ctx: RequestContext, decision: Decision, routing: Awaitable[T], held: Reservation | None = None
) -> T:
    """Await the router; when no target can answer, record the decision and let the error out."""
    try:
        return await routing
    except GatewayError as err:
        decision.status = err.status
        decision.error_type = decision.error_type or err.code or err.type
        decision.error_message = decision.error_message or err.message
        err.headers.update(_routing_headers(decision, None, None))
        await _finish(gateway, ctx, decision, None, held)
        raise
    except BaseException:  # cancelled (client gone) or a bug: still settle the budget reservation
        gateway.router.account(decision)
        await gateway.settle(decision, held)
        raise


async def _finish(
    gateway: Gateway, ctx: RequestContext, decision: Decision, attempt: Attempt | None, held: Reservation | None = None
) -> None:
    decision.latency_ms = (time.perf_counter() - ctx.started) * 1000
    if attempt is not None:
        decision.provider, decision.model, decision.usage = attempt.provider, attempt.model, attempt.usage
    gateway.router.account(decision)
    gateway.record(decision)
    await gateway.settle(decision, held)  # budgets: actual cost replaces the reservation; anomaly buckets


def _cost_header(decision: Decision) -> dict[str, str]:
    """``x-interlock-cost-usd`` (and the fallback's delta) once the request is priced."""
    headers = {}
    if decision.cost_usd is not None:
        headers["x-interlock-cost-usd"] = _usd(decision.cost_usd)
    if decision.cost_delta_usd is not None:
        headers["x-interlock-cost-delta-usd"] = _usd(decision.cost_delta_usd)
    return headers


_USD_STEP = Decimal("0.0000000001")


def _usd(value: Decimal) -> str:
    return f"{value.quantize(_USD_STEP).normalize():f}"


# --------------------------------------------------------------------------- #
# OpenAI-compatible endpoints
# --------------------------------------------------------------------------- #


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    body = await read_json(request)
    validate_chat(body)
    models = body.pop("models", None)  # OpenRouter-style per-request fallback list; never sent upstream
    if models is not None and (
        not isinstance(models, list) or not models or len(models) > 10
        or not all(isinstance(m, str) and m.strip() for m in models)
    ):
        raise GatewayError(400, "'models' must be a list of 1 to 10 model names", param="models", code="invalid_value")
    ctx = _context(request, body, "chat")
    ctx.models_override = models
    decision = gateway.router.new_decision(ctx, body["model"])
    held = await _reserve(gateway, ctx, decision)
    if ctx.stream:
        return await _stream(request, gateway, ctx, decision, held)
    result, attempt, target = await _routed(
        gateway, ctx, decision, gateway.router.run(ctx, decision, chat_op(ctx)), held
    )
    await _finish(gateway, ctx, decision, attempt, held)
    return json_response(result.body, headers={**_routing_headers(decision, attempt, target), **_cost_header(decision)})


async def _stream(
    request: web.Request, gateway: Gateway, ctx: RequestContext, decision: Decision, held: Reservation | None = None
) -> web.StreamResponse:
    router = gateway.router  # this request finishes on the config it started with, even across a reload
    start = await _routed(gateway, ctx, decision, router.stream(ctx, decision), held)
    headers = _routing_headers(decision, start.attempt, start.target)
    if start.settings.continue_stream:
        headers["x-interlock-continuation"] = "enabled"
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "x-request-id": ctx.request_id,
            **headers,
        }
    )
    current = start
    try:
        await resp.prepare(request)
        while True:
            failure = await _relay(resp, ctx, decision, current)
            if failure is None:
                # headers are long gone: the cost goes out as an SSE comment, which clients ignore
                router.account(decision)
                if decision.cost_usd is not None:
                    await resp.write(f": x-interlock-cost-usd={_usd(decision.cost_usd)}\n\n".encode())
                await resp.write(DONE)
                break
            err, partial = failure
            verdict = await router.stream_ended(current, err)
            if partial is not None and current.settings.continue_stream and current.remaining:
                try:
                    current = await router.continue_stream(ctx, decision, current, partial)
                    current.buffered = [c for c in current.buffered if c.content or c.finish_reason or c.usage_only]
                    continue  # splice: the next target's content follows what the client has
                except GatewayError as cont_err:
                    decision.events.append(f"continuation failed: {cont_err.message}")
            failure_class = verdict.failure_class.value if verdict else "stream_error"
            decision.status, decision.error_type, decision.error_message = 502, failure_class, err.message
            error = GatewayError(
                502, f"the upstream stream failed after it started: {err.message}", type="upstream_error",
                code=failure_class,
            )
            await resp.write(encode_event(error.encode()))  # explicit, never a silent truncation
            break
    except (ConnectionResetError, asyncio.CancelledError):
        decision.status, decision.error_type = 499, "client_disconnected"
        raise
    finally:
        if current.rest is not None:
            await current.rest.aclose()  # releases the upstream connection whatever happened
        await router.stream_ended(current)
        await _finish(gateway, ctx, decision, current.attempt, held)  # a stream reconciles its budget here
    return resp


async def _relay(
    resp: web.StreamResponse, ctx: RequestContext, decision: Decision, start: StreamStart
) -> tuple[UpstreamError, str | None] | None:
    """Forward one target's stream; on a failure return it with the text sent so far.

    The partial text is only collected when the route may continue the stream
    elsewhere (it costs a parse per chunk), and is None once a tool call was
    streamed: a half-sent tool call cannot be continued.
    """
    drop_usage = not ctx.client_wants_usage
    collect = start.settings.continue_stream
    partial: list[str] | None = [] if collect else None

    def keep(chunk: Chunk) -> None:
        nonlocal partial
        if partial is None or not chunk.content:
            return
        for choice in jsonutil.loads(chunk.payload).get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("tool_calls"):
                partial = None
                return
            partial.append(delta.get("content") or "")

    for chunk in start.buffered:
        keep(chunk)
        if not (drop_usage and chunk.usage_only):
            await resp.write(encode_event(chunk.payload))
    if decision.ttft_ms is None:
        decision.ttft_ms = (time.perf_counter() - ctx.started) * 1000
    if start.rest is None:
        return None
    try:
        async for chunk in start.rest:
            note_chunk(start.attempt, chunk)
            keep(chunk)
            if drop_usage and chunk.usage_only:
                continue
            await resp.write(encode_event(chunk.payload))
    except UpstreamError as err:
        return err, ("".join(partial) if partial is not None else None)
    return None


async def embeddings(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    body = await read_json(request)
    validate_embeddings(body)
    ctx = _context(request, body, "embeddings")
    decision = gateway.router.new_decision(ctx, body["model"])
    held = await _reserve(gateway, ctx, decision)
    result, attempt, target = await _routed(
        gateway, ctx, decision, gateway.router.run(ctx, decision, embeddings_op(ctx)), held
    )
    await _finish(gateway, ctx, decision, attempt, held)
    return json_response(result.body, headers={**_routing_headers(decision, attempt, target), **_cost_header(decision)})


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
    """Each provider instance, and per target: counts, breaker state and requests in flight."""
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
            "reloads": gateway.reloads,
        }
    )


def require_admin(request: web.Request) -> None:
    """The guard of every admin endpoint: ``[server] admin_key`` as a bearer token, else loopback only."""
    admin = request.app[GATEWAY].cfg.admin_key
    if admin is not None:
        sent = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(sent, f"Bearer {admin.get()}".encode()):
            raise GatewayError(401, "admin endpoints need 'Authorization: Bearer <server.admin_key>'",
                               type="authentication_error", code="invalid_admin_key")
    elif request.remote not in ("127.0.0.1", "::1"):
        raise GatewayError(403, "without server.admin_key, admin endpoints answer loopback clients only",
                           type="permission_error", code="admin_forbidden")


async def reload_config(request: web.Request) -> web.Response:
    """``POST /-/reload``: re-read the config file; an invalid one is rejected and the old stays."""
    require_admin(request)
    gateway = request.app[GATEWAY]
    try:
        notes = gateway.reload_from_source()
    except ConfigError as exc:
        return json_response(
            {"error": {"message": str(exc), "type": "invalid_request_error", "param": None, "code": "invalid_config",
                       "problems": [{"path": p, "message": m} for p, m in exc.problems]}},
            status=400,
        )
    return json_response({"reloaded": True, "source": gateway.cfg.source, "routes": sorted(gateway.resolver.routes),
                          "providers": sorted(gateway.providers), "notes": notes})


async def plugins(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    return json_response({"plugins": plugin_info(gateway.pm, gateway.registry)})


# --------------------------------------------------------------------------- #
# gateway API keys (admin)
# --------------------------------------------------------------------------- #

_OPENAI_HANDLERS = frozenset({chat_completions, embeddings, models})
_TRACED_HANDLERS = frozenset({chat_completions, embeddings})


async def create_key(request: web.Request) -> web.Response:
    """``POST /-/keys`` ``{"name", "team", "tags"}``: a new key, returned once, stored hashed."""
    require_admin(request)
    body = await read_json(request)
    problems: list[tuple[str, str]] = []
    for field in body:
        if field not in ("name", "team", "tags"):
            problems.append((field, "unknown field (known: name, team, tags)"))
    values: dict[str, str | None] = {}
    for field in ("name", "team"):
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 128):
            problems.append((field, "must be a non-empty string of at most 128 characters"))
            value = None
        values[field] = value.strip() if isinstance(value, str) else None
    tags = check_tags(body.get("tags"), "tags", problems)
    if problems:
        path, message = problems[0]
        raise GatewayError(400, f"{path}: {message}", param=path.split("[")[0], code="invalid_value")
    key, record = await request.app[GATEWAY].keys.create(values["name"], values["team"], tags)
    return json_response({**record, "key": key}, status=201, headers={"Cache-Control": "no-store"})


async def list_keys(request: web.Request) -> web.Response:
    """``GET /-/keys``: ids, names, teams, tags, prefixes, created/revoked; never a key or its hash."""
    require_admin(request)
    return json_response({"object": "list", "data": await request.app[GATEWAY].keys.list()})


async def revoke_key(request: web.Request) -> web.Response:
    """``DELETE /-/keys/{id}``: revoke a stored key; every gateway sharing the database follows."""
    require_admin(request)
    return json_response(await request.app[GATEWAY].keys.revoke(request.match_info["id"]))


async def spend_report(request: web.Request) -> web.Response:
    """``GET /spend?by=model,team&since=24h``: spend aggregated from the ledger (admin).

    Real time within the ledger exporter's flush interval: rows are written every
    ``[exporters.ledger] flush_interval`` seconds (1 s by default).
    """
    require_admin(request)
    try:
        by = spend.parse_by(request.query.get("by", "model"))
    except ValueError as exc:
        raise GatewayError(400, str(exc), param="by", code="invalid_value") from None
    try:
        since = spend.parse_duration(request.query.get("since", "24h"))
    except ValueError as exc:
        raise GatewayError(400, f"since: {exc}", param="since", code="invalid_value") from None
    try:
        report = await spend.spend(request.app[LEDGER_READER].engine(), by, since)
    except Exception as exc:  # unreachable database, unusable URL: the gateway itself is fine
        log.warning("GET /spend: cannot read the ledger (%s: %s)", type(exc).__name__, exc)
        raise GatewayError(503, f"the ledger cannot be read ({type(exc).__name__}); see the gateway log",
                           type="server_error", code="ledger_unavailable") from None
    return json_response(report.to_json())
