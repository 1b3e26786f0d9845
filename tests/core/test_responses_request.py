"""The Responses -> Chat Completions translation on its own: the cases end-to-end tests do not reach."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.core.doors.responses_request import input_items, native_items, translate
from interlock.core.errors import GatewayError


def chat(body: dict[str, Any]) -> Any:
    return translate(body, input_items(body))


def test_assistant_text_and_its_calls_are_one_message_and_outputs_follow() -> None:
    out = chat({"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
        {"role": "developer", "content": [{"type": "input_text", "text": "Be "}, {"type": "input_text", "text": "brief"}]},
    ]})
    user, assistant, tool1, tool2, developer = out.body["messages"]
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
    assert assistant["content"] == "Checking." and [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert tool1 == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert tool2["content"] == "rain" and developer == {"role": "developer", "content": "Be brief"}
    assert out.dropped == [] and out.refusal is None


def test_tools_choices_and_formats() -> None:
    tools = [{"type": "function", "name": "a", "parameters": {"type": "object"}}, {"type": "function", "name": "b"}]
    out = chat({"model": "m", "input": "hi", "tools": tools, "parallel_tool_calls": False,
                "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]},
                "text": {"format": {"type": "json_object"}, "verbosity": "low"}, "reasoning": {"effort": "high"}})
    assert out.body["tools"] == [{"type": "function", "function": {"name": "b"}}]
    assert out.body["tool_choice"] == "required" and out.body["parallel_tool_calls"] is False
    assert out.body["response_format"] == {"type": "json_object"} and out.body["verbosity"] == "low"
    assert out.body["reasoning_effort"] == "high"
    named = chat({"model": "m", "input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "a"}})
    assert named.body["tool_choice"] == {"type": "function", "function": {"name": "a"}}
    with pytest.raises(GatewayError) as info:
        chat({"model": "m", "input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "zzz"}})
    assert info.value.param == "tool_choice"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"tools": [{"type": "custom", "name": "grammar"}]}, "unsupported_tool"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "unsupported_tool"),
        ({"tool_choice": {"type": "web_search_preview"}, "tools": [{"type": "function", "name": "f"}]}, "unsupported_tool"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://example.test/a.pdf"}]}]},
         "unsupported_parameter"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}, "unsupported_parameter"),
        ({"prompt": {"id": "pmpt_1"}}, "unsupported_parameter"),
    ],
)
def test_what_only_a_native_target_can_serve_is_a_refusal(extra: dict[str, Any], code: str) -> None:
    out = chat({"model": "m", "input": "hi", **extra})
    assert out.refusal is not None and out.refusal[0] == code


def test_what_a_translated_target_loses_is_listed() -> None:
    out = chat({"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ], "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"}, "max_tool_calls": 3,
        "stream_options": {"include_obfuscation": False}, "store": False})
    assert out.dropped == ["input.web_search_call", "reasoning.summary", "include", "max_tool_calls"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "hi", "temperature": 3}, "temperature"),
        ({"model": "m", "input": "hi", "background": True}, "background"),
        ({"model": "m", "input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        # values of the wrong JSON type were a 500 (a list is not hashable), found by tests/chaos/test_fuzz.py
        ({"model": "m", "input": [{"role": [], "content": ""}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": {"a": 1}, "content": ""}]}, "input[0].role"),
        ({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "a"}],
          "tool_choice": {"type": "allowed_tools", "tools": 5}}, "tool_choice"),
    ],
)
def test_bad_requests_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        chat(body)
    assert info.value.status == 400 and info.value.param == param


def test_allowed_tools_of_the_wrong_types_are_ignored_not_a_crash() -> None:
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]
    out = chat({"model": "m", "input": "hi", "tools": tools, "tool_choice": {
        "type": "allowed_tools", "mode": ["required"], "tools": [{"type": "function", "name": ["a"]},
                                                                {"type": "function", "name": "b"}]}})
    assert [t["function"]["name"] for t in out.body["tools"]] == ["b"]
    assert "tool_choice" not in out.body  # a mode that is not one of the names: the default


def test_native_targets_get_every_item_but_the_gateways_own_reasoning() -> None:
    items = [{"type": "reasoning", "id": "rs_ilkabc", "summary": []}, {"type": "reasoning", "id": "rs_0123", "summary": []},
             {"role": "user", "content": "hi"}]
    assert native_items(items) == items[1:]
