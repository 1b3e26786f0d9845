"""Everything a provider plugin needs, from one import: the public provider-author API.

A provider *type* is a class registered through the ``register_providers`` hook;
config creates instances of it (``[providers.NAME] type = "acme"``)::

    from interlock.provider_api import OpenAICompatible, hookimpl

    class Acme(OpenAICompatible):
        type_name = "acme"
        env_key = "ACME_API_KEY"
        default_base_url = "https://api.acme.example/v1"

    @hookimpl
    def register_providers(register):
        register(Acme)

Pick the base class:

* :class:`OpenAICompatible` when the upstream speaks OpenAI Chat Completions: set class
  attributes and override the small quirk methods (``prepare``, ``fix_response``,
  ``fix_chunk``, ``extract_usage``).
* :class:`HTTPProvider` when it has its own JSON-over-HTTP wire format: implement
  ``chat``, ``chat_stream`` and ``embeddings`` with ``post``/``request``, ``read_object``
  and ``reading``; override ``headers()`` for auth and ``error_fields()`` for the error
  body. Every connect error, timeout, HTTP status and unreadable body already becomes an
  :class:`UpstreamError`.
* :class:`Provider` for anything else (no network, a vendor SDK): then raise
  :class:`UpstreamError` for every failure yourself.

Translating a native wire format: read the client's OpenAI request with :func:`text_of`,
:func:`system_text`, :func:`parse_image` / :func:`fetch_image` / :func:`image_bytes`,
:func:`tools_of`, :func:`tool_choice_of`, :func:`max_tokens_of`, :func:`stop_of`,
:func:`json_schema_of` and :func:`parse_arguments`; write the answer with
:func:`completion`, :func:`usage_dict`, :class:`ChunkWriter` (stream chunks),
:func:`embeddings_body` and :func:`new_id`, so every provider emits the same shapes.
Read streamed bodies with :func:`iter_sse`, :func:`iter_sse_data` or :func:`iter_lines`,
and JSON with :mod:`jsonutil <interlock.core.jsonutil>`. Report usage in OpenAI semantics
(prompt includes cached tokens, completion includes reasoning), on streams too.

Failures: override :meth:`Provider.classify` for statuses, codes or error names only your
upstream uses. It answers before any ``classify_failure`` hook; return None to leave a
failure to the hook (third-party plugins, then the built-in rules). Build the answer
with :func:`classify_as` (a class with its default action and the retry hint) or start
from the generic :func:`classify` / :func:`failure_class`.

Only the names in ``__all__`` are the supported surface; the modules behind them may move.
"""

from __future__ import annotations

from interlock import hookimpl
from interlock.core import jsonutil
from interlock.core.failures import ACTIONS, classify, classify_as, failure_class, parse_retry_after
from interlock.core.http_provider import HTTPProvider, error_fields
from interlock.core.openai_compatible import OpenAICompatible, rename_max_tokens
from interlock.core.openai_shapes import (
    ChunkWriter,
    Image,
    Tool,
    ToolCall,
    completion,
    embedding_base64,
    embeddings_body,
    fetch_image,
    image_bytes,
    json_schema_of,
    max_tokens_of,
    new_id,
    parse_arguments,
    parse_image,
    stop_of,
    system_text,
    text_of,
    tool_choice_of,
    tools_of,
    usage_dict,
)
from interlock.core.provider import HttpPool, Provider, ProviderSettings, Secret
from interlock.core.sse import encode_named_event, iter_lines, iter_sse, iter_sse_data
from interlock.core.types import (
    Action,
    ChatResult,
    Chunk,
    Classification,
    EmbeddingsResult,
    FailureClass,
    NativeResult,
    RequestContext,
    Target,
    UpstreamError,
    Usage,
)

__all__ = [
    # registering
    "hookimpl",
    # base classes and what they are given
    "Provider",
    "ProviderSettings",
    "Secret",
    "HttpPool",
    "HTTPProvider",
    "OpenAICompatible",
    "error_fields",
    "rename_max_tokens",
    # core types
    "RequestContext",
    "ChatResult",
    "EmbeddingsResult",
    "NativeResult",
    "Chunk",
    "Usage",
    "UpstreamError",
    "Target",
    "Classification",
    "FailureClass",
    "Action",
    # reading the client's OpenAI request
    "text_of",
    "system_text",
    "Image",
    "parse_image",
    "fetch_image",
    "image_bytes",
    "Tool",
    "tools_of",
    "tool_choice_of",
    "max_tokens_of",
    "stop_of",
    "json_schema_of",
    "parse_arguments",
    # writing OpenAI answers
    "ToolCall",
    "completion",
    "usage_dict",
    "ChunkWriter",
    "embeddings_body",
    "embedding_base64",
    "new_id",
    # reading upstream bodies (and writing a pass-through stream's events: native chunks' payloads)
    "encode_named_event",
    "iter_sse",
    "iter_sse_data",
    "iter_lines",
    "jsonutil",
    # classifying failures
    "classify",
    "classify_as",
    "failure_class",
    "parse_retry_after",
    "ACTIONS",
]
