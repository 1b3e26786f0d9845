"""What Vertex AI changes on top of the shared formats: Claude's body, errors, ``:predict`` embeddings.

Vertex serves Gemini models in the GenerateContent format (:mod:`.gemini`) and Claude
in the Anthropic Messages format (:mod:`.anthropic`); only this much is its own:

* :func:`claude_body` — the Messages body without ``model`` (it is in the URL) and with
  ``"anthropic_version": "vertex-2023-10-16"`` in place of the version header;
  :func:`claude_native_body` the same for a Messages client's own body, passed through, and
  :func:`beta_headers` its beta features (an ``anthropic-beta`` header, as on Anthropic's API),
  :func:`claude_native_result` Claude's answer to it, :func:`claude_count_body` its token count request;
* :func:`error_fields` — errors come in Anthropic's shape from Claude itself and in
  Google's from the platform (auth, quota, 5xx);
* :func:`embed_batches`, :func:`predict_body`, :func:`predictions` — the text-embedding
  models' ``:predict`` request and response.
"""

from __future__ import annotations

from typing import Any

from interlock.plugins.providers.translation import anthropic as claude
from interlock.plugins.providers.translation import gemini
from interlock.plugins.providers.translation.anthropic_events import client_headers, message_usage, request_body
from interlock.provider_api import NativeResult, RequestContext, UpstreamError, error_fields as generic_error_fields

#: ``anthropic_version`` Claude on Vertex takes in the body (instead of the ``anthropic-version`` header)
ANTHROPIC_VERTEX_VERSION = "vertex-2023-10-16"
#: texts per ``:predict`` call (Vertex's limit); ``gemini-embedding-*`` takes one instance per call
EMBED_BATCH = 250


def claude_body(ctx: RequestContext, model: str, *, stream: bool, max_tokens_default: int) -> dict[str, Any]:
    """The ``rawPredict`` / ``streamRawPredict`` body for a Claude model."""
    body = claude.build_request(ctx, model, stream=stream, max_tokens_default=max_tokens_default)
    body.pop("model", None)  # the model is in the URL
    body["anthropic_version"] = ANTHROPIC_VERTEX_VERSION
    return body


def claude_native_body(native: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """A Messages client's body for ``rawPredict`` / ``streamRawPredict``, everything else kept as sent.

    Only the top level changes (``model`` out, ``anthropic_version`` in, ``stream`` true for
    streamRawPredict and left out for rawPredict, as Anthropic's Vertex client sends them), so nested
    content (``cache_control``, thinking signatures, server tools) goes out as it came.
    """
    body = request_body(native, None, stream=stream)
    body["anthropic_version"] = ANTHROPIC_VERTEX_VERSION
    return body


def claude_count_body(native: dict[str, Any], model: str) -> dict[str, Any]:
    """A Messages client's body for Claude's ``count-tokens:rawPredict``: the model named in the body.

    (Counting has one URL for every Claude model, so unlike generation the body says which.)
    """
    body = request_body(native, model, stream=False)
    body["anthropic_version"] = ANTHROPIC_VERTEX_VERSION
    return body


def claude_native_result(out: dict[str, Any], name: str) -> NativeResult:
    """A ``rawPredict`` answer for a Messages client: Claude's message as sent, or the error it carries.

    Vertex can answer HTTP 200 with an Anthropic error body; that is a failure, not an answer.
    """
    if out.get("type") == "error":
        message, code, etype = claude.error_fields(out)
        raise UpstreamError(f"{name} returned an error: {message}", kind="http", status=502, body=out, code=code,
                            error_type=etype)
    return NativeResult(out, message_usage(out))


def beta_headers(headers: dict[str, str], configured: str | None = None) -> dict[str, str]:
    """The ``anthropic-beta`` header for a Messages client's request: Vertex takes betas as a header.

    (Anthropic's own Vertex client sends them so; only its Bedrock client moves them into the body.)
    A beta header configured on the provider (``headers``) is kept beside the client's. The client's
    ``anthropic-version`` stays behind: on Vertex the version is the body's.
    """
    client = client_headers(headers).get("anthropic-beta")
    betas = ",".join(b for b in (configured, client) if b)
    return {"anthropic-beta": betas} if betas else {}


def error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """``(message, code, type)``: Claude's own errors in Anthropic's shape, the platform's in Google's."""
    if isinstance(body, dict) and body.get("type") == "error":
        return claude.error_fields(body)
    message, code, etype = gemini.error_fields(body)
    return (message, code, etype) if message or code or etype else generic_error_fields(body)


def embed_batches(texts: list[str], model: str) -> list[list[str]]:
    """``texts`` split into ``:predict`` calls: :data:`EMBED_BATCH` each, one for ``gemini-embedding-*``."""
    size = 1 if model.startswith("gemini-embedding") else EMBED_BATCH
    return [texts[i:i + size] for i in range(0, len(texts), size)]


def predict_body(batch: list[str], dimensions: Any) -> dict[str, Any]:
    """One ``:predict`` request; ``dimensions`` (the client's, if an int) sets ``outputDimensionality``."""
    body: dict[str, Any] = {"instances": [{"content": t} for t in batch]}
    if isinstance(dimensions, int):
        body["parameters"] = {"outputDimensionality": dimensions}
    return body


def predictions(out: dict[str, Any], expected: int, name: str) -> list[tuple[list[float], int]]:
    """``(values, token_count)`` per prediction of a text-embedding ``:predict`` response."""
    items: list[tuple[list[float], int]] = []
    for prediction in out.get("predictions") or ():
        embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
        if not isinstance(embeddings, dict) or not isinstance(embeddings.get("values"), list):
            break
        values: list[float] = embeddings["values"]
        stats = embeddings.get("statistics")
        count = stats.get("token_count") if isinstance(stats, dict) else None
        items.append((values, int(count) if isinstance(count, int | float) else 0))
    if len(items) != expected:
        raise UpstreamError(f"{name}: embeddings response does not match the input", kind="stream", body=out)
    return items
