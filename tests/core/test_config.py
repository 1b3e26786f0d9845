"""Config loading and validation: key paths, all problems at once, registry checks, ``interlock check``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from interlock.core import config as config_mod
from interlock.core.config import Config, ConfigError
from interlock.core.gateway import Gateway
from tests.conftest import SECRET


def write(tmp_path: Path, text: str, name: str = "interlock.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return config_mod.load(write(tmp_path, text), environ=environ if environ is not None else {})


def problems_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return dict(info.value.problems)


def gateway(cfg: Config, environ: dict[str, str] | None = None) -> Gateway:
    return Gateway(cfg, load_entrypoints=False, environ=environ if environ is not None else {})


def gateway_problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    cfg = load(tmp_path, text, environ)
    with pytest.raises(ConfigError) as info:
        gateway(cfg, environ)
    return dict(info.value.problems)


# --------------------------------------------------------------------------- #
# parsing a valid file
# --------------------------------------------------------------------------- #

VALID = """
[server]
host = "0.0.0.0"
port = 8080
max_body_bytes = 1024

[database]
url = "sqlite+aiosqlite:///tmp.db"

[providers.openai]
api_key = "${OPENAI_KEY}"

[providers.eu]
type = "openai"
base_url = "${EU_URL:-https://eu.example.com/v1}"
api_key = "${EU_KEY:-fallback-key}"
timeout = 30
connect_timeout = 2.5
headers = { "X-Team" = "${TEAM}" }
models = ["gpt-4o-mini"]
organization = "org-1"

[routes.smart]
chain = "openai/gpt-4o > eu/gpt-4o-mini"
retries = 2

[routes.cheap]
targets = [{ model = "eu/gpt-4o-mini", weight = 3 }, { model = "openai/gpt-4o", weight = 1.5 }, "openai/gpt-4o-mini"]

[routes.spread]
strategy = "round-robin"
chain = ["openai/gpt-4o", "eu/gpt-4o"]

[plugins]
disabled = ["interlock.plugins.providers.groq"]

[logging]
level = "DEBUG"
decisions = true
"""


def test_valid_config_parses(tmp_path: Path) -> None:
    cfg = load(tmp_path, VALID, {"OPENAI_KEY": "sk-from-env", "TEAM": "search"})
    assert cfg.source == str(tmp_path / "interlock.toml")
    assert (cfg.host, cfg.port, cfg.max_body_bytes) == ("0.0.0.0", 8080, 1024)
    assert cfg.database_url == "sqlite+aiosqlite:///tmp.db"
    assert cfg.auto_providers is False
    assert cfg.disabled_plugins == ["interlock.plugins.providers.groq"]
    assert (cfg.log_level, cfg.log_decisions) == ("debug", True)

    openai = cfg.providers["openai"]
    assert openai.type == "openai"  # the type defaults to the instance name
    assert openai.api_key is not None and openai.api_key.get() == "sk-from-env"
    assert openai.base_url is None
    assert (openai.timeout, openai.connect_timeout) == (600.0, 10.0)

    eu = cfg.providers["eu"]
    assert eu.type == "openai"
    assert eu.base_url == "https://eu.example.com/v1"  # ${VAR:-default} with VAR unset
    assert eu.api_key is not None and eu.api_key.get() == "fallback-key"
    assert eu.headers == {"X-Team": "search"}
    assert (eu.timeout, eu.connect_timeout) == (30.0, 2.5)
    assert isinstance(eu.timeout, float)
    assert eu.models == ["gpt-4o-mini"]
    assert eu.options == {"organization": "org-1"}  # non-core keys are provider options

    smart = cfg.routes["smart"]
    assert [e[:2] for e in smart.elements] == [("openai/gpt-4o", 1.0), ("eu/gpt-4o-mini", 1.0)]
    assert (smart.strategy, smart.key, smart.settings.retries) == ("ordered", "chain", 2)

    cheap = cfg.routes["cheap"]
    assert [e[:2] for e in cheap.elements] == [("eu/gpt-4o-mini", 3.0), ("openai/gpt-4o", 1.5), ("openai/gpt-4o-mini", 1.0)]
    assert (cheap.strategy, cheap.key) == ("weighted", "targets")

    spread = cfg.routes["spread"]
    assert [e[:2] for e in spread.elements] == [("openai/gpt-4o", 1.0), ("eu/gpt-4o", 1.0)]
    assert spread.strategy == "round-robin"


def test_env_expansion_prefers_the_environment_over_the_default(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
[providers.openai]
base_url = "${URL:-https://default.example.com/v1}"
api_key = "prefix-${KEY}-suffix"
""",
        {"URL": "https://env.example.com/v1", "KEY": "abc"},
    )
    assert cfg.providers["openai"].base_url == "https://env.example.com/v1"
    assert cfg.providers["openai"].api_key is not None
    assert cfg.providers["openai"].api_key.get() == "prefix-abc-suffix"


def test_env_default_applies_to_an_empty_variable(tmp_path: Path) -> None:
    # shell and compose semantics: ${VAR:-default} uses the default when VAR is unset *or* empty
    cfg = load(
        tmp_path,
        '[providers.openai]\napi_key = "k"\nbase_url = "${URL:-https://d.example.com/v1}"\n',
        {"URL": ""},
    )
    assert cfg.providers["openai"].base_url == "https://d.example.com/v1"


def test_env_expansion_reaches_lists_and_nested_tables(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
[providers.openai]
api_key = "k"
models = ["${M1}", "${M2:-gpt-4o-mini}"]

[routes.r]
targets = [{ model = "${TARGET}", weight = 2 }]
""",
        {"M1": "gpt-4o", "TARGET": "openai/gpt-4o"},
    )
    assert cfg.providers["openai"].models == ["gpt-4o", "gpt-4o-mini"]
    assert [e[:2] for e in cfg.routes["r"].elements] == [("openai/gpt-4o", 2.0)]


def test_defaults_when_sections_are_absent(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert (cfg.host, cfg.port) == (config_mod.DEFAULT_HOST, config_mod.DEFAULT_PORT)
    assert cfg.database_url == config_mod.DEFAULT_DATABASE_URL
    assert cfg.providers == {} and cfg.routes == {}
    assert cfg.auto_providers is False


def test_embedded_defaults_enable_auto_providers() -> None:
    cfg = config_mod.load(None, environ={})
    assert cfg.source is None
    assert cfg.auto_providers is True
    assert cfg.providers == {} and cfg.routes == {}


def test_settings_view_has_no_credentials(tmp_path: Path) -> None:
    cfg = load(tmp_path, f'[providers.openai]\napi_key = "{SECRET}"\n')
    assert SECRET not in repr(cfg.settings_view())
    assert "providers" not in cfg.settings_view()
    assert SECRET not in repr(cfg.providers["openai"])  # Secret hides itself


# --------------------------------------------------------------------------- #
# problems: key paths, all at once
# --------------------------------------------------------------------------- #

BROKEN = """
mystery = 1

[server]
port = 70000
color = "blue"

[providers.openai]
api_key = "${OPENAI_KEY}"
base_url = "ftp://example.com"
timeout = -1

[routes.smart]
description = "neither chain nor targets"

[routes.cheap]
targets = [{ model = "openai/gpt-4o", weight = 1 }, { model = "openai/gpt-4o-mini", weight = "heavy" }]

[routes.neg]
targets = [{ model = "openai/gpt-4o", weight = -2 }]

[routes.gaps]
chain = "openai/gpt-4o > > openai/gpt-4o-mini"
retries = -1

[logging]
level = "loud"
"""


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, BROKEN)
    err = info.value
    problems = dict(err.problems)
    assert problems["providers.openai.api_key"] == "environment variable OPENAI_KEY is not set"
    assert problems["routes.smart"].startswith("needs exactly one of 'chain'")
    assert "must be float" in problems["routes.cheap.targets[1].weight"]
    assert "'heavy'" in problems["routes.cheap.targets[1].weight"]
    assert "routes.cheap.targets[0].weight" not in problems
    assert problems["routes.neg.targets[0].weight"] == "must not be negative"
    assert "empty element" in problems["routes.gaps.chain[1]"]
    assert "whole number >= 0" in problems["routes.gaps.retries"]
    assert "70000" in problems["server.port"]
    assert problems["mystery"].startswith("unknown section")
    assert problems["server.color"].startswith("unknown key")
    assert "must start with http:// or https://" in problems["providers.openai.base_url"]
    assert "positive" in problems["providers.openai.timeout"]
    assert "'loud'" in problems["logging.level"]
    assert len(err.problems) == 12

    text = str(err)
    assert text.startswith(f"invalid configuration in {tmp_path / 'interlock.toml'}:")
    assert "  providers.openai.api_key: environment variable OPENAI_KEY is not set" in text.splitlines()
    assert "  routes.cheap.targets[1].weight: must be float, not str ('heavy')" in text.splitlines()


@pytest.mark.parametrize(
    ("toml", "path", "fragment"),
    [
        ("[server]\nport = -1\n", "server.port", "not a TCP port"),
        ('[server]\nport = "4000"\n', "server.port", "must be int, not str"),
        ("[server]\nport = true\n", "server.port", "must be int, not bool"),
        ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes", "positive"),
        ('[server]\nauto_providers = "yes"\n', "server.auto_providers", "must be bool"),
        ('[server]\npublic_metrics = "yes"\n', "server.public_metrics", "must be bool"),
        ('[server]\nadmin_key = "same-key-0123456789"\nread_key = "same-key-0123456789"\n', "server.read_key",
         "must differ from server.admin_key"),
        ('[server]\nadmin_key = "team-key-0123456789"\n[[keys]]\nkey = "team-key-0123456789"\n', "server.admin_key",
         "must differ from every [[keys]] key"),
        ('[server]\nread_key = "team-key-0123456789"\n[[keys]]\nkey = "team-key-0123456789"\n', "server.read_key",
         "must differ from every [[keys]] key"),
        ("server = 3\n", "server", "must be a table, not int"),
        ('[database]\nurl = "interlock.db"\n', "database.url", "not a SQLAlchemy URL"),
        ('[database]\nhost = "x"\n', "database.host", "unknown key"),
        (
            '[providers.openai]\napi_key = "k"\nheaders = { "X-A" = 1 }\n',
            "providers.openai.headers",
            "table of strings",
        ),
        (
            '[providers.openai]\napi_key = "k"\nmodels = "gpt-4o"\n',
            "providers.openai.models",
            "list of strings",
        ),
        ('[providers."bad name"]\napi_key = "k"\n', "providers.bad name", "instance names"),
        ("[providers]\nopenai = 1\n", "providers.openai", "must be a table"),
        ('[routes.r]\nchain = "a"\ntargets = ["b"]\n', "routes.r", "needs exactly one of 'chain'"),
        ("[routes.r]\nchain = 5\n", "routes.r.chain", "must be a string"),
        ("[routes.r]\ntargets = []\n", "routes.r.targets", "non-empty list"),
        ("[routes.r]\ntargets = [5]\n", "routes.r.targets[0]", "'model' string"),
        ('[routes.r]\ntargets = [{ model = "a", share = 1 }]\n', "routes.r.targets[0].share", "unknown key"),
        ('[routes.r]\nchain = "a"\npriority = 1\n', "routes.r.priority", "unknown key"),
        ('[routes.r]\nchain = "a"\nstrategy = 3\n', "routes.r.strategy", "must be str"),
        ('[plugins]\ndisabled = "groq"\n', "plugins.disabled", "list of strings"),
        ("[logging]\nverbose = true\n", "logging.verbose", "unknown key"),
    ],
)
def test_single_problem_key_paths(tmp_path: Path, toml: str, path: str, fragment: str) -> None:
    problems = problems_of(tmp_path, toml)
    assert path in problems, problems
    assert fragment in problems[path]


def test_server_credentials_and_public_metrics(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[server]\nadmin_key = "adm-0123456789abcdef"\nread_key = "${READ_KEY}"\npublic_metrics = true\n',
               {"READ_KEY": "read-0123456789abcdef"})
    assert cfg.admin_key is not None and cfg.admin_key.get() == "adm-0123456789abcdef"
    assert cfg.read_key is not None and cfg.read_key.get() == "read-0123456789abcdef"
    assert cfg.public_metrics is True
    assert "read-0123456789abcdef" not in repr(cfg)  # a Secret, like the admin key
    assert sorted(gateway(cfg).secrets()) == ["adm-0123456789abcdef", "read-0123456789abcdef"]  # scrubbed from logs
    defaults = load(tmp_path, "")
    assert (defaults.admin_key, defaults.read_key, defaults.public_metrics) == (None, None, False)


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "[providers.openai\napi_key = 'x'\n")
    ((path, message),) = info.value.problems
    assert path == ""
    assert message.startswith("not valid TOML:")
    assert "line 1" in message
    assert info.value.source == str(tmp_path / "interlock.toml")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        config_mod.load(missing, environ={})
    assert info.value.problems == [("", f"config file {missing!r} does not exist")]
    assert "does not exist" in str(info.value)


def test_parse_accepts_an_already_parsed_document() -> None:
    cfg = config_mod.parse({"routes": {"r": {"chain": ["a", "b"]}}}, environ={})
    assert [e[:2] for e in cfg.routes["r"].elements] == [("a", 1.0), ("b", 1.0)]
    with pytest.raises(ConfigError) as info:
        config_mod.parse({"server": {"port": 1.5}}, environ={})
    assert [p for p, _ in info.value.problems] == ["server.port"]


# --------------------------------------------------------------------------- #
# checks that need the plugin registry (through Gateway)
# --------------------------------------------------------------------------- #


def test_gateway_builds_for_a_valid_config(tmp_path: Path) -> None:
    cfg = load(tmp_path, VALID, {"OPENAI_KEY": "sk-from-env", "TEAM": "search"})
    gw = gateway(cfg)
    assert set(gw.providers) == {"openai", "eu"}
    assert [t.key for t in gw.resolver.routes["smart"].targets] == ["openai/gpt-4o", "eu/gpt-4o-mini"]
    assert [(t.key, t.weight) for t in gw.resolver.routes["cheap"].targets] == [
        ("eu/gpt-4o-mini", 3.0),
        ("openai/gpt-4o", 1.5),
        ("openai/gpt-4o-mini", 1.0),
    ]
    assert gw.resolver.routes["smart"].settings.retries == 2
    assert sorted(gw.secrets()) == ["fallback-key", "sk-from-env"]


def test_unknown_provider_type(tmp_path: Path) -> None:
    problems = gateway_problems(tmp_path, '[providers.x]\ntype = "acme"\napi_key = "k"\n')
    assert list(problems) == ["providers.x.type"]
    assert "unknown provider type 'acme'" in problems["providers.x.type"]
    assert "openai" in problems["providers.x.type"]  # lists the registered types


def test_instance_name_without_type_must_be_a_registered_type(tmp_path: Path) -> None:
    problems = gateway_problems(tmp_path, '[providers.my-llm]\napi_key = "k"\n')
    assert "unknown provider type 'my-llm'" in problems["providers.my-llm.type"]


def test_unknown_strategy(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path,
        '[providers.openai]\napi_key = "k"\n[routes.r]\nstrategy = "fastest"\nchain = "openai/gpt-4o"\n',
    )
    assert list(problems) == ["routes.r.strategy"]
    msg = problems["routes.r.strategy"]
    assert "unknown strategy 'fastest'" in msg
    assert "ordered" in msg and "weighted" in msg and "round-robin" in msg


def test_chain_element_that_does_not_resolve(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path,
        """
[providers.openai]
api_key = "k"
[routes.smart]
chain = "openai/gpt-4o > gpt-4o-mini > no-such-model-xyz"
""",
    )
    assert list(problems) == ["routes.smart.chain[2]"]
    msg = problems["routes.smart.chain[2]"]
    assert "unknown model 'no-such-model-xyz'" in msg
    assert "instances: openai" in msg


def test_chain_element_of_an_unconfigured_provider_says_what_to_set(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path,
        '[providers.openai]\napi_key = "k"\n[routes.r]\ntargets = ["openai/gpt-4o", { model = "grok-4", weight = 2 }]\n',
    )
    assert list(problems) == ["routes.r.targets[1]"]
    assert "XAI_API_KEY" in problems["routes.r.targets[1]"]


def test_instance_without_model_in_a_chain(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path, '[providers.openai]\napi_key = "k"\n[routes.r]\nchain = "openai/"\n'
    )
    assert "names provider instance 'openai' but no model" in problems["routes.r.chain[0]"]


def test_route_cycle(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path,
        """
[providers.openai]
api_key = "k"
[routes.a]
chain = "openai/gpt-4o > b"
[routes.b]
chain = "a > openai/gpt-4o-mini"
""",
    )
    assert problems["routes.a.chain[1]"] == "route cycle: b > a > b"
    assert problems["routes.b.chain[0]"] == "route cycle: a > b > a"


def test_route_referring_to_itself(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path, '[providers.openai]\napi_key = "k"\n[routes.a]\nchain = "openai/gpt-4o > a"\n'
    )
    assert problems == {"routes.a.chain[1]": "route cycle: a > a"}


def test_azure_without_base_url(tmp_path: Path) -> None:
    problems = gateway_problems(tmp_path, '[providers.az]\ntype = "azure"\napi_key = "k"\n')
    assert list(problems) == ["providers.az.base_url"]
    assert "needs a base_url" in problems["providers.az.base_url"]
    assert "AZURE_OPENAI_ENDPOINT" in problems["providers.az.base_url"]


def test_azure_base_url_from_environment(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[providers.az]\ntype = "azure"\n')
    gw = gateway(cfg, {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_API_KEY": "k"})
    assert gw.providers["az"].base_url == "https://r.openai.azure.com"
    assert gw.providers["az"].settings.api_key is not None


def test_missing_api_key(tmp_path: Path) -> None:
    problems = gateway_problems(tmp_path, "[providers.mistral]\n")
    assert list(problems) == ["providers.mistral.api_key"]
    assert "MISTRAL_API_KEY" in problems["providers.mistral.api_key"]


def test_unknown_provider_option(tmp_path: Path) -> None:
    problems = gateway_problems(tmp_path, '[providers.openai]\napi_key = "k"\norganisation = "org-1"\n')
    assert list(problems) == ["providers.openai.organisation"]
    assert "unknown key for provider type 'openai'" in problems["providers.openai.organisation"]
    assert "organization" in problems["providers.openai.organisation"]  # the known options are listed


def test_bad_azure_options(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path,
        '[providers.az]\ntype = "azure"\napi_key = "k"\nbase_url = "https://r.openai.azure.com"\n'
        "api_version = 2024\ndeployments = { gpt-4o = 1 }\n",
    )
    assert set(problems) == {"providers.az.api_version", "providers.az.deployments"}


def test_registry_problems_are_reported_together(tmp_path: Path) -> None:
    problems = gateway_problems(
        tmp_path,
        """
[providers.x]
type = "acme"
[providers.az]
type = "azure"
api_key = "k"
[providers.openai]
api_key = "k"
colour = "red"
""",
    )
    assert set(problems) == {"providers.x.type", "providers.az.base_url", "providers.openai.colour"}


# --------------------------------------------------------------------------- #
# the ``interlock check`` command
# --------------------------------------------------------------------------- #


def run_check(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("interlock")
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "INTERLOCK_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [str(exe), "check", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_check_good_file_prints_resolved_routes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[providers.openai]
api_key = "{SECRET}"

[providers.backup]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "${{BACKUP_KEY}}"

[routes.smart]
chain = "gpt-4o > backup/gpt-4o-mini"

[routes.cheap]
targets = [{{ model = "openai/gpt-4o-mini", weight = 3 }}, {{ model = "backup/gpt-4o-mini", weight = 1 }}]
""",
    )
    proc = run_check("--config", path, cwd=tmp_path, env={"BACKUP_KEY": "sk-backup-secret-987"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"config: {path} is valid" in out
    assert "  openai: type=openai base_url=https://api.openai.com/v1 key=set" in out
    assert "  backup: type=openai base_url=http://127.0.0.1:9/v1 key=set" in out
    assert "  smart [ordered]: openai/gpt-4o > backup/gpt-4o-mini" in out
    assert "  cheap [weighted]: openai/gpt-4o-mini (weight 3) > backup/gpt-4o-mini (weight 1)" in out
    assert SECRET not in out + proc.stderr
    assert "sk-backup-secret-987" not in out + proc.stderr


def test_check_bad_file_exits_2_with_key_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[server]
port = "eighty"

[providers.openai]
api_key = "{SECRET}"
base_url = "${{NOT_SET_URL}}"

[routes.cheap]
targets = ["openai/gpt-4o", {{ model = "openai/gpt-4o-mini", weight = "x" }}]
""",
    )
    proc = run_check("--config", path, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr
    assert f"invalid configuration in {path}" in err
    assert "server.port: must be int" in err
    assert "providers.openai.base_url: environment variable NOT_SET_URL is not set" in err
    assert "routes.cheap.targets[1].weight: must be float" in err
    assert SECRET not in err


def test_check_registry_problems_exit_2(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[providers.openai]
api_key = "{SECRET}"
[providers.az]
type = "azure"
api_key = "{SECRET}"
[routes.smart]
chain = "openai/gpt-4o > openai/gpt-4o-mini > mystery-model"
""",
    )
    proc = run_check("--config", path, cwd=tmp_path)
    assert proc.returncode == 2
    assert "providers.az.base_url:" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_check_resolver_problems_exit_2(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[providers.openai]\napi_key = "{SECRET}"\n[routes.smart]\nchain = "openai/gpt-4o > openai/gpt-4o-mini > mystery-model"\n',
    )
    proc = run_check("--config", path, cwd=tmp_path)
    assert proc.returncode == 2
    assert "routes.smart.chain[2]: unknown model 'mystery-model'" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_check_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run_check("--config", str(tmp_path / "absent.toml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_check_embedded_defaults_use_the_environment(tmp_path: Path) -> None:
    proc = run_check(cwd=tmp_path, env={"GROQ_API_KEY": "gsk-secret-value-123"})
    assert proc.returncode == 0, proc.stderr
    assert "config: embedded defaults is valid" in proc.stdout
    assert "  groq: type=groq base_url=https://api.groq.com/openai/v1 key=set" in proc.stdout
    assert "gsk-secret-value-123" not in proc.stdout + proc.stderr
