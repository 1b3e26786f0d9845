"""Built-in model-name auto-detection: the pattern table behind bare model names.

First match wins; the table is documented in CONTRIBUTING.md. Names that
several providers serve (``llama-3.3-70b``, ``meta-llama/...``, ``gpt-oss-120b``)
deliberately match nothing: interlock never guesses silently, the client names
the provider with ``instance/model`` or the operator defines a route.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from interlock import hookimpl

_BEDROCK_VENDORS = "anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer|twelvelabs|stability"

#: (pattern, provider type), tried in order, case-insensitive
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), t)
    for p, t in (
        (r"^arn:aws:bedrock:", "bedrock"),
        (rf"^(us|eu|apac|global|jp|au|ca|us-gov)\.({_BEDROCK_VENDORS})\.", "bedrock"),
        (rf"^({_BEDROCK_VENDORS})\.[a-z0-9._-]+(-v\d+(:\d+)?|:\d+)$", "bedrock"),
        (r"^accounts/[^/]+/(models|routers|deployedModels)/", "fireworks"),
        (r"^[a-z0-9-]+/[a-z0-9._-]+:[0-9a-f]{64}$", "replicate"),
        (
            r"^(gpt-(?!oss)|chatgpt-|o\d(-|$)|ft:gpt-|text-embedding-3|text-embedding-ada|davinci|babbage"
            r"|gpt-image|dall-e|whisper|tts-|omni-moderation|codex-|computer-use)",
            "openai",
        ),
        (r"^claude-.*@\d{8}$", "vertex"),
        (r"^claude-", "anthropic"),
        (r"^(gemini-|gemma-|learnlm-|text-embedding-00[45]|text-multilingual-embedding)", "gemini"),
        (r"^(mistral-|open-mistral|open-mixtral|mixtral-|codestral|ministral|pixtral|magistral|devstral|voxtral)", "mistral"),
        (r"^deepseek-(chat|reasoner|v\d)[^:]*$", "deepseek"),
        (r"^grok-", "xai"),
        (r"^(sonar|r1-1776)", "perplexity"),
        (r"^(command|c4ai-|embed-(english|multilingual|v\d)|rerank-)", "cohere"),
        (r"-(versatile|instant)$", "groq"),
        (r"^[a-z0-9._-]+:[a-z0-9._-]+$", "ollama"),
    )
)


def detect(model: str) -> str | None:
    """The provider type whose naming convention ``model`` follows, if any."""
    for pattern, ptype in PATTERNS:
        if pattern.search(model):
            return ptype
    return None


@hookimpl(trylast=True)
def resolve_model(model: str, provider_types: Sequence[str]) -> str | None:
    return detect(model)
