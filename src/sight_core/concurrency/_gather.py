"""``gather_limited``: N worker coroutines pulling from one lazy source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Literal, TypeVar, cast, overload

from ._limiter import Limiter
from ._source import (
    COROUTINE_TYPE,
    AwaitableSource,
    CloseIfNeverRun,
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
    Cancelling the caller cancels every child (a call cancelled before its first step, or
    never awaited, still closes a collection's coroutines); nothing runs after this returns
    or raises.

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
            return _gather_async(source, workers, return_exceptions, item_timeout, limiter)
        owned = is_collection(aws)
        if owned:
            check_items(aws, _ARG)  # type: ignore[arg-type]
            workers = max(1, min(workers, len(aws)))  # type: ignore[arg-type]
    except BaseException:
        if not isinstance(aws, AsyncIterable) and is_collection(aws):
            close_sync(iter(aws), owned=True)
        raise
    iterator: Iterator[Any] = iter(aws)  # type: ignore[arg-type]
    return _gather_sync(
        iterator,
        CloseIfNeverRun(iterator) if owned else None,
        owned,
        workers,
        return_exceptions,
        item_timeout,
        limiter,
    )


class _FanOut:
    """What the workers of one call share: results by input index, the first error, the workers.

    ``fail`` keeps the first error, turns later ones into notes on it and cancels the other
    workers; ``stop`` tells workers not to pull again.
    """

    __slots__ = ("errors", "results", "stop", "workers")

    def __init__(self) -> None:
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

    async def run(
        self,
        body: Callable[[], Coroutine[Any, Any, None]],
        n_workers: int,
        close: Callable[[BaseException], Awaitable[None]],
    ) -> list[Any]:
        """Run ``n_workers`` copies of ``body``; on failure or cancellation wait for every
        worker, ``close`` the source (the error being raised is passed in), and raise."""
        loop = asyncio.get_running_loop()
        self.workers.extend(loop.create_task(body()) for _ in range(n_workers))
        try:
            await asyncio.wait(self.workers)
        except asyncio.CancelledError as cancel:
            self.stop = True
            await cancel_and_wait(self.workers)
            for exc in self.errors:
                note_also_failed(cancel, exc, "an item")
            await close(cancel)
            raise
        if self.errors:
            try:
                await close(self.errors[0])
                raise self.errors[0]
            finally:
                self.errors.clear()  # break the exception -> traceback -> frame -> errors cycle
        return self.results


async def _gather_sync(
    source: Iterator[Any],
    guard: CloseIfNeverRun | None,
    owned: bool,
    n_workers: int,
    return_exceptions: bool,
    item_timeout: float | None,
    limiter: Limiter | None,
) -> list[Any]:
    if guard is not None:
        guard.disarm()
    state = _FanOut()
    results = state.results
    it = enumerate(source)

    async def close(failed: BaseException) -> None:
        close_sync(source, owned, failed)

    if item_timeout is not None or limiter is not None:

        async def pull() -> tuple[int, Any] | None:
            pulled = next(it, None)
            if pulled is not None:
                results.append(None)
            return pulled

        return await state.run(
            lambda: _worker(state, pull, item_timeout, return_exceptions, limiter),
            n_workers,
            close,
        )

    async def fast_worker() -> None:
        # The hot loop: sync source, no timeout, no limiter. Keep it lean.
        me = cast(asyncio.Task[Any], asyncio.current_task())
        append = results.append
        fail = state.fail
        try:
            for i, aw in it:
                append(None)
                if type(aw) is not COROUTINE_TYPE:
                    aw = prepare(aw, _ARG, i)
                try:
                    results[i] = await aw
                except (Exception, asyncio.CancelledError) as exc:
                    if me.cancelling() and isinstance(exc, asyncio.CancelledError):
                        raise
                    if not return_exceptions:
                        fail(exc, me)
                        return
                    results[i] = exc
                if state.stop:
                    return
        except (Exception, asyncio.CancelledError) as exc:
            if me.cancelling() and isinstance(exc, asyncio.CancelledError):
                raise
            fail(exc, me)  # the source itself raised, or an item is not awaitable

    return await state.run(fast_worker, n_workers, close)


async def _gather_async(
    source: AsyncIterator[Any],
    n_workers: int,
    return_exceptions: bool,
    item_timeout: float | None,
    limiter: Limiter | None,
) -> list[Any]:
    state = _FanOut()
    results = state.results
    lock = asyncio.Lock()  # an async generator cannot be advanced by two workers at once

    async def pull() -> tuple[int, Any] | None:
        async with lock:
            if state.stop:
                return None
            try:
                aw = await source.__anext__()
            except StopAsyncIteration:
                return None
            results.append(None)
            return len(results) - 1, aw

    async def close(failed: BaseException) -> None:
        await close_async(source, failed)

    return await state.run(
        lambda: _worker(state, pull, item_timeout, return_exceptions, limiter),
        n_workers,
        close,
    )


async def _worker(
    state: _FanOut,
    pull: Callable[[], Awaitable[tuple[int, Any] | None]],
    item_timeout: float | None,
    return_exceptions: bool,
    limiter: Limiter | None,
) -> None:
    """The general worker loop: pull an item, take a limiter slot, run it, until told to stop.

    The slot is taken after the pull, so a worker waiting on a slow async source holds no
    slot of a shared limiter; an item that never gets a slot is closed, not left unawaited.
    """
    me = cast(asyncio.Task[Any], asyncio.current_task())
    try:
        while not state.stop:
            pulled = await pull()
            if pulled is None:
                return
            i, aw = pulled
            if type(aw) is not COROUTINE_TYPE:
                aw = prepare(aw, _ARG, i)
            if limiter is None:
                ok = await _run_item(aw, i, state, item_timeout, return_exceptions, me)
            else:
                try:
                    await limiter.acquire()
                except BaseException:
                    discard(aw)
                    raise
                try:
                    ok = await _run_item(aw, i, state, item_timeout, return_exceptions, me)
                finally:
                    limiter.release()
            if not ok:
                return
    except (Exception, asyncio.CancelledError) as exc:
        if me.cancelling() and isinstance(exc, asyncio.CancelledError):
            raise
        state.fail(exc, me)


async def _run_item(
    aw: Awaitable[Any],
    i: int,
    state: _FanOut,
    item_timeout: float | None,
    return_exceptions: bool,
    me: asyncio.Task[Any],
) -> bool:
    """Await one item (under ``item_timeout``), store its result or exception in slot ``i``.

    Returns False when the worker must stop (fail-fast triggered).
    """
    results = state.results
    try:
        if item_timeout is None:
            results[i] = await aw
        else:
            async with asyncio.timeout(item_timeout):
                results[i] = await aw
    except (Exception, asyncio.CancelledError) as exc:
        if me.cancelling() and isinstance(exc, asyncio.CancelledError):
            raise
        if not return_exceptions:
            state.fail(exc, me)
            return False
        results[i] = exc
    return True
