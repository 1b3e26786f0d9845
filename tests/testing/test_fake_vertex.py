"""FakeVertex checked against reality: google-auth fetches its tokens, and the official SDKs
(``google-genai`` in Vertex mode for Gemini, ``anthropic.AsyncAnthropicVertex`` for Claude) drive it."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import google.auth.exceptions
import google.auth.transport.requests
import httpx2
import pytest
import requests
from google import genai
from google.genai import errors, types
from google.oauth2 import service_account

from interlock.testing import FakeVertex, Fault

# google-genai subclasses aiohttp.ClientSession, which aiohttp deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

PROJECT, LOCATION = "acme-prod", "europe-west4"
GEMINI, CLAUDE, EMBED = "gemini-2.5-flash", "claude-sonnet-4-5@20250929", "text-embedding-005"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
HELLO = "Hello there, how are you today?"
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)},
                            required=["city"]),
)
CLAUDE_TOOL: Any = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
ROOT = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers"


@pytest.fixture
async def fake() -> AsyncIterator[FakeVertex]:
    async with FakeVertex(project=PROJECT, location=LOCATION) as server:
        yield server


def _credentials(info: dict[str, Any]) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)


def _refresh(credentials: Any) -> None:
    with requests.Session() as session:
        credentials.refresh(google.auth.transport.requests.Request(session))


@pytest.fixture
async def gemini(fake: FakeVertex) -> AsyncIterator[genai.Client]:
    """google-genai in Vertex mode, authenticating with the fake's service-account key."""
    client = genai.Client(
        vertexai=True, project=PROJECT, location=LOCATION, credentials=_credentials(fake.service_account_info()),
        http_options=types.HttpOptions(base_url=fake.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    yield client
    await client.aio.aclose()


@pytest.fixture
async def claude(fake: FakeVertex) -> AsyncIterator[anthropic.AsyncAnthropicVertex]:
    async with anthropic.AsyncAnthropicVertex(
        project_id=PROJECT, region=LOCATION, base_url=f"{fake.url}/v1", access_token=fake.issue_token(), max_retries=0,
    ) as client:
        yield client


# -- the token endpoint --------------------------------------------------------------------------


async def test_google_auth_gets_a_token_from_the_key_file(fake: FakeVertex) -> None:
    credentials = service_account.Credentials.from_service_account_file(fake.credentials_file, scopes=SCOPES)
    await asyncio.to_thread(_refresh, credentials)
    assert credentials.token in fake.tokens and credentials.token.startswith("ya29.")
    assert fake.token_grants == 1 and credentials.expiry is not None
    sent = fake.requests[-1]
    assert sent.path == "/token" and sent.headers["content-type"] == "application/x-www-form-urlencoded"


async def test_token_lifetime_is_reported(fake: FakeVertex) -> None:
    fake.token_lifetime = 120
    credentials = _credentials(fake.service_account_info())
    await asyncio.to_thread(_refresh, credentials)
    # google-auth keeps expiry as naive UTC, counted from expires_in
    left = (credentials.expiry - datetime.datetime.now(datetime.UTC).replace(tzinfo=None)).total_seconds()
    assert 60 < left <= 120


async def test_an_unknown_account_is_refused(fake: FakeVertex) -> None:
    info = {**fake.service_account_info(), "client_email": "someone@else.iam.gserviceaccount.com"}
    with pytest.raises(google.auth.exceptions.RefreshError, match="account not found"):
        await asyncio.to_thread(_refresh, _credentials(info))
    assert fake.token_grants == 0


def _assertion(fake: FakeVertex, **claims: Any) -> str:
    """A JWT-bearer assertion signed with the fake's key, with some claims overridden."""
    from google.auth import crypt, jwt

    now = int(time.time())
    payload = {"iss": fake.client_email, "aud": "https://oauth2.googleapis.com/token", "scope": SCOPES[0],
               "iat": now, "exp": now + 3600, **claims}
    signer = crypt.RSASigner.from_service_account_info(fake.service_account_info())
    return jwt.encode(signer, payload).decode()


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        ({}, None, None),
        ({"aud": "https://example.com/token"}, "invalid_grant", "Failed audience check"),
        ({"iat": 0, "exp": 3600}, "invalid_grant", "short-lived token"),
        ({"scope": "https://www.googleapis.com/auth/drive"}, "invalid_scope", "Invalid OAuth scope"),
    ],
)
async def test_assertion_claims_are_checked(
    fake: FakeVertex, claims: dict[str, Any], error: str | None, description: str | None
) -> None:
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": _assertion(fake, **claims)}
    async with aiohttp.ClientSession() as http, http.post(fake.token_uri, data=form) as resp:
        answer = await resp.json()
    if error is None:
        assert resp.status == 200 and answer["token_type"] == "Bearer" and answer["access_token"] in fake.tokens
    else:
        assert resp.status == 400 and answer["error"] == error and description in answer["error_description"]


async def test_a_key_the_fake_did_not_issue_is_refused(fake: FakeVertex) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    credentials = _credentials({**fake.service_account_info(), "private_key": other})
    with pytest.raises(google.auth.exceptions.RefreshError, match="Invalid JWT Signature"):
        await asyncio.to_thread(_refresh, credentials)


async def test_token_endpoint_errors_and_faults(fake: FakeVertex) -> None:
    fake.add_fault(Fault(status=503))  # faults are for the API: the token endpoint ignores them
    credentials = _credentials(fake.service_account_info())
    await asyncio.to_thread(_refresh, credentials)
    assert fake.token_grants == 1 and len(fake.faults) == 1
    fake.token_error = (400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        await asyncio.to_thread(_refresh, _credentials(fake.service_account_info()))


async def test_api_calls_need_an_issued_unexpired_token(fake: FakeVertex) -> None:
    url = f"{fake.url}{ROOT}/google/models/{GEMINI}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer ya29.made-up"}, {"Authorization": f"Bearer {fake.issue_token(-1)}"}):
            async with http.post(url, json=body, headers=headers) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 401 and error["status"] == "UNAUTHENTICATED"
        token = fake.issue_token()
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
        fake.revoke_tokens()
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 401


# -- Gemini through google-genai (Vertex mode) ----------------------------------------------------


async def test_gemini_generate_content(fake: FakeVertex, gemini: genai.Client) -> None:
    result = await gemini.aio.models.generate_content(
        model=GEMINI, contents=HELLO, config=types.GenerateContentConfig(system_instruction="be brief", temperature=0.2)
    )
    assert result.text == f"Fake reply to: {HELLO}"
    assert result.candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    usage = result.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count == 9
    sent = fake.requests[-1]
    # the SDK's default Vertex API version is v1beta1; the resource path is the same
    assert sent.path == f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{GEMINI}:generateContent"
    assert sent.headers["authorization"].removeprefix("Bearer ") in fake.tokens
    assert fake.token_grants == 1


async def test_gemini_stream_and_token_reuse(fake: FakeVertex, gemini: genai.Client) -> None:
    plain = await gemini.aio.models.generate_content(model=GEMINI, contents=HELLO)
    chunks = [c async for c in await gemini.aio.models.generate_content_stream(model=GEMINI, contents=HELLO)]
    assert len(chunks) == 5 and "".join(c.text or "" for c in chunks) == plain.text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert fake.requests[-1].query == {"alt": "sse"}
    assert fake.token_grants == 1  # the SDK reused its token


async def test_gemini_function_call_round_trip(gemini: genai.Client) -> None:
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])], automatic_function_calling=NO_AFC)
    first = await gemini.aio.models.generate_content(model=GEMINI, contents="weather in Paris?", config=config)
    calls = first.function_calls or []
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].args == {"city": "text"}
    history = [
        types.Content(role="user", parts=[types.Part(text="weather in Paris?")]),
        first.candidates[0].content,  # type: ignore[index]
        types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"content": "sunny"})]),
    ]
    second = await gemini.aio.models.generate_content(model=GEMINI, contents=history, config=config)  # type: ignore[arg-type]
    assert second.text == "Tool result: sunny"


async def test_text_embeddings_predict(fake: FakeVertex, gemini: genai.Client) -> None:
    result = await gemini.aio.models.embed_content(
        model=EMBED, contents=["alpha", "beta gamma"], config=types.EmbedContentConfig(output_dimensionality=16)
    )
    vectors = result.embeddings or []
    assert [len(e.values or ()) for e in vectors] == [16, 16] and vectors[0].values != vectors[1].values
    assert [e.statistics.token_count for e in vectors] == [1, 2]  # type: ignore[union-attr]
    sent = fake.requests[-1]
    assert sent.path.endswith(f"/publishers/google/models/{EMBED}:predict")
    assert sent.json["instances"][0]["content"] == "alpha"


async def test_gemini_embedding_takes_one_instance_per_request(fake: FakeVertex) -> None:
    url = f"{fake.url}{ROOT}/google/models/gemini-embedding-001:predict"
    headers = {"Authorization": f"Bearer {fake.issue_token()}"}
    body = {"instances": [{"content": "a"}, {"content": "b"}]}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("status", "exc", "canonical"),
    [(400, errors.ClientError, "INVALID_ARGUMENT"), (403, errors.ClientError, "PERMISSION_DENIED"),
     (404, errors.ClientError, "NOT_FOUND"), (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
     (500, errors.ServerError, "INTERNAL"), (503, errors.ServerError, "UNAVAILABLE")],
)
async def test_gemini_status_faults(
    fake: FakeVertex, gemini: genai.Client, status: int, exc: type[errors.APIError], canonical: str
) -> None:
    fake.add_fault(Fault(status=status))
    with pytest.raises(exc) as info:
        await gemini.aio.models.generate_content(model=GEMINI, contents="hi")
    assert info.value.code == status and info.value.status == canonical
    assert (await gemini.aio.models.generate_content(model=GEMINI, contents="hi")).text == "Fake reply to: hi"


async def test_revoked_token_is_a_401_for_the_sdk(fake: FakeVertex, gemini: genai.Client) -> None:
    await gemini.aio.models.generate_content(model=GEMINI, contents="hi")
    fake.revoke_tokens()
    with pytest.raises(errors.ClientError) as info:
        await gemini.aio.models.generate_content(model=GEMINI, contents="hi")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"


async def test_wrong_project_is_denied(fake: FakeVertex) -> None:
    client = genai.Client(
        vertexai=True, project="someone-else", location=LOCATION, credentials=_credentials(fake.service_account_info()),
        http_options=types.HttpOptions(base_url=fake.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    try:
        with pytest.raises(errors.ClientError) as info:
            await client.aio.models.generate_content(model=GEMINI, contents="hi")
    finally:
        await client.aio.aclose()
    assert info.value.code == 403 and "someone-else" in (info.value.message or "")


async def _drain_gemini(client: genai.Client) -> str:
    text = ""
    async for chunk in await client.aio.models.generate_content_stream(model=GEMINI, contents="a longer answer to break"):
        text += chunk.text or ""
    return text


async def test_gemini_stream_faults(fake: FakeVertex, gemini: genai.Client) -> None:
    fake.add_fault(Fault(cut_after=2))
    with pytest.raises(aiohttp.ClientPayloadError):
        await _drain_gemini(gemini)
    fake.add_fault(Fault(malformed_at=1))
    with pytest.raises(errors.UnknownApiResponseError):
        await _drain_gemini(gemini)
    fake.add_fault(Fault(error_event_at=1))
    with pytest.raises(errors.ServerError):
        await _drain_gemini(gemini)


# -- Claude through anthropic.AsyncAnthropicVertex ------------------------------------------------


async def test_claude_message(fake: FakeVertex, claude: anthropic.AsyncAnthropicVertex) -> None:
    message = await claude.messages.create(
        model=CLAUDE, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": HELLO}]
    )
    assert message.content[0].type == "text" and message.content[0].text == f"Fake reply to: {HELLO}"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 9
    sent = fake.requests[-1]
    assert sent.path == f"{ROOT}/anthropic/models/{CLAUDE}:rawPredict"
    # the SDK names the model in the URL only, and sends its own dated API version
    assert "model" not in sent.json and sent.json["anthropic_version"] == anthropic._constants.ANTHROPIC_API_VERSION


async def test_claude_stream_and_tools(fake: FakeVertex, claude: anthropic.AsyncAnthropicVertex) -> None:
    async with claude.messages.stream(model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": HELLO}]) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text == f"Fake reply to: {HELLO}"
    assert fake.requests[-1].path.endswith(":streamRawPredict") and fake.requests[-1].json["stream"] is True
    message = await claude.messages.create(
        model=CLAUDE, max_tokens=100, tools=[CLAUDE_TOOL], messages=[{"role": "user", "content": "weather?"}]
    )
    assert message.stop_reason == "tool_use"
    call = message.content[0]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "text"}


@pytest.mark.parametrize(
    ("status", "exc"),
    [(400, anthropic.BadRequestError), (401, anthropic.AuthenticationError), (403, anthropic.PermissionDeniedError),
     (404, anthropic.NotFoundError), (429, anthropic.RateLimitError), (500, anthropic.InternalServerError),
     (529, anthropic.InternalServerError)],
)
async def test_claude_status_faults(
    fake: FakeVertex, claude: anthropic.AsyncAnthropicVertex, status: int, exc: type[anthropic.APIStatusError]
) -> None:
    fake.add_fault(Fault(status=status))
    with pytest.raises(exc) as info:
        await claude.messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status


async def test_claude_validation_errors_are_anthropic_shaped(fake: FakeVertex) -> None:
    url = f"{fake.url}{ROOT}/anthropic/models/{CLAUDE}:rawPredict"
    headers = {"Authorization": f"Bearer {fake.issue_token()}"}
    async with aiohttp.ClientSession() as http:
        body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}  # no anthropic_version
        async with http.post(url, json=body, headers=headers) as resp:
            error = await resp.json()
            assert resp.status == 400 and error["type"] == "error" and "anthropic_version" in error["error"]["message"]


async def _drain_claude(client: anthropic.AsyncAnthropicVertex) -> None:
    async with client.messages.stream(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "a longer answer to break"}]
    ) as stream:
        async for _ in stream.text_stream:
            pass


async def test_claude_stream_faults(fake: FakeVertex, claude: anthropic.AsyncAnthropicVertex) -> None:
    fake.add_fault(Fault(cut_after=2))
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        await _drain_claude(claude)
    fake.add_fault(Fault(malformed_at=1))
    with pytest.raises(json.JSONDecodeError):
        await _drain_claude(claude)
    fake.add_fault(Fault(error_event_at=1))
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        await _drain_claude(claude)


async def test_claude_count_tokens(fake: FakeVertex, claude: anthropic.AsyncAnthropicVertex) -> None:
    counted = await claude.messages.count_tokens(
        model=CLAUDE, system="Be brief.", messages=[{"role": "user", "content": "one two three four"}]
    )
    assert counted.input_tokens > 0
    longer = await claude.messages.count_tokens(
        model=CLAUDE, system="Be brief.", messages=[{"role": "user", "content": "one two three four " * 50}]
    )
    assert longer.input_tokens > counted.input_tokens
    sent = fake.requests[-1]
    # one URL for every Claude model: the body names it
    assert sent.path == f"{ROOT}/anthropic/models/count-tokens:rawPredict" and sent.json["model"] == CLAUDE
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.count_tokens(model=CLAUDE, messages=[])
