"""Streaming load client: C concurrent SSE streams (closed loop), time to first content chunk.

Each of ``--concurrency`` workers opens a stream, reads it to the end, and opens
the next, until ``--streams`` streams have started or ``--duration`` seconds
have passed. Per stream it records the time from sending the request to the
first *content* event (an OpenAI delta with non-empty ``content``, an
Anthropic ``text_delta`` or a Responses ``response.output_text.delta``; the role
chunk, ``message_start`` and ``response.created`` do not count), the total time,
and the number of content events. A stream counts as an error unless it is a
200 that ends properly (``[DONE]`` / ``message_stop`` / ``response.completed``)
with at least ``--min-chunks`` content events. ``--wire`` says which protocol
the target streams (``chat``, ``messages``, ``responses``). Prints one JSON object.

The client does as little per byte as possible (no line splitting: it scans
the accumulated body once for the first content event and counts events at
the end), and its ceiling is the "direct" row of the benchmark.

``--watch-pid PID --upstream-port PORT`` (Linux) also reports what a burst leaves
behind in the gateway: its RSS and the sockets it holds to the upstream port,
before the run, right after it, and every ``--sample-every`` seconds of
``--idle`` seconds with no load (the "resources" object). A burst of 1,000
concurrent streams:

    python bench/streamload.py --url http://127.0.0.1:4000/v1/chat/completions \\
        --body '{"model": "bench-instant", "stream": true, "messages": [...]}' \\
        --concurrency 1000 --streams 1000 --watch-pid GATEWAY_PID --upstream-port 9100 --idle 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time

import aiohttp

_OPENAI_CONTENT = re.compile(rb'"content":\s?"[^"]')
_ANTHROPIC_CONTENT = re.compile(rb'"text_delta"')
# the quoted event type in the data line (the event: line has it unquoted, so it counts once)
_RESPONSES_CONTENT = re.compile(rb'"response\.output_text\.delta"')
#: wire -> (content event pattern, the end of a complete stream)
_WIRES = {
    "chat": (_OPENAI_CONTENT, b"[DONE]"),
    "messages": (_ANTHROPIC_CONTENT, b"message_stop"),
    "responses": (_RESPONSES_CONTENT, b'"response.completed"'),
}


def _last_event(received: bytes) -> tuple[bytes, bytes]:
    """(everything before the last SSE event, the last event) of a stripped body."""
    cut = max(received.rfind(b"\n\n"), received.rfind(b"\r\n\r\n"))
    return (received[:cut].rstrip(), received[cut:]) if cut >= 0 else (b"", received)


def _ended(received: bytes, end_marker: bytes) -> bool:
    """The stream's last event is its protocol's end: [DONE], message_stop, or response.completed.

    SSE comments after it (interlock's ``: x-interlock-cost-usd=...``) are not events, and some
    gateways send a ``[DONE]`` after response.completed or message_stop: neither hides the end.
    """
    rest, last = _last_event(received.rstrip())
    while rest and (all(line.startswith(b":") for line in last.strip().splitlines())
                    or (end_marker != b"[DONE]" and last.strip() == b"data: [DONE]")):
        rest, last = _last_event(rest)
    return end_marker in last


def rss_mb(pid: int) -> float:
    """The process's resident memory (VmRSS), in MB (1e6 bytes)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) * 1024 / 1e6, 1)
    return 0.0


def sockets_to(pid: int, port: int) -> int:
    """TCP sockets the process holds (open descriptors) whose remote port is ``port``, any state."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                        count += 1
        except FileNotFoundError:
            continue
    return count


def resources(pid: int, port: int, label: str, t0: float) -> dict:
    return {"at": label, "t_s": round(time.perf_counter() - t0, 1), "rss_mb": rss_mb(pid),
            "upstream_sockets": sockets_to(pid, port)}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def run(args: argparse.Namespace) -> dict:
    body = args.body.encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {args.key}"}
    if args.wire == "messages":
        headers.update({"x-api-key": args.key, "anthropic-version": "2023-06-01"})
    content_re, end_marker = _WIRES[args.wire]
    ttfts: list[float] = []
    totals: list[float] = []
    chunk_counts: list[int] = []
    errors: dict[str, int] = {}
    started = 0
    deadline = time.perf_counter() + args.duration
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)

    async def one(session: aiohttp.ClientSession) -> None:
        t0 = time.perf_counter()
        first = None
        buf = bytearray()
        try:
            async with session.post(args.url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    await resp.read()
                    errors[f"status {resp.status}"] = errors.get(f"status {resp.status}", 0) + 1
                    return
                async for piece in resp.content.iter_any():
                    if first is None:
                        scan_from = max(0, len(buf) - 32)
                        buf += piece
                        if content_re.search(buf, scan_from):
                            first = time.perf_counter()
                    else:
                        buf += piece
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
            return
        end = time.perf_counter()
        n = len(content_re.findall(buf))
        ended = _ended(bytes(buf), end_marker)
        if first is None or n < args.min_chunks or not ended:
            errors["incomplete stream"] = errors.get("incomplete stream", 0) + 1
            if args.verbose and errors["incomplete stream"] == 1:
                print(bytes(buf[:2000]).decode(errors="replace"))
            return
        ttfts.append(first - t0)
        totals.append(end - t0)
        chunk_counts.append(n)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal started
        while started < args.streams and time.perf_counter() < deadline:
            started += 1
            await one(session)

    watch = args.watch_pid is not None
    t_start = time.perf_counter()
    samples = [resources(args.watch_pid, args.upstream_port, "before", t_start)] if watch else []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
    if watch:  # the client's connections are closed now: what stays open is the gateway's doing
        samples.append(resources(args.watch_pid, args.upstream_port, "after", t_start))
        idle_start = time.perf_counter()
        while (waited := time.perf_counter() - idle_start) < args.idle:
            await asyncio.sleep(min(args.sample_every, args.idle - waited))
            samples.append(resources(args.watch_pid, args.upstream_port,
                                     f"idle {time.perf_counter() - idle_start:.0f}s", t_start))
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {
        **({"resources": samples} if watch else {}),
        "started": started,
        "completed": len(ttfts),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "streams_per_s": round(len(ttfts) / elapsed, 2) if elapsed else 0.0,
        "ttft_p50_ms": ms(pct(ttfts, 50)),
        "ttft_p99_ms": ms(pct(ttfts, 99)),
        "ttft_mean_ms": ms(statistics.fmean(ttfts)) if ttfts else None,
        "stream_p50_ms": ms(pct(totals, 50)),
        "chunks_median": statistics.median(chunk_counts) if chunk_counts else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="JSON request body (must ask for stream: true)")
    parser.add_argument("--wire", choices=sorted(_WIRES), default="chat",
                        help="the protocol the target streams: chat (Chat Completions), messages, responses")
    parser.add_argument("--anthropic", dest="wire", action="store_const", const="messages",
                        help="the same as --wire messages")
    parser.add_argument("--key", default="sk-bench")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--streams", type=int, default=1000, help="stop after starting this many streams")
    parser.add_argument("--duration", type=float, default=30.0, help="...or after this many seconds")
    parser.add_argument("--min-chunks", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--watch-pid", type=int, help="the gateway's pid: report its RSS and upstream sockets")
    parser.add_argument("--upstream-port", type=int, help="with --watch-pid: the upstream port its sockets go to")
    parser.add_argument("--idle", type=float, default=0.0, help="with --watch-pid: seconds to keep sampling after")
    parser.add_argument("--sample-every", type=float, default=5.0, help="with --idle: seconds between samples")
    args = parser.parse_args()
    if args.watch_pid is not None and args.upstream_port is None:
        parser.error("--watch-pid needs --upstream-port")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
