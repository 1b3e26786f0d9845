#!/usr/bin/env python3
"""End-to-end check of interlock's OpenTelemetry traces against a real backend: Arize Phoenix.

One command (run it with the repository's virtual environment, which has interlock, its test
extras and the ``openai`` SDK):

    .venv/bin/python scripts/phoenix_e2e.py

What it does, all on loopback, every wait bounded:

1. creates ``.cache/phoenix-venv`` (outside the package) and ``pip install arize-phoenix==<pin>``
   there, unless that version is already installed;
2. starts ``phoenix serve`` on free ports (HTTP UI + OTLP/HTTP, OTLP/gRPC) with a throw-away
   working directory;
3. starts two fake upstreams from :mod:`interlock.testing` (``FakeOpenAI`` as ``primary``,
   ``FakeAnthropic`` as ``backup``), with a fault that makes every ``gpt-4o`` request on the
   primary fail with 503;
4. starts ``interlock serve`` from this repository with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at
   Phoenix and a route ``smart = primary/gpt-4o > backup/claude-haiku-4-5``;
5. sends traffic with the official ``openai`` SDK: a non-streaming and a streaming request that
   both fall back, and one direct request;
6. reads the spans back through Phoenix's REST API (``GET /v1/projects/{project}/spans``) and
   asserts the span tree, the GenAI attributes and the routing attributes;
7. prints a summary, stops everything and exits non-zero on any failure.

It is a manual / optional check, not part of CI (the Phoenix install is ~850 MB and takes minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Verified to install cleanly from PyPI and to ingest gen_ai.* spans.
PHOENIX_VERSION = "20.26.1"
DEFAULT_VENV = REPO / ".cache" / "phoenix-venv"
PROJECT = "interlock-e2e"

PRIMARY_MODEL = "gpt-4o"
BACKUP_MODEL = "claude-haiku-4-5"
ROUTE = "smart"

# Names this script expects; they mirror interlock/core/telemetry/ (span names in request_trace.py and
# runtime.py, event names in names.py; the helpers own them).
ROUTE_SPAN_PREFIX = "route "
ATTEMPT_SPAN_PREFIX = "chat "
SERVER_SPAN = "POST /v1/chat/completions"
FALLBACK_EVENT = "interlock.fallback"


class Failure(Exception):
    """An assertion about the exported spans did not hold."""


def log(msg: str) -> None:
    print(f"[phoenix-e2e] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5,
             alive: Callable[[], bool] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise Failure(f"{what}: the process exited while waiting")
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling: keep the last error for the message
            last = exc
        time.sleep(interval)
    raise Failure(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def http_get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs only
        return json.loads(resp.read().decode())


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


# -- 1. Phoenix's own virtual environment ----------------------------------------------------------

def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_phoenix(venv: Path) -> str | None:
    py = venv_python(venv)
    if not py.exists():
        return None
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or None if out.returncode == 0 else None


def ensure_phoenix(venv: Path, version: str, install_timeout: float) -> Path:
    have = installed_phoenix(venv)
    if have == version:
        log(f"arize-phoenix {version} already installed in {venv}")
    else:
        if not venv_python(venv).exists():
            log(f"creating virtual environment {venv}")
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        log(f"installing arize-phoenix=={version} into {venv} (several minutes, ~850 MB; "
            f"log: {venv.parent / 'phoenix-install.log'})")
        t0 = time.monotonic()
        with open(venv.parent / "phoenix-install.log", "w") as out:
            proc = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "-q", f"arize-phoenix=={version}"],
                                  stdout=out, stderr=subprocess.STDOUT, timeout=install_timeout)
        if proc.returncode != 0:
            raise Failure(f"pip install arize-phoenix=={version} failed (see {venv.parent / 'phoenix-install.log'})")
        log(f"installed in {time.monotonic() - t0:.0f}s")
    exe = venv / "bin" / "phoenix"
    if not exe.exists():
        raise Failure(f"{exe} is missing after the install")
    return exe


# -- processes --------------------------------------------------------------------------------------

@contextlib.contextmanager
def process(name: str, cmd: list[str], env: dict[str, str], logfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group, output to ``logfile``; SIGTERM (then SIGKILL) on exit."""
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(logfile.parent))
        log(f"started {name} (pid {proc.pid}), log {logfile}")
        try:
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            log(f"stopped {name} (exit {proc.returncode})")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- 6. reading spans back ----------------------------------------------------------------------------

def fetch_spans(base: str, project: str) -> list[dict[str, Any]]:
    """Every span of ``project`` through Phoenix's REST API, following the pagination cursor."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(50):  # bounded: 50 pages x 1000 spans is far more than this script sends
        query = {"limit": "1000"}
        if cursor:
            query["cursor"] = cursor
        url = f"{base}/v1/projects/{urllib.parse.quote(project, safe='')}/spans?{urllib.parse.urlencode(query)}"
        page = http_get_json(url)
        spans.extend(page.get("data") or [])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return spans


def span_id(span: dict[str, Any]) -> str:
    return str((span.get("context") or {}).get("span_id") or span.get("span_id") or span.get("id"))


def trace_id(span: dict[str, Any]) -> str:
    return str((span.get("context") or {}).get("trace_id") or span.get("trace_id"))


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes as a flat ``{"a.b.c": value}`` mapping, whatever nesting Phoenix returns."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value

    walk("", span.get("attributes") or {})
    return out


def truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


class Checks:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        (self.passed if ok else self.failed).append(what)
        log(("ok    " if ok else "FAIL  ") + what)
        return ok


def assert_traces(spans: list[dict[str, Any]], expected_fallback_traces: int) -> Checks:
    c = Checks()
    by_id = {span_id(s): s for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        if s.get("parent_id"):
            children.setdefault(str(s["parent_id"]), []).append(s)

    routes = [s for s in spans if str(s.get("name", "")).startswith(ROUTE_SPAN_PREFIX)]
    attempts = [s for s in spans if str(s.get("name", "")).startswith(ATTEMPT_SPAN_PREFIX)]
    c.check(bool(routes), f"routing spans named '{ROUTE_SPAN_PREFIX}<route>' arrived ({len(routes)})")
    c.check(bool(attempts), f"attempt spans named '{ATTEMPT_SPAN_PREFIX}<model>' arrived ({len(attempts)})")

    fallback_routes = [s for s in routes if truthy(attrs(s).get("interlock.fallback_used"))]
    c.check(len(fallback_routes) >= expected_fallback_traces,
            f"interlock.fallback_used = true on >= {expected_fallback_traces} routing spans ({len(fallback_routes)})")

    for i, route in enumerate(fallback_routes[:expected_fallback_traces]):
        a = attrs(route)
        tag = f"fallback trace {i + 1} ({trace_id(route)[:12]})"
        c.check(route.get("name") == f"{ROUTE_SPAN_PREFIX}{ROUTE}", f"{tag}: routing span name {route.get('name')!r}")
        c.check(a.get("interlock.route") == ROUTE, f"{tag}: interlock.route = {a.get('interlock.route')!r}")
        c.check(bool(a.get("interlock.strategy")), f"{tag}: interlock.strategy = {a.get('interlock.strategy')!r}")
        cands = a.get("interlock.candidates")
        c.check(isinstance(cands, list | tuple) and len(cands) >= 2,
                f"{tag}: interlock.candidates lists the chain ({cands!r})")
        c.check(_int(a.get("interlock.attempts")) >= 2, f"{tag}: interlock.attempts = {a.get('interlock.attempts')!r}")
        c.check("interlock.cost_usd" in a, f"{tag}: interlock.cost_usd present ({a.get('interlock.cost_usd')!r})")
        c.check("interlock.cost_delta_usd" in a,
                f"{tag}: interlock.cost_delta_usd present ({a.get('interlock.cost_delta_usd')!r})")
        events = [e.get("name") for e in route.get("events") or []]
        c.check(FALLBACK_EVENT in events, f"{tag}: span event {FALLBACK_EVENT!r} on the routing span ({events})")

        # parent: the SERVER span of the HTTP request
        parent = by_id.get(str(route.get("parent_id")))
        c.check(parent is not None and parent.get("name") == SERVER_SPAN,
                f"{tag}: routing span's parent is the server span {SERVER_SPAN!r} ({parent and parent.get('name')!r})")
        if parent is not None:
            c.check(not parent.get("parent_id"), f"{tag}: the server span is the trace's root")
            c.check(attrs(parent).get("http.response.status_code") == 200,
                    f"{tag}: server span http.response.status_code = {attrs(parent).get('http.response.status_code')!r}")

        tries = sorted((s for s in children.get(span_id(route), []) if s.get("name", "").startswith(ATTEMPT_SPAN_PREFIX)),
                       key=lambda s: str(s.get("start_time")))
        c.check(len(tries) >= 2, f"{tag}: >= 2 attempt spans under the routing span ({[s.get('name') for s in tries]})")
        if len(tries) < 2:
            continue
        failed, ok = tries[0], tries[-1]
        fa, oa = attrs(failed), attrs(ok)
        c.check(failed.get("name") == f"{ATTEMPT_SPAN_PREFIX}{PRIMARY_MODEL}", f"{tag}: failed attempt {failed.get('name')!r}")
        c.check(bool(fa.get("error.type")), f"{tag}: error.type on the failed attempt = {fa.get('error.type')!r}")
        c.check(str(failed.get("status_code", "")).upper() == "ERROR",
                f"{tag}: failed attempt status {failed.get('status_code')!r}")
        c.check(fa.get("gen_ai.provider.name") == "openai",
                f"{tag}: failed attempt gen_ai.provider.name = {fa.get('gen_ai.provider.name')!r}")
        c.check(_int(fa.get("interlock.attempt.n")) == 1, f"{tag}: failed attempt interlock.attempt.n = {fa.get('interlock.attempt.n')!r}")

        c.check(ok.get("name") == f"{ATTEMPT_SPAN_PREFIX}{BACKUP_MODEL}", f"{tag}: successful attempt {ok.get('name')!r}")
        # Phoenix's REST API does not return the OTel span kind; it maps gen_ai.* spans to its LLM kind
        c.check(ok.get("span_kind") == "LLM" and failed.get("span_kind") == "LLM",
                f"{tag}: Phoenix classified both attempts as LLM spans ({failed.get('span_kind')}, {ok.get('span_kind')})")
        c.check(bool(oa.get("server.address")) and _int(oa.get("server.port")) > 0,
                f"{tag}: server.address/port = {oa.get('server.address')!r}:{oa.get('server.port')!r}")
        c.check(bool(oa.get("gen_ai.response.finish_reasons")),
                f"{tag}: gen_ai.response.finish_reasons = {oa.get('gen_ai.response.finish_reasons')!r}")
        c.check(oa.get("gen_ai.operation.name") == "chat", f"{tag}: gen_ai.operation.name = {oa.get('gen_ai.operation.name')!r}")
        c.check(oa.get("gen_ai.provider.name") == "anthropic",
                f"{tag}: gen_ai.provider.name = {oa.get('gen_ai.provider.name')!r}")
        c.check(oa.get("gen_ai.request.model") == BACKUP_MODEL, f"{tag}: gen_ai.request.model = {oa.get('gen_ai.request.model')!r}")
        c.check(bool(oa.get("gen_ai.response.model")), f"{tag}: gen_ai.response.model = {oa.get('gen_ai.response.model')!r}")
        c.check(_int(oa.get("gen_ai.usage.input_tokens")) > 0,
                f"{tag}: gen_ai.usage.input_tokens = {oa.get('gen_ai.usage.input_tokens')!r}")
        c.check(_int(oa.get("gen_ai.usage.output_tokens")) > 0,
                f"{tag}: gen_ai.usage.output_tokens = {oa.get('gen_ai.usage.output_tokens')!r}")
        c.check("error.type" not in oa, f"{tag}: no error.type on the successful attempt")
        c.check("interlock.cost_usd" in oa, f"{tag}: interlock.cost_usd on the successful attempt ({oa.get('interlock.cost_usd')!r})")
        c.check(_int(oa.get("interlock.attempt.n")) >= 2, f"{tag}: successful interlock.attempt.n = {oa.get('interlock.attempt.n')!r}")
    streamed = [s for s in attempts if truthy(attrs(s).get("gen_ai.request.stream"))]
    c.check(bool(streamed), f"a streamed attempt carries gen_ai.request.stream = true ({len(streamed)})")
    ttft = [attrs(s).get("gen_ai.response.time_to_first_chunk") for s in streamed if "error.type" not in attrs(s)]
    c.check(any(isinstance(v, int | float) and v > 0 for v in ttft),
            f"the successful streamed attempt carries gen_ai.response.time_to_first_chunk ({ttft})")
    return c


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


# -- main -----------------------------------------------------------------------------------------

def gateway_config(primary_url: str, backup_url: str) -> str:
    return f"""\
[server]
host = "127.0.0.1"

[providers.primary]
type = "openai"
base_url = "{primary_url}"
api_key = "e2e-primary-key"
models = ["{PRIMARY_MODEL}"]

[providers.backup]
type = "anthropic"
base_url = "{backup_url}"
api_key = "e2e-backup-key"
models = ["{BACKUP_MODEL}"]

[routes.{ROUTE}]
chain = "primary/{PRIMARY_MODEL} > backup/{BACKUP_MODEL}"

[logging]
level = "info"
"""


def send_traffic(base_url: str) -> int:
    """Drive the gateway with the official SDK; returns the number of fallbacks the gateway reported."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", timeout=30, max_retries=0)
    messages = [{"role": "user", "content": "Say hello to the trace backend."}]
    fallbacks = 0

    raw = client.chat.completions.with_raw_response.create(model=ROUTE, messages=messages)  # type: ignore[arg-type]
    reply = raw.parse()
    log(f"non-stream: provider={raw.headers.get('x-interlock-provider')} model={raw.headers.get('x-interlock-model')} "
        f"attempts={raw.headers.get('x-interlock-attempts')} fallback={raw.headers.get('x-interlock-fallback')} "
        f"text={reply.choices[0].message.content!r}")
    if not reply.choices[0].message.content:
        raise Failure("non-streaming reply is empty")
    fallbacks += raw.headers.get("x-interlock-fallback", "").lower() in ("true", "1", "yes")

    with client.chat.completions.with_streaming_response.create(
        model=ROUTE, messages=messages, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
    ) as resp:
        headers = resp.headers
        text = "".join(
            (chunk.choices[0].delta.content or "") for chunk in resp.parse() if chunk.choices
        )
    log(f"stream: provider={headers.get('x-interlock-provider')} attempts={headers.get('x-interlock-attempts')} "
        f"fallback={headers.get('x-interlock-fallback')} text={text!r}")
    if not text:
        raise Failure("streamed reply is empty")
    fallbacks += headers.get("x-interlock-fallback", "").lower() in ("true", "1", "yes")

    direct = client.chat.completions.create(model=f"backup/{BACKUP_MODEL}", messages=messages)  # type: ignore[arg-type]
    log(f"direct: model={direct.model} text={direct.choices[0].message.content!r}")
    return fallbacks


def run(args: argparse.Namespace) -> int:
    from interlock.testing import FakeAnthropic, FakeOpenAI, Fault

    phoenix = ensure_phoenix(Path(args.venv), args.phoenix_version, args.install_timeout)
    workdir = Path(tempfile.mkdtemp(prefix="interlock-phoenix-e2e-"))
    log(f"working directory {workdir}")
    ok = False
    try:
        http_port, grpc_port, gw_port = free_port(), free_port(), free_port()
        phoenix_url = f"http://127.0.0.1:{http_port}"
        penv = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
        penv.update({
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(http_port),
            "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_WORKING_DIR": str(workdir / "phoenix"),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        })
        (workdir / "phoenix").mkdir()
        with contextlib.ExitStack() as stack:
            ph = stack.enter_context(process("phoenix", [str(phoenix), "serve"], penv, workdir / "phoenix.log"))
            try:
                wait_for("Phoenix to answer", lambda: http_ok(f"{phoenix_url}/healthz"), args.startup_timeout,
                         interval=1.0, alive=lambda: ph.poll() is None)
            except Failure:
                log("phoenix log tail:\n" + tail(workdir / "phoenix.log"))
                raise
            log(f"Phoenix is up at {phoenix_url} (OTLP/HTTP {phoenix_url}/v1/traces, OTLP/gRPC 127.0.0.1:{grpc_port})")

            primary = stack.enter_context(FakeOpenAI([PRIMARY_MODEL]).run_in_thread())
            backup = stack.enter_context(FakeAnthropic([BACKUP_MODEL]).run_in_thread())
            primary.add_fault(Fault(status=503, model=PRIMARY_MODEL, times=None))  # the first target always fails
            cfg = workdir / "interlock.toml"
            cfg.write_text(gateway_config(primary.base_url, backup.url))

            genv = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            endpoint = phoenix_url if args.protocol == "http/protobuf" else f"http://127.0.0.1:{grpc_port}"
            genv.update({
                "OTEL_SERVICE_NAME": "interlock",
                "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT},deployment.environment.name=e2e",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": args.protocol,
                "OTEL_BSP_SCHEDULE_DELAY": "500",  # export within half a second
                "OTEL_METRICS_EXPORTER": "none",  # Phoenix ingests traces only
            })
            interlock = REPO / ".venv" / "bin" / "interlock"
            if not interlock.exists():
                interlock = Path(sys.executable).parent / "interlock"
            gw = stack.enter_context(process(
                "interlock", [str(interlock), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(gw_port)],
                genv, workdir / "interlock.log"))
            gw_url = f"http://127.0.0.1:{gw_port}"
            try:
                wait_for("the gateway to answer", lambda: http_ok(f"{gw_url}/health"), 60, alive=lambda: gw.poll() is None)
            except Failure:
                log("interlock log tail:\n" + tail(workdir / "interlock.log"))
                raise

            fallbacks = send_traffic(f"{gw_url}/v1")
            if fallbacks < 2:
                raise Failure(f"the gateway reported {fallbacks} fallbacks (x-interlock-fallback), expected 2")

            project = PROJECT

            def complete() -> list[dict[str, Any]] | None:
                nonlocal project
                for name in (PROJECT, "default"):
                    try:
                        spans = fetch_spans(phoenix_url, name)
                    except urllib.error.HTTPError as exc:
                        if exc.code == 404:
                            continue
                        raise
                    routes = [s for s in spans if str(s.get("name", "")).startswith(ROUTE_SPAN_PREFIX)
                              and truthy(attrs(s).get("interlock.fallback_used"))]
                    attempts = [s for s in spans if str(s.get("name", "")).startswith(ATTEMPT_SPAN_PREFIX)]
                    if len(routes) >= 2 and len(attempts) >= 5:
                        project = name
                        return spans
                return None

            try:
                spans = wait_for("the spans to arrive in Phoenix", complete, args.span_timeout, interval=1.0)
            except Failure:
                for name in (PROJECT, "default"):
                    with contextlib.suppress(Exception):
                        got = fetch_spans(phoenix_url, name)
                        log(f"project {name!r}: {len(got)} spans: {sorted({str(s.get('name')) for s in got})}")
                log("interlock log tail:\n" + tail(workdir / "interlock.log"))
                raise
            if project != PROJECT:
                log(f"note: spans landed in Phoenix project {project!r}, not {PROJECT!r} "
                    "(the resource attribute openinference.project.name was not applied)")
            if args.dump:
                Path(args.dump).write_text(json.dumps(spans, indent=2, default=str))
                log(f"wrote {len(spans)} spans to {args.dump}")

            checks = assert_traces(spans, expected_fallback_traces=2)
            names: dict[str, int] = {}
            for s in spans:
                names[str(s.get("name"))] = names.get(str(s.get("name")), 0) + 1
            log("summary:")
            log(f"  Phoenix {args.phoenix_version} at {phoenix_url}, project {project!r}, protocol {args.protocol}")
            log(f"  {len(spans)} spans in {len({trace_id(s) for s in spans})} traces: "
                + ", ".join(f"{n} x{k}" for n, k in sorted(names.items())))
            log(f"  {len(checks.passed)} checks passed, {len(checks.failed)} failed")
            for f in checks.failed:
                log(f"  FAILED: {f}")
            ok = not checks.failed
        return 0 if ok else 1
    finally:
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir} (logs: phoenix.log, interlock.log)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", default=str(DEFAULT_VENV), help="Phoenix's virtual environment (default: %(default)s)")
    p.add_argument("--phoenix-version", default=PHOENIX_VERSION, help="arize-phoenix version (default: %(default)s)")
    p.add_argument("--protocol", choices=["http/protobuf", "grpc"], default="http/protobuf",
                   help="OTLP protocol the gateway exports with (default: %(default)s)")
    p.add_argument("--install-timeout", type=float, default=1800, help="seconds for pip install (default: %(default)s)")
    p.add_argument("--startup-timeout", type=float, default=180, help="seconds for Phoenix to start (default: %(default)s)")
    p.add_argument("--span-timeout", type=float, default=60, help="seconds for the spans to arrive (default: %(default)s)")
    p.add_argument("--dump", help="write the spans Phoenix returned to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, Phoenix database)")
    args = p.parse_args()
    try:
        return run(args)
    except Failure as exc:
        log(f"FAILED: {exc}")
        return 1
    except subprocess.TimeoutExpired as exc:
        log(f"FAILED: timed out: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
