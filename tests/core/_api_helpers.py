"""Small helpers shared by the end-to-end HTTP API tests (raw HTTP next to the openai SDK)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.conftest import SECRET

HELLO: list[Any] = [{"role": "user", "content": "hello there"}]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    method: str,
    url: str,
    *,
    data: Any = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """One plain HTTP request, bypassing the SDK (for bodies the SDK would never send)."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, data=data, json=json_body, headers=headers) as resp:
            body = await resp.read()
            return RawResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    out: list[str] = []
    for event in body.decode().split("\n\n"):
        lines = [line[len("data:") :].lstrip() for line in event.splitlines() if line.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def assert_openai_error(body: Any, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """Check the OpenAI error shape exactly; return the inner error object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err


def assert_no_secret(*texts: str | bytes | dict[str, str] | Any) -> None:
    """The provider credential appears nowhere in the given bodies/headers/messages."""
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        elif isinstance(text, dict):
            text = json.dumps(text)
        elif not isinstance(text, str):
            text = repr(text)
        assert SECRET not in text
        assert SECRET[8:] not in text  # not even partially echoed
