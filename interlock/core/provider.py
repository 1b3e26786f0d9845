"""What a provider plugin implements, and the settings and HTTP pool it is given.

A provider *type* (``openai``, ``mistral``, a third party's ``acme``) is a
:class:`Provider` subclass registered through the ``register_providers`` hook.
Config creates *instances* of it (``[providers.openai-eu] type = "openai"``);
each instance gets its own :class:`ProviderSettings` and shares the app's one
HTTP connection pool.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from interlock.core.types import (
    ChatResult,
    Chunk,
    Classification,
    EmbeddingsResult,
    NativeResult,
    RequestContext,
    UpstreamError,
)
from interlock.version import __version__

#: what upstream requests say they come from (a provider's ``headers`` config may override it)
USER_AGENT = f"interlock/{__version__}"


class Secret:
    """A credential that never shows itself in ``repr``, logs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The credential itself, for the one place that sends it upstream."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(slots=True)
class ProviderSettings:
    """One ``[providers.NAME]`` table after validation and ``${ENV}`` expansion."""

    name: str
    type: str
    base_url: str | None = None
    api_key: Secret | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 600.0  # seconds for a whole attempt; routes may set tighter ones
    connect_timeout: float = 10.0
    models: list[str] = field(default_factory=list)  # listed in /v1/models
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific keys
    #: the environment the gateway resolves credentials from (None: the process environment);
    #: providers whose SDK reads a credential chain from env vars (AWS) use it, so tests stay isolated
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The upstream connection pool's bounds (``[server] upstream_*``).

    ``connections_per_host``: at most this many connections to one upstream host and port at
    once; a request that finds them all busy waits for one to be released, within its attempt's
    timeouts (the provider's ``timeout`` and the route's ``timeout``/``total_timeout``).
    ``keepalive_timeout``: an idle pooled connection is closed after this many seconds, so a
    burst's connections do not outlive it by long.
    """

    connections_per_host: int = 1024
    keepalive_timeout: float = 15.0


class HttpPool:
    """The app's single shared ``aiohttp.ClientSession``.

    Created on startup inside the running loop (a session must not be built at
    import time) and closed on shutdown. Providers hold the pool, not the
    session, so they can be constructed before the loop runs.
    """

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self.settings = settings or PoolSettings()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Create the session (on app startup, inside the running loop); a second call does nothing."""
        if self._session is None:
            s = self.settings
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=s.connections_per_host, keepalive_timeout=s.keepalive_timeout,
                ttl_dns_cache=300,
            )
            # auto_decompress stays on; no cookie jar: a gateway must not carry state between tenants.
            # The gateway names itself instead of aiohttp's default User-Agent: a default header,
            # not skip_auto_headers, which costs every request a merged copy of its headers.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": USER_AGENT}
            )

    async def close(self) -> None:
        """Close the session and its connections (on app shutdown)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session; raises RuntimeError before the app has started."""
        if self._session is None:
            raise RuntimeError("the HTTP pool is not started (the app has not started up)")
        return self._session


class Provider:
    """Base class of every provider type.

    Subclasses set the class attributes and implement the async methods. They
    raise :class:`~interlock.core.types.UpstreamError` for every upstream
    failure (HTTP status, connection, timeout, broken stream) so the router can
    classify it; they never put credentials into messages.
    """

    #: name used in config (``type = "openai"``) and in ``instance/model``
    type_name: ClassVar[str] = ""
    #: human-readable name
    display_name: ClassVar[str] = ""
    #: the standard env var holding the key; embedded defaults enable the provider when it is set
    env_key: ClassVar[str | None] = None
    #: alternative env vars accepted for the key
    env_key_aliases: ClassVar[tuple[str, ...]] = ()
    #: env var that overrides the base URL (e.g. ``OPENAI_BASE_URL``)
    env_base_url: ClassVar[str | None] = None
    default_base_url: ClassVar[str | None] = None
    requires_key: ClassVar[bool] = True
    requires_base_url: ClassVar[bool] = False
    supports_embeddings: ClassVar[bool] = True
    #: option keys this provider understands (others are config errors)
    option_keys: ClassVar[frozenset[str]] = frozenset()
    #: client protocols besides Chat Completions this provider type takes natively ("responses",
    #: "messages"): a request that came in by such a door is passed through (:meth:`native`)
    #: instead of translated; an instance may narrow or widen it (:meth:`speaks`)
    native_protocols: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: ProviderSettings, http: HttpPool) -> None:
        self.settings = settings
        self.name = settings.name
        self.http = http
        self.base_url = (settings.base_url or self.default_base_url or "").rstrip("/")

    # -- config ---------------------------------------------------------- #

    @classmethod
    def key_from_env(cls, environ: Mapping[str, str] = os.environ) -> str | None:
        """The key from the standard env var (or an accepted alias), if set."""
        for var in (cls.env_key, *cls.env_key_aliases):
            if var and environ.get(var):
                return environ[var]
        return None

    @classmethod
    def enabled_by_env(cls, environ: Mapping[str, str] = os.environ) -> bool:
        """Whether embedded defaults enable this provider from the environment alone.

        By default a keyed provider is enabled by its key variable and a keyless one
        (a local server) by its base-URL variable; a provider configured some other
        way (Vertex AI's project) overrides this.
        """
        if cls.requires_key:
            return cls.key_from_env(environ) is not None
        return bool(cls.env_base_url and environ.get(cls.env_base_url))

    @classmethod
    def options_from_env(cls, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
        """Provider-specific options taken from standard env vars; a provider table's own values win."""
        return {}

    @classmethod
    def validate(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        """Check settings; return ``(key, problem)`` pairs relative to the provider table."""
        problems: list[tuple[str, str]] = []
        if cls.requires_key and not settings.api_key:
            hint = f" (or set {cls.env_key})" if cls.env_key else ""
            problems.append(("api_key", f"provider type {cls.type_name!r} needs an API key{hint}"))
        if cls.requires_base_url and not (settings.base_url or cls.default_base_url):
            hint = f" (or set {cls.env_base_url})" if cls.env_base_url else ""
            problems.append(("base_url", f"provider type {cls.type_name!r} needs a base_url{hint}"))
        for key in settings.options:
            if key not in cls.option_keys:
                known = ", ".join(sorted(cls.option_keys)) or "none"
                problems.append((key, f"unknown key for provider type {cls.type_name!r} (known options: {known})"))
        return problems

    # -- requests -------------------------------------------------------- #

    async def chat(self, ctx: RequestContext, model: str) -> ChatResult:
        """One non-streaming chat completion, returned in OpenAI shape."""
        raise NotImplementedError

    def chat_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        """A streaming chat completion as OpenAI chunks; always reports usage when the upstream can."""
        raise NotImplementedError

    async def embeddings(self, ctx: RequestContext, model: str) -> EmbeddingsResult:
        """Embeddings for ``ctx.body`` (an OpenAI embeddings request), returned in OpenAI shape."""
        raise NotImplementedError

    # -- client protocols passed through ---------------------------------- #

    def speaks(self, protocol: str, model: str) -> bool:
        """Whether ``model`` on this instance takes ``protocol`` requests natively.

        When it does, a request from that protocol's door is sent with :meth:`native` /
        :meth:`native_stream` (the client's own body, ``ctx.native``) and its answer goes
        back untranslated; otherwise with :meth:`chat` / :meth:`chat_stream` on the Chat
        Completions translation (``ctx.body``). Called once per attempt: keep it cheap.
        """
        return protocol in self.native_protocols

    async def native(self, ctx: RequestContext, model: str) -> NativeResult:
        """One non-streaming request in the client's protocol (``ctx.protocol``, body ``ctx.native``)."""
        raise NotImplementedError

    def native_stream(self, ctx: RequestContext, model: str) -> AsyncIterator[Chunk]:
        """A streaming request in the client's protocol, as chunks with ``native=True``.

        Each chunk's payload is one complete server-sent event of that protocol (``event:``
        and ``data:`` lines and the blank line), written to the client as it is; the chunk's
        ``content``, ``usage`` and ``finish_reason`` are filled in from the event so the
        router can commit, account and record the stream.
        """
        raise NotImplementedError

    # -- failures -------------------------------------------------------- #

    def classify(self, error: UpstreamError) -> Classification | None:
        """This provider's own verdict on one of its failures, or None for the generic rules.

        The router asks this first, for every failed attempt against this provider;
        only when it returns None is the ``classify_failure`` hook asked (third-party
        plugins, then the built-in classifier). Override it for statuses, codes or
        error names only this upstream uses; build the answer with
        :func:`interlock.core.failures.classify_as` or :func:`~interlock.core.failures.classify`.
        Called on the failure path only, synchronously: no I/O.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """What ``/health/providers`` and ``interlock check`` show: never the key."""
        return {
            "name": self.name,
            "type": self.type_name,
            "base_url": self.base_url,
            "key": "set" if self.settings.api_key else "not set",
            "models": list(self.settings.models),
        }
