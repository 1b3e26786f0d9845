"""Front doors: the client protocols the gateway speaks, each on the one request lifecycle.

A door (see :class:`interlock.core.lifecycle.FrontDoor`) reads its protocol's
request into the internal one and writes the internal answers back in its
protocol: the response, each stream chunk, the end of a stream, a stream error and
an error body. Everything between (routing, fallback, budgets, cost, traces, the
ledger) is the lifecycle's, so every door gets all of it.

* :mod:`.chat_completions`: OpenAI Chat Completions (``POST /v1/chat/completions``)
  and Embeddings (``POST /v1/embeddings``), the internal shape itself, so nothing
  is translated.
* :mod:`.anthropic_messages`: Anthropic Messages (``POST /v1/messages``, and
  :mod:`.messages_count` for ``count_tokens``), passed through to targets that speak
  it and translated (:mod:`.messages_request`, :mod:`.messages_response`,
  :mod:`.messages_stream`) for the rest.

A new door is a module here with an object satisfying ``FrontDoor``, and a route in
:func:`interlock.core.app.create_app` pointing at it.
"""
