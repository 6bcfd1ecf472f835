"""Per-namespace counters kept as plain ints on the hot path; snapshots and metric samples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["FIELDS", "Counters", "NamespaceStats"]

#: The counters of a namespace, in the order stats and metrics list them.
FIELDS = (
    "hits",
    "misses",
    "stale",
    "local_hits",
    "lock_waits",
    "computations",
    "refreshes",
    "errors",
)


class Counters:
    """Mutable counters of one namespace (hot path: ``c.hits += 1``)."""

    __slots__ = (
        "computations",
        "errors",
        "hits",
        "local_hits",
        "lock_waits",
        "misses",
        "namespace",
        "refreshes",
        "stale",
    )

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.local_hits = 0
        self.lock_waits = 0
        self.computations = 0
        self.refreshes = 0
        self.errors = 0

    def snapshot(self) -> NamespaceStats:
        return NamespaceStats(**{name: getattr(self, name) for name in FIELDS})


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    """Counters of one namespace since the cache was created.

    ``hits`` counts every call answered from the cache (Redis or the local tier, fresh or
    stale); ``local_hits`` and ``stale`` are subsets of it. ``misses`` are calls that found
    nothing; ``lock_waits`` calls that waited for another process's computation;
    ``computations`` calls of the wrapped function; ``refreshes`` background refreshes;
    ``errors`` backend or codec failures (the caller still got a value).
    """

    hits: int
    misses: int
    stale: int
    local_hits: int
    lock_waits: int
    computations: int
    refreshes: int
    errors: int

    @property
    def hit_ratio(self) -> float:
        """``hits / (hits + misses)``, 0.0 before any call."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain data including ``hit_ratio``."""
        out: dict[str, Any] = {name: getattr(self, name) for name in FIELDS}
        out["hit_ratio"] = self.hit_ratio
        return out

    def items(self) -> Iterator[tuple[str, float]]:
        yield from self.as_dict().items()
