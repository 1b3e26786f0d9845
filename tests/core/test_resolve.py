"""Model-name resolution: the detection table, ``instance/model``, ``type/model``, routes, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlock.core import config as config_mod
from interlock.core.errors import GatewayError
from interlock.core.gateway import Gateway
from interlock.core.types import Target
from interlock.plugins.detection import detect

# model names and the provider each must resolve to (None: ambiguous, never guessed)
DETECTION_CASES = [
    ("gpt-4o", "openai"),
    ("o3-mini", "openai"),
    ("o4-mini-2025-04-16", "openai"),
    ("chatgpt-4o-latest", "openai"),
    ("text-embedding-3-small", "openai"),
    ("gpt-oss-120b", None),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-sonnet-4-5@20250929", "vertex"),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "bedrock"),
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "bedrock"),
    ("gemini-2.5-flash", "gemini"),
    ("text-embedding-004", "gemini"),
    ("mistral-large-latest", "mistral"),
    ("open-mistral-nemo", "mistral"),
    ("codestral-2508", "mistral"),
    ("ministral-8b-latest", "mistral"),
    ("pixtral-12b", "mistral"),
    ("deepseek-chat", "deepseek"),
    ("deepseek-r1:8b", "ollama"),
    ("grok-4", "xai"),
    ("sonar-pro", "perplexity"),
    ("command-a-03-2025", "cohere"),
    ("embed-v4.0", "cohere"),
    ("llama3.2", None),
    ("llama-3.3-70b-versatile", "groq"),
    ("meta-llama/Llama-3.3-70B-Instruct-Turbo", None),
    ("accounts/fireworks/models/gpt-oss-120b", "fireworks"),
    (
        "meta/llama-2-70b-chat:02e509c789964a7ea8736978a43525956ef40397be9033abf9fd2badfe68c9e3",
        "replicate",
    ),
]


@pytest.mark.parametrize(("model", "expected"), DETECTION_CASES, ids=[m for m, _ in DETECTION_CASES])
def test_detect(model: str, expected: str | None) -> None:
    assert detect(model) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("GPT-4O", "openai"),  # case-insensitive
        ("o1", "openai"),
        ("gpt-5", "openai"),
        ("ft:gpt-4o-mini:acme::abc123", "openai"),
        ("gpt-oss-20b", None),
        ("o3mini", None),  # o\d must end or continue with '-'
        ("deepseek-reasoner", "deepseek"),
        ("deepseek-v3:671b", "ollama"),
        ("llama3.2:3b", "ollama"),
        ("qwen2.5:latest", "ollama"),
        ("llama-3.3-70b", None),
        ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/x", "bedrock"),
        ("amazon.titan-embed-text-v2:0", "bedrock"),
        ("accounts/acme/deployedModels/x", "fireworks"),
        ("magistral-medium-latest", "mistral"),
        ("r1-1776", "perplexity"),
        ("embed-english-v3.0", "cohere"),
        ("llama-3.1-8b-instant", "groq"),
        ("", None),
    ],
)
def test_detect_more(model: str, expected: str | None) -> None:
    assert detect(model) == expected


# --------------------------------------------------------------------------- #
# Resolver through a Gateway
# --------------------------------------------------------------------------- #


def make(toml: str, tmp_path: Path, environ: dict[str, str] | None = None, **kwargs: object) -> Gateway:
    path = tmp_path / "interlock.toml"
    path.write_text(toml)
    env = environ or {}
    cfg = config_mod.load(str(path), environ=env)
    return Gateway(cfg, load_entrypoints=False, environ=env, **kwargs)  # type: ignore[arg-type]


BASE = """
[providers.openai]
api_key = "k"

[providers.backup]
type = "openai"
api_key = "k"

[providers.mistral]
type = "openai"            # an instance *named* like a provider type
api_key = "k"

[providers.or]
type = "openrouter"
api_key = "k"
"""


def targets(gw: Gateway, model: str) -> list[tuple[str, str, float]]:
    return [(t.provider, t.model, t.weight) for t in gw.resolver.resolve(model).targets]


def test_bare_model_is_auto_detected(tmp_path: Path) -> None:
    gw = make(BASE, tmp_path)
    route = gw.resolver.resolve("gpt-4o")
    assert route.implicit and route.name == "gpt-4o" and route.strategy == "ordered"
    assert route.targets == [Target("openai", "gpt-4o")]
    assert gw.resolver.resolve("gpt-4o") is route  # cached


def test_explicit_instance_model(tmp_path: Path) -> None:
    gw = make(BASE, tmp_path)
    assert gw.resolver.resolve_target("backup/gpt-4o-mini") == Target("backup", "gpt-4o-mini")
    # the rest after the first slash is the model, verbatim
    assert gw.resolver.resolve_target("backup/ft:gpt-4o:acme/x") == Target("backup", "ft:gpt-4o:acme/x")


def test_instance_name_wins_over_type(tmp_path: Path) -> None:
    gw = make(BASE, tmp_path)
    # "mistral" is both a registered provider type and an instance (of type openai): the instance wins
    assert gw.resolver.resolve_target("mistral/mistral-large-latest") == Target(
        "mistral", "mistral-large-latest"
    )
    assert gw.providers["mistral"].type_name == "openai"


def test_type_slash_model_picks_an_instance_of_that_type(tmp_path: Path) -> None:
    gw = make(BASE, tmp_path)
    assert gw.resolver.resolve_target("openrouter/openai/gpt-4o") == Target("or", "openai/gpt-4o")
    assert targets(gw, "openrouter/anthropic/claude-sonnet-4.5") == [
        ("or", "anthropic/claude-sonnet-4.5", 1.0)
    ]


def test_type_prefix_prefers_the_instance_named_like_the_type(tmp_path: Path) -> None:
    gw = make(
        '[providers.a-first]\ntype = "openrouter"\napi_key = "k"\n[providers.openrouter]\napi_key = "k"\n',
        tmp_path,
    )
    assert gw.resolver.resolve_target("openrouter/x/y") == Target("openrouter", "x/y")


def test_type_aliases(tmp_path: Path) -> None:
    gw = make(
        BASE
        + '\n[providers.g]\ntype = "gemini"\napi_key = "k"\n[providers.grok]\ntype = "xai"\napi_key = "k"\n'
        '[providers.tg]\ntype = "together"\napi_key = "k"\n',
        tmp_path,
    )
    assert gw.resolver.resolve_target("google/gemini-2.5-flash") == Target("g", "gemini-2.5-flash")
    assert gw.resolver.resolve_target("gemini/gemini-2.5-pro") == Target("g", "gemini-2.5-pro")
    assert gw.resolver.resolve_target("x-ai/grok-4") == Target("grok", "grok-4")
    assert gw.resolver.resolve_target("together_ai/meta-llama/Llama-3.3-70B") == Target(
        "tg", "meta-llama/Llama-3.3-70B"
    )
    # auto-detection finds the built-in gemini type too
    assert gw.resolver.resolve_target("gemini-2.5-flash") == Target("g", "gemini-2.5-flash")


def test_slash_that_is_not_a_provider_falls_through_to_detection(tmp_path: Path) -> None:
    gw = make(BASE + '\n[providers.fw]\ntype = "fireworks"\napi_key = "k"\n', tmp_path)
    ref = "accounts/fireworks/models/gpt-oss-120b"
    assert gw.resolver.resolve_target(ref) == Target("fw", ref)


def test_route_names_win(tmp_path: Path) -> None:
    gw = make(
        BASE
        + """
[routes.gpt-4o]
chain = "backup/gpt-4o-mini"

[routes."openai/gpt-4o"]
chain = "backup/gpt-4o"
""",
        tmp_path,
    )
    route = gw.resolver.resolve("gpt-4o")
    assert not route.implicit and route.name == "gpt-4o"
    assert targets(gw, "gpt-4o") == [("backup", "gpt-4o-mini", 1.0)]
    assert targets(gw, "openai/gpt-4o") == [("backup", "gpt-4o", 1.0)]


def test_nested_routes_expand_in_order_with_weights_multiplied(tmp_path: Path) -> None:
    gw = make(
        BASE
        + """
[routes.inner]
targets = [{ model = "openai/gpt-4o", weight = 2 }, { model = "backup/gpt-4o", weight = 3 }]

[routes.outer]
targets = [{ model = "inner", weight = 0.5 }, { model = "openai/gpt-4o-mini", weight = 4 }]

[routes.chain]
chain = "backup/gpt-4o-mini > outer > gpt-4o"
""",
        tmp_path,
    )
    assert targets(gw, "outer") == [
        ("openai", "gpt-4o", 1.0),
        ("backup", "gpt-4o", 1.5),
        ("openai", "gpt-4o-mini", 4.0),
    ]
    assert targets(gw, "chain") == [
        ("backup", "gpt-4o-mini", 1.0),
        ("openai", "gpt-4o", 1.0),
        ("backup", "gpt-4o", 1.5),
        ("openai", "gpt-4o-mini", 4.0),
        ("openai", "gpt-4o", 1.0),
    ]
    assert gw.resolver.resolve("chain").strategy == "ordered"
    assert gw.resolver.resolve("outer").strategy == "weighted"


def test_unknown_model_is_a_404_listing_routes_and_instances(tmp_path: Path) -> None:
    gw = make(
        BASE + '\n[routes.smart]\nchain = "gpt-4o"\n[routes.cheap]\nchain = "backup/gpt-4o-mini"\n', tmp_path
    )
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve("llama3.2")
    err = info.value
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    assert "unknown model 'llama3.2'" in err.message
    assert "routes: cheap, smart" in err.message
    assert "instances: backup, mistral, openai, or" in err.message
    assert err.body()["error"]["code"] == "model_not_found"
    assert "llama3.2" not in gw.resolver._implicit  # failures are not cached


@pytest.mark.parametrize("model", ["gpt-oss-120b", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "nosuch/model"])
def test_ambiguous_names_are_never_guessed(tmp_path: Path, model: str) -> None:
    gw = make(BASE, tmp_path)
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve(model)
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_registered_but_unconfigured_provider_names_the_env_var(tmp_path: Path) -> None:
    gw = make('[providers.openai]\napi_key = "k"\n', tmp_path)
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve("mistral-large-latest")
    err = info.value
    assert (err.status, err.code) == (404, "provider_not_configured")
    assert "'mistral'" in err.message
    assert "MISTRAL_API_KEY" in err.message
    assert "[providers.mistral]" in err.message


def test_type_prefix_of_an_unconfigured_provider(tmp_path: Path) -> None:
    gw = make('[providers.openai]\napi_key = "k"\n', tmp_path)
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve("groq/llama-3.3-70b-versatile")
    assert info.value.code == "provider_not_configured"
    assert "GROQ_API_KEY" in info.value.message


def test_detected_type_without_a_plugin(tmp_path: Path) -> None:
    # with the anthropic plugin blocked, nothing registers the type the name is detected as
    gw = make('[providers.openai]\napi_key = "k"\n[plugins]\ndisabled = ["interlock.plugins.providers.anthropic"]\n', tmp_path)
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve("claude-sonnet-4-5")
    assert info.value.status == 404
    assert "'anthropic'" in info.value.message and "no plugin registers" in info.value.message


# --------------------------------------------------------------------------- #
# embedded defaults: providers from the environment
# --------------------------------------------------------------------------- #


def defaults(environ: dict[str, str]) -> Gateway:
    return Gateway(config_mod.load(None, environ=environ), load_entrypoints=False, environ=environ)


def test_embedded_defaults_enable_exactly_the_keyed_providers() -> None:
    gw = defaults({"OPENAI_API_KEY": "x", "GROQ_API_KEY": "y", "UNRELATED": "z"})
    assert set(gw.providers) == {"openai", "groq"}
    assert gw.providers["openai"].settings.api_key is not None
    assert gw.providers["openai"].settings.api_key.get() == "x"
    assert gw.providers["groq"].base_url == "https://api.groq.com/openai/v1"
    assert gw.resolver.resolve("gpt-4o").targets == [Target("openai", "gpt-4o")]
    assert gw.resolver.resolve("llama-3.3-70b-versatile").targets == [
        Target("groq", "llama-3.3-70b-versatile")
    ]
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve("grok-4")
    assert info.value.code == "provider_not_configured" and "XAI_API_KEY" in info.value.message


def test_embedded_defaults_with_an_empty_environment() -> None:
    gw = defaults({})
    assert gw.providers == {}
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve("gpt-4o")
    assert info.value.code == "provider_not_configured" and "OPENAI_API_KEY" in info.value.message


def test_embedded_defaults_accept_key_aliases_and_base_url_overrides() -> None:
    gw = defaults({"PPLX_API_KEY": "p", "OPENAI_API_KEY": "o", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert set(gw.providers) == {"perplexity", "openai"}
    assert gw.providers["openai"].base_url == "http://127.0.0.1:9/v1"


def test_embedded_defaults_skip_providers_that_need_a_base_url() -> None:
    assert defaults({"GPUSTACK_API_KEY": "g"}).providers == {}
    assert defaults({"GPUSTACK_BASE_URL": "http://127.0.0.1:9/v1"}).providers == {}
    assert defaults({"AZURE_OPENAI_API_KEY": "a"}).providers == {}
    gw = defaults({"GPUSTACK_API_KEY": "g", "GPUSTACK_BASE_URL": "http://127.0.0.1:9/v1"})
    assert set(gw.providers) == {"gpustack"}
    assert gw.providers["gpustack"].base_url == "http://127.0.0.1:9/v1"


def test_every_builtin_provider_is_enabled_by_its_key() -> None:
    env = {
        "OPENAI_API_KEY": "1",
        "MISTRAL_API_KEY": "1",
        "DEEPSEEK_API_KEY": "1",
        "XAI_API_KEY": "1",
        "PERPLEXITY_API_KEY": "1",
        "OPENROUTER_API_KEY": "1",
        "GROQ_API_KEY": "1",
        "TOGETHER_API_KEY": "1",
        "FIREWORKS_API_KEY": "1",
        "AZURE_OPENAI_API_KEY": "1",
        "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
        "GPUSTACK_API_KEY": "1",
        "GPUSTACK_BASE_URL": "http://127.0.0.1:9/v1",
    }
    gw = defaults(env)
    assert set(gw.providers) == {
        "openai",
        "azure",
        "mistral",
        "deepseek",
        "xai",
        "perplexity",
        "openrouter",
        "gpustack",
        "groq",
        "together",
        "fireworks",
    }


def test_configured_file_does_not_auto_enable_providers(tmp_path: Path) -> None:
    gw = make('[providers.openai]\napi_key = "k"\n', tmp_path, environ={"GROQ_API_KEY": "y"})
    assert set(gw.providers) == {"openai"}


def test_auto_providers_in_a_file(tmp_path: Path) -> None:
    gw = make(
        '[server]\nauto_providers = true\n[providers.openai]\napi_key = "k"\n',
        tmp_path,
        environ={"GROQ_API_KEY": "y", "OPENAI_API_KEY": "env"},
    )
    assert set(gw.providers) == {"openai", "groq"}
    assert gw.providers["openai"].settings.api_key is not None
    assert gw.providers["openai"].settings.api_key.get() == "k"  # the file wins over the env var


def test_disabled_plugin_removes_its_provider_type() -> None:
    cfg = config_mod.load(None, environ={})
    cfg.disabled_plugins = ["interlock.plugins.providers.groq"]
    gw = Gateway(cfg, load_entrypoints=False, environ={"GROQ_API_KEY": "y", "OPENAI_API_KEY": "x"})
    assert set(gw.providers) == {"openai"}
    with pytest.raises(GatewayError) as info:
        gw.resolver.resolve("llama-3.3-70b-versatile")
    assert "no plugin registers" in info.value.message
