"""Request validation: reject what OpenAI would reject, pass everything else through.

Only the fields interlock or a translating provider relies on are checked;
parameters interlock does not know are left alone so OpenAI-compatible
upstreams receive them untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interlock.core.errors import GatewayError, bad_request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


def _num(body: dict[str, Any], key: str, lo: float | None = None, hi: float | None = None, *, integer: bool = False) -> None:
    if key not in body or body[key] is None:
        return
    value = body[key]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise bad_request(f"'{key}' must be {'an integer' if integer else 'a number'}, got {value!r}", param=key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise bad_request(f"'{key}' must be {rng}, got {value!r}", param=key)


def _typed(body: dict[str, Any], key: str, typ: type | tuple[type, ...], what: str) -> None:
    if key in body and body[key] is not None and not isinstance(body[key], typ):
        raise bad_request(f"'{key}' must be {what}", param=key)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return body


#: longest model name accepted (real ones are far shorter; it is echoed in headers, logs and ledger rows)
MAX_MODEL_CHARS = 256


def model_problem(model: str) -> str | None:
    """Why a non-empty model name cannot be used, or None.

    A name goes into upstream URLs and bodies, response headers, log lines and ledger
    rows: control characters (a CR/LF would split a header) and overlong names are
    refused before any upstream is called, rather than billed and then broken.
    """
    if len(model) > MAX_MODEL_CHARS:
        return f"'model' is {len(model)} characters long; at most {MAX_MODEL_CHARS} are accepted"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in model):
        return "'model' must not contain control characters (such as CR, LF or TAB)"
    return None


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if "model" not in body:
        raise GatewayError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' must be a non-empty string", param="model")
    problem = model_problem(model)
    if problem is not None:
        raise bad_request(problem, param="model")
    return model


def validate_chat(body: dict[str, Any]) -> None:
    """Raise a 400 :class:`GatewayError` naming the offending parameter."""
    require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise GatewayError(400, "missing required parameter: 'messages'", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", param="messages")
    for i, msg in enumerate(messages):
        if type(msg) is dict and type(msg.get("content")) is str and msg.get("tool_calls") is None:
            role = msg.get("role")
            if type(role) is str and role in _PLAIN_ROLES:
                continue  # the common message: a role and its text (what _message accepts at once)
        _message(msg, f"messages[{i}]")

    for key, check in _CHAT_PARAMS:  # only the parameters sent, in a fixed order (the first error wins)
        if key in body:
            check(body, key)

    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise bad_request("'stop' must be a string or an array of at most 4 strings", param="stop")

    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise bad_request("'metadata' must be an object of string values", param="metadata")

    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be an array", param="tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
                raise bad_request(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", param=f"tools[{i}]")
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise bad_request(f"tools[{i}].function.name must be a non-empty string", param=f"tools[{i}].function.name")
            if "parameters" in fn and not isinstance(fn["parameters"], dict):
                raise bad_request(f"tools[{i}].function.parameters must be a JSON Schema object", param=f"tools[{i}].function.parameters")

    choice = body.get("tool_choice")
    if choice is not None and not (isinstance(choice, str) and choice in TOOL_CHOICES):
        fn = choice.get("function") if isinstance(choice, dict) else None
        if not (isinstance(choice, dict) and choice.get("type") == "function" and isinstance(fn, dict) and isinstance(fn.get("name"), str)):
            raise bad_request(
                "'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )

    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str) or fmt["type"] not in RESPONSE_FORMATS:
            raise bad_request("'response_format.type' must be 'text', 'json_object' or 'json_schema'", param="response_format")
        if fmt["type"] == "json_schema":
            js = fmt.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("name"), str):
                raise bad_request("'response_format.json_schema' must be an object with a 'name'", param="response_format.json_schema")


def _stream_options(body: dict[str, Any], key: str) -> None:
    _typed(body, key, dict, "an object")
    usage_opt = body[key].get("include_usage") if isinstance(body.get(key), dict) else None
    if usage_opt is not None and not isinstance(usage_opt, bool):
        raise bad_request("'stream_options.include_usage' must be a boolean", param="stream_options.include_usage")


# the chat parameters validate_chat checks when present, in the order it reports them:
# (key, check(body, key))
_CHAT_PARAMS: tuple[tuple[str, Callable[[dict[str, Any], str], None]], ...] = (
    ("stream", lambda b, k: _typed(b, k, bool, "a boolean")),
    ("stream_options", _stream_options),
    ("n", lambda b, k: _num(b, k, 1, 128, integer=True)),
    ("temperature", lambda b, k: _num(b, k, 0, 2)),
    ("top_p", lambda b, k: _num(b, k, 0, 1)),
    ("presence_penalty", lambda b, k: _num(b, k, -2, 2)),
    ("frequency_penalty", lambda b, k: _num(b, k, -2, 2)),
    ("max_tokens", lambda b, k: _num(b, k, 1, integer=True)),
    ("max_completion_tokens", lambda b, k: _num(b, k, 1, integer=True)),
    ("seed", lambda b, k: _num(b, k, integer=True)),
    ("top_logprobs", lambda b, k: _num(b, k, 0, 20, integer=True)),
    ("logprobs", lambda b, k: _typed(b, k, bool, "a boolean")),
    ("parallel_tool_calls", lambda b, k: _typed(b, k, bool, "a boolean")),
    ("user", lambda b, k: _typed(b, k, str, "a string")),
    ("logit_bias", lambda b, k: _typed(b, k, dict, "an object")),
)
# roles whose message needs nothing but a role and content (a tool message needs its tool_call_id)
_PLAIN_ROLES = ROLES - {"tool"}


def _message(msg: Any, path: str) -> None:
    if not isinstance(msg, dict):
        raise bad_request(f"{path} must be an object", param=path)
    role = msg.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise bad_request(f"{path}.role must be one of {', '.join(sorted(ROLES))}, got {role!r}", param=f"{path}.role")
    content = msg.get("content")
    if content is None:
        if role == "assistant" and (msg.get("tool_calls") or msg.get("function_call") or "content" in msg):
            pass
        elif role in ("user", "system", "developer", "tool"):
            raise bad_request(f"{path}.content is required for role {role!r}", param=f"{path}.content")
    elif isinstance(content, list):
        for j, part in enumerate(content):
            ppath = f"{path}.content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str) or part["type"] not in PART_TYPES:
                raise bad_request(f"{ppath} must be a content part of type {', '.join(sorted(PART_TYPES))}", param=ppath)
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise bad_request(f"{ppath}.text must be a string", param=f"{ppath}.text")
            if part["type"] == "image_url":
                image = part.get("image_url")
                if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                    raise bad_request(f"{ppath}.image_url.url must be a string", param=f"{ppath}.image_url")
    elif not isinstance(content, str):
        raise bad_request(f"{path}.content must be a string or an array of content parts", param=f"{path}.content")
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise bad_request(f"{path}.tool_call_id is required for tool messages", param=f"{path}.tool_call_id")
    calls = msg.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise bad_request(f"{path}.tool_calls must be an array", param=f"{path}.tool_calls")
        for k, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
                raise bad_request(f"{path}.tool_calls[{k}] must have an id and a function name", param=f"{path}.tool_calls[{k}]")


def validate_embeddings(body: dict[str, Any]) -> None:
    require_model(body)
    inp = body.get("input")
    if inp is None:
        raise GatewayError(400, "missing required parameter: 'input'", param="input", code="missing_required_parameter")
    ok = (
        (isinstance(inp, str))
        or (isinstance(inp, list) and inp and (
            all(isinstance(x, str) for x in inp)
            or all(isinstance(x, int) and not isinstance(x, bool) for x in inp)
            or all(isinstance(x, list) and x and all(isinstance(y, int) for y in x) for x in inp)
        ))
    )
    if not ok:
        raise bad_request("'input' must be a string, an array of strings, or token arrays", param="input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    _num(body, "dimensions", 1, integer=True)
