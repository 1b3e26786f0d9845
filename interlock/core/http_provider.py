"""The HTTP plumbing every HTTP provider shares: one request, every failure classified.

:class:`HTTPProvider` sends a JSON request through the app's single connection
pool and turns each way it can fail (connect error, timeout, HTTP status,
unreadable body) into an :class:`~interlock.core.types.UpstreamError` the
router can classify. Providers override :meth:`HTTPProvider.headers` for their
auth and :meth:`HTTPProvider.error_fields` for their error body shape. Public:
third-party providers subclass it through :mod:`interlock.provider_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import aiohttp
from yarl import URL

from interlock.core import jsonutil
from interlock.core.provider import Provider
from interlock.core.telemetry.request_trace import current
from interlock.core.types import UpstreamError

# headers worth keeping from an upstream error (retry hints, rate-limit state)
KEEP_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")

#: an upstream request body larger than this goes to aiohttp as a file-like object (aiohttp's own threshold)
LARGE_BODY_BYTES = 1024 * 1024


class HTTPProvider(Provider):
    """A provider reached over HTTP with JSON bodies."""

    #: headers every request carries besides auth (e.g. ``anthropic-version``)
    static_headers: ClassVar[dict[str, str]] = {}

    def headers(self) -> dict[str, str]:
        """Request headers: content type, ``Bearer`` auth by default, then configured extras."""
        headers = {"Content-Type": "application/json", **self.static_headers}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key.get()}"
        headers.update(self.settings.headers)
        return headers

    def timeout(self, stream: bool) -> aiohttp.ClientTimeout:
        """The attempt timeout: a total for a whole answer, the silence between chunks for a stream."""
        return _client_timeout(stream, self.settings.timeout, self.settings.connect_timeout)

    async def request(
        self,
        method: str,
        url: str | URL,  # a URL built with encoded=True goes out byte for byte (signed paths)
        body: Any = None,
        *,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; a non-2xx status raises the classified :class:`UpstreamError`."""
        all_headers = self.headers()
        if headers:
            all_headers.update(headers)
        current().inject(all_headers)  # the attempt span's traceparent, when tracing
        raw = data if data is not None else (jsonutil.dumps(body) if body is not None else None)
        # aiohttp sends a file-like body in chunks (and warns about a large bytes one)
        payload = io.BytesIO(raw) if raw is not None and len(raw) > LARGE_BODY_BYTES else raw
        try:
            resp = await self.http.session.request(
                method, url, data=payload, headers=all_headers, timeout=self.timeout(stream)
            )
        except asyncio.TimeoutError:
            raise UpstreamError(f"{self.name}: timed out connecting or waiting for the response", kind="timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{self.name}: connection failed ({type(exc).__name__})", kind="connection") from None
        if resp.status >= 400:
            raise await self.http_error(resp)
        return resp

    async def post(self, url: str | URL, body: Any, *, stream: bool = False, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """``request("POST", ...)`` with a JSON body."""
        return await self.request("POST", url, body, stream=stream, headers=headers)

    async def http_error(self, resp: aiohttp.ClientResponse) -> UpstreamError:
        """The :class:`UpstreamError` for a failed response (reads and releases it)."""
        try:
            raw = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            raw = b""
        finally:
            resp.release()
        body: Any
        try:
            body = jsonutil.loads(raw) if raw else None
        except jsonutil.JSONDecodeError:
            body = raw[:2000].decode("utf-8", "replace")
        message, code, etype = self.error_fields(body)
        return UpstreamError(
            f"{self.name} returned HTTP {resp.status}: {message or resp.reason}",
            kind="http",
            status=resp.status,
            body=body,
            headers={k: resp.headers[k] for k in KEEP_HEADERS if k in resp.headers},
            code=code,
            error_type=etype,
        )

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        """``(message, code, type)`` from an error body; the default reads OpenAI-like shapes."""
        return error_fields(body)

    @contextlib.asynccontextmanager
    async def reading(
        self, resp: aiohttp.ClientResponse, complete: Callable[[], bool], end: str | None = None
    ) -> AsyncIterator[None]:
        """Read a streamed response inside this block.

        A read timeout or a broken connection becomes a classified failure; the
        connection goes back to the pool only if ``complete()`` says the stream
        reached its end, and is dropped otherwise (broken, or abandoned by the
        client); with ``end`` named, a stream that stops before its end marker is
        a broken stream.
        """
        try:
            yield
        except asyncio.TimeoutError:
            raise UpstreamError(f"{self.name}: stream timed out", kind="timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{self.name}: stream broken ({type(exc).__name__})", kind="stream") from None
        finally:
            resp.release() if complete() else resp.close()
        if end is not None and not complete():
            raise UpstreamError(f"{self.name}: stream ended without {end}", kind="stream")

    async def read_object(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        """Read a successful response's JSON object, classifying every way that can fail."""
        try:
            raw = await resp.read()
        except asyncio.TimeoutError:
            raise UpstreamError(f"{self.name}: timed out reading the response", kind="timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{self.name}: response broken ({type(exc).__name__})", kind="connection") from None
        finally:
            resp.release()
        try:
            body = jsonutil.loads(raw)
        except jsonutil.JSONDecodeError:
            raise UpstreamError(f"{self.name}: response is not JSON", kind="stream", status=resp.status) from None
        if not isinstance(body, dict):
            raise UpstreamError(f"{self.name}: response is not a JSON object", kind="stream", status=resp.status)
        return body


@functools.lru_cache(maxsize=256)  # immutable and few: shared rather than built per request (~0.6 µs each)
def _client_timeout(stream: bool, timeout: float | None, connect: float | None) -> aiohttp.ClientTimeout:
    # `connect` bounds the wait for a pooled connection (all of a host's [server]
    # upstream_connections_per_host busy) plus the connect itself; `total` includes that wait
    if stream:  # a long answer may stream for minutes: bound the silence between chunks instead
        return aiohttp.ClientTimeout(sock_read=timeout, connect=timeout, sock_connect=connect)
    return aiohttp.ClientTimeout(total=timeout, sock_connect=connect)


def error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """(message, code, type) from the error shapes OpenAI-like APIs use."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            code = err.get("code")
            etype = err.get("type") or err.get("status")
            message = err.get("message") or body.get("message") or body.get("detail") or ""
            return str(message), (str(code) if code is not None else None), (str(etype) if etype else None)
        if isinstance(err, str):
            return err, None, None
    if isinstance(body, str):
        return body[:500], None, None
    return "", None, None
