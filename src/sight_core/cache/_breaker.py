"""A tiny backend circuit breaker so a dead or black-holed Redis costs one call per window.

States: closed (every operation goes), open (operations are skipped until ``cooldown`` has
passed), half-open (exactly one probe operation goes; its outcome closes or re-opens it; a
probe that reports neither, because its caller was cancelled, is given up after another
``cooldown`` and the next caller probes).
An *unreachable* error (connection refused/reset, timeout) opens it at once: the next caller
would pay the same deadline. Other errors (``OOM``, ``READONLY``...) open it after
``threshold`` consecutive failures. ``allow()`` is a couple of attribute reads.
"""

from __future__ import annotations

import time

__all__ = ["Breaker"]

_CLOSED, _OPEN, _HALF_OPEN = 0, 1, 2


class Breaker:
    """Consecutive-failure breaker with a cooldown and a single half-open probe."""

    __slots__ = ("_failures", "_probe_at", "_state", "cooldown", "opened", "threshold")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._state = _CLOSED
        self._failures = 0
        self._probe_at = 0.0
        self.opened = 0  # how many times it opened (for stats and tests)

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
            return True
        return False

    def success(self) -> None:
        """Record a successful operation: forgets failures; closes a half-open breaker. An
        open breaker stays open: the success is of an operation sent before it opened (a
        late reply), and only the probe may close it."""
        if self._state == _OPEN:
            return
        self._failures = 0
        self._state = _CLOSED

    def failure(self, unreachable: bool) -> bool:
        """Record a failed operation; returns True when this failure opened the breaker."""
        self._failures += 1
        if self._state == _OPEN:
            return False
        if unreachable or self._state == _HALF_OPEN or self._failures >= self.threshold:
            self._state = _OPEN
            self._probe_at = time.monotonic() + self.cooldown
            self.opened += 1
            return True
        return False

    def reset(self) -> None:
        """Close the breaker and forget failures (after ``bind``)."""
        self._state = _CLOSED
        self._failures = 0
