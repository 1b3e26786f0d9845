"""The fault matrix: every upstream fault kind, streamed and not, with a fallback and without.

Each cell is one request through a real gateway, driven by the official ``openai`` SDK; the
bytes it received are judged exactly (``tests/chaos/_client.py``). Every cell must end in

- a **full answer**: the complete content with a finish reason (a stream ends with ``[DONE]``), or
- an **explicit error**: an error status with an OpenAI error body, or, once a stream has
  started, the explicit ``data: {"error": ...}`` event the gateway sends instead of ``[DONE]``;

never a **silent truncation** (a stream that ends without ``[DONE]`` and without an error
event, or a 200 whose content is broken or missing) and never a **hang** (no end within
``CELL_TIMEOUT``). With a fallback configured, every fault that comes before a stream commits
must be answered by the fallback; a request error (400) fails fast; a fault after a stream
committed ends in the error event (``continue_stream`` is off). Every cell's request must also
reach the decision record and the SQLite ledger with a status consistent with what the client saw.

``pytest -s tests/chaos/test_fault_matrix.py`` prints the matrix and its counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from interlock.plugins.exporters.ledger import LedgerExporter
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import RunningGateway
from tests.chaos._client import TeeTransport, json_or_none, openai_client, openai_error, sse_data
from tests.chaos._upstream import KINDS, REPLY, ChaosUpstream, Kind
from tests.conftest import GatewayFactory, free_port

PROVIDER_KEY = "sk-chaos-PROVIDER-SECRET-123456"
PROMPT = [{"role": "user", "content": "hello chaos"}]
FALLBACK_REPLY = "Fake reply to: hello chaos"
#: a cell that has not ended after this long is a hang (the gateway's own timeouts are 3 s)
CELL_TIMEOUT = 30.0
#: the chaos provider's attempt timeout: the whole answer, or the silence between stream chunks
ATTEMPT_TIMEOUT = 3.0
CONCURRENCY = 12

FULL, ERROR, SILENT, HANG = "full answer", "explicit error", "SILENT TRUNCATION", "HANG"


@dataclass(frozen=True)
class Cell:
    kind: Kind
    stream: bool
    fallback: bool

    @property
    def id(self) -> str:
        return f"{self.kind.name}-{'stream' if self.stream else 'plain'}-{'fb' if self.fallback else 'solo'}"

    @property
    def route(self) -> str:
        return f"cell-{self.id}"

    @property
    def target(self) -> str:
        # a model of its own per cell: a breaker tripped in one cell never skips a target in another
        return f"dead/x--{self.id}" if self.kind.name == "refused" else f"chaos/{self.kind.name}--{self.id}"

    @property
    def expected(self) -> str:
        if self.kind.answers:
            return FULL
        if self.kind.fails_fast or not self.fallback or (self.stream and self.kind.after_commit):
            return ERROR
        return FULL

    @property
    def expected_provider(self) -> str | None:
        """Who serves a full answer: the fallback, or the chaos upstream itself (slow but whole)."""
        if self.expected != FULL:
            return None
        return "chaos" if self.kind.answers else "good"


CELLS = [Cell(kind, stream, fallback) for kind in KINDS for stream in (False, True) for fallback in (True, False)]


@dataclass
class Outcome:
    cell: Cell
    verdict: str = HANG
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    detail: str = ""
    sdk: str = ""  # what the SDK made of it: "ok", or the exception it raised
    sdk_text: str | None = None
    seconds: float = 0.0


def config(chaos_url: str, good_url: str, db: Path) -> str:
    routes = []
    for cell in CELLS:
        chain = f"{cell.target} > good/gpt-4o" if cell.fallback else cell.target
        routes.append(f'[routes."{cell.route}"]\nchain = "{chain}"\n')
    return f"""
[database]
url = "sqlite+aiosqlite:///{db}"

[exporters.ledger]
flush_interval = 3600

[providers.chaos]
type = "openai"
base_url = "{chaos_url}"
api_key = "{PROVIDER_KEY}"
timeout = {ATTEMPT_TIMEOUT}
connect_timeout = {ATTEMPT_TIMEOUT}

[providers.dead]
type = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
api_key = "{PROVIDER_KEY}"
timeout = {ATTEMPT_TIMEOUT}
connect_timeout = {ATTEMPT_TIMEOUT}

[providers.good]
type = "openai"
base_url = "{good_url}"
api_key = "{PROVIDER_KEY}"

""" + "\n".join(routes)


# --------------------------------------------------------------------------- #
# judging the bytes
# --------------------------------------------------------------------------- #


def expected_text(headers: dict[str, str]) -> str | None:
    return {"good": FALLBACK_REPLY, "chaos": REPLY}.get(headers.get("x-interlock-provider", ""))


def judge(cell: Cell, status: int, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """(verdict, detail) from the status, headers and body bytes the client received."""
    if status >= 400:
        if openai_error(json_or_none(body)) and headers.get("content-type", "").startswith("application/json"):
            return ERROR, f"HTTP {status}"
        return SILENT, f"HTTP {status} without an OpenAI error body: {body[:200]!r}"
    if status != 200:
        return SILENT, f"unexpected HTTP {status}"
    want = expected_text(headers)
    if not cell.stream:
        obj = json_or_none(body)
        try:
            choice = obj["choices"][0]
            content, finish = choice["message"]["content"], choice["finish_reason"]
        except (TypeError, KeyError, IndexError):
            return SILENT, f"a 200 without an answer: {body[:200]!r}"
        if content == want and finish:
            return FULL, f"from {headers.get('x-interlock-provider')}"
        return SILENT, f"a 200 with content {content!r}, finish_reason {finish!r}"
    if not headers.get("content-type", "").startswith("text/event-stream"):
        return SILENT, f"a 200 stream that is not an event stream: {body[:200]!r}"
    events = sse_data(body)
    payloads = [json_or_none(e.encode()) for e in events if e != "[DONE]"]
    if any(not isinstance(p, dict) for p in payloads):
        return SILENT, "the gateway wrote an event that is not a JSON object"
    errors = [p for p in payloads if "error" in p]
    text = "".join(
        c.get("delta", {}).get("content") or "" for p in payloads if "error" not in p for c in p.get("choices") or ()
    )
    finishes = [c["finish_reason"] for p in payloads if "error" not in p for c in p.get("choices") or ()
                if c.get("finish_reason")]
    if events and events[-1] == "[DONE]":
        if not errors and text == want and finishes:
            return FULL, f"from {headers.get('x-interlock-provider')}, {len(payloads)} events"
        return SILENT, f"[DONE] after content {text!r}, finish {finishes}, errors {errors}"
    if errors and payloads[-1] is errors[-1] and len(errors) == 1 and openai_error(errors[-1]):
        return ERROR, f"error event after {len(text)} chars: {errors[-1]['error']['code']}"
    return SILENT, f"stream ended without [DONE] or an error event after {text!r}"


async def run_cell(client: openai.AsyncOpenAI, tee: TeeTransport, cell: Cell) -> Outcome:
    out = Outcome(cell)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CELL_TIMEOUT):
            await drive(client, cell, out)
    except TimeoutError:
        out.verdict, out.detail = HANG, f"no end within {CELL_TIMEOUT:g}s"
        return out
    finally:
        out.seconds = time.perf_counter() - started
    out.body = bytes(tee.bodies.get(cell.id, b""))
    assert out.status is not None
    out.verdict, out.detail = judge(cell, out.status, out.headers, out.body)
    return out


async def drive(client: openai.AsyncOpenAI, cell: Cell, out: Outcome) -> None:
    """The request as an application makes it with the SDK; what the SDK said goes into ``out``."""
    extra = {"x-request-id": cell.id}
    if not cell.stream:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=cell.route, messages=PROMPT, extra_headers=extra  # type: ignore[arg-type]
            )
        except openai.APIStatusError as exc:
            out.status, out.headers = exc.status_code, {k.lower(): v for k, v in exc.response.headers.items()}
            out.sdk = f"{type(exc).__name__}({exc.status_code})"
            return
        out.status, out.headers = raw.status_code, {k.lower(): v for k, v in raw.headers.items()}
        try:
            out.sdk_text = raw.parse().choices[0].message.content
            out.sdk = "ok"
        except Exception as exc:  # noqa: BLE001 - what the SDK made of a broken 200 is the observation
            out.sdk = f"{type(exc).__name__}"
        return
    try:
        async with client.chat.completions.with_streaming_response.create(
            model=cell.route, messages=PROMPT, stream=True, extra_headers=extra  # type: ignore[arg-type]
        ) as resp:
            out.status, out.headers = resp.status_code, {k.lower(): v for k, v in resp.headers.items()}
            pieces: list[str] = []
            try:
                async for chunk in await resp.parse():
                    pieces.extend(c.delta.content or "" for c in chunk.choices)
                out.sdk = "ok"
            except openai.APIError as exc:
                out.sdk = f"{type(exc).__name__} mid-stream"
            out.sdk_text = "".join(pieces)
    except openai.APIStatusError as exc:
        out.status, out.headers = exc.status_code, {k.lower(): v for k, v in exc.response.headers.items()}
        out.sdk = f"{type(exc).__name__}({exc.status_code})"


# --------------------------------------------------------------------------- #
# the record
# --------------------------------------------------------------------------- #


async def decision_of(gw: RunningGateway, request_id: str) -> Any:
    """The recorded decision; a stream's is recorded just after its last byte, so wait a little."""
    for _ in range(200):
        found = [d for d in gw.log.decisions if d.request_id == request_id]
        if found:
            assert len(found) == 1, f"{request_id} recorded {len(found)} times"
            return found[0]
        await asyncio.sleep(0.05)
    return None


def record_problems(out: Outcome, decision: Any, row: dict[str, Any] | None) -> list[str]:
    """Where the decision record or the ledger disagrees with what the client saw."""
    cell, problems = out.cell, []
    if decision is None:
        return ["no decision recorded"]
    if row is None:
        problems.append("no ledger row")
    elif (row["status"], row["attempts"], row["provider"], bool(row["stream"])) != (
        decision.status, len(decision.attempts), decision.provider, cell.stream
    ):
        problems.append(f"ledger row {row} disagrees with the decision")
    if out.verdict == FULL:
        if decision.status != 200 or decision.provider != out.headers.get("x-interlock-provider"):
            problems.append(f"full answer recorded as {decision.status} from {decision.provider}")
        if str(len(decision.attempts)) != out.headers.get("x-interlock-attempts"):
            problems.append("attempt count differs from x-interlock-attempts")
        if decision.attempts[-1].outcome != "ok":
            problems.append(f"last attempt outcome {decision.attempts[-1].outcome}")
    elif out.verdict == ERROR and out.status != 200:
        if decision.status != out.status:
            problems.append(f"client got HTTP {out.status}, decision says {decision.status}")
    elif out.verdict == ERROR:  # the error event of a started stream
        if decision.status < 500 or not decision.error_type:
            problems.append(f"stream error event recorded as {decision.status} {decision.error_type}")
    return problems


def ledger_rows(db: Path) -> dict[str, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}


# --------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------- #


async def test_the_chaos_upstream_answers_correctly_when_not_told_to_fail() -> None:
    """The baseline every fault deviates from: kind ``ok`` is valid to the official SDK."""
    async with ChaosUpstream() as up:
        client = openai_client(up.base_url)
        async with client:
            completion = await client.chat.completions.create(model="ok--sdk", messages=PROMPT)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == REPLY
            assert completion.choices[0].finish_reason == "stop"
            assert completion.usage is not None and completion.usage.total_tokens == 14
            stream = await client.chat.completions.create(
                model="ok--sdk", messages=PROMPT, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
            )
            chunks = [chunk async for chunk in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
            assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
            assert chunks[-1].usage is not None and chunks[-1].choices == []
            # and a fault is what it says: a 401 that echoes the key it was sent
            with pytest.raises(openai.AuthenticationError) as info:
                await client.chat.completions.create(model="status_401--sdk", messages=PROMPT)  # type: ignore[arg-type]
            assert "client-key" in info.value.message


async def test_fault_matrix(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    async with ChaosUpstream() as up, FakeOpenAI(models=["gpt-4o"]) as good:
        gw = await make_gateway(config(up.base_url, good.base_url, db))
        tee = TeeTransport()
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(cell: Cell) -> Outcome:
            async with limit:
                return await run_cell(client, tee, cell)

        async with openai_client(gw.base_url, tee=tee) as client:
            outcomes = await asyncio.gather(*(one(cell) for cell in CELLS))
        decisions = {o.cell.id: await decision_of(gw, o.cell.id) for o in outcomes}
        ledger = [e for e in gw.gateway.exporters if isinstance(e, LedgerExporter)]
        assert len(ledger) == 1
        await ledger[0].flush()
        rows = ledger_rows(db)

    report(outcomes)
    verdicts = Counter(o.verdict for o in outcomes)
    wrong = [f"{o.cell.id}: {o.verdict} ({o.detail}; sdk {o.sdk}), expected {o.cell.expected}"
             for o in outcomes if o.verdict != o.cell.expected]
    assert verdicts[SILENT] == 0 and verdicts[HANG] == 0 and not wrong, "\n".join(wrong)
    assert len(outcomes) == 100
    assert (verdicts[FULL], verdicts[ERROR]) == (44, 56)
    # with a fallback, every fault before a stream commits is answered, and by whom it should be
    with_fallback = [o for o in outcomes if o.cell.fallback]
    assert sum(o.verdict == FULL for o in with_fallback) == 42
    for o in outcomes:
        if o.verdict == FULL:
            assert o.headers["x-interlock-provider"] == o.cell.expected_provider, o.cell.id
            assert o.headers["x-interlock-fallback"] == ("true" if o.cell.expected_provider == "good" else "false")
    # the SDK agrees with the bytes: answers parse to the same text, errors raise
    for o in outcomes:
        if o.verdict == FULL:
            assert o.sdk == "ok" and o.sdk_text == expected_text(o.headers), (o.cell.id, o.sdk, o.sdk_text)
        elif o.status == 200:
            assert o.sdk.endswith("mid-stream"), (o.cell.id, o.sdk)
        else:
            assert o.sdk.endswith(f"({o.status})"), (o.cell.id, o.sdk)
    # the upstream echoed the provider key in its 401 and 500 bodies; the client never sees it
    leaked = [o.cell.id for o in outcomes if PROVIDER_KEY.encode() in o.body or PROVIDER_KEY[8:].encode() in o.body]
    assert not leaked
    # every request is on record, as the client saw it
    record = {o.cell.id: record_problems(o, decisions[o.cell.id], rows.get(o.cell.id)) for o in outcomes}
    assert not {k: v for k, v in record.items() if v}


def report(outcomes: list[Outcome]) -> None:
    """The matrix as a table (``pytest -s`` shows it), one row per fault kind."""
    by = {(o.cell.kind.name, o.cell.stream, o.cell.fallback): o for o in outcomes}
    cols = [(False, True), (False, False), (True, True), (True, False)]
    names = ["plain+fallback", "plain, no fallback", "stream+fallback", "stream, no fallback"]

    def cell(o: Outcome) -> str:
        if o.verdict == FULL:
            return f"full ({o.headers.get('x-interlock-provider')})"
        if o.verdict == ERROR:
            return f"error {o.status}" + (" + event" if o.status == 200 else "")
        return o.verdict

    print("\n\nfault matrix (outcome per cell)")
    print(f"{'fault':24} " + " ".join(f"{n:20}" for n in names))
    for kind in KINDS:
        print(f"{kind.name:24} " + " ".join(f"{cell(by[(kind.name, s, f)]):20}" for s, f in cols))
    verdicts = Counter(o.verdict for o in outcomes)
    print(f"\ncells {len(outcomes)}: {verdicts[FULL]} full answers, {verdicts[ERROR]} explicit errors, "
          f"{verdicts[SILENT]} silent truncations, {verdicts[HANG]} hangs; "
          f"slowest cell {max(o.seconds for o in outcomes):.1f}s")
    print(json.dumps({"cells": len(outcomes), **{k: verdicts[k] for k in (FULL, ERROR, SILENT, HANG)}}))
