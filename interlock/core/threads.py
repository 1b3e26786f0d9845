"""Background threads below the event loop's priority (span export, ledger writes).

The gateway serves every request on one event loop; threads that export spans
or write the ledger only need CPU time the loop does not. These helpers lower
such a thread's priority once, from inside it or right after it starts.
``INTERLOCK_BACKGROUND_NICE`` sets how much (``0`` turns both helpers off).
"""

from __future__ import annotations

import logging
import os
import threading

# these messages have always been logged under the telemetry logger, where span export first used them
log = logging.getLogger("interlock.telemetry")

#: how far background threads go below the event loop (a ``nice`` increment); 0 leaves them alone
BACKGROUND_NICE = int(os.environ.get("INTERLOCK_BACKGROUND_NICE", "5"))


def background_thread(thread: threading.Thread | None, nice: int | None = None) -> None:
    """Give a background thread (span export, ledger writes) a lower CPU priority than the event loop.

    On a busy core the kernel otherwise lets the export thread finish its time
    slice (milliseconds) before the woken event loop runs, and a request waits
    that long. Linux only (per-thread nice); elsewhere, or when refused, nothing changes.
    """
    nice = BACKGROUND_NICE if nice is None else nice
    if thread is None or not nice or not hasattr(os, "setpriority"):
        return
    tid = getattr(thread, "native_id", None)
    if tid is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        log.debug("could not lower the priority of thread %s", thread.name)


#: False once :func:`no_idle_threads` was called: every background thread is only ``nice``
_idle_allowed = True


def no_idle_threads() -> None:
    """Make :func:`idle_thread` refuse from now on (``serve --workers``: call before building the gateway).

    A ``SCHED_IDLE`` thread can wait indefinitely for CPU while it holds a lock.
    Inside one process that only delays its own work; when other processes wait
    for the same lock (the workers of ``serve --workers`` writing one SQLite
    ledger) a starved holder stalls them all, so workers keep every background
    thread at the ``nice`` level instead.
    """
    global _idle_allowed
    _idle_allowed = False


def idle_thread(thread: threading.Thread | None) -> bool:
    """Put a background thread under Linux's ``SCHED_IDLE`` policy: it runs only when the CPU is otherwise idle.

    For work that can wait for a quiet moment (routine ledger writes). False
    where the policy does not exist or is refused, when
    ``INTERLOCK_BACKGROUND_NICE=0`` turns thread priorities off, and after
    :func:`no_idle_threads`.
    """
    if thread is None or not BACKGROUND_NICE or not _idle_allowed or not hasattr(os, "sched_setscheduler"):
        return False
    policy, tid = getattr(os, "SCHED_IDLE", None), getattr(thread, "native_id", None)
    if policy is None or tid is None:
        return False
    try:
        os.sched_setscheduler(tid, policy, os.sched_param(0))
    except OSError:
        return False
    return True

__all__ = ["BACKGROUND_NICE", "background_thread", "idle_thread", "no_idle_threads"]
