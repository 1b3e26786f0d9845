"""Instructions per request: a repeatable measure of the gateway's CPU cost (valgrind's callgrind).

Timed runs of the same build on a shared or virtual machine vary by ±20% from one minute to the
next, which hides any change worth less than that. The number of instructions the gateway's
process executes per request does not: two runs of the same build agree within ~1% (the flushes
in the count follow the clock). So a hot-path change is judged here first, then confirmed with
bench/run.py.

    .venv/bin/python bench/instructions.py                       # interlock as bench/run.py runs it
    .venv/bin/python bench/instructions.py --variant no-ledger   # spans exported, no SQLite ledger
    .venv/bin/python bench/instructions.py --variant no-telemetry --variant floor

One request at a time, ``--warmup`` requests first, then callgrind's counters are zeroed and
``--requests`` more are sent; the gateway gets a few seconds to flush its spans and ledger rows
(their cost is part of the figure), and the total is divided by the requests. User-space
instructions only: the kernel's share (socket and file syscalls) is not counted. Variants:

* ``full``: spans exported over OTLP/http to bench/otlp_sink.py and the SQLite ledger on;
* ``no-ledger``: spans exported, ledger off;
* ``no-telemetry``: neither;
* ``floor``: bench/floor_proxy.py, a bare aiohttp proxy (what any aiohttp gateway costs).

Needs valgrind (``apt-get install valgrind``). Under callgrind the gateway runs ~50 times slower;
a variant takes about a minute.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # (bench/run.py: the same config, upstream, sink and process handling)

BODY = (b'{"model":"bench-instant","messages":[{"role":"user","content":"Say hello in twenty words."}],'
        b'"max_tokens":64}')
VARIANTS = ("full", "no-ledger", "no-telemetry", "floor")


def send(port: int, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", BODY, headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
    conn.close()


def measure(variant: str, workdir: Path, ports: dict[str, int], warmup: int, requests: int) -> int:
    """Instructions per request of one variant (the gateway started under callgrind, then stopped)."""
    out = workdir / f"callgrind.{variant}.out"
    env = run.interlock_env(ports["otlp"] if variant in ("full", "no-ledger") else None)
    if variant == "floor":
        argv = [str(run.VENV_PY), str(run.BENCH / "floor_proxy.py"), "--port", str(ports["gateway"]),
                "--upstream", f"http://127.0.0.1:{ports['up0']}"]
    else:
        cfg = run.interlock_config(workdir, ports["gateway"], ports["up0"], ports["up20"], ledger=variant == "full")
        (workdir / "ledger.db").unlink(missing_ok=True)
        argv = [str(run.INTERLOCK_BIN), "serve", "--config", str(cfg)]
    proc = run.PROCS.start(variant, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
                           log_path=workdir / f"{variant}.log", env=env, cwd=workdir)
    try:
        deadline = time.monotonic() + 600
        while True:  # under valgrind start-up takes a minute or more
            run.PROCS.check_alive()
            try:
                send(ports["gateway"], 1)
                break
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{variant} did not answer within 600 s") from None
                time.sleep(1)
        send(ports["gateway"], warmup)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        send(ports["gateway"], requests)
        time.sleep(3)  # the ledger's flush (1 s) and the span batch timer (1 s) run inside the count
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        run.PROCS.stop(variant)
    dumps = sorted(workdir.glob(f"callgrind.{variant}.out*"), key=lambda p: p.stat().st_mtime)
    total = None
    for dump in reversed(dumps):  # the explicit dump (-d) is the one with the requests in it
        data = dump.read_bytes()
        match = re.search(rb"^summary: (\d+)", data, re.MULTILINE)
        if match and re.search(rb"^desc: Trigger: dump", data, re.MULTILINE):
            total = int(match.group(1))
            break
    if total is None:
        raise RuntimeError(f"no callgrind dump with the requests in {workdir}")
    return total // requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="what to measure (repeatable; default: full)")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install valgrind", file=sys.stderr)
            return 2
    workdir = run.CACHE / time.strftime("instructions-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {name: run.free_port() for name in ("up0", "up20", "otlp", "gateway")}
    signal.signal(signal.SIGINT, run._on_signal)
    signal.signal(signal.SIGTERM, run._on_signal)
    try:
        run.start_upstream_and_sink(workdir, ports, None)
        for variant in args.variant or ["full"]:
            per_request = measure(variant, workdir, ports, args.warmup, args.requests)
            print(f"{variant}: {per_request:,} instructions/request ({args.requests} requests, one at a time)",
                  flush=True)
    finally:
        run.PROCS.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
