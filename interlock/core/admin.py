"""The admin and information endpoints: config reload, gateway API keys, budgets, spend, plugins.

Who may call them (docs/admin.md has the table, endpoint by endpoint):

* **the administrator**: ``Authorization: Bearer <[server] admin_key>`` (compared in
  constant time); without an admin key, a loopback client that presents no gateway
  API key, so a gateway bound to a public address does not hand out keys or spend
  to anyone who asks. Everything.
* **a reader**: ``Authorization: Bearer <[server] read_key>``, when one is set: the
  information endpoints (:func:`require_reader`: ``GET /health/providers``,
  ``/-/plugins``, ``/metrics``, ``/spend``, ``/-/keys``, ``/-/budgets``), never one
  that changes anything.
* **a gateway API key**: ``GET /spend`` only, and only its own team's requests (a
  key without a team: its own); any other admin or information endpoint is a 403.

Anyone else gets a 401 (``admin_key`` set) or a 403 (no ``admin_key``, another
address). ``GET /metrics`` answers anyone with ``[server] public_metrics = true``;
``GET /health``, the liveness probe, always answers anyone. Errors never echo a key.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Literal

from aiohttp import web

from interlock.accounting import spend
from interlock.accounting.keys import ApiKey, check_tags, presented_key
from interlock.accounting.rate_limits import LIMIT_FIELDS, parse_expiry, parse_limits, parse_models
from interlock.core.config import ConfigError
from interlock.core.errors import GatewayError
from interlock.core.gateway import GATEWAY
from interlock.core.http_json import json_response, read_json
from interlock.core.plugins import plugin_info
from interlock.core.provider import Secret

log = logging.getLogger("interlock.app")

#: GET /spend's read-only engine on the ledger database, opened on first use
LEDGER_READER = web.AppKey("ledger_reader", spend.LedgerReader)

#: the addresses trusted as the administrator when no ``[server] admin_key`` is set
LOOPBACK = frozenset({"127.0.0.1", "::1"})

ADMIN: Literal["admin"] = "admin"
READER: Literal["reader"] = "reader"
#: who called an admin or information endpoint: the administrator, a reader, or a gateway API key
Caller = Literal["admin", "reader"] | ApiKey


def add_routes(app: web.Application) -> None:
    """Register the admin endpoints (and the plugin listing) on ``app``."""
    app.router.add_get("/-/plugins", plugins)
    app.router.add_post("/-/reload", reload_config)
    app.router.add_post("/-/keys", create_key)
    app.router.add_get("/-/keys", list_keys)
    app.router.add_delete("/-/keys/{id}", revoke_key)
    app.router.add_patch("/-/keys/{id}", update_key)
    app.router.add_get("/spend", spend_report)
    app.router.add_get("/-/budgets", list_budgets)
    app.router.add_post("/-/budgets/reset", reset_budget)


def _sent(authorization: bytes, secret: Secret | None) -> bool:
    return secret is not None and hmac.compare_digest(authorization, f"Bearer {secret.get()}".encode())


def identify(request: web.Request, *, readable: bool) -> Caller:
    """Who calls an admin (``readable=False``) or information endpoint; 401/403 for anyone else.

    The admin key, then the read key, then a gateway API key. With none of them, and no
    admin key set, the administrator is a loopback client, unless it sent a key the
    gateway does not accept (wrong, revoked, expired) while gateway keys are in use:
    that is the key's 401, never an administrator's answer. A gateway without any
    gateway key ignores what a client sends (SDKs always send some key).
    """
    cfg = request.app[GATEWAY].cfg
    authorization = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")  # bytes that are not UTF-8 stay bytes
    if _sent(authorization, cfg.admin_key):
        return ADMIN
    if _sent(authorization, cfg.read_key):
        return READER
    refused: GatewayError | None = None
    if presented_key(request.headers) is not None:
        try:
            key = request.app[GATEWAY].keys.authenticate(request.headers)  # None: the gateway has no keys
        except GatewayError as err:
            key, refused = None, err
        if key is not None:
            return key
    read = readable and cfg.read_key is not None
    if cfg.admin_key is not None:
        raise GatewayError(401, "this endpoint needs 'Authorization: Bearer <server.admin_key>'"
                           + (" or <server.read_key>" if read else ""),
                           type="authentication_error", code="invalid_admin_key")
    if refused is not None:
        raise refused
    if request.remote not in LOOPBACK:
        raise GatewayError(403, "without server.admin_key, admin endpoints answer loopback clients only"
                           + ("; or send 'Authorization: Bearer <server.read_key>'" if read else ""),
                           type="permission_error", code="admin_forbidden")
    return ADMIN


def _forbidden(caller: Caller) -> GatewayError:
    if caller == READER:
        return GatewayError(403, "server.read_key reads; this endpoint changes the gateway and needs server.admin_key",
                            type="permission_error", code="read_only_key")
    return GatewayError(403, "a gateway API key cannot use this endpoint: it is for the gateway's administrator "
                        "(server.admin_key; without one, a loopback client that sends no gateway API key)",
                        type="permission_error", code="admin_only")


def require_admin(request: web.Request) -> None:
    """The guard of every endpoint that changes something: the administrator only."""
    caller = identify(request, readable=False)
    if caller != ADMIN:
        raise _forbidden(caller)


def require_reader(request: web.Request) -> None:
    """The guard of the information endpoints: the administrator or the read key, never a gateway API key."""
    caller = identify(request, readable=True)
    if isinstance(caller, ApiKey):
        raise _forbidden(caller)


def require_metrics(request: web.Request) -> None:
    """The guard of the telemetry exporters' routes (``GET /metrics``): :func:`require_reader`,
    unless ``[server] public_metrics = true`` opens them to scrapers without a credential."""
    if not request.app[GATEWAY].cfg.public_metrics:
        require_reader(request)


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
    if gateway.reload_peers is not None:  # serve --workers: the other workers reload too (via the supervisor)
        gateway.reload_peers()
    return json_response({"reloaded": True, "source": gateway.cfg.source, "routes": sorted(gateway.resolver.routes),
                          "providers": sorted(gateway.providers), "notes": notes})


async def plugins(request: web.Request) -> web.Response:
    """``GET /-/plugins``: every registered plugin and what it registered."""
    require_reader(request)
    gateway = request.app[GATEWAY]
    return json_response({"plugins": plugin_info(gateway.pm, gateway.registry)})


# --------------------------------------------------------------------------- #
# gateway API keys
# --------------------------------------------------------------------------- #


_LIMIT_BODY_FIELDS = (*LIMIT_FIELDS, "models", "expires_at")
_CREATE_FIELDS = ("name", "team", "tags", *_LIMIT_BODY_FIELDS)


def _refuse(problems: list[tuple[str, str]]) -> None:
    if problems:
        path, message = problems[0]
        raise GatewayError(400, f"{path}: {message}", param=path.split("[")[0], code="invalid_value")


def _unknown_fields(body: dict[str, object], known: tuple[str, ...]) -> list[tuple[str, str]]:
    """A problem for each field of an admin request body that the endpoint does not take."""
    return [(field, f"unknown field (known: {', '.join(known)})") for field in body if field not in known]


async def create_key(request: web.Request) -> web.Response:
    """``POST /-/keys`` ``{"name", "team", "tags", "rpm", "tpm", "max_concurrent", "models", "expires_at"}``.

    A new key, returned once, stored hashed.
    """
    require_admin(request)
    body = await _body(request)
    problems = _unknown_fields(body, _CREATE_FIELDS)
    values: dict[str, str | None] = {}
    for field in ("name", "team"):
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 128):
            problems.append((field, "must be a non-empty string of at most 128 characters"))
            value = None
        values[field] = value.strip() if isinstance(value, str) else None
    tags = check_tags(body.get("tags"), "tags", problems)
    limits = parse_limits(body, "", problems)
    expires_at = parse_expiry(body.get("expires_at"), "expires_at", problems)
    _refuse(problems)
    key, record = await request.app[GATEWAY].keys.create(values["name"], values["team"], tags, limits, expires_at)
    return json_response({**record, "key": key}, status=201, headers={"Cache-Control": "no-store"})


async def update_key(request: web.Request) -> web.Response:
    """``PATCH /-/keys/{id}`` ``{"rpm", "tpm", "max_concurrent", "models", "expires_at"}``: change a stored key's limits.

    Only the fields sent change; ``null`` removes a limit. Every gateway sharing the database follows.
    """
    require_admin(request)
    body = await _body(request)
    problems = _unknown_fields(body, _LIMIT_BODY_FIELDS)
    limits = parse_limits(body, "", problems)
    changes: dict[str, object] = {f: getattr(limits, f) for f in LIMIT_FIELDS if f in body}
    if "models" in body:
        changes["models"] = parse_models(body["models"], "models", problems)
    if "expires_at" in body:
        changes["expires_at"] = parse_expiry(body["expires_at"], "expires_at", problems)
    _refuse(problems)
    return json_response(await request.app[GATEWAY].keys.update(request.match_info["id"], changes))


async def list_keys(request: web.Request) -> web.Response:
    """``GET /-/keys``: ids, names, teams, tags, prefixes, created/revoked; never a key or its hash."""
    require_reader(request)
    return json_response({"object": "list", "data": await request.app[GATEWAY].keys.list()})


async def revoke_key(request: web.Request) -> web.Response:
    """``DELETE /-/keys/{id}``: revoke a stored key; every gateway sharing the database follows."""
    require_admin(request)
    return json_response(await request.app[GATEWAY].keys.revoke(request.match_info["id"]))


# --------------------------------------------------------------------------- #
# budgets
# --------------------------------------------------------------------------- #


async def list_budgets(request: web.Request) -> web.Response:
    """``GET /-/budgets``: every budget's limit and counter (spend plus in-flight reservations) for this period."""
    require_reader(request)
    return json_response({"object": "list", "data": await request.app[GATEWAY].budgets.status()})


async def reset_budget(request: web.Request) -> web.Response:
    """``POST /-/budgets/reset`` ``{"scope": "team:search"}``: the scope's current periods start again at $0.

    Takes effect on every gateway process sharing the store at once (the counters
    live there); the reset is recorded as a ``budget_reset`` alert in the ledger, so a
    restart re-seeds only the spend after it.
    """
    require_admin(request)
    body = await _body(request)
    scope = body.get("scope")
    if not isinstance(scope, str) or set(body) != {"scope"}:
        raise GatewayError(400, 'send {"scope": "<a [[budgets]] scope>"}, e.g. {"scope": "team:search"}',
                           param="scope", code="invalid_value")
    return json_response(await request.app[GATEWAY].budgets.reset(scope))


# --------------------------------------------------------------------------- #
# spend
# --------------------------------------------------------------------------- #


async def spend_report(request: web.Request) -> web.Response:
    """``GET /spend?by=model,team&since=24h&team=search``: spend aggregated from the ledger.

    The administrator and the read key see every request (``team=`` narrows it to
    one team); a gateway API key sees its own team's requests only (a key without a
    team: its own), and asking for another team is a 403, never a quietly different
    answer. The body's ``filter`` says which requests were counted.

    Real time within the ledger exporter's flush interval: rows are written every
    ``[exporters.ledger] flush_interval`` seconds (1 s by default).
    """
    caller = identify(request, readable=True)
    team = request.query.get("team")
    if team is not None and not team.strip():
        raise GatewayError(400, "team: name a team, or leave the parameter out", param="team", code="invalid_value")
    where: dict[str, str] = {} if team is None else {"team": team}
    if isinstance(caller, ApiKey):
        if team is not None and team != caller.team:
            raise GatewayError(403, "a gateway API key reads its own team's spend only" if caller.team is not None
                               else "a gateway API key without a team reads its own spend only",
                               type="permission_error", param="team", code="other_team")
        where = {"team": caller.team} if caller.team is not None else {"api_key": caller.id}
    try:
        by = spend.parse_by(request.query.get("by", "model"))
    except ValueError as exc:
        raise GatewayError(400, str(exc), param="by", code="invalid_value") from None
    try:
        since = spend.parse_duration(request.query.get("since", "24h"))
    except ValueError as exc:
        raise GatewayError(400, f"since: {exc}", param="since", code="invalid_value") from None
    try:
        report = await spend.spend(request.app[LEDGER_READER].engine(), by, since, where=where)
    except Exception as exc:  # unreachable database, unusable URL: the gateway itself is fine
        log.warning("GET /spend: cannot read the ledger (%s: %s)", type(exc).__name__, exc)
        raise GatewayError(503, f"the ledger cannot be read ({type(exc).__name__}); see the gateway log",
                           type="server_error", code="ledger_unavailable") from None
    return json_response(report.to_json())


async def _body(request: web.Request) -> dict[str, Any]:
    """The admin request's JSON body, within the [server] size and time limits."""
    cfg = request.app[GATEWAY].cfg
    return await read_json(request, cfg.max_body_bytes, cfg.limits.body_timeout)
