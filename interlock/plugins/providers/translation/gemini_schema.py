"""JSON Schema → the OpenAPI-3 subset Gemini's ``Schema`` object accepts.

Gemini's ``functionDeclarations[].parameters`` and ``generationConfig.responseSchema``
reject unknown keys with a 400 ("Unknown name "additionalProperties" ... Cannot find
field"), cannot follow ``$ref`` and have no ``null`` type or type lists. OpenAI
clients routinely send all of those (pydantic emits ``$defs``/``$ref``,
``anyOf [X, null]`` and ``additionalProperties: false``), so :func:`sanitize_schema`
rewrites a schema into the accepted dialect: references inlined, nullability as
``nullable: true``, enums as strings, unsupported keywords dropped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sanitize_schema"]

# the fields of Gemini's Schema message that carry over unchanged
_PLAIN_KEYS = (
    "title",
    "description",
    "maxItems",
    "minItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "default",
    "minimum",
    "maximum",
    "propertyOrdering",
)
_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
# Gemini rejects most string formats ("only 'enum' and 'date-time' are supported for STRING type")
_STRING_FORMATS = {"enum", "date-time"}
_MAX_DEPTH = 12  # recursive $ref chains are cut here


def sanitize_schema(schema: Any) -> dict[str, Any]:
    """``schema`` (JSON Schema) rewritten into Gemini's Schema dialect; never mutates its input."""
    if not isinstance(schema, dict):
        return {"type": "OBJECT", "properties": {}}
    return _convert(schema, schema, 0)


def _resolve(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any] | None:
    """Follow local ``$ref`` s (``#/$defs/X``, ``#/definitions/X``); None when unresolvable."""
    seen = 0
    while isinstance(schema.get("$ref"), str):
        ref: str = schema["$ref"]
        if not ref.startswith("#/") or seen > _MAX_DEPTH:
            return None
        target: Any = root
        for part in ref[2:].split("/"):
            target = (
                target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
            )
        if not isinstance(target, dict):
            return None
        # sibling keywords (e.g. a description next to the $ref) win over the referenced ones
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema


def _merge_all_of(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    """Fold ``allOf`` branches into one schema (properties and required lists united)."""
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for branch in schema.get("allOf") or ():
        if not isinstance(branch, dict):
            continue
        branch = _resolve(branch, root, depth) or {}
        for key, value in branch.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**(merged.get("properties") or {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = list(dict.fromkeys([*(merged.get("required") or []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _convert(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        return {"type": "OBJECT"}  # a recursive structure: stop describing it
    resolved = _resolve(schema, root, depth)
    if resolved is None:
        return {"type": "OBJECT"}
    schema = _merge_all_of(resolved, root, depth) if "allOf" in resolved else resolved
    out: dict[str, Any] = {}
    nullable = bool(schema.get("nullable"))

    # type: a list like ["string", "null"] becomes one type plus nullable
    raw_type = schema.get("type")
    types = [t for t in (raw_type if isinstance(raw_type, list) else [raw_type]) if isinstance(t, str)]
    if "null" in types:
        nullable = True
        types = [t for t in types if t != "null"]
    types = [t for t in types if t in _TYPES]

    # anyOf / oneOf: null branches become nullable; a single remaining branch is merged in
    branches = schema.get("anyOf") if isinstance(schema.get("anyOf"), list) else schema.get("oneOf")
    if isinstance(branches, list):
        real = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
        nullable = nullable or len(real) < len(branches)
        if len(real) == 1:
            inner = _convert(real[0], root, depth + 1)
            if inner.pop("nullable", False):
                nullable = True
            out.update(inner)
        elif real:
            out["anyOf"] = [_convert(b, root, depth + 1) for b in real]
    if len(types) > 1 and "anyOf" not in out:
        out["anyOf"] = [
            _convert({**schema, "type": t, "anyOf": None, "oneOf": None}, root, depth + 1) for t in types
        ]
        types = []

    if "const" in schema:
        schema = {**schema, "enum": [schema["const"]]}
        if not types and schema["const"] is not None:
            types = [_json_type(schema["const"])]
    if isinstance(schema.get("enum"), list):
        values = schema["enum"]
        if None in values:
            nullable = True
        out["enum"] = [v if isinstance(v, str) else _enum_text(v) for v in values if v is not None]
        if not types:  # an untyped enum: type it by its values (Gemini's enums need a type)
            kinds = {_json_type(v) for v in values if v is not None}
            types = [kinds.pop() if len(kinds) == 1 else "string"]

    if types:
        out["type"] = types[0].upper()
    elif "type" not in out and "anyOf" not in out:
        if isinstance(schema.get("properties"), dict):
            out["type"] = "OBJECT"
        elif "items" in schema:
            out["type"] = "ARRAY"

    for key in _PLAIN_KEYS:
        if key in schema and schema[key] is not None:
            out[key] = schema[key]
    fmt = schema.get("format")
    if isinstance(fmt, str) and (out.get("type") != "STRING" or fmt in _STRING_FORMATS):
        out["format"] = fmt

    props = schema.get("properties")
    if isinstance(props, dict):
        out["properties"] = {
            str(k): _convert(v, root, depth + 1) for k, v in props.items() if isinstance(v, dict)
        }
        required = [r for r in schema.get("required") or () if r in out["properties"]]
        if required:
            out["required"] = required
    items = schema.get("items")
    if isinstance(items, list):  # tuple form: Gemini has no tuples, describe the first position
        items = items[0] if items else None
    if isinstance(items, dict):
        out["items"] = _convert(items, root, depth + 1)
    if nullable:
        out["nullable"] = True
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _enum_text(value: Any) -> str:
    """Gemini enums are strings; JSON literals keep their JSON spelling (``true``, ``1``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
