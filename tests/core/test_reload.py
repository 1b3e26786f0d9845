"""Live reconfiguration: SIGHUP and POST /-/reload swap routes without a restart; bad configs are refused."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai

from interlock.testing import FakeOpenAI
from tests.conftest import SECRET, ServeProcess


def write_config(path: Path, fake: FakeOpenAI, chain: str, extra: str = "") -> None:
    path.write_text(f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[providers.backup]
type = "openai"
base_url = "{fake.base_url}"
api_key = "{SECRET}"
[routes.smart]
chain = "{chain}"
[exporters.ledger]
enabled = false
{extra}
""")


def served_by(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    return raw.headers["x-interlock-provider"]


def post(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, method="POST", data=b"")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "the reload never took effect"
        time.sleep(0.05)


def test_sighup_reloads_routes_and_keeps_the_old_config_when_the_new_one_is_invalid(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        path = tmp_path / "interlock.toml"
        write_config(path, fake, "openai/gpt-4o > backup/gpt-4o-mini")
        sp = serve("--config", str(path))
        with openai.OpenAI(base_url=sp.base_url, api_key="x", max_retries=0) as client:
            assert served_by(client) == "openai"
            write_config(path, fake, "backup/gpt-4o-mini > openai/gpt-4o")
            sp.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: served_by(client) == "backup")
            # an invalid file is rejected with its errors; the running config stays in force
            path.write_text('[routes.smart]\nchain = "no-such-model-anywhere"\n')
            sp.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload rejected" in sp.output())
            assert "routes.smart.chain[0]" in sp.output()
            assert served_by(client) == "backup"
        assert SECRET not in sp.output()


def test_reload_endpoint_is_guarded_and_reports_problems(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        path = tmp_path / "interlock.toml"
        write_config(path, fake, "openai/gpt-4o", extra='[server]\nadmin_key = "admin-secret-123"')
        sp = serve("--config", str(path))
        root = sp.base_url.removesuffix("/v1")
        status, body = post(f"{root}/-/reload")
        assert status == 401 and body["error"]["code"] == "invalid_admin_key"  # type: ignore[index]
        write_config(path, fake, "backup/gpt-4o-mini", extra='[server]\nadmin_key = "admin-secret-123"')
        status, body = post(f"{root}/-/reload", "admin-secret-123")
        assert status == 200 and body["reloaded"] is True and body["routes"] == ["smart"]
        with openai.OpenAI(base_url=sp.base_url, api_key="x", max_retries=0) as client:
            assert served_by(client) == "backup"
        path.write_text('[routes.smart]\nchain = "a > "\n[server]\nadmin_key = "admin-secret-123"\n')
        status, body = post(f"{root}/-/reload", "admin-secret-123")
        assert status == 400
        assert {"path": "routes.smart.chain[1]", "message": "empty element (check the '>' separators)"} in body["error"]["problems"]  # type: ignore[index]
        with openai.OpenAI(base_url=sp.base_url, api_key="x", max_retries=0) as client:
            assert served_by(client) == "backup"
