"""Instrumented work items shared by the concurrency tests (imported by them)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any


class Boom(Exception):
    """The error the instrumented items raise."""


class Probe:
    """Counts what instrumented items do: in flight now, the peak, starts, ends, cancellations."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.started: list[int] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.pulled = 0
        self.max_ahead = 0  # max of (items pulled from the source - items finished)

    async def work(
        self,
        i: int,
        *,
        yields: int = 1,
        fail: bool = False,
        wait: asyncio.Event | None = None,
    ) -> int:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.started.append(i)
        try:
            for _ in range(yields):
                await asyncio.sleep(0)
            if wait is not None:
                await wait.wait()
            if fail:
                raise Boom(i)
            return i
        except asyncio.CancelledError:
            self.cancelled.append(i)
            raise
        finally:
            self.in_flight -= 1
            self.finished.append(i)

    def source(self, n: int, **kwargs: Any) -> Iterator[Coroutine[Any, Any, int]]:
        """A generator of ``work`` coroutines that records how far ahead it was pulled."""
        for i in range(n):
            self.pulled += 1
            self.max_ahead = max(self.max_ahead, self.pulled - len(self.finished))
            yield self.work(i, **kwargs)


async def settle(ticks: int = 20) -> None:
    """Let the event loop run a few iterations."""
    for _ in range(ticks):
        await asyncio.sleep(0)


class ManualClock:
    """Stands in for the running loop's ``time()``: timers fire only when a test advances it,
    so timeouts and rate limits are checked by counts at chosen instants, whatever the load."""

    def __init__(self, start: float) -> None:
        self.start = self.now = start

    def __call__(self) -> float:
        return self.now

    async def advance_to(self, offset: float) -> None:
        """Set the clock to ``start + offset`` and let the loop run what became due."""
        self.now = self.start + offset
        await settle()
