"""A provider classifies its own failures first; the ``classify_failure`` hook only when it passes."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import openai
import pytest

from interlock import hookimpl
from interlock.core.plugins import make_plugin_manager
from interlock.provider_api import (
    Action,
    Classification,
    FailureClass,
    HttpPool,
    OpenAICompatible,
    Provider,
    ProviderSettings,
    Target,
    UpstreamError,
)
from interlock.testing import FakeOpenAI
from interlock.testing.fake_openai import Fault
from tests.conftest import SECRET, GatewayFactory

HI = [{"role": "user", "content": "hello"}]


class Deterministic500(OpenAICompatible):
    """An upstream whose 500s are the request's fault: its provider says so itself."""

    type_name = "det500"
    display_name = "Deterministic 500s"
    seen: ClassVar[list[int | None]] = []

    def classify(self, error: UpstreamError) -> Classification | None:
        type(self).seen.append(error.status)
        if error.status == 500:
            return Classification(FailureClass.BAD_REQUEST, Action.FAIL)
        return None


class Registrar:
    @hookimpl
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        register(Deterministic500)


class HookRecorder:
    """A third-party ``classify_failure`` that would fall back on everything; records what it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[int | None, str, str]] = []

    @hookimpl(tryfirst=True)
    def classify_failure(self, error: UpstreamError, target: Target, provider_type: str) -> Classification | None:
        self.asked.append((error.status, target.key, provider_type))
        if error.status == 500:
            return Classification(FailureClass.SERVER_ERROR, Action.FALLBACK)
        return None


def config(base_url: str) -> str:
    return f"""
[providers.primary]
type = "det500"
base_url = "{base_url}"
api_key = "{SECRET}"

[providers.backup]
type = "openai"
base_url = "{base_url}"
api_key = "{SECRET}"

[routes.smart]
chain = "primary/gpt-4o > backup/gpt-4o-mini"
"""


@pytest.fixture(autouse=True)
def _fresh_seen() -> None:
    Deterministic500.seen = []


def test_the_base_provider_has_no_verdict_of_its_own() -> None:
    provider = Provider(ProviderSettings(name="p", type="p"), HttpPool())
    assert provider.classify(UpstreamError("boom", kind="http", status=500)) is None


async def test_a_provider_verdict_wins_over_every_hook(fake: FakeOpenAI, make_gateway: GatewayFactory) -> None:
    # without the provider's verdict a 500 falls back (the built-in classifier), and the
    # tryfirst plugin would fall back too: the provider's fail-fast answer must win over both
    hook = HookRecorder()
    gw = await make_gateway(config(fake.base_url), extra_plugins=[("det", Registrar()), ("recorder", hook)])
    fake.add_fault(Fault(status=500, model="gpt-4o"))
    with pytest.raises(openai.APIStatusError) as excinfo:
        await gw.client.chat.completions.create(model="smart", messages=HI)
    assert excinfo.value.response.headers["x-interlock-attempts"] == "1"
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o"], "the fallback target must never be called"
    assert gw.log.last.attempts[0].outcome == "bad_request"
    assert Deterministic500.seen == [500]
    assert hook.asked == [], "no classify_failure hook is asked once the provider has answered"


async def test_a_provider_without_a_verdict_falls_through_to_the_hooks(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    hook = HookRecorder()
    gw = await make_gateway(config(fake.base_url), extra_plugins=[("det", Registrar()), ("recorder", hook)])
    fake.add_fault(Fault(status=503, model="gpt-4o"))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert Deterministic500.seen == [503]
    assert hook.asked == [(503, "primary/gpt-4o", "det500")]
    assert gw.log.last.attempts[0].outcome == "overloaded", "the built-in classifier answered last"


async def test_without_any_plugin_the_builtin_classifier_answers(
    fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(config(fake.base_url), extra_plugins=[("det", Registrar())])
    fake.add_fault(Fault(status=429, model="gpt-4o", retry_after=2))
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HI)
    assert raw.headers["x-interlock-provider"] == "backup"
    assert gw.log.last.attempts[0].outcome == "rate_limited"


def test_only_the_builtin_classifier_implements_the_hook() -> None:
    # providers' own rules live in Provider.classify, so no provider plugin races the
    # third-party classify_failure implementations any more
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    owners = {pm.get_name(impl.plugin) for impl in pm.hook.classify_failure.get_hookimpls()}
    assert owners == {"interlock.plugins.classifier"}
