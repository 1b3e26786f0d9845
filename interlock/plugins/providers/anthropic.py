"""Anthropic: Claude through the native Messages API (``POST /v1/messages``).

Requests, responses, streams and errors are translated by
:mod:`interlock.plugins.providers.translation.anthropic` (shared with Anthropic on
Vertex AI); this module adds the endpoint, the ``x-api-key`` /
``anthropic-version: 2023-06-01`` headers and the transport. Anthropic has no embeddings.

Translation notes: system/developer messages become ``system``; ``temperature`` is
clamped to 1 and passed with ``top_p`` (models from Opus 4.7 on reject sampling
parameters: don't send them there); ``top_k`` and ``thinking`` pass through from
``extra_body``; ``n``, ``seed``, penalties and ``logprobs`` are dropped;
``response_format`` ``json_object`` becomes a system instruction and ``json_schema`` a
forced tool whose input is returned as the content (see :mod:`.translation.anthropic`).

Config keys (besides the common ``base_url``, ``api_key``, ``headers``, ``timeout``, ``models``):

* ``max_tokens_default`` — ``max_tokens`` sent when the client gives none (Anthropic
  requires it); default 4096.

Clients of the gateway's own Messages door (``POST /v1/messages``) are passed through:
their body goes to Anthropic as they sent it, with the target's model, their
``anthropic-version`` and ``anthropic-beta`` headers and this instance's key, and the
answer (message or event stream) goes back untouched (:meth:`Anthropic.native`,
:meth:`Anthropic.native_stream`, :meth:`Anthropic.count_tokens`).

Beta features are enabled with the ``anthropic-beta`` header through ``headers``::

    [providers.anthropic]
    api_key = "${ANTHROPIC_API_KEY}"        # the default when ANTHROPIC_API_KEY is set
    base_url = "https://api.anthropic.com"  # the API root, without /v1 (ANTHROPIC_BASE_URL)
    max_tokens_default = 8192
    headers = { "anthropic-beta" = "context-1m-2025-08-07" }
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any


from interlock.plugins.providers.translation.anthropic_events import (
    client_headers,
    counted_tokens,
    message_usage,
    native_chunks,
    request_body,
)
from interlock.plugins.providers.translation.anthropic import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    build_request,
    error_fields,
    json_tool_of,
    parse_response,
    stream_chunks,
)
from interlock.provider_api import (
    ChatResult,
    Chunk,
    HTTPProvider,
    NativeResult,
    ProviderSettings,
    RequestContext,
    UpstreamError,
    hookimpl,
    iter_sse,
)


class Anthropic(HTTPProvider):
    """The Anthropic Messages API, translated to and from OpenAI Chat Completions."""

    type_name = "anthropic"
    display_name = "Anthropic"
    env_key = "ANTHROPIC_API_KEY"
    env_base_url = "ANTHROPIC_BASE_URL"
    default_base_url = "https://api.anthropic.com"
    supports_embeddings = False
    native_protocols = frozenset({"messages"})
    option_keys = frozenset({"max_tokens_default"})

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        value = settings.options.get("max_tokens_default")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(("max_tokens_default", "must be a positive integer"))
        return problems

    @property
    def max_tokens_default(self) -> int:
        return int(self.settings.options.get("max_tokens_default") or DEFAULT_MAX_TOKENS)

    @property
    def messages_url(self) -> str:
        # the SDK's base URL is the API root; accept one ending in /v1 too
        return self.base_url.removesuffix("/v1") + "/v1/messages"

    @property
    def count_tokens_url(self) -> str:
        return self.messages_url + "/count_tokens"

    def headers(self) -> dict[str, str]:
        """``x-api-key`` auth (never ``Authorization``) and the API version, then configured extras."""
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self.settings.api_key:
            headers["x-api-key"] = self.settings.api_key.get()
        headers.update(self.settings.headers)
        return headers

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        return error_fields(body)

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        body = build_request(ctx, model, stream=False, max_tokens_default=self.max_tokens_default)
        resp = await self.post(self.messages_url, body)
        out = await self.read_object(resp)
        if out.get("type") == "error":  # an error body with HTTP 200 (a misbehaving proxy)
            message, code, etype = error_fields(out)
            raise UpstreamError(
                f"{self.name} returned an error: {message}",
                kind="http",
                status=502,
                body=out,
                code=code,
                error_type=etype,
            )
        return parse_response(out, model, json_tool=json_tool_of(ctx.body))

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        body = build_request(ctx, model, stream=True, max_tokens_default=self.max_tokens_default)
        resp = await self.post(self.messages_url, body, stream=True, headers={"Accept": "text/event-stream"})
        done = False
        async with self.reading(resp, lambda: done):
            chunks = stream_chunks(
                iter_sse(resp.content), self.name, model=model, json_tool=json_tool_of(ctx.body)
            )
            async for chunk in chunks:
                yield chunk
            done = True  # stream_chunks only returns after message_stop

    # -- Messages clients, passed through -------------------------------- #

    def _native_headers(self, ctx: RequestContext, stream: bool) -> dict[str, str]:
        """The client's API version and betas; a configured ``anthropic-beta`` is kept beside the client's."""
        headers = client_headers(ctx.headers)
        configured = self.settings.headers.get("anthropic-beta")
        if configured and "anthropic-beta" in headers:
            headers["anthropic-beta"] = f"{configured},{headers['anthropic-beta']}"
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    async def native(self, ctx: RequestContext, model: str) -> NativeResult:
        """The client's Messages body sent as it is (model replaced); the ``message`` returned untouched."""
        assert ctx.native is not None  # the router only passes through requests that have one
        body = request_body(ctx.native, model, stream=False)
        resp = await self.post(self.messages_url, body, headers=self._native_headers(ctx, False))
        out = await self.read_object(resp)
        if out.get("type") == "error":  # an error body with HTTP 200 (a misbehaving proxy)
            message, code, etype = error_fields(out)
            raise UpstreamError(
                f"{self.name} returned an error: {message}", kind="http", status=502, body=out, code=code,
                error_type=etype,
            )
        return NativeResult(out, message_usage(out))

    async def native_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        """The client's Messages body streamed; every upstream event handed on as a native chunk."""
        assert ctx.native is not None
        body = request_body(ctx.native, model, stream=True)
        resp = await self.post(self.messages_url, body, stream=True, headers=self._native_headers(ctx, True))
        done = False
        async with self.reading(resp, lambda: done):
            async for chunk in native_chunks(iter_sse(resp.content), self.name):
                yield chunk
            done = True  # native_chunks only returns after message_stop

    async def count_tokens(self, ctx: RequestContext, model: str) -> int:
        """``POST /v1/messages/count_tokens`` for the client's Messages body (``ctx.native``) on ``model``."""
        assert ctx.native is not None
        body = request_body(ctx.native, model, stream=False)
        resp = await self.post(self.count_tokens_url, body, headers=self._native_headers(ctx, False))
        return counted_tokens(await self.read_object(resp), "input_tokens", f"{self.name}: count_tokens")


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Anthropic)
