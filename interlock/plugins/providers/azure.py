"""Azure OpenAI: deployment-scoped URLs, ``api-version``, and the ``api-key`` header.

``base_url`` is the resource endpoint (``https://NAME.openai.azure.com``).
The model a client asks for is mapped to a deployment through the
``deployments`` table (default: a deployment named like the model). With
``api_version = "v1"`` the newer unversioned ``/openai/v1`` API is used, where
the deployment goes in the body's ``model``. Azure serves the Responses API only on
that v1 surface (``POST {base_url}/openai/v1/responses``, the deployment in
``model``), so Responses requests are passed through natively with ``api_version =
"v1"`` and translated to Chat Completions otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from interlock.provider_api import (
    EmbeddingsResult,
    OpenAICompatible,
    ProviderSettings,
    RequestContext,
    hookimpl,
    rename_max_tokens,
)

DEFAULT_API_VERSION = "2024-10-21"


class Azure(OpenAICompatible):
    type_name = "azure"
    display_name = "Azure OpenAI"
    env_key = "AZURE_OPENAI_API_KEY"
    env_base_url = "AZURE_OPENAI_ENDPOINT"
    requires_base_url = True
    option_keys = frozenset({"api_version", "deployments"})

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        problems = super().validate(settings)
        deployments = settings.options.get("deployments", {})
        if not isinstance(deployments, dict) or not all(isinstance(v, str) for v in deployments.values()):
            problems.append(("deployments", "must be a table mapping model names to deployment names"))
        if not isinstance(settings.options.get("api_version", ""), str):
            problems.append(("api_version", "must be a string such as \"2024-10-21\" or \"v1\""))
        elif settings.options.get("responses") is True and settings.options.get("api_version") != "v1":
            problems.append(("responses", "Azure serves the Responses API only with api_version = \"v1\""))
        return problems

    def speaks(self, protocol: str, model: str) -> bool:
        if protocol == "responses":
            return self.api_version == "v1" and self.settings.options.get("responses", True) is True
        return super().speaks(protocol, model)

    def prepare_native(self, body: dict[str, Any], model: str) -> None:
        body["model"] = self.deployment(model)

    @property
    def api_version(self) -> str:
        return str(self.settings.options.get("api_version") or DEFAULT_API_VERSION)

    def deployment(self, model: str) -> str:
        return str(self.settings.options.get("deployments", {}).get(model, model))

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["api-key"] = self.settings.api_key.get()
        headers.update(self.settings.headers)
        return headers

    def url(self, path: str, model: str) -> str:
        base = self.base_url.removesuffix("/openai").removesuffix("/openai/v1")
        if self.api_version == "v1":
            return f"{base}/openai/v1{path}"
        return f"{base}/openai/deployments/{quote(self.deployment(model), safe='')}{path}?api-version={self.api_version}"

    def prepare(self, body: dict[str, Any], model: str, stream: bool) -> None:
        rename_max_tokens(body, model)  # the same reasoning models behind a deployment
        body["model"] = self.deployment(model)

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        # the v1 API names the deployment in the body's model (the classic API names it in the URL)
        return await super().embeddings(ctx, self.deployment(model) if self.api_version == "v1" else model)


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    register(Azure)
