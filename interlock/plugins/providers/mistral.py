"""Mistral: OpenAI-shaped, with renamed parameters and strict tool-call ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from interlock.provider_api import OpenAICompatible, hookimpl

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def tool_call_id(original: str) -> str:
    """Mistral accepts only 9 alphanumerics; map other providers' ids deterministically."""
    if len(original) == 9 and original.isalnum():
        return original
    digest = hashlib.sha256(original.encode()).digest()
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:9])


class Mistral(OpenAICompatible):
    type_name = "mistral"
    display_name = "Mistral AI"
    env_key = "MISTRAL_API_KEY"
    default_base_url = "https://api.mistral.ai/v1"
    # Mistral rejects unknown fields; it reports stream usage in the last chunk anyway
    stream_usage_option = False
    finish_reasons = {"model_length": "length", "error": "stop"}

    def prepare(self, body: dict[str, Any], model: str, stream: bool) -> None:
        if "seed" in body:
            body["random_seed"] = body.pop("seed")
        if "max_completion_tokens" in body:
            limit = body.pop("max_completion_tokens")
            body.setdefault("max_tokens", limit)
        if body.get("tool_choice") == "required":
            body["tool_choice"] = "any"
        messages = []
        for msg in body.get("messages") or ():
            if isinstance(msg, dict) and (msg.get("tool_calls") or msg.get("tool_call_id")):
                msg = dict(msg)
                if msg.get("tool_calls"):
                    msg["tool_calls"] = [
                        {**tc, "id": tool_call_id(str(tc.get("id", "")))} if isinstance(tc, dict) else tc
                        for tc in msg["tool_calls"]
                    ]
                if msg.get("tool_call_id"):
                    msg["tool_call_id"] = tool_call_id(str(msg["tool_call_id"]))
            messages.append(msg)
        if "messages" in body:
            body["messages"] = messages



@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Mistral)
