"""Ollama through its native API (``/api/chat``, ``/api/embed``), local or Ollama's cloud.

The native API (rather than Ollama's ``/v1`` compatibility layer) keeps the
model's Modelfile defaults: the compat layer forces ``temperature`` and
``top_p`` to 1.0 when a client leaves them out.

Config::

    [providers.ollama]
    base_url = "http://localhost:11434"  # the default; OLLAMA_HOST ("127.0.0.1:11434", "0.0.0.0") works too
    # api_key = "${OLLAMA_API_KEY}"      # Ollama's cloud only, with base_url = "https://ollama.com"
    num_ctx = 8192            # context window per request (Ollama's default is small; it truncates silently)
    keep_alive = "10m"        # how long the model stays loaded after a request (a duration or seconds)
    truncate = false          # /api/embed: fail on over-long inputs instead of truncating them
    options = { top_k = 40 }  # any other Ollama model options, as defaults

Without a ``[providers.ollama]`` table the provider is enabled by setting
``OLLAMA_HOST`` (it needs no key). Translation notes: ``tool_choice`` has no
Ollama equivalent, so ``"none"`` sends no tools, a named function sends only
that tool, and ``"required"`` cannot be enforced; tool results are matched to
their call by function name (``tool_name``); ``reasoning_effort`` becomes
``think`` and the model's ``thinking`` comes back as ``reasoning_content``;
``logprobs`` are not translated; ``n`` must be 1; tool-call ids Ollama omits
are generated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any


from interlock.plugins.providers.translation.ollama import (
    bad_request,
    chat_body,
    created_of,
    embedding_item,
    finish_reason,
    iter_lines,
    native_code,
    normalise_host,
    tool_calls_of,
    usage_of,
)
from interlock.provider_api import (
    ChatResult,
    Chunk,
    ChunkWriter,
    EmbeddingsResult,
    HttpPool,
    HTTPProvider,
    ProviderSettings,
    RequestContext,
    UpstreamError,
    Usage,
    completion,
    hookimpl,
    jsonutil,
    new_id,
)


class Ollama(HTTPProvider):
    """Ollama's native chat and embeddings API (NDJSON streaming)."""

    type_name = "ollama"
    display_name = "Ollama"
    env_key = "OLLAMA_API_KEY"  # Ollama's cloud only; a local server needs none
    env_base_url = "OLLAMA_HOST"
    default_base_url = "http://localhost:11434"
    requires_key = False
    option_keys = frozenset({"num_ctx", "keep_alive", "truncate", "options"})

    def __init__(self, settings: ProviderSettings, http: HttpPool) -> None:
        super().__init__(settings, http)
        # OLLAMA_HOST is usually host:port without a scheme, and may be a bind-all address
        self.base_url = normalise_host(settings.base_url or self.default_base_url)

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        opts = settings.options
        num_ctx = opts.get("num_ctx")
        if num_ctx is not None and (not isinstance(num_ctx, int) or isinstance(num_ctx, bool) or num_ctx < 1):
            problems.append(("num_ctx", "must be a positive integer (tokens)"))
        keep_alive = opts.get("keep_alive")
        if keep_alive is not None and (
            isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float)
        ):
            problems.append(
                ("keep_alive", 'must be a duration such as "5m", or a number of seconds (-1: forever)')
            )
        if "truncate" in opts and not isinstance(opts["truncate"], bool):
            problems.append(("truncate", "must be true or false"))
        if "options" in opts and not isinstance(opts["options"], dict):
            problems.append(("options", "must be a table of Ollama model options, e.g. { top_k = 40 }"))
        return problems

    # -- plumbing --------------------------------------------------------- #

    def _defaults(self) -> dict[str, Any]:
        """Model options from config; the client's parameters override them per request."""
        defaults = dict(self.settings.options.get("options") or {})
        if (num_ctx := self.settings.options.get("num_ctx")) is not None:
            defaults["num_ctx"] = num_ctx
        return defaults

    async def _chat_body(self, ctx: RequestContext, model: str, stream: bool) -> dict[str, Any]:
        return await chat_body(
            ctx.body,
            model,
            stream=stream,
            session=self.http.session,
            defaults=self._defaults(),
            keep_alive=self.settings.options.get("keep_alive"),
        )

    def _line(self, raw: bytes) -> dict[str, Any]:
        """One NDJSON line as an object; malformed lines and in-band errors raise a stream failure."""
        try:
            obj = jsonutil.loads(raw)
        except jsonutil.JSONDecodeError:
            raise UpstreamError(f"{self.name}: malformed stream line", kind="stream") from None
        if not isinstance(obj, dict):
            raise UpstreamError(f"{self.name}: stream line is not a JSON object", kind="stream")
        if "error" in obj:
            # the HTTP status was already 200: the error arrives as a line of its own
            message = str(obj["error"])
            raise UpstreamError(
                f"{self.name} stream error: {message}", kind="stream", body=obj, code=native_code(message)
            )
        return obj

    def error_fields(self, body: Any) -> tuple[str, str | None, str | None]:
        """Ollama's ``{"error": "..."}``, with a code for the errors that matter to routing."""
        message, code, etype = super().error_fields(body)
        return message, code or native_code(message), etype

    # -- API ------------------------------------------------------------- #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        resp = await self.post(f"{self.base_url}/api/chat", await self._chat_body(ctx, model, stream=False))
        obj = await self.read_object(resp)
        if "error" in obj and "message" not in obj:
            raise UpstreamError(
                f"{self.name} returned an error: {obj['error']}", kind="http", status=502, body=obj
            )
        message = obj.get("message") or {}
        calls = tool_calls_of(message)
        native = obj.get("done_reason")
        usage = usage_of(obj)
        body = completion(
            response_id=new_id(),
            model=str(obj.get("model") or model),
            content=message.get("content") or "",
            tool_calls=calls,
            finish_reason=finish_reason(native, bool(calls)),
            usage=usage,
            reasoning=message.get("thinking") or None,
            native_finish_reason=native if isinstance(native, str) else None,
            created=created_of(obj),
        )
        return ChatResult(body, usage)

    async def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        body = await self._chat_body(ctx, model, stream=True)
        resp = await self.post(
            f"{self.base_url}/api/chat", body, stream=True, headers={"Accept": "application/x-ndjson"}
        )
        writer: ChunkWriter | None = None
        calls = 0
        done = False
        async with self.reading(resp, lambda: done, "its final done line"):
            async for raw in iter_lines(resp.content, self.name):
                obj = self._line(raw)
                if writer is None:
                    writer = ChunkWriter(new_id(), str(obj.get("model") or model), created_of(obj))
                    yield writer.role()
                message = obj.get("message") or {}
                if thinking := message.get("thinking"):
                    yield writer.reasoning(thinking)
                if text := message.get("content"):
                    yield writer.text(text)
                for call in tool_calls_of(message):  # a tool call arrives whole, in one line
                    yield writer.tool_call(calls, call.id, call.name, call.arguments)
                    calls += 1
                if obj.get("done"):
                    yield writer.finish(finish_reason(obj.get("done_reason"), calls > 0))
                    yield writer.usage(usage_of(obj))
                    done = True
                    break

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        raw = ctx.body.get("input")
        if not (
            isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw))
        ):
            raise bad_request("Ollama embeds text only: 'input' must be a string or a list of strings")
        payload: dict[str, Any] = {"model": model, "input": raw}
        if (dimensions := ctx.body.get("dimensions")) is not None:
            payload["dimensions"] = dimensions
        if "truncate" in self.settings.options:
            payload["truncate"] = self.settings.options["truncate"]
        if (keep_alive := self.settings.options.get("keep_alive")) is not None:
            payload["keep_alive"] = keep_alive
        if defaults := self._defaults():
            payload["options"] = defaults
        obj = await self.read_object(await self.post(f"{self.base_url}/api/embed", payload))
        vectors = obj.get("embeddings")
        expected = 1 if isinstance(raw, str) else len(raw)
        if not isinstance(vectors, list) or len(vectors) != expected:
            raise UpstreamError(f"{self.name}: expected {expected} embeddings in the response", kind="stream")
        base64_format = ctx.body.get("encoding_format") == "base64"
        usage = Usage(prompt_tokens=usage_of(obj).prompt_tokens)
        out = {
            "object": "list",
            "data": [embedding_item(i, vector, base64_format) for i, vector in enumerate(vectors)],
            "model": str(obj.get("model") or model),
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        }
        return EmbeddingsResult(out, usage)


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Ollama)
