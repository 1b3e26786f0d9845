"""Native wire formats translated to and from OpenAI's, one module per provider.

The naming scheme: ``<provider>.py`` holds everything that provider's format needs
(request body, response, stream events, error body), named after the provider type
that owns it (``anthropic``, ``bedrock``, ``cohere``, ``gemini``, ``ollama``,
``replicate``, ``vertex``). A second module, ``<provider>_<aspect>.py``, exists only
where one provider has a second, separable concept (``gemini_schema``: JSON Schema
rewritten into Gemini's OpenAPI subset; ``anthropic_events``: Messages answers passed
through to a Messages client untranslated, read for accounting). Vertex AI reuses ``anthropic`` and ``gemini``
and keeps only its own differences in ``vertex``.

These are helpers, not plugins: the provider plugins import them (and so may the
fakes in :mod:`interlock.testing`); they import only the public API
(:mod:`interlock.provider_api`) and each other. Transport and auth stay with the
providers and their non-translation helpers (``_aws``, ``_vertex_auth``).
"""
