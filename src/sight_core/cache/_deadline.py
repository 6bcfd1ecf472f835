"""Admission and deadline of every backend operation of one cache: one mechanism for all.

Two things make an operation's deadline honest:

- **Admission.** At most ``slots`` operations are on the wire at once (the client pool's
  size less the pub/sub connection). The others wait their turn *before* their deadline
  starts: time spent queueing for a connection during a burst is load, not an outage, so it
  neither times an operation out nor reaches the breaker. The wait is bounded by the
  operations ahead, each bounded by its own deadline; when the breaker opens, queued
  operations see it and skip the backend.
- **One timer.** ``asyncio.timeout`` schedules and cancels a timer handle per operation. Here a
  dict holds ``task -> deadline`` and a single timer is armed at the earliest one; when it
  fires it cancels overdue tasks, which :meth:`Operations.expired` turns back into a timeout
  (``uncancel``), as ``asyncio.timeout`` does.

At its deadline an operation is judged by whether the backend made progress meanwhile
(another operation completed after it started). None: it is given up as ``STALLED``, a sign of
an outage. Some: it is stuck behind load (a busy pool, an event loop starved of CPU), not
facing a dead server, so it gets one more deadline, and if it still has not completed it is
given up as ``BUSY``, which is not evidence of an outage. The decision is taken one loop turn
after the timer fires, so a reply read in the same turn is not mistaken for a timeout.

Use: ``if ops.free > 0: ops.free -= 1`` else ``await ops.wait()`` (either way the caller
holds a slot), then ``task = ops.start()``, the call, and ``ops.stop(task, ok)`` exactly once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from enum import Enum

__all__ = ["Expiry", "OperationTimeout", "Operations"]

UNLIMITED = 1 << 30
#: Slots before the first completions: opening ~50 connections at once took 0.2-0.3 s on a
#: loaded 2-core machine (connect and handshake), more than one 250 ms deadline.
FIRST_SLOTS = 8


class Expiry(Enum):
    """Why an operation's task was cancelled."""

    CANCELLED = 0  # by its caller: a real cancellation, re-raise it
    STALLED = 1  # its deadline passed and nothing else completed meanwhile: an outage sign
    BUSY = 2  # its deadline passed while other operations completed: load, not an outage


class OperationTimeout(TimeoutError):
    """A backend operation ran past its deadline. ``stalled``: nothing else completed
    meanwhile (a sign of an outage); otherwise it was stuck behind other work (load)."""

    def __init__(self, stalled: bool) -> None:
        super().__init__("the cache's operation deadline passed")
        self.stalled = stalled


class Operations:
    """Admission slots and deadlines of the in-flight operations of one cache (one event loop
    at a time)."""

    __slots__ = (
        "_completed",
        "_expired",
        "_inflight",
        "_loop",
        "_most",
        "_queue",
        "_slots",
        "_timer",
        "_timer_at",
        "free",
        "timeout",
    )

    def __init__(self, timeout: float, slots: int = UNLIMITED) -> None:
        self.timeout = timeout
        self.free = slots  # slots nobody holds; <= 0 means wait()
        self._slots = self._most = slots  # slots now, and at most
        self._queue: deque[asyncio.Future[None]] = deque()
        # task -> (deadline, completions when it started, extra time it may still get)
        self._inflight: dict[asyncio.Task[object], tuple[float, int, float]] = {}
        self._expired: dict[asyncio.Task[object], Expiry] = {}
        self._completed = 0  # operations that completed within their deadline
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def resize(self, slots: int) -> None:
        """Allow up to ``slots`` operations at once (at bind, before any is in flight),
        starting with :data:`FIRST_SLOTS` and one more per operation that completes while
        others queue, so a cold pool opens its connections a few at a time instead of all
        at once against one deadline."""
        self._most = max(slots, 1)
        self.free = min(self._most, FIRST_SLOTS)
        self._slots = self.free
        self._queue.clear()

    async def wait(self) -> None:
        """Wait for a free slot (when ``free <= 0``); on return the caller holds it and must
        :meth:`stop` (with or without :meth:`start`). Cancellation-safe."""
        if self.free > 0 and not self._queue:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed a slot just as we were cancelled: pass it on
            else:
                self._queue.remove(fut)
            raise

    def _release(self) -> None:
        queue = self._queue
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to the next in line, never to a newcomer
                return
        self.free += 1

    def start(self, timeout: float | None = None) -> asyncio.Task[object] | None:
        """Start the deadline (``timeout``, default :attr:`timeout`) of the current task's
        operation; returns the task to pass to :meth:`stop` (None outside a task: no
        deadline)."""
        task = asyncio.current_task()
        if task is None:
            return None
        loop = self._loop
        if loop is None or loop is not task.get_loop():
            loop = self._loop = task.get_loop()
            self._timer = None
        span = self.timeout if timeout is None else timeout
        deadline = loop.time() + span
        self._inflight[task] = (deadline, self._completed, span)
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._fire)
            self._timer_at = deadline
        return task

    def stop(self, task: asyncio.Task[object] | None, ok: bool = False) -> None:
        """The operation finished (``ok``: it completed within its deadline); frees its slot."""
        if task is not None and self._inflight.pop(task, None) is not None and ok:
            self._completed += 1
            if self._queue and self._slots < self._most:
                self._slots += 1  # the backend keeps up: one more at once
                self._release()
        if self._queue:
            self._release()
        else:
            self.free += 1

    def expired(self, task: asyncio.Task[object] | None) -> Expiry:
        """After a CancelledError: whether the deadline caused it (then it is undone and the
        caller should treat it as a timeout, an outage sign only when ``STALLED``) or the
        caller was really cancelled (``CANCELLED``: re-raise)."""
        if task is None:
            return Expiry.CANCELLED
        why = self._expired.pop(task, None)
        if why is None or task.uncancel() != 0:
            return Expiry.CANCELLED
        return why

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        earliest = None
        for task, (deadline, _, _) in list(self._inflight.items()):
            if deadline <= now:
                # Decide one loop turn later: a reply read in this turn (the loop was busy or
                # descheduled past the deadline) has scheduled its task's resumption before
                # this call_soon; it completes first and is not mistaken for a timeout.
                loop.call_soon(self._expire, task)
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._fire)
            self._timer_at = earliest

    def _expire(self, task: asyncio.Task[object]) -> None:
        entry = self._inflight.get(task)
        if entry is None or task.done():
            self._inflight.pop(task, None)
            return  # it completed meanwhile
        deadline, completed, extra = entry
        loop = self._loop
        if loop is not None and deadline > loop.time():
            return  # the task moved on to its next operation, whose deadline is still ahead
        busy = self._completed > completed
        if busy and extra and loop is not None:
            # The backend answered others since this one started: it is stuck behind load
            # (a busy pool, a starved event loop), not facing a dead server. One more
            # deadline, once.
            deadline = loop.time() + extra
            self._inflight[task] = (deadline, completed, 0.0)
            if self._timer is None or deadline < self._timer_at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(deadline, self._fire)
                self._timer_at = deadline
            return
        del self._inflight[task]
        self._expired[task] = Expiry.BUSY if busy else Expiry.STALLED
        task.cancel()
