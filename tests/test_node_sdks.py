"""The official Node SDKs (``openai``, ``@anthropic-ai/sdk``) drive the gateway.

``tests/node/`` pins both SDKs (``package.json`` and its ``package-lock.json``) and holds
one plain ES-module script per client protocol: ``chat.mjs`` (Chat Completions),
``responses.mjs`` (Responses) and ``messages.mjs`` (Anthropic Messages). Each reads the
gateway's root URL and a model from ``INTERLOCK_URL`` / ``INTERLOCK_MODEL``, asserts with
``node:assert`` and exits non-zero on the first failed step.

Here an in-process gateway runs on the fakes from :mod:`interlock.testing` and each script
runs against it in a subprocess (started with asyncio, so the gateway keeps serving while
the script waits on it), once per kind of upstream: the protocol passed through to an
upstream that speaks it, or translated to one that does not; the upstream's received
paths show which of the two happened. ``npm ci`` installs the
pinned SDKs into ``tests/node/node_modules`` once per session when they are missing (CI
runs it beforehand). Only a machine without ``node`` skips these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from interlock.testing import FakeAnthropic, FakeOpenAI
from interlock.testing.gateway import RunningGateway, running_gateway
from tests.core._api_helpers import raw_request

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")
OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-sonnet-4-6"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the Node SDK tests need Node 20 or later")


def _installed_versions_match() -> bool:
    """node_modules holds exactly the SDK versions package.json pins."""
    pins = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


@pytest.fixture(scope="session")
def node_sdks() -> Path:
    """The pinned SDKs in tests/node/node_modules (``npm ci`` when missing or not the pinned versions)."""
    if not _installed_versions_match():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not: install npm to run the Node SDK tests"
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True)
        assert done.returncode == 0, f"npm ci in {NODE_DIR} failed:\n{done.stdout}\n{done.stderr}"
        assert _installed_versions_match(), "npm ci did not install the versions package.json pins"
    return NODE_DIR


@dataclass
class Setup:
    gw: RunningGateway
    openai: FakeOpenAI
    anthropic: FakeAnthropic

    def upstream_paths(self, model: str) -> set[str]:
        """The paths the upstream serving ``model`` was sent (the protocol it was spoken to in)."""
        fake: FakeOpenAI | FakeAnthropic = self.openai if model == OPENAI_MODEL else self.anthropic
        return {r.path for r in fake.requests}


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    """A gateway with an OpenAI-wire and an Anthropic-wire upstream (the fakes), models auto-detected."""
    async with FakeOpenAI(models=[OPENAI_MODEL]) as openai_fake, FakeAnthropic(models=[ANTHROPIC_MODEL]) as claude:
        toml = f"""
[providers.openai]
base_url = "{openai_fake.base_url}"
api_key = "sk-upstream-openai"

[providers.anthropic]
base_url = "{claude.base_url}"
api_key = "sk-upstream-anthropic"
"""
        async with running_gateway(toml) as gw:
            yield Setup(gw, openai_fake, claude)


async def run_script(script: str, gw: RunningGateway, model: str) -> None:
    """Run ``tests/node/<script>`` against ``gw``; fail with its output unless it exits 0."""
    assert NODE is not None
    env = {**os.environ, "INTERLOCK_URL": gw.root, "INTERLOCK_MODEL": model, "INTERLOCK_KEY": "client-key"}
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        env.pop(var, None)  # the scripts configure their clients themselves
    proc = await asyncio.create_subprocess_exec(
        NODE, str(NODE_DIR / script), cwd=NODE_DIR, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (
        f"node {script} (model {model}) exited with {proc.returncode}\n"
        f"--- stdout ---\n{out.decode(errors='replace')}\n--- stderr ---\n{err.decode(errors='replace')}"
    )


async def require_door(gw: RunningGateway, path: str) -> None:
    """Skip when this branch has no route for ``path`` (a door still being built elsewhere)."""
    resp = await raw_request("POST", f"{gw.root}{path}", json_body={})
    if resp.status == 404 and resp.json().get("error", {}).get("code") == "unknown_url":
        pytest.skip(f"door not on this branch yet: POST {path}")


@pytest.mark.parametrize(
    ("model", "upstream_path"),
    [(OPENAI_MODEL, "/v1/chat/completions"), (ANTHROPIC_MODEL, "/v1/messages")],
    ids=["openai-upstream", "anthropic-translated"],
)
async def test_chat_completions_with_the_node_openai_sdk(
    node_sdks: Path, setup: Setup, model: str, upstream_path: str
) -> None:
    await run_script("chat.mjs", setup.gw, model)
    assert setup.upstream_paths(model) == {upstream_path}


@pytest.mark.parametrize(
    ("model", "upstream_path"),
    [
        pytest.param(OPENAI_MODEL, "/v1/responses", id="openai-passed-through"),
        pytest.param(ANTHROPIC_MODEL, "/v1/messages", id="anthropic-translated"),
    ],
)
async def test_responses_with_the_node_openai_sdk(node_sdks: Path, setup: Setup, model: str, upstream_path: str) -> None:
    await require_door(setup.gw, "/v1/responses")
    await run_script("responses.mjs", setup.gw, model)
    assert setup.upstream_paths(model) == {upstream_path}


@pytest.mark.parametrize(
    ("model", "upstream_paths"),
    # count_tokens goes to Anthropic's own endpoint; translated, the gateway estimates it
    [(ANTHROPIC_MODEL, {"/v1/messages", "/v1/messages/count_tokens"}), (OPENAI_MODEL, {"/v1/chat/completions"})],
    ids=["anthropic-passed-through", "openai-translated"],
)
async def test_messages_with_the_node_anthropic_sdk(
    node_sdks: Path, setup: Setup, model: str, upstream_paths: set[str]
) -> None:
    await require_door(setup.gw, "/v1/messages")
    await run_script("messages.mjs", setup.gw, model)
    assert setup.upstream_paths(model) == upstream_paths
