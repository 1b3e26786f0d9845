"""xAI (Grok): OpenAI-shaped, but ``completion_tokens`` excludes reasoning tokens.

interlock reports usage in OpenAI semantics (completion includes reasoning),
so the reasoning tokens are added back in responses and usage chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interlock.provider_api import OpenAICompatible, hookimpl


def _fold_reasoning(usage: Any) -> bool:
    if not isinstance(usage, dict):
        return False
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    if not reasoning:
        return False
    usage["completion_tokens"] = int(usage.get("completion_tokens") or 0) + int(reasoning)
    usage["total_tokens"] = int(usage.get("prompt_tokens") or 0) + usage["completion_tokens"]
    return True


class XAI(OpenAICompatible):
    type_name = "xai"
    display_name = "xAI"
    env_key = "XAI_API_KEY"
    default_base_url = "https://api.x.ai/v1"

    def fix_response(self, body: dict[str, Any]) -> None:
        super().fix_response(body)
        _fold_reasoning(body.get("usage"))

    def fix_chunk(self, chunk: dict[str, Any]) -> bool:
        return super().fix_chunk(chunk) | _fold_reasoning(chunk.get("usage"))


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(XAI)
