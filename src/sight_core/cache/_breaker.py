"""A tiny backend circuit breaker so a dead or black-holed Redis costs one call per window.

States: closed (every operation goes), open (operations are skipped until ``cooldown`` has
passed), half-open (exactly one probe operation goes; its outcome closes or re-opens it; a
probe that reports neither, because its caller was cancelled, is given up after another
``cooldown`` and the next caller probes).
An *unreachable* error (connection refused/reset, timeout) opens it at once: the next caller
would pay the same deadline. Other errors (``OOM``, ``READONLY``...) open it after
``threshold`` consecutive failures. ``allow()`` is a couple of attribute reads.

Every open and every probe starts a new *epoch*; an operation reports its outcome with the
epoch it started in, so the late reply of an operation sent before the breaker opened (or
before the probe was claimed) neither closes nor re-opens it: only the probe decides.
:meth:`Breaker.opening` lets a waiter (a stampede-lock waiter) stop as soon as it opens.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["Breaker"]

_CLOSED, _OPEN, _HALF_OPEN = 0, 1, 2


class Breaker:
    """Consecutive-failure breaker with a cooldown and a single half-open probe."""

    __slots__ = (
        "_failures",
        "_probe_at",
        "_state",
        "_watchers",
        "cooldown",
        "epoch",
        "opened",
        "threshold",
    )

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._state = _CLOSED
        self._failures = 0
        self._probe_at = 0.0
        self.opened = 0  # how many times it opened (for stats and tests)
        self.epoch = 0  # bumped at every open and every probe claim
        self._watchers: set[asyncio.Future[None]] = set()

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        return ("closed", "open", "half-open")[self._state]

    def allow(self) -> bool:
        """Whether an operation may contact the backend now (claims the probe if due)."""
        if self._state == _CLOSED:
            return True
        now = time.monotonic()
        if now >= self._probe_at:  # open and cooled down, or a half-open probe was lost
            self._state = _HALF_OPEN
            self._probe_at = now + self.cooldown
            self.epoch += 1  # the probe's epoch: only its outcome counts now
            return True
        return False

    def success(self, epoch: int | None = None) -> None:
        """Record a successful operation started in ``epoch`` (read right after
        :meth:`allow`): forgets failures; closes a half-open breaker. A success from an
        earlier epoch (a late reply of an operation sent before the breaker opened or before
        the probe was claimed) changes nothing: only the probe may close it. Without
        ``epoch``, an open breaker stays open and anything else closes."""
        if self._state == _OPEN or (epoch is not None and epoch != self.epoch):
            return
        self._failures = 0
        self._state = _CLOSED

    def failure(self, unreachable: bool, epoch: int | None = None) -> bool:
        """Record a failed operation started in ``epoch``; returns True when this failure
        opened the breaker. A failure from an earlier epoch changes nothing (the outage it
        saw already opened the breaker, or the probe decides)."""
        if epoch is not None and epoch != self.epoch:
            return False
        self._failures += 1
        if self._state == _OPEN:
            return False
        if unreachable or self._state == _HALF_OPEN or self._failures >= self.threshold:
            self._state = _OPEN
            self._probe_at = time.monotonic() + self.cooldown
            self.opened += 1
            self.epoch += 1
            watchers, self._watchers = self._watchers, set()
            for fut in watchers:
                if not fut.done():
                    fut.set_result(None)
            return True
        return False

    @property
    def skipping(self) -> bool:
        """Open and not cooled down yet: operations that do not report to the breaker
        (maintenance) should not contact the backend either. Claims nothing."""
        return self._state == _OPEN and time.monotonic() < self._probe_at

    @property
    def healthy(self) -> bool:
        """Closed: the backend is not known to be failing."""
        return self._state == _CLOSED

    def opening(self) -> asyncio.Future[None]:
        """A future of the running loop resolved when the breaker next opens; pass it to
        :meth:`forget` when done waiting."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.add(fut)
        return fut

    def forget(self, fut: asyncio.Future[None]) -> None:
        """Stop watching with ``fut`` (from :meth:`opening`)."""
        self._watchers.discard(fut)

    def reset(self) -> None:
        """Close the breaker and forget failures (after ``bind``)."""
        self._state = _CLOSED
        self._failures = 0
