"""``TaskSupervisor``: background tasks that are kept, logged when they fail, and closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ._tasks import cancel_and_wait
from ._validate import check_optional_positive

__all__ = ["TaskSupervisor"]

T = TypeVar("T")

_log = logging.getLogger("sight_core.concurrency")


class TaskSupervisor:
    """Owns fire-and-forget tasks: strong references, failure logs, shutdown that drains.

    ``spawn(coro, name=...)`` starts a task and keeps it until it finishes (the event loop only
    keeps weak references, so an unreferenced task can vanish mid-flight). A task that raises
    is logged at ERROR on the ``sight_core.concurrency`` logger with its name and traceback;
    its arguments are never formatted into the message. :meth:`aclose` stops accepting new
    tasks, waits up to ``timeout`` for the running ones, then cancels the rest and waits for
    them. As an async context manager it calls ``aclose(close_timeout)`` on a clean exit and
    cancels at once if the body raised.
    """

    def __init__(
        self,
        name: str = "tasks",
        *,
        close_timeout: float | None = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.close_timeout = _check_timeout(close_timeout, "close_timeout")
        self._log = logger or _log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.failures = 0  #: how many spawned tasks have ended with an exception

    @property
    def running(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks spawned here that have not finished yet."""
        return frozenset(self._tasks)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started; :meth:`spawn` then raises."""
        return self._closed

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a supervised task named ``name`` (default: the coroutine's name).

        Raises ``TypeError`` for a non-coroutine and ``RuntimeError`` once closed (the
        coroutine is closed, so it does not warn "never awaited").
        """
        if not asyncio.iscoroutine(coro):
            raise TypeError(f"coro must be a coroutine, got {type(coro).__name__}")
        if self._closed:
            coro.close()
            raise RuntimeError(f"TaskSupervisor {self.name!r} is closed")
        task_name = name or getattr(coro, "__qualname__", None) or "task"
        task = asyncio.get_running_loop().create_task(coro, name=task_name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures += 1
            self._log.error(
                "background task %r of supervisor %r failed with %s",
                task.get_name(),
                self.name,
                type(exc).__qualname__,
                exc_info=exc,
            )

    async def aclose(self, timeout: float | None = 10.0) -> None:
        """Refuse new tasks, wait up to ``timeout`` s (None: forever) for the running ones,
        then cancel what is left and wait for it. Cancelling the caller cancels them all."""
        wait_for = _check_timeout(timeout, "timeout")
        self._closed = True
        tasks = set(self._tasks)
        if not tasks:
            return
        try:
            if wait_for is None or wait_for > 0:
                _, tasks = await asyncio.wait(tasks, timeout=wait_for)
        except asyncio.CancelledError:
            await cancel_and_wait(set(self._tasks))
            raise
        if tasks:
            self._log.warning(
                "supervisor %r cancelling %d task(s) still running after %ss: %s",
                self.name,
                len(tasks),
                wait_for,
                ", ".join(sorted(t.get_name() for t in tasks)),
            )
            if await cancel_and_wait(tasks):
                raise asyncio.CancelledError

    async def __aenter__(self) -> TaskSupervisor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(0 if exc is not None else self.close_timeout)


def _check_timeout(value: float | None, name: str) -> float | None:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return check_optional_positive(value, name)
