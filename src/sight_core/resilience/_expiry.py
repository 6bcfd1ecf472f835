"""Cancel a task when a time limit passes: a timer per limit, or a shared one for long limits.

A retry policy arms one expiry per attempt (its ``deadline``, or ``attempt_timeout``). An exact
``loop.call_at`` handle costs a few microseconds per attempt (the handle, its heap entry, its
cancellation) on every call that succeeds. A limit of :data:`COARSE_FROM` seconds or more
instead joins a *bucket*: every limit of one loop that ends in the same slice of time shares
one timer handle, so arming and disarming cost a set insertion and removal. The slice is the
largest power of two not above ``limit / 1024`` seconds, so a coarse expiry fires at most
0.1 % of its limit late (180 s: at most 0.125 s late) and never early. A bucket's timer stays
scheduled after its expiries are disarmed and fires as a no-op; at most ``limit / slice``
(about 1,024 to 2,048) buckets per slice size are pending at once.

Not thread-safe: arm and disarm on the loop that runs the task (as ``asyncio.timeout`` does).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import weakref

__all__ = ["COARSE_FROM", "Expiry", "arm", "disarm"]

COARSE_FROM = 1.0
"""Limits from this many seconds up share bucket timers; shorter ones get their own."""


class Expiry:
    """One armed limit: ``fired`` turns true when the task was cancelled for it."""

    __slots__ = ("bucket", "fired", "handle", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False
        self.bucket: set[Expiry] | None = None
        self.handle: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        self.fired = True
        self.task.cancel()


class _Buckets:
    """The coarse buckets of one loop: (slice exponent, index) → the expiries armed in it."""

    __slots__ = ("grain", "key", "limit", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # a closed loop is not kept alive by :data:`_last`
        self.pending: dict[tuple[int, int], set[Expiry]] = {}
        self.limit = self.grain = 0.0  # the slice of the last limit seen (calls repeat it)
        self.key = 0

    def join(self, expiry: Expiry, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        if limit != self.limit:
            exponent = math.frexp(limit / 1024)[1] - 1  # 2**exponent <= limit / 1024
            self.limit, self.grain, self.key = limit, math.ldexp(1.0, exponent), exponent
        grain = self.grain
        index = math.ceil((loop.time() + limit) / grain)  # never before the limit
        key = (self.key, index)
        bucket = self.pending.get(key)
        if bucket is None:
            bucket = self.pending[key] = set()
            loop.call_at(index * grain, self._fire, key)
        bucket.add(expiry)
        expiry.bucket = bucket

    def _fire(self, key: tuple[int, int]) -> None:
        for expiry in self.pending.pop(key, ()):
            expiry.expire()


_buckets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Buckets] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
_last: list[_Buckets] = []  # the buckets used last: one loop per thread is the common case


def _forget_after_fork() -> None:  # the lock may have been held by a thread that is gone
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def arm(task: asyncio.Task[object], loop: asyncio.AbstractEventLoop, limit: float) -> Expiry:
    """Cancel ``task`` once ``limit`` seconds (> 0) have passed, unless :func:`disarm`-ed
    before; ``loop`` is the running loop."""
    expiry = Expiry(task)
    if limit == math.inf:  # accepted by the settings (no limit, as ``asyncio.timeout``): no timer
        return expiry
    if limit < COARSE_FROM:
        expiry.handle = loop.call_at(loop.time() + limit, expiry.expire)
        return expiry
    buckets = _last[0] if _last and _last[0].loop() is loop else None
    if buckets is None:
        with _lock:
            buckets = _buckets.get(loop)
            if buckets is None:
                buckets = _buckets[loop] = _Buckets(loop)
        _last[:] = (buckets,)
    buckets.join(expiry, loop, limit)
    return expiry


def disarm(expiry: Expiry) -> None:
    """Stop ``expiry`` from firing (a no-op once it fired)."""
    if expiry.bucket is not None:
        expiry.bucket.discard(expiry)
    elif expiry.handle is not None:
        expiry.handle.cancel()
