"""A named, shareable concurrency cap with an optional start-rate limit."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from ._validate import check_limit, check_optional_positive

__all__ = ["Limiter"]


class Limiter:
    """At most ``limit`` holders at once and, with ``per_second``, at most that rate of starts.

    Share one instance for one scarce resource (``Limiter("gemini-pro", 8)`` for a model quota,
    one per database pool) and pass it to every fan-out that uses it: ``async with limiter:``
    around a call, or ``gather_limited(..., limiter=limiter)``. Waiters are served first come,
    first served. The rate limit is a token bucket on *starts*: up to ``burst`` starts at once,
    then one every ``1 / per_second`` seconds. The limiter is bound to no event loop until used,
    so it may be created at import time; use it from one loop only.

    It is not reentrant: an item run under ``gather_limited(..., limiter=l)`` that also enters
    ``async with l`` holds two slots, and can deadlock once every slot is taken that way.

    ``in_flight`` counts holders (acquired, not yet released); ``waiting`` counts callers inside
    :meth:`acquire`. Costs: an uncontended acquire without a rate limit takes no lock and
    creates no future.

    Raises:
        TypeError / ConfigurationError: ``limit`` is not an int >= 1, ``per_second`` is not
            a number > 0, or ``burst`` is not an int >= 1; the message names the argument.
    """

    __slots__ = (
        "_in_flight",
        "_interval",
        "_slots",
        "_tat",
        "_tau",
        "_waiters",
        "burst",
        "limit",
        "name",
        "per_second",
    )

    def __init__(
        self, name: str, limit: int, *, per_second: float | None = None, burst: int = 1
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("name must be a non-empty str")
        self.name = name
        self.limit = check_limit(limit, "limit")
        self.per_second = check_optional_positive(per_second, "per_second")
        self.burst = check_limit(burst, "burst")
        self._interval = 0.0 if self.per_second is None else 1.0 / self.per_second
        self._tau = (self.burst - 1) * self._interval
        self._tat = float("-inf")  # theoretical arrival time of the next start (GCRA)
        self._slots = 0  # slots taken, including callers still waiting for a rate token
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        """Holders that acquired and have not released yet."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers currently blocked in :meth:`acquire` (for a slot or a rate token)."""
        return len(self._waiters) + (self._slots - self._in_flight)

    def locked(self) -> bool:
        """True when an :meth:`acquire` right now would have to wait for a slot."""
        return self._slots >= self.limit or bool(self._waiters)

    async def acquire(self) -> None:
        """Wait for a slot (FIFO), then for a start token if rate-limited.

        Cancellation while waiting gives the slot back, and the start token too unless a later
        caller has already been given the next start time; nothing is leaked.
        """
        if self._slots < self.limit and not self._waiters:
            self._slots += 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut  # release() hands its slot over by resolving this future
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release_slot()  # the slot arrived together with the cancellation
                elif fut in self._waiters:
                    self._waiters.remove(fut)
                raise
        if self.per_second is not None:
            try:
                await self._wait_for_token()
            except BaseException:
                self._release_slot()
                raise
        self._in_flight += 1

    async def _wait_for_token(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._tat - self._tau)
        reserved = self._tat = max(self._tat, start) + self._interval
        if start > now:
            try:
                await asyncio.sleep(start - now)
            except BaseException:
                if self._tat == reserved:  # no later start was booked after this one
                    self._tat -= self._interval
                raise

    def release(self) -> None:
        """Give a slot back; the oldest waiter (if any) gets it. RuntimeError if none is held."""
        if self._in_flight <= 0:
            raise RuntimeError(f"Limiter {self.name!r} released more times than acquired")
        self._in_flight -= 1
        self._release_slot()

    def _release_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes to the waiter; the count is unchanged
                return
        self._slots -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        rate = f", per_second={self.per_second}, burst={self.burst}" if self.per_second else ""
        return (
            f"Limiter({self.name!r}, limit={self.limit}{rate}, "
            f"in_flight={self._in_flight}, waiting={self.waiting})"
        )
