"""Async servers (fake upstreams, a gateway) on a private event loop in a thread.

For synchronous tests (hypothesis drives plain functions; a test around a real
``interlock serve`` subprocess sends blocking requests): the test thread talks HTTP
while the servers run undisturbed on their own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar


__all__ = ["BackgroundLoop", "background_loop"]

T = TypeVar("T")


class BackgroundLoop:
    """An event loop in a daemon thread; what is entered on it is exited when it closes."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-loop", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def enter(self, cm: AbstractAsyncContextManager[T]) -> T:
        """Enter ``cm`` on the loop (a server starts); it is exited by :meth:`close`."""
        return self.run(self._stack.enter_async_context(cm))

    def close(self) -> None:
        try:
            self.run(self._stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()


@contextlib.contextmanager
def background_loop() -> Iterator[BackgroundLoop]:
    bg = BackgroundLoop()
    try:
        yield bg
    finally:
        bg.close()
