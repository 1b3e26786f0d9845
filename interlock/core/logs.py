"""Logging setup, with every configured credential scrubbed from every record."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from interlock.core.redaction import scrub, secrets_worth_scrubbing


class RedactingFilter(logging.Filter):
    """Replaces any known secret value in a log record's final message with ``****``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Also scrub these values (after a reload brought new keys); old ones stay scrubbed."""
        # short values would redact innocent text; real keys are long (interlock.core.redaction)
        self.secrets = secrets_worth_scrubbing([*self.secrets, *secrets])

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        text = message
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text or ""
        text = scrub(text, self.secrets)
        exc_text = scrub(exc_text, self.secrets) if exc_text else exc_text
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
