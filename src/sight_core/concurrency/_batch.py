"""``BatchLoader``: the DataLoader pattern, N ``load(key)`` calls in one tick -> 1 batch call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

from ._validate import check_limit

__all__ = ["BatchFn", "BatchLoader"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: ``batch_fn(keys)``: returns ``{key: value | Exception}``, or a sequence in the order of ``keys``.
BatchFn: TypeAlias = Callable[
    [list[K]], Awaitable[Mapping[K, V | Exception] | Sequence[V | Exception]]
]


class BatchLoader(Generic[K, V]):
    """Coalesce ``await loader.load(key)`` calls made in one event-loop tick into batch calls.

    Every ``load`` in the same tick joins one pending batch; at the end of the tick the distinct
    keys are sent to ``batch_fn`` in chunks of at most ``max_batch_size``, with at most
    ``max_concurrency`` chunks running at once. So 100 concurrent loads with
    ``max_batch_size=25`` cost exactly 4 ``batch_fn`` calls, and a key asked twice is fetched once.

    ``batch_fn`` returns a mapping ``key -> value`` (or a sequence of values in key order). A
    value that is an ``Exception`` instance fails only the callers of that key; a key missing
    from the mapping fails its callers with ``KeyError``; an exception raised by ``batch_fn``
    fails every caller of that chunk. Results are not cached between ticks (use
    ``sight_core.cache`` for that). A caller cancelled before its batch starts drops its key
    if no other caller wants it.

    Raises (at construction): ``TypeError``/``ConfigurationError`` naming ``batch_fn``,
    ``max_batch_size`` or ``max_concurrency``.
    """

    def __init__(
        self,
        batch_fn: BatchFn[K, V],
        *,
        max_batch_size: int = 100,
        max_concurrency: int = 4,
    ) -> None:
        if not callable(batch_fn):
            raise TypeError(f"batch_fn must be callable, got {type(batch_fn).__name__}")
        self._batch_fn = batch_fn
        self.max_batch_size = check_limit(max_batch_size, "max_batch_size")
        self.max_concurrency = check_limit(max_concurrency, "max_concurrency")
        self._semaphore = asyncio.Semaphore(self.max_concurrency)
        self._pending: dict[K, list[asyncio.Future[V]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batch_calls = 0  #: how many times ``batch_fn`` has been called

    async def load(self, key: K) -> V:
        """Return the value for ``key``, loaded in a batch with the other keys of this tick."""
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
            loop.call_soon(self._dispatch)
        future: asyncio.Future[V] = loop.create_future()
        waiters = pending.get(key)
        if waiters is None:
            pending[key] = [future]
        else:
            waiters.append(future)
        return await future

    async def load_many(self, keys: Iterable[K]) -> list[V]:
        """Load several keys in one tick; values in ``keys`` order. Raises the first error."""
        return list(await asyncio.gather(*(self.load(key) for key in keys)))

    def _dispatch(self) -> None:
        pending, self._pending = self._pending or {}, None
        keys = [k for k, futures in pending.items() if not all(f.done() for f in futures)]
        size = self.max_batch_size
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            task = asyncio.get_running_loop().create_task(
                self._run_batch(chunk, {k: pending[k] for k in chunk})
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, keys: list[K], waiters: dict[K, list[asyncio.Future[V]]]) -> None:
        async with self._semaphore:
            self.batch_calls += 1
            try:
                result = await self._batch_fn(keys)
                per_key = _by_key(keys, result)
            except (Exception, asyncio.CancelledError) as exc:
                for futures in waiters.values():
                    for future in futures:
                        _settle_error(future, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
        for key, futures in waiters.items():
            if key in per_key:
                value = per_key[key]
                for future in futures:
                    if isinstance(value, Exception):
                        _settle_error(future, value)
                    elif not future.done():
                        future.set_result(value)
            else:
                missing = KeyError(key)
                missing.add_note("batch_fn returned no value for this key")
                for future in futures:
                    _settle_error(future, missing)


def _settle_error(future: asyncio.Future[Any], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)


def _by_key(keys: list[K], result: object) -> Mapping[K, Any]:
    if isinstance(result, Mapping):
        return result
    if isinstance(result, Sequence) and not isinstance(result, str | bytes):
        if len(result) != len(keys):
            raise TypeError(
                f"batch_fn returned {len(result)} values for {len(keys)} keys; "
                "return a mapping key -> value, or one value per key in key order"
            )
        return dict(zip(keys, result, strict=True))
    raise TypeError(
        f"batch_fn returned {type(result).__name__}; "
        "return a mapping key -> value, or one value per key in key order"
    )
