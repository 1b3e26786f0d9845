"""Shared setup of the Bedrock provider tests: the fake, a gateway in front of it, test data."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from interlock.testing import FakeBedrock
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway

AKID, SECRET, REGION = "AKIAFAKEPROVIDER0001", "fake/provider+secret0123456789", "us-west-2"
CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
ARN = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0"
TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
#: what keeps botocore away from the developer's real AWS setup and from instance metadata
ISOLATED = {
    "AWS_CONFIG_FILE": "/nonexistent/interlock-test/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/interlock-test/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
ENV = {**ISOLATED, "AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET}
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
PNG = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HI: Any = [{"role": "user", "content": "hi"}]


def new_fake(models: tuple[str, ...] = (CLAUDE, ARN, TITAN, COHERE)) -> FakeBedrock:
    """A fake that checks every signature against :data:`AKID`/:data:`SECRET` in :data:`REGION`."""
    return FakeBedrock(models=models, access_key_id=AKID, secret_access_key=SECRET, region=REGION)


@contextlib.asynccontextmanager
async def gateway(
    fake: FakeBedrock, environ: dict[str, str] = ENV, extra: str = "", **table: Any
) -> AsyncIterator[RunningGateway]:
    """A gateway whose ``bedrock`` instance points at ``fake``; ``extra`` TOML is appended."""
    values = {"type": "bedrock", "base_url": fake.url, "region": REGION, **table}
    async with running_gateway(provider_table("bedrock", **values) + extra, environ=environ) as gw:
        yield gw


def sent(fake: FakeBedrock) -> Any:
    """The JSON body of the fake's latest request."""
    return fake.requests[-1].json


def native_reason(choice: Any) -> Any:
    """The ``native_finish_reason`` extension field of a parsed choice."""
    return (choice.model_extra or {})["native_finish_reason"]
