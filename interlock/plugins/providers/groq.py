"""Groq: OpenAI-compatible; stream usage may also arrive under ``x_groq.usage``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interlock.provider_api import OpenAICompatible, Usage, hookimpl


class Groq(OpenAICompatible):
    type_name = "groq"
    display_name = "Groq"
    env_key = "GROQ_API_KEY"
    default_base_url = "https://api.groq.com/openai/v1"
    supports_embeddings = False

    def extract_usage(self, obj: dict[str, Any]) -> Usage | None:
        usage = obj.get("usage")
        if usage is None and isinstance(obj.get("x_groq"), dict):
            usage = obj["x_groq"].get("usage")
        return Usage.from_openai(usage)


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Groq)
