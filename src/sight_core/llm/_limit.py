"""A model's concurrency cap, shared by every event loop and thread of the process.

:class:`SharedLimiter` is a :class:`~sight_core.concurrency.Limiter` whose state is guarded by
a thread lock and whose waiters may belong to different event loops: the application's loop
(``ainvoke``), the sync API's background loop (``invoke``/``batch``), a test's loop. A released
slot is handed to the oldest waiter on *its* loop (``call_soon_threadsafe`` when that is another
loop), so the cap holds across sync and async callers and nobody waits on a future of a loop
that is not running it. A waiter whose loop has closed is skipped. A forked child starts with
every limiter empty: the parent's holders and waiters (other threads, other loops) do not
exist there, and their slots would otherwise be lost to the child for good.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import deque

from sight_core.concurrency import Limiter

__all__ = ["SharedLimiter"]


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_live: weakref.WeakSet[SharedLimiter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for limiter in list(_live):
        limiter._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedLimiter(Limiter):
    """At most ``limit`` holders at once, across threads and event loops; FIFO.

    Same interface as :class:`~sight_core.concurrency.Limiter` without its rate limit
    (``per_second``). Costs: an uncontended acquire takes one thread lock and creates no
    future. Cancellation while waiting gives a slot that arrived meanwhile back; nothing leaks.
    """

    __slots__ = ("__weakref__", "_lock", "_queue")

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(name, limit)
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        _live.add(self)

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # may have been held by a thread that is gone
        self._queue.clear()
        self._in_flight = 0

    @property
    def waiting(self) -> int:
        """Callers currently blocked in :meth:`acquire`."""
        return len(self._queue)

    def locked(self) -> bool:
        """True when an :meth:`acquire` right now would have to wait."""
        return self._in_flight >= self.limit or bool(self._queue)

    async def acquire(self) -> None:
        """Wait for a slot (first come, first served, whatever the caller's loop)."""
        with self._lock:
            if self._in_flight < self.limit and not self._queue:
                self._in_flight += 1
                return
            waiter = _Waiter(asyncio.get_running_loop())
            self._queue.append(waiter)
        try:
            await waiter.future
        except BaseException:
            with self._lock:
                granted = waiter.granted
                if not granted and waiter in self._queue:
                    self._queue.remove(waiter)
            if granted:
                self.release()  # the slot arrived together with the cancellation
            raise

    def release(self) -> None:
        """Give a slot back; the oldest live waiter gets it. RuntimeError if none is held."""
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError(f"Limiter {self.name!r} released more times than acquired")
            while self._queue:
                waiter = self._queue.popleft()
                if waiter.future.done() or waiter.loop.is_closed():
                    continue  # cancelled (it removes itself too) or its loop is gone
                waiter.granted = True  # the slot passes on; the count is unchanged
                break
            else:
                self._in_flight -= 1
                return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is waiter.loop:
            _wake(waiter.future)
            return
        try:
            waiter.loop.call_soon_threadsafe(_wake, waiter.future)
        except RuntimeError:  # its loop closed in the meantime: pass the slot on
            self.release()
