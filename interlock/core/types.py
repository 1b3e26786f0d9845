"""Shared value types: what flows between the core, providers, strategies and exporters.

Kept deliberately small and dependency-free so plugins can import it cheaply.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal


class FailureClass(str, enum.Enum):
    """Every upstream outcome that is not a success falls into exactly one class."""

    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    STREAM_ERROR = "stream_error"  # malformed chunk, in-band error event, cut stream
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    NOT_FOUND = "not_found"
    QUOTA = "quota"  # billing / credits exhausted
    UNKNOWN = "unknown"


class Action(str, enum.Enum):
    """What the router does with a classified failure."""

    RETRY = "retry"  # try the same target again (after backoff)
    FALLBACK = "fallback"  # move on to the next target
    FAIL = "fail"  # stop: the request itself is at fault


@dataclass(frozen=True, slots=True)
class Classification:
    """The failure classifier's verdict on one upstream failure."""

    failure_class: FailureClass
    action: Action
    retry_after: float | None = None


class UpstreamError(Exception):
    """An attempt against a provider failed.

    ``kind`` says where it failed: ``http`` (non-2xx status), ``connection``,
    ``timeout``, ``stream`` (malformed chunk, in-band error event, broken stream),
    or ``internal`` (the provider plugin itself raised something unexpected).
    ``message`` must never contain a credential; providers build it from the
    upstream's error body, which does not echo keys.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: Literal["http", "connection", "timeout", "stream", "internal"],
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.code = code
        self.error_type = error_type
        # filled in by the router once classified
        self.classification: Classification | None = None
        self.provider: str | None = None
        self.model: str | None = None


_NO_DETAILS: dict[str, Any] = {}


@dataclass(slots=True)
class Usage:
    """What one upstream response reported using, in OpenAI semantics.

    ``prompt_tokens`` includes cache reads (``cached_tokens``), cache writes
    (``cache_write_tokens``, of which ``cache_write_1h_tokens`` were written for an hour
    rather than five minutes) and audio and image input; ``completion_tokens`` includes
    reasoning and audio output. ``web_search_requests`` counts the searches a server-side
    search tool ran (Anthropic's web search, Perplexity's search queries), billed per call.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    output_audio_tokens: int = 0
    web_search_requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage | None:
        """Read an OpenAI-shaped ``usage`` object; tolerant of missing fields."""
        if not usage:
            return None
        ptd = usage.get("prompt_tokens_details") or _NO_DETAILS
        ctd = usage.get("completion_tokens_details") or _NO_DETAILS
        out = cls(
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            int(ptd.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0),
            int(ctd.get("reasoning_tokens") or 0),
            int(ptd.get("cache_write_tokens") or 0),
        )
        # the rarer billed dimensions: read only when reported (the common answer has none of them)
        if audio_in := ptd.get("audio_tokens"):
            out.input_audio_tokens = int(audio_in)
        if audio_out := ctd.get("audio_tokens"):
            out.output_audio_tokens = int(audio_out)
        if searches := usage.get("num_search_queries"):  # Perplexity
            out.web_search_requests = int(searches)
        return out


@dataclass(slots=True)
class ChatResult:
    """A complete (non-stream) chat completion in OpenAI shape."""

    body: dict[str, Any]
    usage: Usage | None = None


@dataclass(slots=True)
class EmbeddingsResult:
    body: dict[str, Any]
    usage: Usage | None = None


@dataclass(slots=True)
class Chunk:
    """One OpenAI ``chat.completion.chunk`` ready for the client.

    ``payload`` is the encoded JSON; pass-through providers hand the upstream's
    bytes over untouched so the hot path does not re-encode.
    """

    payload: bytes
    content: bool = False  # carries content, reasoning, refusal or tool-call data
    usage: Usage | None = None
    usage_only: bool = False  # the ``choices: []`` usage chunk; dropped unless the client asked
    finish_reason: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    #: ``payload`` is already an encoded server-sent event of the client's own protocol (a target
    #: that speaks it natively): the door writes it through instead of translating a chat chunk
    native: bool = False
    #: usage the upstream reported before its final count (Anthropic's ``message_start``, Gemini's
    #: ``usageMetadata`` on every fragment): the attempt keeps it when the stream fails before the
    #: final ``usage``; doors never forward it
    usage_so_far: Usage | None = None


@dataclass(slots=True)
class NativeResult:
    """A complete answer in the client's own protocol, from a target that speaks it natively.

    ``body`` is the upstream's JSON (a Responses ``response`` object, an Anthropic ``message``),
    handed to the client as it is; ``usage`` is read from it in OpenAI semantics for accounting.
    """

    body: dict[str, Any]
    usage: Usage | None = None


@dataclass(slots=True)
class Target:
    """One place a request can go: a provider instance and the model name it is sent with."""

    provider: str  # provider instance name (the ``[providers.NAME]`` table)
    model: str
    weight: float = 1.0
    timeout: float | None = None  # per-target overrides of the route's settings
    latency_threshold: float | None = None
    context_window: int | None = None
    #: ``provider/model``: the name breakers, statistics and logs know the target by (built once:
    #: the hot path asks for it several times per request; a target's provider and model never change)
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = f"{self.provider}/{self.model}"


@dataclass(slots=True)
class Route:
    """A model name clients can ask for, expanded to concrete targets."""

    name: str
    targets: list[Target]
    strategy: str = "ordered"
    settings: Any = None  # RouteSettings (core.route_settings); None means the defaults
    implicit: bool = False  # a bare model resolved on the fly, not a configured route

    @property
    def options(self) -> dict[str, Any]:
        """Strategy-specific options (``strategy_options`` in config)."""
        return dict(self.settings.strategy_options) if self.settings is not None else {}


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """A ``select_route`` answer: the route to use and why (shown in the decision record)."""

    route: str
    reason: str | None = None  # e.g. "rule 'long-context': prompt_tokens >= 32000"


@dataclass(slots=True)
class RequestContext:
    """Everything the core knows about one client request while it is in flight."""

    request_id: str
    endpoint: Literal["chat", "embeddings"]
    body: dict[str, Any]  # the client's JSON, unknown parameters kept
    stream: bool = False
    client_wants_usage: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    started_unix: float = field(default_factory=time.time)
    # attribution, filled in by the auth step
    api_key_id: str | None = None
    team: str | None = None
    user: str | None = None
    tags: list[str] = field(default_factory=list)
    rule: str | None = None  # set when a select_route answer changed the route
    models_override: list[str] | None = None  # a per-request fallback list (OpenRouter-style ``models``)
    #: the client's protocol: "chat_completions", "responses" or "messages" (see core.doors)
    protocol: str = "chat_completions"
    #: the client's own body when its protocol is not Chat Completions: what a target that speaks
    #: that protocol natively is sent (``body`` is always the Chat Completions translation)
    native: dict[str, Any] | None = None
    #: parameters of the client's request its door could not carry into the Chat Completions
    #: translation and dropped (answered in the ``x-interlock-dropped`` header, comma-separated)
    dropped: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Attempt:
    """One upstream attempt, successful or not."""

    n: int
    provider: str
    provider_type: str
    model: str
    outcome: str = "ok"  # "ok" or a FailureClass value
    action: str | None = None  # what the router did next on failure
    status: int | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    usage: Usage | None = None
    error: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    start_ms: float = 0.0  # when the attempt started, from the request's arrival
    hedge: bool = False  # started as a hedge alongside another attempt
    cost_usd: Decimal | None = None  # priced through the compute_cost hook; None when unknown
    #: cancelled or cut off before any usage arrived: the most the upstream may have billed for it
    #: (the prompt estimate at the target's input price); None otherwise or without a price
    unreported_cost_max_usd: Decimal | None = None


@dataclass(slots=True)
class Decision:
    """The full record of one routing decision: what exporters receive."""

    request_id: str
    ts: float
    endpoint: str
    requested_model: str
    route: str | None
    strategy: str | None
    candidates: list[str]
    attempts: list[Attempt]
    stream: bool
    status: int = 200
    provider: str | None = None
    model: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    usage: Usage | None = None
    error_type: str | None = None
    error_message: str | None = None
    api_key_id: str | None = None
    team: str | None = None
    user: str | None = None
    tags: list[str] = field(default_factory=list)
    rule: str | None = None  # why a rule changed the route, if one did
    reasons: list[str] = field(default_factory=list)  # the candidate order, with why
    skipped: list[str] = field(default_factory=list)  # candidates not tried, with why (cooldown, window)
    events: list[str] = field(default_factory=list)  # retries, fallbacks, hedges, breaker transitions
    hedged: bool = False
    cost_usd: Decimal | None = None  # the sum of every attempt's cost (failed, retried, hedged ones too)
    #: after a fallback: the request's cost (failed attempts' known cost included) minus what the
    #: answer's usage would have cost on the first choice
    cost_delta_usd: Decimal | None = None
    unreported_cost_max_usd: Decimal | None = None  # the sum of the attempts' unreported_cost_max_usd
    protocol: str = "chat_completions"  # the client's protocol: chat_completions, responses, messages

    def failed(self, status: int, error_type: str | None, message: str | None) -> None:
        """Record that the request ends with ``status`` instead of an answer.

        The first cause recorded wins: the router's verdict (the failure class of
        the most informative attempt) is kept when the HTTP error that carries it
        to the client is recorded afterwards.
        """
        self.status = status
        if self.error_type is None:
            self.error_type = error_type
        if self.error_message is None:
            self.error_message = message

    @property
    def fallback_used(self) -> bool:
        """True when the answer came from a target other than the first one tried."""
        return bool(self.attempts) and self.attempts[-1].outcome == "ok" and (
            self.attempts[-1].provider,
            self.attempts[-1].model,
        ) != (self.attempts[0].provider, self.attempts[0].model)


@dataclass(slots=True)
class Alert:
    """A budget or spend-anomaly event, for the ``alert`` hook (log, webhook, OpenTelemetry)."""

    kind: str  # budget_soft, budget_hard, anomaly
    scope: str  # what it is about: "team:search", "key:key_12ab", "tag:batch", "model:gpt-4o"
    message: str
    value_usd: Decimal | None = None  # the spend that triggered it
    threshold_usd: Decimal | None = None  # the budget, or the anomaly threshold the spend went over
    details: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def payload(self) -> dict[str, Any]:
        """The alert as JSON-ready data (a log line, a webhook body): dollars as strings, never floats."""
        return {
            "kind": self.kind,
            "scope": self.scope,
            "message": self.message,
            "value_usd": None if self.value_usd is None else str(self.value_usd),
            "threshold_usd": None if self.threshold_usd is None else str(self.threshold_usd),
            "details": self.details,
            "ts": self.ts,
        }
