"""Every attribute, span event and metric name interlock's telemetry emits, defined once.

What is emitted (GenAI semantic conventions, ``gen_ai`` schema 1.42 / core semconv 1.37+):

* a ``SERVER`` span per OpenAI-endpoint request (``POST /v1/chat/completions``),
  continuing an incoming W3C ``traceparent``;
* an ``INTERNAL`` routing span ``route {route or model}`` with the ``interlock.*``
  routing facts and span events for retries, fallbacks, hedges and breaker changes;
* a ``CLIENT`` span per upstream attempt, ``{operation} {model}``, with the
  ``gen_ai.*`` attributes; outgoing provider requests carry its ``traceparent``;
* the metrics named by the ``METRIC_*`` constants below.

Constants and one lookup, and no imports: anything can name what is emitted
(a plugin, a dashboard check, a script) without loading OpenTelemetry.
"""

from __future__ import annotations

# the instrumentation scope of every span and metric
SCHEMA_URL = "https://opentelemetry.io/schemas/gen-ai/1.42.0"
INSTRUMENTATION = "interlock"

# --------------------------------------------------------------------------- #
# attribute names
# --------------------------------------------------------------------------- #

# GenAI semantic conventions
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_USAGE_COST = "gen_ai.usage.cost"  # not semconv; what Langfuse/SigNoz-style backends read
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
CLIENT_ADDRESS = "client.address"

# interlock's own (routing has no convention)
INTERLOCK_REQUEST_ID = "interlock.request_id"
INTERLOCK_REQUEST_MODEL = "interlock.request.model"
INTERLOCK_ROUTE = "interlock.route"
INTERLOCK_RULE = "interlock.rule"
INTERLOCK_STRATEGY = "interlock.strategy"
INTERLOCK_CANDIDATES = "interlock.candidates"
INTERLOCK_REASONS = "interlock.reasons"
INTERLOCK_SKIPPED = "interlock.skipped"
INTERLOCK_FALLBACK_USED = "interlock.fallback_used"
INTERLOCK_ATTEMPTS = "interlock.attempts"
INTERLOCK_HEDGED = "interlock.hedged"
INTERLOCK_TARGET = "interlock.target"  # provider instance/model
INTERLOCK_PROVIDER = "interlock.provider"  # provider instance name
INTERLOCK_COST_USD = "interlock.cost_usd"
INTERLOCK_COST_DELTA_USD = "interlock.cost_delta_usd"
# the most attempts cut off before they reported usage may have been billed (not in interlock.cost_usd)
INTERLOCK_UNREPORTED_COST_MAX_USD = "interlock.unreported_cost_max_usd"
INTERLOCK_TEAM = "interlock.team"
INTERLOCK_PROTOCOL = "interlock.protocol"  # the client's protocol: chat_completions, responses, messages
INTERLOCK_ATTEMPT_N = "interlock.attempt.n"
INTERLOCK_ACTION = "interlock.action"
INTERLOCK_OUTCOME = "interlock.outcome"
INTERLOCK_HEDGE = "interlock.hedge"
INTERLOCK_HTTP_STATUS_CLASS = "http.response.status_code_class"  # "2xx".."5xx" on interlock.requests
INTERLOCK_RETRY_WAIT = "interlock.retry.wait_s"
INTERLOCK_HEDGE_TARGET = "interlock.hedge.target"
INTERLOCK_HEDGE_DELAY = "interlock.hedge.delay_s"
INTERLOCK_BREAKER_FROM = "interlock.breaker.from"
INTERLOCK_BREAKER_TO = "interlock.breaker.to"
INTERLOCK_BREAKER_REASON = "interlock.breaker.reason"

# span events on the routing span
EVENT_RETRY = "interlock.retry"
EVENT_FALLBACK = "interlock.fallback"
EVENT_HEDGE = "interlock.hedge"
EVENT_BREAKER = "interlock.breaker"

# --------------------------------------------------------------------------- #
# metric names, units and advised buckets
# --------------------------------------------------------------------------- #

METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"  # histogram {token}, gen_ai.token.type=input|output
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"  # histogram s, per attempt
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"  # histogram s, streamed attempts
METRIC_REQUESTS = "interlock.requests"  # counter; interlock.route, http.response.status_code_class
METRIC_COST = "interlock.cost"  # counter USD; gen_ai.provider.name, gen_ai.request.model, interlock.team
METRIC_FALLBACKS = "interlock.fallbacks"  # counter; interlock.route
# up-down counter USD; interlock.route: what fallbacks cost beyond (or saved against) the first choice
METRIC_FALLBACK_COST_DELTA = "interlock.fallback.cost_delta"
METRIC_RETRIES = "interlock.retries"  # counter; interlock.route
METRIC_STORE_DEGRADED = "interlock.store.degraded"  # observable gauge; 1 while the shared store is unreachable
METRIC_STORE_FALLBACK_OPS = "interlock.store.fallback_ops"  # observable counter; store operations served locally
METRIC_BREAKER_STATE = "interlock.breaker.state"  # observable gauge; interlock.target; 0 closed 1 half_open 2 open
METRIC_BREAKER_TRIPS = "interlock.breaker.trips"  # counter; interlock.target
METRIC_IN_FLIGHT = "interlock.requests.in_flight"  # up-down counter
METRIC_OVERHEAD = "interlock.overhead"  # histogram s: request duration minus upstream wait

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
NO_ROUTE = "-"  # interlock.route for requests not served through a named route

#: interlock provider type -> gen_ai.provider.name (semconv well-known values; others are custom lowercase)
PROVIDER_NAMES: dict[str, str] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "groq": "groq",
    "together": "together_ai",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
    "ollama": "ollama",
    "replicate": "replicate",
    "gpustack": "gpustack",
}


def provider_name(provider_type: str) -> str:
    """``gen_ai.provider.name`` for an interlock provider type."""
    return PROVIDER_NAMES.get(provider_type, provider_type.lower())
