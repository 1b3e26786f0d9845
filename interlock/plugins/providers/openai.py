"""OpenAI: the reference wire format, passed through as-is.

OpenAI serves the Responses API too, so requests from the Responses door are passed
through to ``POST /v1/responses`` untranslated (``responses = false`` in the provider
table sends them translated to Chat Completions instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interlock.provider_api import OpenAICompatible, hookimpl, rename_max_tokens


class OpenAI(OpenAICompatible):
    type_name = "openai"
    display_name = "OpenAI"
    env_key = "OPENAI_API_KEY"
    env_base_url = "OPENAI_BASE_URL"
    default_base_url = "https://api.openai.com/v1"
    option_keys = frozenset({"organization", "project"})
    native_protocols = frozenset({"responses"})

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if org := self.settings.options.get("organization"):
            headers["OpenAI-Organization"] = str(org)
        if project := self.settings.options.get("project"):
            headers["OpenAI-Project"] = str(project)
        return headers

    def prepare(self, body: dict[str, Any], model: str, stream: bool) -> None:
        rename_max_tokens(body, model)


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(OpenAI)
