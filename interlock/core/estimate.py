"""Token estimates before a request is sent: prompt size and the worst case a request may use.

No tokenizer runs on the request path. A prompt is estimated from its characters
(:data:`CHARS_PER_TOKEN` per token, rounded up) plus a fixed charge per image; the
worst case adds the output the request allows (``max_completion_tokens``, else
``max_tokens``, else an allowance the caller names) times ``n``. Rules use the
prompt estimate to pick a route by size, ``lowest-cost`` to compare targets, and
the request lifecycle to reserve a budget before any upstream call: good enough for
those, never for billing, which uses the usage the upstream reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interlock.core.types import RequestContext, Usage

#: the estimate charges this many tokens for a ``detail: "low"`` image (OpenAI's fixed low-detail price)
IMAGE_TOKENS_LOW = 85
#: and this many for any other image: a 1024x1024 image in high detail (4 tiles x 170 + 85)
IMAGE_TOKENS = 765
#: characters per token for text, the usual rule of thumb for English and code
CHARS_PER_TOKEN = 4

#: content-part types that carry an image (Chat Completions, Responses, Anthropic)
IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


def count_prompt(body: Mapping[str, Any]) -> tuple[int, int, int]:
    """(text characters, low-detail images, other images) over every message of a chat body."""
    chars = low = other = 0
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0, 0, 0
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                ptype = part.get("type")
                if ptype in IMAGE_PARTS:
                    image = part.get("image_url")
                    detail = image.get("detail") if isinstance(image, dict) else part.get("detail")
                    if detail == "low":
                        low += 1
                    else:
                        other += 1
                    continue
                for key in ("text", "refusal"):
                    value = part.get(key)
                    if isinstance(value, str):
                        chars += len(value)
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    for key in ("name", "arguments"):
                        value = fn.get(key)
                        if isinstance(value, str):
                            chars += len(value)
    return chars, low, other


def tokens_of(chars: int, low_images: int, other_images: int) -> int:
    """The token estimate of what :func:`count_prompt` counted."""
    return -(-chars // CHARS_PER_TOKEN) + low_images * IMAGE_TOKENS_LOW + other_images * IMAGE_TOKENS


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A cheap estimate of a chat request's prompt size in tokens.

    Characters of every message's text (string content, text and refusal parts,
    assistant tool-call names and arguments) divided by :data:`CHARS_PER_TOKEN`,
    rounded up, plus :data:`IMAGE_TOKENS_LOW` per image part with
    ``detail: "low"`` and :data:`IMAGE_TOKENS` per other image part. An image's
    URL or base64 data is never counted as text. Tool definitions and audio are
    not counted. One pass over the messages, no tokenizer: good enough to pick a
    route by size, not to bill by.
    """
    return tokens_of(*count_prompt(body))


def estimate_input_tokens(inputs: Any) -> int:
    """An embeddings request's ``input`` in tokens: text at :data:`CHARS_PER_TOKEN`, token arrays as given.

    A token array (a list of ints) is counted at 4 characters per element, so it
    estimates to its own length.
    """
    items = inputs if isinstance(inputs, list) else [inputs]
    chars = sum(len(x) if isinstance(x, str) else (len(x) * CHARS_PER_TOKEN if isinstance(x, list) else 0) for x in items)
    return -(-chars // CHARS_PER_TOKEN)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def requested_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output limit a chat request sets: ``max_completion_tokens``, else ``max_tokens`` (positive ints only)."""
    return _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))


def worst_case_usage(ctx: RequestContext, output_allowance: int) -> Usage:
    """The most a request may use: its estimated prompt plus every output token it allows.

    A chat request allows ``max_completion_tokens`` (else ``max_tokens``, else
    ``output_allowance``) per choice, times ``n``; an embeddings request produces no
    output tokens.
    """
    body = ctx.body
    if ctx.endpoint == "embeddings":
        return Usage(prompt_tokens=estimate_input_tokens(body.get("input")))
    out = requested_output_tokens(body) or output_allowance
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return Usage(prompt_tokens=estimate_prompt_tokens(body), completion_tokens=out * choices)
