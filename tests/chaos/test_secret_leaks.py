"""No key leaks: provider, gateway and admin keys appear nowhere the gateway writes or answers.

A real ``interlock serve`` (debug logging, decision log lines, spans with content capture to an
OTLP receiver, Prometheus metrics, the SQLite ledger) gets traffic with distinctive keys:
answers, fallbacks, upstream failures that echo the key they were sent (a 401 quoting it, a 500
and an in-band stream error quoting the ``Authorization`` header, an Anthropic 401 quoting the
``x-api-key``), a timeout, wrong and missing gateway keys, a wrong admin key, a gateway key
created through the admin API. Then every place is scanned for every key, whole and by its tail:
the process output, every exported span and metric point, the ledger database and its WAL (raw
bytes, while it runs and after it stopped), every response body and header, the health,
models, plugins, keys, spend and budget endpoints, ``/metrics``, and the output of
``interlock explain``, ``check``, ``plugins`` and ``costs``.

Each check is paired with proof that it is not vacuous: the upstreams did receive the keys,
their error bodies did carry them, spans did capture content, the ledger did get the rows.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from interlock.testing import FakeAnthropic, FakeOpenAI, Fault
from interlock.testing.otlp import OTLPReceiver
from tests.chaos._threaded import background_loop
from tests.chaos._upstream import ChaosUpstream
from tests.conftest import ServeProcess

PROVIDER_KEY = "sk-chaos-PROVIDER-SECRET-123456"
BACKUP_KEY = "sk-chaos-BACKUP-SECRET-654321xyz"
ANTHROPIC_KEY = "sk-ant-chaos-ANTHROPIC-SECRET-777"
GATEWAY_KEY = "sk-chaos-GATEWAY-KEY-abcdef123456"
ADMIN_KEY = "sk-chaos-ADMIN-KEY-fedcba654321"
WRONG_KEY = "sk-chaos-WRONG-KEY-000000999999"  # presented by a client, never valid: not echoed either
WRONG_ADMIN = "sk-chaos-WRONG-ADMIN-888888aaaa"
ENV = {"CHAOS_PROVIDER_KEY": PROVIDER_KEY, "CHAOS_BACKUP_KEY": BACKUP_KEY, "CHAOS_ANTHROPIC_KEY": ANTHROPIC_KEY,
       "CHAOS_GATEWAY_KEY": GATEWAY_KEY, "CHAOS_ADMIN_KEY": ADMIN_KEY}
HELLO = [{"role": "user", "content": "hello secret keeper"}]
#: requests that reach routing (and so the ledger); refused keys do not
ROUTED = 14


def config(chaos: str, good: str, ant: str, db: Path) -> str:
    return f"""
[server]
admin_key = "${{CHAOS_ADMIN_KEY}}"

[logging]
level = "debug"
decisions = true

[telemetry]
capture_content = "span"
prometheus = true

[database]
url = "sqlite+aiosqlite:///{db}"

[exporters.ledger]
flush_interval = 0.2

[[keys]]
name = "chaos-team"
key = "${{CHAOS_GATEWAY_KEY}}"
team = "chaos"

[providers.chaos]
type = "openai"
base_url = "{chaos}"
api_key = "${{CHAOS_PROVIDER_KEY}}"
timeout = 1
responses = false

[providers.good]
type = "openai"
base_url = "{good}"
api_key = "${{CHAOS_BACKUP_KEY}}"

[providers.ant]
type = "anthropic"
base_url = "{ant}"
api_key = "${{CHAOS_ANTHROPIC_KEY}}"

[routes.ok]
chain = "chaos/ok--plain"

[routes.fb-401]
chain = "chaos/status_401--fb > good/gpt-4o"

[routes.solo-401]
chain = "chaos/status_401--solo"

[routes.solo-500]
chain = "chaos/status_500--solo"

[routes.hang]
chain = "chaos/hang_before_headers--solo"

[routes.midstream]
chain = "chaos/error_event--solo"

[routes.claude]
chain = "ant/claude-sonnet-4-6 > good/gpt-4o"

[routes.claude-solo]
chain = "ant/claude-haiku-4-5"
"""


class Seen:
    """Everything the test saw, by place, as text."""

    def __init__(self) -> None:
        self.places: dict[str, list[str]] = {}

    def add(self, place: str, data: str | bytes | Any) -> None:
        if isinstance(data, bytes):
            text = data.decode("latin-1")  # byte for byte: a key is ASCII whatever surrounds it
        elif isinstance(data, str):
            text = data
        else:
            text = json.dumps(data, default=repr)
        self.places.setdefault(place, []).append(text)

    def response(self, place: str, resp: httpx2.Response) -> httpx2.Response:
        self.add(place, resp.content)
        self.add(f"{place} (headers)", "\n".join(f"{k}: {v}" for k, v in resp.headers.items()))
        return resp


@pytest.fixture
def upstreams() -> Iterator[tuple[ChaosUpstream, FakeOpenAI, FakeAnthropic, OTLPReceiver]]:
    with background_loop() as bg, OTLPReceiver().run_in_thread() as receiver:
        chaos = bg.enter(ChaosUpstream())
        good = bg.enter(FakeOpenAI(models=["gpt-4o"], api_key=BACKUP_KEY))
        ant = bg.enter(FakeAnthropic(api_key=ANTHROPIC_KEY))
        yield chaos, good, ant, receiver


def cli(*args: str) -> str:
    exe = Path(sys.executable).with_name("interlock")
    env = {"PATH": str(exe.parent), **ENV}
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)
    return f"$ interlock {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"


def db_files(directory: Path) -> dict[str, bytes]:
    """Every file of the ledger's directory (the database, its -wal and -shm, any journal), raw."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_no_key_leaks_anywhere(
    upstreams: tuple[ChaosUpstream, FakeOpenAI, FakeAnthropic, OTLPReceiver],
    serve: Callable[..., ServeProcess],
    tmp_path: Path,
) -> None:
    chaos, good, ant, receiver = upstreams
    ant.add_fault(Fault(status=401, model="claude-sonnet-4-6", times=None, body={
        "type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key: {ANTHROPIC_KEY}"}}))
    ant.add_fault(Fault(status=401, model="claude-haiku-4-5", times=None, body={
        "type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key: {ANTHROPIC_KEY}"}}))
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    db = ledger_dir / "interlock.db"
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(config(chaos.base_url, good.base_url, ant.url, db))
    sp = serve("--config", str(cfg), env={
        **ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    root = sp.base_url.removesuffix("/v1")
    seen = Seen()
    user = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    with httpx2.Client(base_url=root, timeout=60) as http:

        def chat(route: str, *, stream: bool = False, headers: dict[str, str] | None = None) -> httpx2.Response:
            body = {"model": route, "messages": HELLO, "stream": stream}
            return seen.response(f"POST /v1/chat/completions {route}", http.post(
                "/v1/chat/completions", json=body, headers=user if headers is None else headers))

        # answers, with the official SDKs, streamed and not
        sdk = openai.OpenAI(base_url=sp.base_url, api_key=GATEWAY_KEY, max_retries=0)
        with sdk:
            raw = sdk.chat.completions.with_raw_response.create(model="ok", messages=HELLO)  # type: ignore[arg-type]
            seen.add("openai SDK answer", raw.http_response.content)
            stream = sdk.chat.completions.create(model="fb-401", messages=HELLO, stream=True)  # type: ignore[arg-type]
            seen.add("openai SDK stream", [chunk.model_dump() for chunk in stream])
            with pytest.raises(openai.APIStatusError) as failed:
                sdk.chat.completions.create(model="solo-401", messages=HELLO)  # type: ignore[arg-type]
            seen.add("openai SDK error", failed.value.response.content)
            seen.add("openai SDK error (message)", failed.value.message)
        claude = anthropic.Anthropic(base_url=root, api_key=GATEWAY_KEY, max_retries=0)
        with claude:
            answer = claude.messages.create(model="claude", max_tokens=64, messages=HELLO)  # type: ignore[arg-type]
            seen.add("anthropic SDK answer", answer.model_dump())
            with pytest.raises(anthropic.APIStatusError) as refused:
                claude.messages.create(model="claude-solo", max_tokens=64, messages=HELLO)  # type: ignore[arg-type]
            seen.add("anthropic SDK error", refused.value.response.content)

        # failures that echo the keys, a timeout, a stream that breaks after it started
        assert chat("fb-401").status_code == 200
        assert chat("solo-401").status_code == 502
        assert chat("solo-500").status_code == 502
        assert chat("hang").status_code == 504
        assert chat("solo-401", stream=True).status_code == 502
        broken = chat("midstream", stream=True)
        assert broken.status_code == 200 and b'"error"' in broken.content and b"[DONE]" not in broken.content
        assert seen.response("POST /v1/responses", http.post("/v1/responses", headers=user, json={
            "model": "ok", "input": "hello secret keeper", "store": True})).status_code == 200
        assert seen.response("POST /v1/messages", http.post("/v1/messages", headers={"x-api-key": GATEWAY_KEY}, json={
            "model": "claude-solo", "max_tokens": 32, "messages": HELLO})).status_code == 502

        # wrong and missing keys: refused, and the key presented is not repeated back
        assert chat("ok", headers={"Authorization": f"Bearer {WRONG_KEY}"}).status_code == 401
        assert chat("ok", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 401
        assert chat("ok", headers={}).status_code == 401
        assert seen.response("POST /v1/messages (wrong key)", http.post("/v1/messages", headers={"x-api-key": WRONG_KEY},
                             json={"model": "claude", "max_tokens": 8, "messages": HELLO})).status_code == 401
        assert seen.response("GET /-/keys (wrong admin key)", http.get(
            "/-/keys", headers={"Authorization": f"Bearer {WRONG_ADMIN}"})).status_code == 401
        assert seen.response("GET /-/keys (gateway key)", http.get("/-/keys", headers=user)).status_code == 403  # a gateway key is never admin (admin_only)

        # a key created through the admin API: shown once, in that answer only, then used
        created_resp = http.post("/-/keys", headers=admin, json={"name": "made-here", "team": "chaos"})
        assert created_resp.status_code in (200, 201), created_resp.text
        created = created_resp.json()["key"]
        assert isinstance(created, str) and len(created) >= 16
        assert chat("ok", headers={"Authorization": f"Bearer {created}"}).status_code == 200

        # what operators and scrapers read
        for path, headers in [("/health", {}), ("/health/providers", admin), ("/metrics", admin), ("/v1/models", user),
                              ("/v1/models/ok", user), ("/-/plugins", admin), ("/-/keys", admin), ("/spend", admin),
                              ("/-/budgets", admin)]:
            resp = seen.response(f"GET {path}", http.get(path, headers=headers))
            assert resp.status_code == 200, (path, resp.status_code, resp.text)
        assert seen.response("POST /-/reload", http.post("/-/reload", headers=admin)).status_code == 200

        # the ledger while the gateway runs (the WAL holds the recent writes)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and rows(db) < ROUTED:
            time.sleep(0.1)
        assert rows(db) == ROUTED
        for name, data in db_files(ledger_dir).items():
            seen.add(f"ledger file {name} (running)", data)
        assert any(name.endswith("-wal") for name in db_files(ledger_dir))

    for args in (["explain", "ok"], ["explain", "fb-401"], ["explain", "claude"], ["check"], ["plugins"],
                 ["plugins", "--json"], ["costs", "--by", "model,team"]):
        seen.add(f"interlock {args[0]}", cli(*args, "--config", str(cfg)))

    sp.proc.send_signal(signal.SIGINT)  # graceful: spans, metrics and ledger rows are flushed
    assert sp.proc.wait(timeout=60) == 0, sp.output()
    log = sp.output()
    seen.add("serve output (debug log, decision lines)", log)
    seen.add("exported spans", receiver.spans)
    seen.add("exported metrics", receiver.metrics)
    for name, data in db_files(ledger_dir).items():
        seen.add(f"ledger file {name} (stopped)", data)

    # not vacuous: the keys were sent upstream and echoed back, and every sink got its data
    assert f"Bearer {PROVIDER_KEY}" in [r.headers.get("authorization") for r in chaos.requests]
    assert any(r.headers.get("x-api-key") == ANTHROPIC_KEY for r in ant.requests)
    assert any(r.headers.get("authorization") == f"Bearer {BACKUP_KEY}" for r in good.requests)
    assert "DEBUG" in log and "decision {" in log
    assert any("gen_ai.input.messages" in s["attributes"] for s in receiver.spans)  # content capture is on
    assert any("hello secret keeper" in json.dumps(s["attributes"], default=repr) for s in receiver.spans)
    assert any("status_401" in json.dumps(s, default=repr) for s in receiver.spans)
    assert "gen_ai" in "".join(seen.places["GET /metrics"])
    assert rows(db) == ROUTED

    secrets = {"provider key": PROVIDER_KEY, "backup provider key": BACKUP_KEY, "anthropic key": ANTHROPIC_KEY,
               "gateway key": GATEWAY_KEY, "created gateway key": created, "admin key": ADMIN_KEY,
               "wrong gateway key": WRONG_KEY, "wrong admin key": WRONG_ADMIN}
    leaks = []
    for place, texts in seen.places.items():
        blob = "\n".join(texts)
        for name, secret in secrets.items():
            for fragment in (secret, secret[8:], secret[-12:]):  # whole, or any telling part of it
                if fragment in blob:
                    leaks.append(f"{name} ({fragment!r}) in {place}")
    print(f"\nsecret scan: {len(secrets)} keys x {len(seen.places)} places, "
          f"{sum(len(t) for t in seen.places.values())} texts, {len(leaks)} leaks")
    for place in sorted(seen.places):
        print(f"  {place}")
    assert not leaks, "\n".join(leaks)
    # the echoes reached the gateway and were masked, in the answer and in the log alike
    for place in ("POST /v1/chat/completions solo-401", "POST /v1/chat/completions solo-500",
                  "POST /v1/chat/completions midstream", "anthropic SDK error"):
        assert "****" in "".join(seen.places[place]), (place, seen.places[place])
    assert "****" in log


def rows(db: Path) -> int:
    """Requests in the ledger so far (read-only, beside the running writer)."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
