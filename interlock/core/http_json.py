"""JSON over HTTP: reading a client's body within the size limit, writing JSON and error responses.

Shared by the front doors, the admin endpoints and the introspection endpoints.
A body larger than ``[server] max_body_bytes`` is refused before it is read
(413), an empty or malformed one is a 400 naming what is wrong; responses are
encoded with :mod:`interlock.core.jsonutil` (orjson when installed).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from interlock.core import jsonutil
from interlock.core.errors import GatewayError
from interlock.core.validate import require_object

_JSON = "application/json"


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The request's body as a JSON object, at most ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    if not raw:
        raise GatewayError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    return require_object(body)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body exceeds the gateway's limit of {limit} bytes", code="request_too_large")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=jsonutil.dumps(body), status=status, content_type=_JSON, headers=headers)


def error_response(err: GatewayError) -> web.Response:
    """``err`` in OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``)."""
    return web.Response(body=err.encode(), status=err.status, content_type=_JSON, headers=err.headers)
