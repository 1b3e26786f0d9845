"""Google Gemini through the Generative Language API (AI Studio keys).

Chat goes to ``POST /{version}/models/{model}:generateContent`` (streams:
``:streamGenerateContent?alt=sse``), embeddings to ``:batchEmbedContents``; the key
travels in the ``x-goog-api-key`` header, never in the URL. The translation to and
from the GenerateContent format lives in :mod:`~interlock.plugins.providers.translation.gemini`,
shared with Vertex AI.

Config keys besides the common ones (``api_key`` defaults to ``GEMINI_API_KEY`` or
``GOOGLE_API_KEY``; ``base_url`` to ``https://generativelanguage.googleapis.com``, or
``GOOGLE_GEMINI_BASE_URL``)::

    [providers.gemini]
    api_key = "${GEMINI_API_KEY}"
    api_version = "v1beta"          # or "v1", "v1alpha"
    raw_schemas = false             # true: send tool/response JSON Schemas untouched
                                    # (parametersJsonSchema / responseJsonSchema) instead of
                                    # converting them to Gemini's OpenAPI subset
    safety_settings = [             # sent as safetySettings on every chat request
      { category = "HARM_CATEGORY_HARASSMENT", threshold = "BLOCK_ONLY_HIGH" },
    ]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp

from interlock.plugins.providers.translation import gemini as fmt
from interlock.provider_api import (
    ChatResult,
    Chunk,
    EmbeddingsResult,
    HTTPProvider,
    ProviderSettings,
    RequestContext,
    UpstreamError,
    Usage,
    embeddings_body,
    hookimpl,
    iter_sse_data,
)

_VERSIONS = ("v1beta", "v1", "v1alpha")


class Gemini(HTTPProvider):
    """The Gemini API with an API key; OpenAI requests translated to GenerateContent."""

    type_name = "gemini"
    display_name = "Google Gemini"
    env_key = "GEMINI_API_KEY"
    env_key_aliases = ("GOOGLE_API_KEY",)
    env_base_url = "GOOGLE_GEMINI_BASE_URL"
    default_base_url = "https://generativelanguage.googleapis.com"
    option_keys: ClassVar[frozenset[str]] = frozenset({"api_version", "raw_schemas", "safety_settings"})

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        opts = settings.options
        if "api_version" in opts and opts["api_version"] not in _VERSIONS:
            problems.append(("api_version", f"must be one of {', '.join(_VERSIONS)}"))
        if "raw_schemas" in opts and not isinstance(opts["raw_schemas"], bool):
            problems.append(("raw_schemas", "must be true or false"))
        if "safety_settings" in opts:
            value = opts["safety_settings"]
            if not isinstance(value, list) or not all(
                isinstance(s, dict)
                and isinstance(s.get("category"), str)
                and isinstance(s.get("threshold"), str)
                for s in value
            ):
                problems.append(
                    ("safety_settings", "must be a list of { category = ..., threshold = ... } tables")
                )
        return problems

    # -- plumbing --------------------------------------------------------- #

    def headers(self) -> dict[str, str]:
        """JSON plus ``x-goog-api-key`` (the query-string ``key=`` form would leak into access logs)."""
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["x-goog-api-key"] = self.settings.api_key.get()
        headers.update(self.settings.headers)
        return headers

    @property
    def api_root(self) -> str:
        """The versioned root, e.g. ``https://generativelanguage.googleapis.com/v1beta``."""
        if self.base_url.rsplit("/", 1)[-1] in _VERSIONS:  # a base_url that already names the version
            return self.base_url
        return f"{self.base_url}/{self.settings.options.get('api_version', 'v1beta')}"

    def url(self, model: str, method: str) -> str:
        """``{root}/models/{model}:{method}``; tuned models keep their ``tunedModels/`` resource name."""
        resource = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        return f"{self.api_root}/{quote(resource, safe='/')}:{method}"

    async def http_error(self, resp: aiohttp.ClientResponse) -> UpstreamError:
        return fmt.adjust_error(await super().http_error(resp))

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        return fmt.error_fields(body)

    async def _body(self, ctx: RequestContext, model: str, stream: bool) -> dict[str, Any]:
        body = await fmt.build_request(
            ctx,
            self.http.session,
            stream=stream,
            model=model,
            raw_schemas=bool(self.settings.options.get("raw_schemas")),
        )
        if safety := self.settings.options.get("safety_settings"):
            body["safetySettings"] = [
                {"category": s["category"], "threshold": s["threshold"]} for s in safety
            ]
        return body

    # -- API ------------------------------------------------------------- #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        resp = await self.post(self.url(model, "generateContent"), await self._body(ctx, model, stream=False))
        return fmt.parse_response(await self.read_object(resp), model)

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        body = await self._body(ctx, model, stream=True)
        resp = await self.post(
            self.url(model, "streamGenerateContent") + "?alt=sse",
            body,
            stream=True,
            headers={"Accept": "text/event-stream"},
        )
        clean = False
        try:
            async for chunk in fmt.stream_chunks(iter_sse_data(resp.content), model, self.name):
                yield chunk
            clean = True
        finally:
            # a stream abandoned or broken midway must not go back to the pool half-read
            resp.release() if clean else resp.close()

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        raw = ctx.body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise UpstreamError(
                "Gemini embeds text only: input must be a string or a list of strings",
                kind="http",
                status=400,
                code="invalid_value",
            )
        resource = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        dims = ctx.body.get("dimensions")
        requests = []
        for text in texts:
            item: dict[str, Any] = {"model": resource, "content": {"parts": [{"text": text}]}}
            if isinstance(dims, int):
                item["outputDimensionality"] = dims
            requests.append(item)
        resp = await self.post(self.url(model, "batchEmbedContents"), {"requests": requests})
        out = await self.read_object(resp)
        entries = [e for e in out.get("embeddings") or () if isinstance(e, dict)]
        vectors: list[list[float]] = [e["values"] for e in entries if isinstance(e.get("values"), list)]
        if len(vectors) != len(texts) or len(vectors) != len(entries):
            raise UpstreamError(
                f"{self.name}: embeddings response does not match the input", kind="stream", body=out
            )
        meta = out.get("usageMetadata")
        count = meta.get("promptTokenCount") if isinstance(meta, dict) else None
        tokens = count if isinstance(count, int) else 0  # often absent
        body = embeddings_body(vectors, model, tokens, ctx.body.get("encoding_format"))
        return EmbeddingsResult(body, Usage(prompt_tokens=tokens))


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Gemini)
