"""A fake upstream that speaks Google's GenerateContent wire protocol, with fault injection.

``FakeGemini`` serves what the Gemini API (``generativelanguage.googleapis.com``) does:
``POST /{version}/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``,
``:batchEmbedContents``, ``:embedContent`` and ``:countTokens``, and ``GET /{version}/models``.
Method calls are matched on the path's ``:method`` suffix, so Vertex AI's longer resource
paths (``/v1/projects/p/locations/l/publishers/google/models/m:generateContent``) work too.
It answers through :func:`~interlock.testing._replies.plan_reply` like every fake, checks
requests the way the real API does (roles, unknown fields, schema keywords it rejects),
and reports errors in Google's ``{"error": {"code", "message", "status", "details"}}`` shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, Fault, ReceivedRequest, merge_usage, request_state
from interlock.testing._gemini_wire import InvalidRequest, check_request, error_body, lower_types, norm
from interlock.testing._replies import Reply, ReplyError, embed, plan_reply, prompt_tokens, split

__all__ = ["FakeGemini", "Fault", "ReceivedRequest", "conformance_case", "error_body", "norm"]

_Invalid = InvalidRequest  # the name fake_vertex imports

VERSIONS = ("v1", "v1beta", "v1alpha")
API_KEY_INVALID = "API key not valid. Please pass a valid API key."
_MODEL_PATH = re.compile(r"(?:^|/)(?:models|tunedModels)/([^/:]+)(?::([A-Za-z]+))?$")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\r\n\r\n"


class FakeGemini(FakeServer):
    """A deterministic Gemini API for tests; see :class:`~interlock.testing._base.FakeServer`."""

    prefix = ""
    auth_failure = (400, API_KEY_INVALID)

    def __init__(
        self,
        models: Iterable[str] = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"),
        api_key: str | None = None,
        chunks: int = 5,
        thoughts: str | None = None,
        cached_tokens: int = 0,
        thought_signature: str | None = None,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """Serve ``models``; require ``api_key`` (``x-goog-api-key`` or ``?key=``) when given; stream
        replies in about ``chunks`` pieces. ``thoughts`` adds a ``thought: true`` part (and
        ``thoughtsTokenCount``) before each answer; ``cached_tokens`` reports that many prompt tokens
        as ``cachedContentTokenCount``; ``thought_signature`` rides on each ``functionCall`` part.

        ``usage`` (also settable later as :attr:`usage`) is deep-merged into the ``usageMetadata``
        of every generateContent answer and of a stream's final chunk
        (:func:`~interlock.testing._base.merge_usage`; the stream's earlier chunks carry its prompt
        counts), e.g. ``{"promptTokenCount": 250000, "candidatesTokenCount": 1000,
        "totalTokenCount": 251000, "promptTokensDetails": [{"modality": "TEXT", "tokenCount":
        250000}]}``. Lists such as ``promptTokensDetails`` replace the fake's own."""
        self.models = list(models)
        #: merged into every answer's ``usageMetadata`` (None: the fake's own counts only)
        self.usage: Mapping[str, Any] | None = usage
        self.chunks = max(1, chunks)
        self.thoughts = thoughts
        self.cached_tokens = cached_tokens
        self.thought_signature = thought_signature
        super().__init__(api_key=api_key, seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    # -- FakeServer hooks ----------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/{version}/models", self._list_models)
        # everything but the base class's /_fake/ control endpoints, which are added after these
        router.add_post(r"/{path:(?!_fake/).+}", self._call)
        router.add_get(r"/{path:(?!_fake/).+}", self._get_model)

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        details: list[dict[str, Any]] = []
        if message == API_KEY_INVALID:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            )
        elif status == 429:
            details += [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                            "quotaValue": "1000",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "19s"},
            ]
        return _json(error_body(status, message, details), status)

    def authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return self.api_key in (request.headers.get("x-goog-api-key"), request.query.get("key"))

    def model_of(self, request: web.Request, body: Any) -> Any:
        match = _MODEL_PATH.search(request.path)
        return match.group(1) if match else None

    def is_generation(self, request: web.Request) -> bool:
        return request.path.endswith(("generateContent", "streamGenerateContent"))

    # -- routing -------------------------------------------------------------------------------

    def _target(self, request: web.Request) -> tuple[str, str] | web.Response:
        """``(model, method)`` of a call, or the error the API gives for a bad path or model."""
        match = _MODEL_PATH.search(request.path)
        version = request.path.strip("/").split("/", 1)[0]
        if match is None or version not in VERSIONS:
            return self.error_response(404, f"Unknown request URL: {request.method} {request.path}.")
        model, method = match.group(1), match.group(2) or ""
        if model not in self.models:
            return self.error_response(
                404,
                f"models/{model} is not found for API version {version}, or is not supported for {method or 'get'}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        return model, method

    async def _call(self, request: web.Request) -> web.StreamResponse:
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        model, method = target
        state = request_state(request)
        if state.malformed or not isinstance(state.json, dict):
            return self.error_response(400, "Invalid JSON payload received. Unexpected token.")
        body = norm(state.json)
        try:
            if method == "generateContent":
                return self._generate(model, body)
            if method == "streamGenerateContent":
                if request.query.get("alt") != "sse":
                    return self.error_response(400, "this fake streams only with alt=sse")
                return await self._stream(request, model, body)
            if method == "batchEmbedContents":
                return self._embed(model, body.get("requests"), batch=True)
            if method == "embedContent":
                return self._embed(model, [body], batch=False)
            if method == "countTokens":
                return _json({"totalTokens": self._prompt_tokens(body)})
        except InvalidRequest as exc:
            return self.error_response(400, str(exc))
        except ReplyError as exc:
            return self.error_response(
                400, f"* GenerateContentRequest.tool_config.function_calling_config: {exc}"
            )
        return self.error_response(404, f"Unknown request URL: POST {request.path}.")

    # -- models --------------------------------------------------------------------------------

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        embedding = "embedding" in model
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "inputTokenLimit": 2048 if embedding else 1048576,
            "outputTokenLimit": 1 if embedding else 65536,
            "supportedGenerationMethods": ["embedContent", "countTextTokens", "countTokens"]
            if embedding
            else ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"],
        }

    async def _list_models(self, request: web.Request) -> web.Response:
        return _json({"models": [self._model_object(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        return _json(self._model_object(target[0]))

    # -- generateContent -----------------------------------------------------------------------

    def _plan(self, body: dict[str, Any]) -> Reply:
        contents = check_request(body)
        functions = [
            {
                "name": d.get("name"),
                "parameters": lower_types(d.get("parameters") or d.get("parametersJsonSchema")),
            }
            for tool in body.get("tools") or ()
            for d in tool.get("functionDeclarations") or ()
        ]
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode, allowed = calling.get("mode"), calling.get("allowedFunctionNames") or []
        choice = (
            "none"
            if mode == "NONE"
            else (allowed[0] if len(allowed) == 1 else "required")
            if mode == "ANY"
            else None
        )
        last = contents[-1]["parts"]
        responses = [p["functionResponse"] for p in last if isinstance(p.get("functionResponse"), dict)]
        tool_result = _response_text(responses[-1].get("response")) if responses else None
        users = [
            c
            for c in contents
            if c.get("role", "user") == "user" and any("functionResponse" not in p for p in c["parts"])
        ]
        parts = users[-1]["parts"] if users else []
        prompt = " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))
        images = sum(1 for p in parts if _is_image(p))
        config = body.get("generationConfig") or {}
        json_mode = config.get("responseMimeType") == "application/json"
        schema = config.get("responseSchema") or config.get("responseJsonSchema")
        limit = config.get("maxOutputTokens")
        return plan_reply(
            prompt=prompt,
            images=images,
            tools=functions,
            tool_choice=choice,
            tool_result=tool_result,
            json_mode=json_mode,
            schema=lower_types(schema) if json_mode and schema else None,
            max_tokens=limit if isinstance(limit, int) else None,
        )

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        texts: list[str] = []
        for content in [*(body.get("contents") or ()), body.get("systemInstruction") or {}]:
            for part in content.get("parts") or () if isinstance(content, dict) else ():
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                for key in ("functionCall", "functionResponse"):
                    if key in part:
                        texts.append(orjson.dumps(part[key]).decode())
        return prompt_tokens(texts)

    def _usage(self, body: dict[str, Any], reply: Reply, candidates: int) -> dict[str, Any]:
        prompt = self._prompt_tokens(body) + self.cached_tokens
        output = candidates * reply.completion_tokens
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = self.cached_tokens
        if self.thoughts:
            thinking = candidates * len(self.thoughts.split())
            usage["thoughtsTokenCount"] = thinking
            usage["totalTokenCount"] += thinking
        return merge_usage(usage, self.usage)

    def _answer_parts(self, reply: Reply) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = [{"text": self.thoughts, "thought": True}] if self.thoughts else []
        if reply.tool_name is not None:
            call: dict[str, Any] = {
                "functionCall": {"name": reply.tool_name, "args": orjson.loads(reply.arguments or "{}")}
            }
            if self.thought_signature:
                call["thoughtSignature"] = self.thought_signature
            parts.append(call)
        else:
            parts.append({"text": reply.content or ""})
        return parts

    @staticmethod
    def _finish(reply: Reply) -> str:
        return "MAX_TOKENS" if reply.finish_reason == "length" else "STOP"

    def _generate(self, model: str, body: dict[str, Any]) -> web.Response:
        reply = self._plan(body)
        n = (body.get("generationConfig") or {}).get("candidateCount") or 1
        candidates = [
            {
                "content": {"parts": self._answer_parts(reply), "role": "model"},
                "finishReason": self._finish(reply),
                "index": i,
            }
            for i in range(n)
        ]
        return _json(
            {
                "candidates": candidates,
                "usageMetadata": self._usage(body, reply, n),
                "modelVersion": model,
                "responseId": self.next_id("fake-gemini-"),
            }
        )

    async def _stream(self, request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
        reply = self._plan(body)
        response_id = self.next_id("fake-gemini-")
        usage = self._usage(body, reply, 1)
        prompt_only = {k: usage[k] for k in ("promptTokenCount", "totalTokenCount", "promptTokensDetails")}
        prompt_only["totalTokenCount"] = usage["promptTokenCount"]

        def chunk(parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            return _sse(
                {
                    "candidates": [candidate],
                    "usageMetadata": usage if finish else prompt_only,
                    "modelVersion": model,
                    "responseId": response_id,
                }
            )

        events = [chunk([{"text": self.thoughts, "thought": True}])] if self.thoughts else []
        if reply.tool_name is not None:
            # a function call arrives whole, in one fragment; the last fragment only finishes
            events.append(chunk(self._answer_parts(reply)[-1:]))
            tail = [chunk([{"text": ""}], "STOP")]
        else:
            pieces = split(reply.content or "", self.chunks) or [""]
            events += [chunk([{"text": piece}]) for piece in pieces[:-1]]
            tail = [
                chunk([{"text": pieces[-1]}], self._finish(reply))
            ]  # the last piece rides with the finish
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        return await self.play(
            request,
            response,
            head=[],
            events=events,
            tail=tail,
            error_event=_sse(error_body(500)),
            malformed=b"data: {not json\r\n\r\n",
        )

    # -- embeddings ----------------------------------------------------------------------------

    def _embed(self, model: str, requests: Any, *, batch: bool) -> web.Response:
        if not isinstance(requests, list) or not requests:
            raise InvalidRequest("* BatchEmbedContentsRequest.requests: requests is not specified")
        vectors, texts = [], []
        for i, item in enumerate(requests):
            if batch and item.get("model") != f"models/{model}":
                raise InvalidRequest(
                    f"* BatchEmbedContentsRequest.requests[{i}].model: model must be models/{model}"
                )
            parts = (item.get("content") or {}).get("parts") or []
            text = " ".join(p.get("text", "") for p in parts if isinstance(p, dict))
            if not parts:
                raise InvalidRequest(
                    f"* BatchEmbedContentsRequest.requests[{i}].content: contents.parts must not be empty."
                )
            dims = item.get("outputDimensionality") or 8
            vectors.append({"values": embed(text, int(dims))})
            texts.append(text)
        usage = {"promptTokenCount": prompt_tokens(texts), "totalTokenCount": prompt_tokens(texts)}
        if batch:
            return _json({"embeddings": vectors, "usageMetadata": usage})
        return _json({"embedding": vectors[0], "usageMetadata": usage})


def _response_text(response: Any) -> str:
    """A function response's text: its single ``content``/``output``/``result`` string, else its JSON."""
    if isinstance(response, dict) and len(response) == 1:
        ((key, value),) = response.items()
        if key in ("content", "output", "result") and isinstance(value, str):
            return value
    return orjson.dumps(response).decode()


def _is_image(part: dict[str, Any]) -> bool:
    blob = part.get("inlineData") or part.get("fileData")
    return isinstance(blob, dict) and str(blob.get("mimeType") or "image/").startswith("image/")


def conformance_case() -> Any:
    """The conformance :class:`~interlock.testing.conformance.ProviderCase` of the ``gemini`` provider."""
    from interlock.testing.conformance import FEATURES, ProviderCase
    from interlock.testing.gateway import provider_table

    key = "gemini-conformance-key-0123456789"
    context = (
        400,
        error_body(
            400, "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."
        ),
    )
    # Gemini reports a blocked prompt as HTTP 200 with promptFeedback and no candidates
    blocked = (
        200,
        {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
            "modelVersion": "conf-model",
        },
    )
    return ProviderCase(
        name="gemini",
        fake=lambda: FakeGemini(models=["conf-model", "conf-embed"], api_key=key),
        provider_toml=lambda fake, timeout: provider_table(
            "gemini", type="gemini", base_url=fake.base_url, api_key=key, timeout=timeout
        ),
        model="gemini/conf-model",
        embeddings_model="gemini/conf-embed",
        features=FEATURES,
        errors={"context_length": context, "content_policy": blocked},
    )
