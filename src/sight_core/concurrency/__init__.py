"""Bounded concurrency: fan out without exceeding a pool, a quota or memory.

- :func:`gather_limited`: await many awaitables, at most ``limit`` at once, results in order.
- :func:`map_limited`: stream ``(item, result)`` pairs as they complete (or in input order).
- :class:`Limiter`: a named cap (and optional start rate) shared by every fan-out in a process.
- :class:`BatchLoader`: coalesce ``load(key)`` calls of one loop tick into one batch call.
- :class:`TaskSupervisor`: background tasks with strong references, logged failures, clean close.

Imports only the standard library and :mod:`sight_core.errors`.
"""

from ._batch import BatchFn, BatchLoader
from ._gather import gather_limited
from ._limiter import Limiter
from ._map import map_limited
from ._source import AwaitableLike, AwaitableSource
from ._supervisor import TaskSupervisor

__all__ = [
    "AwaitableLike",
    "AwaitableSource",
    "BatchFn",
    "BatchLoader",
    "Limiter",
    "TaskSupervisor",
    "gather_limited",
    "map_limited",
]
