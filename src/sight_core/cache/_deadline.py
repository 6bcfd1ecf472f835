"""A cheap per-operation deadline for the hot path: one timer per cache, not one per call.

``asyncio.timeout`` schedules and cancels a timer handle for every operation. The watchdog
instead records ``task -> deadline`` in a dict and keeps a single timer armed at the earliest
deadline; when it fires it cancels overdue tasks, which :meth:`Watchdog.expired` turns back
into a timeout (``uncancel``), exactly like ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio

__all__ = ["Watchdog"]


class Watchdog:
    """Deadlines of the in-flight operations of one cache (one event loop at a time)."""

    __slots__ = ("_expired", "_inflight", "_loop", "_timer", "_timer_at", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._inflight: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def start(self) -> asyncio.Task[object] | None:
        """Start the deadline of the current task's operation; returns the task to pass to
        :meth:`stop` (None outside a task: no deadline)."""
        task = asyncio.current_task()
        if task is None:
            return None
        loop = self._loop
        if loop is None or loop is not task.get_loop():
            loop = self._loop = task.get_loop()
            self._timer = None
        deadline = loop.time() + self.timeout
        self._inflight[task] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire)
            self._timer_at = deadline
        return task

    def stop(self, task: asyncio.Task[object] | None) -> None:
        """The operation finished (normally or not)."""
        if task is not None:
            self._inflight.pop(task, None)

    def expired(self, task: asyncio.Task[object] | None) -> bool:
        """After a CancelledError: whether the watchdog caused it (then it is undone and the
        caller should treat it as a timeout) rather than a real cancellation."""
        if task is None or task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        earliest = None
        for task, deadline in list(self._inflight.items()):
            if deadline <= now:
                del self._inflight[task]
                if not task.done():
                    self._expired.add(task)
                    task.cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._fire)
            self._timer_at = earliest
