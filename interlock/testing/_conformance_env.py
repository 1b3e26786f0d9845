"""The conformance suite's case description and per-test environment (shared by its door and chat parts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai

from interlock.testing._base import FakeServer
from interlock.testing.fake_openai import FakeOpenAI
from interlock.testing.gateway import RunningGateway

#: what a provider can be asked to do; a case lists the ones its API offers
FEATURES = frozenset({"system", "images", "tools", "json", "stream_usage", "embeddings"})


@dataclass(frozen=True)
class ProviderCase:
    """How to run the suite against one provider."""

    #: id used in test names
    name: str
    #: a fresh, unstarted fake of the provider's wire protocol
    fake: Callable[[], FakeServer]
    #: the ``[providers.NAME]`` table(s) pointing at the started fake, with this attempt timeout
    provider_toml: Callable[[FakeServer, float], str]
    #: the model the client asks for (usually ``instance/model``)
    model: str
    embeddings_model: str | None = None
    features: frozenset[str] = FEATURES
    #: native error bodies: failure class -> (status, body); "context_length" is required,
    #: "content_policy" where the provider reports it as an HTTP error; any class's status
    #: (e.g. Anthropic's 529 for "overloaded") can be overridden here
    errors: Mapping[str, tuple[int, Any]] = field(default_factory=dict)
    #: environment the gateway sees (keys, credentials); the real environment never leaks in
    environ: Mapping[str, str] = field(default_factory=dict)
    extra_plugins: tuple[tuple[str, object], ...] = ()


@dataclass
class ConformanceEnv:
    """A started fake, a healthy backup, and a gateway routing ``conformance`` to both."""

    case: ProviderCase
    fake: FakeServer
    backup: FakeOpenAI
    gw: RunningGateway

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self.gw.client
