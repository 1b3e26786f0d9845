"""The real ``interlock serve`` console script, as a subprocess, driven with the sync ``openai`` SDK.

The fake upstream runs in a thread (``run_in_thread``) so these tests stay synchronous.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from interlock.testing import FakeOpenAI, Fault
from tests.conftest import SECRET, ServeProcess, openai_config

Serve = Callable[..., ServeProcess]
HELLO: list[Any] = [{"role": "user", "content": "hello from a subprocess test"}]
REPLY = "Fake reply to: hello from a subprocess test"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]).run_in_thread() as fake:
        yield fake


@pytest.fixture
def config_file(tmp_path: Path, upstream: FakeOpenAI) -> Path:
    path = tmp_path / "interlock.toml"
    path.write_text(openai_config(upstream.base_url))
    return path


def client_for(sp: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sp.base_url, api_key="client-key", max_retries=0)


def stop(sp: ServeProcess) -> str:
    """Stop the server gracefully and return everything it printed."""
    sp.proc.send_signal(signal.SIGINT)
    sp.proc.wait(timeout=10)
    return sp.output()


def chat_models(fake: FakeOpenAI) -> list[Any]:
    return [r.json.get("model") for r in fake.requests if r.path.endswith("/chat/completions")]


def test_serve_with_config_round_trip(serve: Serve, config_file: Path, upstream: FakeOpenAI) -> None:
    sp = serve("--config", str(config_file))
    with client_for(sp) as client:
        raw = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.parse().choices[0].message.content == REPLY
        assert raw.headers["x-interlock-provider"] == "openai"
        assert raw.headers["x-interlock-model"] == "gpt-4o"
        assert raw.headers["x-interlock-attempts"] == "1"
        assert raw.headers["x-request-id"]

        with client.chat.completions.create(
            model="smart", messages=HELLO, stream=True, stream_options={"include_usage": True}
        ) as stream:
            chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

        # fallback works through the real server too
        upstream.add_fault(Fault(status=503, model="gpt-4o"))
        raw = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert raw.headers["x-interlock-provider"] == "backup"
        assert raw.headers["x-interlock-attempts"] == "2"
        assert raw.headers["x-interlock-fallback"] == "true"

        models = {m.id for m in client.models.list().data}
        assert "smart" in models

    assert chat_models(upstream) == ["gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in upstream.requests)
    output = stop(sp)
    assert f"config {config_file}" in output
    assert "listening on http://127.0.0.1:" in output
    assert SECRET not in output


def test_serve_mid_stream_failure_is_an_explicit_error(
    serve: Serve, config_file: Path, upstream: FakeOpenAI
) -> None:
    sp = serve("--config", str(config_file))
    upstream.add_fault(Fault(cut_after=2))
    with client_for(sp) as client:
        with client.chat.completions.create(model="smart", messages=HELLO, stream=True) as stream:
            got: list[str] = []
            with pytest.raises(openai.APIError):
                for chunk in stream:
                    got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(got) and "".join(got) != REPLY
    assert chat_models(upstream) == ["gpt-4o"]


def test_serve_embedded_defaults_from_env(serve: Serve, upstream: FakeOpenAI) -> None:
    sp = serve(env={"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": upstream.base_url})
    with client_for(sp) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
        assert raw.parse().choices[0].message.content == REPLY
        assert raw.headers["x-interlock-provider"] == "openai"
        assert raw.headers["x-interlock-model"] == "gpt-4o"

        with client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True) as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == REPLY

        embedding = client.embeddings.create(model="text-embedding-3-small", input="hi")
        assert len(embedding.data[0].embedding) == 8

        with pytest.raises(openai.NotFoundError) as exc:
            client.chat.completions.create(model="mistral-large-latest", messages=HELLO)
        assert "MISTRAL_API_KEY" in exc.value.message

    assert upstream.requests and all(
        r.headers["authorization"] == f"Bearer {SECRET}" for r in upstream.requests
    )
    output = stop(sp)
    assert "embedded defaults" in output
    assert "openai (openai)" in output
    assert SECRET not in output


def test_serve_binds_loopback_only(serve: Serve, config_file: Path) -> None:
    sp = serve("--config", str(config_file))
    port = urlsplit(sp.base_url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    if sys.platform == "linux":  # all of 127/8 is local on Linux: a 0.0.0.0 bind would accept here
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
    assert "listening on http://127.0.0.1:" in sp.output()


def test_serve_never_logs_the_key(serve: Serve, config_file: Path, upstream: FakeOpenAI) -> None:
    """A failing request whose upstream error quotes the key: the log tells the story, not the key."""
    sp = serve("--config", str(config_file))
    echo = {
        "error": {
            "message": f"Incorrect API key provided: {SECRET}",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    upstream.add_fault(Fault(status=401, body=echo, times=None))
    with client_for(sp) as client:
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as exc:
                client.chat.completions.create(model="smart", messages=HELLO, stream=stream)
            assert exc.value.status_code == 502
            assert SECRET not in exc.value.message
            assert SECRET not in exc.value.response.text
            assert SECRET not in json.dumps(dict(exc.value.response.headers))
    root = sp.base_url.removesuffix("/v1")
    for path in ("/health/providers", "/-/plugins"):
        with urllib.request.urlopen(root + path, timeout=10) as resp:
            assert resp.status == 200
            assert SECRET not in resp.read().decode()

    output = stop(sp)
    assert "Incorrect API key provided" in output  # the failure was logged ...
    assert SECRET not in output  # ... without the key
    assert SECRET[8:] not in output


def test_serve_bad_config_exits_with_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.openai]\nbase_url = "ftp://nope"\napi_key = "x"\n')
    exe = Path(sys.executable).with_name("interlock")
    result = subprocess.run(
        [str(exe), "serve", "--config", str(bad), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "providers.openai.base_url" in result.stderr
