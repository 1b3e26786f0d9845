"""Who may call which admin and information endpoint: every endpoint x every kind of caller.

Three deployments, each started fresh for every cell (the admin cells change state):

* keys configured: ``[server] admin_key`` and ``read_key``, a ``[[keys]]`` team key and a key
  created through the admin API; callers with no credential, a wrong key, the team key, the read
  key and the admin key;
* gateway keys without an admin key: a loopback client and one at another address, each with no
  credential and with the team key;
* no keys at all: a loopback client and one at another address.

Another address is simulated by a middleware in front of the gateway's that gives the request
the ``x-test-remote`` header's address as its peer (``request.remote``), so the gateway's own
middleware and handlers run unchanged.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx2  # sends header bytes as they are (aiohttp's client would re-encode them)
import pytest
from aiohttp import web

from interlock.core import config as config_mod
from interlock.core.app import create_app
from interlock.core.gateway import Gateway
from interlock.testing import FakeOpenAI
from tests.conftest import openai_config
from tests.core._api_helpers import assert_openai_error

ADMIN = "adm-access-matrix-0123456789"
READER = "read-access-matrix-0123456789"
TEAM_KEY = "ik_team-search-0123456789abcdef"
WRONG = "ik_wrong-0123456789abcdef"
FAR_AWAY = "203.0.113.7"  # TEST-NET-3: never a loopback address

TEAM = """
[[keys]]
key = "ik_team-search-0123456789abcdef"
name = "search"
team = "search"
"""
COMMON = """
[[budgets]]
scope = "team:search"
daily_usd = 50

[telemetry]
prometheus = true
"""
ADMIN_AND_READ = f'[server]\nadmin_key = "{ADMIN}"\nread_key = "{READER}"\n'

# expected cells: a success status, or (error status, error code)
A401 = (401, "invalid_admin_key")  # admin_key set; no valid admin, read or gateway key
K401 = (401, "invalid_api_key")  # a front door's own key check
ONLY = (403, "admin_only")  # a gateway API key on an administrator's endpoint
RO = (403, "read_only_key")  # the read key on an endpoint that changes something
FAR = (403, "admin_forbidden")  # no admin_key, another address
GONE = (404, "response_not_found")  # a stored-response endpoint, past its key check

Cell = int | tuple[int, str]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {stored}: a key created through the admin API, or a missing one in the no-keys deployment
    body: Any = field(default=None, hash=False)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


HEALTH = Endpoint("GET", "/health")
PROVIDERS = Endpoint("GET", "/health/providers")
PLUGINS = Endpoint("GET", "/-/plugins")
SPEND = Endpoint("GET", "/spend")
METRICS = Endpoint("GET", "/metrics")
METRICS_HEAD = Endpoint("HEAD", "/metrics")
RELOAD = Endpoint("POST", "/-/reload")
LIST_KEYS = Endpoint("GET", "/-/keys")
CREATE_KEY = Endpoint("POST", "/-/keys", {"name": "made-by-the-test", "team": "search"})
UPDATE_KEY = Endpoint("PATCH", "/-/keys/{stored}", {"rpm": 10})
REVOKE_KEY = Endpoint("DELETE", "/-/keys/{stored}")
BUDGETS = Endpoint("GET", "/-/budgets")
RESET_BUDGET = Endpoint("POST", "/-/budgets/reset", {"scope": "team:search"})
MODELS = Endpoint("GET", "/v1/models")
MODEL = Endpoint("GET", "/v1/models/smart")
STORED_RESPONSE = Endpoint("GET", "/v1/responses/resp_missing")
DELETE_RESPONSE = Endpoint("DELETE", "/v1/responses/resp_missing")

# ------------------------------------------------------------------------------------------------ #
# keys configured: admin_key, read_key and gateway keys
# ------------------------------------------------------------------------------------------------ #

KEYED_CALLERS = ("no key", "wrong key", "team key", "read key", "admin key")
KEYED: dict[Endpoint, tuple[Cell, Cell, Cell, Cell, Cell]] = {
    #                 no key  wrong   team    read  admin
    HEALTH:          (200,    200,    200,    200,  200),
    PROVIDERS:       (A401,   A401,   ONLY,   200,  200),
    PLUGINS:         (A401,   A401,   ONLY,   200,  200),
    SPEND:           (A401,   A401,   200,    200,  200),
    METRICS:         (A401,   A401,   ONLY,   200,  200),
    METRICS_HEAD:    (401,    401,    403,    200,  200),  # HEAD answers carry no body
    RELOAD:          (A401,   A401,   ONLY,   RO,   200),
    LIST_KEYS:       (A401,   A401,   ONLY,   200,  200),
    CREATE_KEY:      (A401,   A401,   ONLY,   RO,   201),
    UPDATE_KEY:      (A401,   A401,   ONLY,   RO,   200),
    REVOKE_KEY:      (A401,   A401,   ONLY,   RO,   200),
    BUDGETS:         (A401,   A401,   ONLY,   200,  200),
    RESET_BUDGET:    (A401,   A401,   ONLY,   RO,   200),
    MODELS:          (K401,   K401,   200,    K401, K401),  # a front door: gateway keys only
    MODEL:           (K401,   K401,   200,    K401, K401),
    STORED_RESPONSE: (K401,   K401,   GONE,   K401, K401),
    DELETE_RESPONSE: (K401,   K401,   GONE,   K401, K401),
}
CREDENTIALS = {"no key": None, "wrong key": WRONG, "team key": TEAM_KEY, "read key": READER, "admin key": ADMIN}

# ------------------------------------------------------------------------------------------------ #
# gateway keys without an admin key: the administrator is a loopback client without a gateway key
# ------------------------------------------------------------------------------------------------ #

TEAM_ONLY_CALLERS = ("loopback, no key", "loopback, wrong key", "loopback, team key",
                     "far, no key", "far, wrong key", "far, team key")
TEAM_ONLY: dict[Endpoint, tuple[Cell, Cell, Cell, Cell, Cell, Cell]] = {
    #                 ---------- loopback ----------   ------------ far -------------
    #                 no key  wrong   team             no key  wrong   team
    HEALTH:          (200,    200,    200,             200,    200,    200),
    PROVIDERS:       (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    PLUGINS:         (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    SPEND:           (200,    K401,   200,             FAR,    K401,   200),
    METRICS:         (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    RELOAD:          (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    LIST_KEYS:       (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    CREATE_KEY:      (201,    K401,   ONLY,            FAR,    K401,   ONLY),
    UPDATE_KEY:      (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    REVOKE_KEY:      (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    BUDGETS:         (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    RESET_BUDGET:    (200,    K401,   ONLY,            FAR,    K401,   ONLY),
    MODELS:          (K401,   K401,   200,             K401,   K401,   200),
    MODEL:           (K401,   K401,   200,             K401,   K401,   200),
    STORED_RESPONSE: (K401,   K401,   GONE,            K401,   K401,   GONE),
}

# ------------------------------------------------------------------------------------------------ #
# no keys at all: open front doors, the administrator is any loopback client; a key sent is ignored
# ------------------------------------------------------------------------------------------------ #

OPEN_CALLERS = ("loopback, no key", "loopback, some key", "far, no key", "far, some key")
NOT_FOUND = (404, "key_not_found")  # no stored key exists: past the guard, nothing to change
OPEN: dict[Endpoint, tuple[Cell, Cell, Cell, Cell]] = {
    #                 ---- loopback ----   ------ far ------
    #                 no key  some key     no key  some key
    HEALTH:          (200,    200,         200,    200),
    PROVIDERS:       (200,    200,         FAR,    FAR),
    PLUGINS:         (200,    200,         FAR,    FAR),
    SPEND:           (200,    200,         FAR,    FAR),
    METRICS:         (200,    200,         FAR,    FAR),
    RELOAD:          (200,    200,         FAR,    FAR),
    LIST_KEYS:       (200,    200,         FAR,    FAR),
    CREATE_KEY:      (201,    201,         FAR,    FAR),
    UPDATE_KEY:      (NOT_FOUND, NOT_FOUND, FAR,   FAR),
    REVOKE_KEY:      (NOT_FOUND, NOT_FOUND, FAR,   FAR),
    BUDGETS:         (200,    200,         FAR,    FAR),
    RESET_BUDGET:    (200,    200,         FAR,    FAR),
    MODELS:          (200,    200,         200,    200),
    MODEL:           (200,    200,         200,    200),
    STORED_RESPONSE: (GONE,   GONE,        GONE,   GONE),
}

# ------------------------------------------------------------------------------------------------ #
# the harness
# ------------------------------------------------------------------------------------------------ #


@web.middleware
async def peer_from_header(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """A client at the ``x-test-remote`` address, as far as everything after this middleware can tell."""
    remote = request.headers.get("x-test-remote")
    return await handler(request.clone(remote=remote) if remote else request)


@dataclass
class Deployment:
    root: str
    stored: str  # a stored key's id, or a missing one


@contextlib.asynccontextmanager
async def deployment(toml: str, workdir: Path) -> AsyncIterator[Deployment]:
    """A gateway on a loopback port, with :func:`peer_from_header` in front of its middleware."""
    path = workdir / "interlock.toml"
    path.write_text(toml)
    cfg = config_mod.load(str(path), environ={})
    cfg.database_url = f"sqlite+aiosqlite:///{workdir / 'interlock.db'}"
    app = create_app(Gateway(cfg, load_entrypoints=False, environ={}))
    app.middlewares.insert(0, peer_from_header)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield Deployment(f"http://127.0.0.1:{runner.addresses[0][1]}", "key_missing")
    finally:
        await runner.cleanup()


async def call(dep: Deployment, endpoint: Endpoint, *, token: str | None = None, far: bool = False
               ) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if far:
        headers["x-test-remote"] = FAR_AWAY
    url = dep.root + endpoint.path.format(stored=dep.stored)
    async with aiohttp.ClientSession() as session:
        async with session.request(endpoint.method, url, headers=headers, json=endpoint.body) as resp:
            return resp.status, await resp.read()


def check(cell: Cell, status: int, body: bytes, endpoint: Endpoint) -> None:
    want, code = (cell, None) if isinstance(cell, int) else cell
    assert status == want, (str(endpoint), status, body[:300])
    for secret in (ADMIN, READER, TEAM_KEY, WRONG):
        assert secret.encode() not in body  # an error never echoes a key; nothing lists one
    if code is not None:
        assert_openai_error(json.loads(body), code=code)


def params(table: dict[Endpoint, Any], callers: tuple[str, ...]) -> list[Any]:
    return [pytest.param(endpoint, caller, cells[i], id=f"{endpoint}-{caller}")
            for endpoint, cells in table.items() for i, caller in enumerate(callers)]


# ------------------------------------------------------------------------------------------------ #
# the matrices
# ------------------------------------------------------------------------------------------------ #


@pytest.mark.parametrize(("endpoint", "caller", "cell"), params(KEYED, KEYED_CALLERS))
async def test_keys_configured(fake: FakeOpenAI, tmp_path: Path, endpoint: Endpoint, caller: str, cell: Cell) -> None:
    async with deployment(openai_config(fake.base_url, ADMIN_AND_READ + TEAM + COMMON), tmp_path) as dep:
        status, body = await call(dep, CREATE_KEY, token=ADMIN)  # a stored key, for PATCH and DELETE
        assert status == 201, body
        dep.stored = json.loads(body)["id"]
        status, body = await call(dep, endpoint, token=CREDENTIALS[caller])
    check(cell, status, body, endpoint)


@pytest.mark.parametrize(("endpoint", "caller", "cell"), params(TEAM_ONLY, TEAM_ONLY_CALLERS))
async def test_gateway_keys_without_an_admin_key(fake: FakeOpenAI, tmp_path: Path, endpoint: Endpoint, caller: str,
                                                 cell: Cell) -> None:
    async with deployment(openai_config(fake.base_url, TEAM + COMMON), tmp_path) as dep:
        status, body = await call(dep, CREATE_KEY)  # loopback, no credential: the administrator
        assert status == 201, body
        dep.stored = json.loads(body)["id"]
        token = {"no key": None, "wrong key": WRONG, "team key": TEAM_KEY}[caller.split(", ")[1]]
        status, body = await call(dep, endpoint, token=token, far=caller.startswith("far"))
    check(cell, status, body, endpoint)


@pytest.mark.parametrize(("endpoint", "caller", "cell"), params(OPEN, OPEN_CALLERS))
async def test_no_keys(fake: FakeOpenAI, tmp_path: Path, endpoint: Endpoint, caller: str, cell: Cell) -> None:
    async with deployment(openai_config(fake.base_url, COMMON), tmp_path) as dep:
        token = WRONG if caller.endswith("some key") else None  # what an SDK sends when told any key
        status, body = await call(dep, endpoint, token=token, far=caller.startswith("far"))
    check(cell, status, body, endpoint)


# ------------------------------------------------------------------------------------------------ #
# the rest of the rules
# ------------------------------------------------------------------------------------------------ #


async def test_public_metrics_opens_metrics_and_nothing_else(fake: FakeOpenAI, tmp_path: Path) -> None:
    toml = openai_config(fake.base_url, ADMIN_AND_READ + "public_metrics = true\n" + TEAM + COMMON)
    async with deployment(toml, tmp_path) as dep:
        for token, far in ((None, False), (None, True), (WRONG, True), (TEAM_KEY, True)):
            status, body = await call(dep, METRICS, token=token, far=far)
            assert status == 200 and b"interlock" in body  # a scrape: Prometheus text
        check(A401, *await call(dep, PROVIDERS, far=True), PROVIDERS)
        check(A401, *await call(dep, SPEND, far=True), SPEND)
    (tmp_path / "open").mkdir()
    toml = openai_config(fake.base_url, "[server]\npublic_metrics = true\n" + COMMON)
    async with deployment(toml, tmp_path / "open") as dep:
        assert (await call(dep, METRICS, far=True))[0] == 200  # no keys: a scraper on another host
        check(FAR, *await call(dep, PROVIDERS, far=True), PROVIDERS)


async def test_health_answers_anyone_and_says_only_that_the_process_is_up(fake: FakeOpenAI, tmp_path: Path) -> None:
    async with deployment(openai_config(fake.base_url, ADMIN_AND_READ + TEAM + COMMON), tmp_path) as dep:
        status, body = await call(dep, HEALTH, far=True)
    assert status == 200
    assert set(json.loads(body)) == {"status", "pid"}  # no base URL, no provider, no key, no version
    assert fake.base_url.encode() not in body


async def test_the_401_names_the_read_key_where_it_would_do(fake: FakeOpenAI, tmp_path: Path) -> None:
    async with deployment(openai_config(fake.base_url, ADMIN_AND_READ + COMMON), tmp_path) as dep:
        _, read = await call(dep, PROVIDERS)
        _, write = await call(dep, RELOAD)
    assert "server.read_key" in json.loads(read)["error"]["message"]
    assert "server.read_key" not in json.loads(write)["error"]["message"]


async def test_the_access_settings_follow_a_reload(fake: FakeOpenAI, tmp_path: Path) -> None:
    async with deployment(openai_config(fake.base_url, COMMON), tmp_path) as dep:
        assert (await call(dep, PROVIDERS))[0] == 200  # no keys: loopback is the administrator
        (tmp_path / "interlock.toml").write_text(openai_config(fake.base_url, ADMIN_AND_READ + COMMON))
        assert (await call(dep, RELOAD))[0] == 200
        check(A401, *await call(dep, PROVIDERS), PROVIDERS)
        assert (await call(dep, PROVIDERS, token=READER))[0] == 200
        check(RO, *await call(dep, RELOAD, token=READER), RELOAD)
        assert (await call(dep, RELOAD, token=ADMIN))[0] == 200


async def test_the_read_key_works_from_another_address_without_an_admin_key(fake: FakeOpenAI, tmp_path: Path) -> None:
    toml = openai_config(fake.base_url, f'[server]\nread_key = "{READER}"\n' + TEAM + COMMON)
    async with deployment(toml, tmp_path) as dep:
        for endpoint in (PROVIDERS, PLUGINS, SPEND, METRICS, LIST_KEYS, BUDGETS):
            check(200, *await call(dep, endpoint, token=READER, far=True), endpoint)
        for endpoint in (RELOAD, CREATE_KEY, RESET_BUDGET):
            check(RO, *await call(dep, endpoint, token=READER, far=True), endpoint)
        status, body = await call(dep, PROVIDERS, far=True)
        check(FAR, status, body, PROVIDERS)
        assert "server.read_key" in json.loads(body)["error"]["message"]  # says what would do
        check(200, *await call(dep, PROVIDERS), PROVIDERS)  # loopback is still the administrator


async def test_an_authorization_header_that_is_not_utf8_is_a_401_not_a_500(fake: FakeOpenAI, tmp_path: Path) -> None:
    """aiohttp keeps undecodable header bytes as surrogate escapes; comparing them must not raise (found by the fuzz)."""


    async with deployment(openai_config(fake.base_url, ADMIN_AND_READ + TEAM + COMMON), tmp_path) as dep:
        async with httpx2.AsyncClient() as http:
            for path in ("/-/keys", "/health/providers", "/spend"):
                resp = await http.get(dep.root + path, headers={"Authorization": b"Bearer adm-\xff\xfe"})
                assert resp.status_code == 401, (path, resp.text)
                assert_openai_error(resp.json(), code="invalid_admin_key")
