"""The Bedrock provider's AWS side through a real gateway: signing, credentials, config, embeddings."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from interlock.core.provider import ProviderSettings
from interlock.plugins.providers.bedrock import Bedrock
from interlock.testing import FakeBedrock, Fault
from interlock.testing.gateway import RunningGateway, provider_table, running_gateway
from tests.plugins._bedrock import (
    AKID,
    ARN,
    CLAUDE,
    COHERE,
    ENV,
    HI,
    ISOLATED,
    REGION,
    SECRET,
    TITAN,
    gateway,
    new_fake,
    sent,
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with new_fake() as server:
        yield server


@pytest.fixture
async def gw(fake: FakeBedrock) -> AsyncIterator[RunningGateway]:
    async with gateway(fake) as running:
        yield running


# -- signing --------------------------------------------------------------------------------------


async def test_path_is_percent_encoded_and_signed(tmp_path: Path) -> None:
    raw_paths: list[str] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        raw_paths.append(request.raw_path)

    fake = FakeBedrock(models=[CLAUDE, ARN], access_key_id=AKID, secret_access_key=SECRET, region=REGION)
    fake.app.on_response_prepare.append(record)
    async with fake, gateway(fake) as gw:
        for model in (CLAUDE, ARN):
            completion = await gw.client.chat.completions.create(model=f"bedrock/{model}", messages=HI)
            assert (
                completion.choices[0].message.content == "Fake reply to: hi"
            )  # the fake verified the signature
    assert raw_paths == [
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2F"
            "us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse"
        ),
    ]
    headers = fake.requests[-1].headers
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert f"/{REGION}/bedrock/aws4_request, SignedHeaders=" in headers["authorization"]
    assert "x-amz-date" in headers and "x-amz-security-token" not in headers
    assert headers["content-type"] == "application/json"


async def test_session_token_is_sent_and_secrets_stay_out_of_logs(
    fake: FakeBedrock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {**ENV, "AWS_SESSION_TOKEN": "session-token-value-123"}
    async with gateway(fake, environ=env) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(
            model=f"bedrock/{CLAUDE}", messages=HI
        )
        fake.add_fault(Fault(status=403))
        with pytest.raises(openai.APIStatusError) as info:
            await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
    assert fake.requests[-1].headers["x-amz-security-token"] == "session-token-value-123"
    for text in (
        caplog.text,
        raw.text,
        str(info.value.body),
        json.dumps(gw.gateway.providers["bedrock"].describe()),
    ):
        assert SECRET not in text and "session-token-value-123" not in text


# -- credentials and config -------------------------------------------------------------------------


async def test_no_credentials_is_auth_and_falls_back(fake: FakeBedrock) -> None:
    backup = provider_table("backup", type="bedrock", base_url=fake.url, region=REGION, api_key="unused")
    extra = backup + f'[routes.r]\nchain = "bedrock/{CLAUDE} > backup/{CLAUDE}"\n'
    fake.api_key = "unused"  # the fake takes this API key as well as the signed requests
    async with gateway(fake, environ=ISOLATED, extra=extra) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="r", messages=HI)
        first = gw.log.last.attempts[0]
    assert raw.headers["x-interlock-provider"] == "backup"
    assert first.outcome == "auth" and "no AWS credentials found" in (first.error or "")
    assert fake.requests[-1].headers["authorization"] == "Bearer unused"


async def test_profile_from_a_shared_credentials_file(fake: FakeBedrock, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[inference]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n")
    env = {**ISOLATED, "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}
    async with gateway(fake, environ=env, profile="inference") as gw:
        for _ in range(3):
            completion = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
            assert completion.choices[0].message.content == "Fake reply to: hi"
        provider = gw.gateway.providers["bedrock"]
        assert isinstance(provider, Bedrock) and provider.credentials is not None
        assert provider.credentials.resolutions == 1  # resolved once, then reused


async def test_expiring_credentials_are_refreshed(fake: FakeBedrock, tmp_path: Path) -> None:
    """A credential_process whose credentials expire in 5 minutes is re-run (off the loop) per request."""
    counter = tmp_path / "runs"
    script = tmp_path / "creds.py"
    script.write_text(
        "import datetime, json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1')\n"
        "exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)\n"
        f"print(json.dumps({{'Version': 1, 'AccessKeyId': {AKID!r}, 'SecretAccessKey': {SECRET!r}, "
        "'SessionToken': 'tok', 'Expiration': exp.isoformat()}))\n"
    )
    config = tmp_path / "config"
    config.write_text(f"[profile proc]\ncredential_process = {sys.executable} {script}\n")
    env = {**ISOLATED, "AWS_CONFIG_FILE": str(config)}
    async with gateway(fake, environ=env, profile="proc") as gw:
        for _ in range(2):
            completion = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
            assert completion.choices[0].message.content == "Fake reply to: hi"
    assert int(counter.read_text()) >= 2  # the first lookup, then at least one refresh
    assert fake.requests[-1].headers["x-amz-security-token"] == "tok"


async def test_bearer_api_key_from_the_environment(fake: FakeBedrock) -> None:
    fake.api_key = "bedrock-api-key-xyz"
    async with gateway(fake, environ={**ISOLATED, "AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key-xyz"}) as gw:
        completion = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
        describe = gw.gateway.providers["bedrock"].describe()
    assert completion.choices[0].message.content == "Fake reply to: hi"
    headers = fake.requests[-1].headers
    assert headers["authorization"] == "Bearer bedrock-api-key-xyz" and "x-amz-date" not in headers
    assert describe["auth"] == "bearer" and describe["region"] == REGION
    assert "bedrock-api-key-xyz" not in json.dumps(describe)


async def test_embedded_defaults_enable_bedrock_from_the_environment(fake: FakeBedrock) -> None:
    env = {**ENV, "AWS_REGION": REGION, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": fake.url}
    async with running_gateway("[server]\nauto_providers = true\n", environ=env) as gw:
        completion = await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
        provider = gw.gateway.providers["bedrock"]
    assert completion.choices[0].message.content == "Fake reply to: hi"
    assert isinstance(provider, Bedrock) and provider.region == REGION and provider.base_url == fake.url
    assert Bedrock.enabled_by_env({"AWS_PROFILE": "x"}) and not Bedrock.enabled_by_env({"AWS_REGION": REGION})
    assert Bedrock.options_from_env({"AWS_DEFAULT_REGION": "eu-west-1"}) == {"region": "eu-west-1"}


def test_config_validation_and_defaults() -> None:
    ok = ProviderSettings(name="b", type="bedrock")
    assert Bedrock.validate(ok) == []
    assert Bedrock(ok, None).base_url == "https://bedrock-runtime.us-east-1.amazonaws.com"  # type: ignore[arg-type]
    bad = ProviderSettings(
        name="b", type="bedrock", options={"region": "Mars 1", "profile": "", "colour": "x"}
    )
    assert {key for key, _ in Bedrock.validate(bad)} == {"region", "profile", "colour"}


# -- embeddings --------------------------------------------------------------------------------------


async def test_titan_embeddings(fake: FakeBedrock, gw: RunningGateway) -> None:
    result = await gw.client.embeddings.create(
        model=f"bedrock/{TITAN}", input=["alpha beta", "gamma"], dimensions=256
    )
    assert [d.index for d in result.data] == [0, 1] and all(len(d.embedding) == 256 for d in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == 3 and result.usage.total_tokens == 3
    bodies = sorted(json.dumps(r.json) for r in fake.requests[-2:])
    assert bodies == sorted(json.dumps({"inputText": t, "dimensions": 256}) for t in ("alpha beta", "gamma"))
    assert all(r.path == f"/model/{TITAN}/invoke" for r in fake.requests[-2:])
    floats = await gw.client.embeddings.create(
        model=f"bedrock/{TITAN}", input="alpha beta", encoding_format="float", dimensions=256
    )
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding)


async def test_cohere_embeddings(fake: FakeBedrock, gw: RunningGateway) -> None:
    result = await gw.client.embeddings.create(model=f"bedrock/{COHERE}", input=["alpha", "beta gamma"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 1024
    assert result.usage.prompt_tokens == 3
    assert sent(fake) == {"texts": ["alpha", "beta gamma"], "input_type": "search_document"}
    await gw.client.embeddings.create(
        model=f"bedrock/{COHERE}", input="q", extra_body={"input_type": "search_query"}
    )
    assert sent(fake)["input_type"] == "search_query"


async def test_embedding_errors(fake: FakeBedrock, gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError):
        await gw.client.embeddings.create(model=f"bedrock/{CLAUDE}", input="x")
    assert gw.log.last.attempts[0].outcome == "not_found"
    with pytest.raises(openai.BadRequestError):
        await gw.client.embeddings.create(model=f"bedrock/{TITAN}", input=[[1, 2, 3]])
    fake.add_fault(Fault(status=429, model=TITAN, times=None))
    with pytest.raises(openai.RateLimitError):
        await gw.client.embeddings.create(model=f"bedrock/{TITAN}", input=["a", "b", "c"])
    assert gw.log.last.attempts[0].outcome == "rate_limited"


def test_missing_botocore_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "botocore" else real(name, *a)
    )
    problems = dict(Bedrock.validate(ProviderSettings(name="b", type="bedrock")))
    assert "pip install 'interlock[bedrock]'" in problems["type"]


async def test_unknown_profile_is_an_auth_failure(fake: FakeBedrock) -> None:
    async with gateway(fake, environ=ISOLATED, profile="missing") as gw:
        with pytest.raises(openai.APIStatusError):
            await gw.client.chat.completions.create(model=f"bedrock/{CLAUDE}", messages=HI)
        attempt = gw.log.last.attempts[0]
    assert attempt.outcome == "auth" and "ProfileNotFound" in (attempt.error or "")
    assert not fake.requests  # nothing was sent unsigned


async def test_a_failed_lookup_is_not_repeated_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each lookup may probe files and endpoints for seconds, so a failure is remembered briefly."""
    from interlock.core.types import UpstreamError
    from interlock.plugins.providers import _aws

    lookups: list[str | None] = []
    real = _aws._session

    def counting(profile: str | None, environ: Any) -> Any:
        lookups.append(profile)
        return real(profile, environ)

    monkeypatch.setattr(_aws, "_session", counting)
    credentials = _aws.AwsCredentials("bedrock", profile=None, environ=ISOLATED)
    errors = []
    for _ in range(2):
        with pytest.raises(UpstreamError) as info:
            await credentials.frozen()
        errors.append(info.value)
    assert len(lookups) == 1 and errors[0] is not errors[1]
    assert all(e.status == 401 and "no AWS credentials found" in e.message for e in errors)
