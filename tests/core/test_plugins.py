"""The plugin system, end to end: real installed packages, the real CLI, and every hook.

Two throwaway packages under ``tests/fixtures`` are installed with pip into
temporary directories once per session:

* ``interlock-echo`` registers an offline ``echo`` provider and claims bare
  ``echo-*`` model names through ``resolve_model``;
* ``interlock-broken`` has an entry point whose module fails to import.

The console script runs in subprocesses with ``PYTHONPATH`` pointing at those
directories, so ``importlib.metadata`` discovers the entry points exactly as it
would for a package installed into a deployment. In-process tests cover the
rest of the contract with plugins passed through ``extra_plugins``, and a
meta-test checks that every hookspec is exercised here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pluggy
import pytest

import interlock
from interlock import hookimpl
from interlock.core import config as config_mod
from interlock.core.app import create_app
from interlock.core.config import ConfigError
from interlock.core.errors import GatewayError
from interlock.core.exporter import Exporter
from interlock.core.gateway import Gateway
from interlock.core.plugins import (
    BUILTIN_PLUGINS,
    PluginError,
    collect,
    first_result,
    make_plugin_manager,
    notify,
    plugin_info,
)
from interlock.core.provider import Provider
from interlock.core.strategy import Strategy
from interlock.core.types import (
    Action,
    Classification,
    Decision,
    FailureClass,
    RequestContext,
    Route,
    Target,
    UpstreamError,
    Usage,
)
from interlock.testing import FakeOpenAI
from interlock.testing.fake_openai import Fault
from tests.conftest import GatewayFactory, ServeProcess, openai_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
INTERLOCK = Path(sys.executable).with_name("interlock")

BUILTIN_PROVIDERS = {
    "openai", "azure", "mistral", "deepseek", "xai", "perplexity",
    "openrouter", "gpustack", "groq", "together", "fireworks",
}
BUILTIN_STRATEGIES = {"ordered", "weighted", "round-robin"}


# --------------------------------------------------------------------------- #
# installing the throwaway packages
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Installed:
    echo: Path  # a directory holding interlock_echo and its .dist-info
    broken: Path  # a directory holding interlock_broken and its .dist-info


def _can_build_without_isolation() -> bool:
    """setuptools builds wheels by itself from 70.1 on; older versions need the ``wheel`` package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2] if p.isdigit())
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _pip_install(packages: Sequence[str], root: Path) -> dict[str, Path]:
    """``pip install --no-deps --target`` each fixture package into its own directory (in parallel)."""
    build_flags = ["--no-build-isolation"] if _can_build_without_isolation() else []  # fast and offline when possible
    procs: dict[str, tuple[Path, subprocess.Popen[str]]] = {}
    for package in packages:
        # build from a copy: setuptools writes build/ and *.egg-info next to the sources
        src = root / "src" / package
        shutil.copytree(FIXTURES / package, src)
        target = root / "site" / package
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
               "--quiet", *build_flags, "--target", str(target), str(src)]
        procs[package] = target, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    failures = []
    try:
        for package, (target, proc) in procs.items():
            output, _ = proc.communicate(timeout=600)
            if proc.returncode != 0 or not list(target.glob("*.dist-info")):
                failures.append(f"pip install of {package} failed ({proc.returncode}):\n{output}")
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    if failures:
        raise RuntimeError("\n".join(failures))
    return {package: target for package, (target, _) in procs.items()}


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    dirs = _pip_install(["interlock-echo", "interlock-broken"], tmp_path_factory.mktemp("plugin-packages"))
    return Installed(echo=dirs["interlock-echo"], broken=dirs["interlock-broken"])


def _env(pythonpath: Sequence[Path], **extra: str) -> dict[str, str]:
    """The test's environment minus keys and interlock settings, with the given package dirs."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("INTERLOCK_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra)
    return env


def run_cli(*args: str, pythonpath: Sequence[Path], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INTERLOCK), *args], capture_output=True, text=True, env=_env(pythonpath, **extra_env), cwd=cwd,
        timeout=120, check=False,
    )


def by_name(info: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in info}


ECHO_CONFIG = """
[providers.echo]
type = "echo"

[routes.talk]
chain = "echo/echo-small"

[routes.detected]
chain = "echo-fast"
"""


def ctx_for(text: str = "hi", **kwargs: Any) -> RequestContext:
    body = {"model": "x", "messages": [{"role": "user", "content": text}]}
    return RequestContext(request_id="test", endpoint="chat", body=body, **kwargs)


def gateway_for(toml: str = "", **kwargs: Any) -> Gateway:
    import tomllib

    cfg = config_mod.parse(tomllib.loads(toml), environ={})
    kwargs.setdefault("load_entrypoints", False)
    return Gateway(cfg, environ={}, **kwargs)


# --------------------------------------------------------------------------- #
# the installed package, through the real console script
# --------------------------------------------------------------------------- #


def test_cli_plugins_json_lists_the_installed_plugin(installed: Installed, tmp_path: Path) -> None:
    proc = run_cli("plugins", "--json", pythonpath=[installed.echo], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    plugins = by_name(info)

    echo = plugins["echo"]
    assert echo["distribution"] == "interlock-echo"
    assert echo["version"] == "0.3.1"
    assert echo["builtin"] is False
    assert echo["providers"] == ["echo"]
    assert echo["strategies"] == [] and echo["exporters"] == []
    assert echo["hooks"] == ["register_providers", "resolve_model"]

    builtin = collect(make_plugin_manager(load_entrypoints=False, environ={}))
    providers = {p for entry in info for p in entry["providers"]}
    assert providers == set(builtin.providers) | {"echo"}
    assert BUILTIN_PROVIDERS | {"echo"} <= providers
    strategies = {s for entry in info for s in entry["strategies"]}
    assert strategies == set(builtin.strategies) and BUILTIN_STRATEGIES <= strategies
    for name in BUILTIN_PLUGINS:
        assert plugins[name]["builtin"] is True
        assert plugins[name]["distribution"] == "interlock"
        assert plugins[name]["version"] == interlock.__version__
    assert set(plugins) == {*BUILTIN_PLUGINS, "echo"}


def test_cli_plugins_text_lists_the_installed_plugin(installed: Installed, tmp_path: Path) -> None:
    proc = run_cli("plugins", pythonpath=[installed.echo], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "echo 0.3.1 (interlock-echo): providers echo" in lines
    assert f"interlock.plugins.providers.groq {interlock.__version__} (built-in): providers groq" in lines
    v = interlock.__version__
    assert f"interlock.plugins.strategies.round_robin {v} (built-in): strategies round-robin" in lines
    assert f"interlock.plugins.classifier {interlock.__version__} (built-in): hooks classify_failure" in lines
    assert len(lines) == len(BUILTIN_PLUGINS) + 1


def test_cli_without_the_package_has_no_echo(installed: Installed, tmp_path: Path) -> None:
    proc = run_cli("plugins", "--json", pythonpath=[], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "echo" not in by_name(json.loads(proc.stdout))
    # and a config that needs the type says which types exist
    (tmp_path / "echo.toml").write_text(ECHO_CONFIG)
    proc = run_cli("check", "--config", "echo.toml", pythonpath=[], cwd=tmp_path)
    assert proc.returncode == 2
    assert "providers.echo.type: unknown provider type 'echo'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_explain_uses_the_plugins_resolve_model(installed: Installed, tmp_path: Path) -> None:
    (tmp_path / "echo.toml").write_text(ECHO_CONFIG)
    proc = run_cli("explain", "echo-1", "--config", "echo.toml", pythonpath=[installed.echo], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "echo-1: no route; auto-detected from the model name -> provider echo (echo)" in proc.stdout
    proc = run_cli("explain", "detected", "--config", "echo.toml", pythonpath=[installed.echo], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1. echo/echo-fast" in proc.stdout


def test_serve_routes_through_the_installed_plugin(
    installed: Installed, serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    (tmp_path / "echo.toml").write_text(ECHO_CONFIG)
    sp = serve("--config", "echo.toml", env={"PYTHONPATH": str(installed.echo)})
    assert "providers echo (echo)" in sp.output()
    messages: Any = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]

    with openai.OpenAI(base_url=sp.base_url, api_key="client-key", max_retries=0) as client:
        # explicit instance/model
        raw = client.chat.completions.with_raw_response.create(model="echo/anything", messages=messages)
        completion = raw.parse()
        assert completion.object == "chat.completion"
        assert completion.model == "anything"
        assert completion.choices[0].message.content == "echo: hello there"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == 3
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + 3
        assert raw.headers["x-interlock-provider"] == "echo"
        assert raw.headers["x-interlock-model"] == "anything"

        # a bare name only the plugin's resolve_model hook knows
        raw = client.chat.completions.with_raw_response.create(model="echo-1", messages=messages)
        assert raw.parse().choices[0].message.content == "echo: hello there"
        assert raw.headers["x-interlock-provider"] == "echo"
        assert raw.headers["x-interlock-model"] == "echo-1"

        # a configured route, and a route whose chain element was resolved by the hook at startup
        for route, served in (("talk", "echo-small"), ("detected", "echo-fast")):
            raw = client.chat.completions.with_raw_response.create(model=route, messages=messages)
            assert raw.parse().model == served
            assert raw.headers["x-interlock-route"] == route

        # a bare name nobody claims is still a clean 404
        with pytest.raises(openai.NotFoundError) as excinfo:
            client.chat.completions.create(model="ohce-1", messages=messages)
        assert "unknown model 'ohce-1'" in str(excinfo.value)

        # streaming, with the usage chunk only when asked for
        for model in ("echo/anything", "echo-1"):
            with client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            ) as stream:
                chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "echo: hello there"
            assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
            assert chunks[-1].choices == []
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
            assert all(c.usage is None for c in chunks[:-1])

            with client.chat.completions.create(model=model, messages=messages, stream=True) as stream:
                chunks = list(stream)
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello there"
            assert all(c.choices for c in chunks), "the usage chunk leaked to a client that did not ask for it"
            assert all(c.usage is None for c in chunks)

    # GET /-/plugins serves what `interlock plugins --json` prints for the same config
    with urllib.request.urlopen(sp.base_url.removesuffix("/v1") + "/-/plugins", timeout=30) as resp:
        served = json.loads(resp.read())["plugins"]
    proc = run_cli("plugins", "--json", "--config", "echo.toml", pythonpath=[installed.echo], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert served == json.loads(proc.stdout)
    assert by_name(served)["echo"]["distribution"] == "interlock-echo"


# --------------------------------------------------------------------------- #
# entry points in process: selection, disabling, broken packages
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("load", "expect_echo"),
    [
        (None, True),
        ("", False),
        ("interlock-echo", True),
        ("interlock-other", False),
        (" interlock-other , interlock-echo ", True),
    ],
)
def test_interlock_load_plugins_selects_distributions(
    installed: Installed, monkeypatch: pytest.MonkeyPatch, load: str | None, expect_echo: bool
) -> None:
    monkeypatch.syspath_prepend(str(installed.echo))
    environ = {} if load is None else {"INTERLOCK_LOAD_PLUGINS": load}
    pm = make_plugin_manager(environ=environ)
    assert pm.has_plugin("echo") is expect_echo
    registry = collect(pm)
    assert ("echo" in registry.providers) is expect_echo
    assert BUILTIN_PROVIDERS <= set(registry.providers)  # the variable never affects built-ins


def test_load_entrypoints_false_ignores_installed_packages(
    installed: Installed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(installed.echo))
    assert not make_plugin_manager(load_entrypoints=False, environ={}).has_plugin("echo")


def test_disabled_blocks_an_entry_point_by_name(installed: Installed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(installed.echo))
    monkeypatch.syspath_prepend(str(installed.broken))
    pm = make_plugin_manager(disabled=["broken"], environ={})  # never imported, so no failure
    assert pm.has_plugin("echo") and not pm.has_plugin("broken")


def test_entry_point_that_fails_to_import_names_itself(
    installed: Installed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(installed.broken))
    with pytest.raises(PluginError) as excinfo:
        make_plugin_manager(environ={})
    message = str(excinfo.value)
    assert "entry point 'broken' = 'interlock_broken'" in message
    assert "interlock-broken 0.0.7" in message
    assert "failed to import: ModuleNotFoundError" in message
    assert "interlock_broken_missing_dependency" in message
    # pinning the distributions to load keeps a broken extra package out
    pm = make_plugin_manager(environ={"INTERLOCK_LOAD_PLUGINS": "interlock-echo"})
    assert not pm.has_plugin("broken")


def test_cli_reports_a_broken_plugin_without_a_traceback(installed: Installed, tmp_path: Path) -> None:
    for args in (["plugins"], ["plugins", "--json"], ["check"]):
        proc = run_cli(*args, pythonpath=[installed.echo, installed.broken], cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stdout == ""
        assert proc.stderr.startswith(
            "interlock: plugin entry point 'broken' = 'interlock_broken' of interlock-broken 0.0.7"
        )
        assert "failed to import: ModuleNotFoundError" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1

    proc = run_cli(
        "plugins", "--json", pythonpath=[installed.echo, installed.broken], cwd=tmp_path,
        INTERLOCK_LOAD_PLUGINS="interlock-echo",
    )
    assert proc.returncode == 0, proc.stderr
    assert set(by_name(json.loads(proc.stdout))) == {*BUILTIN_PLUGINS, "echo"}


async def test_installed_provider_in_process(
    installed: Installed, monkeypatch: pytest.MonkeyPatch, make_gateway: GatewayFactory
) -> None:
    monkeypatch.syspath_prepend(str(installed.echo))
    gw = await make_gateway(ECHO_CONFIG, load_entrypoints=True, environ={"INTERLOCK_LOAD_PLUGINS": "interlock-echo"})
    assert gw.gateway.registry.owner[("providers", "echo")] == "echo"
    completion = await gw.client.chat.completions.create(model="echo-7", messages=[{"role": "user", "content": "ping"}])
    assert completion.choices[0].message.content == "echo: ping"
    stream = await gw.client.chat.completions.create(
        model="talk", messages=[{"role": "user", "content": "pong"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: pong"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


# --------------------------------------------------------------------------- #
# invalid plugins are startup errors that name the plugin
# --------------------------------------------------------------------------- #


class MisspelledHook:
    @hookimpl
    def resolve_modle(self, model: str) -> str | None:  # sic
        return None


class UnknownArgument:
    @hookimpl
    def resolve_model(self, model: str, tenant: str) -> str | None:
        return None


def test_misspelled_hook_is_a_plugin_error() -> None:
    with pytest.raises(PluginError) as excinfo:
        make_plugin_manager(load_entrypoints=False, extra_plugins=[("typo-plugin", MisspelledHook())], environ={})
    message = str(excinfo.value)
    assert "'typo-plugin'" in message
    assert "resolve_modle" in message
    assert "unknown hook" in message


def test_misspelled_hook_fails_the_gateway_too() -> None:
    with pytest.raises(PluginError, match="typo-plugin"):
        gateway_for(extra_plugins=[("typo-plugin", MisspelledHook())])


def test_hook_argument_not_in_the_spec_is_a_plugin_error() -> None:
    with pytest.raises(PluginError) as excinfo:
        make_plugin_manager(load_entrypoints=False, extra_plugins=[("tenant-plugin", UnknownArgument())], environ={})
    message = str(excinfo.value)
    assert "'tenant-plugin'" in message
    assert "resolve_model" in message
    assert "tenant" in message


def test_a_subset_of_hook_arguments_is_fine() -> None:
    class Subset:
        @hookimpl
        def resolve_model(self, model: str) -> str | None:
            return "openai" if model == "house-model" else None

    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("subset", Subset())], environ={})
    assert pm.hook.resolve_model(model="house-model", provider_types=["openai"]) == "openai"


def test_duplicate_plugin_name_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match=r"'interlock\.plugins\.detection' \(test\) is already registered"):
        make_plugin_manager(
            load_entrypoints=False, extra_plugins=[("interlock.plugins.detection", MisspelledHook())], environ={}
        )


class Dup(Provider):
    type_name = "dup"
    requires_key = False


class DupRegistrar:
    def __init__(self, cls: type[Provider]) -> None:
        self.cls = cls

    @hookimpl
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        register(self.cls)


def test_two_plugins_registering_one_provider_type() -> None:
    pm = make_plugin_manager(
        load_entrypoints=False, extra_plugins=[("first", DupRegistrar(Dup)), ("second", DupRegistrar(Dup))], environ={}
    )
    with pytest.raises(PluginError) as excinfo:
        collect(pm)
    message = str(excinfo.value)
    assert "provider 'dup' is registered by both" in message
    assert "'first'" in message and "'second'" in message


def test_a_plugin_cannot_silently_replace_a_builtin_provider() -> None:
    class FakeOpenAIType(Provider):
        type_name = "openai"

    with pytest.raises(PluginError) as excinfo:
        gateway_for(extra_plugins=[("impostor", DupRegistrar(FakeOpenAIType))])
    assert "'impostor'" in str(excinfo.value)
    assert "'interlock.plugins.providers.openai'" in str(excinfo.value)


def test_registering_a_non_provider_names_the_plugin() -> None:
    class NotAProvider:
        type_name = "nope"

    with pytest.raises(PluginError, match="plugin 'bogus' registered .*not a Provider subclass"):
        gateway_for(extra_plugins=[("bogus", DupRegistrar(NotAProvider))])  # type: ignore[arg-type]


def test_a_plugin_raising_at_registration_names_the_plugin_and_hook() -> None:
    class Exploding:
        @hookimpl
        def register_strategies(self, register: Callable[..., None]) -> None:
            raise RuntimeError("no config for me")

    with pytest.raises(PluginError) as excinfo:
        gateway_for(extra_plugins=[("exploding", Exploding())])
    assert str(excinfo.value) == "plugin 'exploding' failed in register_strategies: RuntimeError: no config for me"


# --------------------------------------------------------------------------- #
# [plugins] disabled
# --------------------------------------------------------------------------- #


def test_config_disables_a_builtin_plugin() -> None:
    gateway = gateway_for('[plugins]\ndisabled = ["interlock.plugins.providers.groq"]\n')
    assert "groq" not in gateway.registry.providers
    assert BUILTIN_PROVIDERS - {"groq"} <= set(gateway.registry.providers)
    names = {p["name"] for p in plugin_info(gateway.pm, gateway.registry)}
    assert "interlock.plugins.providers.groq" not in names
    assert names == set(BUILTIN_PLUGINS) - {"interlock.plugins.providers.groq"}

    with pytest.raises(ConfigError, match="providers.fast.type: unknown provider type 'groq'"):
        gateway_for(
            '[plugins]\ndisabled = ["interlock.plugins.providers.groq"]\n'
            '[providers.fast]\ntype = "groq"\napi_key = "k"\n'
        )


def test_disabling_the_builtin_detection_leaves_bare_names_unresolved() -> None:
    toml = '[providers.openai]\napi_key = "k"\n'
    assert gateway_for(toml).resolver.resolve("gpt-4o").targets == [Target("openai", "gpt-4o")]
    gateway = gateway_for(toml + '[plugins]\ndisabled = ["interlock.plugins.detection"]\n')
    with pytest.raises(GatewayError, match="unknown model 'gpt-4o'") as excinfo:
        gateway.resolver.resolve("gpt-4o")
    assert excinfo.value.status == 404


# --------------------------------------------------------------------------- #
# per-request hooks: third-party implementations answer before the built-ins
# --------------------------------------------------------------------------- #


class HouseModels:
    """Claims one bare name, and overrides the built-in pattern table for another."""

    @hookimpl
    def resolve_model(self, model: str, provider_types: Sequence[str]) -> str | None:
        assert "openai" in provider_types and "mistral" in provider_types
        return {"house-model": "openai", "gpt-4o": "mistral"}.get(model)


def test_resolve_model_hook_claims_and_overrides_bare_names() -> None:
    toml = '[providers.openai]\napi_key = "k"\n[providers.mistral]\napi_key = "k"\n'
    gateway = gateway_for(toml, extra_plugins=[("house", HouseModels())])
    assert gateway.resolver.resolve("house-model").targets == [Target("openai", "house-model")]
    assert gateway.resolver.resolve("gpt-4o").targets == [Target("mistral", "gpt-4o")]  # plugin first
    assert gateway.resolver.resolve("gpt-4o-mini").targets == [Target("openai", "gpt-4o-mini")]  # built-in last
    assert gateway.resolver.resolve("openai/gpt-4o").targets == [Target("openai", "gpt-4o")]  # explicit wins


class FailFast500:
    """Treats an upstream 500 as the request's fault: no fallback."""

    def __init__(self) -> None:
        self.seen: list[tuple[int | None, str, str]] = []

    @hookimpl
    def classify_failure(self, error: UpstreamError, target: Target, provider_type: str) -> Classification | None:
        self.seen.append((error.status, target.key, provider_type))
        if error.status == 500:
            return Classification(FailureClass.SERVER_ERROR, Action.FAIL)
        return None


async def test_classify_failure_hook_overrides_the_builtin(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    # the built-in classifier falls back on a 500 ...
    plain = await make_gateway(openai_config(fake.base_url))
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    raw = await plain.client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-interlock-provider"] == "backup"
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o", "gpt-4o-mini"]

    # ... a third-party classify_failure answers first and fails fast
    fake.requests.clear()
    plugin = FailFast500()
    gw = await make_gateway(openai_config(fake.base_url), extra_plugins=[("failfast", plugin)])
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    with pytest.raises(openai.APIStatusError) as excinfo:
        await gw.client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hello"}])
    assert excinfo.value.status_code == 502
    assert excinfo.value.response.headers["x-interlock-attempts"] == "1"
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o"], "the second target must never be called"
    assert plugin.seen == [(500, "openai/gpt-4o", "openai")]

    # returning None defers to the built-in: a 429 still falls back
    fake.requests.clear()
    fake.add_fault(Fault(status=429, model="gpt-4o"))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-interlock-provider"] == "backup"
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o", "gpt-4o-mini"]


class Reverse(Strategy):
    name = "reverse"

    def order(self, targets: Sequence[Target], request: RequestContext) -> list[Target]:
        return list(reversed(targets))


class ReverseOnHeader:
    """Registers a strategy, and picks it for requests that carry ``x-prefer: backup``."""

    @hookimpl
    def register_strategies(self, register: Callable[..., None]) -> None:
        register("reverse", Reverse)

    @hookimpl
    def select_strategy(self, route: Route, request: RequestContext) -> str | None:
        return "reverse" if request.headers.get("x-prefer") == "backup" else None


async def test_select_strategy_hook_changes_the_order(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    decisions: list[Decision] = []
    gw = await make_gateway(
        openai_config(fake.base_url), extra_plugins=[("reverse", ReverseOnHeader()), ("recorder", Recorder(decisions))]
    )
    assert gw.gateway.registry.owner[("strategies", "reverse")] == "reverse"
    messages: Any = [{"role": "user", "content": "hello"}]

    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=messages)
    assert raw.headers["x-interlock-provider"] == "openai"
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="smart", messages=messages, extra_headers={"x-prefer": "backup"}
    )
    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert [d.strategy for d in decisions] == ["ordered", "reverse"]
    assert decisions[1].candidates == ["backup/gpt-4o-mini", "openai/gpt-4o"]


class CheapRule:
    """Content-based routing: a ``#cheap`` marker in the last message sends the request to ``cheap``."""

    def __init__(self) -> None:
        self.seen_routes: list[tuple[str, list[str]]] = []

    @hookimpl
    def select_route(self, request: RequestContext, route: Route, routes: Mapping[str, Route]) -> str | None:
        self.seen_routes.append((route.name, sorted(routes)))
        if "#cheap" in str(request.body["messages"][-1].get("content")):
            return "cheap"
        return None


async def test_select_route_hook_reroutes_by_content(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    rule = CheapRule()
    gw = await make_gateway(
        openai_config(fake.base_url, '[routes.cheap]\nchain = "backup/gpt-4o-mini"\n'), extra_plugins=[("cheap", rule)]
    )
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "think hard"}]
    )
    assert raw.headers["x-interlock-route"] == "smart"
    assert raw.headers["x-interlock-provider"] == "openai"
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "quick one #cheap"}]
    )
    assert raw.headers["x-interlock-route"] == "cheap"
    assert raw.headers["x-interlock-provider"] == "backup"
    assert raw.headers["x-interlock-model"] == "gpt-4o-mini"
    assert rule.seen_routes == [("smart", ["cheap", "smart"])] * 2


async def test_select_route_hook_naming_a_missing_route_is_a_server_error() -> None:
    class Nowhere:
        @hookimpl
        def select_route(self) -> str:
            return "nowhere"

    gateway = gateway_for('[providers.openai]\napi_key = "k"\n[routes.smart]\nchain = "openai/gpt-4o"\n',
                          extra_plugins=[("nowhere", Nowhere())])
    with pytest.raises(GatewayError, match="route 'nowhere', which does not exist") as excinfo:
        await gateway.router.plan(ctx_for(), "smart")
    assert excinfo.value.status == 500


class Recorder:
    def __init__(self, into: list[Decision]) -> None:
        self.decisions = into

    @hookimpl
    def record_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)


async def test_record_decision_hook_sees_every_attempt(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    decisions: list[Decision] = []
    gw = await make_gateway(openai_config(fake.base_url), extra_plugins=[("recorder", Recorder(decisions))])
    fake.add_fault(Fault(status=503, model="gpt-4o"))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "hello"}], extra_headers={"x-request-id": "req-plugins-1"}
    )
    assert raw.headers["x-interlock-fallback"] == "true"

    assert len(decisions) == 1
    decision = decisions[0]
    assert decision.request_id == "req-plugins-1"
    assert decision.requested_model == "smart" and decision.route == "smart" and decision.strategy == "ordered"
    assert decision.status == 200
    assert decision.candidates == ["openai/gpt-4o", "backup/gpt-4o-mini"]
    assert [(a.n, a.provider, a.model, a.outcome, a.action, a.status) for a in decision.attempts] == [
        (1, "openai", "gpt-4o", "overloaded", "fallback", 503),
        (2, "backup", "gpt-4o-mini", "ok", None, None),
    ]
    assert decision.fallback_used
    assert decision.provider == "backup" and decision.model == "gpt-4o-mini"
    assert decision.usage is not None and decision.usage.completion_tokens > 0

    # failures are recorded too
    fake.add_fault(Fault(status=400, model="gpt-4o"))
    with pytest.raises(openai.BadRequestError):
        await gw.client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hello"}])
    assert decisions[1].status == 400
    assert [a.outcome for a in decisions[1].attempts] == ["bad_request"]


async def test_a_failing_record_decision_plugin_does_not_break_requests(
    fake: FakeOpenAI, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @hookimpl
        def record_decision(self, decision: Decision) -> None:
            raise RuntimeError("observer bug")

    decisions: list[Decision] = []
    gw = await make_gateway(
        openai_config(fake.base_url), extra_plugins=[("broken", Broken()), ("recorder", Recorder(decisions))]
    )
    completion = await gw.client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Fake reply to: hi"
    assert "a record_decision plugin failed" in caplog.text


class MemoryExporter(Exporter):
    name = "memory"

    def __init__(self) -> None:
        self.events: list[str] = []
        self.decisions: list[Decision] = []

    async def start(self) -> None:
        self.events.append("start")

    def record(self, decision: Decision) -> None:
        self.decisions.append(decision)

    async def close(self) -> None:
        self.events.append("close")


class MemoryExporterPlugin:
    def __init__(self) -> None:
        self.settings: Mapping[str, Any] | None = None
        self.exporter = MemoryExporter()

    @hookimpl
    def register_exporters(self, register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
        self.settings = settings
        if settings.get("exporters", {}).get("memory", {}).get("enabled"):
            register(self.exporter)


async def test_register_exporters_hook_lifecycle(fake: FakeOpenAI) -> None:
    # the built-in ledger stays off: this test is about a third-party exporter and writes no database
    toml = openai_config(fake.base_url, "[exporters.memory]\nenabled = true\n[exporters.ledger]\nenabled = false\n")
    plugin = MemoryExporterPlugin()
    gateway = gateway_for(toml, extra_plugins=[("memory", plugin)])
    assert plugin.settings is not None
    assert "providers" not in plugin.settings and "sk-test" not in repr(plugin.settings)  # no credentials
    assert gateway.registry.owner[("exporters", "memory")] == "memory"
    assert plugin.exporter in gateway.exporters
    assert "ledger" not in {getattr(e, "name", "") for e in gateway.exporters}

    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(create_app(gateway))) as client:
        assert plugin.exporter.events == ["start"]
        resp = await client.post(
            "/v1/chat/completions", json={"model": "smart", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert resp.status == 200
        await resp.read()
        assert [d.requested_model for d in plugin.exporter.decisions] == ["smart"]
    assert plugin.exporter.events == ["start", "close"]

    # the plugin decides from settings: without its table it registers nothing
    plugin = MemoryExporterPlugin()
    gateway = gateway_for(openai_config(fake.base_url), extra_plugins=[("memory", plugin)])
    assert plugin.exporter not in gateway.exporters


class Prices:
    @hookimpl
    def compute_cost(self, usage: Usage, provider: str, provider_type: str, model: str) -> Decimal | None:
        if provider_type == "openai" and model == "gpt-4o":
            per_million = Decimal(usage.prompt_tokens) * Decimal("2.50") + Decimal(usage.completion_tokens) * 10
            return per_million / 1_000_000
        return None


class FlatFee:
    @hookimpl(trylast=True)
    def compute_cost(self, provider: str) -> Decimal | None:
        return Decimal("0.01") if provider == "openai" else None


def test_compute_cost_hook_answers_first_result() -> None:
    # nothing built in prices a model nobody has heard of
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    usage = Usage(prompt_tokens=1000, completion_tokens=100)
    unknown = {"provider_type": "house", "model": "house-model", "prices": None}
    assert pm.hook.compute_cost(usage=usage, provider="house", **unknown) is None

    plugins = [("flat", FlatFee()), ("prices", Prices())]
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=plugins, environ={})
    cost = pm.hook.compute_cost(usage=usage, provider="openai", provider_type="openai", model="gpt-4o", prices=None)
    assert cost == Decimal("0.0035") and isinstance(cost, Decimal)
    # the specific table has no price for this model: the next plugin is asked
    assert pm.hook.compute_cost(usage=usage, provider="openai", **unknown) == Decimal("0.01")
    assert pm.hook.compute_cost(usage=usage, provider="house", **unknown) is None


class Wrapped:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def select_strategy(self, route: Route) -> Any:
        self.seen.append(route.name)
        answer = yield
        return answer or "round_robin"


class Picky:
    @hookimpl
    def select_strategy(self, request: RequestContext) -> str | None:
        return "weighted" if request.headers.get("x-fast") else None


def test_hot_path_hook_calls_answer_as_pluggy_does(capsys: pytest.CaptureFixture[str]) -> None:
    """first_result / notify skip pluggy's machinery but never change an answer or miss a plugin."""
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    route = Route("r", [], "ordered")
    ctx = RequestContext(request_id="r1", endpoint="chat", body={}, headers={"x-fast": "1"})
    # no implementation: None, like pluggy's firstresult
    assert first_result(pm, "select_strategy", route=route, request=ctx) is None
    assert pm.hook.select_strategy(route=route, request=ctx) is None
    # one plain implementation, registered after the manager was built: called with the arguments it names
    pm.register(Picky(), "picky")
    assert first_result(pm, "select_strategy", route=route, request=ctx) == "weighted"
    ctx.headers = {}
    assert first_result(pm, "select_strategy", route=route, request=ctx) is None
    # a wrapper goes through pluggy and sees the call
    wrapped = Wrapped()
    pm.register(wrapped, "wrapped")
    assert first_result(pm, "select_strategy", route=route, request=ctx) == "round_robin"
    assert wrapped.seen == ["r"]
    # the built-in price plugin alone: the same Decimal pluggy gives
    usage = Usage(prompt_tokens=1000, completion_tokens=100)
    args = {"usage": usage, "provider": "openai", "provider_type": "openai", "model": "gpt-4o", "prices": None}
    direct = first_result(pm, "compute_cost", **args)
    assert direct is not None and direct == pm.hook.compute_cost(**args)

    decision = Decision(request_id="r1", ts=0.0, endpoint="chat", requested_model="m", route=None, strategy=None,
                        candidates=[], attempts=[], stream=False)
    notify(pm, "record_decision", decision=decision)  # nobody listens: nothing happens, nothing fails
    seen: list[Decision] = []
    pm.register(Recorder(seen), "recorder")
    notify(pm, "record_decision", decision=decision)
    assert seen == [decision]

    # INTERLOCK_TRACE_PLUGINS: every call goes through pluggy and is printed, implemented or not
    traced = make_plugin_manager(load_entrypoints=False, environ={"INTERLOCK_TRACE_PLUGINS": "1"})
    capsys.readouterr()
    assert first_result(traced, "select_strategy", route=route, request=ctx) is None
    notify(traced, "record_decision", decision=decision)
    err = capsys.readouterr().err
    assert "[interlock hook] select_strategy returned None" in err
    assert "[interlock hook] record_decision -> []" in err


# --------------------------------------------------------------------------- #
# introspection
# --------------------------------------------------------------------------- #


async def test_plugins_endpoint_matches_plugin_info(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(openai_config(fake.base_url), extra_plugins=[("reverse", ReverseOnHeader())])
    from aiohttp import ClientSession

    async with ClientSession() as session, session.get(gw.root + "/-/plugins") as resp:
        assert resp.status == 200
        body = await resp.json()
    expected = json.loads(json.dumps(plugin_info(gw.gateway.pm, gw.gateway.registry)))
    assert body == {"plugins": expected}
    reverse = by_name(body["plugins"])["reverse"]
    assert reverse["strategies"] == ["reverse"]
    assert reverse["hooks"] == ["register_strategies", "select_strategy"]
    assert reverse["builtin"] is False and reverse["distribution"] is None


def test_trace_plugins_prints_hook_calls(capsys: pytest.CaptureFixture[str]) -> None:
    pm = make_plugin_manager(
        load_entrypoints=False, extra_plugins=[("house", HouseModels())], environ={"INTERLOCK_TRACE_PLUGINS": "1"}
    )
    capsys.readouterr()
    assert pm.hook.resolve_model(model="house-model", provider_types=["openai", "mistral"]) == "openai"
    err = capsys.readouterr().err
    assert "[interlock hook] resolve_model -> ['interlock.plugins.detection', 'house']" in err
    assert "[interlock hook] resolve_model returned 'openai'" in err


# --------------------------------------------------------------------------- #
# meta: every hook in the contract is exercised by a test in this file
# --------------------------------------------------------------------------- #

class AlertCollector:
    def __init__(self, into: list[Any]) -> None:
        self.alerts = into

    @hookimpl
    def alert(self, alert: Any) -> None:
        self.alerts.append(alert)


async def test_alert_hook_receives_budget_alerts(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    alerts: list[Any] = []
    budget = '[prices."gpt-4o"]\ninput = 1000000\noutput = 1000000\n[[budgets]]\nscope = "global"\ndaily_usd = 1\n'
    gw = await make_gateway(openai_config(fake.base_url, budget), extra_plugins=[("alerts", AlertCollector(alerts))])
    with pytest.raises(openai.RateLimitError) as info:  # $1 a token: the worst case cannot fit in $1
        await gw.client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert info.value.code == "budget_exceeded"
    assert [(a.kind, a.scope, a.threshold_usd) for a in alerts] == [("budget_hard", "global", Decimal(1))]


#: hook name -> a test above that drives a third-party implementation of it
HOOK_TESTS: dict[str, str] = {
    "register_providers": "test_serve_routes_through_the_installed_plugin",
    "register_strategies": "test_select_strategy_hook_changes_the_order",
    "register_exporters": "test_register_exporters_hook_lifecycle",
    "resolve_model": "test_resolve_model_hook_claims_and_overrides_bare_names",
    "select_strategy": "test_select_strategy_hook_changes_the_order",
    "select_route": "test_select_route_hook_reroutes_by_content",
    "classify_failure": "test_classify_failure_hook_overrides_the_builtin",
    "compute_cost": "test_compute_cost_hook_answers_first_result",
    "record_decision": "test_record_decision_hook_sees_every_attempt",
    "alert": "test_alert_hook_receives_budget_alerts",
}

#: the plugin objects those tests use, keyed like HOOK_TESTS (the installed package for register_providers)
HOOK_PLUGINS: dict[str, Any] = {
    "register_strategies": ReverseOnHeader,
    "register_exporters": MemoryExporterPlugin,
    "resolve_model": HouseModels,
    "select_strategy": ReverseOnHeader,
    "select_route": CheapRule,
    "classify_failure": FailFast500,
    "compute_cost": Prices,
    "record_decision": Recorder,
    "alert": AlertCollector,
}


def test_every_hookspec_is_tested() -> None:
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    specs = {n for n, caller in vars(pm.hook).items() if isinstance(caller, pluggy.HookCaller) and caller.has_spec()}
    assert specs, "no hookspecs found"
    untested, stale = sorted(specs - set(HOOK_TESTS)), sorted(set(HOOK_TESTS) - specs)
    assert not untested and not stale, f"untested hooks: {untested}; stale entries: {stale}"
    module = sys.modules[__name__]
    for hook, test_name in HOOK_TESTS.items():
        fn = getattr(module, test_name, None)
        assert callable(fn) and test_name.startswith("test_"), f"{hook}: {test_name} is not a test in this file"
        plugin = HOOK_PLUGINS.get(hook)
        if plugin is not None:
            impl = vars(plugin).get(hook)
            assert impl is not None and hasattr(impl, "interlock_impl"), f"{plugin} lacks a {hook} hookimpl"
            assert plugin.__name__ in inspect.getsource(fn), f"{test_name} does not use {plugin.__name__}"
        else:  # register_providers: the installed interlock-echo package implements it
            assert "interlock_echo" in (FIXTURES / "interlock-echo" / "pyproject.toml").read_text()
            source = (FIXTURES / "interlock-echo" / "interlock_echo" / "__init__.py").read_text()
            assert f"@hookimpl\ndef {hook}(" in source
