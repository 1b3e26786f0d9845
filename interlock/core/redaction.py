"""Scrubbing credentials out of text that leaves the gateway (upstream error messages, log lines).

Two rules, so that real secrets go and ordinary words stay:

* exact values: a configured secret of at least :data:`MIN_SECRET_CHARS` characters is
  replaced wherever it appears. Shorter values are placeholders (``api_key = "ollama"``,
  ``"none"``), not secrets; scrubbing them would mangle innocent text (an Ollama
  "model 'ollama…' not found" became ``**** … not found``);
* structure, whatever the length: the value of an echoed ``Authorization``, ``x-api-key``,
  ``api-key`` or ``x-goog-api-key`` header, and of a ``key=``/``api_key=``/``token=`` URL
  query parameter, is replaced even when it is not a configured secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "****"
#: shortest configured value treated as a secret
MIN_SECRET_CHARS = 8

_HEADER_ECHO = re.compile(
    r"(?i)\b((?:authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key)[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+|basic\s+)?)([^\s\"',;}]+)"
)
_QUERY_KEY = re.compile(r"(?i)([?&](?:key|api_key|api-key|apikey|access_token|token)=)([^&\s\"'#]+)")


def secrets_worth_scrubbing(values: Iterable[str]) -> list[str]:
    """The values that are secrets by length, longest first (so a key containing another goes whole)."""
    return sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value (from :func:`secrets_worth_scrubbing`) and every structured credential masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if ("=" in text or ":" in text) and (_HEADER_ECHO.search(text) or _QUERY_KEY.search(text)):
        text = _QUERY_KEY.sub(lambda m: m.group(1) + MASK, _HEADER_ECHO.sub(lambda m: m.group(1) + MASK, text))
    return text
