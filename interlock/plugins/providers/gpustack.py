"""GPUStack: a self-hosted OpenAI-compatible server; the base URL is yours.

Set ``base_url`` (or ``GPUSTACK_BASE_URL``) to the server's OpenAI endpoint,
``http://host/v1`` on current releases, ``http://host/v1-openai`` on older ones.
"""

from __future__ import annotations

from collections.abc import Callable

from interlock.provider_api import OpenAICompatible, hookimpl


class GPUStack(OpenAICompatible):
    type_name = "gpustack"
    display_name = "GPUStack"
    env_key = "GPUSTACK_API_KEY"
    env_base_url = "GPUSTACK_BASE_URL"
    requires_base_url = True


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(GPUStack)
