"""``otlp``: traces and metrics to an OpenTelemetry collector over OTLP (http/protobuf or grpc).

Enabled by ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the signal-specific
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``),
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER=otlp``, or ``[telemetry]
otlp_endpoint``. ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``[telemetry] protocol``)
picks ``http/protobuf`` (default, port 4318) or ``grpc`` (port 4317). Spans over
http go through :class:`EncodingSpanProcessor` (batches posted from the event
loop), over grpc through a ``BatchSpanProcessor``; metrics through a periodic
reader on its own thread. Each export gives up after ``export_timeout`` seconds
(5 by default), so an unreachable collector drops telemetry and never slows or
fails a request.

Spans over http/protobuf go through the official ``OTLPSpanExporter`` (endpoint,
headers, timeout, compression, certificates, credential providers, retries with
backoff, shutdown: all its own), subclassed only to serialize the batch with
:mod:`interlock.plugins.exporters.otlp_wire` (the same bytes, several times
faster) and to read the proxy/netrc/CA-bundle environment once instead of on
every export. When the installed exporter no longer has the seam this relies on
(``_client.export(bytes)``, opentelemetry-exporter-otlp-proto-http 1.45), it
exports exactly as the official one does. grpc and metrics use the official
exporters unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from interlock import hookimpl
from interlock.core.exporter import Exporter
from interlock.core.telemetry.exporter import TelemetryExporter, batch_processor
from interlock.core.telemetry.settings import TelemetrySettings
from interlock.core.threads import background_thread


class OTLPExporter(TelemetryExporter):
    name = "otlp"

    def __init__(self, settings: TelemetrySettings, *, traces: bool = True, metrics: bool = True) -> None:
        self.settings = settings
        self.traces = traces
        self.metrics = metrics

    def _endpoint(self, signal: str, specific: str | None) -> str | None:
        if specific:
            return specific  # signal-specific endpoints are used verbatim
        base = self.settings.otlp_endpoint
        if base is None:
            return None
        if self.settings.protocol == "grpc":
            return base
        return f"{base.rstrip('/')}/v1/{signal}"

    def _grpc_kwargs(self, endpoint: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.settings.headers or None, "timeout": self.settings.export_timeout}
        if endpoint is not None:
            kwargs["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                kwargs["insecure"] = True
        return kwargs

    def span_processor(self) -> SpanProcessor | None:
        """OTLP/http: spans encoded as they end (:class:`EncodingSpanProcessor`); otherwise the usual batch processor."""
        if not self.traces or self.settings.protocol == "grpc":
            return None
        exporter = self.span_exporter()
        if getattr(exporter, "sends_encoded", False):
            try:  # built while the gateway starts: batches can go out from its event loop
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            return EncodingSpanProcessor(exporter, loop=loop)
        return None if exporter is None else batch_processor(exporter, self.settings)

    def span_exporter(self) -> SpanExporter | None:
        if not self.traces:
            return None
        endpoint = self._endpoint("traces", self.settings.traces_endpoint)
        if self.settings.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

            return GrpcSpanExporter(**self._grpc_kwargs(endpoint))
        return http_span_exporter(endpoint=endpoint, headers=self.settings.headers or None,
                                  timeout=self.settings.export_timeout)

    def metric_reader(self) -> MetricReader | None:
        if not self.metrics:
            return None
        endpoint = self._endpoint("metrics", self.settings.metrics_endpoint)
        exporter: Any
        if self.settings.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

            exporter = GrpcMetricExporter(**self._grpc_kwargs(endpoint))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(endpoint=endpoint, headers=self.settings.headers or None,
                                          timeout=self.settings.export_timeout)
        interval = self.settings.metric_export_interval * 1000
        return PeriodicExportingMetricReader(exporter, export_interval_millis=interval,
                                             export_timeout_millis=self.settings.export_timeout * 1000)


_logger = logging.getLogger(__name__)

# the credential-provider variables that make the official exporter load its own requests.Session
_CREDENTIAL_PROVIDER_VARS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, "") or default)
    except ValueError:
        _logger.warning("%s=%r is not an integer; using %d", name, os.environ.get(name), default)
        return default
    return value if value > 0 else default


class EncodingSpanProcessor(SpanProcessor):
    """Batch span export that encodes each span when it ends and queues only its bytes.

    The SDK's ``BatchSpanProcessor`` queues span objects and has its export
    thread encode a whole batch at once; on a busy single core that thread then
    competes with the event loop for the GIL and the CPU for milliseconds at a
    time, which is what a request's tail latency shows, and every queued span
    object (several kB each) is memory and garbage-collector work. Here
    :func:`~interlock.plugins.exporters.otlp_wire.encode_span` runs in
    ``on_end`` (a few microseconds, on the event loop) and the queue holds a few
    hundred bytes per span.

    Batches are sent from the event loop (``loop``, with the exporter's
    :class:`LoopSender`) when the processor is built inside the gateway's
    running loop and the exporter's settings allow it; otherwise, and for the
    final flush at shutdown, a thread joins each batch and sends it through the
    exporter's own HTTP client (retries, compression, timeout).

    It reads the standard batch settings: ``OTEL_BSP_SCHEDULE_DELAY`` (ms,
    default 5000), ``OTEL_BSP_MAX_QUEUE_SIZE`` (2048; spans beyond it are
    dropped and counted) and ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512).
    """

    def __init__(self, exporter: Any, *, schedule_delay_millis: int | None = None,
                 max_queue_size: int | None = None, max_export_batch_size: int | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        from interlock.plugins.exporters.otlp_wire import assemble, encode_span

        self._encode, self._assemble = encode_span, assemble
        self.exporter = exporter
        self._delay = (schedule_delay_millis or _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000)) / 1000
        self._max_queue = max_queue_size or _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self._max_batch = min(self._max_queue, max_export_batch_size or _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        self._queue: collections.deque[tuple[Any, Any, bytes]] = collections.deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._stopping = False
        self.dropped = 0  # spans refused because the queue was full
        self.failed = 0  # spans that could not be encoded
        self._warned_at = 0.0
        self._thread: threading.Thread | None = None
        # loop mode: a timer and at most one sending task on the gateway's event loop
        self.sender: LoopSender | None = None
        self._loop = loop
        self._loop_thread = threading.get_ident() if loop is not None else None
        self._timer: asyncio.TimerHandle | None = None
        self._ended: collections.deque[ReadableSpan] = collections.deque()  # ended on the loop, not encoded yet
        self._encode_scheduled = False
        self._task: asyncio.Task[None] | None = None
        make_sender = getattr(exporter, "loop_sender", None)
        if loop is not None and callable(make_sender):
            self.sender = make_sender(loop)
        if self.sender is not None:
            self._timer = loop.call_later(self._delay, self._tick)  # type: ignore[union-attr]
        else:
            self._thread = threading.Thread(target=self._run, name="interlock-span-export", daemon=True)
            self._thread.start()
            background_thread(self._thread)

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopping or not span.context.trace_flags.sampled:
            return
        if self._loop is not None and threading.get_ident() == self._loop_thread:
            # encoded on the loop's next turn: a request's spans end before its response is
            # written, and encoding them then would delay the response
            self._ended.append(span)
            if not self._encode_scheduled:
                self._encode_scheduled = True
                self._loop.call_soon(self._encode_ended)
            return
        self._add(span)

    def _encode_ended(self) -> None:
        self._encode_scheduled = False
        ended = self._ended
        while ended:
            self._add(ended.popleft())

    def _add(self, span: ReadableSpan) -> None:
        """Encode ``span`` and queue its bytes (or count it dropped when the queue is full)."""
        try:
            item = self._encode(span)
        except Exception:  # a span the encoder cannot handle must not fail the request that ended it
            self.failed += 1
            _logger.exception("span %r could not be encoded; it is dropped", span.name)
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                _logger.warning("span export queue full (%d spans): dropping spans (%d so far); "
                                "is the collector reachable?", self._max_queue, self.dropped)
            return
        queue.append(item)
        if len(queue) >= self._max_batch:
            if self.sender is not None:
                if self._task is None:
                    if threading.get_ident() == self._loop_thread:
                        self._kick()
                    else:  # a span ended on another thread
                        self._loop.call_soon_threadsafe(self._kick)  # type: ignore[union-attr]
            elif not self._wake.is_set():
                self._wake.set()

    def _take(self) -> list[tuple[Any, Any, bytes]]:
        """Up to one batch from the queue (another consumer may be taking from it too)."""
        queue, batch = self._queue, []
        try:
            for _ in range(min(self._max_batch, len(queue))):
                batch.append(queue.popleft())
        except IndexError:
            pass
        return batch

    # -- loop mode -------------------------------------------------------- #

    def _tick(self) -> None:
        if self._stopping:
            return
        self._timer = self._loop.call_later(self._delay, self._tick)  # type: ignore[union-attr]
        if self._queue:
            self._kick(everything=True)

    def _kick(self, everything: bool = False) -> None:
        if self._task is None and not self._stopping and self._queue:
            self._task = self._loop.create_task(self._send_queued(everything))  # type: ignore[union-attr]

    async def _send_queued(self, everything: bool) -> None:
        """Send full batches; on the timer also what is queued when it fires (spans arriving meanwhile
        wait for a full batch or the next tick, so a busy gateway does not post a trickle of small batches)."""
        queue = self._queue
        pending = len(queue) if everything else 0
        try:
            while not self._stopping and (len(queue) >= self._max_batch or pending > 0):
                batch = self._take()
                if not batch:
                    break
                pending -= len(batch)
                await self.sender.send(self._assemble(batch), len(batch))  # type: ignore[union-attr]
        finally:
            self._task = None

    # -- thread mode ------------------------------------------------------ #

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        """Send everything queued, in batches of at most ``max_export_batch_size``, on this thread."""
        with self._export_lock:
            while self._queue:
                batch = self._take()
                if not batch:
                    break
                try:
                    self.exporter.export_encoded(functools.partial(self._assemble, batch), len(batch))
                except Exception:  # the exporter reports failures as results; anything else is logged
                    _logger.exception("span export failed; %d spans are lost", len(batch))

    def shutdown(self) -> None:
        if self._stopping:
            return
        self._encode_ended()
        self._stopping = True
        if self.sender is not None:
            self.sender.stopping = True
            self._on_loop(self._stop_loop_work)
        if self._thread is not None:
            self._wake.set()
            self._thread.join(timeout=30)
        self._drain()  # what is left goes through the exporter's own client, on this thread
        if self.sender is not None:
            self._on_loop(self.sender.close, wait=True)
        self.exporter.shutdown()

    def _stop_loop_work(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def _on_loop(self, fn: Callable[[], Any], wait: bool = False) -> None:
        """Run ``fn`` (a function, or a coroutine function) on the loop, from whichever thread shuts down."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            result = fn()
            if asyncio.iscoroutine(result):
                loop.create_task(result)
            return
        if not loop.is_running():
            return

        async def call() -> None:
            result = fn()
            if asyncio.iscoroutine(result):
                await result

        future = asyncio.run_coroutine_threadsafe(call(), loop)
        if wait:
            try:
                future.result(timeout=5)
            except Exception:
                _logger.debug("span export: the loop did not finish closing the sender", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._stopping:
            return False
        self._encode_ended()
        self._drain()
        return True


_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})  # as the official OTLP/HTTP client
_MAX_ATTEMPTS = 6


class LoopSender:
    """Posts encoded span batches from the gateway's event loop with aiohttp.

    The same request the official exporter's requests transport makes (URL,
    headers, timeout), with its retry rules: up to 6 attempts for 429, 502,
    503, 504 and connection errors, exponential backoff with 20% jitter or the
    server's ``Retry-After``, all within the export timeout. Sending from the
    loop means no export thread: on a busy core that thread cost more CPU
    than the spans' encoding, most of it in handing the GIL back and forth.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str, headers: dict[str, str], timeout: float,
                 ssl_context: Any, metrics: Any, logger: logging.Logger) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.headers = headers
        self.timeout = timeout
        self.ssl = ssl_context
        self.metrics = metrics
        self.logger = logger
        self.stopping = False
        self._session: Any = None

    async def send(self, data: bytes, count: int) -> bool:
        """Send one batch; False (and logged) when it could not be delivered. Never raises."""
        try:
            with self.metrics.export_operation(count) as result:
                error, status = await self._post(data)
                if error is not None:
                    result.error = error
                    result.error_attrs = {"http.response.status_code": status} if status is not None else None
                    return False
            return True
        except Exception:  # the export operation's bookkeeping must not break the loop
            self.logger.exception("span export failed; %d spans are lost", count)
            return False

    async def _post(self, data: bytes) -> tuple[Exception | None, int | None]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1, ssl=self.ssl if self.ssl is not None else True),
                trust_env=False, skip_auto_headers=("User-Agent",),
            )
        deadline = self.loop.time() + self.timeout
        status: int | None = None
        error: Exception | None = None
        for attempt in range(_MAX_ATTEMPTS):
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            backoff = 2 ** attempt * random.uniform(0.8, 1.2)
            try:
                async with self._session.post(self.endpoint, data=data, headers=self.headers,
                                              timeout=aiohttp.ClientTimeout(total=remaining)) as resp:
                    status, reason = resp.status, resp.reason
                    await resp.read()
                    if 200 <= status < 400:
                        return None, status
                    error = RuntimeError(f"{status} {reason}")
                    if status not in _RETRYABLE_STATUS:
                        self.logger.error("Failed to export spans batch code: %s, reason: %s", status, reason)
                        return error, status
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                    if retry_after is not None:
                        backoff = retry_after
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                status, error = None, exc
            if attempt + 1 == _MAX_ATTEMPTS or backoff > deadline - self.loop.time() or self.stopping:
                break
            self.logger.warning("Transient error %s encountered while exporting spans batch, retrying in %.2fs.",
                                error, backoff)
            await asyncio.sleep(backoff)
        self.logger.error("Failed to export spans batch due to timeout, max retries or shutdown (last error: %s).",
                          error)
        return error or TimeoutError("span export timed out"), status

    async def close(self) -> None:
        self.stopping = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date), None when absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        import datetime
        from email.utils import parsedate_to_datetime

        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return max(0.0, moment.timestamp() - time.time())
    return max(0.0, seconds) if math.isfinite(seconds) else None


def http_span_exporter(**kwargs: Any) -> SpanExporter:
    """An OTLP/HTTP span exporter: the official one, serializing with ``otlp_wire`` (see the module docstring)."""
    return _fast_exporter_class()(**kwargs)


def _pin_requests_environment(session: Any, url: str) -> None:
    """Resolve what ``requests`` reads from the environment on every request, once, then stop it reading.

    With ``trust_env`` on, each request looks up proxies (``*_PROXY``,
    ``NO_PROXY``), ``~/.netrc`` credentials and ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE`` for the URL. The exporter always posts to the same URL,
    so the answers are fixed: put them on the session, as requests would merge
    them, and turn ``trust_env`` off.
    """
    from requests.utils import get_environ_proxies, get_netrc_auth

    for scheme, proxy in get_environ_proxies(url).items():  # {} when NO_PROXY covers the URL
        session.proxies.setdefault(scheme, proxy)
    if session.auth is None:
        session.auth = get_netrc_auth(url)
    # requests prefers these to the session's verify whenever trust_env is on
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


_fallback_logged = False


def _log_fallback_once(reason: str) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        _logger.debug("otlp: the fast span encoder is off (%s); using the official OTLP encoder", reason)


@functools.cache
def _fast_exporter_class() -> type[SpanExporter]:
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as official

    from interlock.plugins.exporters.otlp_wire import encode_spans

    too_large_error: type[Exception] = getattr(official, "RequestPayloadTooLargeError", ValueError)
    log: logging.Logger = getattr(official, "_logger", _logger)  # log as the official exporter does

    class FastOTLPSpanExporter(official.OTLPSpanExporter):
        """``OTLPSpanExporter`` that encodes with ``otlp_wire`` and hands the bytes to its own HTTP client.

        The seam is the exporter's ``_client.export(serialized: bytes)``
        (``_OTLPHTTPClient``: compression, headers, retries with backoff,
        timeout, shutdown), which the official ``export()`` calls right after
        encoding. ``export()`` below is the official one with the encoder
        swapped: the same shutdown check, self-metrics, size limit and result.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            own_session = None
            # session is the 8th positional parameter; a credential provider brings its own session
            if kwargs.get("session") is None and len(args) < 8 and not any(
                os.environ.get(name) for name in _CREDENTIAL_PROVIDER_VARS
            ):
                try:
                    import requests
                except ImportError:  # pragma: no cover - requests comes with the http exporter
                    pass
                else:
                    own_session = kwargs["session"] = requests.Session()
            super().__init__(*args, **kwargs)
            self._wire_send = self._find_seam()
            self._wire_session = None
            endpoint = getattr(self, "_endpoint", None)
            # only where the transport sends through session.request() without per-request settings
            # (1.45): older exporters pass verify= per request, which the pinned CA bundle would lose
            if own_session is not None and self._wire_send is not None and isinstance(endpoint, str):
                try:
                    _pin_requests_environment(own_session, endpoint)
                    self._wire_session = own_session
                except Exception:  # then requests keeps reading the environment itself
                    _logger.debug("otlp: could not resolve the proxy/netrc environment once", exc_info=True)

        def _find_seam(self) -> Callable[[bytes], Any] | None:
            send = getattr(getattr(self, "_client", None), "export", None)
            metrics = getattr(self, "_metrics", None)
            if not callable(send):
                _log_fallback_once("OTLPSpanExporter has no _client.export")
                return None
            if not callable(getattr(metrics, "export_operation", None)) or not hasattr(self, "_shutdown"):
                _log_fallback_once("OTLPSpanExporter has no _metrics.export_operation or _shutdown")
                return None
            return send  # type: ignore[no-any-return]

        def loop_sender(self, loop: asyncio.AbstractEventLoop) -> LoopSender | None:
            """A sender of encoded batches on ``loop`` (aiohttp), or None where only the requests transport can send.

            Only for what aiohttp reproduces exactly: no compression (a whole batch
            compressed on the event loop would stall it), no proxy, no client
            certificate, no netrc credentials and no credential-provider session.
            """
            session, client = self._wire_session, getattr(self, "_client", None)
            if session is None or client is None or self._wire_send is None:
                return None
            endpoint, headers = getattr(client, "_endpoint", None), getattr(client, "_headers", None)
            compression, timeout = getattr(client, "_compression", None), getattr(client, "_timeout", None)
            if not isinstance(endpoint, str) or not isinstance(headers, dict) or not isinstance(timeout, int | float):
                return None
            if getattr(compression, "value", "none") != "none" or session.proxies or session.cert or session.auth:
                return None
            if not endpoint.startswith(("http://", "https://")):
                return None
            verify = session.verify
            ssl_context: Any = None
            if endpoint.startswith("https://"):
                import ssl

                if verify is False:
                    ssl_context = False
                else:
                    ssl_context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            return LoopSender(loop, endpoint, dict(headers), float(timeout), ssl_context, self._metrics, log)

        @property
        def sends_encoded(self) -> bool:
            """Whether :meth:`export_encoded` works (the transport seam was found)."""
            return self._wire_send is not None

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if self._wire_send is None:
                return super().export(spans)
            return self.export_encoded(lambda: encode_spans(spans), len(spans))

        def export_encoded(self, encode: Callable[[], bytes], count: int) -> SpanExportResult:
            """Send ``count`` spans whose request bytes ``encode()`` produces (requires :attr:`sends_encoded`)."""
            send = self._wire_send
            if send is None:
                raise RuntimeError("this OTLPSpanExporter cannot send pre-encoded spans")
            if self._shutdown:
                log.warning("Exporter already shutdown, ignoring batch")
                return SpanExportResult.FAILURE
            with self._metrics.export_operation(count) as result:
                try:
                    data = encode()
                except Exception as error:  # noqa: BLE001 - as the official exporter: fail the batch
                    log.error("Failed to encode span batch: %s", error)
                    result.error = error
                    return SpanExportResult.FAILURE
                limit = getattr(self, "_max_request_size", 0) or 0
                if 0 < limit < len(data):
                    log.warning(
                        "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                        len(data), limit)
                    result.error = too_large_error(
                        f"Serialized span request size {len(data)} bytes exceeds max_request_size {limit} bytes.")
                    return SpanExportResult.FAILURE
                outcome = send(data)
                if not outcome.success:
                    result.error = outcome.error
                    status = outcome.status_code
                    result.error_attrs = {"http.response.status_code": status} if status is not None else None
                    return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

    return FastOTLPSpanExporter


@hookimpl
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    telemetry = settings.get("telemetry")
    if not isinstance(telemetry, TelemetrySettings) or not telemetry.enabled:
        return
    traces, metrics = "otlp" in telemetry.traces_exporters, "otlp" in telemetry.metrics_exporters
    if traces or metrics:
        register(OTLPExporter(telemetry, traces=traces, metrics=metrics))
