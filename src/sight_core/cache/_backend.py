"""What the cache needs from a store: the :class:`Backend` protocol both backends implement.

Keys, lock keys, tag-index keys and channels are built by the caller; a backend only stores
bytes. Every method may raise (connection errors, timeouts); the cache turns that into a miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

__all__ = ["DONE", "FAILED", "GAVE_UP", "Backend", "Fence", "Inbox", "QueueInbox", "Write"]

#: What a lock key holds for a moment after its holder stored the value.
DONE = b"="

#: What a lock holder publishes on the lock channel when its computation raised or its value
#: cannot be encoded: its waiters compute at once (concurrently) instead of queueing for the
#: lock one process after another. Never a valid entry (entries start with the magic byte).
GAVE_UP = b"!"

#: What a guarded operation returns when it failed or the breaker skipped it. The one
#: sentinel of the package: every module compares against this object.
FAILED: Any = object()


class Fence(NamedTuple):
    """Where a computation stands against invalidations: the fence clock when it started
    (``clock``) and the Redis server time then (``server_ms``, unix ms). A commit carrying it
    is refused if an invalidation of its namespace, key or tags came later (a fence mark
    above ``clock``), or if the computation outlived the fence horizon."""

    clock: int
    server_ms: int


@dataclass(frozen=True, slots=True)
class Write:
    """One entry to store: ``value`` under ``key`` for ``ttl_ms``, indexed under ``tags``.

    ``fresh_ms`` is how long it is fresh (``ttl_ms`` minus the stale period): the lock's
    ``DONE`` marker never outlives it. ``fences`` are the fence marks a fenced write checks
    (its namespace's and its key's), ``tag_fences`` those of ``tags`` (same order);
    ``versions`` is the set where ``version`` is recorded so key invalidations reach it.
    """

    key: str
    value: bytes
    ttl_ms: int
    tags: Sequence[str] = ()
    fresh_ms: int | None = None
    tag_fences: Sequence[str] = ()
    fences: Sequence[str] = ()
    versions: str | None = None
    version: int = 0

    @property
    def done_ms(self) -> int:
        """How long the lock key keeps :data:`DONE` after this write (at most 1 s)."""
        fresh = self.ttl_ms if self.fresh_ms is None else self.fresh_ms
        return max(min(1000, fresh), 1)


class Inbox(Protocol):
    """A confirmed subscription to one channel."""

    async def next(self) -> bytes:
        """The next message published on the channel (bounded by the caller's timeout)."""
        ...


class QueueInbox:
    """An :class:`Inbox` fed by ``put_nowait`` (the backends' dispatchers)."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    def put_nowait(self, message: bytes) -> None:
        self._queue.put_nowait(message)

    async def next(self) -> bytes:
        return await self._queue.get()


class Backend(Protocol):
    """Storage used by :class:`~sight_core.cache.Cache`.

    ``clock`` arguments name the fence clock key; fence marks live ``FENCE_HORIZON_MS``.
    """

    async def get(self, key: str) -> bytes | None:
        """One ``GET``."""
        ...

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """One ``MGET`` (one round trip)."""
        ...

    async def read_fence(self, clock: str) -> Fence:
        """The fence clock and server time now."""
        ...

    async def write(
        self,
        writes: Sequence[Write],
        now_ms: int,
        fence: Fence | None = None,
        clock: str = "",
        store: bool = True,
    ) -> tuple[list[bool], Fence]:
        """Store entries and their tag-index entries in one round trip, each unless fenced
        (``fence`` None: unconditionally); returns which were stored and the fence now
        (read from ``clock``). ``store`` False only checks the fence: the result says which
        writes would have stood, and nothing is written."""
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """``UNLINK`` keys; returns how many existed."""
        ...

    async def try_lock(
        self, lock_key: str, token: str, ttl_ms: int, clock: str, steal: str | None = None
    ) -> tuple[bytes | None, Fence, int]:
        """``SET lock token NX PX ttl GET``, the fence and the lock's remaining lease (ms, 0
        when this caller took it): None when this caller now holds the
        lock, else what the lock holds (another holder's token, or :data:`DONE`). With
        ``steal`` (a key fence mark), take the lock whatever it holds and fence every
        computation of that key already running (``refresh``)."""
        ...

    async def unlock(self, lock_key: str, token: bytes) -> bool:
        """Delete the lock if it still holds ``token``."""
        ...

    async def extend_lock(self, lock_key: str, token: str, ttl_ms: int) -> bool:
        """Extend the lease if ``token`` still holds it."""
        ...

    async def commit(
        self,
        write: Write | None,
        lock_key: str,
        token: str,
        channel: str,
        now_ms: int,
        store: bool,
        fence: Fence,
        clock: str,
    ) -> tuple[bool, Fence]:
        """Atomically, unless ``fence`` is stale or ``token`` no longer holds the lock (its
        lease ran out, or the server lost its data and the fence marks with it): store
        ``write`` (if ``store``). Then, if
        ``token`` holds the lock, replace it with :data:`DONE` for a moment (stored) or delete
        it; publish ``write.value`` on ``channel``, or an empty message ("no value, retry")
        when ``write`` is None or fenced. Returns whether the value stood (not fenced) and the
        fence now. One round trip."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Inbox]:
        """Subscribe to ``channel``; entering returns once the subscription is confirmed."""
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """``PUBLISH``."""
        ...

    async def fence_marks(self, clock: str, marks: Sequence[str]) -> int:
        """Advance the clock and set every mark to it, atomically; returns the new clock."""
        ...

    async def invalidate_entry(
        self,
        clock: str,
        versions: str,
        marks: Sequence[str],
        keys: Sequence[str],
        head: str,
        tails: Sequence[str],
        channel: str,
    ) -> int:
        """Atomically: advance the clock, set every key fence mark to it, ``UNLINK`` ``keys``
        and the same entries in every version recorded in ``versions`` (``head + version +
        tail`` for each of ``tails``), and publish the names on ``channel``. Returns how
        many existed."""
        ...

    async def retire_tags(self, clock: str, tags: Sequence[tuple[str, str, str]]) -> None:
        """Atomically, for every ``(mark, index, dead)``: fence the tag and move the index's
        members into ``dead`` (which writes from then on never touch)."""
        ...

    async def drain(self, dead: str, batch: int, channel: str) -> tuple[int, int]:
        """Atomically take up to ``batch`` members of ``dead``, ``UNLINK`` those entries and
        publish their names; returns ``(members taken, entries deleted)``."""
        ...

    async def scan_page(self, match: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """One ``SCAN cursor MATCH match COUNT count`` (never ``KEYS``)."""
        ...

    async def aclose(self) -> None:
        """Release resources the backend opened itself (not the client it was given)."""
        ...
