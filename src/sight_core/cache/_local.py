"""The optional in-process tier: a small LRU of decoded values with a short TTL.

Values are shared between callers (no copy), so treat cached results as immutable (frozen
pydantic models are a good fit). Entries are dropped when this process invalidates or
writes them, and when another process does so (a message on the cache's invalidation channel).

A value read from Redis is stored only if no invalidation was applied to the tier since the
read was sent (``generation`` unchanged): otherwise an invalidation whose message overtook
the read's reply would be undone by it, for the whole local TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

__all__ = ["LocalTier"]

_ABSENT: Any = object()


def _split(key: str) -> tuple[str, ...]:
    """``(prefix, "v2", namespace, part)`` of an entry key."""
    return tuple(key.split(":", 3))


class LocalTier:
    """LRU of at most ``max_items`` entries, each valid for ``ttl`` seconds."""

    __slots__ = ("_data", "generation", "max_items", "online", "ttl")

    ABSENT = _ABSENT

    def __init__(self, max_items: int, ttl: float) -> None:
        self.max_items = max_items
        self.ttl = ttl
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        #: Whether invalidations reach this tier (its listener is subscribed); offline,
        #: ``put`` stores nothing.
        self.online = False
        #: Advanced by every invalidation applied (and every flush): read it before sending
        #: the read whose value ``put`` may store.
        self.generation = 0

    def get(self, key: str) -> Any:
        """The value, or ``LocalTier.ABSENT``."""
        item = self._data.get(key)
        if item is None:
            return _ABSENT
        if item[0] < time.monotonic():
            self._data.pop(key, None)
            return _ABSENT
        self._data.move_to_end(key)
        return item[1]

    def put(self, key: str, value: Any, since: int, ttl: float | None = None) -> None:
        """Store ``value`` unless offline or an invalidation was applied since ``since``
        (the ``generation`` read before the value was read from Redis)."""
        if not self.online or since != self.generation:
            return
        lifetime = self.ttl if ttl is None else min(ttl, self.ttl)
        self._data[key] = (time.monotonic() + lifetime, value)
        self._data.move_to_end(key)
        if len(self._data) > self.max_items:
            self._data.popitem(last=False)

    def discard(self, keys: list[str]) -> None:
        self.generation += 1
        for key in keys:
            self._data.pop(key, None)

    def discard_entries(self, namespace: str, parts: list[str]) -> None:
        """Drop the entries ``{prefix}:v*:{namespace}:{part}`` of every version."""
        self.generation += 1
        wanted = set(parts)
        for key in list(self._data):
            split = _split(key)
            if len(split) == 4 and split[2] == namespace and split[3] in wanted:
                del self._data[key]

    def discard_matching(self, namespace: str) -> None:
        """Drop every entry of ``namespace`` (any version)."""
        self.generation += 1
        for key in [k for k in self._data if _split(k)[2:3] == (namespace,)]:
            del self._data[key]

    def clear(self) -> None:
        self.generation += 1
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
