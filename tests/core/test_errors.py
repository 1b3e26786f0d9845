"""End-to-end client errors: every one is the OpenAI error body with a fitting status.

Malformed bodies are sent as raw bytes with aiohttp (the SDK never sends them); everything the SDK
can send is also checked through the SDK's exception classes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from interlock.testing import FakeOpenAI
from tests.conftest import GatewayFactory, RunningGateway, openai_config
from tests.core._api_helpers import HELLO, assert_no_secret, assert_openai_error, raw_request


@pytest.fixture
async def gw(fake: FakeOpenAI, make_gateway: GatewayFactory) -> RunningGateway:
    return await make_gateway(openai_config(fake.base_url))


async def post_raw(
    gw: RunningGateway, path: str, data: bytes | str, content_type: str = "application/json"
) -> Any:
    return await raw_request(
        "POST", f"{gw.base_url}{path}", data=data, headers={"Content-Type": content_type}
    )


# --------------------------------------------------------------------------- #
# bodies the gateway cannot read
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings"])
@pytest.mark.parametrize(
    "data",
    [
        b'{"model": "gpt-4o", "messages": [',
        b"not json at all",
        b'{"model": "gpt-4o",}',
        b"\xff\xfe\x00garbage",
    ],
    ids=["truncated", "text", "trailing-comma", "binary"],
)
async def test_malformed_json_is_400(fake: FakeOpenAI, gw: RunningGateway, path: str, data: bytes) -> None:
    resp = await post_raw(gw, path, data)
    assert resp.status == 400
    assert resp.headers["content-type"].startswith("application/json")
    err = assert_openai_error(resp.json(), code="invalid_json")
    assert err["type"] == "invalid_request_error"
    assert resp.headers["x-request-id"]
    assert fake.requests == []


@pytest.mark.parametrize("data", [b"[1, 2, 3]", b'"a string"', b"42", b"null", b"true"])
async def test_body_not_an_object_is_400(fake: FakeOpenAI, gw: RunningGateway, data: bytes) -> None:
    resp = await post_raw(gw, "/chat/completions", data)
    assert resp.status == 400
    err = assert_openai_error(resp.json())
    assert "object" in err["message"]
    assert fake.requests == []


async def test_empty_body_is_400(gw: RunningGateway) -> None:
    resp = await post_raw(gw, "/chat/completions", b"")
    assert resp.status == 400
    assert_openai_error(resp.json())


async def test_json_without_content_type_is_still_read(gw: RunningGateway) -> None:
    """Clients that forget the header still get served (the body decides, not the header)."""
    resp = await post_raw(
        gw, "/chat/completions", json.dumps({"model": "gpt-4o", "messages": HELLO}), "text/plain"
    )
    assert resp.status == 200
    assert resp.json()["choices"][0]["message"]["content"] == "Fake reply to: hello there"


# --------------------------------------------------------------------------- #
# field validation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o"}, "messages"),
        ({"messages": HELLO}, "model"),
        ({"model": "", "messages": HELLO}, "model"),
        ({"model": 5, "messages": HELLO}, "model"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": "gpt-4o", "messages": "hello"}, "messages"),
        ({"model": "gpt-4o", "messages": ["hello"]}, "messages[0]"),
        ({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0]",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": ["text"]}]}]},
            "messages[0].content[0]",
        ),
        ({"model": "gpt-4o", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": "gpt-4o", "messages": HELLO, "temperature": 5}, "temperature"),
        ({"model": "gpt-4o", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "gpt-4o", "messages": HELLO, "top_p": 1.5}, "top_p"),
        ({"model": "gpt-4o", "messages": HELLO, "n": 0}, "n"),
        ({"model": "gpt-4o", "messages": HELLO, "n": 1.5}, "n"),
        ({"model": "gpt-4o", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-4o", "messages": HELLO, "max_completion_tokens": -1}, "max_completion_tokens"),
        ({"model": "gpt-4o", "messages": HELLO, "stream": "yes"}, "stream"),
        ({"model": "gpt-4o", "messages": HELLO, "stop": [1, 2]}, "stop"),
        ({"model": "gpt-4o", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "gpt-4o", "messages": HELLO, "metadata": {"a": 1}}, "metadata"),
        ({"model": "gpt-4o", "messages": HELLO, "tools": {"type": "function"}}, "tools"),
        ({"model": "gpt-4o", "messages": HELLO, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "gpt-4o", "messages": HELLO, "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "gpt-4o", "messages": HELLO, "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "yaml"}}, "response_format"),
        ({"model": "gpt-4o", "messages": HELLO, "response_format": {"type": {"x": 1}}}, "response_format"),
        (
            {"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "json_schema"}},
            "response_format.json_schema",
        ),
    ],
)
async def test_invalid_chat_fields_are_400_naming_the_param(
    fake: FakeOpenAI, gw: RunningGateway, body: dict[str, Any], param: str
) -> None:
    resp = await raw_request("POST", f"{gw.base_url}/chat/completions", json_body=body)
    assert resp.status == 400, resp.body
    err = assert_openai_error(resp.json(), param=param)
    assert err["type"] == "invalid_request_error"
    assert fake.requests == []  # rejected before any upstream call


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "text-embedding-3-small"}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "text-embedding-3-small", "input": []}, "input"),
        ({"model": "text-embedding-3-small", "input": [1, "a"]}, "input"),
        ({"model": "text-embedding-3-small", "input": {"text": "x"}}, "input"),
        ({"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "text-embedding-3-small", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
async def test_invalid_embeddings_fields_are_400(
    fake: FakeOpenAI, gw: RunningGateway, body: dict[str, Any], param: str
) -> None:
    resp = await raw_request("POST", f"{gw.base_url}/embeddings", json_body=body)
    assert resp.status == 400, resp.body
    assert_openai_error(resp.json(), param=param)
    assert fake.requests == []


async def test_sdk_bad_request_error_for_bad_temperature(fake: FakeOpenAI, gw: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO, temperature=3.5)
    err = exc.value
    assert err.status_code == 400
    assert err.param == "temperature"
    assert err.type == "invalid_request_error"
    assert "temperature" in err.message
    assert err.response.headers["x-request-id"]
    assert fake.requests == []


async def test_sdk_bad_request_error_for_empty_messages(gw: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client.chat.completions.create(model="gpt-4o", messages=[])
    assert exc.value.param == "messages"


async def test_sdk_bad_request_error_when_streaming(gw: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO, top_p=2, stream=True)
    assert exc.value.param == "top_p"


async def test_sdk_not_found_error(gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        await gw.client.chat.completions.create(model="unknown-thing", messages=HELLO)
    assert exc.value.status_code == 404
    assert exc.value.code == "model_not_found"
    assert exc.value.type == "invalid_request_error"


# --------------------------------------------------------------------------- #
# HTTP-level errors
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/chat/completion", "/v2/chat/completions", "/"])
async def test_unknown_path_is_404_json(gw: RunningGateway, path: str) -> None:
    for method in ("GET", "POST"):
        resp = await raw_request(method, f"{gw.root}{path}", data=b"{}")
        assert resp.status == 404
        assert resp.headers["content-type"].startswith("application/json")
        err = assert_openai_error(resp.json())
        assert path in err["message"]
        assert resp.headers["x-request-id"]


async def test_unknown_path_through_the_sdk(gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError):
        await gw.client.post("/does/not/exist", body={}, cast_to=object)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/chat/completions"),
        ("DELETE", "/v1/embeddings"),
        ("POST", "/v1/models"),
        ("POST", "/health"),
    ],
)
async def test_wrong_method_is_405_json(gw: RunningGateway, method: str, path: str) -> None:
    resp = await raw_request(method, f"{gw.root}{path}")
    assert resp.status == 405
    assert resp.headers["content-type"].startswith("application/json")
    err = assert_openai_error(resp.json())
    assert method in err["message"]
    assert "allow" in resp.headers  # aiohttp keeps the allowed methods


async def test_oversize_body_is_413(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, "[server]\nmax_body_bytes = 2000\n"))
    big = [{"role": "user", "content": "x" * 5000}]

    resp = await raw_request(
        "POST", f"{gw.base_url}/chat/completions", json_body={"model": "gpt-4o", "messages": big}
    )
    assert resp.status == 413
    err = assert_openai_error(resp.json())
    assert "2000" in err["message"]

    with pytest.raises(openai.APIStatusError) as exc:
        await gw.client.chat.completions.create(model="gpt-4o", messages=big)
    assert exc.value.status_code == 413

    # a small request on the same gateway still works
    ok = await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert ok.choices[0].message.content == "Fake reply to: hello there"
    assert len(fake.requests) == 1


async def test_oversize_chunked_body_is_413(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    """No Content-Length to check up front: the limit applies while reading."""
    gw = await make_gateway(openai_config(fake.base_url, "[server]\nmax_body_bytes = 2000\n"))
    payload = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "y" * 5000}]}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 512):
            yield payload[i : i + 512]

    resp = await raw_request("POST", f"{gw.base_url}/chat/completions", data=chunks())
    assert resp.status == 413
    assert_openai_error(resp.json())
    assert fake.requests == []


async def test_error_bodies_never_carry_the_key(fake: FakeOpenAI, gw: RunningGateway) -> None:
    responses = [
        await post_raw(gw, "/chat/completions", b"{bad"),
        await raw_request(
            "POST", f"{gw.base_url}/chat/completions", json_body={"model": "nope", "messages": HELLO}
        ),
        await raw_request("GET", f"{gw.root}/nowhere"),
        await raw_request("GET", f"{gw.base_url}/chat/completions"),
    ]
    for resp in responses:
        assert resp.status >= 400
        assert_no_secret(resp.body, resp.headers)
