"""The GenerateContent translation functions on their own: the pieces Gemini and Vertex AI share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from interlock.core.failures import classify
from interlock.core.types import RequestContext, UpstreamError
from interlock.plugins.providers.translation import gemini as fmt


def ctx(**body: Any) -> RequestContext:
    return RequestContext(request_id="r", endpoint="chat", body=body)


async def build(**body: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        return await fmt.build_request(ctx(**body), session, stream=False)


def test_sanitize_schema_edge_cases() -> None:
    tree = {
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/Node"},
            "merged": {
                "allOf": [
                    {"properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "number"}}},
                ]
            },
            "either": {"type": ["string", "integer"]},
            "pair": {
                "type": "array",
                "items": [{"type": "string"}, {"type": "integer"}],
                "uniqueItems": True,
            },
            "flag": {"const": True},
            "choice": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "ref_missing": {"$ref": "#/$defs/Nope"},
            "remote": {"$ref": "https://example.com/schema.json"},
        },
        "patternProperties": {"^x-": {"type": "string"}},
    }
    out = fmt.sanitize_schema(tree)
    props = out["properties"]
    depth, node = 0, props["root"]
    while "properties" in node:  # a recursive reference is cut off, not followed forever
        node, depth = node["properties"]["child"], depth + 1
    assert node == {"type": "OBJECT"} and 3 < depth < 20
    assert props["merged"] == {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING"}, "b": {"type": "NUMBER"}},
        "required": ["a"],
    }
    assert props["either"] == {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}
    assert props["pair"] == {"type": "ARRAY", "items": {"type": "STRING"}}
    assert props["flag"] == {"type": "BOOLEAN", "enum": ["true"]}
    assert props["choice"] == {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}
    assert props["ref_missing"] == props["remote"] == {"type": "OBJECT"}
    assert "patternProperties" not in out and "$defs" not in out
    assert fmt.sanitize_schema("not a schema") == {"type": "OBJECT", "properties": {}}
    assert "$defs" in tree and tree["properties"]["root"] == {"$ref": "#/$defs/Node"}  # input untouched


async def test_build_request_edge_cases() -> None:
    only_system = await build(messages=[{"role": "system", "content": "Say hi."}])
    assert only_system == {"contents": [{"role": "user", "parts": [{"text": "Say hi."}]}]}

    legacy = await build(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            {"role": "function", "name": "f", "content": "[1, 2]"},
            {
                "role": "assistant",
                "content": "",
            },  # an empty turn is dropped: Gemini rejects contents without parts
        ]
    )
    assert legacy["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"value": [1]}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"content": [1, 2]}}}]},
    ]
    thinking = await build(messages=[{"role": "user", "content": "x"}], reasoning_effort="none")
    assert thinking["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}}

    for bad in (
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ]
        },
    ):
        with pytest.raises(UpstreamError) as info:
            await build(**bad)
        assert info.value.status == 400 and classify(info.value).failure_class.value == "bad_request"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UpstreamError):
            await fmt.build_request(
                ctx(messages=[{"role": "user", "content": "x"}], n=2), session, stream=True
            )


def test_parse_response_edge_cases() -> None:
    with pytest.raises(UpstreamError) as empty:
        fmt.parse_response({"usageMetadata": {"promptTokenCount": 1}}, "m")
    assert empty.value.kind == "stream"
    no_content = fmt.parse_response({"candidates": [{"finishReason": "SAFETY", "index": 0}]}, "m").body
    assert (
        no_content["choices"][0]["message"]["content"] == ""
        and no_content["choices"][0]["finish_reason"] == "content_filter"
    )
    assert (
        no_content["model"] == "m" and no_content["id"].startswith("chatcmpl-") and "usage" not in no_content
    )


async def _datas(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_stream_chunks_edge_cases() -> None:
    async def run(*items: bytes) -> list[Any]:
        return [orjson.loads(c.payload) async for c in fmt.stream_chunks(_datas(*items), "m", "gem")]

    with pytest.raises(UpstreamError) as empty:
        await run()
    assert empty.value.kind == "stream" and "gem" in empty.value.message
    with pytest.raises(UpstreamError) as not_object:
        await run(b"[1]")
    assert not_object.value.kind == "stream"
    # fragments after the finish (a trailing usage-only one) are read for usage, not content
    chunks = await run(
        orjson.dumps({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"}]}),
        orjson.dumps({"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1}}),
    )
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, "length"]
    assert chunks[-1]["usage"]["total_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
            ("overloaded", "UNAVAILABLE", "UNAVAILABLE"),
        ),
        (
            [{"error": {"code": 429, "message": "busy", "status": "RESOURCE_EXHAUSTED"}}],
            ("busy", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"),
        ),
        (
            {
                "error": {
                    "code": 400,
                    "message": "bad key",
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
                    ],
                }
            },
            ("bad key", "API_KEY_INVALID", "INVALID_ARGUMENT"),
        ),
        ("<html>502</html>", ("<html>502</html>", None, None)),
        (None, ("", None, None)),
    ],
)
def test_error_fields(body: Any, expected: tuple[str, str | None, str | None]) -> None:
    assert fmt.error_fields(body) == expected


def test_retry_after_and_adjust_error() -> None:
    def body(delay: Any) -> dict[str, Any]:
        return {
            "error": {
                "code": 429,
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}],
            }
        }

    assert fmt.retry_after(body("19s")) == 19.0 and fmt.retry_after(body("0.5s")) == 0.5
    assert fmt.retry_after(body("soon")) is None and fmt.retry_after({"error": {}}) is None
    error = fmt.adjust_error(UpstreamError("x", kind="http", status=429, body=body("2.5s")))
    assert error.headers == {"retry-after": "2.5"} and classify(error).retry_after == 2.5
    kept = fmt.adjust_error(
        UpstreamError("x", kind="http", status=429, body=body("30s"), headers={"retry-after": "3"})
    )
    assert kept.headers == {"retry-after": "3"}  # the header wins over the body
