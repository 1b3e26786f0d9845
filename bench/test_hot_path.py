"""Micro-benchmarks of the router's hot path (pytest-benchmark), so regressions show in numbers.

Not part of the default test run (``testpaths = ["tests"]``); run explicitly::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/pytest bench/test_hot_path.py                         # table of timings
    .venv/bin/pytest bench/test_hot_path.py --benchmark-autosave     # keep a baseline (.cache/bench/hot-path/)
    .venv/bin/pytest bench/test_hot_path.py --benchmark-compare      # compare with the last saved run

Each benchmark also asserts the result, so a refactor that breaks the behaviour fails here
instead of getting faster. Everything runs in-process on a gateway built from a config (no
sockets): model resolution, routing rules, strategy ordering, cost, request validation, JSON and
SSE chunk handling. Async pieces run on one event loop kept for the module; the
``loop_overhead`` benchmark is the floor they include.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

from interlock.core import jsonutil, rules, sse  # noqa: E402
from interlock.core.config import parse  # noqa: E402
from interlock.core.gateway import Gateway  # noqa: E402
from interlock.core.types import RequestContext, Usage  # noqa: E402
from interlock.core.validate import validate_chat  # noqa: E402

CONFIG: dict[str, Any] = {
    "providers": {
        "up": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-a"},
        "up2": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-b"},
        "anth": {"type": "anthropic", "base_url": "http://127.0.0.1:9", "api_key": "sk-c"},
    },
    "routes": {
        "chain": {"chain": "up/gpt-4o-mini > up2/gpt-4o-mini > anth/claude-3-5-haiku-20241022"},
        "weighted": {"strategy": "weighted", "targets": [
            {"model": "up/gpt-4o-mini", "weight": 3}, {"model": "up2/gpt-4o-mini", "weight": 1}]},
        "round-robin": {"strategy": "round-robin", "chain": "up/gpt-4o-mini > up2/gpt-4o-mini"},
        "least-latency": {"strategy": "least-latency", "chain": "up/gpt-4o-mini > up2/gpt-4o-mini"},
        "least-busy": {"strategy": "least-busy", "chain": "up/gpt-4o-mini > up2/gpt-4o-mini"},
        "lowest-cost": {"strategy": "lowest-cost",
                        "chain": "up/gpt-4o-mini > anth/claude-3-5-haiku-20241022"},
        "big": {"chain": "up/gpt-4o"},
    },
    "rules": [
        {"name": "long", "route": "big", "min_prompt_tokens": 32000},
        {"name": "team", "route": "weighted", "headers": {"x-team": "search"}},
        {"name": "batch", "route": "weighted", "metadata": {"use_case": "~^batch"}},
        {"name": "code", "route": "chain", "keywords": ["traceback", "stack trace"]},
    ],
    "exporters": {"ledger": {"enabled": False}},
}

BODY: dict[str, Any] = {
    "model": "chain",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Summarise the following paragraph in one sentence. " * 8},
    ],
    "max_tokens": 256,
    "temperature": 0.2,
    "metadata": {"use_case": "chat"},
}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def gateway() -> Gateway:
    return Gateway(parse(CONFIG, environ={}), load_entrypoints=False, environ={})


def ctx(body: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
        stream: bool = False) -> RequestContext:
    return RequestContext(request_id="req-bench", endpoint="chat", body=body or BODY, stream=stream,
                          headers=headers or {})


# -- resolution and rules -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["chain", "up/gpt-4o-mini", "gpt-4o-mini", "claude-3-5-haiku-20241022"])
def test_resolve_model(benchmark: Any, gateway: Gateway, model: str) -> None:
    route = benchmark(gateway.resolver.resolve, model)
    assert route.targets


def test_rules_no_match(benchmark: Any, gateway: Gateway) -> None:
    """Every rule evaluated (the common case: most requests match no rule)."""
    c = ctx()
    assert benchmark(rules.match_first, gateway.resolver.rules, c) is None


def test_rules_header_match(benchmark: Any, gateway: Gateway) -> None:
    c = ctx(headers={"x-team": "search"})
    rule, _ = benchmark(rules.match_first, gateway.resolver.rules, c)
    assert rule.name == "team"


def test_route_for(benchmark: Any, gateway: Gateway) -> None:
    """Resolution plus the select_route hook (rules run through pluggy)."""
    c = ctx()
    assert benchmark(gateway.router.route_for, c, "chain").name == "chain"


# -- strategy ordering ----------------------------------------------------------------------------


def test_loop_overhead(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """The floor of every async benchmark below: one run_until_complete of a trivial coroutine."""

    async def nothing() -> int:
        return 1

    assert benchmark(lambda: loop.run_until_complete(nothing())) == 1


@pytest.mark.parametrize("route", ["chain", "weighted", "round-robin", "least-latency", "least-busy", "lowest-cost"])
def test_plan(benchmark: Any, gateway: Gateway, loop: asyncio.AbstractEventLoop, route: str) -> None:
    """Route, breaker admission and the strategy's order of the healthy targets."""
    c = ctx(body={**BODY, "model": route})
    plan = benchmark(lambda: loop.run_until_complete(gateway.router.plan(c, route)))
    assert len(plan.order) >= 2


# -- cost -----------------------------------------------------------------------------------------


def test_price_lookup_and_cost(benchmark: Any, gateway: Gateway) -> None:
    usage = Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=200)
    cost = benchmark(gateway.router.price, usage, "up", "gpt-4o-mini")
    assert isinstance(cost, Decimal) and cost > 0


def test_price_dated_snapshot(benchmark: Any, gateway: Gateway) -> None:
    """A dated model id resolves to its base model's price (the slower lookup path)."""
    usage = Usage(prompt_tokens=1200, completion_tokens=300)
    cost = benchmark(gateway.router.price, usage, "anth", "claude-3-5-haiku-20241022")
    assert isinstance(cost, Decimal) and cost > 0


# -- request handling -----------------------------------------------------------------------------


def test_validate_chat(benchmark: Any) -> None:
    body = copy.deepcopy(BODY)
    benchmark(validate_chat, body)


def test_json_request_roundtrip(benchmark: Any) -> None:
    raw = jsonutil.dumps(BODY)
    assert benchmark(lambda: jsonutil.dumps(jsonutil.loads(raw))) == raw


# -- SSE chunk handling ---------------------------------------------------------------------------

_CHUNK = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
          b'"choices":[{"index":0,"delta":{"content":"w1 "},"logprobs":null,"finish_reason":null}]}\n\n')
_STREAM = [_CHUNK] * 22 + [b"data: [DONE]\n\n"]


class _Body:
    """An aiohttp-like body: ``iter_any()`` yields the upstream's writes, split as TCP might."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def test_sse_parse_stream(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """One 22-chunk OpenAI stream through the upstream SSE reader, one write per event."""

    async def read() -> int:
        n = 0
        async for _ in sse.iter_sse_data(_Body(_STREAM)):
            n += 1
        return n

    assert benchmark(lambda: loop.run_until_complete(read())) == 23


def test_sse_parse_coalesced(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """The same stream arriving in 3 reads of ~1 KB (events split mid-line)."""
    blob = b"".join(_STREAM)
    pieces = [blob[i:i + 1024] for i in range(0, len(blob), 1024)]

    async def read() -> int:
        n = 0
        async for _ in sse.iter_sse_data(_Body(pieces)):
            n += 1
        return n

    assert benchmark(lambda: loop.run_until_complete(read())) == 23


def test_sse_chunk_reencode(benchmark: Any) -> None:
    """Per chunk, when a stream is not passed through verbatim: parse, touch, re-encode."""
    payload = _CHUNK[6:-2]

    def per_chunk() -> bytes:
        obj = jsonutil.loads(payload)
        obj["model"] = "gpt-4o-mini"
        return sse.encode_event(jsonutil.dumps(obj))

    assert benchmark(per_chunk).startswith(b"data: {")
