"""``map_limited``: stream ``(item, result)`` pairs from a bounded window of tasks."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from typing import Any, Literal, TypeVar, cast, overload

from ._gather import resolve_workers
from ._limiter import Limiter
from ._source import close_async, close_sync, is_async_source
from ._tasks import cancel_and_wait, note_also_failed

__all__ = ["map_limited"]

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

_DONE: Any = object()


@overload
def map_limited(
    fn: Callable[[I], Awaitable[R]],
    items: Iterable[I] | AsyncIterable[I],
    *,
    limit: int | None = ...,
    ordered: bool = ...,
    return_exceptions: Literal[False] = ...,
    limiter: Limiter | None = ...,
) -> AsyncGenerator[tuple[I, R], None]: ...


@overload
def map_limited(
    fn: Callable[[I], Awaitable[R]],
    items: Iterable[I] | AsyncIterable[I],
    *,
    limit: int | None = ...,
    ordered: bool = ...,
    return_exceptions: Literal[True],
    limiter: Limiter | None = ...,
) -> AsyncGenerator[tuple[I, R | BaseException], None]: ...


@overload
def map_limited(
    fn: Callable[[I], Awaitable[R]],
    items: Iterable[I] | AsyncIterable[I],
    *,
    limit: int | None = ...,
    ordered: bool = ...,
    return_exceptions: bool,
    limiter: Limiter | None = ...,
) -> AsyncGenerator[tuple[I, R], None] | AsyncGenerator[tuple[I, R | BaseException], None]: ...


def map_limited(
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    limit: int | None = None,
    ordered: bool = False,
    return_exceptions: bool = False,
    limiter: Limiter | None = None,
) -> AsyncGenerator[tuple[Any, Any], None]:
    """Run ``fn(item)`` for each item, at most ``limit`` at once; yield ``(item, result)``.

    Pairs come in completion order, or in input order with ``ordered=True`` (a slow head item
    then holds back the ones after it). ``items`` (sync or async iterable) is pulled lazily.
    At most ``limit`` items are running or finished-but-not-yet-consumed, so a slow consumer
    bounds the work and the memory. ``limiter`` additionally holds a shared :class:`Limiter`
    while each ``fn(item)`` runs.

    The first exception cancels the rest and is raised as itself (later errors become notes);
    with ``return_exceptions=True`` it is yielded as the result instead. Leaving the
    ``async for`` early (``break``, an exception in the loop body) cancels the rest when the
    iterator is closed: wrap it in ``contextlib.aclosing(...)`` to have that happen at the
    ``break`` rather than when the iterator is garbage-collected. Cancelling the consumer
    cancels every running item.

    An async source is pulled by a task of its own, so a result that is done is yielded at
    once even while the source waits for its next item.

    Costs: one task per item (not one per ``limit``) plus a queue put, and one feeder task for
    an async source; use
    :func:`gather_limited` when all results are wanted at once and per-item cost matters.

    Raises (at the call): ``TypeError``/``ConfigurationError`` naming ``fn``, ``items``,
    ``limit`` or ``limiter``. If ``fn(item)`` returns a non-awaitable, that item fails with
    ``TypeError``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    workers = resolve_workers(limit, limiter)
    is_async = is_async_source(items, "items")
    return _map(fn, items, is_async, workers, ordered, return_exceptions, limiter)


async def _call(fn: Callable[[Any], Any], item: Any, limiter: Limiter | None) -> Any:
    if limiter is not None:
        async with limiter:
            return await _call(fn, item, None)
    aw = fn(item)
    if not inspect.isawaitable(aw):
        raise TypeError(f"fn returned {type(aw).__name__}, not an awaitable")
    return await aw


async def _anext(iterator: AsyncIterator[Any]) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _DONE


async def _map(
    fn: Callable[[Any], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    is_async: bool,
    window: int,
    ordered: bool,
    return_exceptions: bool,
    limiter: Limiter | None,
) -> AsyncGenerator[tuple[Any, Any], None]:
    loop = asyncio.get_running_loop()
    sync_it: Iterator[Any] | None = None
    async_it: AsyncIterator[Any] | None = None
    if is_async:
        async_it = cast(AsyncIterable[Any], items).__aiter__()
    else:
        sync_it = iter(cast(Iterable[Any], items))
    # item tasks, and the task feeding from an async source, report here when done
    completed: asyncio.Queue[asyncio.Task[Any]] = asyncio.Queue()
    inflight: dict[asyncio.Task[Any], tuple[int, Any]] = {}
    ready: dict[int, asyncio.Task[Any]] = {}
    room = asyncio.Event()  # set when an item has been consumed
    feeder: asyncio.Task[None] | None = None
    next_index = 0
    next_yield = 0

    def start(item: Any) -> None:
        nonlocal next_index
        task = loop.create_task(_call(fn, item, limiter))
        inflight[task] = (next_index, item)
        next_index += 1
        task.add_done_callback(completed.put_nowait)

    async def feed(source: AsyncIterator[Any]) -> None:
        # A task of its own, so a slow async source never holds back results already done.
        while True:
            while len(inflight) >= window:
                room.clear()
                await room.wait()
            item = await _anext(source)
            if item is _DONE:
                return
            start(item)

    def fill() -> None:
        if sync_it is None:
            room.set()
            return
        while len(inflight) < window:
            item = next(sync_it, _DONE)
            if item is _DONE:
                return
            start(item)

    if async_it is not None:
        feeder = loop.create_task(feed(async_it))
        feeder.add_done_callback(completed.put_nowait)

    try:
        fill()
        while inflight or feeder is not None:
            if ordered and next_yield in ready:
                task = ready.pop(next_yield)
                next_yield += 1
            else:
                done = await completed.get()
                if done is feeder:
                    feeder = None
                    done.result()  # raises what the source raised; else it is exhausted
                    continue
                if ordered:
                    ready[inflight[done][0]] = done
                    continue
                task = done
            _, item = inflight.pop(task)
            if task.cancelled():
                outcome: BaseException | None = asyncio.CancelledError()
            else:
                outcome = task.exception()
            if outcome is not None and not return_exceptions:
                raise outcome
            fill()
            yield item, (outcome if outcome is not None else task.result())
    except BaseException as exc:  # failure, early exit (GeneratorExit) or cancellation
        pending = [*inflight, *([feeder] if feeder is not None else [])]
        await cancel_and_wait(pending)
        for task in pending:
            error = None if task.cancelled() else task.exception()  # marks it retrieved
            if error is not None and not isinstance(exc, GeneratorExit):
                note_also_failed(exc, error, "another item")
        failed = None if isinstance(exc, GeneratorExit) else exc
        if async_it is not None:
            await close_async(async_it, failed)
        elif sync_it is not None:
            close_sync(sync_it, False, failed)
        raise
