"""An OpenAI Responses request read and translated into the internal Chat Completions request.

:func:`input_items` validates the request and returns its ``input`` as a list of
items (a string input is one user message); :func:`translate` turns a list of items
(this turn's, or a whole conversation rebuilt from stored responses) and the
request's parameters into a Chat Completions body. What a translated target cannot
carry is reported, never silently lost: parameters it drops are listed in
:attr:`Translation.dropped` (the ``x-interlock-dropped`` header), and what it cannot
serve at all (hosted tools, custom tools, file references) is
:attr:`Translation.refusal`, which the door turns into a 400 when the request
reaches a translated target. ``docs/responses.md`` has the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interlock.core.errors import GatewayError, bad_request
from interlock.core.validate import require_model

#: the marker in the ids the gateway mints (``rs_ilk…``): never an OpenAI id, whose tails are hex
GATEWAY_ID_MARK = "ilk"
_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
#: parameters the translation reads; any other top-level key is dropped for a translated target
_READ = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "max_output_tokens",
    "temperature", "top_p", "reasoning", "metadata", "user", "stream", "store", "previous_response_id", "include",
    "safety_identifier", "prompt_cache_key", "service_tier", "stream_options", "truncation", "background",
    "conversation", "prompt",
})
#: passed to the Chat Completions request under the same name
_SAME_NAME = ("temperature", "top_p", "metadata", "user", "safety_identifier", "prompt_cache_key", "service_tier")


@dataclass(slots=True)
class Translation:
    """The Chat Completions body for a translated target, and what it loses."""

    body: dict[str, Any]
    #: parameters left out of ``body`` (answered in ``x-interlock-dropped``)
    dropped: list[str] = field(default_factory=list)
    #: ``(code, message)`` when a translated target cannot serve the request at all
    refusal: tuple[str, str] | None = None


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate the request's shape and return its ``input`` as items (400s name the parameter)."""
    require_model(body)
    for key, typ, what in (
        ("stream", bool, "a boolean"), ("store", bool, "a boolean"), ("parallel_tool_calls", bool, "a boolean"),
        ("instructions", str, "a string"), ("previous_response_id", str, "a string"), ("user", str, "a string"),
        ("tools", list, "an array"), ("include", list, "an array"), ("metadata", dict, "an object"),
        ("text", dict, "an object"), ("reasoning", dict, "an object"),
    ):
        if body.get(key) is not None and not isinstance(body[key], typ):
            raise bad_request(f"'{key}' must be {what}", param=key)
    for key, lo, hi in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi):
            raise bad_request(f"'{key}' must be a number between {lo} and {hi}", param=key)
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise bad_request("'max_output_tokens' must be a positive integer", param="max_output_tokens")
    if body.get("background"):
        raise bad_request("background responses are not supported by this gateway", param="background", code="unsupported_parameter")
    if body.get("conversation") is not None:
        raise bad_request(
            "conversations are not supported by this gateway; chain responses with 'previous_response_id'",
            param="conversation", code="unsupported_parameter",
        )
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if raw is None and body.get("previous_response_id"):
        return []
    if not isinstance(raw, list):
        raise GatewayError(400, "'input' must be a string or an array of input items", param="input", code="invalid_value")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad_request(f"'input[{i}]' must be an object", param=f"input[{i}]")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in _ROLES:  # (a list is not hashable: no set lookup)
                raise bad_request(f"'input[{i}].role' must be one of {sorted(_ROLES)}", param=f"input[{i}].role")
            if not isinstance(item.get("content"), (str, list)):
                raise bad_request(f"'input[{i}].content' must be a string or an array", param=f"input[{i}].content")
        elif kind == "item_reference":
            raise bad_request(
                "item references are not supported by this gateway; send the items themselves",
                param=f"input[{i}]", code="unsupported_parameter",
            )
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise bad_request(f"'input[{i}]' (function_call) needs 'call_id' and 'name'", param=f"input[{i}]")
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise bad_request(f"'input[{i}]' (function_call_output) needs 'call_id'", param=f"input[{i}].call_id")
        elif not isinstance(kind, str):
            raise bad_request(f"'input[{i}].type' is missing", param=f"input[{i}].type")
    return list(raw)


def native_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items for a target that speaks Responses natively: without the reasoning items the gateway made up.

    A reasoning item minted from another provider's reasoning text has no encrypted
    content and an id OpenAI never issued; sent upstream it would be rejected.
    """
    return [
        item for item in items
        if not (item.get("type") == "reasoning" and str(item.get("id", "")).startswith(f"rs_{GATEWAY_ID_MARK}"))
    ]


def translate(body: dict[str, Any], items: list[dict[str, Any]]) -> Translation:
    """The Chat Completions request for ``body`` whose conversation is ``items``."""
    out = Translation({"model": body["model"]})
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    _messages(items, messages, out)
    if not messages:
        raise bad_request("the request has no input", param="input")
    chat = out.body
    chat["messages"] = messages
    names = _tools(body, out)
    _tool_choice(body, out, names)
    _text(body, out)
    for key in _SAME_NAME:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    reasoning = body.get("reasoning") or {}
    if reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if reasoning.get("summary") is not None or reasoning.get("generate_summary") is not None:
        out.dropped.append("reasoning.summary")
    if body.get("stream"):
        chat["stream"] = True
    if body.get("include"):
        out.dropped.append("include")
    if body.get("truncation") == "auto":
        out.dropped.append("truncation")
    if body.get("prompt") is not None:
        out.refusal = out.refusal or ("unsupported_parameter", "saved prompts ('prompt') need an OpenAI-native target")
    out.dropped.extend(key for key in body if key not in _READ)
    return out


# -- input ------------------------------------------------------------------- #


def _messages(items: list[dict[str, Any]], messages: list[dict[str, Any]], out: Translation) -> None:
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item["role"]
            if role == "assistant":
                messages.append({"role": "assistant", "content": _assistant_text(item["content"])})
            else:
                messages.append({"role": role, "content": _content(item["content"], role, out)})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments") or ""}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # one assistant turn: its text and its calls
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _assistant_text(output if isinstance(output, list) else [])
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue  # earlier reasoning is not replayed to a translated target (docs/responses.md)
        else:  # a hosted tool's call or result: no Chat Completions counterpart
            name = f"input.{kind}"
            if name not in out.dropped:
                out.dropped.append(name)


def _assistant_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("text") if part.get("type") != "refusal" else part.get("refusal")
            if isinstance(text, str):
                texts.append(text)
    return "".join(texts)


def _content(content: Any, role: str, out: Translation) -> Any:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "input_image":
            if not part.get("image_url"):
                out.refusal = out.refusal or ("unsupported_parameter", "images by 'file_id' need an OpenAI-native target")
                continue
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            if part.get("file_url"):
                out.refusal = out.refusal or ("unsupported_parameter", "files by 'file_url' need an OpenAI-native target")
                continue
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
            parts.append({"type": "file", "file": file})
        elif kind == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part.get("input_audio")})
        else:
            raise bad_request(f"unsupported content part type {kind!r}", param="input")
    if role in ("system", "developer") and all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)  # instructions as one string: every translation reads that
    return parts


# -- tools and output format ---------------------------------------------------- #


def _tools(body: dict[str, Any], out: Translation) -> list[str]:
    tools, names, hosted = [], [], []
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise bad_request(f"'tools[{i}]' must be an object with a 'type'", param=f"tools[{i}]")
        if tool["type"] != "function":
            hosted.append(tool["type"])
            continue
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise bad_request(f"'tools[{i}].name' must be a non-empty string", param=f"tools[{i}].name")
        function = {"name": tool["name"]}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        tools.append({"type": "function", "function": function})
        names.append(tool["name"])
    if hosted:
        out.refusal = ("unsupported_tool", f"tools of type {', '.join(sorted(set(hosted)))} need an OpenAI-native target")
    if tools:
        out.body["tools"] = tools
        if body.get("parallel_tool_calls") is not None:
            out.body["parallel_tool_calls"] = body["parallel_tool_calls"]
    return names


def _tool_choice(body: dict[str, Any], out: Translation, names: list[str]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise bad_request(f"'tool_choice' must be one of {sorted(_TOOL_CHOICES)} or an object", param="tool_choice")
        if names:
            out.body["tool_choice"] = choice
        return
    if not isinstance(choice, dict):
        raise bad_request("'tool_choice' must be a string or an object", param="tool_choice")
    if choice.get("type") == "function":
        if choice.get("name") not in names:
            raise bad_request(f"'tool_choice' names no function tool of this request: {choice.get('name')!r}", param="tool_choice")
        out.body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice.get("type") == "allowed_tools":
        tools = choice.get("tools") or []
        if not isinstance(tools, list):
            raise bad_request("'tool_choice.tools' must be an array", param="tool_choice")
        allowed = {
            t["name"] for t in tools if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
        }
        out.body["tools"] = [t for t in out.body.get("tools", ()) if t["function"]["name"] in allowed]
        if not out.body["tools"]:
            out.body.pop("tools")
            out.body.pop("parallel_tool_calls", None)
        elif isinstance(choice.get("mode"), str) and choice["mode"] in _TOOL_CHOICES:
            out.body["tool_choice"] = choice["mode"]
    else:
        out.refusal = out.refusal or ("unsupported_tool", f"tool_choice of type {choice.get('type')!r} needs an OpenAI-native target")


def _text(body: dict[str, Any], out: Translation) -> None:
    text = body.get("text") or {}
    fmt = text.get("format")
    if text.get("verbosity") is not None:
        out.body["verbosity"] = text["verbosity"]
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        out.body["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise bad_request("'text.format' of type json_schema needs a 'name' and a 'schema'", param="text.format")
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        out.body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif kind != "text":
        raise bad_request("'text.format.type' must be text, json_object or json_schema", param="text.format")
