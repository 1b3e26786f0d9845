"""A fake Vertex AI: Gemini and Claude publisher models under a project, plus an OAuth2 token endpoint.

``FakeVertex`` serves, under ``/{v1,v1beta1}/projects/{project}/locations/{location}``:

* ``publishers/google/models/{model}:generateContent`` and ``:streamGenerateContent``
  (GenerateContent format, answered by :class:`~interlock.testing.fake_gemini.FakeGemini`'s logic);
* ``publishers/google/models/{model}:predict`` (text embeddings: ``instances[].content``);
* ``publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict`` (the Messages
  format without ``model``, with ``anthropic_version``, answered by
  :class:`~interlock.testing.fake_anthropic.FakeAnthropic`'s logic);
* ``publishers/anthropic/models/count-tokens:rawPredict`` (Claude's token counting: the Messages
  body with ``model`` and ``anthropic_version``, answered ``{"input_tokens"}``);

and ``POST /token``, an OAuth2 token endpoint for service-account JWT-bearer grants: it checks
the assertion's RS256 signature, issuer, audience, scope and lifetime, and issues opaque access
tokens lasting :attr:`FakeVertex.token_lifetime` seconds. Every API call must carry
``Authorization: Bearer <an unexpired issued token>``. :meth:`FakeVertex.service_account_info`
(or the file at :attr:`FakeVertex.credentials_file`) is a service-account key whose
``token_uri`` points here, so google-auth, the official SDKs and interlock obtain tokens
exactly as they do from Google.

Errors of the platform (auth, quota, unknown model, injected statuses) come in Google's shape
``{"error": {"code", "message", "status"}}``; Claude's own validation errors in Anthropic's.
Injected faults never hit the token endpoint.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, request_state
from interlock.testing._replies import ReplyError, embed, prompt_tokens
from interlock.testing.fake_anthropic import FakeAnthropic, _text
from interlock.testing.fake_gemini import FakeGemini, _Invalid, norm

if TYPE_CHECKING:
    from interlock.testing.conformance import ProviderCase

__all__ = ["FakeVertex", "conformance_cases", "google_error"]

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ANTHROPIC_VERSION = "vertex-2023-10-16"
#: the model segment of Claude's token counting endpoint (``.../models/count-tokens:rawPredict``)
COUNT_TOKENS = "count-tokens"
#: the ``aud`` a service-account assertion must name: Google's token endpoint, whatever ``token_uri`` is
AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")
_MODEL_PATH = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/:]+):(?P<method>\w+)$"
)
_DATED_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_GENERATION = ("generateContent", "streamGenerateContent", "rawPredict", "streamRawPredict")
# canonical status and usual message per HTTP status, as Google APIs report them
_GOOGLE_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", ("Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                              "cookie or other valid authentication credential. See "
                              "https://developers.google.com/identity/sign-in/web/devconsole-project.")),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", ("Resource exhausted. Please try again later. Please refer to "
                                 "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.")),
    499: ("CANCELLED", "The operation was cancelled."),
    500: ("INTERNAL", "Internal error encountered."),
    501: ("UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}
_MAX_EMBED_INSTANCES = 250


def google_error(code: int, message: str | None = None, **detail: Any) -> dict[str, Any]:
    """Google's error envelope for HTTP status ``code``; ``detail`` adds or overrides fields (``status``, ``details``)."""
    canonical, default = _GOOGLE_ERRORS.get(code, ("INTERNAL" if code >= 500 else "FAILED_PRECONDITION", f"HTTP {code}"))
    error: dict[str, Any] = {"code": code, "message": message or default, "status": canonical}
    error.update(detail)
    return {"error": error}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@functools.cache
def _signing_key() -> Any:
    """One RSA key per process: generating keys is slow and the fake needs no secrecy."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeVertex(FakeServer):
    """A deterministic Vertex AI for one project and location; see :class:`FakeServer` for faults.

    ``token_lifetime`` is the ``expires_in`` of issued tokens (set it below the client's refresh
    margin to make every request fetch a new one); ``models`` limits the served models (None:
    any); ``require_auth`` False accepts calls without a token. :attr:`gemini` and :attr:`claude`
    are the fakes whose logic answers each publisher: steer them (``fake.claude.thinking = ...``)
    as you would the standalone fakes, including the usage they report (``fake.gemini.usage``, a
    ``usageMetadata`` override; ``fake.claude.usage``, a Messages ``usage`` override; see
    :func:`~interlock.testing._base.merge_usage`).
    """

    prefix = "/v1"
    auth_failure = (401, _GOOGLE_ERRORS[401][1])

    def __init__(
        self,
        *,
        project: str = "fake-project",
        location: str = "us-central1",
        models: Iterable[str] | None = None,
        token_lifetime: int = 3599,
        require_auth: bool = True,
        chunks: int = 5,
        embedding_dims: int = 8,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
    ) -> None:
        self.project = project
        self.location = location
        self.models: list[str] | None = list(models) if models is not None else None
        self.token_lifetime = token_lifetime
        self.require_auth = require_auth
        self.embedding_dims = embedding_dims
        self.client_email = f"interlock-fake@{project}.iam.gserviceaccount.com"
        self.private_key_id = "fakekey0123456789"
        #: issued access token -> expiry (epoch seconds)
        self.tokens: dict[str, float] = {}
        #: token endpoint calls that issued a token
        self.token_grants = 0
        #: when set, the token endpoint answers with this ``(status, body)`` instead
        self.token_error: tuple[int, dict[str, Any]] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.gemini = FakeGemini(models=self.models or (), chunks=chunks)
        self.claude = FakeAnthropic(models=self.models or (), chunks=chunks)
        super().__init__(seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    # -- FakeServer hooks ------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/token", self._token)
        for version in ("v1", "v1beta1"):
            router.add_post(
                f"/{version}/projects/{{project}}/locations/{{location}}/publishers/{{publisher}}/models/{{target}}",
                self._model_call,
            )

    def authorized(self, request: web.Request) -> bool:
        if request.path == "/token" or not self.require_auth:
            return True
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        return token is not None and self.tokens.get(token, 0.0) > time.time()

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        if status == 529:  # only Claude says 529 (overloaded), in its own shape
            return self.claude.error_response(529, message)
        if status == 401 and not detail:
            detail = {"details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                "domain": "googleapis.com", "metadata": {"service": "aiplatform.googleapis.com"},
            }]}
        if message is not None and message.startswith("Unknown request URL"):
            status, message = 404, f"The requested URL {message.split(': ', 1)[-1][:-1]} was not found on this server."
        return _json(google_error(status, message, **detail), status)

    def model_of(self, request: web.Request, body: Any) -> Any:
        match = _MODEL_PATH.match(request.path)
        return match["model"] if match else None

    def is_generation(self, request: web.Request) -> bool:
        match = _MODEL_PATH.match(request.path)
        return match is not None and match["method"] in _GENERATION

    def faultable(self, request: web.Request) -> bool:
        return request.path != "/token"  # faults break the API, never authentication

    async def stop(self) -> None:
        await super().stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- credentials -----------------------------------------------------------------------

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account_info(self) -> dict[str, Any]:
        """A service-account key for this fake (the JSON Google lets you download), ``token_uri`` here."""
        from cryptography.hazmat.primitives import serialization

        pem = _signing_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": self.private_key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{self.client_email}",
            "universe_domain": "googleapis.com",
        }

    @property
    def credentials_file(self) -> str:
        """The path of :meth:`service_account_info` written as JSON (removed when the fake stops)."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="interlock-fake-vertex-")
        path = Path(self._tmp.name) / "service-account.json"
        if not path.exists():
            path.write_text(json.dumps(self.service_account_info()))
        return str(path)

    def issue_token(self, lifetime: float | None = None) -> str:
        """A fresh access token, as the token endpoint would issue (for SDK tests that take a token)."""
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + (self.token_lifetime if lifetime is None else lifetime)
        return token

    def revoke_tokens(self) -> None:
        """Invalidate every issued token: API calls answer 401 until a new one is fetched."""
        self.tokens.clear()

    # -- POST /token -----------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if self.token_error is not None:
            return _json(self.token_error[1], self.token_error[0])
        form = {k: v[0] for k, v in parse_qs(request_state(request).raw.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != JWT_BEARER:
            return _json({"error": "unsupported_grant_type",
                          "error_description": f"Invalid grant_type: {form.get('grant_type', '')}"}, 400)
        problem = self._check_assertion(form.get("assertion", ""))
        if problem is not None:
            return _json({"error": problem[0], "error_description": problem[1]}, 400)
        self.token_grants += 1
        return _json({"access_token": self.issue_token(), "expires_in": self.token_lifetime, "token_type": "Bearer"})

    def _check_assertion(self, assertion: str) -> tuple[str, str] | None:
        """``(error, description)`` for a bad JWT-bearer assertion, as Google's token endpoint words them."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = assertion.split(".")
        if len(parts) != 3:
            return "invalid_grant", "Invalid JWT: Malformed assertion."
        try:
            header, claims = (json.loads(_b64url_decode(p)) for p in parts[:2])
            signature = _b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError):
            return "invalid_grant", "Invalid JWT: Malformed assertion."
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return "invalid_grant", "Invalid JWT: Unsupported signing algorithm."
        try:
            _signing_key().public_key().verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "invalid_grant", "Invalid JWT Signature."
        if claims.get("iss") != self.client_email:
            return "invalid_grant", "Invalid grant: account not found"
        if claims.get("aud") not in AUDIENCES:
            return "invalid_grant", "Invalid JWT: Failed audience check."
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float) or exp < now or iat > now + 300 or exp - iat > 3600:
            return "invalid_grant", ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                                     "timeframe. Check your iat and exp values in the JWT claim.")
        if SCOPE not in str(claims.get("scope", "")).split():
            return "invalid_scope", "Invalid OAuth scope or ID token audience provided."
        return None

    # -- model calls -----------------------------------------------------------------------

    async def _model_call(self, request: web.Request) -> web.StreamResponse:
        match = _MODEL_PATH.match(request.path)
        if match is None:
            return self.error_response(404, f"Unknown request URL: POST {request.path}.")
        publisher, model, method = match["publisher"], match["model"], match["method"]
        resource = f"projects/{match['project']}/locations/{match['location']}/publishers/{publisher}/models/{model}"
        if match["project"] != self.project or match["location"] != self.location:
            return self.error_response(
                403, f"Permission 'aiplatform.endpoints.predict' denied on resource "
                     f"'//aiplatform.googleapis.com/{resource}' (or it may not exist)."
            )
        if publisher == "anthropic" and model == COUNT_TOKENS and method == "rawPredict":
            return self._claude_count(request)
        known = {"google": ("generateContent", "streamGenerateContent", "predict"),
                 "anthropic": ("rawPredict", "streamRawPredict")}
        if method not in known.get(publisher, ()) or (self.models is not None and model not in self.models):
            return self.error_response(
                404, f"Publisher Model `{resource}` was not found or your project does not have access to it. "
                     "Please ensure you are using a valid model version."
            )
        state = request_state(request)
        if state.malformed or not isinstance(state.json, dict):
            return self.error_response(400, "Invalid JSON payload received.")
        if publisher == "anthropic":
            return await self._claude(request, state.json, model, stream=method == "streamRawPredict")
        if method == "predict":
            return self._predict(state.json, model)
        return await self._gemini(request, norm(state.json), model, stream=method == "streamGenerateContent")

    async def _gemini(self, request: web.Request, body: dict[str, Any], model: str, *, stream: bool) -> web.StreamResponse:
        """Gemini on Vertex: the GenerateContent request and response of the Gemini API."""
        try:
            if not stream:
                return self.gemini._generate(model, body)
            if request.query.get("alt") != "sse":
                return self.error_response(400, "This fake streams only as server-sent events (alt=sse).")
            return await self.gemini._stream(request, model, body)
        except _Invalid as exc:
            return self.error_response(400, str(exc))
        except ReplyError as exc:
            return self.error_response(400, f"* GenerateContentRequest.tool_config.function_calling_config: {exc}")

    async def _claude(self, request: web.Request, body: dict[str, Any], model: str, *, stream: bool) -> web.StreamResponse:
        """Claude on Vertex: the Messages body, ``model`` in the URL, ``anthropic_version`` in the body."""
        version = body.get("anthropic_version")
        if version != ANTHROPIC_VERSION and not (isinstance(version, str) and _DATED_VERSION.match(version)):
            # Vertex's own version, or a dated Messages API version (what anthropic's Vertex client sends)
            return self.claude.error_response(400, f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")
        if bool(body.get("stream")) != stream:
            return self.claude.error_response(400, "stream: streamRawPredict needs \"stream\": true, rawPredict false")
        checked = self.claude.validate(request, require_model=False)
        if isinstance(checked, web.Response):
            return checked
        return await self.claude.answer(request, checked, model)

    def _claude_count(self, request: web.Request) -> web.Response:
        """Claude's token counting: one URL for every model, so the body names the model."""
        state = request_state(request)
        body = state.json
        if state.malformed or not isinstance(body, dict):
            return self.error_response(400, "Invalid JSON payload received.")
        version = body.get("anthropic_version")
        if version != ANTHROPIC_VERSION and not (isinstance(version, str) and _DATED_VERSION.match(version)):
            return self.claude.error_response(400, f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")
        model = body.get("model")
        if not isinstance(model, str):
            return self.claude.error_response(400, "model: Field required")
        if self.models is not None and model not in self.models:
            return self.error_response(404, f"Publisher Model `{model}` was not found or your project does not "
                                            "have access to it.")
        checked = self.claude.validate(request, require_model=False, require_max_tokens=False)
        if isinstance(checked, web.Response):
            return checked
        texts = [_text(checked.get("system") or "")] + [_text(m.get("content")) for m in checked["messages"]]
        return _json({"input_tokens": prompt_tokens(texts)})

    def _predict(self, body: dict[str, Any], model: str) -> web.Response:
        """Text embeddings: one prediction per instance, with the token count Vertex reports."""
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances or not all(
            isinstance(i, dict) and isinstance(i.get("content"), str) for i in instances
        ):
            return self.error_response(400, "instances: each instance needs a string \"content\".")
        limit = 1 if model.startswith("gemini-embedding") else _MAX_EMBED_INSTANCES
        if len(instances) > limit:
            return self.error_response(
                400, f"The model {model} supports up to {limit} instance{'s' if limit > 1 else ''} per request, "
                     f"but got {len(instances)}."
            )
        parameters = body.get("parameters")
        dims = parameters.get("outputDimensionality", self.embedding_dims) if isinstance(parameters, dict) else self.embedding_dims
        if not isinstance(dims, int) or not 1 <= dims <= 3072:
            return self.error_response(400, "outputDimensionality must be between 1 and 3072.")
        predictions = [
            {"embeddings": {"values": embed(i["content"], dims),
                            "statistics": {"truncated": False, "token_count": max(1, len(i["content"].split()))}}}
            for i in instances
        ]
        billable = sum(len(i["content"]) for i in instances)
        return _json({"predictions": predictions, "metadata": {"billableCharacterCount": billable}})


#: Vertex's answer to a Gemini prompt over the context window, verbatim
GEMINI_CONTEXT_ERROR = (
    400, google_error(400, "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."),
)
#: Claude's own context-overflow error, which Vertex passes through in Anthropic's shape
CLAUDE_CONTEXT_ERROR = (
    400, {"type": "error", "error": {"type": "invalid_request_error",
                                     "message": "prompt is too long: 208310 tokens > 200000 maximum"}},
)
#: Vertex's per-model quota error for Claude (Google's shape, as Vertex reports quota)
CLAUDE_QUOTA_ERROR = (
    429, google_error(429, "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
                           "with base model: anthropic-claude-sonnet-4-5. Please submit a quota increase request. "
                           "https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai."),
)
CLAUDE_OVERLOADED_ERROR = (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def conformance_cases() -> list[ProviderCase]:
    """The conformance cases of the ``vertex`` provider: one per publisher (Gemini and Claude).

    The gateway authenticates with the fake's service-account key (``credentials_file``),
    so every case also exercises the OAuth2 token flow.
    """
    from interlock.testing.conformance import FEATURES, ProviderCase
    from interlock.testing.gateway import provider_table

    def table(fake: FakeServer, timeout: float) -> str:
        assert isinstance(fake, FakeVertex)
        return provider_table(
            "vertex", type="vertex", base_url=fake.url, project=fake.project, location=fake.location,
            credentials_file=fake.credentials_file, timeout=timeout,
        )

    return [
        ProviderCase(
            name="vertex-gemini",
            fake=lambda: FakeVertex(models=["gemini-conf", "text-embedding-005"]),
            provider_toml=table,
            model="vertex/gemini-conf",
            embeddings_model="vertex/text-embedding-005",
            features=FEATURES,
            # a blocked prompt is HTTP 200 with promptFeedback and no candidates, as on the Gemini API
            errors={"context_length": GEMINI_CONTEXT_ERROR, "content_policy": (200, {
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}, "modelVersion": "gemini-conf",
            })},
        ),
        ProviderCase(
            name="vertex-anthropic",
            fake=lambda: FakeVertex(models=["claude-conf@20250929"]),
            provider_toml=table,
            model="vertex/claude-conf@20250929",
            features=FEATURES - {"embeddings"},
            errors={"context_length": CLAUDE_CONTEXT_ERROR, "rate_limited": CLAUDE_QUOTA_ERROR,
                    "overloaded": CLAUDE_OVERLOADED_ERROR},
        ),
    ]
