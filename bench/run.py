#!/usr/bin/env python3
"""Side-by-side benchmark: interlock vs the LiteLLM proxy vs direct-to-upstream.

    .venv/bin/python bench/run.py            # full run (~25-40 min), writes docs/benchmarks.md
    .venv/bin/python bench/run.py --quick    # smoke run (~6-10 min): fewer requests, says so

What it does, in one run and on loopback only:

1. installs wrk (Debian package) if missing, and LiteLLM (``litellm[proxy]==1.108.7``) into its
   own venv ``.cache/bench/litellm-venv`` (reused when present; never a dependency of interlock);
2. starts, each in its own process group: the fake upstream (bench/upstream.py: an instant port
   and a 20 ms port, OpenAI and Anthropic wire), an OTLP/HTTP sink (bench/otlp_sink.py), interlock
   (``interlock serve`` with the SQLite ledger on and spans exported in batches to the sink) and
   the LiteLLM proxy (``--num_workers 1``, no database, telemetry off), and the bare aiohttp proxy
   bench/floor_proxy.py as a reference (``--skip-floor`` to leave it out); the gateways are pinned to
   CPU 0, the upstream, the sink and the load generators to the other CPU(s) (``--no-pin`` to turn off);
3. measures, alternating systems within every test and rotating the order every round
   (direct, floor, interlock, litellm / floor, interlock, litellm, direct / ...), so drift hits all
   equally (the floor only in the latency and instant-throughput tests):
   latency at concurrency 1 (wrk), throughput at 50 connections with the instant and the 20 ms
   upstream (wrk), and 20 concurrent streams of 20 content chunks, OpenAI pass-through and
   Anthropic-translated (bench/streamload.py); then a soak at 50 connections up to 100k
   requests per gateway (10k with --quick), sampling RSS along the way;
   and the two other client doors, each translated and passed through, non-stream and stream:
   Anthropic Messages (``POST /v1/messages`` onto an OpenAI-wire upstream, and onto an
   Anthropic-wire one) and OpenAI Responses (``POST /v1/responses`` onto a chat-only upstream, and
   onto an upstream that answers ``/v1/responses``), against LiteLLM's own ``/v1/messages`` and
   ``/v1/responses``; ``--doors chat,messages,responses`` picks which doors are measured;
4. writes docs/benchmarks.md (machine, versions, method, results with ratios, the performance bars and why)
   and the raw results as JSON under .cache/bench/.

Every process it starts is stopped on exit, on failure and on Ctrl-C. Numbers from a machine that
is busy with other work are smoke numbers only: the run waits (``--quiet-wait``, 180 s) for the
machine to be under 5% busy before it starts, and the report records how busy it was, the CPU time
other processes used during the run and the hypervisor's steal.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = REPO / ".cache" / "bench"
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = CACHE / "litellm-venv"
VENV_PY = REPO / ".venv" / "bin" / "python"
INTERLOCK_BIN = REPO / ".venv" / "bin" / "interlock"

OPENAI_MODEL = "gpt-4o-mini"  # priced in both gateways' tables, so cost is computed per request
#: the LiteLLM provider prefix of the chat-only upstream (bench-chatonly): one whose Responses and
#: Messages calls LiteLLM bridges to Chat Completions (with its openai/ and hosted_vllm/ providers it
#: sends both to the upstream's /v1/responses instead)
LITELLM_CHAT_ONLY = "custom_openai"
ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"
CHUNKS = 20  # content chunks per stream (+ role, finish, usage and [DONE] events: 24 on the wire)

# --- telemetry switch ---------------------------------------------------------------------------
# interlock's OpenTelemetry export (core/telemetry/, issue 6) reads the standard OTEL_* variables;
# they are set below so that spans go in batches (BatchSpanProcessor) over OTLP/http to
# bench/otlp_sink.py; metrics export is off (OTEL_METRICS_EXPORTER=none; the bar is about spans).
# A [telemetry] table put here is appended to the generated config verbatim and wins over the
# variables (e.g. 'sample_ratio = 0.1'). The report says how many spans the sink received: 0 means
# no span was exported, and the observability bar is then reported as not met.
INTERLOCK_TELEMETRY_TOML = ""
# -------------------------------------------------------------------------------------------------

#: "floor" is bench/floor_proxy.py, a bare aiohttp proxy: what any aiohttp gateway costs at least
#: (measured in the latency and instant-throughput tests only)
SYSTEMS = ("direct", "floor", "interlock", "litellm")

#: the client doors the benchmark can measure (``--doors``): Chat Completions (the original tests,
#: soak included), Anthropic Messages and OpenAI Responses
DOORS = ("chat", "messages", "responses")
#: the scenarios of the Messages and Responses doors: (door, how the gateway serves it, the route)
DOOR_SCENARIOS = {
    "messages_translated": ("messages", "translated to a Chat Completions upstream", "bench-chatonly"),
    "messages_native": ("messages", "passed through to an Anthropic-wire upstream", "bench-anthropic"),
    "responses_translated": ("responses", "translated to a chat-only upstream", "bench-chatonly"),
    "responses_native": ("responses", "passed through to an upstream serving /v1/responses", "bench-instant"),
}
#: what the Messages door's clients send besides the body (the Anthropic SDKs' headers)
MESSAGES_HEADERS = {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# process management


class Procs:
    """Processes this script started (each in its own session); all stopped on exit."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, argv: list[str], *, log_path: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None, cpus: set[int] | None = None) -> subprocess.Popen:
        out = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True, preexec_fn=preexec)
        out.close()
        self.procs[name] = proc
        self.logs[name] = log_path
        log(f"started {name} (pid {proc.pid}); log {log_path}")
        return proc

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        """SIGINT (graceful: interlock flushes its ledger), then SIGTERM, then SIGKILL, to the group."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        # children that outlived their leader (the group id is the leader's pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=5.0)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.logs[name].read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}; last log lines:\n{tail}")


PROCS = Procs()


def _on_signal(signum: int, frame: Any) -> None:
    log(f"signal {signum}: stopping everything")
    PROCS.stop_all()
    sys.exit(128 + signum)


# ------------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_ready(name: str, url: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        PROCS.check_alive()
        with contextlib.suppress(OSError):
            if http("GET", url, timeout=2.0)[0] == 200:
                return time.monotonic() - t0
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s ({url}); see {PROCS.logs.get(name)}")


def wait_logged(name: str, path: Path, text: str, timeout: float) -> float:
    """Seconds until ``text`` appears in the process's log (``interlock serve --workers``: all workers listen)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        PROCS.check_alive()
        if text in path.read_text(errors="replace"):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise RuntimeError(f"{name}: no {text!r} after {timeout:.0f} s; see {path}")


def start_redis(workdir: Path, port: int, cpus: set[int] | None) -> str:
    """A redis-server for ``--workers N`` (interlock's shared [store]), no persistence; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--workers N > 1 needs redis-server for interlock's [store] (apt-get install redis-server)")
    PROCS.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(workdir)], log_path=workdir / "redis.log", cwd=workdir, cpus=cpus)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    raise RuntimeError(f"redis-server not ready on port {port}; see {workdir / 'redis.log'}")


def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of pid, and their sums over its process tree, in MB (1e6 bytes)."""
    total_rss = total_hwm = 0.0
    main: dict[str, float] = {}
    for p in proc_tree(pid):
        with contextlib.suppress(OSError):
            fields = {}
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    fields[key] = int(value.split()[0]) * 1024 / 1e6
            total_rss += fields.get("VmRSS", 0.0)
            total_hwm += fields.get("VmHWM", 0.0)
            if p == pid:
                main = fields
    return {"rss": round(main.get("VmRSS", 0.0), 1), "hwm": round(main.get("VmHWM", 0.0), 1),
            "tree_rss": round(total_rss, 1), "tree_hwm": round(total_hwm, 1), "tree_procs": len(proc_tree(pid))}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes (and their trees), in seconds."""
    total = 0
    for pid in pids:
        for p in proc_tree(pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def quiesce(pids: list[int], limit: float = 60.0) -> float:
    """Wait until the processes use < 5 % CPU over 0.5 s (a gateway may still be working through
    requests a load generator abandoned, or flushing); returns the seconds waited."""
    t0 = time.monotonic()
    last = cpu_seconds(pids)
    while time.monotonic() - t0 < limit:
        time.sleep(0.5)
        now = cpu_seconds(pids)
        if now - last < 0.025:
            break
        last = now
    return time.monotonic() - t0


def cpu_jiffies() -> dict[str, int]:
    """Machine-wide CPU time from /proc/stat's ``cpu`` line: busy (all but idle and iowait), steal, total."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])  # guest time is already counted in user
    return {"busy": total - idle, "steal": steal, "total": total}


QUIET_BUSY_PCT = 5.0  # a machine busier than this before the start is flagged
QUIET_STEAL_PCT = 2.0  # ...and so is a run during which the hypervisor stole this much CPU time
QUIET_WINDOW_S = 2.0


def wait_for_quiet(limit: float, window: float = QUIET_WINDOW_S, threshold: float = QUIET_BUSY_PCT) -> dict[str, float]:
    """Before anything starts: wait (up to ``limit`` s) until the machine is < ``threshold`` % busy
    over ``window`` s. Work left over from a test run or a build lands in the first systems measured
    and makes a run unrepeatable; the load average cannot tell (it decays over minutes after the
    work is gone). Returns the last window's busy percentage and the seconds waited."""
    t0 = time.monotonic()
    while True:
        a = cpu_jiffies()
        time.sleep(window)
        b = cpu_jiffies()
        busy = 100.0 * (b["busy"] - a["busy"]) / max(1, b["total"] - a["total"])
        waited = time.monotonic() - t0
        if busy < threshold or waited >= limit:
            return {"busy_pct": round(busy, 1), "waited_s": round(waited, 1)}
        log(f"the machine is {busy:.0f}% busy; waiting for it to calm down (up to {limit:.0f} s)")


def pip_version(python: Path, dist: str) -> str:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "not installed"


# ------------------------------------------------------------------------------------------------
# setup


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk missing: apt-get install -y wrk")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=True)
        wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk is required: install it (Debian/Ubuntu: apt-get install wrk) and re-run")
    return wrk


def ensure_litellm() -> Path:
    py = LITELLM_VENV / "bin" / "python"
    if py.exists() and pip_version(py, "litellm") == LITELLM_VERSION and (LITELLM_VENV / "bin" / "litellm").exists():
        log(f"reusing {LITELLM_VENV} (litellm {LITELLM_VERSION})")
        return LITELLM_VENV / "bin" / "litellm"
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (takes minutes the first time)")
    CACHE.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        subprocess.run([sys.executable if not VENV_PY.exists() else _base_python(), "-m", "venv", str(LITELLM_VENV)],
                       check=True)
    logf = CACHE / "litellm-install.log"
    with open(logf, "wb") as out:
        rc = subprocess.run([str(py), "-m", "pip", "install", f"litellm[proxy]=={LITELLM_VERSION}"],
                            stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"installing litellm failed (rc {rc}); see {logf}")
    return LITELLM_VENV / "bin" / "litellm"


def _base_python() -> str:
    """The interpreter the project venv was made from (so the LiteLLM venv uses the same Python)."""
    cfg = (REPO / ".venv" / "pyvenv.cfg").read_text()
    for line in cfg.splitlines():
        if line.startswith("executable"):
            return line.split("=", 1)[1].strip()
    return sys.executable


# ------------------------------------------------------------------------------------------------
# configs


def clean_env() -> dict[str, str]:
    """This process's environment without what would configure a gateway behind the benchmark's back."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "LITELLM_", "OPENAI_", "ANTHROPIC_", "INTERLOCK_", "DATABASE_URL"))}


def interlock_env(otlp_port: int | None) -> dict[str, str]:
    """interlock's environment: spans in batches over OTLP/http to the sink on ``otlp_port`` (None: no spans)."""
    env = {**clean_env(), "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
           "OTEL_SERVICE_NAME": "interlock-bench", "OTEL_BSP_SCHEDULE_DELAY": "1000"}
    if otlp_port is None:
        env["OTEL_TRACES_EXPORTER"] = "none"
    else:
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_EXPORTER": "otlp"})
    return env


def start_upstream_and_sink(workdir: Path, ports: dict[str, int], cpus: set[int] | None) -> None:
    """The fake upstream (instant and 20 ms ports) and the OTLP sink, started and answering."""
    PROCS.start("upstream", [str(VENV_PY), str(BENCH / "upstream.py"), "--port", f"{ports['up0']}:0",
                             "--port", f"{ports['up20']}:20", "--chunks", str(CHUNKS)],
                log_path=workdir / "upstream.log", cpus=cpus)
    PROCS.start("otlp", [str(VENV_PY), str(BENCH / "otlp_sink.py"), "--port", str(ports["otlp"]), "--idle"],
                log_path=workdir / "otlp.log", cpus=cpus)
    wait_ready("upstream", f"http://127.0.0.1:{ports['up0']}/health", 30)
    wait_ready("otlp", f"http://127.0.0.1:{ports['otlp']}/stats", 30)


def interlock_config(workdir: Path, port: int, up0: int, up20: int, *, ledger: bool = True,
                     doors: tuple[str, ...] = ("chat",), store_url: str | None = None) -> Path:
    # the translated scenarios of the Messages and Responses doors go to an OpenAI-wire instance that
    # takes neither natively (responses = false: the upstream is treated as Chat Completions only)
    chat_only = f"""
[providers.upchat]
type = "openai"
base_url = "http://127.0.0.1:{up0}/v1"
api_key = "sk-bench"
{"responses = false" if "responses" in doors else ""}

[routes.bench-chatonly]
chain = "upchat/{OPENAI_MODEL}"
retries = 0
""" if {"messages", "responses"} & set(doors) else ""
    # --workers N > 1: the workers share breakers, positions and counters through Redis
    store = f'\n[store]\nurl = "{store_url}"\n' if store_url else ""
    text = f"""# generated by bench/run.py
[server]
host = "127.0.0.1"
port = {port}

[database]
url = "sqlite+aiosqlite:///{workdir / 'ledger.db'}"

[exporters.ledger]
enabled = {"true" if ledger else "false"}

[logging]
level = "warning"
decisions = false

[providers.up]
type = "openai"
base_url = "http://127.0.0.1:{up0}/v1"
api_key = "sk-bench"

[providers.up20]
type = "openai"
base_url = "http://127.0.0.1:{up20}/v1"
api_key = "sk-bench"

[providers.anth]
type = "anthropic"
base_url = "http://127.0.0.1:{up0}"
api_key = "sk-bench"

# routes: the client's model name goes through route resolution, as in production
[routes.bench-instant]
chain = "up/{OPENAI_MODEL}"
retries = 0

[routes.bench-slow]
chain = "up20/{OPENAI_MODEL}"
retries = 0

[routes.bench-anthropic]
chain = "anth/{ANTHROPIC_MODEL}"
retries = 0
{chat_only}{store}{INTERLOCK_TELEMETRY_TOML}
"""
    path = workdir / "interlock.toml"
    path.write_text(text)
    return path


def litellm_config(workdir: Path, up0: int, up20: int) -> Path:
    text = f"""# generated by bench/run.py
model_list:
  - model_name: bench-instant
    litellm_params: {{model: openai/{OPENAI_MODEL}, api_base: "http://127.0.0.1:{up0}/v1", api_key: sk-bench}}
  - model_name: bench-slow
    litellm_params: {{model: openai/{OPENAI_MODEL}, api_base: "http://127.0.0.1:{up20}/v1", api_key: sk-bench}}
  - model_name: bench-anthropic
    litellm_params: {{model: anthropic/{ANTHROPIC_MODEL}, api_base: "http://127.0.0.1:{up0}", api_key: sk-bench}}
  - model_name: bench-chatonly
    litellm_params: {{model: {LITELLM_CHAT_ONLY}/{OPENAI_MODEL}, api_base: "http://127.0.0.1:{up0}/v1", api_key: sk-bench}}
router_settings:
  num_retries: 0
litellm_settings:
  telemetry: false
  num_retries: 0
  request_timeout: 60
general_settings: {{}}
"""
    path = workdir / "litellm.yaml"
    path.write_text(text)
    return path


def chat_body(model: str, stream: bool) -> str:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say hello in twenty words."}],
                            "max_tokens": 64}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def anthropic_body(stream: bool, model: str = ANTHROPIC_MODEL) -> str:
    body: dict[str, Any] = {"model": model, "max_tokens": 64,
                            "messages": [{"role": "user", "content": "Say hello in twenty words."}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def responses_body(stream: bool, model: str = OPENAI_MODEL) -> str:
    body: dict[str, Any] = {"model": model, "input": "Say hello in twenty words.", "max_output_tokens": 64}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class DoorRequest:
    """One request of a Messages or Responses scenario: where, what, and how its stream is read."""

    url: str
    body: str
    wire: str  # "messages" or "responses" (bench/streamload.py --wire)

    @property
    def headers(self) -> dict[str, str]:
        return MESSAGES_HEADERS if self.wire == "messages" else {}


# ------------------------------------------------------------------------------------------------
# measurement


@dataclass
class Target:
    name: str
    base: str  # http://127.0.0.1:PORT
    pid: int | None  # process whose RSS is tracked (None: not a gateway)
    served: int = 0
    rss_samples: list[dict[str, Any]] = field(default_factory=list)
    tree: bool = False  # --workers N > 1: memory is the sum over the process tree (supervisor and workers)

    def urls(self, ports: dict[str, int]) -> dict[str, tuple[str, str, bool]]:
        """test -> (url, body, anthropic wire?)"""
        if self.name == "direct":
            up0, up20 = f"http://127.0.0.1:{ports['up0']}", f"http://127.0.0.1:{ports['up20']}"
            return {
                "instant": (f"{up0}/v1/chat/completions", chat_body(OPENAI_MODEL, False), False),
                "slow": (f"{up20}/v1/chat/completions", chat_body(OPENAI_MODEL, False), False),
                "stream": (f"{up0}/v1/chat/completions", chat_body(OPENAI_MODEL, True), False),
                "stream_anthropic": (f"{up0}/v1/messages", anthropic_body(True), True),
            }
        if self.name == "floor":  # it forwards one non-streaming chat request, nothing else
            return {"instant": (f"{self.base}/v1/chat/completions", chat_body("bench-instant", False), False)}
        return {
            "instant": (f"{self.base}/v1/chat/completions", chat_body("bench-instant", False), False),
            "slow": (f"{self.base}/v1/chat/completions", chat_body("bench-slow", False), False),
            "stream": (f"{self.base}/v1/chat/completions", chat_body("bench-instant", True), False),
            "stream_anthropic": (f"{self.base}/v1/chat/completions", chat_body("bench-anthropic", True), False),
        }

    def door_urls(self, ports: dict[str, int], doors: tuple[str, ...]) -> dict[str, tuple[DoorRequest, DoorRequest]]:
        """scenario -> (non-stream request, stream request), for the selected doors.

        Direct is the fake upstream answering the door's own protocol (the same request in both
        scenarios of a door): the ceiling of the load generator and the upstream on this machine.
        """
        if self.name == "floor":
            return {}
        out = {}
        for scenario, (door, _, route) in DOOR_SCENARIOS.items():
            if door not in doors:
                continue
            base = f"http://127.0.0.1:{ports['up0']}" if self.name == "direct" else self.base
            make = anthropic_body if door == "messages" else responses_body
            model = (ANTHROPIC_MODEL if door == "messages" else OPENAI_MODEL) if self.name == "direct" else route
            url = f"{base}/v1/{door}"
            out[scenario] = (DoorRequest(url, make(False, model), door), DoorRequest(url, make(True, model), door))
        return out

    def sample_rss(self, label: str) -> None:
        if self.pid is not None:
            sample = rss_mb(self.pid)
            if self.tree:
                sample.update(rss=sample["tree_rss"], hwm=sample["tree_hwm"])
            self.rss_samples.append({"label": label, "served": self.served, **sample})


class Runner:
    def __init__(self, args: argparse.Namespace, wrk: str, workdir: Path, loadgen_cpus: set[int] | None) -> None:
        self.args = args
        self.wrk = wrk
        self.workdir = workdir
        self.loadgen_cpus = loadgen_cpus
        self._lua = (BENCH / "wrk_post.lua").read_text()
        self._n = 0

    def _preexec(self):
        cpus = self.loadgen_cpus
        return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None

    def wrk_run(self, url: str, body: str, connections: int, duration: float,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
        self._n += 1
        script = self.workdir / f"wrk-{self._n % 8}.lua"
        assert "]==]" not in body
        extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
        script.write_text(self._lua.replace("@BODY@", body).replace("-- @HEADERS@", extra + "\n-- headers:"))
        argv = [self.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
                "-s", str(script), url]
        out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=self._preexec(),
                             timeout=duration + 60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no summary (rc {out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
        res = json.loads(line.removeprefix("BENCHJSON "))
        res["errors"] = sum(v for k, v in res.items() if k.startswith("err_"))
        res["rps"] = round(res["requests"] / (res["duration_us"] / 1e6), 1) if res["duration_us"] else 0.0
        res["ok"] = res["requests"] - res["err_status"]
        return res

    def stream_run(self, url: str, body: str, anthropic: bool | str, streams: int, duration: float,
                   concurrency: int | None = None) -> dict[str, Any]:
        """``anthropic``: True for an Anthropic-wire stream, False for Chat Completions, or the wire's name."""
        wire = anthropic if isinstance(anthropic, str) else ("messages" if anthropic else "chat")
        argv = [str(VENV_PY), str(BENCH / "streamload.py"), "--url", url, "--body", body, "--concurrency",
                str(concurrency or self.args.stream_concurrency), "--streams", str(streams),
                "--duration", str(duration),
                "--min-chunks", str(CHUNKS), "--wire", wire]
        out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=self._preexec(),
                             timeout=duration + 120)
        if out.returncode != 0:
            raise RuntimeError(f"streamload failed: {out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def smoke_check(targets: dict[str, Target], ports: dict[str, int]) -> None:
    """One request of every kind through every system; fail loudly if any is not a proper answer."""
    for t in targets.values():
        for test, (url, body, anthropic) in t.urls(ports).items():
            headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
            status, hdrs, data = http("POST", url, body.encode(), headers, timeout=60)
            ok = status == 200
            if ok and "stream" in test:
                ok = (b"message_stop" in data) if anthropic else data.rstrip().endswith(b"[DONE]")
                ok = ok and data.count(b"text_delta" if anthropic else b'"content"') >= CHUNKS
            elif ok:
                ok = b'"choices"' in data and b"w0" in data
            if not ok:
                raise RuntimeError(f"{t.name} {test}: status {status}, body {data[:1500]!r}")
            t.served += 1
    log("smoke check passed: every system answers JSON and streams (OpenAI and Anthropic wire)")


def door_answer_ok(req: DoorRequest, stream: bool, data: bytes) -> bool:
    """A proper answer of a Messages or Responses request: the fake's text, or a complete stream."""
    if not stream:
        return (b'"output_text"' if req.wire == "responses" else b'"text"') in data and b"w0" in data
    if req.wire == "messages":
        return b"message_stop" in data and data.count(b"text_delta") >= CHUNKS
    return b'"response.completed"' in data and data.count(b'"response.output_text.delta"') >= CHUNKS


def smoke_check_doors(targets: dict[str, Target], ports: dict[str, int], doors: tuple[str, ...],
                      results: dict[str, Any]) -> None:
    """One request of every Messages and Responses scenario through every system.

    Direct and interlock must answer them all; a scenario LiteLLM does not answer properly is left
    out for LiteLLM only (recorded in the results and the report), so the rest still runs.
    """
    skipped: dict[str, str] = {}
    for t in targets.values():
        for scenario, pair in t.door_urls(ports, doors).items():
            for req, stream in zip(pair, (False, True), strict=True):
                headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench", **req.headers}
                status, _, data = http("POST", req.url, req.body.encode(), headers, timeout=60)
                if status == 200 and door_answer_ok(req, stream, data):
                    t.served += 1
                    continue
                what = f"{t.name} {scenario}{' stream' if stream else ''}: status {status}, body {data[:600]!r}"
                if t.name != "litellm":
                    raise RuntimeError(what)
                skipped.setdefault(scenario, what)
    results["door_litellm_skipped"] = skipped
    for scenario, why in skipped.items():
        log(f"LiteLLM does not serve {scenario} here; left out of that scenario ({why[:300]})")
    log("smoke check passed: the Messages and Responses doors answer JSON and streams")


def measure_doors(args: argparse.Namespace, runner: Runner, targets: dict[str, Target], ports: dict[str, int],
                  results: dict[str, Any], doors: tuple[str, ...]) -> None:
    """The Messages and Responses scenarios: latency at c=1, throughput at 50 connections (non-stream),
    and concurrent streams, alternating direct, interlock and LiteLLM and rotating the order each round."""
    skipped = results.get("door_litellm_skipped", {})
    names = [n for n in ("direct", "interlock", "litellm") if n in targets]
    urls = {n: targets[n].door_urls(ports, doors) for n in names}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = results.setdefault("raw_doors", {})
    busy = [p.pid for p in PROCS.procs.values()]

    def systems(order: list[str], scenario: str) -> list[str]:
        return [n for n in order if scenario in urls[n] and not (n == "litellm" and scenario in skipped)]

    def record(test: str, name: str, res: dict[str, Any], served: int) -> None:
        raw.setdefault(test, {}).setdefault(name, []).append(res)
        targets[name].served += served
        targets[name].sample_rss(test)
        PROCS.check_alive()
        time.sleep(args.settle)
        quiesce(busy)

    scenarios = [sc for sc in DOOR_SCENARIOS if any(sc in urls[n] for n in names)]
    log(f"doors: warm-up, 2 s at 50 connections and 40 streams per scenario and system ({', '.join(scenarios)})")
    for scenario in scenarios:
        for n in systems(names, scenario):
            plain, stream = urls[n][scenario]
            targets[n].served += runner.wrk_run(plain.url, plain.body, 50, 2, plain.headers)["requests"]
            targets[n].served += runner.stream_run(stream.url, stream.body, stream.wire, 40, 30)["completed"]
            quiesce(busy)
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        log(f"doors round {rnd + 1}/{args.rounds}, order {' -> '.join(order)}")
        for scenario in scenarios:
            for n in systems(order, scenario):
                plain, _ = urls[n][scenario]
                res = runner.wrk_run(plain.url, plain.body, 1, args.lat_seconds, plain.headers)
                record(f"{scenario}_c1", n, res, res["requests"])
            for n in systems(order, scenario):
                plain, _ = urls[n][scenario]
                res = runner.wrk_run(plain.url, plain.body, args.connections, args.tput_seconds, plain.headers)
                record(f"{scenario}_c50", n, res, res["requests"])
            for n in systems(order, scenario):
                _, stream = urls[n][scenario]
                res = runner.stream_run(stream.url, stream.body, stream.wire, args.max_streams, args.stream_seconds)
                record(f"{scenario}_stream", n, res, res["completed"])
        log("doors round done: " + "; ".join(
            f"{sc}: " + ", ".join(f"{n} {raw[f'{sc}_c50'][n][-1]['rps']} rps / "
                                  f"{raw[f'{sc}_stream'][n][-1]['streams_per_s']} streams/s"
                                  for n in systems(order, sc))
            for sc in scenarios))


def summarize_doors(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """scenario -> system -> medians over rounds (and added latency over direct, per round)."""
    raw = results.get("raw_doors", {})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in DOOR_SCENARIOS:
        c1, c50, st = raw.get(f"{scenario}_c1", {}), raw.get(f"{scenario}_c50", {}), raw.get(f"{scenario}_stream", {})
        for name in ("direct", "interlock", "litellm"):
            if name not in c50:
                continue

            def med(runs: dict[str, list[dict[str, Any]]], key: str, who: str = name) -> float | None:
                return pct_summary([r[key] for r in runs.get(who, []) if r.get(key) is not None])

            row: dict[str, Any] = {
                "c1_p50_ms": _ms(med(c1, "lat_p50_us")),
                "c1_p99_ms": _ms(med(c1, "lat_p99_us")),
                "c50_rps": med(c50, "rps"),
                "c50_p99_ms": _ms(med(c50, "lat_p99_us")),
                "sps": med(st, "streams_per_s"),
                "ttft_p50_ms": med(st, "ttft_p50_ms"),
                "errors": sum(r.get("errors", 0) if isinstance(r.get("errors"), int) else sum(r["errors"].values())
                              for runs in (c1, c50, st) for r in runs.get(name, [])),
            }
            if name != "direct":
                diffs = [x["lat_p50_us"] - y["lat_p50_us"]
                         for x, y in zip(c1.get(name, []), c1.get("direct", []), strict=False)]
                row["added_p50_ms"] = _ms(pct_summary(diffs))
            out.setdefault(scenario, {})[name] = row
    return out


def write_doors(w: Callable[[str], None], results: dict[str, Any]) -> None:
    """The Messages and Responses doors' table, one row per scenario and measure."""
    doors = results.get("doors_summary") or {}
    if not doors:
        return
    w("### The Messages and Responses doors")
    w("")
    w("The same load against each gateway's own `POST /v1/messages` (Anthropic Messages) and "
      "`POST /v1/responses` (OpenAI Responses): *translated* = the gateway turns the request into "
      "the upstream's other protocol (Messages onto an OpenAI Chat Completions upstream; Responses onto "
      "a chat-only upstream) and the answer back; *passed through* = the upstream speaks the client's "
      "protocol (Messages onto an Anthropic-wire upstream; Responses onto an upstream serving "
      "`/v1/responses`). Direct is the fake upstream answering that protocol itself. Non-stream: wrk; "
      f"streams: {CHUNKS} content events each, 20 concurrent.")
    w("")
    w("| scenario | measure | direct | interlock | LiteLLM | interlock ÷ LiteLLM | interlock ÷ direct |")
    w("|---|---|--:|--:|--:|--:|--:|")
    skipped = results.get("door_litellm_skipped", {})
    for scenario, (door, how, _) in DOOR_SCENARIOS.items():
        rows = doors.get(scenario)
        if not rows:
            continue
        d, il, ll = rows.get("direct", {}), rows.get("interlock", {}), rows.get("litellm", {})
        label = f"{'Messages' if door == 'messages' else 'Responses'}, {how}"
        for measure, key, digits, ratios in (("req/s, 50 conns, non-stream", "c50_rps", 0, True),
                                             ("streams/s, 20 concurrent", "sps", 1, True),
                                             ("latency c=1, p50 (ms)", "c1_p50_ms", 3, False),
                                             ("added latency c=1, p50 (ms)", "added_p50_ms", 3, False),
                                             ("time to first chunk p50 (ms)", "ttft_p50_ms", 2, False)):
            a, b, c = d.get(key), il.get(key), ll.get(key)
            w(f"| {label} | {measure} | {_fmt(a, digits)} | {_fmt(b, digits)} | "
              f"{_fmt(c, digits) if scenario not in skipped else 'not served'} | "
              f"{_ratio(b, c) if ratios else '–'} | {_ratio(b, a) if ratios else '–'} |")
            label = ""
    errors = {f"{sc} {n}": r["errors"] for sc, rows in doors.items() for n, r in rows.items() if r.get("errors")}
    w("")
    if errors:
        w(f"Failed requests or streams in these scenarios: {errors}.")
        w("")
    for scenario, why in skipped.items():
        w(f"- LiteLLM left out of `{scenario}`: its answer in the smoke check was not a proper one ({why[:200]}).")
    if skipped:
        w("")


def pct_summary(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def measure(args: argparse.Namespace, runner: Runner, targets: dict[str, Target], ports: dict[str, int],
            results: dict[str, Any]) -> None:
    names = [n for n in SYSTEMS if n in targets]
    urls = {n: targets[n].urls(ports) for n in names}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    results["raw"] = raw

    busy = [p.pid for p in PROCS.procs.values()]  # gateways, upstream and sink
    waited: list[float] = []
    results["quiesce_waits_s"] = waited

    def record(test: str, name: str, res: dict[str, Any], served: int) -> None:
        raw.setdefault(test, {}).setdefault(name, []).append(res)
        targets[name].served += served
        targets[name].sample_rss(test)
        PROCS.check_alive()
        time.sleep(args.settle)
        waited.append(round(quiesce(busy), 1))

    def runs(systems: list[str], key: str) -> list[tuple[str, tuple[str, str, bool]]]:
        """(system, its url, body and wire) for those of ``systems`` that take part in ``key``'s test."""
        return [(n, urls[n][key]) for n in systems if key in urls[n]]

    log("warm-up: 2 s at 50 connections and 40 streams of each kind per system")
    for n in names:
        url, body, _ = urls[n]["instant"]
        targets[n].served += runner.wrk_run(url, body, 50, 2)["requests"]
        for test in ("stream", "stream_anthropic"):
            for _, (url, body, anth) in runs([n], test):
                targets[n].served += runner.stream_run(url, body, anth, 40, 30)["completed"]
        targets[n].sample_rss("after warm-up")
        quiesce(busy)
    time.sleep(args.settle)

    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        log(f"round {rnd + 1}/{args.rounds}, order {' -> '.join(order)}")
        for n in order:  # added latency, one request at a time
            url, body, _ = urls[n]["instant"]
            res = runner.wrk_run(url, body, 1, args.lat_seconds)
            record("latency_c1", n, res, res["requests"])
        for test, key in (("throughput_c50_instant", "instant"), ("throughput_c50_20ms", "slow")):
            for n, (url, body, _) in runs(order, key):
                res = runner.wrk_run(url, body, args.connections, args.tput_seconds)
                record(test, n, res, res["requests"])
        for test in ("stream", "stream_anthropic"):
            for n, (url, body, anth) in runs(order, test):
                res = runner.stream_run(url, body, anth, args.max_streams, args.stream_seconds)
                record(test, n, res, res["completed"])
        for test in ("stream", "stream_anthropic"):  # time to first chunk, one stream at a time
            for n, (url, body, anth) in runs(order, test):
                res = runner.stream_run(url, body, anth, args.max_streams, args.lat_seconds, concurrency=1)
                record(f"{test}_c1", n, res, res["completed"])
        log("round done: " + ", ".join(
            f"{n}: c1 p50 {raw['latency_c1'][n][-1]['lat_p50_us']} us, "
            f"c50 {raw['throughput_c50_instant'][n][-1]['rps']} rps"
            + (f", streams {raw['stream_anthropic'][n][-1]['streams_per_s']}/s" if n in raw["stream_anthropic"] else "")
            for n in order))


def soak(args: argparse.Namespace, runner: Runner, targets: dict[str, Target], ports: dict[str, int],
         results: dict[str, Any]) -> None:
    """Top every gateway up to args.soak_requests requests served, alternating chunks, sampling RSS."""
    gws = [n for n in ("interlock", "litellm") if n in targets]
    chunk = max(1000, args.soak_requests // 10)
    spent = {n: 0.0 for n in gws}
    rates = {n: statistics.median(r["rps"] for r in results["raw"]["throughput_c50_instant"][n]) for n in gws}
    log(f"soak: up to {args.soak_requests} requests per gateway in chunks of {chunk} "
        f"(time cap {args.soak_max_seconds:.0f} s per gateway)")
    soak_raw: dict[str, list[dict[str, Any]]] = {n: [] for n in gws}
    while True:
        active = [n for n in gws if targets[n].served < args.soak_requests and spent[n] < args.soak_max_seconds]
        if not active:
            break
        for n in active:
            t = targets[n]
            want = min(chunk, args.soak_requests - t.served)
            # wrk runs for a duration (its per-thread stop does not end the run early), so the
            # duration comes from this gateway's measured throughput; the count served is exact
            seconds = want / max(1.0, rates[n]) * 1.05
            seconds = max(2.0, min(seconds, args.soak_max_seconds - spent[n], 600.0))
            url, body, _ = t.urls(ports)["instant"]
            t0 = time.monotonic()
            res = runner.wrk_run(url, body, args.connections, seconds)
            rates[n] = res["rps"] or rates[n]
            spent[n] += time.monotonic() - t0
            t.served += res["requests"]
            t.sample_rss("soak")
            quiesce([x.pid for x in PROCS.procs.values()])
            soak_raw[n].append({k: res[k] for k in ("requests", "rps", "errors", "lat_p99_us")})
            PROCS.check_alive()
    results["soak"] = {n: {"seconds": round(spent[n], 1), "chunks": soak_raw[n]} for n in gws}
    for n in gws:
        targets[n].sample_rss("end")
        log(f"soak {n}: served {targets[n].served} requests in total, RSS {targets[n].rss_samples[-1]['rss']} MB")


# ------------------------------------------------------------------------------------------------
# report


def machine_info(litellm_py: Path | None) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    py_v = subprocess.run([str(VENV_PY), "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": py_v,
        "interlock": pip_version(VENV_PY, "interlock"),
        "interlock_commit": (commit.stdout.strip() or "unknown")
        + (" (+ uncommitted changes)" if dirty.stdout.strip() else ""),
        "aiohttp": pip_version(VENV_PY, "aiohttp"),
        "orjson": pip_version(VENV_PY, "orjson"),
        "uvloop (interlock venv)": pip_version(VENV_PY, "uvloop"),
        "litellm": pip_version(litellm_py, "litellm") if litellm_py else "not run",
        "litellm python": subprocess.run([str(litellm_py), "-c", "import sys; print(sys.version.split()[0])"],
                                         capture_output=True, text=True).stdout.strip() if litellm_py else "-",
        "wrk": (wrk_v.stdout + wrk_v.stderr).splitlines()[0] if (wrk_v.stdout + wrk_v.stderr) else "unknown",
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    raw = results.get("raw", {})
    s: dict[str, Any] = {}

    def med(test: str, name: str, key: str) -> float | None:
        vals = [r[key] for r in raw.get(test, {}).get(name, []) if r.get(key) is not None]
        return pct_summary(vals)

    def added(test: str, name: str, key: str, scale: float = 1.0) -> float | None:
        """median over rounds of (system - direct) in the same round."""
        a, d = raw.get(test, {}).get(name, []), raw.get(test, {}).get("direct", [])
        diffs = [(x[key] - y[key]) * scale for x, y in zip(a, d, strict=False)
                 if x.get(key) is not None and y.get(key) is not None]
        return pct_summary(diffs)

    for name in SYSTEMS:
        if name not in raw.get("latency_c1", {}):
            continue
        row: dict[str, Any] = {
            "c1_p50_ms": _ms(med("latency_c1", name, "lat_p50_us")),
            "c1_p99_ms": _ms(med("latency_c1", name, "lat_p99_us")),
            "c1_requests": sum(r["requests"] for r in raw["latency_c1"][name]),
            "c50_instant_rps": med("throughput_c50_instant", name, "rps"),
            "c50_instant_p99_ms": _ms(med("throughput_c50_instant", name, "lat_p99_us")),
            "c50_20ms_rps": med("throughput_c50_20ms", name, "rps"),
            "c50_20ms_p99_ms": _ms(med("throughput_c50_20ms", name, "lat_p99_us")),
            "stream_sps": med("stream", name, "streams_per_s"),
            "stream_ttft_p50_ms": med("stream", name, "ttft_p50_ms"),
            "stream_ttft_p99_ms": med("stream", name, "ttft_p99_ms"),
            "stream_anth_sps": med("stream_anthropic", name, "streams_per_s"),
            "stream_anth_ttft_p50_ms": med("stream_anthropic", name, "ttft_p50_ms"),
            "stream_anth_ttft_p99_ms": med("stream_anthropic", name, "ttft_p99_ms"),
            "ttft_c1_p50_ms": med("stream_c1", name, "ttft_p50_ms"),
            "ttft_c1_p99_ms": med("stream_c1", name, "ttft_p99_ms"),
            "anth_ttft_c1_p50_ms": med("stream_anthropic_c1", name, "ttft_p50_ms"),
            "anth_ttft_c1_p99_ms": med("stream_anthropic_c1", name, "ttft_p99_ms"),
            "errors": sum(r.get("errors", 0) if isinstance(r.get("errors"), int) else sum(r["errors"].values())
                          for test in raw.values() for r in test.get(name, [])),
        }
        if name != "direct":
            row["added_p50_ms"] = _ms(added("latency_c1", name, "lat_p50_us"))
            row["added_p99_ms"] = _ms(added("latency_c1", name, "lat_p99_us"))
            row["added_ttft_p50_ms"] = added("stream", name, "ttft_p50_ms")
            row["added_anth_ttft_p50_ms"] = added("stream_anthropic", name, "ttft_p50_ms")
            row["added_ttft_c1_p50_ms"] = added("stream_c1", name, "ttft_p50_ms")
            row["added_ttft_c1_p99_ms"] = added("stream_c1", name, "ttft_p99_ms")
            row["added_anth_ttft_c1_p50_ms"] = added("stream_anthropic_c1", name, "ttft_p50_ms")
            row["added_anth_ttft_c1_p99_ms"] = added("stream_anthropic_c1", name, "ttft_p99_ms")
        s[name] = row
    return s


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:.1f}×" if abs(r) >= 1 else f"{r:.3f}×" if abs(r) < 0.1 else f"{r:.2f}×"


def write_report(path: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    m = results["machine"]
    s = results["summary"]
    il, ll, d = s.get("interlock", {}), s.get("litellm", {}), s.get("direct", {})
    rss = results["rss"]
    workers_flag = f" --workers {args.workers}" if args.workers > 1 else ""
    workers_note = (" with a local `redis-server` as its `[store]`; memory figures are the sum over each gateway's "
                    "processes" if args.workers > 1 else "")
    obs = results["observability"]
    quick = args.quick
    lines: list[str] = []
    w = lines.append
    w("# Benchmarks: interlock vs the LiteLLM proxy")
    w("")
    w("<!-- generated by `python bench/run.py`; do not edit by hand, re-run it -->")
    w("")
    if quick:
        w(f"> **Smoke run (`--quick`)**: fewer rounds and shorter runs, and the memory figure is after "
          f"{args.soak_requests:,} requests, not 100k. Do not quote these numbers; run `bench/run.py` without "
          f"`--quick` for the real table.")
        w("")
    load = results["loadavg"]
    quiet = results.get("quiet_before", {})
    during = results.get("machine_during", {})
    busy = quiet.get("busy_pct", 0.0) >= QUIET_BUSY_PCT or during.get("steal_pct", 0.0) >= QUIET_STEAL_PCT
    w(f"Run {results['started']} – {results['finished']}, {results['duration_min']:.1f} min. "
      f"Before it started the machine was {quiet.get('busy_pct', '?')}% busy (over {QUIET_WINDOW_S:g} s, after "
      f"waiting {quiet.get('waited_s', '?')} s for it to drop below {QUIET_BUSY_PCT:g}%); load average (1 min) "
      f"before / after: "
      f"{load['before']} / {load['after']}. During the run: {during.get('other_cpu_s', '?')} CPU-seconds of work "
      f"that was not the benchmark's processes (kernel network work on their behalf included), hypervisor "
      f"steal {during.get('steal_pct', '?')}% of the CPU time"
      + (" — **the machine was busy with other work; treat the numbers as indicative only.**" if busy else "."))
    w("")
    w("## Machine and versions")
    w("")
    w("| | |")
    w("|---|---|")
    for k, v in m.items():
        w(f"| {k} | {v} |")
    w(f"| CPU pinning | {results['pinning']} |")
    w("")
    w("## Results")
    w("")
    w("Medians over rounds. *Added* = system minus direct, per round, then the median. "
      "Ratios: interlock ÷ LiteLLM and interlock ÷ direct — for throughput higher is better, for "
      "latencies lower is better (0.1× = a tenth of LiteLLM's).")
    w("")
    w("| measure | direct | interlock | LiteLLM | interlock ÷ LiteLLM | interlock ÷ direct |")
    w("|---|--:|--:|--:|--:|--:|")

    def row(label: str, key: str, digits: int = 2, ratios: bool = True, direct: bool = True) -> None:
        a, b, c = d.get(key), il.get(key), ll.get(key)
        w(f"| {label} | {_fmt(a, digits) if direct else '–'} | {_fmt(b, digits)} | {_fmt(c, digits)} | "
          f"{_ratio(b, c) if ratios else '–'} | {_ratio(b, a) if ratios and direct else '–'} |")

    row("latency c=1, p50 (ms)", "c1_p50_ms", 3)
    row("latency c=1, p99 (ms)", "c1_p99_ms", 3)
    row("**added latency c=1, p50 (ms)**", "added_p50_ms", 3, ratios=True, direct=False)
    row("**added latency c=1, p99 (ms)**", "added_p99_ms", 3, ratios=True, direct=False)
    row("requests at c=1 (all rounds)", "c1_requests", 0, ratios=False)
    row("**throughput, 50 conns, instant upstream (req/s)**", "c50_instant_rps", 0)
    row("  p99 latency at that load (ms)", "c50_instant_p99_ms", 1, ratios=False)
    row("**throughput, 50 conns, 20 ms upstream (req/s)**", "c50_20ms_rps", 0)
    row("  p99 latency at that load (ms)", "c50_20ms_p99_ms", 1, ratios=False)
    row("**streams/s, 20 concurrent, OpenAI pass-through**", "stream_sps", 1)
    row("  time to first chunk p50 (ms)", "stream_ttft_p50_ms", 2, ratios=False)
    row("  added time to first chunk p50 (ms)", "added_ttft_p50_ms", 2, ratios=False, direct=False)
    row("**streams/s, 20 concurrent, Anthropic translated**", "stream_anth_sps", 1)
    row("  time to first chunk p50 (ms)", "stream_anth_ttft_p50_ms", 2, ratios=False)
    row("  added time to first chunk p50 (ms)", "added_anth_ttft_p50_ms", 2, ratios=False, direct=False)
    row("time to first chunk, 1 stream at a time, OpenAI, p50 (ms)", "ttft_c1_p50_ms", 3, ratios=False)
    row("  p99 (ms)", "ttft_c1_p99_ms", 3, ratios=False)
    row("  added p50 (ms)", "added_ttft_c1_p50_ms", 3, ratios=False, direct=False)
    row("  added p99 (ms)", "added_ttft_c1_p99_ms", 3, ratios=False, direct=False)
    row("time to first chunk, 1 stream at a time, Anthropic translated, p50 (ms)", "anth_ttft_c1_p50_ms", 3,
        ratios=False)
    row("  p99 (ms)", "anth_ttft_c1_p99_ms", 3, ratios=False)
    row("  added p50 (ms)", "added_anth_ttft_c1_p50_ms", 3, ratios=False, direct=False)
    row("  added p99 (ms)", "added_anth_ttft_c1_p99_ms", 3, ratios=False, direct=False)
    row("failed requests / streams (all tests)", "errors", 0, ratios=False)
    w("")
    w("For the translated stream the direct column is the Anthropic-wire stream straight from the fake "
      "upstream (the gateways answer it in OpenAI format).")
    w("")
    fl = s.get("floor")
    if fl:
        write_floor(w, d, fl, il, ll)
    write_doors(w, results)
    w("### Memory (RSS, MB)")
    w("")
    w("| | interlock | LiteLLM |")
    w("|---|--:|--:|")
    for label, key in (("idle, after start-up", "idle"), ("after warm-up", "warm"),
                       ("half-way through the requests", "mid"), ("at the end", "end"),
                       ("peak (VmHWM)", "peak"), ("requests served at the end", "served"),
                       ("growth, second half of the run", "growth")):
        w(f"| {label} | {_fmt(rss.get('interlock', {}).get(key), 1)} | {_fmt(rss.get('litellm', {}).get(key), 1)} |")
    w("")
    w("RSS of the gateway's own process; LiteLLM's process tree is listed in the JSON results when it has "
      "more than one process. The soak (50 connections, instant upstream) is capped at "
      f"{args.soak_max_seconds:.0f} s per gateway, so a slow gateway may stop short of the request target; "
      "the *requests served* row says how far each got.")
    w("")
    w("### Observability during the run (interlock)")
    w("")
    none = (" — interlock exported no span (telemetry not enabled or not implemented in this build; "
            "see INTERLOCK_TELEMETRY_TOML in bench/run.py)")
    w(f"- spans received by the local OTLP sink: **{obs['spans']:,}** in {obs['trace_exports']:,} export "
      f"requests{'' if obs['spans'] else none};")
    w(f"- ledger rows written to SQLite: **{_fmt(obs['ledger_requests'], 0)}** request rows, "
      f"{_fmt(obs['ledger_attempts'], 0)} attempt rows (interlock served {rss.get('interlock', {}).get('served', 0):,} "
      "requests incl. warm-up).")
    w("")
    w("## Performance bars")
    w("")
    w(BARS_WHY)
    w("| bar | measured | met? |")
    w("|---|---|---|")
    for b in results["bars"]:
        w(f"| {b['bar']} | {b['measured']} | {b['met']} |")
    w("")
    waits = results.get("quiesce_waits_s") or []
    w("## Method")
    w("")
    w(f"""- **Systems**, all on loopback and started by the command: the fake upstream `bench/upstream.py`
  (aiohttp, precomputed replies; one process serving an instant port and a 20 ms port; each stream is
  {CHUNKS} content events plus role, finish and usage events, each written separately, no pacing);
  interlock (`interlock serve --config <generated>{workers_flag}`{workers_note}: three routes over `openai` and `anthropic`
  providers (with the Messages or Responses door a fourth, `bench-chatonly`, over an `openai`
  instance with `responses = false`), retries 0, SQLite ledger on, OTLP span export to
  `bench/otlp_sink.py`, warning-level logs; the sink runs under `SCHED_IDLE`, like a collector on another machine, so that decoding a
  batch of spans does not hold up the fake upstream on the load generators' CPU); LiteLLM proxy {m['litellm']} (`litellm --config <generated> --num_workers {args.workers}`, no database, no
  master key (`LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true`, which 1.108 needs to
  start without one), `telemetry: false`, `LITELLM_LOG=ERROR`, `LITELLM_LOCAL_MODEL_COST_MAP=True`, retries
  0; the Anthropic model uses LiteLLM's `anthropic/` provider with `api_base` at the fake, and
  `bench-chatonly` its `{LITELLM_CHAT_ONLY}/` provider, whose Messages and Responses calls it bridges
  to Chat Completions); and
  **direct** — the same load generator against the upstream itself; and, unless `--skip-floor`, the
  **aiohttp floor** `bench/floor_proxy.py` (latency at c=1 and instant throughput only; see its
  section). Neither gateway authenticates
  the client. Both gateways get the same model names (`bench-instant`, `bench-slow`,
  `bench-anthropic`) and price the same models ({OPENAI_MODEL}, {ANTHROPIC_MODEL}).
- **One worker each.** {results['pinning']}.
- **Alternation.** Every test runs each system back to back, and the order rotates every round
  ({args.rounds} rounds), so drift on the machine hits all systems alike; a warm-up (2 s at 50
  connections, 40 streams of each kind) precedes round 1. After every run a {args.settle} s pause, then
  a wait until the gateways, the upstream and the sink are idle (< 5 % CPU over 0.5 s; a gateway may
  still be working through requests the load generator abandoned), so no run pays for the previous
  one (waits: median {_fmt(statistics.median(waits) if waits else None, 1)} s, max {_fmt(max(waits) if waits else None, 1)} s).
- **Latency at c=1**: wrk, 1 connection, {args.lat_seconds:.0f} s per system per round, non-streaming
  request; p50/p99 from wrk's histogram. Added latency = system − direct in the same round.
- **Throughput**: wrk, {args.connections} connections, 1 thread, {args.tput_seconds:.0f} s per system per
  round, instant and 20 ms upstream. wrk is closed-loop (a new request when one completes), so
  throughput is the saturation rate and p99 includes queueing.
- **Streaming**: `bench/streamload.py` (asyncio + aiohttp), {args.stream_concurrency} concurrent streams,
  closed loop, {args.stream_seconds:.0f} s per system per round; streams/s =
  completed streams ÷ wall time; time to first chunk = request sent → first content delta (not the role
  chunk). A stream counts only if it is a 200 that ends properly with ≥ {CHUNKS} content events.
  The client's own ceiling is the direct column. Time to first chunk is also measured one stream at a
  time ({args.lat_seconds:.0f} s per system per round), where it is not dominated by queueing in the client.
- **Memory**: VmRSS/VmHWM from `/proc/<pid>/status`, sampled after every run; then a soak at
  {args.connections} connections (instant upstream) alternating chunks of {max(1000, args.soak_requests // 10):,}
  requests per gateway until each has served {args.soak_requests:,} requests (all tests count) or spent
  {args.soak_max_seconds:.0f} s. *Growth* = RSS at the end − RSS half-way through.
- Raw per-round numbers: `{results['json_path']}`.
- Reproduce: `.venv/bin/python bench/run.py{' --quick' if quick else ''}` (see CONTRIBUTING.md).
""")
    path.write_text("\n".join(lines))


def write_floor(w: Callable[[str], None], d: dict[str, Any], fl: dict[str, Any], il: dict[str, Any],
                ll: dict[str, Any]) -> None:
    """The bare aiohttp proxy beside the gateways: how much of their cost any aiohttp gateway pays."""
    w("### The framework floor: a bare aiohttp proxy")
    w("")
    w("`bench/floor_proxy.py` (aiohttp + uvloop, one shared client session, pinned like the gateways) "
      "parses the body, forwards it to the instant upstream and returns the answer: no routing, "
      "validation, spans or ledger. What it adds over direct is what two HTTP hops through aiohttp cost "
      "on this machine, wake-ups of the gateway's CPU included; interlock, built on aiohttp, pays it too.")
    w("")
    w("| measure | direct | aiohttp floor | interlock | LiteLLM | interlock − floor |")
    w("|---|--:|--:|--:|--:|--:|")

    def diff(a: float | None, b: float | None, digits: int) -> str:
        return "–" if a is None or b is None else f"{a - b:,.{digits}f}"

    for label, key, digits, direct in (("latency c=1, p50 (ms)", "c1_p50_ms", 3, True),
                                       ("added latency c=1, p50 (ms)", "added_p50_ms", 3, False),
                                       ("added latency c=1, p99 (ms)", "added_p99_ms", 3, False)):
        w(f"| {label} | {_fmt(d.get(key), digits) if direct else '–'} | {_fmt(fl.get(key), digits)} | "
          f"{_fmt(il.get(key), digits)} | {_fmt(ll.get(key), digits)} | {diff(il.get(key), fl.get(key), digits)} |")
    rates = {n: x.get("c50_instant_rps") for n, x in (("d", d), ("fl", fl), ("il", il), ("ll", ll))}
    w(f"| throughput, 50 conns, instant upstream (req/s) | {_fmt(rates['d'], 0)} | {_fmt(rates['fl'], 0)} | "
      f"{_fmt(rates['il'], 0)} | {_fmt(rates['ll'], 0)} | – |")
    w(f"|   ÷ LiteLLM | – | {_ratio(rates['fl'], rates['ll'])} | {_ratio(rates['il'], rates['ll'])} | 1.0× | – |")
    per = {n: (1e6 / r if r else None) for n, r in rates.items()}  # µs of the gateway's CPU per request
    w(f"|   µs per request at saturation (1 ÷ req/s: the gateway's CPU time per request) | – | {_fmt(per['fl'], 0)} | {_fmt(per['il'], 0)} | "
      f"{_fmt(per['ll'], 0)} | {diff(per['il'], per['fl'], 0)} |")
    w("")
    if per["fl"] and per["il"] and rates["ll"]:
        budget = 1e6 / (25 * rates["ll"])
        w(f"At 25× this run's LiteLLM a request may take {budget:,.0f} µs of the gateway's CPU; the floor "
          f"takes {per['fl']:,.0f} µs of it, which leaves {budget - per['fl']:,.0f} µs for everything a "
          f"gateway does beyond forwarding (interlock spends {per['il'] - per['fl']:,.0f} µs). Likewise the "
          f"0.5 ms bar on added latency leaves {_fmt(None if fl.get('added_p50_ms') is None else 0.5 - fl['added_p50_ms'], 3)} ms "
          "above the floor.")
        w("")


def rss_summary(t: Target) -> dict[str, Any]:
    samples = t.rss_samples
    if not samples:
        return {}
    end = samples[-1]
    mid_target = end["served"] / 2
    mid = min(samples, key=lambda x: abs(x["served"] - mid_target))
    idle = next((x for x in samples if x["label"] == "idle"), samples[0])
    warm = next((x for x in samples if x["label"] == "after warm-up"), idle)
    return {"idle": idle["rss"], "warm": warm["rss"], "mid": mid["rss"], "end": end["rss"],
            "peak": max(x["hwm"] for x in samples), "served": end["served"],
            "growth": round(end["rss"] - mid["rss"], 1),
            "tree_end": end["tree_rss"], "tree_procs": end["tree_procs"]}


#: why each bar is what it is (written above the bars table of every report)
BARS_WHY = """interlock sits in front of every model call an application makes, so what it adds must be small
beside the call itself and cheaper than the Python gateways it replaces. Each bar says why:

- **Added latency at one request at a time** is what every caller pays. A model answers in hundreds
  of milliseconds, so a gateway must add well under a millisecond; the bare aiohttp proxy measured
  in the same run is the floor of the HTTP stack interlock is built on, so the gap above it is
  interlock's own work.
- **Throughput at 50 connections, against LiteLLM on the same machine and upstream**, is how many
  cores a platform team needs for its traffic. Absolute numbers depend on the machine; the ratio to
  the incumbent Python proxy, run side by side, does not.
- **Streams per second, translated and passed through**: agents and chat UIs stream almost
  everything, and translating a stream between protocols is the most expensive thing a gateway does.
- **Memory after 100k requests, with no growth**: gateways run as many small replicas or sidecars;
  a flat RSS over a long soak shows nothing accumulates per request.
- **Spans and ledger on**: every figure is taken with observability on, because that is how the
  gateway runs in production.
"""


def bars(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, str]]:
    s = results["summary"]
    il, ll = s.get("interlock", {}), s.get("litellm", {})
    out = []

    def yes(ok: bool | None) -> str:
        return "–" if ok is None else ("**yes**" if ok else "**no**")

    fl = s.get("floor", {})
    p50, p99 = il.get("added_p50_ms"), il.get("added_p99_ms")
    floor_lat = (f" (bare aiohttp proxy: p50 {_fmt(fl.get('added_p50_ms'), 3)} ms, p99 {_fmt(fl.get('added_p99_ms'), 3)} ms)"
                 if fl else "")
    out.append({"bar": "added latency, c=1: p50 ≤ 0.5 ms, p99 ≤ 2 ms over direct",
                "measured": f"p50 {_fmt(p50, 3)} ms, p99 {_fmt(p99, 3)} ms{floor_lat}",
                "met": yes(None if p50 is None or p99 is None else (p50 <= 0.5 and p99 <= 2.0))})
    for label, key in (("throughput, 50 connections, instant upstream: ≥ 25× LiteLLM", "c50_instant_rps"),
                       ("streams/s, 20 streams, translated (Anthropic): ≥ 25× LiteLLM", "stream_anth_sps")):
        a, b = il.get(key), ll.get(key)
        r = a / b if a and b else None
        f = fl.get(key)
        floor_tput = f" (bare aiohttp proxy: {_fmt(f, 1)} = {_ratio(f, b)})" if f else ""
        out.append({"bar": label, "measured": f"{_fmt(a, 1)} vs {_fmt(b, 1)} = {_ratio(a, b)}{floor_tput}",
                    "met": yes(None if r is None else r >= 25)})
    a, b = il.get("stream_sps"), ll.get("stream_sps")
    out.append({"bar": "(same, OpenAI pass-through streams: ≥ 25× LiteLLM)",
                "measured": f"{_fmt(a, 1)} vs {_fmt(b, 1)} = {_ratio(a, b)}",
                "met": yes(None if not (a and b) else a / b >= 25)})
    m = results["rss"].get("interlock", {})
    if m:
        full = m["served"] >= 100_000
        ok = m["end"] <= 80 and m["growth"] <= max(2.0, 0.05 * m["end"])
        out.append({"bar": "memory: ≤ 80 MB RSS after 100k requests, no growth",
                    "measured": f"{m['end']:.1f} MB after {m['served']:,} requests; growth over the second half "
                                f"{m['growth']:+.1f} MB",
                    "met": yes(ok) + ("" if full else " (not at 100k: quick run)")})
    obs = results["observability"]
    out.append({"bar": "all of the above with spans and ledger on",
                "measured": f"{obs['spans']:,} spans exported, {_fmt(obs['ledger_requests'], 0)} ledger rows",
                "met": yes(bool(obs["spans"]) and bool(obs["ledger_requests"]))})
    return out


# ------------------------------------------------------------------------------------------------
# main


def main() -> int:
    parser = argparse.ArgumentParser(description="interlock vs LiteLLM vs direct; writes docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer/shorter runs, 10k-request soak")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--lat-seconds", type=float)
    parser.add_argument("--tput-seconds", type=float)
    parser.add_argument("--stream-seconds", type=float)
    parser.add_argument("--max-streams", type=int)
    parser.add_argument("--soak-requests", type=int)
    parser.add_argument("--soak-max-seconds", type=float)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--stream-concurrency", type=int, default=20)
    parser.add_argument("--settle", type=float, default=1.0, help="pause after every run (s)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin gateways and load generators to CPUs")
    parser.add_argument("--skip-litellm", action="store_true", help="debugging: interlock and direct only")
    parser.add_argument("--skip-floor", action="store_true",
                        help="leave out the bare aiohttp proxy (bench/floor_proxy.py) measured as a reference")
    parser.add_argument("--quiet-wait", type=float, default=180.0,
                        help=f"wait up to this long (s) for the machine to be < {QUIET_BUSY_PCT:g}%% busy before starting")
    parser.add_argument("--doors", default=",".join(DOORS),
                        help="comma list of client doors to measure: chat (Chat Completions, with the soak), "
                             "messages (Anthropic Messages), responses (OpenAI Responses); default: all")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes per gateway: interlock serve --workers N (with a redis-server as its "
                             "[store]) and LiteLLM --num_workers N; both get N CPUs when pinned (default 1)")
    parser.add_argument("--out", type=Path,
                        help="report path (default docs/benchmarks.md; docs/benchmarks-workers-N.md with --workers N)")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.out is None:
        args.out = REPO / "docs" / ("benchmarks.md" if args.workers == 1 else f"benchmarks-workers-{args.workers}.md")
    doors = tuple(d for d in DOORS if d in {x.strip() for x in args.doors.split(",") if x.strip()})
    unknown = {x.strip() for x in args.doors.split(",") if x.strip()} - set(DOORS)
    if unknown or not doors:
        parser.error(f"--doors takes a comma list of {', '.join(DOORS)} (got {args.doors!r})")
    args.doors = ",".join(doors)
    defaults = (dict(rounds=2, lat_seconds=3, tput_seconds=4, stream_seconds=4, max_streams=100_000,
                     soak_requests=10_000, soak_max_seconds=150) if args.quick else
                dict(rounds=3, lat_seconds=10, tput_seconds=10, stream_seconds=10, max_streams=1_000_000,
                     soak_requests=100_000, soak_max_seconds=900))
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    if not INTERLOCK_BIN.exists():
        raise SystemExit(f"{INTERLOCK_BIN} missing: create the project venv first (see CONTRIBUTING.md)")
    atexit.register(PROCS.stop_all)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    wrk = ensure_wrk()
    litellm_bin = None if args.skip_litellm else ensure_litellm()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = CACHE / f"run-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)

    ncpu = len(os.sched_getaffinity(0))
    if args.no_pin or ncpu < args.workers + 1:
        gw_cpus = lg_cpus = None
        pinning = "none (all processes share all CPUs)"
    else:
        cpus = sorted(os.sched_getaffinity(0))
        gw_cpus, lg_cpus = set(cpus[:args.workers]), set(cpus[args.workers:])
        pinning = (f"gateways on CPU {','.join(map(str, cpus[:args.workers]))}; upstream, OTLP sink"
                   f"{', Redis' if args.workers > 1 else ''} and load generators on CPU "
                   f"{','.join(map(str, cpus[args.workers:]))} (other processes on the machine are not pinned away)")

    ports = {"up0": free_port(), "up20": free_port(), "otlp": free_port(), "interlock": free_port(),
             "litellm": free_port(), "floor": free_port(), "redis": free_port()}
    quiet = wait_for_quiet(args.quiet_wait)
    results: dict[str, Any] = {"started": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "pinning": pinning, "ports": ports, "quiet_before": quiet,
                               "loadavg": {"before": float(open("/proc/loadavg").read().split()[0])}}
    jiffies_before, own_before = cpu_jiffies(), os.times()
    t_start = time.monotonic()
    try:
        start_upstream_and_sink(workdir, ports, lg_cpus)
        base_env = clean_env()
        il_env = interlock_env(ports["otlp"])
        store_url = start_redis(workdir, ports["redis"], lg_cpus) if args.workers > 1 else None
        cfg = interlock_config(workdir, ports["interlock"], ports["up0"], ports["up20"], doors=doors,
                               store_url=store_url)
        check = subprocess.run([str(INTERLOCK_BIN), "check", "--config", str(cfg)], capture_output=True, text=True,
                               env=il_env)
        if check.returncode != 0:
            raise RuntimeError(f"generated interlock config rejected:\n{check.stdout}{check.stderr}")
        il = PROCS.start("interlock", [str(INTERLOCK_BIN), "serve", "--config", str(cfg),
                                       "--workers", str(args.workers)],
                         log_path=workdir / "interlock.log", env=il_env, cwd=workdir, cpus=gw_cpus)
        targets = {"direct": Target("direct", f"http://127.0.0.1:{ports['up0']}", None)}
        il_ready = wait_ready("interlock", f"http://127.0.0.1:{ports['interlock']}/health", 60)
        if args.workers > 1:  # /health answers once one worker listens; the supervisor says when all do
            il_ready = wait_logged("interlock", workdir / "interlock.log", "listening on", 60)
        targets["interlock"] = Target("interlock", f"http://127.0.0.1:{ports['interlock']}", il.pid,
                                     tree=args.workers > 1)
        results["startup_s"] = {"interlock": round(il_ready, 1)}
        if litellm_bin:
            ll_env = {**base_env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                      "LITELLM_TELEMETRY": "False", "NO_DOCS": "True",
                      # 1.108 refuses to start without a master key; interlock runs without gateway
                      # keys here, so LiteLLM runs unauthenticated too (same work per request)
                      "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
            ll_cfg = litellm_config(workdir, ports["up0"], ports["up20"])
            ll = PROCS.start("litellm", [str(litellm_bin), "--config", str(ll_cfg),
                                         "--host", "127.0.0.1", "--port", str(ports["litellm"]), "--num_workers", str(args.workers)],
                             log_path=workdir / "litellm.log", env=ll_env, cwd=workdir, cpus=gw_cpus)
            ll_ready = wait_ready("litellm", f"http://127.0.0.1:{ports['litellm']}/health/liveliness", 240)
            targets["litellm"] = Target("litellm", f"http://127.0.0.1:{ports['litellm']}", ll.pid,
                                       tree=args.workers > 1)
            results["startup_s"]["litellm"] = round(ll_ready, 1)
        if not args.skip_floor:
            PROCS.start("floor", [str(VENV_PY), str(BENCH / "floor_proxy.py"), "--port", str(ports["floor"]),
                                  "--upstream", f"http://127.0.0.1:{ports['up0']}"],
                        log_path=workdir / "floor.log", env=base_env, cwd=workdir, cpus=gw_cpus)
            wait_ready("floor", f"http://127.0.0.1:{ports['floor']}/health", 60)
            targets["floor"] = Target("floor", f"http://127.0.0.1:{ports['floor']}", None)
        for t in targets.values():
            t.sample_rss("idle")
        log(f"all up (startup: {results['startup_s']}); workdir {workdir}")

        runner = Runner(args, wrk, workdir, lg_cpus)
        if "chat" in doors:
            smoke_check(targets, ports)
            measure(args, runner, targets, ports, results)
        if set(doors) - {"chat"}:
            smoke_check_doors(targets, ports, doors, results)
            measure_doors(args, runner, targets, ports, results, doors)
        if "chat" in doors:  # the soak tops up with chat requests (its rates come from the chat tests)
            soak(args, runner, targets, ports, results)
        else:
            for t in targets.values():
                t.sample_rss("end")

        _, _, stats = http("GET", f"http://127.0.0.1:{ports['otlp']}/stats")
        results["rss"] = {n: rss_summary(t) for n, t in targets.items() if t.pid}
        results["rss_samples"] = {n: t.rss_samples for n, t in targets.items() if t.pid}
        results["served"] = {n: t.served for n, t in targets.items()}
        PROCS.stop("interlock")  # graceful: flushes the ledger and pending spans
        time.sleep(1.5)
        _, _, stats = http("GET", f"http://127.0.0.1:{ports['otlp']}/stats")
        otlp = json.loads(stats)
        ledger_req = ledger_att = None
        with contextlib.suppress(sqlite3.Error):
            con = sqlite3.connect(workdir / "ledger.db")
            ledger_req = con.execute("select count(*) from requests").fetchone()[0]
            ledger_att = con.execute("select count(*) from attempts").fetchone()[0]
            con.close()
        results["observability"] = {**otlp, "ledger_requests": ledger_req, "ledger_attempts": ledger_att}
    finally:
        PROCS.stop_all()

    results["loadavg"]["after"] = float(open("/proc/loadavg").read().split()[0])
    # CPU time on the machine during the run that was not the benchmark's (every process it started
    # has been waited for, so their time is in os.times()' children fields), and the hypervisor's steal
    jiffies_after, own_after = cpu_jiffies(), os.times()
    hz = os.sysconf("SC_CLK_TCK")
    own = sum(getattr(own_after, f) - getattr(own_before, f) for f in ("user", "system", "children_user", "children_system"))
    results["machine_during"] = {
        "other_cpu_s": round(max(0.0, (jiffies_after["busy"] - jiffies_before["busy"]) / hz - own), 1),
        "steal_pct": round(100.0 * (jiffies_after["steal"] - jiffies_before["steal"])
                           / max(1, jiffies_after["total"] - jiffies_before["total"]), 2),
    }
    results["finished"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    results["duration_min"] = (time.monotonic() - t_start) / 60
    results["machine"] = machine_info(LITELLM_VENV / "bin" / "python" if litellm_bin else None)
    results["summary"] = summarize(results)
    results["doors_summary"] = summarize_doors(results)
    results["bars"] = bars(results, args)
    json_path = CACHE / f"results-{stamp}{'-quick' if args.quick else ''}.json"
    results["json_path"] = str(json_path.relative_to(REPO))
    json_path.write_text(json.dumps(results, indent=1, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, args, results)
    log(f"wrote {args.out} and {json_path}")
    for b in results["bars"]:
        log(f"bar: {b['bar']}: {b['measured']} -> {b['met']}")
    for scenario, rows in results["doors_summary"].items():
        il, ll, d = rows.get("interlock", {}), rows.get("litellm", {}), rows.get("direct", {})
        log(f"{scenario}: non-stream {_fmt(il.get('c50_rps'), 0)} req/s (LiteLLM {_fmt(ll.get('c50_rps'), 0)}, "
            f"{_ratio(il.get('c50_rps'), ll.get('c50_rps'))}; direct {_fmt(d.get('c50_rps'), 0)}), "
            f"streams {_fmt(il.get('sps'), 1)}/s (LiteLLM {_fmt(ll.get('sps'), 1)}, "
            f"{_ratio(il.get('sps'), ll.get('sps'))}; direct {_fmt(d.get('sps'), 1)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
