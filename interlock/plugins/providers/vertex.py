"""Google Vertex AI: Gemini and Claude models in a Google Cloud project, with OAuth2 tokens.

Every model lives under ``{base}/v1/projects/{project}/locations/{location}``:

* Gemini (and any model not named ``claude-...``): ``publishers/google/models/{model}``
  ``:generateContent`` / ``:streamGenerateContent?alt=sse``, in the GenerateContent
  format shared with the Gemini API (:mod:`~interlock.plugins.providers.translation.gemini`);
* Claude (``claude-...``, e.g. ``claude-sonnet-4-5@20250929``): ``publishers/anthropic/models/{model}``
  ``:rawPredict`` / ``:streamRawPredict``, in the Anthropic Messages format
  (:mod:`~interlock.plugins.providers.translation.anthropic`) without ``model`` and with
  ``"anthropic_version": "vertex-2023-10-16"`` (:mod:`~interlock.plugins.providers.translation.vertex`);
* embeddings (``text-embedding-005``, ``gemini-embedding-001`` ...): ``publishers/google/models/{model}:predict``.

A client of the Anthropic Messages door is passed through to Claude untranslated (:meth:`Vertex.speaks`):
its body goes to the same methods with only ``model`` removed and ``anthropic_version`` set, its
``anthropic-beta`` header goes along, and Claude's answer (or its events) comes back as sent; its
``count_tokens`` requests go to ``publishers/anthropic/models/count-tokens:rawPredict``.

Auth is an OAuth2 access token (``Authorization: Bearer``) from a service-account key
file or application default credentials, fetched with ``google-auth`` (``pip install
'interlock[vertex]'``), cached, and refreshed five minutes before it expires; see
:mod:`~interlock.plugins.providers._vertex_auth`. There is no API key.

Config keys besides the common ones::

    [providers.vertex]
    project = "my-project"                   # required; default $GOOGLE_CLOUD_PROJECT or $VERTEXAI_PROJECT
    location = "us-central1"                 # default $GOOGLE_CLOUD_LOCATION, $VERTEXAI_LOCATION, or us-central1;
                                             # "global", "us" and "eu" use their own hosts
    credentials_file = "/etc/interlock/sa.json"  # a service-account key JSON; without it, application
                                             # default credentials: $GOOGLE_APPLICATION_CREDENTIALS,
                                             # gcloud's user credentials, the metadata server
    max_tokens_default = 4096                # Claude's required max_tokens when the client sends none
    # base_url = "https://europe-west4-aiplatform.googleapis.com"   # derived from location by default

Embedded defaults (no config file) enable the provider when ``GOOGLE_CLOUD_PROJECT`` (or
``VERTEXAI_PROJECT``) is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp

from interlock.plugins.providers._vertex_auth import AccessTokens, google_auth_missing
from interlock.plugins.providers.translation import anthropic as claude
from interlock.plugins.providers.translation import gemini, vertex
from interlock.plugins.providers.translation.anthropic_events import counted_tokens, native_chunks
from interlock.provider_api import (
    ChatResult,
    Chunk,
    EmbeddingsResult,
    HttpPool,
    HTTPProvider,
    NativeResult,
    ProviderSettings,
    RequestContext,
    UpstreamError,
    Usage,
    embeddings_body,
    hookimpl,
    iter_sse,
    iter_sse_data,
)

DEFAULT_LOCATION = "us-central1"
PROJECT_VARS = ("GOOGLE_CLOUD_PROJECT", "VERTEXAI_PROJECT")
LOCATION_VARS = ("GOOGLE_CLOUD_LOCATION", "VERTEXAI_LOCATION")
_EMBED_CONCURRENCY = 8
_API_VERSIONS = ("v1", "v1beta1")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]*$")  # ids, numbers and domain-scoped "example.com:proj"
_LOCATION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def api_host(location: str) -> str:
    """The Vertex AI host for ``location``: regional, global, or a multi-region (``us``, ``eu``)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def publisher_of(model: str) -> str:
    """``anthropic`` for Claude models, ``google`` for everything else."""
    return "anthropic" if model.lower().startswith("claude-") else "google"


def _service_account_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a service-account key file, if anything (read once, at startup)."""
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no such file: {path}"
    except (OSError, ValueError) as exc:
        return f"cannot read {path} as JSON ({type(exc).__name__})"
    if not isinstance(info, dict) or info.get("type") != "service_account":
        return (f"{path} is not a service-account key (\"type\": \"service_account\"); other credential types "
                "work through application default credentials (GOOGLE_APPLICATION_CREDENTIALS)")
    return None


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((environ[n] for n in names if environ.get(n)), None)


class Vertex(HTTPProvider):
    """Vertex AI's Gemini and Claude publisher models, translated to and from OpenAI's format."""

    type_name = "vertex"
    display_name = "Google Vertex AI"
    requires_key = False  # OAuth2 access tokens, not keys
    option_keys: ClassVar[frozenset[str]] = frozenset({"project", "location", "credentials_file", "max_tokens_default"})

    def __init__(self, settings: ProviderSettings, http: HttpPool) -> None:
        super().__init__(settings, http)
        opts = settings.options
        self.project = str(opts.get("project") or "")
        self.location = str(opts.get("location") or DEFAULT_LOCATION)
        self.base_url = (settings.base_url or api_host(self.location)).rstrip("/")
        credentials = opts.get("credentials_file")  # validated separately: never trusted to be a string here
        self.tokens = AccessTokens(
            self.name, str(Path(credentials).expanduser()) if isinstance(credentials, str) and credentials else None,
            timeout=settings.timeout,
        )

    # -- config ----------------------------------------------------------- #

    @classmethod
    def enabled_by_env(cls, environ: Mapping[str, str] = os.environ) -> bool:
        """Embedded defaults enable Vertex AI when a project is set (credentials are looked up lazily)."""
        return _first(environ, PROJECT_VARS) is not None

    @classmethod
    def options_from_env(cls, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if project := _first(environ, PROJECT_VARS):
            options["project"] = project
        if location := _first(environ, LOCATION_VARS):
            options["location"] = location
        # GOOGLE_APPLICATION_CREDENTIALS is left to application default credentials: it may name
        # credential types other than a service-account key
        return options

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        opts = settings.options
        if missing := google_auth_missing():
            problems.append(("type", missing))
        if settings.api_key:
            problems.append(("api_key", ("Vertex AI authenticates with OAuth2, not API keys: remove api_key and "
                                         "set credentials_file or use application default credentials")))
        project = opts.get("project")
        if not project:
            problems.append(("project", f"Vertex AI needs a Google Cloud project (or set {PROJECT_VARS[0]})"))
        elif not isinstance(project, str) or not _PROJECT.match(project):
            problems.append(("project", "must be a Google Cloud project id, e.g. \"my-project\""))
        location = opts.get("location", DEFAULT_LOCATION)
        if not isinstance(location, str) or not _LOCATION.match(location):
            problems.append(("location", "must be a Vertex AI location, e.g. \"us-central1\", \"global\" or \"eu\""))
        credentials = opts.get("credentials_file")
        if credentials is not None:
            if not isinstance(credentials, str) or not credentials:
                problems.append(("credentials_file", "must be the path of a credentials JSON file"))
            elif (problem := _service_account_problem(Path(credentials).expanduser())) is not None:
                problems.append(("credentials_file", problem))
        value = opts.get("max_tokens_default")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(("max_tokens_default", "must be a positive integer"))
        return problems

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            key="oauth2",
            project=self.project,
            location=self.location,
            credentials="file" if self.tokens.credentials_file else "application default",
            tokens_fetched=self.tokens.fetches,
        )
        return out

    # -- plumbing --------------------------------------------------------- #

    @property
    def api_root(self) -> str:
        """``{base}/v1/projects/{project}/locations/{location}``; a base URL naming the version keeps it."""
        root = self.base_url if self.base_url.rsplit("/", 1)[-1] in _API_VERSIONS else f"{self.base_url}/v1"
        return f"{root}/projects/{quote(self.project, safe=':')}/locations/{quote(self.location, safe='')}"

    def url(self, model: str, method: str) -> str:
        """The URL of ``method`` on a publisher model; ``@`` versions stay literal, as Google writes them."""
        return f"{self.api_root}/publishers/{publisher_of(model)}/models/{quote(model, safe='@')}:{method}"

    def headers(self) -> dict[str, str]:
        """JSON and configured extras; the access token is added per request (it is fetched asynchronously)."""
        return {"Content-Type": "application/json", **self.settings.headers}

    async def _post(
        self, model: str, method: str, body: Any, *, stream: bool = False, extra: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        return await self._post_url(self.url(model, method), body, stream=stream, extra=extra)

    async def _post_url(
        self, url: str, body: Any, *, stream: bool = False, extra: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        token = await self.tokens.token()
        headers = {**extra, "Authorization": f"Bearer {token}"} if extra else {"Authorization": f"Bearer {token}"}
        if stream:
            headers["Accept"] = "text/event-stream"
        try:
            return await self.post(url, body, stream=stream, headers=headers)
        except UpstreamError as err:
            if err.status == 401:  # revoked or expired early: the next request fetches a fresh token
                self.tokens.invalidate(token)
            raise

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        """Claude's own errors come in Anthropic's shape; the platform's (auth, quota, 5xx) in Google's."""
        return vertex.error_fields(body)

    async def http_error(self, resp: aiohttp.ClientResponse) -> UpstreamError:
        return gemini.adjust_error(await super().http_error(resp))

    def _claude_body(self, ctx: RequestContext, model: str, *, stream: bool) -> dict[str, Any]:
        default = int(self.settings.options.get("max_tokens_default") or claude.DEFAULT_MAX_TOKENS)
        return vertex.claude_body(ctx, model, stream=stream, max_tokens_default=default)

    # -- API ------------------------------------------------------------- #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        if publisher_of(model) == "anthropic":
            resp = await self._post(model, "rawPredict", self._claude_body(ctx, model, stream=False))
            out = await self.read_object(resp)
            if out.get("type") == "error":  # an error body with HTTP 200
                message, code, etype = claude.error_fields(out)
                raise UpstreamError(
                    f"{self.name} returned an error: {message}", kind="http", status=502, body=out, code=code, error_type=etype
                )
            return claude.parse_response(out, model, json_tool=claude.json_tool_of(ctx.body))
        body = await gemini.build_request(ctx, self.http.session, stream=False, model=model)
        return gemini.parse_response(await self.read_object(await self._post(model, "generateContent", body)), model)

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        chunks: AsyncIterator[Chunk]
        if publisher_of(model) == "anthropic":
            resp = await self._post(model, "streamRawPredict", self._claude_body(ctx, model, stream=True), stream=True)
            chunks = claude.stream_chunks(iter_sse(resp.content), self.name, model=model, json_tool=claude.json_tool_of(ctx.body))
        else:
            body = await gemini.build_request(ctx, self.http.session, stream=True, model=model)
            resp = await self._post(model, "streamGenerateContent?alt=sse", body, stream=True)
            chunks = gemini.stream_chunks(iter_sse_data(resp.content), model, self.name)
        clean = False
        async with self.reading(resp, lambda: clean):
            async for chunk in chunks:
                yield chunk
            clean = True  # both translators return only after the stream's end marker

    # -- Anthropic Messages clients, passed through to Claude --------------- #

    def speaks(self, protocol: str, model: str) -> bool:
        """Claude models take a Messages client's body as it is (``rawPredict`` is the Messages API)."""
        return protocol == "messages" and publisher_of(model) == "anthropic"

    def _betas(self, ctx: RequestContext) -> dict[str, str]:
        return vertex.beta_headers(ctx.headers, self.settings.headers.get("anthropic-beta"))

    async def native(self, ctx: RequestContext, model: str) -> NativeResult:
        assert ctx.native is not None  # the router calls this only for a request that has its own body
        body = vertex.claude_native_body(ctx.native, stream=False)
        resp = await self._post(model, "rawPredict", body, extra=self._betas(ctx))
        return vertex.claude_native_result(await self.read_object(resp), self.name)

    async def native_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        assert ctx.native is not None
        body = vertex.claude_native_body(ctx.native, stream=True)
        resp = await self._post(model, "streamRawPredict", body, stream=True, extra=self._betas(ctx))
        clean = False
        async with self.reading(resp, lambda: clean):
            async for chunk in native_chunks(iter_sse(resp.content), self.name):
                yield chunk
            clean = True  # native_chunks returns only after message_stop

    async def count_tokens(self, ctx: RequestContext, model: str) -> int:
        """Claude's own count of a Messages client's input tokens (``count-tokens:rawPredict``)."""
        assert ctx.native is not None
        url = f"{self.api_root}/publishers/anthropic/models/count-tokens:rawPredict"
        resp = await self._post_url(url, vertex.claude_count_body(ctx.native, model), extra=self._betas(ctx))
        return counted_tokens(await self.read_object(resp), "input_tokens", f"{self.name}: count-tokens")

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        if publisher_of(model) != "google":
            raise UpstreamError(f"{self.name}: {model} has no embeddings on Vertex AI", kind="http", status=404,
                                code="model_not_found")
        raw = ctx.body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise UpstreamError("Vertex AI embeds text only: input must be a string or a list of strings",
                                kind="http", status=400, code="invalid_value")
        dimensions = ctx.body.get("dimensions")
        gate = asyncio.Semaphore(_EMBED_CONCURRENCY)

        async def predict(batch: list[str]) -> list[tuple[list[float], int]]:
            async with gate:
                resp = await self._post(model, "predict", vertex.predict_body(batch, dimensions))
                out = await self.read_object(resp)
            return vertex.predictions(out, len(batch), self.name)

        async with asyncio.TaskGroup() as group:  # the first failure cancels the other batches
            tasks = [group.create_task(predict(b)) for b in vertex.embed_batches(texts, model)]
        results = [item for task in tasks for item in task.result()]
        tokens = sum(n for _, n in results)
        vectors = [vector for vector, _ in results]
        body = embeddings_body(vectors, model, tokens, ctx.body.get("encoding_format"))
        return EmbeddingsResult(body, Usage(prompt_tokens=tokens))


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Vertex)
