"""The SQL ledger exporter, against real SQLite files read back with the stdlib ``sqlite3``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
import tomllib
from pathlib import Path
from typing import Any

import openai
import pytest

from interlock import cli
from interlock.core import config as config_mod
from interlock.accounting import ledger
from interlock.core.gateway import Gateway
from interlock.core.plugins import PluginError
from interlock.core.types import Attempt, Decision, Usage
from interlock.plugins.exporters.ledger import LedgerExporter, parse_options
from interlock.testing import FakeOpenAI, Fault
from tests.conftest import GatewayFactory, RunningGateway, openai_config

HELLO = [{"role": "user", "content": "hello"}]


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def ledger_config(base_url: str, db: Path, ledger_options: str = "flush_interval = 3600") -> str:
    """The shared test config plus a ledger on ``db`` that (by default) only writes when told."""
    return openai_config(base_url, f'[database]\nurl = "{sqlite_url(db)}"\n\n[exporters.ledger]\n{ledger_options}\n')


def ledger_of(gw: RunningGateway | Gateway) -> LedgerExporter:
    gateway = gw.gateway if isinstance(gw, RunningGateway) else gw
    found = [e for e in gateway.exporters if e.name == "ledger"]
    assert len(found) == 1, gateway.exporters
    assert isinstance(found[0], LedgerExporter)
    return found[0]


def query(db: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


def count(db: Path, table: str) -> int:
    return int(query(db, f"SELECT count(*) AS n FROM {table}")[0]["n"])


def decision(request_id: str, *, attempts: int = 1) -> Decision:
    return Decision(
        request_id=request_id, ts=time.time(), endpoint="chat", requested_model="gpt-4o", route=None,
        strategy="ordered", candidates=["openai/gpt-4o"], stream=False, provider="openai", model="gpt-4o",
        attempts=[Attempt(n, "openai", "openai", "gpt-4o", usage=Usage(3, 4)) for n in range(1, attempts + 1)],
        usage=Usage(3, 4), latency_ms=1.5,
    )


# --------------------------------------------------------------------------- #
# decisions become rows
# --------------------------------------------------------------------------- #


async def test_requests_and_attempts_rows(fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    gw = await make_gateway(ledger_config(fake.base_url, db))
    client = gw.client

    # a plain success, with tags and a user
    ok = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, user="alice",
        extra_headers={"x-interlock-tags": "a, b", "x-request-id": "req-ok"},
    )
    assert ok.usage is not None

    # a fallback chain: the first target answers 500, the second serves the request
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    raw = await client.chat.completions.with_raw_response.create(
        model="smart", messages=HELLO, extra_headers={"x-request-id": "req-fallback"}
    )
    assert raw.headers["x-interlock-fallback"] == "true"
    fallback = raw.parse()

    # a stream whose client did not ask for usage: it gets none, the ledger still records it
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, extra_headers={"x-request-id": "req-stream"}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and all(chunk.usage is None for chunk in chunks)

    # a model nothing serves
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="no-such-model", messages=HELLO, extra_headers={"x-request-id": "req-404"}
        )

    ledger_exporter = ledger_of(gw)
    assert count(db, "requests") == 0  # nothing is written before a flush
    await ledger_exporter.flush()

    rows = {r["id"]: r for r in query(db, "SELECT * FROM requests")}
    assert set(rows) == {"req-ok", "req-fallback", "req-stream", "req-404"}

    r = rows["req-ok"]
    assert r["endpoint"] == "chat" and r["protocol"] == "chat_completions" and r["requested_model"] == "gpt-4o" and r["route"] is None
    assert (r["provider"], r["model"], r["strategy"]) == ("openai", "gpt-4o", "ordered")
    assert (r["status"], r["stream"], r["attempts"], r["fallback_used"]) == (200, 0, 1, 0)
    assert r["tags"] == '["a","b"]' and r["user"] == "alice"
    assert query(db, "SELECT value FROM requests, json_each(requests.tags) WHERE requests.id = 'req-ok'") == [
        {"value": "a"}, {"value": "b"},
    ]
    assert (r["input_tokens"], r["output_tokens"]) == (ok.usage.prompt_tokens, ok.usage.completion_tokens)
    assert r["input_tokens"] > 0 and r["output_tokens"] > 0
    assert r["cached_tokens"] == 0 and r["reasoning_tokens"] == 0
    assert r["cost_usd"] > 0 and r["error_type"] is None and r["error_message"] is None  # priced
    assert r["latency_ms"] > 0 and r["ttft_ms"] is None
    assert r["api_key_id"] is None and r["team"] is None
    # ts: UTC text that sorts and works with SQLite's date functions
    assert query(db, "SELECT ts >= datetime('now', '-1 hour') AS recent FROM requests WHERE id = 'req-ok'") == [
        {"recent": 1}
    ]

    r = rows["req-fallback"]
    assert (r["route"], r["provider"], r["model"]) == ("smart", "backup", "gpt-4o-mini")
    assert (r["status"], r["attempts"], r["fallback_used"]) == (200, 2, 1)
    assert fallback.usage is not None and r["output_tokens"] == fallback.usage.completion_tokens
    tried = query(db, "SELECT * FROM attempts WHERE request_id = 'req-fallback' ORDER BY n")
    assert [(a["n"], a["provider"], a["model"], a["outcome"]) for a in tried] == [
        (1, "openai", "gpt-4o", "server_error"),
        (2, "backup", "gpt-4o-mini", "ok"),
    ]
    first, second = tried
    assert (first["action"], first["status"], first["provider_type"]) == ("fallback", 500, "openai")
    assert first["error"] and first["input_tokens"] is None and first["response_id"] is None
    assert (second["action"], second["error"], second["provider_type"]) == (None, None, "openai")
    assert second["response_id"] == fallback.id and second["output_tokens"] == fallback.usage.completion_tokens

    r = rows["req-stream"]
    assert (r["status"], r["stream"], r["attempts"], r["provider"]) == (200, 1, 1, "openai")
    # the same prompt as req-ok, so the same usage, which the client of the stream never saw
    assert (r["input_tokens"], r["output_tokens"]) == (ok.usage.prompt_tokens, ok.usage.completion_tokens)
    assert r["ttft_ms"] is not None and r["ttft_ms"] <= r["latency_ms"]
    [streamed] = query(db, "SELECT * FROM attempts WHERE request_id = 'req-stream'")
    assert streamed["outcome"] == "ok" and streamed["ttft_ms"] is not None
    assert streamed["output_tokens"] == ok.usage.completion_tokens
    assert streamed["response_id"] == chunks[0].id

    r = rows["req-404"]
    assert (r["status"], r["attempts"], r["provider"], r["model"]) == (404, 0, None, None)
    assert r["error_type"] == "model_not_found" and "no-such-model" in r["error_message"]
    assert r["input_tokens"] is None and r["output_tokens"] is None and r["fallback_used"] == 0
    assert query(db, "SELECT * FROM attempts WHERE request_id = 'req-404'") == []

    assert count(db, "attempts") == 4
    assert ledger_exporter.buffered == 0 and ledger_exporter.dropped == 0


async def test_error_message_is_truncated(fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    gw = await make_gateway(ledger_config(fake.base_url, db))
    long_message = "x" * 5000
    fake.add_fault(Fault(status=500, body={"error": {"message": long_message, "type": "server_error"}}, times=None))
    with pytest.raises(openai.InternalServerError):
        await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-request-id": "long"})
    await ledger_of(gw).flush()
    [r] = query(db, "SELECT error_type, length(error_message) AS n FROM requests WHERE id = 'long'")
    assert r == {"error_type": "server_error", "n": ledger.MAX_ERROR_CHARS}
    [a] = query(db, "SELECT outcome, length(error) AS n FROM attempts WHERE request_id = 'long'")
    assert a == {"outcome": "server_error", "n": ledger.MAX_ERROR_CHARS}


# --------------------------------------------------------------------------- #
# buffering
# --------------------------------------------------------------------------- #


def test_record_only_buffers(tmp_path: Path) -> None:
    # not started, pointing into a directory that does not exist: any I/O would fail or create files
    exporter = LedgerExporter(sqlite_url(tmp_path / "missing" / "ledger.db"))
    assert exporter.record(decision("r1", attempts=2)) is None  # synchronous, nothing to await
    exporter.record(decision("r2"))
    assert exporter.buffered == 3 + 2
    assert list(tmp_path.iterdir()) == []


async def test_rows_wait_in_memory_until_a_flush(fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    gw = await make_gateway(ledger_config(fake.base_url, db))
    exporter = ledger_of(gw)
    for _ in range(3):
        await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert exporter.buffered == 6  # a requests row and an attempts row each
    assert count(db, "requests") == 0 and count(db, "attempts") == 0  # migrated at start, nothing written
    await exporter.flush()
    assert exporter.buffered == 0
    assert count(db, "requests") == 3 and count(db, "attempts") == 3
    await exporter.flush()  # nothing buffered: a no-op
    assert count(db, "requests") == 3


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    gw = await make_gateway(ledger_config(fake.base_url, db, "flush_interval = 3600\nbatch_size = 4"))
    exporter = ledger_of(gw)
    await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert exporter.buffered == 2  # below the batch size: stays buffered
    await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    for _ in range(1000):  # the background task writes the batch; the interval is an hour
        if exporter.buffered == 0 and count(db, "requests") == 2:
            break
        await asyncio.sleep(0.01)
    assert count(db, "requests") == 2 and count(db, "attempts") == 2


async def test_buffer_is_bounded_and_drops_the_oldest(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    exporter = LedgerExporter(sqlite_url(db), batch_size=1, max_buffer=5)
    for i in range(10):
        exporter.record(decision(f"r{i}"))  # two rows each
    assert exporter.buffered == 4 and exporter.dropped == 16
    await exporter.start()
    try:
        await exporter.flush()
    finally:
        await exporter.close()
    assert [r["id"] for r in query(db, "SELECT id FROM requests ORDER BY id")] == ["r8", "r9"]


async def test_a_reused_request_id_does_not_block_the_ledger(
    fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    gw = await make_gateway(ledger_config(fake.base_url, db))
    exporter = ledger_of(gw)
    for model in ("gpt-4o", "gpt-4o-mini"):
        await gw.client.chat.completions.create(model=model, messages=HELLO, extra_headers={"x-request-id": "same"})
    await exporter.flush()
    await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-request-id": "same"})
    await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-request-id": "other"})
    await exporter.flush()
    # the first request with an id is kept; writes go on
    assert query(db, "SELECT id, model FROM requests ORDER BY id") == [
        {"id": "other", "model": "gpt-4o"}, {"id": "same", "model": "gpt-4o"},
    ]
    assert exporter.buffered == 0 and exporter.dropped == 0


# --------------------------------------------------------------------------- #
# the database: migrations, availability
# --------------------------------------------------------------------------- #


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    for i in range(2):
        exporter = LedgerExporter(sqlite_url(db))
        await exporter.start()
        exporter.record(decision(f"r{i}"))
        await exporter.close()
    versions = query(db, "SELECT version, applied_at FROM schema_version")
    assert [v["version"] for v in versions] == list(range(1, ledger.SCHEMA_VERSION + 1))
    assert all(v["applied_at"] for v in versions)
    assert count(db, "requests") == 2

    engine = await ledger.open_engine(sqlite_url(db))
    try:
        assert await ledger.migrate(engine) == ledger.SCHEMA_VERSION == 6
        assert await ledger.migrate(engine) == 6
    finally:
        await engine.dispose()
    assert count(db, "schema_version") == ledger.SCHEMA_VERSION


async def test_migrated_schema_matches_the_tables(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    engine = await ledger.open_engine(sqlite_url(db))
    try:
        await ledger.migrate(engine)
    finally:
        await engine.dispose()
    for table in (ledger.requests, ledger.attempts):
        columns = [c["name"] for c in query(db, f"PRAGMA table_info({table.name})")]
        assert columns == [c.name for c in table.columns]
    indexes = {r["name"] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_requests_ts", "ix_requests_team_ts", "ix_requests_model_ts"} <= indexes
    pk = [c["name"] for c in sorted(query(db, "PRAGMA table_info(attempts)"), key=lambda c: c["pk"]) if c["pk"]]
    assert pk == ["request_id", "n"]
    assert query(db, "PRAGMA journal_mode") == [{"journal_mode": "wal"}]


async def test_an_unwritable_database_does_not_fail_requests(
    fake: FakeOpenAI, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    later = tmp_path / "not-yet"  # SQLite cannot create a file in a directory that does not exist
    db = later / "ledger.db"
    gw = await make_gateway(ledger_config(fake.base_url, db))
    exporter = ledger_of(gw)
    for _ in range(2):
        reply = await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
        assert reply.choices[0].message.content == "Fake reply to: hello"
    with pytest.raises(OSError, match="the directory of .*ledger.db does not exist"):
        await exporter.flush()  # refused before aiosqlite's thread is involved
    assert exporter.buffered == 4 and exporter.dropped == 0  # kept for the next try
    later.mkdir()
    await exporter.flush()
    assert exporter.buffered == 0
    assert count(db, "requests") == 2 and count(db, "schema_version") == ledger.SCHEMA_VERSION


async def test_the_flush_loop_retries_until_the_database_is_there(tmp_path: Path) -> None:
    later = tmp_path / "not-yet"
    exporter = LedgerExporter(sqlite_url(later / "ledger.db"), flush_interval=0.01)
    await exporter.start()
    try:
        exporter.record(decision("early"))
        later.mkdir()
        for _ in range(1000):  # the background task retries every flush_interval
            if exporter.buffered == 0:
                break
            await asyncio.sleep(0.01)
        assert exporter.buffered == 0
    finally:
        await exporter.close()
    assert [r["id"] for r in query(later / "ledger.db", "SELECT id FROM requests")] == ["early"]


async def test_a_decision_the_database_rejects_is_dropped_alone(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    exporter = LedgerExporter(sqlite_url(db))
    await exporter.start()
    try:
        bad = decision("bad", attempts=2)
        bad.requested_model = None  # type: ignore[assignment]  # violates NOT NULL
        for d in (decision("before"), bad, decision("after")):
            exporter.record(d)
        await exporter.flush()
        assert exporter.buffered == 0 and exporter.dropped == 3  # the bad request and its two attempts
    finally:
        await exporter.close()
    assert [r["id"] for r in query(db, "SELECT id FROM requests ORDER BY id")] == ["after", "before"]
    assert count(db, "attempts") == 2


# --------------------------------------------------------------------------- #
# configuration
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ("enabled = 1", "enabled"),
        ('flush_interval = "1s"', "flush_interval"),
        ("flush_interval = 0", "flush_interval"),
        ("flush_interval = true", "flush_interval"),
        ("batch_size = 1.5", "batch_size"),
        ("batch_size = 0", "batch_size"),
        ("max_buffer = false", "max_buffer"),
        ("batch_size = 10\nmax_buffer = 5", "max_buffer"),
        ("flush_intervall = 2", "flush_intervall"),
    ],
)
def test_bad_options_name_their_key(tmp_path: Path, options: str, key: str) -> None:
    cfg = config_mod.parse({"exporters": {"ledger": tomllib.loads(options)}}, environ={})
    with pytest.raises(PluginError, match=rf"exporters\.ledger\.{key}"):
        Gateway(cfg, load_entrypoints=False, environ={})


def test_options_defaults_and_types() -> None:
    assert parse_options({}) == {
        "enabled": True, "flush_interval": 1.0, "batch_size": 500, "max_buffer": 100_000, "journal": True,
    }
    assert parse_options({"journal": False})["journal"] is False
    assert parse_options({"journal": "/var/lib/interlock/journal"})["journal"] == "/var/lib/interlock/journal"
    for bad in ("", "  ", 3, ["x"]):
        with pytest.raises(ValueError, match=r"exporters\.ledger\.journal"):
            parse_options({"journal": bad})
    assert parse_options({"flush_interval": 2, "batch_size": 10, "max_buffer": 10})["flush_interval"] == 2.0
    with pytest.raises(ValueError, match=r"exporters\.ledger\.batch_size"):
        LedgerExporter(batch_size=0)


def test_disabled_and_unknown_dialect(tmp_path: Path) -> None:
    cfg = config_mod.parse({"exporters": {"ledger": {"enabled": False}}}, environ={})
    assert not [e for e in Gateway(cfg, load_entrypoints=False, environ={}).exporters if e.name == "ledger"]
    cfg = config_mod.parse({"database": {"url": "nosuchdb://x/y"}}, environ={})
    with pytest.raises(PluginError, match=r"database\.url"):
        Gateway(cfg, load_entrypoints=False, environ={})


async def test_a_synchronous_driver_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match=r"database\.url.*async driver"):
        await ledger.open_engine("sqlite:///x.db")


def test_building_a_gateway_touches_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `interlock check` and `interlock plugins` build a gateway without starting it
    monkeypatch.chdir(tmp_path)
    gateway = Gateway(config_mod.load(None, environ={}), load_entrypoints=False, environ={})
    assert ledger_of(gateway).url == config_mod.DEFAULT_DATABASE_URL
    assert list(tmp_path.iterdir()) == []


def test_password_is_hidden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+asyncpg://me:s3cret@db.example/ledger"
    assert ledger.safe_url(url) == "postgresql+asyncpg://me:***@db.example/ledger"
    config = tmp_path / "interlock.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    assert cli.main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "database: postgresql+asyncpg://me:***@db.example/ledger" in out and "s3cret" not in out


# --------------------------------------------------------------------------- #
# the real server
# --------------------------------------------------------------------------- #


def _stop(sp: Any) -> str:
    sp.proc.send_signal(signal.SIGINT)
    assert sp.proc.wait(timeout=60) == 0
    output: str = sp.output()
    assert "Traceback" not in output, output
    return output


def test_serve_writes_everything_on_graceful_shutdown(serve: Any, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    with FakeOpenAI().run_in_thread() as fake:
        config = tmp_path / "interlock.toml"
        # an hour between writes: only the shutdown flush can write these rows
        config.write_text(ledger_config(fake.base_url, db, "flush_interval = 3600"))
        sp = serve("--config", str(config))
        sent = 5
        with openai.OpenAI(base_url=sp.base_url, api_key="client-key", max_retries=0) as client:
            for i in range(sent):
                client.chat.completions.create(model="smart" if i % 2 else "gpt-4o", messages=HELLO)
        assert count(db, "requests") == 0  # migrated at startup, nothing written yet
        _stop(sp)
    assert count(db, "requests") == sent and count(db, "attempts") == sent


def test_embedded_defaults_write_interlock_db_in_the_working_directory(serve: Any, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with FakeOpenAI().run_in_thread() as fake:
        sp = serve(env={"OPENAI_API_KEY": "sk-fake-0123456789", "OPENAI_BASE_URL": fake.base_url}, cwd=workdir)
        with openai.OpenAI(base_url=sp.base_url, api_key="client-key", max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o", messages=HELLO, user="bob")
            for _ in client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True):
                pass
        _stop(sp)
    db = workdir / "interlock.db"
    assert db.exists()
    rows = query(db, "SELECT requested_model, provider, status, user FROM requests ORDER BY requested_model")
    assert rows == [
        {"requested_model": "gpt-4o", "provider": "openai", "status": 200, "user": "bob"},
        {"requested_model": "gpt-4o-mini", "provider": "openai", "status": 200, "user": None},
    ]


async def test_migrations_upgrade_a_version_1_database(tmp_path: Path) -> None:
    """A ledger written by the first release keeps its rows and gains the new columns and tables."""
    from sqlalchemy import insert, text

    db = tmp_path / "old.db"
    engine = await ledger.open_engine(sqlite_url(db))
    try:
        async with engine.begin() as conn:
            def v1(sync_conn: Any) -> None:
                ledger.schema_version.create(sync_conn)
                ledger._migration_1(sync_conn)
                sync_conn.execute(insert(ledger.schema_version).values(version=1, applied_at=ledger.datetime.now(ledger.UTC)))
                sync_conn.execute(text(
                    "INSERT INTO requests (id, ts, endpoint, requested_model, tags, status, stream, attempts, fallback_used,"
                    " latency_ms) VALUES ('old', '2026-01-01 00:00:00', 'chat', 'gpt-4o', '[]', 200, 0, 1, 0, 1.0)"
                ))
            await conn.run_sync(v1)
        assert await ledger.migrate(engine) == 6
    finally:
        await engine.dispose()
    assert count(db, "requests") == 1
    columns = {r["name"] for r in query(db, "PRAGMA table_info(requests)")}
    assert {"cost_delta_usd", "rule", "hedged", "events", "protocol", "invalid_fields", "cache_write_tokens",
            "unreported_cost_max_usd"} <= columns
    assert query(db, "SELECT protocol FROM requests") == [{"protocol": None}]  # old rows: NULL, all chat
    assert query(db, "SELECT invalid_fields FROM requests") == [{"invalid_fields": None}]  # migration 5
    tables = {r["name"] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables >= {"api_keys", "alerts", "stored_responses"}
    key_columns = {r["name"] for r in query(db, "PRAGMA table_info(api_keys)")}
    assert {"rpm", "tpm", "max_concurrent", "models", "expires_at"} <= key_columns  # migration 4
