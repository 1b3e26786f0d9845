"""What the chaos tests see of the gateway: the ``openai`` SDK, plus the raw bytes it was given.

:class:`TeeTransport` sits under the SDK's HTTP client and keeps a copy of every response
body by request id, so a test drives the gateway with the official SDK and still judges the
exact bytes on the wire (``[DONE]``, the explicit error event, the error body's shape).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

__all__ = ["TeeTransport", "anthropic_error", "json_or_none", "openai_client", "openai_error", "sse_data"]


class _TeeStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class TeeTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that records each response body under its request's ``x-request-id``."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.bodies: dict[str, bytearray] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        sink = self.bodies.setdefault(request.headers.get("x-request-id", ""), bytearray())
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code, headers=response.headers, stream=_TeeStream(response.stream, sink),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def openai_client(base_url: str, api_key: str = "client-key", tee: TeeTransport | None = None) -> openai.AsyncOpenAI:
    """The SDK as an application uses it, without its own retries (the gateway's are under test)."""
    http = httpx2.AsyncClient(transport=tee, timeout=120) if tee is not None else None
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120, http_client=http)


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (lines not valid UTF-8 are kept, replaced)."""
    out: list[str] = []
    for event in body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n"):
        lines = [line[len("data:"):].lstrip() for line in event.split("\n") if line.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def openai_error(body: Any) -> bool:
    """Whether ``body`` is exactly OpenAI's error shape."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    err = body["error"]
    return (
        set(err) == {"message", "type", "param", "code"}
        and isinstance(err["message"], str) and bool(err["message"])
        and isinstance(err["type"], str) and bool(err["type"])
    )


def anthropic_error(body: Any) -> bool:
    """Whether ``body`` is exactly Anthropic's error shape."""
    if not isinstance(body, dict) or body.get("type") != "error" or not isinstance(body.get("error"), dict):
        return False
    err = body["error"]
    return isinstance(err.get("type"), str) and bool(err["type"]) and isinstance(err.get("message"), str)


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
