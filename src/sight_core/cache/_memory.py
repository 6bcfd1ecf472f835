"""An in-process backend with the same semantics as Redis, for callers' unit tests."""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import AsyncIterator, Callable, Sequence

from ._backend import DONE, QueueInbox, Write

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Entries, locks, tag indexes and channels in dictionaries of this process.

    Bind it in tests of code that uses a cache: ``cache.bind(MemoryBackend())``. Expiry is
    checked on read. ``commands`` counts operations, like ``INFO commandstats`` would.
    """

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._tags: dict[str, dict[str, int]] = {}
        self._channels: dict[str, set[QueueInbox]] = {}
        self.commands = 0

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item[0]

    def _put(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._data[key] = (value, time.monotonic() + ttl_ms / 1000)

    async def get(self, key: str) -> bytes | None:
        self.commands += 1
        return self._live(key)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        self.commands += 1
        return [self._live(k) for k in keys]

    async def write(self, writes: Sequence[Write], now_ms: int) -> None:
        self.commands += 1
        for w in writes:
            self._store(w, now_ms)

    def _store(self, w: Write, now_ms: int) -> None:
        self._put(w.key, w.value, w.ttl_ms)
        for tag in w.tags:
            index = self._tags.setdefault(tag, {})
            index[w.key] = now_ms + w.ttl_ms
            for key in [k for k, score in index.items() if score <= now_ms]:
                del index[key]

    async def delete(self, keys: Sequence[str]) -> int:
        self.commands += 1
        found = 0
        for k in keys:
            found += self._data.pop(k, None) is not None
            found += self._tags.pop(k, None) is not None
        return found

    async def try_lock(self, lock_key: str, token: str, ttl_ms: int) -> bytes | None:
        self.commands += 1
        held = self._live(lock_key)
        if held is None:
            self._put(lock_key, token.encode(), ttl_ms)
        return held

    async def unlock(self, lock_key: str, token: bytes) -> bool:
        self.commands += 1
        if self._live(lock_key) != token:
            return False
        del self._data[lock_key]
        return True

    async def extend_lock(self, lock_key: str, token: str, ttl_ms: int) -> bool:
        self.commands += 1
        if self._live(lock_key) != token.encode():
            return False
        self._put(lock_key, token.encode(), ttl_ms)
        return True

    async def commit(
        self,
        write: Write | None,
        lock_key: str,
        token: str,
        channel: str,
        now_ms: int,
        store: bool = True,
    ) -> None:
        self.commands += 1
        stored = write is not None and store
        if write is not None and store:
            self._store(write, now_ms)
        if self._live(lock_key) == token.encode():
            if stored:
                self._put(lock_key, DONE, write.done_ms if write else 1)
            else:
                del self._data[lock_key]
        self._deliver(channel, write.value if write is not None else b"")

    def _deliver(self, channel: str, message: bytes) -> None:
        for inbox in self._channels.get(channel, ()):
            inbox.put_nowait(message)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[QueueInbox]:
        self.commands += 1
        inbox = QueueInbox()
        self._channels.setdefault(channel, set()).add(inbox)
        try:
            yield inbox
        finally:
            inboxes = self._channels.get(channel)
            if inboxes is not None:
                inboxes.discard(inbox)
                if not inboxes:
                    del self._channels[channel]

    async def publish(self, channel: str, message: bytes) -> None:
        self.commands += 1
        self._deliver(channel, message)

    async def tag_members(self, tag_keys: Sequence[str], now_ms: int) -> list[str]:
        self.commands += 1
        found: set[str] = set()
        for tag in tag_keys:
            found.update(k for k, score in self._tags.get(tag, {}).items() if score > now_ms)
        return sorted(found)

    async def scan_delete(self, match: str, predicate: Callable[[str], bool], batch: int) -> int:
        self.commands += 1
        doomed = [k for k in list(self._data) if fnmatch.fnmatchcase(k, match) and predicate(k)]
        return await self.delete(doomed) if doomed else 0

    async def aclose(self) -> None:
        self._channels.clear()

    def clear(self) -> None:
        """Forget every entry, lock and tag index."""
        self._data.clear()
        self._tags.clear()
