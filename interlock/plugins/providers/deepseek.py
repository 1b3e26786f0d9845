"""DeepSeek: OpenAI-shaped; ``reasoning_content`` is kept in responses and streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interlock.provider_api import OpenAICompatible, hookimpl


class DeepSeek(OpenAICompatible):
    type_name = "deepseek"
    display_name = "DeepSeek"
    env_key = "DEEPSEEK_API_KEY"
    default_base_url = "https://api.deepseek.com/v1"
    supports_embeddings = False
    # "generation interrupted for lack of resources": the answer is cut short
    finish_reasons = {"insufficient_system_resource": "length"}

    def prepare(self, body: dict[str, Any], model: str, stream: bool) -> None:
        # the API rejects reasoning_content sent back in earlier assistant turns
        messages = body.get("messages")
        if isinstance(messages, list) and any(isinstance(m, dict) and "reasoning_content" in m for m in messages):
            body["messages"] = [
                {k: v for k, v in m.items() if k != "reasoning_content"} if isinstance(m, dict) else m for m in messages
            ]



@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(DeepSeek)
