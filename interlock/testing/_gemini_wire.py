"""Google's GenerateContent request rules and error shape, as the fakes enforce and report them.

Shared by :class:`~interlock.testing.fake_gemini.FakeGemini` and the Vertex AI fake: field names
in either spelling (the REST API accepts ``snake_case`` and ``lowerCamelCase``), the keys the
API rejects ("Unknown name ... Cannot find field"), and ``{"error": {"code", "message", "status"}}``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["InvalidRequest", "camel", "check_request", "check_schema", "error_body", "lower_types", "norm"]

# canonical status and usual message per HTTP status, as Google's front end reports them
_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential."
        ),
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    499: ("CANCELLED", "The operation was cancelled."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    ),
    501: ("NOT_IMPLEMENTED", "Method not implemented."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
_TOP_LEVEL = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "safetySettings",
    "generationConfig",
    "cachedContent",
    "labels",
    "model",
}
_GENERATION = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
}
# the keys of Gemini's Schema message; anything else in parameters/responseSchema is rejected
_SCHEMA = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
_CAMEL = re.compile(r"_([a-z])")


def camel(key: str) -> str:
    """The REST API takes proto field names in either spelling; compare them in lowerCamelCase."""
    return _CAMEL.sub(lambda m: m.group(1).upper(), key)


# fields whose values are free-form data (Struct / JSON Schema), not proto messages: kept verbatim
_OPAQUE = {
    "args",
    "response",
    "parametersJsonSchema",
    "responseJsonSchema",
    "labels",
    "example",
    "default",
    "enum",
}


def norm(value: Any) -> Any:
    """``value`` with every proto field name in lowerCamelCase; free-form data is left alone."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = camel(key)
            if key in _OPAQUE:
                out[key] = item
            elif key == "properties" and isinstance(
                item, dict
            ):  # property names are data, their schemas are not
                out[key] = {name: norm(sub) for name, sub in item.items()}
            else:
                out[key] = norm(item)
        return out
    if isinstance(value, list):
        return [norm(v) for v in value]
    return value


def error_body(
    status: int, message: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Google's error object for ``status``."""
    canonical, default = _STATUS.get(status, ("UNKNOWN", f"HTTP {status}"))
    err: dict[str, Any] = {"code": status, "message": message or default, "status": canonical}
    if details:
        err["details"] = details
    return {"error": err}


class InvalidRequest(Exception):
    """A request the real API would answer with 400 INVALID_ARGUMENT."""


def lower_types(schema: Any) -> Any:
    """Gemini's upper-case ``type`` s in lower case, so the shared reply planner reads the schema."""
    if isinstance(schema, dict):
        return {
            k: (
                v.lower()
                if k == "type" and isinstance(v, str)
                else {pk: lower_types(pv) for pk, pv in v.items()}
                if k == "properties" and isinstance(v, dict)
                else lower_types(v)
            )
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [lower_types(v) for v in schema]
    return schema


def check_schema(schema: Any, where: str) -> None:
    """Reject keywords outside Gemini's Schema message, as the API does (``Unknown name ...``)."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"Invalid JSON payload received. Expected an object at '{where}'.")
    for key, value in schema.items():
        if key not in _SCHEMA:
            raise InvalidRequest(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
            )
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                check_schema(sub, f"{where}.properties[{name}].value")
        elif key == "items":
            check_schema(value, f"{where}.items")
        elif key == "anyOf" and isinstance(value, list):
            for i, sub in enumerate(value):
                check_schema(sub, f"{where}.any_of[{i}]")
        elif key == "enum" and not all(isinstance(v, str) for v in value or ()):
            raise InvalidRequest(f"Invalid value at '{where}.enum': enum values must be strings")


def check_request(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate a GenerateContentRequest as the API does; return its contents."""
    for key in body:
        if key not in _TOP_LEVEL:
            raise InvalidRequest(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
    for key in body.get("generationConfig") or {}:
        if key not in _GENERATION:
            raise InvalidRequest(
                f"Invalid JSON payload received. Unknown name \"{key}\" at 'generation_config': Cannot find field."
            )
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or not content.get("parts"):
            raise InvalidRequest(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        if content.get("role") not in ("user", "model", None):
            raise InvalidRequest("Please use a valid role: user, model.")
    for t, tool in enumerate(body.get("tools") or ()):
        for d, decl in enumerate(tool.get("functionDeclarations") or ()):
            if "parameters" in decl:
                check_schema(decl["parameters"], f"tools[{t}].function_declarations[{d}].parameters")
    config = body.get("generationConfig") or {}
    if "responseSchema" in config:
        check_schema(config["responseSchema"], "generation_config.response_schema")
    return contents
