"""A fake Replicate predictions API, with fault injection.

``FakeReplicate`` speaks what the official ``replicate`` SDK speaks (its base URL is
:attr:`FakeReplicate.url`, paths start with ``/v1``): models and versions, creating
predictions on an official model's route or by version (``Prefer: wait`` sync mode included),
polling them, canceling them, and streaming them as Replicate's named SSE events
(``output``/``logs``/``error``/``done``). Errors are RFC 7807 problem details.

Its "model" is the shared :func:`~interlock.testing._replies.plan_reply`, fed with the last
user text of the ``prompt`` input. A prompt is either one user message verbatim or the
transcript interlock's Replicate provider renders (``User: ...`` blocks separated by blank
lines, ending with ``Assistant:``); :func:`last_user_text` reads the last ``User:`` block back.
An ``image`` input counts as one image.

A prediction's life, as the real API shows it: created ``starting``; with ``Prefer: wait`` it
comes back ``processing`` with the whole output but no metrics (``wait_finishes=True``: already
``succeeded``); each ``GET`` moves it on (``starting`` -> ``processing`` with half the output ->
``succeeded`` with token ``metrics``), unless ``hold=True`` keeps it running. A prompt longer
than ``max_input_tokens`` makes it ``failed`` with a "Your input is too long" error.

Faults apply to the create requests. Stream faults (``ttft``, ``cut_after``, ``malformed_at``,
``error_event_at``) queued for a streaming create are carried to that prediction's stream.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from interlock.plugins.providers.translation.replicate import ASSISTANT_CUE, BLOCK_SEPARATOR, TRANSCRIPT_LABELS
from interlock.testing._base import FakeServer, Fault, ReceivedRequest, merge_usage, request_state
from interlock.testing._replies import WORD_RE, Reply, plan_reply, prompt_tokens, split

if TYPE_CHECKING:
    from interlock.testing.conformance import ProviderCase

__all__ = ["FakeReplicate", "Fault", "ReceivedRequest", "failed_prediction", "last_user_text", "version_id"]

DEFAULT_MODELS = ("meta/meta-llama-3-8b-instruct", "meta/meta-llama-3-70b-instruct")
_CREATED = "2024-10-04T18:07:33.396Z"  # fixed, so listings are reproducible
_MODEL_PATH = re.compile(r"^/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# (title, detail) per status; 401 and 422 are Replicate's own words (replicate-python issue #47)
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "The request could not be understood."),
    401: ("Unauthenticated", "You did not pass a valid authentication token"),
    402: ("Insufficient credit", "You have insufficient credit to run this model."),
    403: ("Forbidden", "You do not have permission to perform this action."),
    404: ("Not found", "The requested resource could not be found."),
    405: ("Method not allowed", "The method is not allowed for this resource."),
    422: ("Invalid version or not permitted", "The specified version does not exist (or perhaps you don't have permission to use it?)"),
    429: ("Request was throttled", "Request was throttled. Expected available in 1 second."),
    500: ("Internal server error", "An internal error occurred."),
    502: ("Bad gateway", "The upstream server returned an invalid response."),
    503: ("Service unavailable", "The service is temporarily unavailable."),
    504: ("Gateway timeout", "The upstream server timed out."),
}
_STREAM_FAULT_INDICES = ("cut_after", "malformed_at", "error_event_at")


def version_id(model: str) -> str:
    """The fake's (stable) 64-hex version id of ``model``."""
    return hashlib.sha256(f"fake-replicate:{model}".encode()).hexdigest()


def last_user_text(prompt: str) -> str:
    """The user text a rendered ``prompt`` answers: the last ``User:`` block of a transcript, or all of it."""
    if not prompt.endswith(BLOCK_SEPARATOR + ASSISTANT_CUE):
        return prompt  # one user message, sent verbatim
    marker = TRANSCRIPT_LABELS["user"] + ": "
    start = prompt.rfind(BLOCK_SEPARATOR + marker)
    if start >= 0:
        start += len(BLOCK_SEPARATOR + marker)
    elif prompt.startswith(marker):
        start = len(marker)
    else:
        return ""
    ends = [
        i
        for label in {TRANSCRIPT_LABELS["assistant"], TRANSCRIPT_LABELS["tool"]}
        if (i := prompt.find(f"{BLOCK_SEPARATOR}{label}:", start)) >= 0
    ]
    return prompt[start : min(ends)] if ends else prompt[start:]


def failed_prediction(error: str, model: str = DEFAULT_MODELS[0]) -> dict[str, Any]:
    """A finished ``failed`` prediction, as a create in sync mode returns it (for status-201 faults)."""
    pid = "fakefailed0000000000000000"
    return {
        "id": pid,
        "model": model,
        "version": version_id(model),
        "input": {"prompt": "..."},
        "logs": "",
        "output": None,
        "data_removed": False,
        "error": error,
        "status": "failed",
        "created_at": _CREATED,
        "started_at": _CREATED,
        "completed_at": _CREATED,
        "urls": {
            "get": f"https://api.replicate.com/v1/predictions/{pid}",
            "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
        },
        "metrics": {"predict_time": 0.01},
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _event(name: str, data: str, event_id: str) -> bytes:
    """One SSE event; a multi-line payload becomes several ``data:`` lines, as the SSE spec requires."""
    lines = [f"event: {name}", f"id: {event_id}", *(f"data: {line}" for line in data.split("\n"))]
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class _Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    reply: Reply
    prompt_tokens: int
    error: str | None  # set when the model will fail
    status: str = "starting"
    output: list[str] | None = None
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    completed_at: str | None = None
    stream_fault: Fault | None = None

    @property
    def tokens(self) -> list[str]:
        return WORD_RE.findall(self.reply.content or "")

    def run(self, *, finish: bool) -> None:
        """Advance to ``processing`` with the whole output, or to the end."""
        self.started_at = self.started_at or _now()
        if self.error is not None or finish:
            self.status = "failed" if self.error is not None else "succeeded"
            self.output = None if self.error is not None else self.tokens
            self.completed_at = _now()
        else:
            self.status, self.output = "processing", self.tokens


class FakeReplicate(FakeServer):
    """A deterministic Replicate API for tests; see the module docstring and :class:`FakeServer`."""

    prefix = ""  # the SDK's base URL is the root; every path starts with /v1
    auth_failure = (401, _ERRORS[401][1])

    def __init__(
        self,
        models: Iterable[str] = DEFAULT_MODELS,
        api_key: str | None = None,
        chunks: int = 5,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
        *,
        wait_finishes: bool = False,
        max_input_tokens: int | None = 8192,
        report_metrics: bool = True,
        streaming: bool = True,
        hold: bool = False,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """``models`` are ``owner/name`` (each gets :func:`version_id`); ``chunks`` output events per
        stream; ``report_metrics=False`` leaves token counts out of ``metrics``; ``streaming=False``
        serves models without ``urls.stream``; ``hold=True`` keeps predictions running forever.
        ``usage`` (also settable later as :attr:`usage`) is merged into a succeeded prediction's
        ``metrics`` (:func:`~interlock.testing._base.merge_usage`), e.g. ``{"input_token_count":
        2000, "output_token_count": 500}``; with ``report_metrics=False`` it is not applied."""
        self.models = list(models)
        self.versions = {version_id(m): m for m in self.models}
        self.chunks = max(1, chunks)
        self.wait_finishes = wait_finishes
        self.max_input_tokens = max_input_tokens
        self.report_metrics = report_metrics
        self.streaming = streaming
        self.hold = hold
        #: merged into a succeeded prediction's token ``metrics`` (None: the fake's own counts only)
        self.usage: Mapping[str, Any] | None = usage
        self.predictions: dict[str, _Prediction] = {}
        super().__init__(api_key=api_key, seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    # -- FakeServer hooks -------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self._list_models)
        router.add_get("/v1/models/{owner}/{name}", self._get_model)
        router.add_get("/v1/models/{owner}/{name}/versions", self._list_versions)
        router.add_get("/v1/models/{owner}/{name}/versions/{version}", self._get_version)
        router.add_post("/v1/models/{owner}/{name}/predictions", self._create_for_model)
        router.add_post("/v1/predictions", self._create_for_version)
        router.add_get("/v1/predictions/{id}", self._get_prediction)
        router.add_post("/v1/predictions/{id}/cancel", self._cancel_prediction)
        router.add_get("/v1/streams/{id}", self._stream)

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        title, default = _ERRORS.get(status, ("Error", f"HTTP {status}"))
        if status == 422 and message is not None:
            title = "Input validation failed"
        return _json({"title": title, "detail": message or default, "status": status, **detail}, status)

    def authorized(self, request: web.Request) -> bool:
        # Bearer is current; "Token" is the legacy scheme the API still accepts
        given = request.headers.get("Authorization")
        return self.api_key is None or given in (f"Bearer {self.api_key}", f"Token {self.api_key}")

    def model_of(self, request: web.Request, body: Any) -> Any:
        if m := _MODEL_PATH.match(request.path):
            return f"{m.group('owner')}/{m.group('name')}"
        ref = body.get("version") if isinstance(body, dict) else None
        return self._resolve_version(ref)[0] if isinstance(ref, str) else None

    def is_generation(self, request: web.Request) -> bool:
        return self.faultable(request)

    def faultable(self, request: web.Request) -> bool:
        # only creates: polls, the stream GET and cancels never take a queued fault themselves
        return request.method == "POST" and request.path.endswith("/predictions")

    # -- models and versions ------------------------------------------------------------------

    def _version_object(self, model: str) -> dict[str, Any]:
        text = {"type": "string"}
        number = {"type": "number"}
        inputs = {
            "prompt": {**text, "title": "Prompt", "default": ""},
            "system_prompt": {**text, "title": "System Prompt", "default": "You are a helpful assistant."},
            "max_tokens": {"type": "integer", "title": "Max Tokens", "default": 512, "minimum": 1},
            "temperature": {**number, "title": "Temperature", "default": 0.6, "minimum": 0, "maximum": 5},
            "top_p": {**number, "title": "Top P", "default": 0.9, "minimum": 0, "maximum": 1},
            "presence_penalty": {**number, "title": "Presence Penalty", "default": 0},
            "frequency_penalty": {**number, "title": "Frequency Penalty", "default": 0},
            "stop_sequences": {**text, "title": "Stop Sequences"},
            "seed": {"type": "integer", "title": "Seed"},
            "image": {**text, "title": "Image", "format": "uri"},
        }
        output = {"type": "array", "items": text, "title": "Output", "x-cog-array-type": "iterator",
                  "x-cog-array-display": "concatenate"}  # fmt: skip
        schema = {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"}, "paths": {},
                  "components": {"schemas": {"Input": {"type": "object", "title": "Input", "properties": inputs},
                                             "Output": output}}}  # fmt: skip
        return {"id": version_id(model), "created_at": _CREATED, "cog_version": "0.9.4", "openapi_schema": schema}

    def _model_object(self, model: str) -> dict[str, Any]:
        owner, name = model.split("/", 1)
        return {
            "url": f"https://replicate.com/{model}", "owner": owner, "name": name,
            "description": f"Fake {name}", "visibility": "public", "github_url": None, "paper_url": None,
            "license_url": None, "run_count": 0, "cover_image_url": None, "default_example": None,
            "latest_version": self._version_object(model),
        }  # fmt: skip

    def _known(self, request: web.Request) -> str | None:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        return model if model in self.models else None

    async def _list_models(self, request: web.Request) -> web.Response:
        return _json({"next": None, "previous": None, "results": [self._model_object(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.Response:
        model = self._known(request)
        return _json(self._model_object(model)) if model else self.error_response(404)

    async def _list_versions(self, request: web.Request) -> web.Response:
        model = self._known(request)
        if model is None:
            return self.error_response(404)
        return _json({"next": None, "previous": None, "results": [self._version_object(model)]})

    async def _get_version(self, request: web.Request) -> web.Response:
        model = self._known(request)
        if model is None or request.match_info["version"] != version_id(model):
            return self.error_response(404)
        return _json(self._version_object(model))

    # -- predictions ---------------------------------------------------------------------------

    def _resolve_version(self, ref: str) -> tuple[str | None, str | None]:
        """``(model, version)`` for a 64-hex id, ``owner/name:id`` or ``owner/name`` (latest)."""
        if _HEX64.match(ref):
            return self.versions.get(ref), ref
        model, _, version = ref.partition(":")
        if model not in self.models or (version and version != version_id(model)):
            return None, None
        return model, version or version_id(model)

    async def _create_for_model(self, request: web.Request) -> web.Response:
        model = self._known(request)
        if model is None:
            return self.error_response(404)
        return self._create(request, model, version_id(model))

    async def _create_for_version(self, request: web.Request) -> web.Response:
        body = request_state(request).json
        ref = body.get("version") if isinstance(body, dict) else None
        model, version = self._resolve_version(ref) if isinstance(ref, str) else (None, None)
        if model is None or version is None:
            return self.error_response(422)  # Replicate's "Invalid version or not permitted"
        return self._create(request, model, version)

    def _create(self, request: web.Request, model: str, version: str) -> web.Response:
        state = request_state(request)
        body = state.json
        if state.malformed or not isinstance(body, dict):
            return self.error_response(400, "The request body is not a valid JSON object.")
        inputs = body.get("input")
        problems = _input_problems(inputs)
        if problems or not isinstance(inputs, dict):
            detail = "".join(f"- {f}: {d}\n" for f, d in problems)
            fields = [{"type": "invalid", "field": f, "description": d} for f, d in problems]
            return self.error_response(422, detail, invalid_fields=fields)
        prompt, system = inputs.get("prompt", ""), inputs.get("system_prompt") or ""
        limit = inputs.get("max_tokens", inputs.get("max_new_tokens"))
        reply = plan_reply(prompt=last_user_text(prompt), images=1 if inputs.get("image") else 0, max_tokens=limit)
        used = prompt_tokens([prompt, system])
        error = None
        if self.max_input_tokens is not None and used > self.max_input_tokens:
            error = (
                f"Your input is too long. Max input length is {self.max_input_tokens} tokens, "
                f"but you supplied {used} tokens."
            )
        pid = hashlib.sha256(self.next_id("prediction-").encode()).hexdigest()[:26]
        prediction = _Prediction(pid, model, version, inputs, reply, used, error)
        self.predictions[pid] = prediction
        fault = state.fault
        if body.get("stream") is True and fault is not None and (
            fault.ttft > 0 or any(getattr(fault, name) is not None for name in _STREAM_FAULT_INDICES)
        ):
            prediction.stream_fault = fault  # it breaks the stream, not this create
        headers = {}
        if request.headers.get("Prefer", "").strip().startswith("wait") and not self.hold:
            prediction.run(finish=self.wait_finishes)
            headers["Preference-Applied"] = "wait"
        return _json(self._prediction_object(prediction), 201, headers)

    def _prediction_object(self, p: _Prediction) -> dict[str, Any]:
        urls = {"cancel": f"{self.url}/v1/predictions/{p.id}/cancel", "get": f"{self.url}/v1/predictions/{p.id}"}
        if self.streaming:
            urls["stream"] = f"{self.url}/v1/streams/{p.id}"
        obj: dict[str, Any] = {
            "id": p.id, "model": p.model, "version": p.version, "input": p.input, "logs": "",
            "output": p.output, "data_removed": False, "error": p.error if p.status == "failed" else None,
            "status": p.status, "created_at": p.created_at, "urls": urls,
        }  # fmt: skip
        if p.started_at:
            obj["started_at"] = p.started_at
        if p.completed_at:
            obj["completed_at"] = p.completed_at
            metrics: dict[str, Any] = {"predict_time": 0.012, "total_time": 0.015}
            if self.report_metrics and p.status == "succeeded":
                metrics |= {
                    "input_token_count": p.prompt_tokens,
                    "output_token_count": p.reply.completion_tokens,
                    "tokens_per_second": 250.0,
                    "time_to_first_token": 0.004,
                }
                metrics = merge_usage(metrics, self.usage)
            obj["metrics"] = metrics
        return obj

    def _lookup(self, request: web.Request) -> _Prediction | None:
        return self.predictions.get(request.match_info["id"])

    async def _get_prediction(self, request: web.Request) -> web.Response:
        p = self._lookup(request)
        if p is None:
            return self.error_response(404)
        if not self.hold and p.status == "starting":
            p.started_at = _now()
            p.status, p.output = "processing", p.tokens[: len(p.tokens) // 2]
            if p.error is not None:
                p.run(finish=True)
        elif not self.hold and p.status == "processing":
            p.run(finish=True)
        return _json(self._prediction_object(p))

    async def _cancel_prediction(self, request: web.Request) -> web.Response:
        p = self._lookup(request)
        if p is None:
            return self.error_response(404)
        if p.status not in ("succeeded", "failed", "canceled"):
            p.status, p.completed_at = "canceled", _now()
        return _json(self._prediction_object(p))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        p = self._lookup(request)
        if p is None or not self.streaming:
            return self.error_response(404)
        fault = request_state(request).fault = p.stream_fault  # carried over from the create
        stamp = int(time.time())
        ids = iter(range(10**9))

        def event(name: str, data: str) -> bytes:
            return _event(name, data, f"{stamp}:{next(ids)}")

        head = [event("logs", "Prediction started")]
        if p.error is not None:
            events: list[bytes] = []
            tail = [event("error", orjson.dumps({"detail": p.error}).decode()), event("done", '{"reason":"error"}')]
        else:
            events = [event("output", piece) for piece in split(p.reply.content or "", self.chunks)]
            tail = [event("done", "{}")]
        p.run(finish=True)
        error_text = "Prediction interrupted; please retry (code: PA)"
        if fault is not None and fault.error_event_at is not None:
            p.status, p.error, p.output = "failed", error_text, None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        return await self.play(
            request,
            response,
            head=head,
            events=events,
            tail=tail,
            error_event=event("error", orjson.dumps({"detail": error_text}).decode()),
            malformed=f"event: {{not-an-event\nid: {stamp}:x\ndata: ?\n\n".encode(),
        )


def _input_problems(inputs: Any) -> list[tuple[str, str]]:
    """Schema validation of the fake model's inputs, as ``(field, description)`` pairs."""
    if not isinstance(inputs, dict):
        return [("input", "Invalid type. Expected: object")]
    problems: list[tuple[str, str]] = []
    if not isinstance(inputs.get("prompt"), str):
        problems.append(("input", "prompt is required"))

    def check(key: str, ok: bool, what: str) -> None:
        if key in inputs and not ok:
            problems.append((f"input.{key}", what))

    def number(key: str, lo: float, hi: float | None = None) -> None:
        v = inputs.get(key)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
        check(key, ok, f"Must be a number between {lo} and {hi}" if hi is not None else f"Must be at least {lo}")

    for key in ("system_prompt", "stop_sequences", "image"):
        check(key, isinstance(inputs.get(key), str), "Invalid type. Expected: string")
    for key in ("max_tokens", "max_new_tokens"):
        v = inputs.get(key)
        check(key, isinstance(v, int) and not isinstance(v, bool) and v >= 1, "Must be greater than or equal to 1")
    check("seed", isinstance(inputs.get("seed"), int) and not isinstance(inputs.get("seed"), bool), "Invalid type. Expected: integer")
    number("temperature", 0, 5)
    number("top_p", 0, 1)
    number("presence_penalty", -2, 2)
    number("frequency_penalty", -2, 2)
    return problems


def conformance_case() -> ProviderCase:
    """The conformance suite's case for the ``replicate`` provider."""
    from interlock.testing.conformance import ProviderCase  # imported here: it needs pytest and openai
    from interlock.testing.gateway import provider_table

    key = "r8_conformance0123456789"
    too_long = "Your input is too long. Max input length is 4096 tokens, but you supplied 5441 tokens."
    return ProviderCase(
        name="replicate",
        fake=lambda: FakeReplicate(api_key=key),
        provider_toml=lambda fake, timeout: provider_table(
            "replicate", type="replicate", base_url=fake.url, api_key=key, timeout=timeout
        ),
        model=f"replicate/{DEFAULT_MODELS[0]}",
        # no tool calling, no JSON mode, no embeddings API; images go through as the `image` input
        features=frozenset({"system", "images", "stream_usage"}),
        # a too-long prompt is a prediction that fails (cog-llama-template's wording, which the
        # classifier's context-length pattern matches), returned by the sync-mode create as a 201
        errors={"context_length": (201, failed_prediction(too_long))},
    )
