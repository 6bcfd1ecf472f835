"""What the cache needs from a store: the :class:`Backend` protocol both backends implement.

Keys, lock keys, tag-index keys and channels are built by the caller; a backend only stores
bytes. Every method may raise (connection errors, timeouts); the cache turns that into a miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["DONE", "FAILED", "Backend", "Inbox", "QueueInbox", "Write"]

#: What a lock key holds for a moment after its holder stored the value.
DONE = b"="

#: What a guarded operation returns when it failed or the breaker skipped it. The one
#: sentinel of the package: every module compares against this object.
FAILED: Any = object()


@dataclass(frozen=True, slots=True)
class Write:
    """One entry to store: ``value`` under ``key`` for ``ttl_ms``, indexed under ``tags``.

    ``fresh_ms`` is how long it is fresh (``ttl_ms`` minus the stale period): the lock's
    ``DONE`` marker never outlives it.
    """

    key: str
    value: bytes
    ttl_ms: int
    tags: Sequence[str] = ()
    fresh_ms: int | None = None

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
    """Storage used by :class:`~sight_core.cache.Cache`."""

    async def get(self, key: str) -> bytes | None:
        """One ``GET``."""
        ...

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """One ``MGET`` (one round trip)."""
        ...

    async def write(self, writes: Sequence[Write], now_ms: int) -> None:
        """Store entries and their tag-index entries in one round trip (a pipeline)."""
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """``UNLINK`` keys; returns how many existed."""
        ...

    async def try_lock(self, lock_key: str, token: str, ttl_ms: int) -> bytes | None:
        """``SET lock token NX PX ttl GET``: None when this caller now holds the lock, else
        what the lock holds (another holder's token, or :data:`DONE`)."""
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
        store: bool = True,
    ) -> None:
        """Atomically store ``write`` (if ``store``); if ``token`` holds the lock, replace it
        with :data:`DONE` for a moment (stored) or delete it (not stored); publish
        ``write.value`` (empty when ``write`` is None: "no value, retry") on ``channel``.
        One round trip."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Inbox]:
        """Subscribe to ``channel``; entering returns once the subscription is confirmed."""
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """``PUBLISH``."""
        ...

    async def tag_members(self, tag_keys: Sequence[str], now_ms: int) -> list[str]:
        """Live entry keys indexed under the tags."""
        ...

    async def scan_delete(self, match: str, predicate: Callable[[str], bool], batch: int) -> int:
        """``SCAN MATCH match`` and ``UNLINK`` in batches the keys ``predicate`` accepts;
        never ``KEYS``. Returns how many were deleted."""
        ...

    async def aclose(self) -> None:
        """Release resources the backend opened itself (not the client it was given)."""
        ...
