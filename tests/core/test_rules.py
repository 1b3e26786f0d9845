"""Content-based routing rules: parsing, each condition, first match, and end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from interlock import hookimpl
from interlock.core import config as config_mod
from interlock.core.config import ConfigError
from interlock.core.gateway import Gateway
from interlock.core.estimate import IMAGE_TOKENS, IMAGE_TOKENS_LOW, estimate_prompt_tokens
from interlock.core.rules import RequestFacts, Rule, match_first, parse_rules
from interlock.core.types import RequestContext, RouteChoice
from interlock.plugins import rules as rules_plugin
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import running_gateway

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def rule(**conditions: Any) -> Rule:
    """One rule parsed from config-shaped keyword arguments; fails the test on any problem."""
    problems: list[tuple[str, str]] = []
    out = parse_rules([{"name": "r", "route": "x", **conditions}], problems)
    assert problems == []
    return out[0]


def problems_of(*tables: Any) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    parse_rules(list(tables), problems)
    return problems


def ctx(
    *messages: Any,
    endpoint: str = "chat",
    headers: dict[str, str] | None = None,
    tags: list[str] | None = None,
    **body: Any,
) -> RequestContext:
    body.setdefault("model", "smart")
    msgs = [{"role": "user", "content": m} if isinstance(m, (str, list)) else m for m in messages]
    body.setdefault("messages", msgs or [{"role": "user", "content": "hi"}])
    return RequestContext(
        request_id="t", endpoint=endpoint, body=body, stream=bool(body.get("stream")),  # type: ignore[arg-type]
        headers=headers or {}, tags=tags or [],
    )


def image(detail: str | None = None) -> dict[str, Any]:
    url: dict[str, Any] = {"url": "data:image/png;base64," + "A" * 40_000}
    if detail:
        url["detail"] = detail
    return {"type": "image_url", "image_url": url}


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


# --------------------------------------------------------------------------- #
# parsing and validation
# --------------------------------------------------------------------------- #


def test_config_parses_rules_in_order() -> None:
    cfg = config_mod.parse(
        {
            "rules": [
                {"name": "long-context", "route": "big", "min_prompt_tokens": 32000},
                {"name": "batch", "route": "cheap", "metadata": {"use_case": "batch"}},
            ]
        }
    )
    assert [(r.name, r.route) for r in cfg.rules] == [("long-context", "big"), ("batch", "cheap")]
    assert cfg.rules[0].min_prompt_tokens == 32000
    assert cfg.rules[0].describe() == "prompt_tokens >= 32000"
    assert config_mod.parse({}).rules == []


def test_every_problem_is_reported_with_its_key_path() -> None:
    problems = problems_of(
        {"name": "ok", "route": "big", "tools": True},
        {"route": "big", "tools": "yes"},  # no name, tools not a bool
        {"name": "bad-regex", "route": "big", "last_user_regex": "(unclosed", "min_prompt_tokens": -1},
        {"name": "ok", "route": "", "colour": "red", "keywords": []},  # duplicate name, empty route, unknown key
        {"name": "hdr", "route": "big", "headers": {"x-team": 3, "x-id": "~[z-a]"}, "metadata": "batch"},
        {"name": "empty", "route": "big"},
        {"name": "range", "route": "big", "min_max_tokens": 500, "max_max_tokens": 100, "model": []},
        "not a table",
    )
    paths = [p for p, _ in problems]
    assert paths == [
        "rules[1].name",
        "rules[1].tools",
        "rules[2].min_prompt_tokens",
        "rules[2].last_user_regex",
        "rules[3].colour",
        "rules[3].name",
        "rules[3].route",
        "rules[3].keywords",
        "rules[4].headers.x-team",
        "rules[4].headers.x-id",
        "rules[4].metadata",
        "rules[5]",
        "rules[6].model",
        "rules[6].min_max_tokens",
        "rules[7]",
    ]
    msgs = dict(problems)
    assert "rule 'bad-regex'" in msgs["rules[2].last_user_regex"] and "(unclosed" in msgs["rules[2].last_user_regex"]
    assert "rule 'hdr'" in msgs["rules[4].headers.x-id"]
    assert "duplicate rule name 'ok'" in msgs["rules[3].name"]
    assert 'model = "*"' in msgs["rules[5]"]


def test_rules_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError) as exc:
        config_mod.parse({"rules": {"name": "x", "route": "big"}})
    assert exc.value.problems == [("rules", "must be an array of tables: write each rule as [[rules]]")]


def test_authorization_header_is_refused() -> None:
    problems = problems_of({"name": "a", "route": "big", "headers": {"Authorization": "Bearer x"}})
    assert [p for p, _ in problems] == ["rules[0].headers.authorization"]


def test_config_error_lists_rule_problems_with_the_rest() -> None:
    with pytest.raises(ConfigError) as exc:
        config_mod.parse({"server": {"port": -1}, "rules": [{"name": "x", "route": "big", "system_regex": "["}]})
    assert [p for p, _ in exc.value.problems] == ["server.port", "rules[0].system_regex"]
    assert "rules[0].system_regex: rule 'x': invalid regex '['" in str(exc.value)


def test_a_rule_naming_an_unknown_route_is_a_config_error(tmp_path: Path) -> None:
    cfg = config_mod.parse(
        {
            "providers": {"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}},
            "routes": {"big": {"chain": "openai/gpt-4o"}},
            "rules": [
                {"name": "a", "route": "big", "tools": True},
                {"name": "b", "route": "big", "images": True},
                {"name": "c", "route": "huge", "min_prompt_tokens": 1},
            ],
        }
    )
    with pytest.raises(ConfigError) as exc:
        Gateway(cfg, load_entrypoints=False, environ={})
    assert exc.value.problems == [
        ("rules[2].route", "rule 'c' sends requests to 'huge', which is not a route (routes: big)")
    ]


# --------------------------------------------------------------------------- #
# the token estimate
# --------------------------------------------------------------------------- #


def test_estimate_counts_characters_over_four_across_messages() -> None:
    assert estimate_prompt_tokens({"messages": []}) == 0
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": "abcd"}]}) == 1
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": "abcde"}]}) == 2  # rounded up
    body = {
        "messages": [
            {"role": "system", "content": "s" * 400},
            {"role": "user", "content": [{"type": "text", "text": "u" * 400}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f" * 4, "arguments": "a" * 396}}]},
            {"role": "tool", "tool_call_id": "c", "content": "t" * 400},
        ]
    }
    assert estimate_prompt_tokens(body) == 400
    assert estimate_prompt_tokens({"messages": "garbage"}) == 0
    assert estimate_prompt_tokens({}) == 0


def test_estimate_is_monotonic_in_text() -> None:
    previous = -1
    for n in range(0, 4000, 37):
        tokens = estimate_prompt_tokens({"messages": [{"role": "user", "content": "x" * n}]})
        assert tokens >= previous
        previous = tokens
    one = estimate_prompt_tokens({"messages": [{"role": "user", "content": "x" * 1000}]})
    two = estimate_prompt_tokens({"messages": [{"role": "user", "content": "x" * 1000}, {"role": "user", "content": "y"}]})
    assert two > one


def test_estimate_charges_images_not_their_base64() -> None:
    text = {"type": "text", "text": "what is this?"}  # 13 chars -> 4 tokens
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": [text, image("low")]}]}) == 4 + IMAGE_TOKENS_LOW
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": [text, image("high")]}]}) == 4 + IMAGE_TOKENS
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": [text, image()]}]}) == 4 + IMAGE_TOKENS
    two = estimate_prompt_tokens({"messages": [{"role": "user", "content": [text, image("low"), image("low")]}]})
    assert two == 4 + 2 * IMAGE_TOKENS_LOW


def test_facts_compute_each_value_once() -> None:
    c = ctx("x" * 4000)
    facts = RequestFacts(c)
    assert facts.prompt_tokens == 1000
    assert facts.last_user == "x" * 4000
    c.body["messages"].append({"role": "user", "content": [{"type": "text", "text": "y"}, image()]})
    # computed once per request: the change is not seen again
    assert facts.prompt_tokens == 1000
    assert facts.last_user == "x" * 4000
    assert facts.images is False  # known from the token pass
    assert RequestFacts(c).images is True and RequestFacts(c).last_user == "y"


# --------------------------------------------------------------------------- #
# each condition, matching and not
# --------------------------------------------------------------------------- #


def test_model_globs() -> None:
    r = rule(model=["gpt-4*", "o3"])
    assert r.matches(ctx(model="gpt-4o-mini")) == "model 'gpt-4o-mini'"
    assert r.matches(ctx(model="o3")) is not None
    assert r.matches(ctx(model="o3-mini")) is None
    assert r.matches(ctx(model="claude")) is None
    assert rule(model="smart").matches(ctx()) == "model 'smart'"
    assert rule(model="*").matches(ctx(model="anything/at-all")) is not None


def test_prompt_token_bounds_are_inclusive() -> None:
    big = rule(min_prompt_tokens=1000)
    assert big.matches(ctx("x" * 4000)) == "prompt_tokens 1000 >= 1000"
    assert big.matches(ctx("x" * 3996)) is None
    small = rule(max_prompt_tokens=10)
    assert small.matches(ctx("x" * 40)) == "prompt_tokens 10 <= 10"
    assert small.matches(ctx("x" * 41)) is None
    band = rule(min_prompt_tokens=5, max_prompt_tokens=10)
    assert band.matches(ctx("x" * 30)) == "prompt_tokens 8 >= 5, prompt_tokens 8 <= 10"
    assert band.matches(ctx("x" * 4)) is None
    assert rule(min_prompt_tokens=IMAGE_TOKENS).matches(ctx([{"type": "text", "text": "?"}, image()])) is not None


@pytest.mark.parametrize(
    ("key", "yes", "no", "reason"),
    [
        ("tools", {"tools": TOOLS}, {}, "tools"),
        ("tools", {"functions": [{"name": "f"}]}, {"tools": []}, "tools"),
        ("json", {"response_format": {"type": "json_object"}}, {"response_format": {"type": "text"}},
         "response_format json_object"),
        ("json", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, {},
         "response_format json_schema"),
        ("stream", {"stream": True}, {"stream": False}, "stream"),
    ],
)
def test_boolean_conditions(key: str, yes: dict[str, Any], no: dict[str, Any], reason: str) -> None:
    assert rule(**{key: True}).matches(ctx(**yes)) == reason
    assert rule(**{key: True}).matches(ctx(**no)) is None
    assert rule(**{key: False}).matches(ctx(**no)) is not None
    assert rule(**{key: False}).matches(ctx(**yes)) is None


def test_images_condition() -> None:
    with_image = ctx([{"type": "text", "text": "look"}, image("low")])
    assert rule(images=True).matches(with_image) == "images"
    assert rule(images=True).matches(ctx("no picture here")) is None
    assert rule(images=False).matches(ctx("no picture here")) == "no images"
    assert rule(images=False).matches(with_image) is None


def test_max_tokens_bounds() -> None:
    short = rule(max_max_tokens=256)
    assert short.matches(ctx(max_tokens=100)) == "max_tokens 100 <= 256"
    assert short.matches(ctx(max_completion_tokens=256)) is not None
    assert short.matches(ctx(max_tokens=1000)) is None
    assert short.matches(ctx()) is None  # no limit: matches neither bound
    long = rule(min_max_tokens=4096)
    assert long.matches(ctx(max_completion_tokens=8000, max_tokens=10)) == "max_tokens 8000 >= 4096"
    assert long.matches(ctx(max_tokens=100)) is None
    assert long.matches(ctx()) is None


def test_last_user_regex_is_case_insensitive_and_reads_only_the_last_user_message() -> None:
    r = rule(last_user_regex=r"\btranslate\b")
    assert r.matches(ctx("Please TRANSLATE this")) == r"last user message ~ /\btranslate\b/"
    assert r.matches(ctx([{"type": "text", "text": "translate"}, image("low")])) is not None
    assert r.matches(ctx("translate this", {"role": "assistant", "content": "ok"}, "never mind")) is None
    assert r.matches(ctx({"role": "system", "content": "translate"}, "hello")) is None


def test_system_regex_reads_system_and_developer_messages() -> None:
    r = rule(system_regex="you are a (coder|programmer)")
    assert r.matches(ctx({"role": "system", "content": "You are a Coder."}, "hi")) is not None
    assert r.matches(ctx({"role": "developer", "content": [{"type": "text", "text": "you are a programmer"}]}, "hi"))
    assert r.matches(ctx({"role": "system", "content": "You are a poet."}, "you are a coder")) is None
    assert r.matches(ctx("hi")) is None


def test_keywords_any_case_insensitive_in_last_user_message() -> None:
    r = rule(keywords=["Invoice", "receipt"])
    assert r.matches(ctx("here is my INVOICE")) == "keyword 'invoice'"
    assert r.matches(ctx("a Receipt attached")) == "keyword 'receipt'"
    assert r.matches(ctx("invoice", {"role": "assistant", "content": "ok"}, "thanks")) is None


def test_headers_exact_and_regex() -> None:
    r = rule(headers={"X-Team": "search"})
    assert r.matches(ctx(headers={"x-team": "search"})) == "header x-team: search"
    assert r.matches(ctx(headers={"x-team": "Search"})) is None  # exact values are exact
    assert r.matches(ctx()) is None
    rx = rule(headers={"x-team": "~^(search|ads)$", "x-env": "prod"})
    assert rx.matches(ctx(headers={"x-team": "ADS", "x-env": "prod"})) == "header x-team: ADS, header x-env: prod"
    assert rx.matches(ctx(headers={"x-team": "ads"})) is None  # every header given must match
    assert rx.matches(ctx(headers={"x-team": "adsx", "x-env": "prod"})) is None


def test_metadata_values() -> None:
    r = rule(metadata={"use_case": "batch"})
    assert r.matches(ctx(metadata={"use_case": "batch", "other": "x"})) == "metadata use_case=batch"
    assert r.matches(ctx(metadata={"use_case": "chat"})) is None
    assert r.matches(ctx(metadata="batch")) is None
    assert r.matches(ctx()) is None
    assert rule(metadata={"team": "~^ml-"}).matches(ctx(metadata={"team": "ML-infra"})) is not None


def test_tags_any() -> None:
    r = rule(tags=["batch", "offline"])
    assert r.matches(ctx(tags=["eval", "offline"])) == "tag 'offline'"
    assert r.matches(ctx(tags=["eval"])) is None
    assert r.matches(ctx()) is None


def test_all_conditions_must_hold() -> None:
    r = rule(tools=True, min_prompt_tokens=10, tags=["agent"])
    good = ctx("x" * 80, tools=TOOLS, tags=["agent"])
    assert r.matches(good) == "tools, tag 'agent', prompt_tokens 20 >= 10"
    assert r.matches(ctx("x" * 80, tools=TOOLS)) is None
    assert r.matches(ctx("x" * 8, tools=TOOLS, tags=["agent"])) is None
    assert r.matches(ctx("x" * 80, tags=["agent"])) is None


def test_rules_never_apply_to_embeddings() -> None:
    r = rule(model="*")
    assert r.matches(ctx(endpoint="embeddings", input="hi")) is None
    assert match_first([r], ctx(endpoint="embeddings", input="hi")) is None


# --------------------------------------------------------------------------- #
# first match wins, and the built-in hook
# --------------------------------------------------------------------------- #


def _rules(*tables: dict[str, Any]) -> list[Rule]:
    problems: list[tuple[str, str]] = []
    out = parse_rules(list(tables), problems)
    assert problems == []
    return out


def test_first_matching_rule_wins() -> None:
    rules = _rules(
        {"name": "long", "route": "big", "min_prompt_tokens": 100},
        {"name": "tools", "route": "agents", "tools": True},
        {"name": "any", "route": "default", "model": "*"},
    )
    assert match_first(rules, ctx("x" * 400, tools=TOOLS)) == (rules[0], "prompt_tokens 100 >= 100")
    assert match_first(rules, ctx("short", tools=TOOLS)) == (rules[1], "tools")
    assert match_first(rules, ctx("short"))[0] is rules[2]  # type: ignore[index]
    assert match_first(rules[:2], ctx("short")) is None
    assert match_first([], ctx("short")) is None


def test_hook_returns_a_route_choice_with_the_rule_name() -> None:
    rules = _rules({"name": "long-context", "route": "big", "min_prompt_tokens": 100})
    hook = rules_plugin.select_route
    choice = hook(request=ctx("x" * 500), route=None, routes={}, rules=rules)  # type: ignore[arg-type]
    assert choice == RouteChoice("big", "rule 'long-context': prompt_tokens 125 >= 100")
    assert hook(request=ctx("x"), route=None, routes={}, rules=rules) is None  # type: ignore[arg-type]
    assert hook(request=ctx("x" * 500), route=None, routes={}, rules=[]) is None  # type: ignore[arg-type]
    assert hook.interlock_impl["trylast"] is True  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- #
# end to end: the openai SDK through a gateway, two fake upstreams
# --------------------------------------------------------------------------- #


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    async with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]) as main, FakeOpenAI(models=["gpt-4.1"]) as big:
        yield main, big


def rules_config(main: FakeOpenAI, big: FakeOpenAI) -> str:
    return f"""
[providers.main]
type = "openai"
base_url = "{main.base_url}"
api_key = "sk-main"

[providers.bigp]
type = "openai"
base_url = "{big.base_url}"
api_key = "sk-big"

[routes.smart]
chain = "main/gpt-4o"
[routes.big]
chain = "bigp/gpt-4.1"
[routes.cheap]
chain = "main/gpt-4o-mini"
[routes.agents]
chain = "main/gpt-4o"
[routes.search]
chain = "main/gpt-4o-mini"
[routes.offline]
chain = "main/gpt-4o-mini"

[[rules]]
name = "long-context"
route = "big"
min_prompt_tokens = 2000

[[rules]]
name = "batch"
route = "cheap"
metadata = {{ use_case = "batch" }}

[[rules]]
name = "agents"
route = "agents"
tools = true

[[rules]]
name = "search-team"
route = "search"
headers = {{ x-team = "search" }}

[[rules]]
name = "offline"
route = "offline"
tags = ["offline"]
"""


async def test_requests_are_routed_by_content(fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    main, big = fakes
    async with running_gateway(rules_config(main, big)) as gw:
        c = gw.client

        async def ask(**kwargs: Any) -> tuple[dict[str, str], Any]:
            kwargs.setdefault("messages", [{"role": "user", "content": "hello"}])
            raw = await c.chat.completions.with_raw_response.create(model="smart", **kwargs)
            return dict(raw.headers), gw.log.last

        headers, decision = await ask()
        assert headers["x-interlock-route"] == "smart" and decision.rule is None
        assert decision.route == "smart"

        headers, decision = await ask(messages=[{"role": "user", "content": "word " * 2000}])
        assert headers["x-interlock-route"] == "big"
        assert headers["x-interlock-provider"] == "bigp" and headers["x-interlock-model"] == "gpt-4.1"
        assert decision.route == "big"
        assert decision.rule == "rule 'long-context': prompt_tokens 2500 >= 2000"
        assert big.requests[-1].json["messages"][0]["content"] == "word " * 2000  # the body is untouched
        assert len(big.requests) == 1

        headers, decision = await ask(metadata={"use_case": "batch"}, store=True)
        assert headers["x-interlock-route"] == "cheap" and headers["x-interlock-model"] == "gpt-4o-mini"
        assert decision.rule == "rule 'batch': metadata use_case=batch"
        assert main.requests[-1].json["metadata"] == {"use_case": "batch"}

        headers, decision = await ask(tools=TOOLS)
        assert headers["x-interlock-route"] == "agents"
        assert decision.rule == "rule 'agents': tools"

        headers, decision = await ask(extra_headers={"x-team": "search"})
        assert headers["x-interlock-route"] == "search"
        assert decision.rule == "rule 'search-team': header x-team: search"

        headers, decision = await ask(extra_headers={"x-interlock-tags": "eval, offline"})
        assert headers["x-interlock-route"] == "offline"
        assert decision.rule == "rule 'offline': tag 'offline'" and decision.tags == ["eval", "offline"]

        # first match wins: a long batch request with tools goes to the first rule's route
        headers, decision = await ask(
            messages=[{"role": "user", "content": "word " * 2000}], metadata={"use_case": "batch"}, tools=TOOLS
        )
        assert headers["x-interlock-route"] == "big" and decision.rule.startswith("rule 'long-context'")

        # a stream is routed the same way
        stream = await c.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"x-team": "search"},
        )
        async for _ in stream:
            pass
        assert gw.log.last.route == "search" and gw.log.last.rule == "rule 'search-team': header x-team: search"

        # embeddings are never rerouted
        await c.embeddings.create(model="main/text-embedding-3-small", input="hi", extra_headers={"x-team": "search"})
        assert gw.log.last.rule is None


async def test_a_rule_applies_to_bare_model_names_too(fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    main, big = fakes
    async with running_gateway(rules_config(main, big)) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="main/gpt-4o", messages=[{"role": "user", "content": "hi"}], tools=TOOLS  # type: ignore[arg-type]
        )
        assert raw.headers["x-interlock-route"] == "agents"
        assert gw.log.last.rule == "rule 'agents': tools"


class TeamRouter:
    """A third-party plugin: send the ads team to 'cheap', whatever the rules say."""

    @hookimpl(tryfirst=True)
    def select_route(self, request: RequestContext, routes: Any) -> RouteChoice | None:
        if request.headers.get("x-team") == "ads":
            return RouteChoice("cheap", "ads team budget")
        if request.headers.get("x-team") == "legacy":
            return "smart"  # type: ignore[return-value]  # a bare route name is an answer too
        return None


async def test_a_third_party_plugin_overrides_the_rules(fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    main, big = fakes
    async with running_gateway(rules_config(main, big), extra_plugins=[("acme-team-router", TeamRouter())]) as gw:
        long = [{"role": "user", "content": "word " * 2000}]
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="smart", messages=long, extra_headers={"x-team": "ads"}  # type: ignore[arg-type]
        )
        assert raw.headers["x-interlock-route"] == "cheap"  # not "big": the plugin answered first
        assert gw.log.last.rule == "ads team budget"
        # the plugin keeps the named route: no rule runs, nothing is recorded
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="smart", messages=long, extra_headers={"x-team": "legacy"}  # type: ignore[arg-type]
        )
        assert raw.headers["x-interlock-route"] == "smart" and gw.log.last.rule is None
        # the plugin passes (None): the built-in rules decide
        raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=long)  # type: ignore[arg-type]
        assert raw.headers["x-interlock-route"] == "big"
        assert gw.log.last.rule.startswith("rule 'long-context'")


async def test_disabling_the_builtin_plugin_turns_rules_off(fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    main, big = fakes
    toml = rules_config(main, big) + '\n[plugins]\ndisabled = ["interlock.plugins.rules"]\n'
    async with running_gateway(toml) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": "hi"}], tools=TOOLS  # type: ignore[arg-type]
        )
        assert raw.headers["x-interlock-route"] == "smart" and gw.log.last.rule is None


async def test_an_unknown_rule_route_stops_the_gateway_from_starting(fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    main, big = fakes
    toml = rules_config(main, big) + '\n[[rules]]\nname = "x"\nroute = "nope"\ntools = false\n'
    with pytest.raises(ConfigError, match=r"rules\[5\]\.route: rule 'x' sends requests to 'nope'"):
        async with running_gateway(toml):
            pass


# --------------------------------------------------------------------------- #
# the real console scripts
# --------------------------------------------------------------------------- #


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("interlock")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=60)


STATIC_CONFIG = """
[providers.main]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-main"

[routes.smart]
chain = "main/gpt-4o-mini"
[routes.big]
chain = "main/gpt-4o > main/gpt-4.1"

[[rules]]
name = "long-context"
route = "big"
min_prompt_tokens = 32000

[[rules]]
name = "search-team"
route = "big"
headers = { x-team = "~^search" }
"""


def test_explain_prints_the_matched_rule_and_the_targets(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(STATIC_CONFIG)
    req = tmp_path / "long.json"
    req.write_text(json.dumps({"model": "ignored", "messages": [{"role": "user", "content": "x" * 164_920}]}))
    out = _cli("explain", "smart", "--config", str(cfg), "--request", str(req))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "smart: route 'big', strategy 'ordered'",
        "  rule: long-context (prompt_tokens 41230 >= 32000)",
        "  1. main/gpt-4o  (provider type openai, weight 1)",
        "  2. main/gpt-4.1  (provider type openai, weight 1)",
    ]

    out = _cli("explain", "smart", "--config", str(cfg), "--header", "X-Team: search-infra")
    assert out.returncode == 0, out.stderr
    assert "  rule: search-team (header x-team: search-infra)" in out.stdout.splitlines()

    short = tmp_path / "short.json"
    short.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    out = _cli("explain", "smart", "--config", str(cfg), "--request", str(short))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "smart: route 'smart', strategy 'ordered'",
        "  rule: none changed the route (2 configured)",
        "  1. main/gpt-4o-mini  (provider type openai, weight 1)",
    ]


def test_check_lists_rules_and_reports_a_bad_regex(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(STATIC_CONFIG)
    out = _cli("check", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "rules (first match wins):\n  1. long-context: prompt_tokens >= 32000 -> big\n" in out.stdout
    cfg.write_text(STATIC_CONFIG + '\n[[rules]]\nname = "broken"\nroute = "big"\nlast_user_regex = "(a"\n')
    out = _cli("check", "--config", str(cfg))
    assert out.returncode == 2
    assert "rules[2].last_user_regex: rule 'broken': invalid regex '(a'" in out.stderr
