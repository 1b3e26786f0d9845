"""The shared base of every provider that speaks the OpenAI Chat Completions wire format.

A concrete provider sets its base URL, key variable and quirks; requests and
streams pass through with minimal work: the client's body is shallow-copied
(unknown parameters survive untouched), and stream chunks are forwarded as the
upstream's own bytes unless a quirk must rewrite one. Public: third-party
providers subclass it through :mod:`interlock.provider_api`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp

from interlock.core import jsonutil
from interlock.core.http_provider import HTTPProvider, error_fields
from interlock.core.provider import ProviderSettings
from interlock.core.responses_wire import native_chunk, usage_from_responses
from interlock.core.sse import iter_sse, iter_sse_data
from interlock.core.types import ChatResult, Chunk, EmbeddingsResult, NativeResult, RequestContext, UpstreamError, Usage

# OpenAI's reasoning models (o-series, gpt-5) reject max_tokens and want max_completion_tokens
_REASONING = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)


def rename_max_tokens(body: dict[str, Any], model: str) -> None:
    """Send ``max_tokens`` as ``max_completion_tokens`` to OpenAI's reasoning models (o-series, gpt-5).

    For providers that serve OpenAI's own models (OpenAI, Azure OpenAI): call it from
    :meth:`OpenAICompatible.prepare`.
    """
    if "max_tokens" in body and _REASONING.match(model) and "max_completion_tokens" not in body:
        body["max_completion_tokens"] = body.pop("max_tokens")


class OpenAICompatible(HTTPProvider):
    """Base for OpenAI-wire providers. Override the small ``prepare``/``fix_*`` hooks for quirks."""

    chat_path: ClassVar[str] = "/chat/completions"
    embeddings_path: ClassVar[str] = "/embeddings"
    #: where OpenAI Responses requests go when the instance takes them natively (see :meth:`speaks`)
    responses_path: ClassVar[str] = "/responses"
    #: ask for usage on streams with ``stream_options.include_usage`` (some APIs reject the field)
    stream_usage_option: ClassVar[bool] = True
    #: provider finish reasons that are not OpenAI's, mapped onto OpenAI's set
    finish_reasons: ClassVar[dict[str, str]] = {}

    # -- config ----------------------------------------------------------- #

    #: ``responses = true`` says the upstream also serves ``POST {base_url}/responses`` (the OpenAI
    #: Responses API), so requests from the Responses door are passed through instead of translated;
    #: ``false`` turns that off for a type that speaks it by default (OpenAI)
    option_keys: ClassVar[frozenset[str]] = frozenset({"responses"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.option_keys = cls.option_keys | {"responses"}  # every OpenAI-wire type understands it

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        """The base checks, plus the type of the ``responses`` option."""
        problems = super().validate(settings)
        if not isinstance(settings.options.get("responses", False), bool):
            problems.append(("responses", "must be true or false"))
        return problems

    def speaks(self, protocol: str, model: str) -> bool:
        """Responses natively when the type does by default or the instance says ``responses = true``."""
        if protocol == "responses":
            return bool(self.settings.options.get("responses", "responses" in self.native_protocols))
        return protocol in self.native_protocols

    # -- quirks (override in subclasses) --------------------------------- #

    def prepare(self, body: dict[str, Any], model: str, stream: bool) -> None:
        """Adjust the outgoing body in place (it is already a copy)."""

    def prepare_native(self, body: dict[str, Any], model: str) -> None:
        """Adjust an outgoing Responses request in place (a copy; ``model`` is already set)."""

    def fix_response(self, body: dict[str, Any]) -> None:
        """Adjust a non-stream response in place (OpenAI semantics)."""
        self._map_finish(body)

    def fix_chunk(self, chunk: dict[str, Any]) -> bool:
        """Adjust a parsed stream chunk in place; return True if it changed (it is re-encoded)."""
        return self._map_finish(chunk)

    def _map_finish(self, obj: dict[str, Any]) -> bool:
        changed = False
        if self.finish_reasons:
            for choice in obj.get("choices") or ():
                native = choice.get("finish_reason")
                if native in self.finish_reasons:
                    choice["finish_reason"] = self.finish_reasons[native]
                    choice.setdefault("native_finish_reason", native)
                    changed = True
        return changed

    def extract_usage(self, obj: dict[str, Any]) -> Usage | None:
        """The usage of a response or stream chunk (override where the upstream puts it elsewhere)."""
        return Usage.from_openai(obj.get("usage"))

    # -- plumbing --------------------------------------------------------- #

    def url(self, path: str, model: str) -> str:
        """The URL of an endpoint (``chat_path``, ``embeddings_path``) for ``model``."""
        return f"{self.base_url}{path}"

    def _body(self, ctx: RequestContext, model: str, stream: bool) -> dict[str, Any]:
        body = dict(ctx.body)
        body["model"] = model
        if stream:
            body["stream"] = True
            if self.stream_usage_option:
                opts = dict(body.get("stream_options") or {})
                opts["include_usage"] = True  # always meter; the router strips it if unasked
                body["stream_options"] = opts
            else:
                body.pop("stream_options", None)  # the API rejects the field, even from the client
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        self.prepare(body, model, stream)
        return body

    async def _post(self, path: str, model: str, body: dict[str, Any], stream: bool = False) -> aiohttp.ClientResponse:
        return await self.post(
            self.url(path, model), body, stream=stream, headers={"Accept": "text/event-stream"} if stream else None
        )

    # -- API ------------------------------------------------------------- #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        """The client's body (a shallow copy, ``model`` set, ``prepare`` applied); the answer after ``fix_response``."""
        resp = await self._post(self.chat_path, model, self._body(ctx, model, stream=False))
        body = await self.read_object(resp)
        if "error" in body and not body.get("choices"):  # some gateways report errors with HTTP 200
            message, code, etype = error_fields(body)
            raise UpstreamError(
                f"{self.name} returned an error: {message}", kind="http", status=_int(body["error"], "code") or 502,
                body=body, code=code, error_type=etype,
            )
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not all(
            isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices
        ):
            # a 200 without an answer must not reach the client as one: classified like an unreadable body
            raise UpstreamError(
                f"{self.name}: response has no choices with a message", kind="stream", status=resp.status
            )
        self.fix_response(body)
        return ChatResult(body, self.extract_usage(body))

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        """The upstream's SSE chunks, forwarded as its own bytes unless ``fix_chunk`` rewrote one."""
        resp = await self._post(self.chat_path, model, self._body(ctx, model, stream=True), stream=True)
        done = False
        async with self.reading(resp, lambda: done, "[DONE]"):
            async for data in iter_sse_data(resp.content):
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    obj = jsonutil.loads(data)
                except jsonutil.JSONDecodeError:
                    raise UpstreamError(f"{self.name}: malformed stream chunk", kind="stream") from None
                if not isinstance(obj, dict):
                    raise UpstreamError(f"{self.name}: stream chunk is not a JSON object", kind="stream")
                if "error" in obj:
                    message, code, etype = error_fields(obj)
                    raise UpstreamError(
                        f"{self.name} stream error: {message}", kind="stream", status=_int(obj["error"], "code"),
                        body=obj, code=code, error_type=etype,
                    )
                yield self._chunk(data, obj, strip_usage=not ctx.client_wants_usage)

    def _chunk(self, data: bytes, obj: dict[str, Any], *, strip_usage: bool) -> Chunk:
        changed = self.fix_chunk(obj)  # first: a quirk may rewrite the usage (xAI)
        usage = self.extract_usage(obj)
        choices = obj.get("choices") or ()
        if strip_usage and choices and obj.get("usage"):
            # usage riding on a content chunk (Mistral does this unasked): metered, not forwarded
            del obj["usage"]
            changed = True
        if changed:
            data = jsonutil.dumps(obj)
        content = False
        finish = None
        for choice in choices:
            delta = choice.get("delta") or {}
            if (
                delta.get("content") or delta.get("tool_calls") or delta.get("refusal")
                or delta.get("reasoning_content") or delta.get("reasoning")
            ):
                content = True
            finish = choice.get("finish_reason") or finish
        return Chunk(
            payload=data,
            content=content,
            usage=usage,
            usage_only=usage is not None and not choices,
            finish_reason=finish,
            response_id=obj.get("id"),
            response_model=obj.get("model"),
        )

    # -- the OpenAI Responses API, passed through ---------------------------- #

    def _native_body(self, ctx: RequestContext, model: str, stream: bool) -> dict[str, Any]:
        body = dict(ctx.native or {})
        body["model"] = model
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        self.prepare_native(body, model)
        return body

    async def native(self, ctx: RequestContext, model: str) -> NativeResult:
        """The client's Responses request (``ctx.native``, ``model`` replaced); the upstream's response object."""
        resp = await self._post(self.responses_path, model, self._native_body(ctx, model, stream=False))
        body = await self.read_object(resp)
        if body.get("object") != "response":
            message, code, etype = error_fields(body)
            raise UpstreamError(
                f"{self.name} returned no response object: {message}", kind="http", status=502, body=body, code=code,
                error_type=etype,
            )
        if body.get("status") == "failed":
            err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
            raise UpstreamError(
                f"{self.name}: the response failed: {err.get('message') or 'no reason given'}", kind="http", status=502,
                body=body, code=str(err.get("code") or "") or None,
            )
        return NativeResult(body, usage_from_responses(body.get("usage"), body.get("output")))

    async def native_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        """The upstream's Responses events, each one native chunk as it arrived (lifecycle events parsed)."""
        resp = await self._post(self.responses_path, model, self._native_body(ctx, model, stream=True), stream=True)
        done = False
        async with self.reading(resp, lambda: done, "response.completed"):
            async for event, data in iter_sse(resp.content):
                chunk = native_chunk(self.name, event, data)
                if chunk is None:
                    continue
                if chunk.finish_reason is not None:
                    done = True  # response.completed / response.incomplete: the last event of a stream
                yield chunk
                if done:
                    break

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        """The client's embeddings request with ``model`` replaced, passed through."""
        body = dict(ctx.body)
        body["model"] = model
        resp = await self._post(self.embeddings_path, model, body)
        out = await self.read_object(resp)
        return EmbeddingsResult(out, Usage.from_openai(out.get("usage")))


def _int(obj: Any, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and 100 <= value <= 599 else None
