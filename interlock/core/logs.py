"""Logging setup, with every configured credential scrubbed from every record."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class RedactingFilter(logging.Filter):
    """Replaces any known secret value in a log record's final message with ``****``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Also scrub these values (after a reload brought new keys); old ones stay scrubbed."""
        # short values would redact innocent text; real keys are long
        self.secrets = sorted({*self.secrets, *(s for s in secrets if len(s) >= 8)}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        text = message
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text or ""
        for secret in self.secrets:
            text = text.replace(secret, "****")
            exc_text = exc_text.replace(secret, "****")
        if text != message:
            record.msg, record.args = text, None
        if record.exc_text:
            record.exc_text = exc_text
        return True


def setup(level: str, secrets: Iterable[str]) -> RedactingFilter:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # the router logs every failed attempt at INFO; aiohttp's access log is noise on a gateway
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return redactor
