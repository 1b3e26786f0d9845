"""Request validation: each rejection is a 400 naming the offending parameter."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.core.errors import GatewayError
from interlock.core.validate import require_model, require_object, validate_chat, validate_embeddings

USER = {"role": "user", "content": "hi"}


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [USER]}
    body.update(fields)
    return body


def rejected(fn: Any, body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        fn(body)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


def test_a_full_valid_request_passes() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "assistant", "content": "done", "refusal": None},
        ],
        stream=True,
        stream_options={"include_usage": True},
        n=2,
        temperature=0,
        top_p=1,
        presence_penalty=-2,
        frequency_penalty=2.0,
        max_tokens=10,
        max_completion_tokens=20,
        seed=-5,
        logprobs=True,
        top_logprobs=20,
        parallel_tool_calls=False,
        user="u1",
        logit_bias={"50256": -100},
        stop=["a", "b", "c", "d"],
        metadata={"k": "v"},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        reasoning_effort="low",  # unknown to the validator: passes through untouched
        some_vendor_extension={"x": [1, 2]},
    )
    validate_chat(body)


@pytest.mark.parametrize("value", [None, "stop", ["a"], "auto", "none", "required"])
def test_accepted_simple_values(value: Any) -> None:
    key = "stop" if value in (None, "stop", ["a"]) else "tool_choice"
    validate_chat(chat(**{key: value}))


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"stream": "yes"}, "stream", "boolean"),
        ({"stream_options": []}, "stream_options", "object"),
        ({"n": 0}, "n", "between 1 and 128"),
        ({"n": 129}, "n", "between 1 and 128"),
        ({"n": 1.5}, "n", "integer"),
        ({"n": True}, "n", "integer"),
        ({"temperature": 2.5}, "temperature", "between 0 and 2"),
        ({"temperature": -0.1}, "temperature", "between 0 and 2"),
        ({"temperature": "hot"}, "temperature", "a number"),
        ({"top_p": 1.1}, "top_p", "between 0 and 1"),
        ({"presence_penalty": -3}, "presence_penalty", "between -2 and 2"),
        ({"frequency_penalty": 2.5}, "frequency_penalty", "between -2 and 2"),
        ({"max_tokens": 0}, "max_tokens", "at least 1"),
        ({"max_tokens": "10"}, "max_tokens", "integer"),
        ({"max_completion_tokens": -1}, "max_completion_tokens", "at least 1"),
        ({"seed": 1.5}, "seed", "integer"),
        ({"top_logprobs": 21}, "top_logprobs", "between 0 and 20"),
        ({"logprobs": 1}, "logprobs", "boolean"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "boolean"),
        ({"user": 5}, "user", "string"),
        ({"logit_bias": [1]}, "logit_bias", "object"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"stop": [1]}, "stop", "string"),
        ({"stop": 5}, "stop", "string"),
        ({"metadata": {"k": 1}}, "metadata", "string values"),
        ({"metadata": "x"}, "metadata", "object"),
        ({"tools": {"type": "function"}}, "tools", "array"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]", "'type': 'function'"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name", "non-empty"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f"}},
                    {"type": "function", "function": {"name": "g", "parameters": "x"}},
                ]
            },
            "tools[1].function.parameters",
            "JSON Schema",
        ),
        ({"tool_choice": "always"}, "tool_choice", "'none', 'auto', 'required'"),
        ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice", "'none', 'auto', 'required'"),
        ({"response_format": {"type": "xml"}}, "response_format", "'text', 'json_object'"),
        ({"response_format": "json"}, "response_format", "'text', 'json_object'"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "'name'"),
    ],
)
def test_chat_parameter_rejections(fields: dict[str, Any], param: str, fragment: str) -> None:
    err = rejected(validate_chat, chat(**fields))
    assert err.param == param
    assert fragment in err.message
    assert err.body()["error"]["param"] == param


def test_stream_options_include_usage_must_be_boolean() -> None:
    err = rejected(validate_chat, chat(stream=True, stream_options={"include_usage": "yes"}))
    assert err.param == "stream_options.include_usage"
    assert "'stream_options.include_usage' must be a boolean" in err.message


@pytest.mark.parametrize(
    ("messages", "param", "fragment"),
    [
        (["hi"], "messages[0]", "must be an object"),
        ([USER, {"content": "x"}], "messages[1].role", "must be one of"),
        ([{"role": "robot", "content": "x"}], "messages[0].role", "'robot'"),
        ([{"role": "user"}], "messages[0].content", "required for role 'user'"),
        ([{"role": "system", "content": None}], "messages[0].content", "required for role 'system'"),
        ([{"role": "user", "content": 5}], "messages[0].content", "string or an array"),
        ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0]", "content part"),
        ([{"role": "user", "content": ["hi"]}], "messages[0].content[0]", "content part"),
        (
            [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            "messages[0].content[0].text",
            "string",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x"}]}],
            "messages[0].content[0].image_url",
            "url",
        ),
        ([USER, {"role": "tool", "content": "42"}], "messages[1].tool_call_id", "required for tool messages"),
        ([{"role": "assistant", "content": None, "tool_calls": {}}], "messages[0].tool_calls", "array"),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"type": "function", "function": {"name": "f"}}],
                }
            ],
            "messages[0].tool_calls[0]",
            "an id and a function name",
        ),
    ],
)
def test_message_rejections(messages: list[Any], param: str, fragment: str) -> None:
    err = rejected(validate_chat, chat(messages=messages))
    assert err.param == param
    assert fragment in err.message
    assert err.message.startswith(param.split(".")[0].split("[")[0])


def test_assistant_message_may_omit_content_with_tool_calls() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    validate_chat(chat(messages=[USER, {"role": "assistant", "tool_calls": [call]}]))
    validate_chat(chat(messages=[USER, {"role": "assistant", "content": None}]))


def test_missing_and_bad_messages() -> None:
    err = rejected(validate_chat, {"model": "gpt-4o"})
    assert (err.param, err.code) == ("messages", "missing_required_parameter")
    err = rejected(validate_chat, chat(messages=[]))
    assert (err.param, err.code) == ("messages", "invalid_value")
    err = rejected(validate_chat, chat(messages={"role": "user"}))
    assert err.param == "messages"


def test_model_is_required_and_must_be_a_non_empty_string() -> None:
    err = rejected(require_model, {"messages": [USER]})
    assert (err.param, err.code) == ("model", "missing_required_parameter")
    for bad in ("", "   ", None, 5):
        err = rejected(validate_chat, chat(model=bad))
        assert err.param == "model"
    assert require_model({"model": "gpt-4o"}) == "gpt-4o"


def test_body_must_be_an_object() -> None:
    for bad in ([], "x", 1, None):
        err = rejected(require_object, bad)
        assert err.code == "invalid_json"
    body = {"model": "m"}
    assert require_object(body) is body


def test_validation_does_not_modify_the_body() -> None:
    body = chat(temperature=1, custom={"a": 1})
    snapshot = repr(body)
    validate_chat(body)
    assert repr(body) == snapshot


# --------------------------------------------------------------------------- #
# embeddings
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "inp",
    ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]]],
)
def test_embeddings_inputs_accepted(inp: Any) -> None:
    validate_embeddings(
        {"model": "text-embedding-3-small", "input": inp, "encoding_format": "float", "dimensions": 256}
    )


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"input": 5}, "input", "string"),
        ({"input": []}, "input", "string"),
        ({"input": ["a", 1]}, "input", "string"),
        ({"input": [True, False]}, "input", "string"),
        ({"input": [[]]}, "input", "string"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
        ({"input": "x", "dimensions": 0}, "dimensions", "at least 1"),
        ({"input": "x", "dimensions": "256"}, "dimensions", "integer"),
    ],
)
def test_embeddings_rejections(fields: dict[str, Any], param: str, fragment: str) -> None:
    err = rejected(validate_embeddings, {"model": "text-embedding-3-small", **fields})
    assert err.param == param
    assert fragment in err.message


def test_embeddings_missing_input_and_model() -> None:
    err = rejected(validate_embeddings, {"model": "m"})
    assert (err.param, err.code) == ("input", "missing_required_parameter")
    err = rejected(validate_embeddings, {"input": "x"})
    assert (err.param, err.code) == ("model", "missing_required_parameter")
