"""``gather_limited``: N copies of one worker loop pulling from one lazy source."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Generator,
    Iterator,
)
from types import TracebackType
from typing import Any, Literal, TypeVar, cast, overload

from ._limiter import Limiter
from ._source import (
    COROUTINE_TYPE,
    AwaitableSource,
    check_items,
    close_async,
    close_sync,
    discard,
    is_async_source,
    is_collection,
    prepare,
)
from ._tasks import cancel_and_wait, note_also_failed
from ._validate import check_limit, check_optional_positive

T = TypeVar("T")

__all__ = ["gather_limited", "resolve_workers"]

_ARG = "aws"


def resolve_workers(limit: object, limiter: object) -> int:
    """Validate ``limit``/``limiter``; return how many workers to run."""
    if limiter is not None and not isinstance(limiter, Limiter):
        raise TypeError(f"limiter must be a Limiter, got {type(limiter).__name__}")
    if limit is None:
        if limiter is None:
            raise TypeError("limit is required (an int >= 1), unless limiter= is given")
        return limiter.limit
    return check_limit(limit, "limit")


@overload
def gather_limited(
    aws: AwaitableSource[T],
    *,
    limit: int | None = ...,
    return_exceptions: Literal[False] = ...,
    timeout: float | None = ...,
    limiter: Limiter | None = ...,
) -> Coroutine[Any, Any, list[T]]: ...


@overload
def gather_limited(
    aws: AwaitableSource[T],
    *,
    limit: int | None = ...,
    return_exceptions: Literal[True],
    timeout: float | None = ...,
    limiter: Limiter | None = ...,
) -> Coroutine[Any, Any, list[T | BaseException]]: ...


@overload
def gather_limited(
    aws: AwaitableSource[T],
    *,
    limit: int | None = ...,
    return_exceptions: bool,
    timeout: float | None = ...,
    limiter: Limiter | None = ...,
) -> Coroutine[Any, Any, list[T] | list[T | BaseException]]: ...


def gather_limited(
    aws: AwaitableSource[Any],
    *,
    limit: int | None = None,
    return_exceptions: bool = False,
    timeout: float | None = None,
    limiter: Limiter | None = None,
) -> Coroutine[Any, Any, list[Any]]:
    """Await ``aws`` with at most ``limit`` running at once; return results in input order.

    ``aws`` is an iterable or async iterable of awaitables, or of zero-argument callables that
    return one. It is consumed lazily: an item is pulled only when a slot is free, so a
    generator of a million coroutines never exists in memory at once. ``limit`` workers each
    pull an item, await it in place and pull the next, so the cost per item is that of a
    hand-written worker pool (no task or semaphore per item).

    Fail-fast by default: the first exception cancels the running items, closes the unstarted
    coroutines of a collection (or closes a generator source without advancing it) and is
    raised as itself; errors raised by other items meanwhile are added to it as notes.
    With ``return_exceptions=True`` each exception takes its item's slot and the rest go on.
    ``timeout`` is per item: that item fails with ``TimeoutError``. ``limiter`` makes every item
    also hold a shared :class:`Limiter` while it runs (``limit`` defaults to its ``limit``).
    Cancelling the caller cancels every child (a call closed or cancelled before its first
    step, as a failing ``TaskGroup`` does, still closes a collection's coroutines); nothing
    runs after this returns or raises. A call never awaited nor closed warns "never awaited",
    as any coroutine does.

    Pass a generator or callables, not tasks: a task is already running and no limit holds it.
    With ``limiter``, each worker pulls its next item and then waits for a limiter slot, so at
    most ``limit`` items are pulled and not yet finished, and a fan-out waiting on its source
    holds no shared slot.
    Costs: ``limit`` tasks per call; per item, one ``next()`` and one ``await`` (plus a
    timer with ``timeout``, a limiter acquire with ``limiter``). This is a plain function that
    returns a coroutine, so argument errors surface where it is called.

    Raises (at the call): ``TypeError``/``ConfigurationError`` naming ``limit``, ``timeout``,
    ``limiter`` or ``aws`` (not iterable, or a collection holding a non-awaitable). A
    non-awaitable pulled lazily from an iterator raises ``TypeError`` then, regardless of
    ``return_exceptions``.
    """
    owned = False
    try:
        workers = resolve_workers(limit, limiter)
        item_timeout = check_optional_positive(timeout, "timeout")
        if is_async_source(aws, _ARG):
            source = cast(AsyncIterable[Any], aws).__aiter__()
            fan_out = _FanOut(None, source, False, return_exceptions, item_timeout, limiter)
            return fan_out.run(workers)
        owned = is_collection(aws)
        if owned:
            check_items(aws, _ARG)  # type: ignore[arg-type]
            workers = max(1, min(workers, len(aws)))  # type: ignore[arg-type]
    except BaseException:
        if not isinstance(aws, AsyncIterable) and is_collection(aws):
            close_sync(iter(aws), owned=True)
        raise
    iterator: Iterator[Any] = iter(aws)  # type: ignore[arg-type]
    fan_out = _FanOut(iterator, None, owned, return_exceptions, item_timeout, limiter)
    if owned:
        return _ClosesItemsIfNeverStarted(fan_out.run(workers), iterator)
    return fan_out.run(workers)


_PULL: Any = object()  # an item of the sync stream standing for "pull from the async source"
_DONE: Any = object()


class _FanOut:
    """One call: the source, the options, results by input index, the first error, the workers.

    ``worker`` is the one worker loop; ``run`` starts ``n`` copies of it and waits for them.
    ``fail`` keeps the first error, turns later ones into notes on it and cancels the other
    workers; ``stop`` tells workers not to pull again.
    """

    __slots__ = (
        "async_source",
        "errors",
        "item_timeout",
        "limiter",
        "lock",
        "owned",
        "results",
        "return_exceptions",
        "stop",
        "stream",
        "sync_source",
        "workers",
    )

    def __init__(
        self,
        sync_source: Iterator[Any] | None,
        async_source: AsyncIterator[Any] | None,
        owned: bool,
        return_exceptions: bool,
        item_timeout: float | None,
        limiter: Limiter | None,
    ) -> None:
        self.sync_source = sync_source
        self.async_source = async_source
        # what the workers iterate: (index, item) of the sync source, or endless _PULL markers
        self.stream: Iterator[tuple[int, Any]] = (
            enumerate(sync_source) if sync_source is not None else itertools.repeat((-1, _PULL))
        )
        self.lock = asyncio.Lock()  # an async generator cannot be advanced by two workers at once
        self.owned = owned
        self.return_exceptions = return_exceptions
        self.item_timeout = item_timeout
        self.limiter = limiter
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self.workers: list[asyncio.Task[None]] = []
        self.stop = False

    def fail(self, exc: BaseException, me: asyncio.Task[Any]) -> None:
        if self.errors:
            note_also_failed(self.errors[0], exc, "another item")
            return
        self.errors.append(exc)
        self.stop = True
        for worker in self.workers:
            if worker is not me:
                worker.cancel()

    async def run(self, n_workers: int) -> list[Any]:
        """Run ``n_workers`` copies of :meth:`worker`; on failure or cancellation wait for every
        worker, close the source (the error being raised is passed in), and raise."""
        loop = asyncio.get_running_loop()
        self.workers.extend(loop.create_task(self.worker()) for _ in range(n_workers))
        try:
            await asyncio.wait(self.workers)
        except asyncio.CancelledError as cancel:
            self.stop = True
            await cancel_and_wait(self.workers)
            for exc in self.errors:
                note_also_failed(cancel, exc, "an item")
            await self.close_source(cancel)
            raise
        if self.errors:
            try:
                await self.close_source(self.errors[0])
                raise self.errors[0]
            finally:
                self.errors.clear()  # break the exception -> traceback -> frame -> errors cycle
        return self.results

    async def close_source(self, failed: BaseException) -> None:
        if self.async_source is not None:
            await close_async(self.async_source, failed)
        elif self.sync_source is not None:
            close_sync(self.sync_source, self.owned, failed)

    async def pull_async(self) -> Any:
        """The next item of the async source, or ``_DONE`` (exhausted, or told to stop)."""
        async with self.lock:
            if self.stop:
                return _DONE
            try:
                return await self.async_source.__anext__()  # type: ignore[union-attr]
            except StopAsyncIteration:
                return _DONE

    async def worker(self) -> None:
        """The worker loop: pull an item, await it in place, store its result (or, with
        ``return_exceptions``, its exception) at its input index; stop when the source is
        exhausted or a failure sets ``stop``.

        Without a timeout or limiter the cost per item is one ``next()``, one ``await`` and
        a few local tests, as in a hand-written pool; with them, one more coroutine per item.
        """
        me = cast(asyncio.Task[Any], asyncio.current_task())
        results = self.results
        append = results.append
        return_exceptions = self.return_exceptions
        plain = self.limiter is None and self.item_timeout is None
        pull, done = _PULL, _DONE
        try:
            for i, aw in self.stream:
                if type(aw) is not COROUTINE_TYPE:  # the hot path skips this block
                    if aw is pull:
                        aw = await self.pull_async()
                        if aw is done:
                            return
                        i = len(results)  # no await since the pull: slots follow pull order
                    aw = prepare(aw, _ARG, i)
                append(None)
                try:
                    results[i] = await (aw if plain else self.guarded(aw))
                except (Exception, asyncio.CancelledError) as exc:
                    if me.cancelling() and isinstance(exc, asyncio.CancelledError):
                        raise
                    if not return_exceptions:
                        self.fail(exc, me)
                        return
                    results[i] = exc
                if self.stop:
                    return
        except (Exception, asyncio.CancelledError) as exc:
            if me.cancelling() and isinstance(exc, asyncio.CancelledError):
                raise
            self.fail(exc, me)  # the source itself raised, or an item is not awaitable

    async def guarded(self, aw: Awaitable[Any]) -> Any:
        """Await ``aw`` holding a slot of the limiter, under the per-item timeout.

        The slot is taken after the pull, so a worker waiting on a slow async source holds no
        slot of a shared limiter; an item that never gets a slot is closed, not left unawaited.
        """
        limiter = self.limiter
        if limiter is not None:
            try:
                await limiter.acquire()
            except BaseException:
                discard(aw)
                raise
        try:
            if self.item_timeout is None:
                return await aw
            async with asyncio.timeout(self.item_timeout):
                return await aw
        finally:
            if limiter is not None:
                limiter.release()


class _ClosesItemsIfNeverStarted(Coroutine[Any, Any, list[Any]]):
    """The coroutine returned for a collection: runs ``call``, and closes the collection's
    coroutines if ``call`` is closed or thrown into before its first step.

    A coroutine closed or cancelled before its first step (a task cancelled before it ran, as a
    ``TaskGroup`` does when a sibling fails at once; ``.close()`` on a call never awaited)
    executes none of its body, so no ``finally`` in it can clean up; this wrapper does it at
    that moment. Once ``call`` has started, its own body disposes of the collection.
    """

    __slots__ = ("_call", "_items")

    def __init__(self, call: Coroutine[Any, Any, list[Any]], items: Iterator[Any]) -> None:
        self._call = call
        self._items: Iterator[Any] | None = items

    def _close_items(self) -> None:
        items, self._items = self._items, None
        if items is not None:
            close_sync(items, owned=True)

    def send(self, value: Any) -> Any:
        self._items = None
        return self._call.send(value)

    def throw(self, typ: Any, val: Any = None, tb: TracebackType | None = None, /) -> Any:
        self._close_items()
        if val is None and tb is None:
            return self._call.throw(typ)
        return self._call.throw(typ, val, tb)  # pragma: no cover - deprecated signature

    def close(self) -> None:
        self._close_items()
        self._call.close()

    def __await__(self) -> Generator[Any, None, list[Any]]:
        self._items = None  # ``await`` steps the call at once
        return self._call.__await__()
