"""``webhook``: every alert as a JSON POST to a URL, with retries, off the request path.

::

    [exporters.webhook]
    url = "https://hooks.example.com/interlock"
    headers = { Authorization = "Bearer ${WEBHOOK_TOKEN}" }
    timeout = 10.0      # seconds per POST
    retries = 3         # further tries after a failed POST (5xx, 429, timeout, connection error)
    backoff = 1.0       # seconds before the first retry, doubled each time (capped at 60)
    max_queue = 1000    # alerts waiting while the receiver is down; the oldest go first

The body is the alert as JSON: ``kind`` (``budget_soft``, ``budget_hard``, ``anomaly``),
``scope``, ``message``, ``value_usd`` and ``threshold_usd`` (decimal strings),
``details`` and ``ts`` (Unix seconds). A 2xx answer is delivered; another 4xx is a
permanent refusal (logged, not retried). The ``alert`` hook only queues; a background
task started with the gateway posts. On graceful shutdown the queue is delivered for
up to ``timeout`` seconds more.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from interlock import hookimpl
from interlock.core import jsonutil
from interlock.core.exporter import Exporter
from interlock.core.types import Alert, Decision

log = logging.getLogger("interlock.webhook")

_OPTIONS = ("enabled", "url", "headers", "timeout", "retries", "backoff", "max_queue")


class WebhookExporter(Exporter):
    """Queues alerts (the ``alert`` hook) and POSTs them from a background task."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_queue: int = 1000,
    ) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_queue = max_queue
        self.delivered = 0
        self.failed = 0  # alerts given up on (retries exhausted, refused, dropped from a full queue)
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # -- hooks ------------------------------------------------------------ #

    @hookimpl
    def alert(self, alert: Alert) -> None:
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self.failed += 1
            log.warning("webhook: queue full (%d alerts); the oldest was dropped", self.max_queue)
        self._queue.append(alert.payload())
        self._wake.set()

    def record(self, decision: Decision) -> None:
        """Decisions are not posted; only alerts are."""

    # -- lifecycle -------------------------------------------------------- #

    async def start(self) -> None:
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._task = asyncio.create_task(self._run(), name="interlock-webhook")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if self._session is not None:
            try:
                if self._queue:
                    await asyncio.wait_for(self.flush(), timeout=self.timeout)
            except TimeoutError:
                log.warning("webhook: %d alerts not delivered at shutdown", len(self._queue))
            finally:
                await self._session.close()
                self._session = None

    async def flush(self) -> None:
        """Deliver everything queued (each with its retries)."""
        while self._queue and self._session is not None:
            payload = self._queue[0]
            await self._deliver(payload)
            if self._queue and self._queue[0] is payload:
                self._queue.popleft()

    # -- delivery --------------------------------------------------------- #

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def _deliver(self, payload: dict[str, Any]) -> bool:
        assert self._session is not None
        body = jsonutil.dumps(payload)
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(60.0, self.backoff * 2 ** (attempt - 1)))
            try:
                async with self._session.post(self.url, data=body, headers=self.headers) as resp:
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        return True
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        log.error("webhook: %s refused an alert with HTTP %d; not retried", self.url, resp.status)
                        self.failed += 1
                        return False
                    why = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            log.warning("webhook: POST %s failed (%s); try %d of %d", self.url, why, attempt + 1, self.retries + 1)
        self.failed += 1
        log.error("webhook: giving up on an alert (%s %s) after %d tries", payload["kind"], payload["scope"], self.retries + 1)
        return False


def parse_options(table: Any) -> dict[str, Any]:
    """Validate an ``[exporters.webhook]`` table; raises ``ValueError`` naming the key."""
    if not isinstance(table, Mapping):
        raise ValueError(f"exporters.webhook: must be a table, not {type(table).__name__}")
    for key in table:
        if key not in _OPTIONS:
            raise ValueError(f"exporters.webhook.{key}: unknown key (known: {', '.join(_OPTIONS)})")
    url = table.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("exporters.webhook.url: must be an http:// or https:// URL")
    headers = table.get("headers", {})
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("exporters.webhook.headers: must be a table of strings")
    out: dict[str, Any] = {"url": url, "headers": dict(headers)}
    for key, default in (("timeout", 10.0), ("backoff", 1.0)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"exporters.webhook.{key}: must be a non-negative number of seconds, not {value!r}")
        out[key] = float(value)
    if out["timeout"] <= 0:
        raise ValueError("exporters.webhook.timeout: must be positive")
    for key, default, low in (("retries", 3, 0), ("max_queue", 1000, 1)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"exporters.webhook.{key}: must be an integer >= {low}, not {value!r}")
        out[key] = value
    return out


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    table = (settings.get("exporters") or {}).get("webhook")
    if table is None:
        return
    if isinstance(table, Mapping) and table.get("enabled", True) is False:
        return
    opts = parse_options({k: v for k, v in table.items() if k != "enabled"} if isinstance(table, Mapping) else table)
    url = opts.pop("url")
    register(WebhookExporter(url, **opts))
