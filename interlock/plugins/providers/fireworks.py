"""Fireworks AI: OpenAI-compatible inference API; model ids are ``accounts/<acct>/models/<name>``."""

from __future__ import annotations

from collections.abc import Callable

from interlock.provider_api import OpenAICompatible, hookimpl


class Fireworks(OpenAICompatible):
    type_name = "fireworks"
    display_name = "Fireworks AI"
    env_key = "FIREWORKS_API_KEY"
    env_key_aliases = ("FIREWORKS_AI_API_KEY",)
    default_base_url = "https://api.fireworks.ai/inference/v1"


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Fireworks)
