"""Turning the items of a fan-out into awaitables, and disposing of the ones never started."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sized,
)
from types import CoroutineType
from typing import Any, TypeAlias, TypeVar

from ._tasks import note_also_failed

T = TypeVar("T")

#: One item of ``gather_limited``: an awaitable, or a zero-argument callable that returns one.
AwaitableLike: TypeAlias = Awaitable[T] | Callable[[], Awaitable[T]]

#: What ``gather_limited`` accepts: a sync or async iterable of :data:`AwaitableLike` items.
AwaitableSource: TypeAlias = Iterable[AwaitableLike[T]] | AsyncIterable[AwaitableLike[T]]

COROUTINE_TYPE: type[Any] = CoroutineType


def bad_item(arg: str, index: int, item: object) -> TypeError:
    return TypeError(
        f"{arg}[{index}] is {type(item).__name__}, "
        "not an awaitable or a zero-argument callable returning one"
    )


def prepare(item: object, arg: str, index: int) -> Awaitable[Any]:
    """Return a non-coroutine item as an awaitable; TypeError naming ``arg`` if it is neither.

    A callable is wrapped in a coroutine that calls it when awaited, so what the callable raises
    (or a non-awaitable it returns) is that item's error. Coroutines, the hot path, are
    recognised by the caller with ``type(x) is COROUTINE_TYPE`` and never reach this function.
    """
    if inspect.isawaitable(item):
        return item
    if callable(item):
        return _call(item, arg, index)
    raise bad_item(arg, index, item)


async def _call(fn: Callable[[], Any], arg: str, index: int) -> Any:
    produced = fn()
    if not inspect.isawaitable(produced):
        raise TypeError(
            f"{arg}[{index}] is a callable that returned {type(produced).__name__}, "
            "not an awaitable"
        )
    return await produced


def check_items(items: Iterable[Any], arg: str) -> None:
    """Check every item of a collection up front, so a bad one fails at the call."""
    for index, item in enumerate(items):
        if type(item) is not COROUTINE_TYPE and not (inspect.isawaitable(item) or callable(item)):
            raise bad_item(arg, index, item)


def is_collection(source: object) -> bool:
    """True for a sized, re-iterable collection (list, tuple, ...) as opposed to an iterator."""
    return isinstance(source, Sized) and iter(source) is not source  # type: ignore[call-overload]


def is_async_source(source: object, arg: str) -> bool:
    """True for an async iterable, False for a sync iterable; TypeError naming ``arg`` otherwise."""
    if isinstance(source, AsyncIterable):
        return True
    if isinstance(source, Iterable):
        return False
    raise TypeError(f"{arg} must be an iterable or async iterable, got {type(source).__name__}")


def discard(item: object) -> None:
    """Dispose of an item that will never run: close a coroutine, cancel a future."""
    if inspect.iscoroutine(item):
        item.close()
    elif isinstance(item, asyncio.Future):
        item.cancel()


def close_sync(iterator: Iterator[Any], owned: bool, failed: BaseException | None = None) -> None:
    """Dispose of what is left in a sync source after a failure or cancellation.

    A generator is closed without being advanced (its remaining coroutines were never created).
    Any other iterator is drained only when it came from a collection the caller handed over
    (``owned``, e.g. a list of coroutines), so its unstarted coroutines are closed rather than
    left to warn "never awaited"; a foreign iterator that is not a generator is left alone
    (it may be endless). If closing raises while ``failed`` is being raised, the error becomes
    a note on ``failed`` instead of replacing it.
    """
    try:
        if inspect.isgenerator(iterator):
            iterator.close()
        elif owned:
            for item in iterator:
                discard(item)
    except Exception as exc:
        if failed is None:
            raise
        note_also_failed(failed, exc, "closing the source")


async def close_async(iterator: AsyncIterator[Any], failed: BaseException | None = None) -> None:
    """Close an async generator source (its remaining items are never produced); an error
    while closing becomes a note on ``failed`` when given (see :func:`close_sync`)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:
        if failed is None:
            raise
        note_also_failed(failed, exc, "closing the source")
