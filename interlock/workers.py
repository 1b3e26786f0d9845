"""``interlock serve --workers N``: N gateway processes on one port, and the supervisor that runs them.

Each worker is the ordinary ``interlock serve`` (same start-up: uvloop, GC freeze,
log redaction, SIGHUP reload) re-run as a subprocess with an internal flag; it
binds the shared host:port with ``SO_REUSEPORT`` so the kernel spreads incoming
connections over the workers. The supervisor (the process the user started):

* validates the config once and refuses what would silently become per-worker
  (:func:`workers_problem`);
* starts the workers, each in a process group of its own (a terminal's Ctrl+C
  reaches the supervisor only, which forwards it once), and prints
  "listening on" only when every worker has reported that it accepts
  connections;
* forwards SIGTERM and SIGINT as SIGTERM (each worker drains: in-flight
  requests finish, the ledger writes its buffer) and exits 0 once all have
  exited; forwards SIGHUP (each worker reloads its config);
* restarts a worker that exits on its own, after a backoff that grows while
  workers keep dying young, so a crash loop does not spin.

The supervisor and a worker talk over one socket pair: the worker writes
``ready <pid>`` when its sockets listen, and treats end-of-file (the
supervisor is gone, even killed with SIGKILL) as SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interlock.core.config import Config

log = logging.getLogger("interlock.workers")

#: seconds before restarting a worker that died; doubled for each worker that dies young, up to the max
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
#: a worker that ran at least this many seconds before dying resets the backoff
STABLE_AFTER = 30.0


def parse_workers(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` (the CPUs this process may run on)."""
    if value.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"--workers: expected a number or 'auto', not {value!r}") from None
    if n < 1:
        raise ValueError(f"--workers: must be at least 1, not {n}")
    return n


def workers_problem(cfg: Config, workers: int, *, demo: bool = False) -> str | None:
    """Why ``cfg`` cannot be served by ``workers`` processes, or None.

    Everything that must be counted once for the whole gateway (breakers,
    round-robin positions, in-flight counts, budgets, rate limits, anomaly
    baselines) lives in the ``[store]``; with the in-memory store each worker
    would keep its own, silently. So several workers need a shared store.
    """
    if workers <= 1:
        return None
    if demo:
        return (f"--workers {workers} cannot be combined with --demo: the demo's simulated providers run inside "
                "the gateway process. Run the demo with one worker.")
    if not cfg.store.shared:
        return (f"--workers {workers} needs shared state: breakers, round-robin positions, budgets and rate "
                "limits would each be counted per worker. Set [store] url = \"redis://...\" "
                "(pip install 'interlock[redis]'), or run one worker.")
    if cfg.port == 0:
        return f"--workers {workers} needs a fixed port: with port 0 each worker would listen on a port of its own."
    return None


# --------------------------------------------------------------------------- #
# the worker's side
# --------------------------------------------------------------------------- #


class WorkerLink:
    """A worker's end of its socket pair with the supervisor (``--worker-fd``)."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.supervisor = os.getppid()

    def reload_all(self) -> None:
        """``POST /-/reload`` reached this worker: the supervisor forwards SIGHUP to every worker."""
        if os.getppid() == self.supervisor:  # not re-parented: the supervisor is still there
            os.kill(self.supervisor, signal.SIGHUP)

    def ready(self) -> None:
        """Tell the supervisor this worker accepts connections (called once its sockets listen)."""
        try:
            self.sock.send(f"ready {os.getpid()}\n".encode())
        except OSError:
            pass  # the supervisor is gone: the watch below stops this worker

    async def watch(self, app: Any) -> None:
        """aiohttp ``on_startup``: the supervisor's end closing (it exited or was killed) stops this worker."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = self.sock.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.sock.fileno())
                log.warning("worker %d: the supervisor is gone; stopping", os.getpid())
                os.kill(os.getpid(), signal.SIGTERM)  # the same graceful path as a forwarded SIGTERM

        loop.add_reader(self.sock.fileno(), readable)


# --------------------------------------------------------------------------- #
# the supervisor
# --------------------------------------------------------------------------- #


@dataclass
class _Worker:
    slot: int
    proc: asyncio.subprocess.Process
    sock: socket.socket
    started: float
    ready: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Supervisor:
    """Runs ``workers`` copies of ``argv`` (which must accept ``--worker-fd FD``) and keeps them running."""

    def __init__(self, argv: Sequence[str], workers: int, *, listening: str = "interlock: listening",
                 out: Callable[[str], None] | None = None) -> None:
        self.argv = list(argv)
        self.n = workers
        self.listening = listening  # printed, with the workers' pids, once every worker listens
        self.out = out or (lambda line: print(line, flush=True))
        self.workers: dict[int, _Worker] = {}  # by slot
        self.stopping = False
        self.restarts = 0
        self._delay = RESTART_DELAY
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _spawn(self, slot: int) -> _Worker:
        parent, child = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, "--worker-fd", str(child.fileno()),
                pass_fds=(child.fileno(),), start_new_session=True, stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        worker = _Worker(slot, proc, parent, time.monotonic())
        self.workers[slot] = worker
        if self.stopping:  # a restart racing a stop: it has served nothing yet
            self._signal(signal.SIGTERM)
        task = asyncio.create_task(self._read(worker), name=f"interlock-worker-{slot}-link")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return worker

    async def _read(self, worker: _Worker) -> None:
        """The worker's ``ready <pid>`` line; end-of-file first means it died before listening."""
        loop = asyncio.get_running_loop()
        buf = b""
        while b"\n" not in buf:
            try:
                data = await loop.sock_recv(worker.sock, 64)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
        if not worker.ready.done():
            if buf.startswith(b"ready "):
                worker.ready.set_result(int(buf.split()[1]))
            else:
                worker.ready.set_exception(RuntimeError("exited before listening"))

    def _signal(self, signum: int) -> None:
        for worker in list(self.workers.values()):
            if worker.proc.returncode is None:
                try:
                    worker.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def _on_stop(self, signum: int) -> None:
        if not self.stopping:
            log.warning("%s: stopping %d workers (each finishes its requests and writes its ledger)",
                        signal.Signals(signum).name, len(self.workers))
        self.stopping = True
        self._signal(signal.SIGTERM)  # SIGINT too: a worker drains the same way on either
        self._stop.set()

    def _on_hup(self) -> None:
        log.warning("SIGHUP: reloading the configuration in %d workers", len(self.workers))
        self._signal(signal.SIGHUP)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._on_stop, signal.SIGINT)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            for slot in range(self.n):
                await self._spawn(slot)
            pids = []
            for worker in list(self.workers.values()):
                waiting: asyncio.Future[Any] = asyncio.ensure_future(worker.ready)
                stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait([waiting, stop], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if self.stopping:
                    return await self._drain(0)
                try:
                    pids.append(waiting.result())
                except RuntimeError:
                    code = await worker.proc.wait()
                    self.out(f"interlock: worker {worker.proc.pid} exited with status {code} before listening; "
                             "stopping (its output above says why)")
                    self.stopping = True
                    self._signal(signal.SIGTERM)
                    return await self._drain(1)
            self.out(f"{self.listening} ({self.n} workers, pids {', '.join(map(str, pids))})")
            watchers = {asyncio.create_task(self._watch(w.slot)) for w in self.workers.values()}
            await self._stop.wait()
            code = await self._drain(0)
            for task in watchers:
                task.cancel()
            return code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _drain(self, code: int) -> int:
        """Wait for every worker to exit (they were sent SIGTERM)."""
        for worker in list(self.workers.values()):
            status = await worker.proc.wait()
            worker.sock.close()
            if status not in (0, -signal.SIGTERM, -signal.SIGINT):
                log.warning("worker %d exited with status %d", worker.proc.pid, status)
        return code

    async def _watch(self, slot: int) -> None:
        """Restart the worker in ``slot`` whenever it exits while the supervisor is not stopping."""
        while True:
            worker = self.workers[slot]
            status = await worker.proc.wait()
            worker.sock.close()
            if self.stopping:
                return
            ran = time.monotonic() - worker.started
            if ran >= STABLE_AFTER:
                self._delay = RESTART_DELAY
            delay = self._delay
            self._delay = min(RESTART_DELAY_MAX, self._delay * 2)
            log.error("worker %d exited unexpectedly with status %d after %.1fs; restarting it in %gs",
                      worker.proc.pid, status, ran, delay)
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
                return  # stopping meanwhile
            except TimeoutError:
                pass
            new = await self._spawn(slot)
            self.restarts += 1
            try:
                pid = await new.ready
            except RuntimeError:
                continue  # died again before listening: the loop waits for its status and backs off
            log.warning("worker %d restarted as %d", worker.proc.pid, pid)


def worker_argv(args: Any, cfg: Config) -> list[str]:
    """The command line of one worker: this ``interlock serve`` with the resolved host and port."""
    argv = [sys.executable, "-m", "interlock", "serve", "--host", cfg.host, "--port", str(cfg.port)]
    if args.config:
        argv += ["--config", os.path.abspath(args.config)]
    return argv

