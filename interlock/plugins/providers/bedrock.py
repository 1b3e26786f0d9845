"""AWS Bedrock: the Converse API for every model family, InvokeModel for embeddings and Messages clients.

Requests are signed with SigV4 through botocore (the optional extra:
``pip install 'interlock[bedrock]'``) using credentials from the standard AWS
chain, or carry a Bedrock API key as a Bearer token. Streams
(``converse-stream``) are AWS event-stream binary frames, decoded by botocore.
Translation details live in :mod:`interlock.plugins.providers.translation.bedrock`,
AWS plumbing in :mod:`interlock.plugins.providers._aws`.

Config keys of a ``type = "bedrock"`` table (besides the common ones):

* ``region`` — AWS region; default ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, else ``us-east-1``.
* ``profile`` — a named profile of the shared AWS config/credentials files. Without it
  botocore's default chain applies: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
  (+ ``AWS_SESSION_TOKEN``), ``AWS_PROFILE``, SSO, ``credential_process``, web identity,
  container and instance roles.
* ``base_url`` — endpoint override (VPC endpoint, proxy, tests); default
  ``https://bedrock-runtime.{region}.amazonaws.com`` or ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``.
* ``api_key`` — a Bedrock API key, sent as ``Authorization: Bearer`` instead of signing;
  default ``AWS_BEARER_TOKEN_BEDROCK``.

Embedded defaults enable the provider when ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE`` or
``AWS_BEARER_TOKEN_BEDROCK`` is set. Example::

    [providers.bedrock]
    region = "us-west-2"
    profile = "inference"          # optional

    [routes.claude]
    chain = "bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0 > anthropic/claude-sonnet-4-20250514"

Model ids go into the URL path percent-encoded (``:`` and the ``/`` of ARNs), exactly as
signed. ``response_format`` (JSON mode) becomes a system instruction, the one form every model
family on Converse follows; ``seed``, ``n`` and penalties are ignored. A client's
``additionalModelRequestFields`` object (e.g. Claude's ``thinking``) is passed through. Embeddings: Titan (``amazon.titan-embed-text-v2:0``, one request per input, sent
concurrently) and Cohere (``cohere.embed-english-v3``, batches of 96, ``input_type``
``search_document`` unless the client sends one).

Anthropic Messages clients (the ``/v1/messages`` door) asking for a Claude model id
(``anthropic.claude-...``, ``us.anthropic.claude-...``) are passed through untranslated with
InvokeModel / InvokeModelWithResponseStream: their body with ``model`` and ``stream`` removed,
``anthropic_version`` ``bedrock-2023-05-31`` and their ``anthropic-beta`` header as the body's
``anthropic_beta`` list; each streamed Anthropic event is handed on as a server-sent event.
Their token counts come from CountTokens (``/model/{id}/count-tokens``) on that same body.

Failure classes (:func:`classify_failure`): Bedrock names every error (``x-amzn-ErrorType``
or an event's ``:exception-type``) and the class follows the name, also for in-stream
exceptions: ``ThrottlingException`` -> rate_limited; ``ModelNotReadyException`` (HTTP 429,
"retry later": the model is not loaded or out of capacity, not the account's quota) and
``ServiceUnavailableException`` -> overloaded; ``ServiceQuotaExceededException`` -> quota;
``ModelTimeoutException`` -> timeout; ``InternalServerException``/``ModelErrorException``
-> server_error; ``ValidationException`` -> bad_request (``Input is too long`` and other
context overflows -> context_length; an invalid model identifier -> not_found). Guardrail
blocks come back as ``stopReason`` ``guardrail_intervened`` -> ``finish_reason``
``content_filter``, not as HTTP errors.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from interlock.plugins.providers._aws import (
    AwsCredentials,
    botocore_missing,
    error_name,
    iter_frames,
    preload,
    sign,
)
from interlock.plugins.providers.translation.anthropic_events import EventReader, counted_tokens, message_usage
from interlock.plugins.providers.translation.bedrock import (
    COHERE_BATCH,
    StreamTranslator,
    chat_result,
    claude_count_payload,
    claude_event,
    claude_invoke_body,
    cohere_body,
    cohere_vectors,
    converse_body,
    embedding_family,
    embedding_inputs,
    speaks_messages,
    titan_body,
)
from interlock.provider_api import (
    ACTIONS,
    ChatResult,
    Chunk,
    ChunkWriter,
    Classification,
    EmbeddingsResult,
    FailureClass,
    HttpPool,
    HTTPProvider,
    NativeResult,
    ProviderSettings,
    RequestContext,
    UpstreamError,
    Usage,
    classify,
    classify_as,
    embeddings_body,
    hookimpl,
    jsonutil,
    new_id,
)

T = TypeVar("T")
F = FailureClass

DEFAULT_REGION = "us-east-1"
EVENT_STREAM = "application/vnd.amazon.eventstream"
#: concurrent InvokeModel calls for one embeddings request (Titan takes one text per call)
EMBED_CONCURRENCY = 8
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
# context overflows Bedrock reports in words the shared classifier's pattern does not cover
_CONTEXT = re.compile(
    r"input is too long|too many input tokens|exceeds? (the )?context (limit|window)", re.IGNORECASE
)
_MODEL_ID_INVALID = re.compile(r"model identifier is invalid", re.IGNORECASE)
#: HTTP status of each in-stream exception (botocore's service model)
_STREAM_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "modelTimeoutException": 408,
}
#: failure class per Bedrock exception name (lower-cased; HTTP names are PascalCase, stream ones camelCase)
_CLASSES: dict[str, FailureClass] = {
    "throttlingexception": F.RATE_LIMITED,
    "modelnotreadyexception": F.OVERLOADED,
    "serviceunavailableexception": F.OVERLOADED,
    "servicequotaexceededexception": F.QUOTA,
    "modeltimeoutexception": F.TIMEOUT,
    "internalserverexception": F.SERVER_ERROR,
    "modelerrorexception": F.SERVER_ERROR,
    "modelstreamerrorexception": F.STREAM_ERROR,
    "validationexception": F.BAD_REQUEST,
    "accessdeniedexception": F.AUTH,
    "unrecognizedclientexception": F.AUTH,
    "resourcenotfoundexception": F.NOT_FOUND,
}


class Bedrock(HTTPProvider):
    """AWS Bedrock through Converse/ConverseStream (chat) and InvokeModel (embeddings)."""

    type_name = "bedrock"
    display_name = "AWS Bedrock"
    env_key = "AWS_BEARER_TOKEN_BEDROCK"
    env_base_url = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"
    requires_key = False
    option_keys = frozenset({"region", "profile"})

    def __init__(self, settings: ProviderSettings, http: HttpPool) -> None:
        super().__init__(settings, http)
        self.region = str(settings.options.get("region") or DEFAULT_REGION)
        if not self.base_url:
            self.base_url = f"https://bedrock-runtime.{self.region}.amazonaws.com"
        if botocore_missing() is None:  # validate() reports it missing; construction must not fail
            preload()  # a first import inside a request would stall the event loop
        environ: Mapping[str, str] = settings.environ if settings.environ is not None else os.environ
        profile = settings.options.get("profile")
        # a Bedrock API key replaces signing; otherwise the AWS credential chain signs every request
        self.credentials = (
            None
            if settings.api_key
            else AwsCredentials(self.name, profile=str(profile) if profile else None, environ=environ)
        )

    # -- config ---------------------------------------------------------- #

    @classmethod
    def enabled_by_env(cls, environ: Mapping[str, str] = os.environ) -> bool:
        return any(
            environ.get(var) for var in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK")
        )

    @classmethod
    def options_from_env(cls, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        return {"region": region} if region else {}

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        region = settings.options.get("region")
        if region is not None and not (isinstance(region, str) and _REGION.match(region)):
            problems.append(("region", f"not an AWS region name: {region!r} (e.g. 'us-east-1')"))
        profile = settings.options.get("profile")
        if profile is not None and not (isinstance(profile, str) and profile):
            problems.append(("profile", "must be the name of a profile in the shared AWS config"))
        if missing := botocore_missing():  # signing and event-stream decoding both need it
            problems.append(("type", f"provider type 'bedrock': {missing}"))
        return problems

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["region"] = self.region
        info["auth"] = "bearer" if self.credentials is None else "sigv4"
        return info

    # -- HTTP ------------------------------------------------------------ #

    async def _post_model(
        self, model: str, operation: str, payload: dict[str, Any], *, stream: bool = False
    ) -> aiohttp.ClientResponse:
        """POST to ``/model/{modelId}/{operation}``, signed unless an API key is configured."""
        url = f"{self.base_url}/model/{quote(model, safe='')}/{operation}"
        data = jsonutil.dumps(payload)
        headers = {"Accept": EVENT_STREAM if stream else "application/json"}
        if self.credentials is not None:
            credentials = await self.credentials.frozen()
            headers = sign(credentials, self.region, url, data, {**self.headers(), **headers})
        # encoded=True: yarl would otherwise decode %3A in the path and break the signature
        return await self.request("POST", URL(url, encoded=True), data=data, headers=headers, stream=stream)

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        """``{"message": ...}`` (sometimes ``Message``, with ``__type``) as AWS JSON errors are."""
        if isinstance(body, dict):
            message = body.get("message") or body.get("Message") or ""
            name = error_name(str(body.get("__type") or body.get("code") or "")) or None
            return str(message), name, name
        if isinstance(body, str):
            return body[:500], None, None
        return "", None, None

    async def http_error(self, resp: aiohttp.ClientResponse) -> UpstreamError:
        err = await super().http_error(resp)
        name = error_name(resp.headers.get("x-amzn-ErrorType")) or err.error_type
        err.error_type = name
        err.code = "context_length_exceeded" if _CONTEXT.search(err.message) else name
        return err

    def classify(self, error: UpstreamError) -> Classification | None:
        """Bedrock's exception names decide the class (see the module docstring); others defer.

        Only request and model errors are read further (for a context overflow or a policy block):
        the generic message patterns would misread e.g. throttling's "Too many tokens, please wait".
        """
        if not error.error_type:
            return None
        cls = _CLASSES.get(error.error_type.lower())
        if cls is None:
            return None
        if cls not in (F.BAD_REQUEST, F.SERVER_ERROR, F.STREAM_ERROR):
            return classify_as(cls, error)
        verdict = classify(error)
        if verdict.failure_class in (F.CONTEXT_LENGTH, F.CONTENT_POLICY):
            return verdict
        if cls is F.BAD_REQUEST and _MODEL_ID_INVALID.search(error.message):
            cls = F.NOT_FOUND  # this endpoint does not know the model; another target may serve it
        return Classification(cls, ACTIONS[cls], verdict.retry_after)

    # -- chat ------------------------------------------------------------ #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        payload = await converse_body(ctx.body, self.http.session)
        resp = await self._post_model(model, "converse", payload)
        response_id = _response_id(resp)
        data = await self.read_object(resp)
        return chat_result(data, response_id=response_id, model=model)

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        payload = await converse_body(ctx.body, self.http.session)
        resp = await self._post_model(model, "converse-stream", payload, stream=True)
        translator = StreamTranslator(ChunkWriter(_response_id(resp), model))
        async with self.reading(resp, lambda: translator.stopped, "messageStop"):
            async for headers, raw in iter_frames(resp.content, self.name):
                if headers.get(":message-type") in ("exception", "error"):
                    raise self._stream_exception(headers, raw)
                try:
                    event = jsonutil.loads(raw) if raw else {}
                except jsonutil.JSONDecodeError:
                    raise UpstreamError(
                        f"{self.name}: malformed stream event (not JSON)", kind="stream"
                    ) from None
                if not isinstance(event, dict):
                    raise UpstreamError(f"{self.name}: stream event is not a JSON object", kind="stream")
                for chunk in translator.event(headers.get(":event-type"), event):
                    yield chunk

    def _stream_exception(self, headers: dict[str, Any], raw: bytes) -> UpstreamError:
        """An in-band ``exception`` (or ``error``) frame as a ``stream`` failure of the right class."""
        body: Any = None
        if headers.get(":message-type") == "error":
            name = str(headers.get(":error-code") or "error")
            message = str(headers.get(":error-message") or "")
        else:
            name = str(headers.get(":exception-type") or "exception")
            try:
                body = jsonutil.loads(raw) if raw else None
            except jsonutil.JSONDecodeError:
                body = raw[:500].decode("utf-8", "replace")
            message = self.error_fields(body)[0]
            if isinstance(body, dict) and body.get("originalMessage"):
                message = f"{message} ({body['originalMessage']})"
        return UpstreamError(
            f"{self.name} stream error: {name}: {message}",
            kind="stream",
            status=_STREAM_STATUS.get(name),
            body=body,
            code="context_length_exceeded" if _CONTEXT.search(message) else name,
            error_type=name,
        )

    # -- Anthropic Messages clients, passed through to Claude ------------- #

    def speaks(self, protocol: str, model: str) -> bool:
        """Claude model ids take a Messages client's body through InvokeModel, untranslated."""
        return protocol == "messages" and speaks_messages(model)

    def _claude_body(self, native: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        return claude_invoke_body(native, headers, self.settings.headers.get("anthropic-beta"))

    async def native(self, ctx: RequestContext, model: str) -> NativeResult:
        assert ctx.native is not None  # the router calls this only for a request that has its own body
        resp = await self._post_model(model, "invoke", self._claude_body(ctx.native, ctx.headers))
        body = await self.read_object(resp)
        return NativeResult(body, message_usage(body))

    async def native_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        assert ctx.native is not None
        payload = self._claude_body(ctx.native, ctx.headers)
        resp = await self._post_model(model, "invoke-with-response-stream", payload, stream=True)
        reader = EventReader(self.name)
        async with self.reading(resp, lambda: reader.finished, "message_stop"):
            async for headers, raw in iter_frames(resp.content, self.name):
                message_type = headers.get(":message-type")
                if message_type in ("exception", "error"):
                    raise self._stream_exception(headers, raw)
                if message_type != "event" or headers.get(":event-type") != "chunk":
                    continue  # a frame type added after this was written carries no Anthropic event
                # the event's own "type" names it: the client gets it as the server-sent event Anthropic sends
                event, data = claude_event(raw, self.name)
                yield reader.chunk_of(event, None, data)
                if reader.finished:
                    break  # nothing follows message_stop; the connection goes back to the pool

    async def count_tokens(self, ctx: RequestContext, model: str) -> int:
        """Bedrock's count of a Messages client's input tokens (CountTokens on the InvokeModel body)."""
        assert ctx.native is not None
        payload = claude_count_payload(self._claude_body(ctx.native, ctx.headers))
        resp = await self._post_model(model, "count-tokens", payload)
        return counted_tokens(await self.read_object(resp), "inputTokens", f"{self.name}: CountTokens")

    # -- embeddings ------------------------------------------------------ #

    async def _invoke(self, model: str, payload: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        """One InvokeModel call: the JSON answer and Bedrock's input-token header, if sent."""
        resp = await self._post_model(model, "invoke", payload)
        header = resp.headers.get("x-amzn-bedrock-input-token-count")
        data = await self.read_object(resp)
        return data, int(header) if header and header.isdigit() else None

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        family = embedding_family(model)
        if family is None:
            raise UpstreamError(
                f"{self.name}: {model!r} is not a Titan or Cohere embedding model, the ones Bedrock embeddings support",
                kind="http",
                status=404,
                code="model_not_found",
            )
        texts = embedding_inputs(ctx.body)
        vectors: list[list[float]] = []
        tokens = 0
        if family == "titan":
            for data, header in await _bounded(
                [partial(self._invoke, model, titan_body(t, ctx.body)) for t in texts]
            ):
                if not isinstance(data.get("embedding"), list):
                    raise UpstreamError(
                        f"{self.name}: Titan embedding response has no 'embedding'", kind="stream"
                    )
                vectors.append(data["embedding"])
                count = data.get("inputTextTokenCount")
                tokens += count if isinstance(count, int) else header or 0
        else:
            batches = [texts[i : i + COHERE_BATCH] for i in range(0, len(texts), COHERE_BATCH)]
            for data, header in await _bounded(
                [partial(self._invoke, model, cohere_body(b, ctx.body)) for b in batches]
            ):
                vectors.extend(cohere_vectors(data))
                tokens += header or 0  # Cohere's body carries no count; the header does when sent
        body = embeddings_body(vectors, model, tokens, ctx.body.get("encoding_format"))
        return EmbeddingsResult(body, Usage(prompt_tokens=tokens))


def _response_id(resp: aiohttp.ClientResponse) -> str:
    """``chatcmpl-`` plus AWS's request id, so a response can be traced in AWS logs."""
    request_id = resp.headers.get("x-amzn-RequestId")
    return f"chatcmpl-{request_id}" if request_id else new_id()


async def _bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` with at most :data:`EMBED_CONCURRENCY` in flight; the first failure cancels the rest."""
    gate = asyncio.Semaphore(EMBED_CONCURRENCY)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    tasks = [asyncio.ensure_future(run(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # collected, so none is left unretrieved
        raise


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Bedrock)
