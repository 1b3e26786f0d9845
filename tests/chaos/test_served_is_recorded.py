"""Served ⇒ recorded: no header or body a client sends can get a request answered and kept out of the ledger.

Property-based (hypothesis): raw HTTP requests whose ``x-interlock-tags`` bytes, extra
headers and body fields (``user``, ``metadata``, message text, ``model``) are drawn at
random, including bytes that are not UTF-8, control characters and very long values. The
gateway runs on its own event loop in a thread (tests/chaos/_threaded.py), so the property is
checked with plain sockets; every request that got a 200 must have its row in the SQLite ledger afterwards,
and every request the fake upstream saw (billed) must be in the ledger too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.plugins.exporters.ledger import LedgerExporter
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import running_gateway
from tests.chaos._threaded import BackgroundLoop, background_loop

EXAMPLES = 250


@dataclass
class Served:
    """A fake upstream and an in-process gateway running on a background loop (tests/chaos/_threaded.py)."""

    loop: BackgroundLoop
    db: Path
    port: int
    fake: FakeOpenAI
    exporter: LedgerExporter


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Served]:
    db = tmp_path / "ledger.db"
    with background_loop() as bg:
        fake = bg.enter(FakeOpenAI(models=["gpt-4o", "gpt-4o-mini"]))
        toml = f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "sk-served-recorded-provider-key"

[routes.smart]
chain = "openai/gpt-4o > openai/gpt-4o-mini"

[database]
url = "sqlite+aiosqlite:///{db}"

[exporters.ledger]
flush_interval = 3600
"""
        gw = bg.enter(running_gateway(toml, workdir=tmp_path))
        [exporter] = [e for e in gw.gateway.exporters if isinstance(e, LedgerExporter)]
        yield Served(bg, db, int(gw.root.rsplit(":", 1)[1]), fake, exporter)


def send(port: int, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """One POST /v1/chat/completions with raw header bytes; the status, or 0 when the connection broke."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/chat/completions", skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        for name, value in headers:
            conn.putheader(name, value)  # type: ignore[arg-type]  # http.client sends bytes values as they are
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (ConnectionError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


# header values: any bytes except the line breaks that would end the header (http.client refuses those)
header_bytes = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
texts = st.text(max_size=200) | st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=5000)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.booleans()):
        headers.append((b"x-interlock-tags", draw(header_bytes | st.text(max_size=60).map(str.encode))))
    if draw(st.booleans()):
        name = draw(st.from_regex(rb"\Ax-[a-z]{1,12}\Z"))
        headers.append((name, draw(header_bytes)))
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["gpt-4o", "smart", "openai/gpt-4o-mini"]) | st.text(max_size=40)),
        "messages": [{"role": "user", "content": draw(texts)}],
    }
    if draw(st.booleans()):
        body["user"] = draw(texts | json_values)
    if draw(st.booleans()):
        body["metadata"] = draw(st.dictionaries(st.text(max_size=30), json_values, max_size=6) | json_values)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return headers, body


def ledger_ids(db: Path) -> dict[str, str | None]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT id, invalid_fields FROM requests"))


def test_every_served_request_is_in_the_ledger(gateway: Served) -> None:
    port, fake, exporter = gateway.port, gateway.fake, gateway.exporter
    served: list[str] = []
    statuses: dict[int, int] = {}
    counter = iter(range(1_000_000))

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(requests())
    def one(request: tuple[list[tuple[bytes, bytes]], dict[str, Any]]) -> None:
        headers, body = request
        request_id = f"req-prop-{next(counter):06d}"
        status = send(port, [(b"x-request-id", request_id.encode()), *headers], json.dumps(body).encode())
        statuses[status] = statuses.get(status, 0) + 1
        assert status != 0 and status < 500, (status, headers, body)  # a clear error or an answer, never a 5xx
        if status == 200:
            served.append(request_id)

    one()
    gateway.loop.run(exporter.flush())
    recorded = ledger_ids(gateway.db)
    print(f"\nserved ⇒ recorded: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}, "
          f"{len(served)} served, {sum(1 for v in recorded.values() if v)} stored with replaced values")
    assert served, "the property needs requests that were answered"
    missing = [rid for rid in served if rid not in recorded]
    assert missing == []
    # billed ⇒ recorded: every request the upstream answered carried a request id the ledger holds
    assert exporter.dropped == 0
    upstream = sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))
    assert upstream <= len([rid for rid in recorded if rid.startswith("req-prop-")]) + statuses.get(0, 0)


def test_tags_that_are_not_utf8_are_refused_at_the_door(gateway: Served) -> None:
    port, fake = gateway.port, gateway.fake
    before = len(fake.requests)
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for value in (b"team-\xff\xfe", b"a,\x01b", b"ok,\x7f"):
        assert send(port, [(b"x-interlock-tags", value)], body) == 400
    assert len(fake.requests) == before  # refused before any upstream call: nothing billed
    assert send(port, [(b"x-interlock-tags", "équipe,🔥".encode())], body) == 200
