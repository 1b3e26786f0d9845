"""Gateway API keys: config and admin-API keys, authentication, and attribution in the ledger."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import httpx2
import openai
import pytest
from aiohttp.test_utils import make_mocked_request

from interlock.core import config as config_mod
from interlock.accounting import keys as keys_mod
from interlock.core.admin import require_admin
from interlock.core.app import GATEWAY
from interlock.core.config import ConfigError
from interlock.core.errors import GatewayError
from interlock.accounting.keys import MAX_TAG_CHARS, MAX_TAGS, request_tags
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import DecisionLog
from tests.conftest import GatewayFactory, RunningGateway, openai_config

SEARCH_KEY = "sk-team-search-0123456789abcdef"
HASHED_KEY = "ik_only-the-hash-is-in-the-file-42"
ADMIN = "admin-secret-123456"
MESSAGES: Any = [{"role": "user", "content": "hi"}]

KEYS = f"""
[[keys]]
key = "${{TEAM_SEARCH_KEY}}"
name = "search"
team = "search"
tags = ["prod", "search-api"]

[[keys]]
key_sha256 = "{hashlib.sha256(HASHED_KEY.encode()).hexdigest()}"
name = "billing"
team = "billing"
"""


def client(gw: RunningGateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


async def call(
    method: str, url: str, *, token: str | None = None, headers: dict[str, str] | None = None, json: Any = None
) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, headers=hdrs, json=json) as resp:
            return resp.status, await resp.json()


async def ledger_rows(gw: RunningGateway) -> list[Any]:
    """The gateway's ledger rows (SQLite or PostgreSQL), oldest first."""
    from sqlalchemy import select

    from interlock.accounting import ledger

    for e in gw.gateway.exporters:
        await e.flush()
    engine = await ledger.open_engine(gw.gateway.cfg.database_url)
    try:
        t = ledger.requests.c
        async with engine.connect() as conn:
            return list((await conn.execute(
                select(t.id, t.api_key_id, t.team, t.tags, t.user).order_by(t.ts)
            )).mappings().all())
    finally:
        await engine.dispose()


def database(url: str) -> str:
    return f'[database]\nurl = "{url}"\n'


# --------------------------------------------------------------------------- #
# config keys
# --------------------------------------------------------------------------- #


async def test_config_keys_env_and_sha256_forms_accept_and_reject(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, KEYS), environ={"TEAM_SEARCH_KEY": SEARCH_KEY})
    for key in (SEARCH_KEY, HASHED_KEY):
        async with client(gw, key) as c:
            resp = await c.chat.completions.create(model="smart", messages=MESSAGES)
            assert resp.choices[0].message.content
            assert (await c.embeddings.create(model="openai/text-embedding-3-small", input="x")).data
            assert (await c.models.list()).data
    async with client(gw, "sk-wrong-key-0123456789") as c:
        with pytest.raises(openai.AuthenticationError) as exc:
            await c.chat.completions.create(model="smart", messages=MESSAGES)
        assert exc.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await c.embeddings.create(model="openai/text-embedding-3-small", input="x")
        with pytest.raises(openai.AuthenticationError):
            await c.models.list()
    # no key at all, on the un-prefixed aliases too: the OpenAI error body
    for path in ("/v1/models", "/models"):
        status, body = await call("GET", gw.root + path)
        assert status == 401
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_api_key"
    status, _ = await call("POST", gw.root + "/chat/completions", json={"model": "smart", "messages": MESSAGES})
    assert status == 401
    # Anthropic- and Azure-style key headers
    for header in ("x-api-key", "api-key"):
        status, body = await call("GET", gw.root + "/v1/models", headers={header: SEARCH_KEY})
        assert status == 200, body
    # health stays open
    assert (await call("GET", gw.root + "/health"))[0] == 200


async def test_no_keys_leaves_the_gateway_open_and_team_null(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    await gw.client.chat.completions.create(model="smart", messages=MESSAGES, user="alice")
    status, _ = await call("GET", gw.root + "/v1/models")  # no Authorization header at all
    assert status == 200
    [row] = await ledger_rows(gw)
    assert row["api_key_id"] is None and row["team"] is None and row["user"] == "alice"


# --------------------------------------------------------------------------- #
# attribution
# --------------------------------------------------------------------------- #


async def test_team_tags_user_and_metadata_land_in_the_ledger(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    decisions = DecisionLog()
    gw = await make_gateway(openai_config(fake.base_url, KEYS), environ={"TEAM_SEARCH_KEY": SEARCH_KEY},
                            extra_plugins=[("decisions", decisions)])
    async with client(gw, SEARCH_KEY) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="smart", messages=MESSAGES, user="user-42",
            metadata={"feature": "autocomplete", "experiment": "b"},
            extra_headers={"x-interlock-tags": "checkout, prod"},
        )
    assert decisions.last.team == "search" and decisions.last.api_key_id == "cfg_search"
    async with client(gw, HASHED_KEY) as c:
        await c.chat.completions.create(model="smart", messages=MESSAGES)
    first, second = await ledger_rows(gw)
    assert first["id"] == raw.headers["x-request-id"]
    assert (first["api_key_id"], first["team"], first["user"]) == ("cfg_search", "search", "user-42")
    # key defaults, then the header, then metadata as key:value; de-duplicated ("prod")
    assert first["tags"] == '["prod","search-api","checkout","feature:autocomplete","experiment:b"]'
    assert (second["api_key_id"], second["team"], second["tags"], second["user"]) == ("cfg_billing", "billing", "[]", None)


def test_request_tags_are_bounded() -> None:
    long_value = "v" * 200
    tags = request_tags(("a",), "a, b ,,c", {"k": long_value, "n": 3, "flag": True, "nested": {"x": 1}})
    assert tags == ["a", "b", "c", ("k:" + long_value)[:MAX_TAG_CHARS], "n:3", "flag:true"]
    many = request_tags([f"d{i}" for i in range(30)], "", {f"m{i}": "x" for i in range(10)})
    assert len(many) == MAX_TAGS and many[:30] == [f"d{i}" for i in range(30)]  # metadata dropped first
    with pytest.raises(GatewayError) as exc:
        request_tags((), "x" * (MAX_TAG_CHARS + 1), None)
    assert exc.value.status == 400 and exc.value.code == "invalid_tags"
    with pytest.raises(GatewayError):
        request_tags((), ",".join(f"t{i}" for i in range(MAX_TAGS + 1)), None)


async def test_an_oversized_tag_header_is_a_400(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url))
    with pytest.raises(openai.BadRequestError) as exc:
        await gw.client.chat.completions.create(
            model="smart", messages=MESSAGES, extra_headers={"x-interlock-tags": "t" * 100}
        )
    assert exc.value.code == "invalid_tags"


async def test_header_bytes_that_are_not_utf8_are_refused_not_a_500_nor_a_lost_ledger_row(
    fake: FakeOpenAI, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp keeps such bytes as surrogate escapes, which nothing downstream can encode.

    Found by tests/chaos/test_fuzz.py: a key header of them was a 500 (hashing the key failed);
    a tag of them was answered but its ledger row was dropped (the tags' JSON failed), so a
    client could keep its requests out of the spend ledger.
    """
    gw = await make_gateway(openai_config(fake.base_url, KEYS), environ={"TEAM_SEARCH_KEY": SEARCH_KEY})
    url = f"{gw.base_url}/chat/completions"
    body = {"model": "smart", "messages": MESSAGES}
    async with httpx2.AsyncClient() as http:  # (aiohttp's client would re-encode the bytes as UTF-8)
        for name, value in [("Authorization", b"Bearer sk-\xff\xfe-not-utf8"), ("x-api-key", b"\xc3\x28\xa0")]:
            resp = await http.post(url, json=body, headers={name: value})
            assert resp.status_code == 401, (name, resp.text)
        key = f"Bearer {SEARCH_KEY}".encode()
        resp = await http.post(url, json=body, headers={"Authorization": key, "x-interlock-tags": b"ok, caf\xe9"})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_tags"
        utf8 = {"Authorization": key, "x-interlock-tags": "ok, café".encode(), "x-request-id": b"req-cafe"}
        assert (await http.post(url, json=body, headers=utf8)).status_code == 200
    [row] = await ledger_rows(gw)  # the refused requests never reached routing
    assert (row["id"], row["tags"]) == ("req-cafe", '["prod","search-api","ok","café"]')
    assert "cannot convert decision" not in caplog.text


# --------------------------------------------------------------------------- #
# the admin API
# --------------------------------------------------------------------------- #


async def test_admin_api_create_use_list_revoke(
    fake: FakeOpenAI, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    decisions = DecisionLog()
    gw = await make_gateway(openai_config(fake.base_url, f'[server]\nadmin_key = "{ADMIN}"\n' + database(database_url)),
                            extra_plugins=[("decisions", decisions)])
    keys_url = gw.root + "/-/keys"
    # open until a key exists
    await gw.client.chat.completions.create(model="smart", messages=MESSAGES)

    status, body = await call("POST", keys_url, json={"name": "ci"})
    assert status == 401 and body["error"]["code"] == "invalid_admin_key"
    status, body = await call("POST", keys_url, token="wrong", json={"name": "ci"})
    assert status == 401
    status, body = await call("POST", keys_url, token=ADMIN, json={"name": "ci", "tags": ["x" * 100]})
    assert status == 400 and "tags[0]" in body["error"]["message"]
    status, body = await call("POST", keys_url, token=ADMIN, json={"name": "ci", "color": "red"})
    assert status == 400

    status, created = await call("POST", keys_url, token=ADMIN, json={"name": "ci", "team": "platform", "tags": ["ci"]})
    assert status == 201
    key, key_id = created["key"], created["id"]
    assert key.startswith("ik_") and len(key) >= 40 and key_id.startswith("key_")
    assert created["prefix"] == key[:10] and created["revoked_at"] is None

    # the gateway is now closed: no key, a wrong key -> 401; the new key works and is attributed
    with pytest.raises(openai.AuthenticationError):
        await gw.client.chat.completions.create(model="smart", messages=MESSAGES)
    async with client(gw, key) as c:
        await c.chat.completions.create(model="smart", messages=MESSAGES)
    assert (decisions.last.api_key_id, decisions.last.team, decisions.last.tags) == (key_id, "platform", ["ci"])

    status, listing = await call("GET", keys_url, token=ADMIN)
    assert status == 200
    [entry] = listing["data"]
    assert entry["id"] == key_id and entry["name"] == "ci" and entry["team"] == "platform" and entry["tags"] == ["ci"]
    assert entry["created_at"] and entry["revoked_at"] is None
    text = str(listing)
    assert key not in text and hashlib.sha256(key.encode()).hexdigest() not in text and "key_hash" not in text

    status, revoked = await call("DELETE", f"{keys_url}/{key_id}", token=ADMIN)
    assert status == 200 and revoked["revoked_at"]
    async with client(gw, key) as c:
        with pytest.raises(openai.AuthenticationError) as exc:
            await c.chat.completions.create(model="smart", messages=MESSAGES)
        assert "revoked" in exc.value.message
    status, listing = await call("GET", keys_url, token=ADMIN)
    assert listing["data"][0]["revoked_at"] == revoked["revoked_at"]
    assert (await call("DELETE", f"{keys_url}/key_nope", token=ADMIN))[0] == 404

    # a revoked key is still a key: the gateway stays closed
    with pytest.raises(openai.AuthenticationError):
        await gw.client.chat.completions.create(model="smart", messages=MESSAGES)

    rows = await ledger_rows(gw)
    assert [r["api_key_id"] for r in rows] == [None, key_id]
    assert key not in caplog.text


async def test_config_keys_are_listed_but_cannot_be_revoked(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url, KEYS), environ={"TEAM_SEARCH_KEY": SEARCH_KEY})
    status, listing = await call("GET", gw.root + "/-/keys")  # loopback, no admin_key configured
    assert status == 200
    assert [(k["id"], k["team"], k["source"]) for k in listing["data"]] == [
        ("cfg_search", "search", "config"), ("cfg_billing", "billing", "config")
    ]
    assert SEARCH_KEY not in str(listing) and SEARCH_KEY[:10] not in str(listing)
    status, body = await call("DELETE", gw.root + "/-/keys/cfg_search")
    assert status == 400 and body["error"]["code"] == "config_key"


def test_admin_endpoints_answer_loopback_only_without_an_admin_key() -> None:
    gateway = mock.Mock()
    gateway.cfg.admin_key = gateway.cfg.read_key = None
    app: Any = {GATEWAY: gateway}

    def request(peer: str) -> Any:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (peer, 4000) if name == "peername" else default
        return make_mocked_request("POST", "/-/keys", app=app, transport=transport)

    require_admin(request("127.0.0.1"))
    require_admin(request("::1"))
    with pytest.raises(GatewayError) as exc:
        require_admin(request("10.1.2.3"))
    assert exc.value.status == 403 and exc.value.code == "admin_forbidden"


# --------------------------------------------------------------------------- #
# several processes, one database
# --------------------------------------------------------------------------- #


async def test_a_key_created_by_another_gateway_is_picked_up_by_the_refresh(
    fake: FakeOpenAI, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setattr(keys_mod, "REFRESH_INTERVAL", 0.05)
    a = await make_gateway(openai_config(fake.base_url, database(database_url)))
    b = await make_gateway(openai_config(fake.base_url, database(database_url)))
    assert a.gateway.cfg.database_url == b.gateway.cfg.database_url == database_url  # one shared database

    status, created = await call("POST", b.root + "/-/keys", json={"team": "research"})
    assert status == 201

    async def status_on_a(key: str | None) -> int:
        return (await call("GET", a.root + "/v1/models", token=key))[0]

    async def until(predicate: Any) -> None:
        deadline = time.monotonic() + 10
        while not await predicate():
            assert time.monotonic() < deadline, "gateway A never saw gateway B's change"
            await asyncio.sleep(0.02)

    await until(lambda: _eq(status_on_a(None), 401))  # A learnt that keys exist
    assert await status_on_a(created["key"]) == 200
    async with client(a, created["key"]) as c:
        await c.chat.completions.create(model="smart", messages=MESSAGES)
    [row] = await ledger_rows(a)
    assert row["team"] == "research" and row["api_key_id"] == created["id"]

    assert (await call("DELETE", f"{b.root}/-/keys/{created['id']}"))[0] == 200
    await until(lambda: _eq(status_on_a(created["key"]), 401))


async def _eq(awaitable: Any, expected: Any) -> bool:
    return bool(await awaitable == expected)


# --------------------------------------------------------------------------- #
# config validation and `interlock check`
# --------------------------------------------------------------------------- #


def test_config_problems_have_key_paths_and_never_show_a_key() -> None:
    toml = {
        "keys": [
            {"key": "short-secret", "team": "a"},
            {"key_sha256": "abc", "team": 5},
            {"key": "${UNSET_KEY_VAR}"},
            {"name": "x", "tags": ["ok", "t" * 80], "color": "red"},
            {"key": "a-long-enough-secret-value-1", "key_sha256": "0" * 64},
            {"key": "a-long-enough-secret-value-2", "name": "dup"},
            {"key": "a-long-enough-secret-value-3", "name": "dup"},
        ]
    }
    with pytest.raises(ConfigError) as exc:
        config_mod.parse(toml, environ={})
    paths = {p for p, _ in exc.value.problems}
    assert {"keys[0].key", "keys[1].key_sha256", "keys[1].team", "keys[2].key", "keys[3]", "keys[3].tags[1]",
            "keys[3].color", "keys[4]", "keys[6].name"} <= paths
    assert "short-secret" not in str(exc.value) and "a-long-enough" not in str(exc.value)


def test_check_shows_key_ids_names_and_teams_only(tmp_path: Path) -> None:
    path = tmp_path / "interlock.toml"
    path.write_text(KEYS + "\n[exporters.ledger]\nenabled = false\n")
    exe = Path(sys.executable).with_name("interlock")
    out = subprocess.run(
        [str(exe), "check", "--config", str(path)], capture_output=True, text=True, check=True,
        env={"TEAM_SEARCH_KEY": SEARCH_KEY, "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    ).stdout
    assert "cfg_search: name=search team=search tags=prod,search-api" in out
    assert "cfg_billing: name=billing team=billing" in out
    assert SEARCH_KEY not in out and hashlib.sha256(HASHED_KEY.encode()).hexdigest() not in out
    assert not (tmp_path / "interlock.db").exists()  # check opens no database


def test_a_config_key_is_scrubbed_from_logs() -> None:
    from interlock.core.gateway import Gateway

    cfg = config_mod.parse({"keys": [{"key": SEARCH_KEY, "team": "t"}]}, environ={})
    assert SEARCH_KEY in Gateway(cfg, load_entrypoints=False, environ={}).secrets()


async def test_unreadable_stored_keys_fail_closed_but_config_keys_work(tmp_path: Path) -> None:
    [spec] = config_mod.parse({"keys": [{"key": SEARCH_KEY, "team": "t"}]}, environ={}).keys
    store = keys_mod.KeyStore([spec], f"sqlite+aiosqlite:///{tmp_path}", refresh_interval=60)  # a directory
    await store.start()
    try:
        assert not store.loaded
        assert store.authenticate({"Authorization": f"Bearer {SEARCH_KEY}"}).team == "t"  # type: ignore[union-attr]
        with pytest.raises(GatewayError) as exc:
            store.authenticate({"Authorization": "Bearer ik_some-stored-key-we-cannot-check"})
        assert exc.value.status == 503 and exc.value.code == "key_store_unavailable"
    finally:
        await store.close()


async def test_the_key_store_creates_lists_and_revokes_in_the_database(database_url: str) -> None:
    """The SQL of the key store itself, on SQLite and PostgreSQL: rows written, read back, updated."""
    writer = keys_mod.KeyStore([], database_url, refresh_interval=60)
    reader = keys_mod.KeyStore([], database_url, refresh_interval=60)  # another process on the same database
    await writer.start()
    try:
        assert writer.loaded and not writer.enforced  # an empty database: open
        key, created = await writer.create("ci", "platform", ("ci", "nightly"))
        assert created["tags"] == ["ci", "nightly"] and created["created_at"].endswith("Z")
        await reader.start()
        record = reader.authenticate({"Authorization": f"Bearer {key}"})
        assert record is not None and (record.id, record.team, record.tags) == (created["id"], "platform", ("ci", "nightly"))
        [listed] = await reader.list()
        assert listed == {**created, "revoked_at": None}
        revoked = await writer.revoke(created["id"])
        again = await writer.revoke(created["id"])  # idempotent: the first revocation time stays
        assert revoked["revoked_at"] and again["revoked_at"] == revoked["revoked_at"]
        await reader.refresh()
        with pytest.raises(GatewayError) as exc:
            reader.authenticate({"Authorization": f"Bearer {key}"})
        assert exc.value.status == 401 and "revoked" in exc.value.message
        with pytest.raises(GatewayError) as missing:
            await writer.revoke("key_nope")
        assert missing.value.status == 404
    finally:
        await writer.close()
        await reader.close()
