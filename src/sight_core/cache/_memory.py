"""An in-process backend with the same semantics as Redis, for callers' unit tests."""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import AsyncIterator, Sequence

from ._backend import DONE, Fence, QueueInbox, Write
from ._keyspace import FENCE_HORIZON_MS

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Entries, locks, tag indexes and channels in dictionaries of this process.

    Bind it in tests of code that uses a cache: ``cache.bind(MemoryBackend())``. Expiry is
    checked on read. ``commands`` counts operations, like ``INFO commandstats`` would.
    """

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._tags: dict[str, dict[str, int]] = {}
        self._versions: dict[str, set[int]] = {}
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

    def _fence_now(self, clock: str) -> Fence:
        return Fence(int(self._live(clock) or 0), int(time.time() * 1000))

    def _stands(self, w: Write, fence: Fence | None) -> bool:
        if fence is None:
            return True
        if time.time() * 1000 - fence.server_ms > FENCE_HORIZON_MS:
            return False
        marks = (self._live(m) for m in (*w.fences, *w.tag_fences))
        return all(m is None or int(m) <= fence.clock for m in marks)

    async def read_fence(self, clock: str) -> Fence:
        self.commands += 1
        return self._fence_now(clock)

    async def write(
        self,
        writes: Sequence[Write],
        now_ms: int,
        fence: Fence | None = None,
        clock: str = "",
        store: bool = True,
    ) -> tuple[list[bool], Fence]:
        self.commands += 1
        stored = []
        for w in writes:
            ok = self._stands(w, fence)
            if ok and store:
                self._store(w, now_ms)
            stored.append(ok)
        return stored, self._fence_now(clock)

    def _store(self, w: Write, now_ms: int) -> None:
        self._put(w.key, w.value, w.ttl_ms)
        if w.versions:
            self._versions.setdefault(w.versions, set()).add(w.version)
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

    async def try_lock(
        self, lock_key: str, token: str, ttl_ms: int, clock: str, steal: str | None = None
    ) -> tuple[bytes | None, Fence, int]:
        self.commands += 1
        held = None if steal is not None else self._live(lock_key)
        if steal is not None:
            self._mark(clock, [steal])
        if held is None:
            self._put(lock_key, token.encode(), ttl_ms)
            return None, self._fence_now(clock), 0
        left = int((self._data[lock_key][1] - time.monotonic()) * 1000)
        return held, self._fence_now(clock), max(left, 0)

    def _mark(self, clock: str, marks: Sequence[str]) -> int:
        now = int(self._live(clock) or 0) + 1
        self._put(clock, str(now).encode(), 1 << 62)
        for mark in marks:
            self._put(mark, str(now).encode(), FENCE_HORIZON_MS)
        return now

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
        store: bool,
        fence: Fence,
        clock: str,
    ) -> tuple[bool, Fence]:
        self.commands += 1
        held = self._live(lock_key) == token.encode()  # a lost lock: the write is refused
        stood = held and write is not None and self._stands(write, fence)
        stored = stood and store
        if write is not None and stored:
            self._store(write, now_ms)
        if held:
            if write is not None and stored:
                self._put(lock_key, DONE, write.done_ms)
            else:
                del self._data[lock_key]
        self._deliver(channel, write.value if write is not None and stood else b"")
        return stood, self._fence_now(clock)

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

    async def fence_marks(self, clock: str, marks: Sequence[str]) -> int:
        self.commands += 1
        return self._mark(clock, marks)

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
        self.commands += 1
        self._mark(clock, marks)
        names = dict.fromkeys(keys)
        for version in sorted(self._versions.get(versions, ())):
            names.update(dict.fromkeys(f"{head}{version}{tail}" for tail in tails))
        deleted = sum(self._data.pop(k, None) is not None for k in names)
        if names:
            self._deliver(channel, "\n".join(names).encode())
        return deleted

    async def retire_tags(self, clock: str, tags: Sequence[tuple[str, str, str]]) -> None:
        self.commands += 1
        self._mark(clock, [mark for mark, _, _ in tags])
        for _, index, dead in tags:
            members = self._tags.pop(index, None)
            if members:
                self._tags.setdefault(dead, {}).update(members)

    async def drain(self, dead: str, batch: int, channel: str) -> tuple[int, int]:
        self.commands += 1
        index = self._tags.get(dead, {})
        taken = sorted(index)[:batch]
        for key in taken:
            del index[key]
        if not index:
            self._tags.pop(dead, None)
        deleted = sum(
            self._live(k) is not None and self._data.pop(k, None) is not None for k in taken
        )
        if taken:
            self._deliver(channel, "\n".join(taken).encode())
        return len(taken), deleted

    async def scan_page(self, match: str, cursor: int, count: int) -> tuple[int, list[str]]:
        self.commands += 1
        found = [k for k in self._data if fnmatch.fnmatchcase(k, match)]
        return 0, found

    async def aclose(self) -> None:
        self._channels.clear()

    def clear(self) -> None:
        """Forget every entry, lock and tag index."""
        self._data.clear()
        self._tags.clear()
