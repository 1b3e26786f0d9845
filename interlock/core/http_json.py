"""JSON over HTTP: reading a client's body within the size limit, writing JSON and error responses.

Shared by the front doors, the admin endpoints and the introspection endpoints.
A body larger than ``[server] max_body_bytes`` is refused before it is read
(413), one that has not fully arrived within ``[server] body_timeout`` is a 408
(the client stopped sending, or sends too slowly), an empty or malformed one is
a 400 naming what is wrong; a client that disconnects while its body is read
raises :class:`ConnectionResetError` (the app logs it as a disconnect).
Responses are encoded with :mod:`interlock.core.jsonutil` (orjson when installed).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from interlock.core import http_server, jsonutil
from interlock.core.errors import GatewayError
from interlock.core.validate import require_object

_JSON = "application/json"


async def read_json(request: web.Request, limit: int, timeout: float | None = None) -> dict[str, Any]:
    """The request's body as a JSON object, at most ``limit`` bytes, all of it within ``timeout`` seconds."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        if timeout is None or request.content.is_eof():  # usually all there already: no timer then
            raw = await request.read()
        else:
            async with asyncio.timeout(timeout):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    except TimeoutError:
        http_server.close_after_answer(request)  # the rest of the body is not waited for
        expected = f" of {request.content_length}" if request.content_length is not None else ""
        raise GatewayError(
            408, f"the request body did not arrive within {timeout:g}s (got {request.content.total_bytes}{expected} "
            "bytes); the connection is closed", code="request_timeout",
        ) from None
    except web.RequestPayloadError as exc:  # a broken chunked encoding, a body cut short by the close
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError(f"the request body was cut off: {exc}") from None
        raise GatewayError(400, f"the request body could not be read: {exc}", code="invalid_body") from None
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
