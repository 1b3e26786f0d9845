"""OpenRouter: OpenAI-shaped, model ids are ``vendor/model``; attribution headers optional.

Errors that happen after generation started arrive as in-band ``error``
events (handled by the base); ``: OPENROUTER PROCESSING`` comments are skipped
by the SSE reader; ``reasoning`` fields pass through.
"""

from __future__ import annotations

from collections.abc import Callable

from interlock.provider_api import OpenAICompatible, hookimpl


class OpenRouter(OpenAICompatible):
    type_name = "openrouter"
    display_name = "OpenRouter"
    env_key = "OPENROUTER_API_KEY"
    default_base_url = "https://openrouter.ai/api/v1"
    option_keys = frozenset({"app_url", "app_name"})

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if url := self.settings.options.get("app_url"):
            headers["HTTP-Referer"] = str(url)
        if name := self.settings.options.get("app_name"):
            headers["X-Title"] = str(name)
        return headers


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(OpenRouter)
