#!/usr/bin/env python3
"""What the shared store costs: interlock on Redis against interlock on the in-memory store.

    .venv/bin/python bench/store.py            # ~6 min; writes docs/benchmarks-store.md
    .venv/bin/python bench/store.py --quick    # ~2 min smoke run, says so

Two ``interlock serve`` processes on the same config but for ``[store]`` (one in-memory,
one on a local ``redis-server`` started for the run), with spans and the ledger on and a
global budget configured so every request also reserves and reconciles a budget counter
(the store work a production gateway does per request: breaker and latency bookkeeping,
in-flight leases, budget reservation). Both gateways are pinned to the same CPU; the fake
upstream, Redis and the load generator to the other(s). Runs alternate between the two
gateways within every round and the order rotates every round, so drift hits both equally.

Reported: the added p50/p99 latency of one request at a time (wrk, 1 connection) and the
throughput at 50 connections, each as Redis minus (or over) memory, medians over the rounds.
Redis on loopback here; over a network, add the network's round trips.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402  (bench/run.py: process management, wrk, the upstream, the config)

REPORT = R.REPO / "docs" / "benchmarks-store.md"


def redis_server(workdir: Path, port: int, cpus: set[int] | None) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
        binary = shutil.which("redis-server")
    assert binary is not None
    R.PROCS.start("redis-server", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--dir", str(workdir)], log_path=workdir / "redis-server.log", cpus=cpus)


def gateway_config(workdir: Path, name: str, port: int, ports: dict[str, int], store: str | None) -> Path:
    base = R.interlock_config(workdir, port, ports["up0"], ports["up20"]).read_text()
    base = base.replace(str(workdir / "ledger.db"), str(workdir / f"ledger-{name}.db"))
    extra = '\n[[budgets]]\nscope = "global"\ndaily_usd = 1000000000\n'
    if store:
        extra += f'\n[store]\nurl = "{store}"\nprefix = "bench:"\n'
    path = workdir / f"interlock-{name}.toml"
    path.write_text(base + extra)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description="interlock on Redis vs on the in-memory store")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    wrk = R.ensure_wrk()
    cpus = sorted(os.sched_getaffinity(0))
    gw_cpus, lg_cpus = (None, None) if args.no_pin or len(cpus) < 2 else ({cpus[0]}, set(cpus[1:]))
    workdir = Path(tempfile.mkdtemp(prefix="interlock-bench-store-"))
    ports = {k: R.free_port() for k in ("up0", "up20", "otlp", "redis", "memory", "shared")}
    try:
        R.start_upstream_and_sink(workdir, ports, lg_cpus)
        redis_server(workdir, ports["redis"], lg_cpus)
        systems = {"memory": None, "redis": f"redis://127.0.0.1:{ports['redis']}/0"}
        gw_port = {"memory": ports["memory"], "redis": ports["shared"]}
        for name, url in systems.items():
            config = gateway_config(workdir, name, gw_port[name], ports, url)
            R.PROCS.start(name, [str(R.INTERLOCK_BIN), "serve", "--config", str(config)],
                          log_path=workdir / f"{name}.log", env=R.interlock_env(ports["otlp"]), cpus=gw_cpus)
        for name in systems:
            R.wait_ready(name, f"http://127.0.0.1:{gw_port[name]}/health", 60)
        status = json.loads(R.http("GET", f"http://127.0.0.1:{gw_port['redis']}/health/providers")[2])["store"]
        assert status["kind"] == "redis" and not status["degraded"], status
        runner = R.Runner(argparse.Namespace(stream_concurrency=20), wrk, workdir, lg_cpus)
        body = R.chat_body("bench-instant", False)
        results: dict[str, dict[str, list[dict[str, Any]]]] = {"latency": {}, "throughput": {}}
        for name in systems:  # warm-up: connection pools, the budget counter's seeding, JIT-free but cache-warm
            runner.wrk_run(f"http://127.0.0.1:{gw_port[name]}/v1/chat/completions", body, 10, 2.0)
        order = list(systems)
        for i in range(rounds):
            R.log(f"round {i + 1}/{rounds}")
            for name in order:
                url = f"http://127.0.0.1:{gw_port[name]}/v1/chat/completions"
                for test, conns in (("latency", 1), ("throughput", args.connections)):
                    res = runner.wrk_run(url, body, conns, seconds)
                    if res["errors"]:
                        raise RuntimeError(f"{name} {test}: {res['errors']} errors: {res}")
                    results[test].setdefault(name, []).append(res)
                    time.sleep(0.5)
            order.reverse()
        R.PROCS.check_alive()
        status = json.loads(R.http("GET", f"http://127.0.0.1:{gw_port['redis']}/health/providers")[2])["store"]
        summary = summarize(results)
        summary["store_status_after"] = status
        write(summary, args, rounds, seconds, gw_cpus, lg_cpus)
        (R.CACHE).mkdir(parents=True, exist_ok=True)
        (R.CACHE / "store.json").write_text(json.dumps({"summary": summary, "raw": results}, indent=1))
        print(REPORT.read_text())
        return 0
    finally:
        R.PROCS.stop_all()


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    def med(test: str, name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[test][name]))

    out: dict[str, Any] = {}
    for name in ("memory", "redis"):
        out[name] = {"p50_ms": med("latency", name, "lat_p50_us") / 1000, "p99_ms": med("latency", name, "lat_p99_us") / 1000,
                     "rps": med("throughput", name, "rps")}
    out["added_p50_ms"] = out["redis"]["p50_ms"] - out["memory"]["p50_ms"]
    out["added_p99_ms"] = out["redis"]["p99_ms"] - out["memory"]["p99_ms"]
    out["throughput_ratio"] = out["redis"]["rps"] / out["memory"]["rps"] if out["memory"]["rps"] else None
    return out


def write(s: dict[str, Any], args: argparse.Namespace, rounds: int, seconds: float,
          gw_cpus: set[int] | None, lg_cpus: set[int] | None) -> None:
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# The shared store's cost",
        "",
        f"Generated by `bench/store.py`{' --quick (a smoke run)' if args.quick else ''} on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {rounds} rounds of {seconds:g} s per test, alternating.",
        f"{os.cpu_count()} CPUs; gateways pinned to {sorted(gw_cpus) if gw_cpus else 'all'}, upstream, Redis and wrk "
        f"to {sorted(lg_cpus) if lg_cpus else 'all'}. {redis_version}, on loopback.",
        "",
        "Both gateways: spans exported over OTLP, the SQLite ledger on, one global budget (so every request "
        "reserves and reconciles a budget counter), `bench-instant` route (instant fake upstream).",
        "",
        "| | in-memory store | Redis store | Redis − memory |",
        "|---|---|---|---|",
        f"| p50 latency, 1 connection | {s['memory']['p50_ms']:.3f} ms | {s['redis']['p50_ms']:.3f} ms | "
        f"{s['added_p50_ms']:+.3f} ms |",
        f"| p99 latency, 1 connection | {s['memory']['p99_ms']:.3f} ms | {s['redis']['p99_ms']:.3f} ms | "
        f"{s['added_p99_ms']:+.3f} ms |",
        f"| throughput, {args.connections} connections | {s['memory']['rps']:,.0f} req/s | {s['redis']['rps']:,.0f} req/s | "
        f"{s['throughput_ratio']:.2f}× |",
        "",
        "Per request on Redis: the budget reservation and its reconciliation (one Lua script each), the "
        "attempt's in-flight lease and its release, the breaker's and the latency average's atomic updates; "
        "breaker admission and latency reads come from process memory (`[store] refresh`).",
        "",
    ]
    REPORT.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
