"""``interlock serve --demo``: the real gateway in front of simulated providers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

import openai

from tests.conftest import ServeProcess


def test_demo_routes_and_falls_back_without_any_key(serve: Callable[..., ServeProcess]) -> None:
    sp = serve("--demo")
    assert "DEMO MODE" in sp.output()
    with openai.OpenAI(base_url=sp.base_url, api_key="unused", max_retries=0) as client:
        seen: Counter[str] = Counter()
        for _ in range(40):
            raw = client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.parse().choices[0].message.content.startswith("Fake reply")
            seen[raw.headers["x-interlock-provider"] + ":" + raw.headers["x-interlock-fallback"]] += 1
        # the flaky simulated provider fails now and then; the route hides it by falling back
        assert seen["openai:false"] > 0
        assert seen["backup:true"] > 0
        stream = client.chat.completions.create(
            model="balanced", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("Fake reply")
    # every request's trace reaches the terminal as a span tree, a fallback showing both attempts
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "then fallback" not in sp.output():
        time.sleep(0.1)  # spans are batched: printed within the batch delay
    out = sp.output()
    assert "send traces to Phoenix or Jaeger instead" in out
    assert "└─ route smart  backup/gpt-4o-mini" in out and "fallback=yes" in out
    assert "├─ chat gpt-4o  via openai  overloaded  then fallback  HTTP 503" in out
    assert "└─ chat gpt-4o-mini  via backup  ok  in=" in out


async def test_the_tree_exporter_prints_one_tree_per_trace(capsys: pytest.CaptureFixture[str]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from interlock.plugins.exporters.span_tree import SpanTreeExporter

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SpanTreeExporter()))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("POST /v1/chat/completions"):
        with tracer.start_as_current_span("route smart", attributes={"interlock.fallback_used": True}):
            with tracer.start_as_current_span("chat a", attributes={"interlock.outcome": "timeout"}):
                pass
            with tracer.start_as_current_span("chat b", attributes={"interlock.cost_usd": 0.00012}):
                pass
    provider.force_flush()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].startswith("trace ") and "POST /v1/chat/completions" in lines[0]
    assert lines[1].startswith("└─ route smart  fallback=yes  ")
    assert lines[2].startswith("   ├─ chat a  timeout  ")
    assert lines[3].startswith("   └─ chat b  $0.000120  ")
