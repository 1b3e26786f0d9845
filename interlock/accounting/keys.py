"""Gateway API keys: who is calling, for authentication and cost attribution.

Two sources of keys, used together:

* ``[[keys]]`` in the config file, with the key itself (``key = "${TEAM_SEARCH_KEY}"``)
  or only its SHA-256 (``key_sha256 = "<64 hex>"``), a ``name``, a ``team`` and default
  ``tags``. Their id is ``cfg_<name>`` (``cfg_<first 8 hex of the hash>`` without a name).
* keys created through the admin API (``POST /-/keys``), stored hashed in the ledger
  database's ``api_keys`` table, id ``key_<hex>``. The key itself is shown once, at creation.

The hot path never touches the database: :class:`KeyStore` keeps a map
``sha256 hex -> ApiKey`` in memory, loaded at startup, refreshed right after every
admin change and every ``REFRESH_INTERVAL`` seconds by a background task (so keys
created or revoked by another gateway process sharing the database take effect
within that interval).

When no key is configured or stored, the gateway is open (it binds loopback by
default) and requests carry no key id and no team. If stored keys cannot be read
(database unreachable at startup), keys from the config file still work and
every other request is refused with 503 until the database answers: a gateway
never opens up because it could not read its keys. That holds without ``[[keys]]``
too: an empty config says nothing about the ``api_keys`` table. What keeps such a
gateway from being blocked long is the retry (:meth:`KeyStore._next_delay`: 0.5 s
doubling to 5 s until the first read); after a first read, later outages block
nothing (the keys in memory, none or some, keep serving).

Tags of a request, in this order, de-duplicated: the key's default tags, the
``x-interlock-tags`` header (comma separated), then OpenAI ``metadata`` entries as
``key:value``. At most ``MAX_TAGS`` tags of at most ``MAX_TAG_CHARS`` characters
each: a header tag that is too long or holds control characters or bytes that are
not UTF-8, or a header with too many tags, is rejected (400); a ``metadata`` tag is cut to ``MAX_TAG_CHARS`` (OpenAI allows longer
values), and tags beyond ``MAX_TAGS`` in total are dropped, metadata first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from interlock.core import jsonutil
from interlock.core.errors import GatewayError
from interlock.core.provider import Secret
from interlock.core.store import Store
from interlock.accounting.database import file_url
from interlock.accounting.rate_limits import NO_LIMITS, Limits, format_expiry, parse_expiry, parse_limits

log = logging.getLogger("interlock.keys")

#: the store key holding how many stored keys the database had when last read (see KeyStore._known_empty)
STORED_COUNT = "keys:stored"
#: seconds between background reloads of the stored keys
REFRESH_INTERVAL = 30.0
#: until the stored keys are read once, retry after RETRY_MIN seconds, doubling up to RETRY_MAX
RETRY_MIN = 0.5
RETRY_MAX = 5.0
MAX_TAGS = 32
MAX_TAG_CHARS = 64
#: shortest key accepted in ``[[keys]] key`` (generated keys are 46 characters)
MIN_KEY_CHARS = 16
KEY_PREFIX = "ik_"
#: characters of a key kept as its ``prefix``, to recognise it in listings
PREFIX_CHARS = 10

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_KEY_FIELDS = {"key", "key_sha256", "name", "team", "tags", "rpm", "tpm", "max_concurrent", "models", "expires_at"}
#: the store channel on which every admin change is announced to the gateways sharing the database
CHANNEL = "keys"


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored and looked up.

    A key read from a header that was not UTF-8 holds aiohttp's surrogate escapes: it is hashed
    as the bytes the client sent (it matches no key, and is refused with 401, not a 500).
    """
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> str:
    """A fresh random key: ``ik_`` and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What the gateway knows about a key: never the key itself."""

    id: str
    name: str | None
    team: str | None
    tags: tuple[str, ...]
    prefix: str
    source: str  # "config" or "admin"
    revoked: bool = False
    limits: Limits = NO_LIMITS  # rpm, tpm, max_concurrent, models (interlock.accounting.rate_limits)
    expires_at: float | None = None  # Unix seconds; afterwards the key is refused (401 "expired")

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "team": self.team, "tags": list(self.tags),
                "prefix": self.prefix or None, "source": self.source, **self.limits.public(),
                "expires_at": format_expiry(self.expires_at)}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A ``[[keys]]`` entry: the hash of the key (the key itself is not kept) and its attribution."""

    key_hash: str
    record: ApiKey
    secret: Secret | None = None  # the key when written in the file, only so logs can be scrubbed of it


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #


def check_tags(value: Any, path: str, problems: list[tuple[str, str]]) -> tuple[str, ...]:
    """Validate a list of default tags (config or admin API)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        problems.append((path, "must be a list of strings"))
        return ()
    tags: list[str] = []
    for i, tag in enumerate(value):
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_CHARS or "," in tag:
            problems.append((f"{path}[{i}]", f"a tag is 1 to {MAX_TAG_CHARS} characters without ','"))
        elif tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        problems.append((path, f"at most {MAX_TAGS} tags"))
    return tuple(tags)


def _optional_str(table: Mapping[str, Any], key: str, path: str, problems: list[tuple[str, str]]) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        problems.append((f"{path}.{key}", "must be a non-empty string of at most 128 characters"))
        return None
    return value.strip()


def parse_keys(value: Any, problems: list[tuple[str, str]]) -> list[KeySpec]:
    """Validate ``[[keys]]``; problems carry key paths (``keys[1].team``) and never a key."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(("keys", "must be an array of tables: [[keys]]"))
        return []
    specs: list[KeySpec] = []
    ids: set[str] = set()
    hashes: set[str] = set()
    for i, table in enumerate(value):
        path = f"keys[{i}]"
        if not isinstance(table, dict):
            problems.append((path, "must be a table with 'key' or 'key_sha256'"))
            continue
        for k in table:
            if k not in _KEY_FIELDS:
                problems.append((f"{path}.{k}", f"unknown key (known: {', '.join(sorted(_KEY_FIELDS))})"))
        key, digest = table.get("key"), table.get("key_sha256")
        key_hash: str | None = None
        secret = None
        if (key is None) == (digest is None):
            problems.append((path, "needs exactly one of 'key' (e.g. \"${TEAM_KEY}\") or 'key_sha256'"))
        elif key is not None:
            if not isinstance(key, str):
                problems.append((f"{path}.key", "must be a string"))
            elif len(key) < MIN_KEY_CHARS:  # an unset ${VAR} is reported by the expansion already
                if key:
                    problems.append((f"{path}.key", f"too short: use at least {MIN_KEY_CHARS} random characters"))
            else:
                key_hash, secret = hash_key(key), Secret(key)  # no prefix: a chosen key may be short
        elif not isinstance(digest, str) or not _HEX64.match(digest):
            problems.append((f"{path}.key_sha256", "must be 64 hex digits (sha256 of the key)"))
        else:
            key_hash = digest.lower()
        name = _optional_str(table, "name", path, problems)
        if name is not None and not _NAME.match(name):
            problems.append((f"{path}.name", "may use letters, digits, '.', '_' and '-' only (at most 64)"))
            name = None
        team = _optional_str(table, "team", path, problems)
        tags = check_tags(table.get("tags"), f"{path}.tags", problems)
        limits = parse_limits(table, f"{path}.", problems)
        expires_at = parse_expiry(table.get("expires_at"), f"{path}.expires_at", problems)
        if key_hash is None:
            continue
        if key_hash in hashes:
            problems.append((path, "the same key is configured twice"))
            continue
        key_id = f"cfg_{name}" if name else f"cfg_{key_hash[:8]}"
        if key_id in ids:
            problems.append((f"{path}.name", f"another key already has the id {key_id!r}"))
            continue
        ids.add(key_id)
        hashes.add(key_hash)
        specs.append(KeySpec(key_hash, ApiKey(key_id, name, team, tags, "", "config", limits=limits,
                                              expires_at=expires_at), secret))
    return specs


def request_tags(defaults: Iterable[str], header: str, metadata: Any) -> list[str]:
    """A request's tags (see the module docstring for the order and the bounds)."""
    header_tags = [t.strip() for t in header.split(",") if t.strip()] if header else []
    if len(header_tags) > MAX_TAGS:
        raise GatewayError(400, f"x-interlock-tags carries {len(header_tags)} tags; at most {MAX_TAGS}",
                           code="invalid_tags")
    for tag in header_tags:
        if len(tag) > MAX_TAG_CHARS:
            raise GatewayError(400, f"x-interlock-tags: a tag is at most {MAX_TAG_CHARS} characters",
                               code="invalid_tags")
        if not _clean_text(tag):
            # undecodable bytes arrive as lone surrogates (aiohttp decodes headers with surrogateescape)
            raise GatewayError(400, "x-interlock-tags: tags must be UTF-8 text without control characters",
                               code="invalid_tags")
    meta_tags: list[str] = []
    if isinstance(metadata, dict):
        for k, v in metadata.items():
            if isinstance(v, (str, int, float, bool)) and str(k).strip():
                text = v if isinstance(v, str) else jsonutil.dumps_str(v)
                meta_tags.append(f"{str(k).strip()}:{text.strip()}"[:MAX_TAG_CHARS])
    out: list[str] = []
    for tag in (*defaults, *header_tags, *meta_tags):
        if tag not in out:
            out.append(tag)
    return out[:MAX_TAGS]


def _clean_text(text: str) -> bool:
    """No control characters and no lone surrogates (what undecodable header bytes become)."""
    if text.isascii():
        return text.isprintable()
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``Authorization: Bearer``, else ``x-api-key`` or ``api-key``."""
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name in ("x-api-key", "api-key"):
        value = headers.get(name, "").strip()
        if value:
            return value
    return None


def _unauthorized(message: str) -> GatewayError:
    # what the openai SDK maps to AuthenticationError
    return GatewayError(401, message, type="invalid_request_error", code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"})


# --------------------------------------------------------------------------- #
# the in-memory map and its database
# --------------------------------------------------------------------------- #


class KeyStore:
    """Config keys plus stored keys, looked up in memory by hash; see the module docstring."""

    def __init__(self, specs: Iterable[KeySpec], database_url: str, *, refresh_interval: float | None = None,
                 store: Store | None = None, clock: Callable[[], float] = time.time) -> None:
        self.database_url = database_url
        # changes made through any gateway's admin API are announced on the store's CHANNEL;
        # every KeyStore refreshes on the announcement (the periodic refresh stays as a safety net)
        self.store = store
        self.clock = clock  # for expires_at
        self._by_id: dict[str, ApiKey] = {}
        self._announced: asyncio.Task[None] | None = None  # a refresh asked for by an announcement
        self._again = False  # another announcement arrived while that refresh ran
        self._closed = False
        self.refresh_interval = REFRESH_INTERVAL if refresh_interval is None else refresh_interval
        self._config: dict[str, ApiKey] = {}
        self._stored: dict[str, ApiKey] = {}
        self._map: dict[str, ApiKey] = {}
        self.loaded = False  # stored keys were read at least once
        self._engine: Any = None
        self._migrated = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._lock = asyncio.Lock()  # one database read at a time; close waits for it
        self._open_lock = asyncio.Lock()  # one engine, one migration
        self.configure(specs)

    def configure(self, specs: Iterable[KeySpec]) -> None:
        """Swap in the config file's keys (at startup and on reload)."""
        self._config = {s.key_hash: s.record for s in specs}
        self._rebuild()

    def _rebuild(self) -> None:
        self._map = {**self._stored, **self._config}  # a key in both: the config file's entry wins
        self._by_id = {k.id: k for k in self._map.values()}

    def limits_of(self, key_id: str) -> Limits | None:
        """The rate limits and model allowlist of a key, by id (memory only)."""
        record = self._by_id.get(key_id)
        return record.limits if record is not None else None

    @property
    def config_keys(self) -> list[ApiKey]:
        return list(self._config.values())

    @property
    def enforced(self) -> bool:
        """Whether requests need a key."""
        return bool(self._map) or not self.loaded

    # -- the hot path: memory only ------------------------------------------ #

    def authenticate(self, headers: Mapping[str, str]) -> ApiKey | None:
        """The caller's key, None when the gateway is open; raises 401 (or 503, see above)."""
        if self.loaded and not self._map:
            return None
        key = presented_key(headers)
        record = self._map.get(hash_key(key)) if key else None
        if record is not None and not record.revoked:
            if record.expires_at is not None and record.expires_at <= self.clock():
                raise GatewayError(401, f"this API key expired at {format_expiry(record.expires_at)}",
                                   type="invalid_request_error", code="expired", headers={"WWW-Authenticate": "Bearer"})
            return record
        if record is not None:
            raise _unauthorized("this API key was revoked")
        if not self.loaded:
            raise GatewayError(503, "the gateway cannot read its API keys from the database yet; retry shortly",
                               type="server_error", code="key_store_unavailable")
        if key is None:
            raise _unauthorized("this gateway needs an API key: send 'Authorization: Bearer <key>'")
        raise _unauthorized("incorrect API key provided")

    # -- lifecycle -------------------------------------------------------- #

    def _no_database_yet(self) -> bool:
        """A SQLite file that does not exist holds no keys: do not create it just to read."""
        path = _plain_sqlite_file(self.database_url)
        if path is not None and path != ":memory:":  # the default form: no SQLAlchemy needed
            return not os.path.exists(path)
        from sqlalchemy.engine import make_url

        try:
            url = make_url(self.database_url)
        except Exception:
            return False
        db = url.database
        return url.get_backend_name() == "sqlite" and db is not None and db not in ("", ":memory:") and not os.path.exists(db)

    async def _no_stored_keys(self) -> bool:
        """True when the database certainly holds no stored keys, found without SQLAlchemy.

        A default ``interlock serve`` (SQLite, no key ever created through the admin API)
        must not import SQLAlchemy and aiosqlite (~20 MB) just to learn that: a missing
        file, or one whose ``api_keys`` table is missing or empty, is read with the
        standard library's sqlite3, read-only. Anything else (keys exist, another
        database, an error) goes through SQLAlchemy, which then is imported.
        """
        if self._no_database_yet():
            return True
        path = _plain_sqlite_file(self.database_url)
        if path is None:
            return False
        return await asyncio.to_thread(_sqlite_has_no_keys, path)

    async def _open(self) -> Any:
        from interlock.accounting import ledger

        async with self._open_lock:
            if self._engine is None:
                self._engine = await ledger.open_engine(self.database_url)
            if not self._migrated:
                await ledger.migrate(self._engine)
                self._migrated = True
            return self._engine

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            self._failed(exc)
            await self._known_empty()
        self._task = asyncio.create_task(self._run(), name="interlock-keys-refresh")
        if self.store is not None:
            self.store.subscribe(CHANNEL, self._announcement)

    def _announcement(self, message: str) -> None:
        """A gateway changed the stored keys: refresh soon (coalesced: one refresh at a time, one more after)."""
        if self._closed:
            return
        if self._announced is not None and not self._announced.done():
            self._again = True
            return
        self._announced = asyncio.get_running_loop().create_task(self._refresh_announced(), name="interlock-keys-announced")

    async def _refresh_announced(self) -> None:
        while True:
            self._again = False
            try:
                await self.refresh()
            except Exception as exc:
                self._failed(exc)
            if not self._again or self._closed:
                return

    async def _announce(self) -> None:
        """Tell every gateway sharing the store (this one too) that the stored keys changed."""
        if self.store is None:
            return
        try:
            await self.store.publish(CHANNEL, "changed")
        except Exception as exc:  # the others still pick the change up on their periodic refresh
            log.warning("keys: cannot announce a key change on the store (%s: %s); other gateways see it within %gs",
                        type(exc).__name__, exc, self.refresh_interval)

    async def close(self) -> None:
        self._closed = True
        announced, self._announced = self._announced, None
        if announced is not None:
            async with self._lock:
                announced.cancel()
                await asyncio.wait([announced])
        task, self._task = self._task, None
        if task is not None:
            async with self._lock:  # never cut a query: the driver's thread would outlive the loop
                task.cancel()
                await asyncio.wait([task])
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def _run(self) -> None:
        delay: float | None = None
        while True:
            delay = self._next_delay(delay)
            await asyncio.sleep(delay)
            try:
                await self.refresh()
            except Exception as exc:
                self._failed(exc)

    async def _known_empty(self) -> None:
        """The database cannot be read at start: if the store knows it holds no stored keys, act on that.

        Every successful read notes how many stored keys there are in the store
        (``keys:stored``). A gateway starting while the database is down, on a store that
        outlived it (Redis), learns there that the database held no keys when last read:
        it serves as a gateway without stored keys (open, or config keys only) instead of
        refusing every request until the database answers. A key created meanwhile is
        announced and read as soon as the database answers. If the store knows of stored
        keys, or knows nothing (an in-memory store just started), requests without a
        config key keep getting 503 until the keys can be read.
        """
        if self.store is None or self.loaded:
            return
        try:
            count = await self.store.get(STORED_COUNT)
        except Exception:
            return
        if count == 0:
            self._stored = {}
            self.loaded = True
            self._rebuild()
            log.warning("keys: the database is unreachable, but it held no stored API keys when last read (the "
                        "store says so): serving as a gateway without stored keys until it answers")

    def _next_delay(self, previous: float | None) -> float:
        """Seconds until the next read of the stored keys (database outages: see below).

        Until the stored keys have been read once, every request without a config key is
        refused with 503 ``key_store_unavailable``: the gateway cannot tell whether the
        database holds keys, and it must not open up because it could not read them. So
        it retries soon, ``RETRY_MIN`` seconds doubling to ``RETRY_MAX``, and requests
        resume within seconds of the database answering (not a whole ``refresh_interval``
        later). Once read, the keys in memory keep serving through any later outage, and
        the regular ``refresh_interval`` applies.
        """
        if self.loaded:
            return self.refresh_interval
        if previous is None:
            return min(RETRY_MIN, self.refresh_interval)
        return min(previous * 2, RETRY_MAX, self.refresh_interval)

    def _failed(self, exc: Exception) -> None:
        from interlock.accounting.ledger import safe_url

        if not self._failing:
            log.warning("keys: cannot read API keys from %s (%s: %s); %s", safe_url(self.database_url),
                        type(exc).__name__, exc,
                        "keeping the last ones read" if self.loaded else "only config keys are accepted until it answers")
        self._failing = True

    async def refresh(self) -> None:
        """Re-read the stored keys (one small SELECT) and swap the in-memory map."""
        async with self._lock:
            if self._engine is None and await self._no_stored_keys():
                stored: dict[str, ApiKey] = {}
            else:
                # keys were stored (or the database is not a plain SQLite file): SQLAlchemy is
                # imported here, and stays loaded, only in a gateway that has stored keys to read
                from sqlalchemy import select

                from interlock.accounting.ledger import api_keys

                engine = await self._open()
                t = api_keys.c
                async with engine.connect() as conn:
                    rows = (await conn.execute(
                        select(t.id, t.name, t.key_hash, t.prefix, t.team, t.tags, t.revoked_at, *_limit_columns(t))
                    )).all()
                stored = {row.key_hash: _record(row) for row in rows}
        self._stored = stored
        self.loaded = True
        if self.store is not None:
            try:  # what a gateway starting during a database outage may rely on (see _known_empty)
                await self.store.set(STORED_COUNT, len(stored))
            except Exception as exc:
                log.debug("keys: cannot note the stored key count in the store (%s)", exc)
        if self._failing:
            log.info("keys: API keys read again from the database")
        self._failing = False
        self._rebuild()

    # -- the admin API ------------------------------------------------------ #

    async def create(self, name: str | None, team: str | None, tags: tuple[str, ...], limits: Limits = NO_LIMITS,
                     expires_at: float | None = None) -> tuple[str, dict[str, Any]]:
        """Store a new key; returns the key (shown once) and its public record."""
        from sqlalchemy import insert

        from interlock.accounting.ledger import api_keys

        engine = await self._open()
        key = new_key()
        row = {"id": f"key_{secrets.token_hex(8)}", "name": name, "key_hash": hash_key(key),
               "prefix": key[:PREFIX_CHARS], "team": team, "tags": jsonutil.dumps_str(list(tags)),
               "created_at": datetime.now(UTC), "revoked_at": None, **_limit_values(limits, expires_at)}
        async with engine.begin() as conn:
            await conn.execute(insert(api_keys).values(**row))
        await self.refresh()
        await self._announce()
        return key, _public_row(row)

    async def update(self, key_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a stored key's ``rpm``, ``tpm``, ``max_concurrent``, ``models`` or ``expires_at`` (None clears).

        ``changes`` holds validated values (``models`` a tuple, ``expires_at`` Unix seconds);
        404 for an unknown id, 400 for a config key.
        """
        from sqlalchemy import select, update

        from interlock.accounting.ledger import api_keys

        self._stored_only(key_id)
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "models":
                values[name] = jsonutil.dumps_str(list(value)) if value is not None else None
            elif name == "expires_at":
                values[name] = datetime.fromtimestamp(value, UTC) if value is not None else None
            else:
                values[name] = value
        engine = await self._open()
        t = api_keys.c
        async with engine.begin() as conn:
            if values:
                await conn.execute(update(api_keys).where(t.id == key_id).values(**values))
            row = (await conn.execute(select(*_public_columns(t)).where(t.id == key_id))).mappings().first()
        if row is None:
            raise GatewayError(404, f"no API key with id {key_id!r}", code="key_not_found", param="id")
        await self.refresh()
        await self._announce()
        return _public_row(dict(row))

    def _stored_only(self, key_id: str) -> None:
        if any(k.id == key_id for k in self._config.values()):
            raise GatewayError(400, f"{key_id} is configured in the config file: change it there and reload",
                               code="config_key")
        if self._engine is None and self._no_database_yet():
            raise GatewayError(404, f"no API key with id {key_id!r}", code="key_not_found", param="id")

    async def list(self) -> list[dict[str, Any]]:
        """Config keys and stored keys (revoked ones too): never a key or its hash."""
        from sqlalchemy import select

        from interlock.accounting.ledger import api_keys

        out = [{**k.public(), "created_at": None, "revoked_at": None} for k in self._config.values()]
        if self._engine is None and self._no_database_yet():
            return out
        engine = await self._open()
        t = api_keys.c
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(*_public_columns(t)).order_by(t.created_at)
            )).mappings().all()
        return out + [_public_row(dict(r)) for r in rows]

    async def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke a stored key (idempotent); 404 for an unknown id, 400 for a config key."""
        from sqlalchemy import select, update

        from interlock.accounting.ledger import api_keys

        self._stored_only(key_id)
        engine = await self._open()
        t = api_keys.c
        async with engine.begin() as conn:
            await conn.execute(
                update(api_keys).where(t.id == key_id, t.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
            )
            row = (await conn.execute(
                select(*_public_columns(t)).where(t.id == key_id)
            )).mappings().first()
        if row is None:
            raise GatewayError(404, f"no API key with id {key_id!r}", code="key_not_found", param="id")
        await self.refresh()
        await self._announce()
        return _public_row(dict(row))


def _plain_sqlite_file(url: str) -> str | None:
    """The file of a ``sqlite+aiosqlite:///path`` URL without a query (as SQLAlchemy reads it), else None."""
    parsed = file_url(url)
    return parsed[0] if parsed is not None and not parsed[1] else None


def _sqlite_has_no_keys(path: str) -> bool:
    """Whether the SQLite file at ``path`` has no ``api_keys`` row (or no such table); False when unsure."""
    import sqlite3
    from urllib.parse import quote

    if path == ":memory:":
        return False
    try:
        # mode=rw: never creates the file; not mode=ro, as a read-only connection that closes last
        # leaves the WAL files behind
        conn = sqlite3.connect(f"file:{quote(path, safe='/:')}?mode=rw", uri=True)
    except sqlite3.Error:
        return False
    try:
        return conn.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is None
    except sqlite3.OperationalError as exc:
        return "no such table" in str(exc)
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def _tags(text: str | None) -> tuple[str, ...]:
    try:
        value = jsonutil.loads(text) if text else []
    except ValueError:
        return ()
    return tuple(t for t in value if isinstance(t, str)) if isinstance(value, list) else ()


def _limit_columns(t: Any) -> list[Any]:
    """The api_keys columns of migration 4 (rate limits, allowlist, expiry)."""
    return [t.rpm, t.tpm, t.max_concurrent, t.models, t.expires_at]


def _public_columns(t: Any) -> list[Any]:
    """What listings show: never the key or its hash."""
    return [t.id, t.name, t.prefix, t.team, t.tags, t.created_at, t.revoked_at, *_limit_columns(t)]


def _limit_values(limits: Limits, expires_at: float | None) -> dict[str, Any]:
    """A key's limits as api_keys column values."""
    return {"rpm": limits.rpm, "tpm": limits.tpm, "max_concurrent": limits.max_concurrent,
            "models": jsonutil.dumps_str(list(limits.models)) if limits.models is not None else None,
            "expires_at": datetime.fromtimestamp(expires_at, UTC) if expires_at is not None else None}


def _row_limits(row: Mapping[str, Any]) -> tuple[Limits, float | None]:
    models = None
    if row["models"] is not None:
        try:
            value = jsonutil.loads(row["models"])
        except ValueError:
            value = []  # unreadable: allow nothing rather than everything
        models = tuple(m for m in value if isinstance(m, str)) if isinstance(value, list) else ()
    expires = row["expires_at"]
    if expires is not None and expires.tzinfo is None:  # SQLite hands back naive UTC
        expires = expires.replace(tzinfo=UTC)
    return Limits(row["rpm"], row["tpm"], row["max_concurrent"], models), expires.timestamp() if expires else None


def _record(row: Any) -> ApiKey:
    limits, expires_at = _row_limits(row._mapping)
    return ApiKey(row.id, row.name, row.team, _tags(row.tags), row.prefix, "admin", revoked=row.revoked_at is not None,
                  limits=limits, expires_at=expires_at)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def _public_row(row: Mapping[str, Any]) -> dict[str, Any]:
    limits, expires_at = _row_limits(row)
    return {"id": row["id"], "name": row["name"], "team": row["team"], "tags": list(_tags(row["tags"])),
            "prefix": row["prefix"], "source": "admin", **limits.public(), "expires_at": format_expiry(expires_at),
            "created_at": _iso(row["created_at"]), "revoked_at": _iso(row["revoked_at"])}
