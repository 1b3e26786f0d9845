"""Perplexity (Sonar): OpenAI-shaped chat at the API root, no ``/v1``.

``citations`` and ``search_results`` are top-level response fields; they pass
through untouched in responses and stream chunks.
"""

from __future__ import annotations

from collections.abc import Callable

from interlock.provider_api import OpenAICompatible, hookimpl


class Perplexity(OpenAICompatible):
    type_name = "perplexity"
    display_name = "Perplexity"
    env_key = "PERPLEXITY_API_KEY"
    env_key_aliases = ("PPLX_API_KEY",)
    default_base_url = "https://api.perplexity.ai"
    supports_embeddings = False


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Perplexity)
