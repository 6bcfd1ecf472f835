"""The sync API's engine: one long-lived event loop per process, in a daemon thread.

``invoke()``/``stream()``/``batch()`` of a resilient model submit the async path (budget, cache,
retry policy, breaker, limiter, fallback, usage) to this loop and block the calling thread on
the result. The loop never closes while the process lives, so nothing that outlives one call
(pooled connections, the limiter's waiters, the breaker) ever belongs to a dead loop: the
failure mode of the old ``asyncio.run()`` per call, which lost billed answers to ``RuntimeError:
Event loop is closed``.

Inside a sync call (:func:`in_sync_call`) the provider request itself goes through the SDK's
*sync* client in a worker thread of this loop (:func:`to_thread`): the SDK's async client
belongs to the loop that used it first (the application's), and must not be shared with
this one. The caller's contextvars (usage scopes, labels, testing mode) are copied into the
submitted task. A forked child starts its own loop on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from sight_core.errors import ConfigurationError

__all__ = ["in_sync_call", "iterate_sync", "run_sync", "to_thread", "to_thread_holding"]

_T = TypeVar("_T")

_WORKERS = 64
"""Threads for sync provider requests; the model's concurrency cap bounds how many run."""

_in_sync: contextvars.ContextVar[bool] = contextvars.ContextVar("sight_llm_sync", default=False)


class _Runner:
    """The loop, its thread and its executor, started on first use."""

    __slots__ = ("executor", "loop", "thread")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            _WORKERS, thread_name_prefix="sight-llm-sync"
        )
        self.loop.set_default_executor(self.executor)
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name="sight-llm-loop", daemon=True)
        self.thread.start()
        ready.wait()


_lock = threading.Lock()
_runner: list[_Runner] = []


def _get_runner() -> _Runner:
    if _runner:
        return _runner[0]
    with _lock:
        if not _runner:
            _runner.append(_Runner())
        return _runner[0]


def _forget_after_fork() -> None:  # the parent's loop thread does not exist in the child
    global _lock
    _lock = threading.Lock()
    _runner.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def in_sync_call() -> bool:
    """Whether the current task serves a sync call (provider requests use the sync client)."""
    return _in_sync.get()


def _refuse_in_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise ConfigurationError(
        f"sync {what}() of a sight-core model inside a running event loop would block it; "
        f"use await llm.a{what}(...)"
    )


class _Call:
    """One coroutine submitted to the loop: its task (once started) and its result."""

    __slots__ = ("done", "runner", "task")

    def __init__(self, runner: _Runner) -> None:
        self.runner = runner
        self.done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.task: asyncio.Task[Any] | None = None

    def start(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> None:
        task = self.task = self.runner.loop.create_task(coro, context=context)
        task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.done.cancel()
        elif (exc := task.exception()) is not None:
            self.done.set_exception(exc)
        else:
            self.done.set_result(task.result())

    def cancel(self) -> None:
        """Cancel the task from the loop thread (a no-op once it finished)."""
        if self.task is not None:
            self.task.cancel()


def _submit(coro: Coroutine[Any, Any, Any]) -> _Call:
    """Start ``coro`` on the loop with a copy of the caller's context, marked as a sync call."""
    runner = _get_runner()
    context = contextvars.copy_context()
    context.run(_in_sync.set, True)
    call = _Call(runner)
    runner.loop.call_soon_threadsafe(call.start, coro, context)
    return call


def _wait(call: _Call) -> Any:
    """Block for ``call``'s result. An interrupt of the waiting thread (``KeyboardInterrupt``)
    cancels the task and waits for it to finish its bookkeeping (usage record, limiter)."""
    try:
        return call.done.result()
    except BaseException:
        if not call.done.done():
            call.runner.loop.call_soon_threadsafe(call.cancel)
            with contextlib.suppress(BaseException):
                call.done.result(timeout=30)
        raise


def run_sync(what: str, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``make()`` on the process loop and return its result (or raise its error).

    Raises:
        ConfigurationError: called from a thread that is running an event loop (it would
            block it); the message names the async method to await instead.
    """
    _refuse_in_loop(what)
    result: _T = _wait(_submit(make()))
    return result


def iterate_sync(what: str, make: Callable[[], AsyncIterator[_T]]) -> Iterator[_T]:
    """Iterate the async iterator ``make()`` on the process loop, one item per round trip.

    Closing the returned generator early (``break``, garbage collection, an error in the
    consumer) closes the async iterator on the loop and waits for it, so its ``finally``
    blocks (usage record of an abandoned stream, limiter release) have run when it returns.
    """
    _refuse_in_loop(what)
    iterator = make()
    finished = False
    try:
        while True:
            try:
                item: _T = _wait(_submit(_next(iterator)))
            except StopAsyncIteration:
                finished = True
                return
            yield item
    finally:
        if not finished:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                _wait(_submit(close()))


async def _next(iterator: AsyncIterator[_T]) -> _T:
    return await anext(iterator)


async def to_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` in a worker thread of the running loop, with this context.

    At interpreter exit the executor refuses new work while non-daemon threads may still be
    in a sync call (the main thread has returned): the call then gets a thread of its own, so
    a stream or a retry in flight is not lost to ``cannot schedule new futures``."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    try:
        future: asyncio.Future[_T] = loop.run_in_executor(None, call)
    except RuntimeError:  # the executor was shut down (interpreter exit)
        future = _in_own_thread(loop, call)
    return await future


async def to_thread_holding(
    release: Callable[[], None], fn: Callable[..., _T], /, *args: Any, **kwargs: Any
) -> _T:
    """:func:`to_thread`, then ``release()`` (on this loop) once ``fn`` has returned or raised.

    A thread cannot be stopped: when the awaiting task is cancelled (a deadline), ``fn`` (a
    request on the SDK's sync client) goes on, and what it holds (a concurrency slot) stays
    held until it ends, not until the cancellation."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    try:
        try:
            future: asyncio.Future[_T] = loop.run_in_executor(None, call)
        except RuntimeError:  # the executor was shut down (interpreter exit)
            future = _in_own_thread(loop, call)
    except BaseException:
        release()
        raise

    def ended(done: asyncio.Future[_T]) -> None:
        release()
        if not done.cancelled():
            done.exception()  # retrieved: nobody may be awaiting it any more

    future.add_done_callback(ended)
    return await asyncio.shield(future)


def _in_own_thread(loop: asyncio.AbstractEventLoop, call: Callable[[], _T]) -> asyncio.Future[_T]:
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return  # cancelled meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="sight-llm-sync-exit", daemon=True).start()
    return future
