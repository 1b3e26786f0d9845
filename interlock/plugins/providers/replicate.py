"""Replicate: OpenAI chat completions served by Replicate predictions.

Config keys (``[providers.NAME]`` with ``type = "replicate"``):

* ``api_key`` - defaults to ``REPLICATE_API_TOKEN`` (the SDK's variable) or ``REPLICATE_API_KEY``;
  sent as ``Authorization: Bearer``.
* ``base_url`` - defaults to ``https://api.replicate.com`` (or ``REPLICATE_BASE_URL``); a
  trailing ``/v1`` is accepted and ignored, paths always start with ``/v1``.
* ``input_overrides`` - a table merged into every prediction's ``input`` after translation
  (its keys win), for model-specific knobs such as ``top_k`` or ``prompt_template``.

::

    [providers.replicate]
    api_key = "${REPLICATE_API_TOKEN}"
    input_overrides = { top_k = 50, min_tokens = 0 }

Models are named ``owner/name`` (an official model, created with
``POST /v1/models/{owner}/{name}/predictions``) or ``owner/name:<64-hex version>``
(``POST /v1/predictions`` with ``"version"``); clients ask for
``replicate/meta/meta-llama-3-70b-instruct``.

Translation (see :mod:`.translation.replicate`): system and developer messages become
``system_prompt``; the conversation becomes ``prompt`` (the lone user message as is, or a
``User:``/``Assistant:`` transcript); ``max_tokens`` (or ``max_completion_tokens``) is sent as
``max_tokens``, the input name of the official Llama 3 and cog-vllm models (models that call
it ``max_new_tokens`` can only get a fixed value, through ``input_overrides``); ``temperature``, ``top_p``,
``presence_penalty``, ``frequency_penalty`` and ``seed`` keep their names; ``stop`` becomes the
comma-separated ``stop_sequences``; the newest image part becomes ``image`` (a data URL or URL,
for models whose schema has that input). There is no tool calling and no JSON mode: tools are
ignored unless a call is forced, and a forced tool call, ``response_format`` JSON or ``n > 1``
are refused (``unsupported_parameter``, which falls back to the next target).

Non-stream requests create the prediction in sync mode (``Prefer: wait``) and poll it
(``GET /v1/predictions/{id}`` under the base URL, as the SDK does) with backoff until it ends,
within the provider timeout (a prediction still running then is canceled). Streams create
with ``"stream": true`` and read ``urls.stream`` (``output``/``logs``/``error``/``done``
events), then read the finished prediction once, briefly, for its token ``metrics``. ``succeeded`` maps to ``stop``; ``failed`` and ``canceled`` are errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from interlock.plugins.providers.translation.replicate import (
    ModelRef,
    build_input,
    check_supported,
    output_text,
    parse_model,
    prediction_error,
    usage_of,
)
from interlock.provider_api import (
    Action,
    ChatResult,
    Chunk,
    ChunkWriter,
    Classification,
    FailureClass,
    HttpPool,
    HTTPProvider,
    ProviderSettings,
    RequestContext,
    UpstreamError,
    completion,
    hookimpl,
    iter_sse,
    jsonutil,
)

log = logging.getLogger("interlock.providers.replicate")

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
POLL_START = 0.1  # seconds before the first poll; doubles up to POLL_CAP
POLL_CAP = 2.0
FINAL_READ_TIMEOUT = 10.0  # bound on reading a streamed prediction's metrics after `done`
CANCEL_TIMEOUT = 2.0
SYNC_WAIT_MAX = 60  # Replicate holds a `Prefer: wait` request for at most 60 s


class Replicate(HTTPProvider):
    """Chat completions over Replicate's predictions API."""

    type_name = "replicate"
    display_name = "Replicate"
    env_key = "REPLICATE_API_TOKEN"
    env_key_aliases = ("REPLICATE_API_KEY",)
    env_base_url = "REPLICATE_BASE_URL"
    default_base_url = "https://api.replicate.com"
    supports_embeddings = False
    option_keys = frozenset({"input_overrides"})

    def __init__(self, settings: ProviderSettings, http: HttpPool) -> None:
        super().__init__(settings, http)
        # the SDK's base URL has no /v1; accept the documented spelling with it too
        self.api_root = self.base_url.removesuffix("/v1")

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        overrides = settings.options.get("input_overrides")
        if overrides is not None and not isinstance(overrides, dict):
            problems.append(("input_overrides", "must be a table of prediction inputs, e.g. { top_k = 50 }"))
        return problems

    @property
    def input_overrides(self) -> dict[str, Any]:
        overrides = self.settings.options.get("input_overrides")
        return overrides if isinstance(overrides, dict) else {}

    # -- errors ------------------------------------------------------------ #

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        """Replicate errors are RFC 7807 problem details: ``{"title", "detail", "status"}``."""
        if isinstance(body, dict) and ("title" in body or "detail" in body):
            title = body.get("title") if isinstance(body.get("title"), str) else None
            detail = body.get("detail")
            message = detail if isinstance(detail, str) and detail else title or ""
            # an unknown (or forbidden) version is a 422, but it means "this provider does not serve it"
            code = "invalid_version" if title and title.lower().startswith("invalid version") else None
            return message, code, title
        return super().error_fields(body)

    async def http_error(self, resp: aiohttp.ClientResponse) -> UpstreamError:
        err = await super().http_error(resp)
        # Replicate reports when the rate-limit window resets; use it as the retry hint if no Retry-After
        reset = resp.headers.get("ratelimit-reset")
        if err.status == 429 and "retry-after" not in err.headers and reset is not None:
            err.headers["retry-after"] = reset
        return err

    def classify(self, error: UpstreamError) -> Classification | None:
        """Two Replicate signals the generic rules would read as a request error.

        A 422 "Invalid version or not permitted" means this account cannot run that version (another
        target may), and ``unsupported_parameter`` means this provider lacks a feature the request
        uses, so both fall back instead of failing the request.
        """
        if error.code == "invalid_version":
            return Classification(FailureClass.NOT_FOUND, Action.FALLBACK)
        if error.code == "unsupported_parameter":
            return Classification(FailureClass.BAD_REQUEST, Action.FALLBACK)
        return None

    # -- plumbing ------------------------------------------------------------ #

    def _prefer(self) -> str:
        """Sync mode for no longer than this attempt may take, so a slow prediction can still be polled."""
        seconds = max(1, min(SYNC_WAIT_MAX, int(self.settings.timeout)))
        return "wait" if seconds == SYNC_WAIT_MAX else f"wait={seconds}"

    def _create_body(self, ref: ModelRef, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        check_supported(body)
        out: dict[str, Any] = {"input": build_input(body, self.input_overrides)}
        if ref.version is not None:
            out["version"] = ref.version
        if stream:
            out["stream"] = True  # older API versions only return urls.stream when asked
        return out

    async def _create(self, ref: ModelRef, body: dict[str, Any], *, wait: bool) -> dict[str, Any]:
        headers = {"Prefer": self._prefer()} if wait else None
        resp = await self.post(self.api_root + ref.create_path(), body, headers=headers)
        return self._prediction(await self.read_object(resp))

    async def _get(self, url: str) -> dict[str, Any]:
        return self._prediction(await self.read_object(await self.request("GET", url)))

    def _prediction(self, obj: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(obj.get("status"), str) or not isinstance(obj.get("id"), str):
            raise UpstreamError(f"{self.name}: response is not a prediction", kind="stream", body=obj)
        return obj

    def _url(self, prediction: dict[str, Any], action: str = "") -> str:
        """The prediction's URL (``action`` ``"/cancel"`` to cancel it) under the configured base URL.

        The SDK polls the same way; the ``urls.get`` the API returns names the public host,
        which would bypass a proxy base URL.
        """
        return f"{self.api_root}/v1/predictions/{quote(prediction['id'], safe='')}{action}"

    @staticmethod
    def _stream_url(prediction: dict[str, Any]) -> str | None:
        """``urls.stream``: streams are served from a separate host that only this URL names."""
        urls = prediction.get("urls")
        url = urls.get("stream") if isinstance(urls, dict) else None
        return url if isinstance(url, str) and url else None

    async def _poll(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """GET the prediction with backoff until it ends; the caller bounds the time."""
        delay = POLL_START
        while prediction["status"] not in TERMINAL:
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_CAP)
            prediction = await self._get(self._url(prediction))
        return prediction

    async def _finish(self, prediction: dict[str, Any], deadline: float, *, kind: str = "http") -> dict[str, Any]:
        """Poll to the end before ``deadline`` (loop time); cancel it on timeout; raise unless it succeeded."""
        try:
            async with asyncio.timeout_at(deadline):
                final = await self._poll(prediction)
        except TimeoutError:
            await self._cancel(prediction)
            raise UpstreamError(
                f"{self.name}: prediction {prediction['id']} did not finish within {self.settings.timeout:g}s",
                kind="timeout",
            ) from None
        if final["status"] != "succeeded":
            raise prediction_error(self.name, final, kind=kind)
        return final

    async def _cancel(self, prediction: dict[str, Any]) -> None:
        """Best effort: an abandoned prediction keeps running (and billing) unless canceled."""
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                (await self.request("POST", self._url(prediction, "/cancel"))).release()
        except (UpstreamError, TimeoutError):
            log.info("%s: could not cancel prediction %s", self.name, prediction.get("id"))

    async def _final(self, prediction: dict[str, Any]) -> dict[str, Any] | None:
        """The streamed prediction once finished (for ``metrics``); None if that cannot be read quickly."""
        try:
            async with asyncio.timeout(min(self.settings.timeout, FINAL_READ_TIMEOUT)):
                return await self._poll(await self._get(self._url(prediction)))
        except (UpstreamError, TimeoutError) as exc:
            log.info("%s: no final state for prediction %s (%s)", self.name, prediction.get("id"), exc)
            return None

    # -- API ------------------------------------------------------------- #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        ref = parse_model(model)
        body = self._create_body(ref, ctx.body, stream=False)
        deadline = asyncio.get_running_loop().time() + self.settings.timeout  # one budget: create and polls
        try:
            async with asyncio.timeout_at(deadline):
                prediction = await self._create(ref, body, wait=True)
        except TimeoutError:
            raise UpstreamError(f"{self.name}: timed out creating the prediction", kind="timeout") from None
        prediction = await self._finish(prediction, deadline)
        usage = usage_of(prediction)
        out = completion(
            response_id=prediction["id"],
            model=prediction.get("model") or model,
            content=output_text(prediction.get("output")),
            finish_reason="stop",
            native_finish_reason="succeeded",
            usage=usage,
        )
        return ChatResult(out, usage)

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        ref = parse_model(model)
        body = self._create_body(ref, ctx.body, stream=True)
        prediction = await self._create(ref, body, wait=False)
        if prediction["status"] in ("failed", "canceled"):
            raise prediction_error(self.name, prediction, kind="stream")
        writer = ChunkWriter(prediction["id"], prediction.get("model") or model)
        stream_url = self._stream_url(prediction)
        if stream_url is None:
            # a model that cannot stream: wait for it and send the whole answer as one chunk
            deadline = asyncio.get_running_loop().time() + self.settings.timeout
            prediction = await self._finish(prediction, deadline, kind="stream")
            yield writer.role()
            yield writer.text(output_text(prediction.get("output")))
            yield writer.finish("stop")
            if (usage := usage_of(prediction)) is not None:
                yield writer.usage(usage)
            return
        resp = await self.request(
            "GET", stream_url, stream=True, headers={"Accept": "text/event-stream", "Cache-Control": "no-store"}
        )
        yield writer.role()
        done = False
        async with self.reading(resp, lambda: done, "a done event"):
            async for event, data in iter_sse(resp.content):
                if event == "output":
                    text = self._decode(data)
                    if text:
                        yield writer.text(text)
                elif event == "done":
                    done = True
                    reason = self._done_reason(data)
                    if reason:
                        await self._ended_badly(prediction, reason)
                    break
                elif event == "error":
                    raise self._stream_error(data)
                elif event != "logs":
                    raise UpstreamError(f"{self.name}: malformed stream (unknown event {event[:40]!r})", kind="stream")
        yield writer.finish("stop")
        final = await self._final(prediction)
        if final is not None and (usage := usage_of(final)) is not None:
            yield writer.usage(usage)

    # -- stream events ------------------------------------------------------ #

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise UpstreamError(f"{self.name}: malformed stream (output is not UTF-8)", kind="stream") from None

    def _done_reason(self, data: bytes) -> str:
        """``""`` for a successful end (``data: {}``), else the reason (``canceled``, ``error``)."""
        if not data.strip():
            return ""
        try:
            obj = jsonutil.loads(data)
        except jsonutil.JSONDecodeError:
            raise UpstreamError(f"{self.name}: malformed stream (done event is not JSON)", kind="stream") from None
        reason = obj.get("reason") if isinstance(obj, dict) else None
        return reason if isinstance(reason, str) else ""

    def _stream_error(self, data: bytes) -> UpstreamError:
        text = data.decode("utf-8", "replace")
        try:
            obj = jsonutil.loads(data)
        except jsonutil.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            detail = obj.get("detail") or obj.get("error") or obj.get("message")
            text = detail if isinstance(detail, str) else text
        return UpstreamError(f"{self.name} stream error: {text[:1000]}", kind="stream", body=obj or text)

    async def _ended_badly(self, prediction: dict[str, Any], reason: str) -> None:
        """A ``done`` event with a reason: report the prediction's own error when it can be read."""
        final = await self._final(prediction)
        if final is not None and final["status"] in ("failed", "canceled"):
            raise prediction_error(self.name, final, kind="stream")
        raise UpstreamError(f"{self.name}: prediction {prediction['id']} ended: {reason}", kind="stream")


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Replicate)
