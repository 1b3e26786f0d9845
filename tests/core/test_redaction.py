"""Scrubbing keeps secrets out and leaves ordinary words alone."""

from __future__ import annotations

import logging

import pytest

from interlock.core.logs import RedactingFilter
from interlock.core.redaction import scrub, secrets_worth_scrubbing

KEY = "sk-live-0123456789abcdefghij"


def test_configured_secrets_are_masked_and_placeholders_are_not() -> None:
    secrets = secrets_worth_scrubbing([KEY, "ollama", "none"])
    assert secrets == [KEY]
    assert scrub(f"invalid key {KEY} given", secrets) == "invalid key **** given"
    # the placeholder key of a local Ollama is a word, not a secret
    assert scrub("model 'ollama/llama3' not found, try pulling it first", secrets) == (
        "model 'ollama/llama3' not found, try pulling it first"
    )


@pytest.mark.parametrize(("text", "expected"), [
    ("echo: Authorization: Bearer abc123", "echo: Authorization: Bearer ****"),
    ('{"x-api-key": "shorty"}', '{"x-api-key": "****"}'),
    ("GET https://generativelanguage.googleapis.com/v1/models?key=AIzaShort&alt=sse failed",
     "GET https://generativelanguage.googleapis.com/v1/models?key=****&alt=sse failed"),
    ("api-key=tiny", "api-key=****"),
    ("no credentials here: just a message", "no credentials here: just a message"),
])
def test_structured_credentials_are_masked_whatever_their_length(text: str, expected: str) -> None:
    assert scrub(text, []) == expected


def test_log_records_are_scrubbed_by_both_rules() -> None:
    redactor = RedactingFilter(["ollama", KEY])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "upstream said %s with %s for ollama",
                               (KEY, "Authorization: Bearer short"), None)
    redactor.filter(record)
    assert record.getMessage() == "upstream said **** with Authorization: Bearer **** for ollama"


async def test_a_short_placeholder_key_does_not_mangle_an_upstream_error(make_gateway: object) -> None:
    import openai

    from interlock.testing import FakeOpenAI
    from interlock.testing._base import Fault

    async with FakeOpenAI(models=["llama3"]) as fake:
        gw = await make_gateway(  # type: ignore[operator]
            f'[providers.local]\ntype = "openai"\nbase_url = "{fake.base_url}"\napi_key = "ollama"\n'
        )
        fake.add_fault(Fault(status=400, body={"error": {"message": "model 'llama3' not found, try: ollama pull llama3",
                                                       "type": "invalid_request_error"}}))
        with pytest.raises(openai.APIStatusError) as info:
            await gw.client.chat.completions.create(model="local/llama3", messages=[{"role": "user", "content": "hi"}])
        assert "ollama pull llama3" in info.value.message and "****" not in info.value.message
