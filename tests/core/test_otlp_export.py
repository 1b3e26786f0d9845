"""Real exports from a running ``interlock serve`` into the in-process OTLP receiver (http and grpc).

The gateway is configured only through the standard ``OTEL_*`` variables; spans
and metrics are flushed by the graceful shutdown (SIGINT). A collector that is
not there costs dropped telemetry, never a failed request.
"""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from interlock.core.telemetry import names as T
from interlock.testing import FakeOpenAI, Fault
from interlock.testing.otlp import OTLPReceiver, grpc_available
from tests.conftest import ServeProcess, free_port, openai_config
from tests.core._api_helpers import HELLO


@pytest.fixture
def fake_thread() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini"]).run_in_thread() as fake:
        yield fake


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver().run_in_thread() as r:
        yield r


def stop(sp: ServeProcess) -> int:
    sp.proc.send_signal(signal.SIGINT)  # graceful: the providers flush
    return sp.proc.wait(timeout=60)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_serve_exports_a_fallback_trace_and_metrics(
    protocol: str, fake_thread: FakeOpenAI, receiver: OTLPReceiver, serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    if protocol == "grpc" and not grpc_available():
        pytest.skip("grpcio is not installed")
    config = tmp_path / "interlock.toml"
    config.write_text(openai_config(fake_thread.base_url))
    endpoint = receiver.grpc_url if protocol == "grpc" else receiver.http_url
    sp = serve("--config", str(config), env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "interlock-otlp-test",
    })
    fake_thread.add_fault(Fault(status=500, model="gpt-4o"))
    with openai.OpenAI(base_url=sp.base_url, api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.headers["x-interlock-fallback"] == "true"
    assert stop(sp) == 0, sp.output()

    transport = "grpc" if protocol == "grpc" else "http"
    assert (transport, "traces") in receiver.exports
    server = receiver.span("POST /v1/chat/completions")
    routing = receiver.span("route smart")
    failed = receiver.span("chat gpt-4o")
    ok = receiver.span("chat gpt-4o-mini")
    assert server["kind"] == "SERVER" and routing["kind"] == "INTERNAL"
    assert failed["kind"] == ok["kind"] == "CLIENT"
    assert routing["parent_span_id"] == server["span_id"]
    assert failed["parent_span_id"] == ok["parent_span_id"] == routing["span_id"]
    assert len({s["trace_id"] for s in (server, routing, failed, ok)}) == 1
    assert server["resource"]["service.name"] == "interlock-otlp-test"
    assert server["scope"] == "interlock"

    assert routing["attributes"][T.INTERLOCK_CANDIDATES] == ("openai/gpt-4o", "backup/gpt-4o-mini")
    assert routing["attributes"][T.INTERLOCK_FALLBACK_USED] is True
    assert routing["attributes"][T.INTERLOCK_ATTEMPTS] == 2
    assert [e["name"] for e in routing["events"]] == [T.EVENT_FALLBACK]
    assert failed["attributes"][T.ERROR_TYPE] == "server_error" and failed["status"] == "ERROR"
    assert failed["attributes"][T.GEN_AI_PROVIDER_NAME] == "openai"
    assert ok["attributes"][T.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert ok["attributes"][T.GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert ok["attributes"][T.INTERLOCK_COST_USD] > 0
    assert fake_thread.requests[-1].headers["traceparent"].split("-")[2] == ok["span_id"]

    # metrics arrive on the final flush too
    names = receiver.metric_names()
    for name in (T.METRIC_TOKEN_USAGE, T.METRIC_OPERATION_DURATION, T.METRIC_REQUESTS, T.METRIC_COST,
                 T.METRIC_FALLBACKS, T.METRIC_OVERHEAD, T.METRIC_IN_FLIGHT, T.METRIC_BREAKER_STATE):
        assert name in names, (name, names)
    (requests,) = [p for p in receiver.points(T.METRIC_REQUESTS) if p["value"]]
    assert requests["attributes"] == {T.INTERLOCK_ROUTE: "smart", T.INTERLOCK_HTTP_STATUS_CLASS: "2xx"}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_dead_collector_fails_no_request(
    protocol: str, fake_thread: FakeOpenAI, serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    if protocol == "grpc" and not grpc_available():
        pytest.skip("grpcio is not installed")
    config = tmp_path / "interlock.toml"
    config.write_text(openai_config(fake_thread.base_url))
    sp = serve("--config", str(config), env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # export (and fail) while requests are being served
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    })
    fake_thread.add_fault(Fault(status=500, model="gpt-4o", times=5))
    with openai.OpenAI(base_url=sp.base_url, api_key="k", max_retries=0) as client:
        for i in range(20):
            completion = client.chat.completions.create(model="smart", messages=HELLO)
            assert completion.choices[0].message.content
            if i % 5 == 0:
                stream = client.chat.completions.create(model="smart", messages=HELLO, stream=True)
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with urllib.request.urlopen(sp.base_url.removesuffix("/v1") + "/health", timeout=5) as resp:
        assert resp.status == 200
    assert sp.proc.poll() is None
    assert stop(sp) == 0, sp.output()
