"""The OpenAI-family providers: class attributes, wire details and quirks, through a real gateway.

Requests go through the gateway with the official ``openai`` SDK as the client. Upstreams are
either the shared OpenAI fake (for ``/v1/...`` shapes) or a tiny recording server defined here,
which captures path, query, headers and JSON and answers with canned OpenAI JSON or SSE.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from aiohttp import web

import interlock
from interlock import hookimpl
from interlock.core import config as config_mod
from interlock.core.config import ConfigError
from interlock.core.gateway import Gateway
from interlock.core.plugins import collect, make_plugin_manager
from interlock.core.types import Decision
from interlock.plugins.providers.azure import Azure
from interlock.plugins.providers.deepseek import DeepSeek
from interlock.plugins.providers.fireworks import Fireworks
from interlock.plugins.providers.gpustack import GPUStack
from interlock.plugins.providers.groq import Groq
from interlock.plugins.providers.mistral import Mistral, tool_call_id
from interlock.plugins.providers.openai import OpenAI
from interlock.core.openai_compatible import OpenAICompatible
from interlock.plugins.providers.openrouter import OpenRouter
from interlock.plugins.providers.perplexity import Perplexity
from interlock.plugins.providers.together import Together
from interlock.plugins.providers.xai import XAI
from interlock.testing import FakeOpenAI
from tests.conftest import SECRET, GatewayFactory

HELLO = [{"role": "user", "content": "hello"}]

# --------------------------------------------------------------------------- #
# a recording upstream
# --------------------------------------------------------------------------- #


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    json: Any


def completion(
    content: str | None = "canned reply",
    *,
    finish: str = "stop",
    usage: dict[str, Any] | None = None,
    message: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    msg = {"role": "assistant", "content": content, **(message or {})}
    return {
        "id": "chatcmpl-rec",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
        "usage": usage
        if usage is not None
        else {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        **extra,
    }


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, *, choices: bool = True, **extra: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "chatcmpl-rec",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else [],
    }
    obj.update(extra)
    return obj


DEFAULT_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "can"}),
    chunk({"content": "ned"}),
    chunk({}, "stop"),
]


@dataclass
class Recorder:
    """Captures every request; answers chat with ``reply`` (JSON) or ``chunks`` (SSE when ``stream``)."""

    requests: list[Seen] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=completion)
    status: int = 200
    chunks: list[dict[str, Any]] = field(default_factory=lambda: list(DEFAULT_CHUNKS))
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last(self) -> Seen:
        return self.requests[-1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Seen(request.method, request.path, dict(request.query), headers, body))
        if request.path.endswith("/embeddings"):
            data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
            usage = {"prompt_tokens": 1, "total_tokens": 1}
            return web.json_response({"object": "list", "data": data, "model": "emb", "usage": usage})
        if isinstance(body, dict) and body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for c in self.chunks:
                await resp.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.json_response(self.reply, status=self.status)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.port = int(runner.addresses[0][1])
    yield rec
    await runner.cleanup()


@pytest.fixture
async def keyed_fake() -> AsyncIterator[FakeOpenAI]:
    """The OpenAI fake, insisting on the configured key as a Bearer token."""
    async with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"], api_key=SECRET) as f:
        yield f


def provider_toml(name: str, ptype: str, base_url: str, extra: str = "") -> str:
    return f'[providers.{name}]\ntype = "{ptype}"\nbase_url = "{base_url}"\napi_key = "{SECRET}"\n{extra}\n'


async def stream_chunks(client: openai.AsyncOpenAI, **kwargs: Any) -> list[Any]:
    stream = await client.chat.completions.create(stream=True, **kwargs)
    return [c async for c in stream]


class DecisionLog:
    """A ``record_decision`` plugin: what the gateway recorded, awaitable."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self._event = asyncio.Event()

    @hookimpl
    def record_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)
        self._event.set()

    async def next(self) -> Decision:
        await asyncio.wait_for(self._event.wait(), 10)
        return self.decisions[-1]


# --------------------------------------------------------------------------- #
# class attributes
# --------------------------------------------------------------------------- #

PROVIDERS: list[tuple[type[OpenAICompatible], str, str, str | None]] = [
    (OpenAI, "openai", "OPENAI_API_KEY", "https://api.openai.com/v1"),
    (Azure, "azure", "AZURE_OPENAI_API_KEY", None),
    (Mistral, "mistral", "MISTRAL_API_KEY", "https://api.mistral.ai/v1"),
    (DeepSeek, "deepseek", "DEEPSEEK_API_KEY", "https://api.deepseek.com/v1"),
    (XAI, "xai", "XAI_API_KEY", "https://api.x.ai/v1"),
    (Perplexity, "perplexity", "PERPLEXITY_API_KEY", "https://api.perplexity.ai"),
    (OpenRouter, "openrouter", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1"),
    (GPUStack, "gpustack", "GPUSTACK_API_KEY", None),
    (Groq, "groq", "GROQ_API_KEY", "https://api.groq.com/openai/v1"),
    (Together, "together", "TOGETHER_API_KEY", "https://api.together.xyz/v1"),
    (Fireworks, "fireworks", "FIREWORKS_API_KEY", "https://api.fireworks.ai/inference/v1"),
]


@pytest.mark.parametrize(
    ("cls", "type_name", "env_key", "base_url"), PROVIDERS, ids=[p[1] for p in PROVIDERS]
)
def test_class_attributes(
    cls: type[OpenAICompatible], type_name: str, env_key: str, base_url: str | None
) -> None:
    assert issubclass(cls, OpenAICompatible)
    assert cls.type_name == type_name
    assert cls.env_key == env_key
    assert cls.default_base_url == base_url
    assert cls.display_name
    assert cls.requires_key is True
    assert cls.requires_base_url is (base_url is None)


#: the native-protocol providers (their own tests live in test_provider_<name>.py)
NATIVE = ("anthropic", "gemini", "vertex", "bedrock", "cohere", "ollama", "replicate")


def test_the_builtin_registry_has_exactly_these_providers() -> None:
    registry = collect(make_plugin_manager(load_entrypoints=False, environ={}))
    openai_family = {type_name: cls for cls, type_name, _, _ in PROVIDERS}
    assert {k: v for k, v in registry.providers.items() if k in openai_family} == openai_family
    assert sorted(registry.providers) == sorted([*openai_family, *NATIVE])
    assert len(registry.providers) == 18


def test_embeddings_support_flags() -> None:
    unsupported = {cls.type_name for cls, *_ in PROVIDERS if not cls.supports_embeddings}
    assert unsupported == {"deepseek", "perplexity", "groq"}


def test_env_key_aliases_and_base_url_variables() -> None:
    assert Perplexity.env_key_aliases == ("PPLX_API_KEY",)
    assert Together.env_key_aliases == ("TOGETHERAI_API_KEY",)
    assert Fireworks.env_key_aliases == ("FIREWORKS_AI_API_KEY",)
    assert Perplexity.key_from_env({"PPLX_API_KEY": "p"}) == "p"
    assert Perplexity.key_from_env({"PERPLEXITY_API_KEY": "a", "PPLX_API_KEY": "b"}) == "a"
    assert OpenAI.env_base_url == "OPENAI_BASE_URL"
    assert Azure.env_base_url == "AZURE_OPENAI_ENDPOINT"
    assert GPUStack.env_base_url == "GPUSTACK_BASE_URL"


def test_describe_never_shows_the_key(tmp_path: Any) -> None:
    cfg = config_mod.parse({"providers": {"openai": {"api_key": SECRET}}}, environ={})
    gw = Gateway(cfg, load_entrypoints=False, environ={})
    d = gw.providers["openai"].describe()
    assert d["key"] == "set" and SECRET not in repr(d)


# --------------------------------------------------------------------------- #
# every Bearer-auth provider reaches an OpenAI-shaped upstream
# --------------------------------------------------------------------------- #

BEARER_TYPES = [t for _, t, _, _ in PROVIDERS if t != "azure"]


@pytest.mark.parametrize("ptype", BEARER_TYPES)
async def test_chat_reaches_the_upstream_with_a_bearer_key(
    ptype: str, keyed_fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("up", ptype, keyed_fake.base_url))
    raw = await gw.client.chat.completions.with_raw_response.create(model="up/gpt-4o", messages=HELLO)
    result = raw.parse()
    assert result.choices[0].message.content == "Fake reply to: hello"
    assert raw.headers["x-interlock-provider"] == "up"
    seen = keyed_fake.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.json["model"] == "gpt-4o"
    assert seen.json["messages"] == HELLO
    assert "api-key" not in seen.headers


@pytest.mark.parametrize("ptype", BEARER_TYPES)
async def test_stream_reaches_the_upstream(
    ptype: str, keyed_fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("up", ptype, keyed_fake.base_url))
    chunks = await stream_chunks(gw.client, model="up/gpt-4o", messages=HELLO)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Fake reply to: hello"
    seen = keyed_fake.requests[-1]
    assert seen.json["stream"] is True
    assert seen.headers["accept"] == "text/event-stream"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("ptype", [t for t in BEARER_TYPES if t not in ("deepseek", "perplexity", "groq")])
async def test_embeddings_reach_the_upstream(
    ptype: str, keyed_fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("up", ptype, keyed_fake.base_url))
    result = await gw.client.embeddings.create(model="up/text-embedding-3-small", input="hello")
    assert len(result.data) == 1
    seen = keyed_fake.requests[-1]
    assert seen.path == "/v1/embeddings"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("ptype", ["deepseek", "perplexity", "groq"])
async def test_embeddings_unsupported_is_a_404(
    ptype: str, keyed_fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("up", ptype, keyed_fake.base_url))
    with pytest.raises(openai.NotFoundError):
        await gw.client.embeddings.create(model="up/text-embedding-3-small", input="hello")
    assert keyed_fake.requests == []


async def test_configured_headers_are_sent(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        provider_toml("up", "groq", recorder.base_url, 'headers = { "X-Team" = "search" }')
    )
    await gw.client.chat.completions.create(model="up/llama-3.3-70b-versatile", messages=HELLO)
    assert recorder.last.headers["x-team"] == "search"
    assert recorder.last.path == "/chat/completions"


async def test_upstream_requests_name_the_gateway_unless_configured_otherwise(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("up", "groq", recorder.base_url))
    await gw.client.chat.completions.create(model="up/llama-3.3-70b-versatile", messages=HELLO)
    assert recorder.last.headers["user-agent"] == f"interlock/{interlock.__version__}"  # not aiohttp's

    gw = await make_gateway(
        provider_toml("up", "groq", recorder.base_url, 'headers = { "User-Agent" = "search-bot/2" }')
    )
    await gw.client.chat.completions.create(model="up/llama-3.3-70b-versatile", messages=HELLO)
    assert recorder.last.headers["user-agent"] == "search-bot/2"


# --------------------------------------------------------------------------- #
# OpenAI
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("model", "renamed"),
    [
        ("o1", True),
        ("o1-mini", True),
        ("o3-mini", True),
        ("o4-mini-2025-04-16", True),
        ("gpt-5", True),
        ("gpt-5-mini", True),
        ("gpt-4o", False),
        ("gpt-4.1-mini", False),
        ("chatgpt-4o-latest", False),
    ],
)
async def test_openai_renames_max_tokens_for_reasoning_models_only(
    model: str, renamed: bool, recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("openai", "openai", recorder.base_url + "/v1"))
    await gw.client.chat.completions.create(model=model, messages=HELLO, max_tokens=50)
    sent = recorder.last.json
    assert recorder.last.path == "/v1/chat/completions"
    assert sent["model"] == model
    if renamed:
        assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    else:
        assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent


async def test_openai_keeps_an_explicit_max_completion_tokens(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("openai", "openai", recorder.base_url + "/v1"))
    await gw.client.chat.completions.create(
        model="o3", messages=HELLO, max_tokens=50, max_completion_tokens=70
    )
    assert recorder.last.json["max_completion_tokens"] == 70


async def test_openai_organization_and_project_headers(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        provider_toml(
            "openai", "openai", recorder.base_url + "/v1", 'organization = "org-1"\nproject = "proj-2"'
        )
    )
    await gw.client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert recorder.last.headers["openai-organization"] == "org-1"
    assert recorder.last.headers["openai-project"] == "proj-2"


async def test_unknown_parameters_pass_through(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(provider_toml("openai", "openai", recorder.base_url + "/v1"))
    await gw.client.chat.completions.create(
        model="gpt-4o", messages=HELLO, extra_body={"vendor_knob": {"a": [1, 2]}}, temperature=0.5
    )
    assert recorder.last.json["vendor_knob"] == {"a": [1, 2]}
    assert recorder.last.json["temperature"] == 0.5


# --------------------------------------------------------------------------- #
# Azure
# --------------------------------------------------------------------------- #

AZURE_DEPLOYMENTS = 'deployments = { "gpt-4o" = "prod-4o" }'


async def test_azure_deployment_url_and_api_key_header(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("az", "azure", recorder.base_url, AZURE_DEPLOYMENTS))
    result = await gw.client.chat.completions.create(model="az/gpt-4o", messages=HELLO)
    assert result.choices[0].message.content == "canned reply"
    seen = recorder.last
    assert seen.method == "POST"
    assert seen.path == "/openai/deployments/prod-4o/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == SECRET
    assert "authorization" not in seen.headers
    assert seen.json["model"] == "prod-4o"


async def test_azure_unmapped_model_is_its_own_deployment(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("az", "azure", recorder.base_url + "/openai/", AZURE_DEPLOYMENTS))
    await gw.client.chat.completions.create(model="az/gpt-4o-mini", messages=HELLO)
    assert recorder.last.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert recorder.last.json["model"] == "gpt-4o-mini"


async def test_azure_custom_api_version(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        provider_toml(
            "az", "azure", recorder.base_url, AZURE_DEPLOYMENTS + '\napi_version = "2025-01-01-preview"'
        )
    )
    await gw.client.chat.completions.create(model="az/gpt-4o", messages=HELLO)
    assert recorder.last.query == {"api-version": "2025-01-01-preview"}


@pytest.mark.parametrize("suffix", ["", "/openai/v1", "/openai/v1/"])
async def test_azure_v1_api(suffix: str, recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        provider_toml("az", "azure", recorder.base_url + suffix, AZURE_DEPLOYMENTS + '\napi_version = "v1"')
    )
    await gw.client.chat.completions.create(model="az/gpt-4o", messages=HELLO)
    seen = recorder.last
    assert seen.path == "/openai/v1/chat/completions"
    assert seen.query == {}
    assert seen.json["model"] == "prod-4o"
    assert seen.headers["api-key"] == SECRET


async def test_azure_stream_and_embeddings(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        provider_toml(
            "az", "azure", recorder.base_url, 'deployments = { "gpt-4o" = "prod-4o", "emb" = "prod-emb" }'
        )
    )
    chunks = await stream_chunks(gw.client, model="az/gpt-4o", messages=HELLO)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "canned"
    assert recorder.last.path == "/openai/deployments/prod-4o/chat/completions"
    assert recorder.last.query == {"api-version": "2024-10-21"}
    assert recorder.last.json["stream_options"] == {"include_usage": True}
    await gw.client.embeddings.create(model="az/emb", input="x")
    assert recorder.last.path == "/openai/deployments/prod-emb/embeddings"
    assert recorder.last.query == {"api-version": "2024-10-21"}
    assert recorder.last.headers["api-key"] == SECRET


async def test_azure_v1_embeddings_name_the_deployment(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        provider_toml(
            "az", "azure", recorder.base_url, 'deployments = { "emb" = "prod-emb" }\napi_version = "v1"'
        )
    )
    await gw.client.embeddings.create(model="az/emb", input="x")
    assert recorder.last.path == "/openai/v1/embeddings"
    assert recorder.last.query == {}
    assert recorder.last.json["model"] == "prod-emb"


def test_azure_deployment_names_are_url_quoted() -> None:
    cfg = config_mod.parse(
        {
            "providers": {
                "az": {
                    "type": "azure",
                    "api_key": "k",
                    "base_url": "https://r.openai.azure.com",
                    "deployments": {"m": "a b/c"},
                }
            }
        },
        environ={},
    )
    gw = Gateway(cfg, load_entrypoints=False, environ={})
    url = gw.providers["az"].url("/chat/completions", "m")  # type: ignore[attr-defined]
    assert (
        url
        == "https://r.openai.azure.com/openai/deployments/a%20b%2Fc/chat/completions?api-version=2024-10-21"
    )


# --------------------------------------------------------------------------- #
# Mistral
# --------------------------------------------------------------------------- #

TOOLS = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
]


async def test_mistral_parameter_renames(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(provider_toml("mistral", "mistral", recorder.base_url + "/v1"))
    await gw.client.chat.completions.create(
        model="mistral-large-latest",
        messages=HELLO,
        seed=42,
        max_completion_tokens=64,
        tools=TOOLS,
        tool_choice="required",
    )
    sent = recorder.last.json
    assert recorder.last.path == "/v1/chat/completions"
    assert recorder.last.headers["authorization"] == f"Bearer {SECRET}"
    assert sent["random_seed"] == 42 and "seed" not in sent
    assert sent["max_tokens"] == 64 and "max_completion_tokens" not in sent
    assert sent["tool_choice"] == "any"


async def test_mistral_keeps_other_tool_choices(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(provider_toml("mistral", "mistral", recorder.base_url + "/v1"))
    await gw.client.chat.completions.create(
        model="mistral/m", messages=HELLO, tools=TOOLS, tool_choice="auto"
    )
    assert recorder.last.json["tool_choice"] == "auto"
    assert "random_seed" not in recorder.last.json


async def test_mistral_rewrites_tool_call_ids_consistently(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("mistral", "mistral", recorder.base_url + "/v1"))

    def call(cid: str) -> dict[str, Any]:
        return {"id": cid, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}

    messages: list[Any] = [
        {"role": "user", "content": "look things up"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("call_abc123"), call("toolu_01XYZ"), call("abcDEF123")],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": "one"},
        {"role": "tool", "tool_call_id": "toolu_01XYZ", "content": "two"},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": "three"},
    ]
    await gw.client.chat.completions.create(
        model="mistral/mistral-small-latest", messages=messages, tools=TOOLS
    )
    sent = recorder.last.json["messages"]
    ids = [tc["id"] for tc in sent[1]["tool_calls"]]
    for new in ids:
        assert len(new) == 9 and new.isalnum() and new.isascii()
    assert ids[2] == "abcDEF123"  # already valid: kept
    assert len(set(ids)) == 3
    assert [m["tool_call_id"] for m in sent[2:]] == ids
    assert ids[0] == tool_call_id("call_abc123")  # deterministic across requests
    assert sent[1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": "{}"}
    assert sent[0] == {"role": "user", "content": "look things up"}
    assert messages[1]["tool_calls"][0]["id"] == "call_abc123"  # the client's objects are not modified


async def test_mistral_stream_sends_no_stream_options(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.chunks = [
        chunk({"role": "assistant", "content": "cut"}),
        chunk({}, "model_length", usage={"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}),
    ]
    gw = await make_gateway(provider_toml("mistral", "mistral", recorder.base_url + "/v1"))
    chunks = await stream_chunks(
        gw.client,
        model="mistral/mistral-small-latest",
        messages=HELLO,
        stream_options={"include_usage": True},
    )
    assert "stream_options" not in recorder.last.json
    assert recorder.last.json["stream"] is True
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5


async def test_mistral_maps_model_length(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    recorder.reply = completion("cut off", finish="model_length")
    gw = await make_gateway(provider_toml("mistral", "mistral", recorder.base_url + "/v1"))
    result = await gw.client.chat.completions.create(model="mistral/mistral-small-latest", messages=HELLO)
    assert result.choices[0].finish_reason == "length"


# --------------------------------------------------------------------------- #
# DeepSeek
# --------------------------------------------------------------------------- #


async def test_deepseek_keeps_reasoning_content_and_strips_it_from_input(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.reply = completion("42", message={"reasoning_content": "6 times 7"})
    gw = await make_gateway(provider_toml("deepseek", "deepseek", recorder.base_url + "/v1"))
    messages: list[Any] = [
        {"role": "user", "content": "what is 6x7?"},
        {"role": "assistant", "content": "42", "reasoning_content": "multiply"},
        {"role": "user", "content": "and 6x8?"},
    ]
    result = await gw.client.chat.completions.create(model="deepseek-reasoner", messages=messages)
    assert result.choices[0].message.reasoning_content == "6 times 7"  # type: ignore[attr-defined]
    sent = recorder.last.json["messages"]
    assert sent == [
        {"role": "user", "content": "what is 6x7?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "and 6x8?"},
    ]
    assert recorder.last.json["model"] == "deepseek-reasoner"


async def test_deepseek_stream_keeps_reasoning_content(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.chunks = [
        chunk({"role": "assistant", "content": None, "reasoning_content": "thinking"}),
        chunk({"content": "answer"}),
        chunk({}, "insufficient_system_resource"),
    ]
    gw = await make_gateway(provider_toml("deepseek", "deepseek", recorder.base_url + "/v1"))
    chunks = await stream_chunks(gw.client, model="deepseek/deepseek-reasoner", messages=HELLO)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].reasoning_content == "thinking"  # type: ignore[attr-defined]
    assert deltas[1].content == "answer"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


async def test_deepseek_maps_insufficient_system_resource(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.reply = completion("partial", finish="insufficient_system_resource")
    gw = await make_gateway(provider_toml("deepseek", "deepseek", recorder.base_url + "/v1"))
    result = await gw.client.chat.completions.create(model="deepseek-chat", messages=HELLO)
    assert result.choices[0].finish_reason == "length"


# --------------------------------------------------------------------------- #
# xAI
# --------------------------------------------------------------------------- #

XAI_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 15,
    "completion_tokens_details": {"reasoning_tokens": 20},
}


async def test_xai_adds_reasoning_tokens_to_completion_tokens(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.reply = completion(
        "hi", usage=dict(XAI_USAGE, completion_tokens_details={"reasoning_tokens": 20})
    )
    log = DecisionLog()
    gw = await make_gateway(
        provider_toml("xai", "xai", recorder.base_url + "/v1"), extra_plugins=[("test-decisions", log)]
    )
    result = await gw.client.chat.completions.create(model="grok-4", messages=HELLO)
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        10,
        25,
        35,
    )
    decision = await log.next()
    assert decision.usage is not None
    assert (decision.usage.completion_tokens, decision.usage.reasoning_tokens) == (25, 20)


async def test_xai_without_reasoning_tokens_is_unchanged(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("xai", "xai", recorder.base_url + "/v1"))
    result = await gw.client.chat.completions.create(model="grok-4", messages=HELLO)
    assert result.usage is not None and (result.usage.completion_tokens, result.usage.total_tokens) == (2, 5)


async def test_xai_stream_usage_chunk_includes_reasoning(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.chunks = [
        chunk({"role": "assistant", "content": "hi"}),
        chunk({}, "stop"),
        chunk(choices=False, usage=dict(XAI_USAGE, completion_tokens_details={"reasoning_tokens": 20})),
    ]
    gw = await make_gateway(provider_toml("xai", "xai", recorder.base_url + "/v1"))
    chunks = await stream_chunks(
        gw.client, model="xai/grok-4", messages=HELLO, stream_options={"include_usage": True}
    )
    assert recorder.last.json["stream_options"] == {"include_usage": True}
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None and (usage.completion_tokens, usage.total_tokens) == (25, 35)


# --------------------------------------------------------------------------- #
# Perplexity
# --------------------------------------------------------------------------- #

CITATIONS = ["https://example.com/a", "https://example.com/b"]
SEARCH_RESULTS = [{"title": "A", "url": "https://example.com/a", "date": "2025-01-01"}]


async def test_perplexity_posts_at_the_root_and_keeps_citations(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.reply = completion("sourced", citations=CITATIONS, search_results=SEARCH_RESULTS)
    gw = await make_gateway(provider_toml("pplx", "perplexity", recorder.base_url))
    result = await gw.client.chat.completions.create(model="sonar-pro", messages=HELLO)
    assert recorder.last.path == "/chat/completions"
    assert recorder.last.headers["authorization"] == f"Bearer {SECRET}"
    assert result.citations == CITATIONS  # type: ignore[attr-defined]
    assert result.search_results == SEARCH_RESULTS  # type: ignore[attr-defined]


async def test_perplexity_stream_keeps_citations(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    recorder.chunks = [
        chunk({"role": "assistant", "content": "sourced"}, citations=CITATIONS),
        chunk({}, "stop", citations=CITATIONS, search_results=SEARCH_RESULTS),
    ]
    gw = await make_gateway(provider_toml("pplx", "perplexity", recorder.base_url))
    chunks = await stream_chunks(gw.client, model="pplx/sonar", messages=HELLO)
    assert recorder.last.path == "/chat/completions"
    assert all(c.citations == CITATIONS for c in chunks)  # type: ignore[attr-defined]
    assert chunks[-1].search_results == SEARCH_RESULTS  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- #
# OpenRouter
# --------------------------------------------------------------------------- #


async def test_openrouter_attribution_headers(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        provider_toml(
            "or",
            "openrouter",
            recorder.base_url + "/api/v1",
            'app_url = "https://app.example.com"\napp_name = "Interlock Tests"',
        )
    )
    await gw.client.chat.completions.create(model="openrouter/anthropic/claude-sonnet-4.5", messages=HELLO)
    seen = recorder.last
    assert seen.path == "/api/v1/chat/completions"
    assert seen.headers["http-referer"] == "https://app.example.com"
    assert seen.headers["x-title"] == "Interlock Tests"
    assert seen.json["model"] == "anthropic/claude-sonnet-4.5"


async def test_openrouter_without_attribution(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(provider_toml("or", "openrouter", recorder.base_url + "/api/v1"))
    await gw.client.chat.completions.create(model="or/openai/gpt-4o", messages=HELLO)
    assert "http-referer" not in recorder.last.headers and "x-title" not in recorder.last.headers


@pytest.mark.parametrize(
    ("error", "exc_type", "status"),
    [
        ({"code": 502, "message": "Provider returned error"}, openai.APIStatusError, 502),
        ({"code": 429, "message": "Rate limit exceeded upstream"}, openai.RateLimitError, 429),
        ({"message": "Something odd"}, openai.APIStatusError, 502),
    ],
)
async def test_openrouter_http_200_error_body_is_a_failure(
    error: dict[str, Any],
    exc_type: type[Exception],
    status: int,
    recorder: Recorder,
    make_gateway: GatewayFactory,
) -> None:
    recorder.reply = {"error": error}
    gw = await make_gateway(provider_toml("or", "openrouter", recorder.base_url + "/api/v1"))
    with pytest.raises(exc_type) as info:
        await gw.client.chat.completions.create(model="or/openai/gpt-4o", messages=HELLO)
    assert isinstance(info.value, openai.APIStatusError) and info.value.status_code == status
    assert error["message"] in str(info.value)


async def test_openrouter_http_200_error_falls_back(
    recorder: Recorder, fake: FakeOpenAI, make_gateway: GatewayFactory
) -> None:
    recorder.reply = {"error": {"code": 502, "message": "Provider returned error"}}
    gw = await make_gateway(
        provider_toml("or", "openrouter", recorder.base_url + "/api/v1")
        + provider_toml("openai", "openai", fake.base_url)
        + '[routes.smart]\nchain = "or/openai/gpt-4o > openai/gpt-4o"\n'
    )
    raw = await gw.client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.parse().choices[0].message.content == "Fake reply to: hello"
    assert raw.headers["x-interlock-provider"] == "openai"
    assert raw.headers["x-interlock-fallback"] == "true"
    assert raw.headers["x-interlock-attempts"] == "2"


# --------------------------------------------------------------------------- #
# Groq, Together, GPUStack, Fireworks
# --------------------------------------------------------------------------- #


async def test_groq_stream_usage_from_x_groq(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    groq_usage = {"queue_time": 0.01, "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    recorder.chunks = [
        chunk({"role": "assistant", "content": "fast"}),
        chunk({}, "stop", x_groq={"id": "req_1", "usage": groq_usage}),
    ]
    log = DecisionLog()
    gw = await make_gateway(
        provider_toml("groq", "groq", recorder.base_url + "/openai/v1"),
        extra_plugins=[("test-decisions", log)],
    )
    chunks = await stream_chunks(gw.client, model="llama-3.3-70b-versatile", messages=HELLO)
    assert recorder.last.path == "/openai/v1/chat/completions"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "fast"
    decision = await log.next()
    assert decision.provider == "groq"
    assert decision.usage is not None
    assert (decision.usage.prompt_tokens, decision.usage.completion_tokens) == (7, 3)


async def test_groq_standard_usage_still_wins(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    log = DecisionLog()
    gw = await make_gateway(
        provider_toml("groq", "groq", recorder.base_url + "/openai/v1"),
        extra_plugins=[("test-decisions", log)],
    )
    await gw.client.chat.completions.create(model="groq/llama-3.1-8b-instant", messages=HELLO)
    decision = await log.next()
    assert decision.usage is not None and decision.usage.total_tokens == 5


async def test_together_maps_eos_to_stop(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    recorder.reply = completion("done", finish="eos")
    recorder.chunks = [chunk({"role": "assistant", "content": "done"}), chunk({}, "eos")]
    gw = await make_gateway(provider_toml("together", "together", recorder.base_url + "/v1"))
    result = await gw.client.chat.completions.create(
        model="together/meta-llama/Llama-3.3-70B-Instruct-Turbo", messages=HELLO
    )
    assert result.choices[0].finish_reason == "stop"
    assert recorder.last.json["model"] == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    chunks = await stream_chunks(
        gw.client, model="together/meta-llama/Llama-3.3-70B-Instruct-Turbo", messages=HELLO
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, "stop"]


def test_gpustack_requires_a_base_url() -> None:
    cfg = config_mod.parse({"providers": {"gs": {"type": "gpustack", "api_key": "k"}}}, environ={})
    with pytest.raises(ConfigError) as info:
        Gateway(cfg, load_entrypoints=False, environ={})
    problems = dict(info.value.problems)
    assert list(problems) == ["providers.gs.base_url"]
    assert "GPUSTACK_BASE_URL" in problems["providers.gs.base_url"]


async def test_gpustack_uses_its_base_url(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(provider_toml("gs", "gpustack", recorder.base_url + "/v1-openai"))
    await gw.client.chat.completions.create(model="gs/qwen3-8b", messages=HELLO)
    assert recorder.last.path == "/v1-openai/chat/completions"
    assert recorder.last.json["model"] == "qwen3-8b"


async def test_fireworks_model_ids_are_detected_and_sent_verbatim(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(provider_toml("fw", "fireworks", recorder.base_url + "/inference/v1"))
    model = "accounts/fireworks/models/gpt-oss-120b"
    raw = await gw.client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    assert raw.headers["x-interlock-provider"] == "fw"
    assert recorder.last.path == "/inference/v1/chat/completions"
    assert recorder.last.json["model"] == model
    assert recorder.last.headers["authorization"] == f"Bearer {SECRET}"


def test_default_base_urls_are_used_without_base_url() -> None:
    env = {
        f"{t.upper()}_API_KEY": "k"
        for t in (
            "openai",
            "mistral",
            "deepseek",
            "xai",
            "perplexity",
            "openrouter",
            "groq",
            "together",
            "fireworks",
        )
    }
    gw = Gateway(config_mod.load(None, environ=env), load_entrypoints=False, environ=env)
    got = {name: p.base_url for name, p in gw.providers.items()}
    assert got == {t: base for _, t, _, base in PROVIDERS if base is not None}


# --------------------------------------------------------------------------- #
# upstream errors keep their status and retry hints
# --------------------------------------------------------------------------- #


async def test_upstream_error_status_reaches_the_client(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    recorder.status = 400
    recorder.reply = {
        "error": {
            "message": "Invalid value for 'temperature'",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }
    gw = await make_gateway(provider_toml("mistral", "mistral", recorder.base_url + "/v1"))
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client.chat.completions.create(model="mistral/mistral-small-latest", messages=HELLO)
    assert "Invalid value for 'temperature'" in str(info.value)
    assert SECRET not in str(info.value)
