"""Together AI: OpenAI-compatible; its ``eos`` finish reason becomes ``stop``."""

from __future__ import annotations

from collections.abc import Callable

from interlock.provider_api import OpenAICompatible, hookimpl


class Together(OpenAICompatible):
    type_name = "together"
    display_name = "Together AI"
    env_key = "TOGETHER_API_KEY"
    env_key_aliases = ("TOGETHERAI_API_KEY",)
    default_base_url = "https://api.together.xyz/v1"
    finish_reasons = {"eos": "stop"}



@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Together)
