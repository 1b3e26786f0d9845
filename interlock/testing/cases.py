"""Conformance cases for every built-in provider, each against the fake of its wire protocol."""

from __future__ import annotations

from interlock.testing import fake_anthropic, fake_cohere, fake_gemini, fake_ollama, fake_replicate
from interlock.testing import fake_bedrock, fake_vertex
from interlock.testing.conformance import FEATURES, ProviderCase
from interlock.testing.fake_openai import FakeOpenAI
from interlock.testing.gateway import provider_table

OPENAI_CONTEXT = (
    400,
    {
        "error": {
            "message": "This model's maximum context length is 128000 tokens. However, your messages resulted "
            "in 130412 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
)
AZURE_CONTENT_FILTER = (
    400,
    {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
        }
    },
)
KEY = "sk-conformance-0123456789"


def _openai_family(
    type_name: str, *, features: frozenset[str] = FEATURES, always_stream_usage: bool = False, **extra: object
) -> ProviderCase:
    return ProviderCase(
        name=type_name,
        fake=lambda: FakeOpenAI(
            models=["conf-model", "conf-embed"], api_key=KEY, always_stream_usage=always_stream_usage
        ),
        provider_toml=lambda fake, timeout: provider_table(
            type_name,
            type=type_name,
            # Azure's base URL is the resource root; the others include the /v1 API prefix
            base_url=fake.url if type_name == "azure" else fake.base_url,
            api_key=KEY,
            timeout=timeout,
            **extra,
        ),
        model=f"{type_name}/conf-model",
        embeddings_model=f"{type_name}/conf-embed" if "embeddings" in features else None,
        features=features,
        errors={"context_length": OPENAI_CONTEXT, "content_policy": AZURE_CONTENT_FILTER},
    )


def builtin_cases() -> list[ProviderCase]:
    """One case per built-in provider type."""
    no_embeddings = FEATURES - {"embeddings"}
    return [
        _openai_family("openai"),
        _openai_family("azure", deployments={"conf-model": "conf-model"}),
        _openai_family("mistral", always_stream_usage=True),
        _openai_family("deepseek", features=no_embeddings),
        _openai_family("xai"),
        _openai_family("perplexity", features=no_embeddings - {"tools"}),
        _openai_family("openrouter"),
        _openai_family("gpustack"),
        _openai_family("groq", features=no_embeddings),
        _openai_family("together"),
        _openai_family("fireworks"),
        fake_anthropic.conformance_case(),
        fake_ollama.conformance_case(),
        fake_cohere.conformance_case(),
        fake_gemini.conformance_case(),
        fake_replicate.conformance_case(),
        *fake_vertex.conformance_cases(),
        fake_bedrock.conformance_case(),
    ]
