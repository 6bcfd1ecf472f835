"""``TaskSupervisor``: background tasks that are kept, logged when they fail, and closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ._validate import check_optional_positive

__all__ = ["TaskSupervisor"]

T = TypeVar("T")

_log = logging.getLogger("sight_core.concurrency")


class TaskSupervisor:
    """Owns fire-and-forget tasks: strong references, failure logs, shutdown that drains.

    ``spawn(coro, name=...)`` starts a task and keeps it until it finishes (the event loop only
    keeps weak references, so an unreferenced task can vanish mid-flight). A task that raises
    is logged at ERROR on the ``sight_core.concurrency`` logger with its name and traceback;
    its arguments are never formatted into the message. :meth:`aclose` drains (waits up to
    ``timeout`` for the running tasks, accepting tasks they spawn meanwhile), then cancels the
    rest and waits at most ``cancel_timeout`` for them: it always returns within ``timeout +
    cancel_timeout``, even when a task ignores cancellation (that task is logged and left in
    :attr:`running`). As an async context manager it calls ``aclose(close_timeout)`` on a
    clean exit and cancels at once if the body raised.
    """

    def __init__(
        self,
        name: str = "tasks",
        *,
        close_timeout: float | None = 10.0,
        cancel_timeout: float = 1.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.close_timeout = _check_timeout(close_timeout, "close_timeout")
        checked = _check_timeout(cancel_timeout, "cancel_timeout")
        if checked is None:
            raise ValueError("cancel_timeout must be a number of seconds >= 0, got None")
        self.cancel_timeout = checked
        self._log = logger or _log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False  # aclose() has started
        self._accepting = True  # open, or draining: spawn() is accepted
        self.failures = 0  #: how many spawned tasks have ended with an exception

    @property
    def running(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks spawned here that have not finished yet."""
        return frozenset(self._tasks)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started (spawns are accepted until its drain ends)."""
        return self._closed

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a supervised task named ``name`` (default: the coroutine's name).

        While :meth:`aclose` drains, new tasks (typically spawned by a draining task) are
        accepted and drained too. Once the drain has ended the task is rejected: a WARNING
        names it and the reason, and ``RuntimeError`` is raised (the coroutine is closed, so it
        does not warn "never awaited"). Raises ``TypeError`` for a non-coroutine.
        """
        if not asyncio.iscoroutine(coro):
            raise TypeError(f"coro must be a coroutine, got {type(coro).__name__}")
        task_name = name or getattr(coro, "__qualname__", None) or "task"
        if not self._accepting:
            coro.close()
            self._log.warning(
                "supervisor %r rejected task %r: closed, its drain has ended",
                self.name,
                task_name,
            )
            raise RuntimeError(f"TaskSupervisor {self.name!r} is closed; {task_name!r} rejected")
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
        """Drain, then cancel: returns within ``timeout + cancel_timeout`` seconds.

        Waits up to ``timeout`` s (None: no limit) for the running tasks, and for tasks
        spawned meanwhile; then stops accepting tasks, cancels what is left and waits at most
        ``cancel_timeout`` s. Tasks still running then ignore cancellation: they are logged
        at ERROR and left running (see :attr:`running`). Cancelling the caller cancels every
        task, waits at most ``cancel_timeout`` and re-raises.
        """
        wait_for = _check_timeout(timeout, "timeout")
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = None if wait_for is None else loop.time() + wait_for
        try:
            while pending := {t for t in self._tasks if not t.done()}:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                await asyncio.wait(pending, timeout=remaining)
        except asyncio.CancelledError:
            self._accepting = False
            await self._cancel_within(set(self._tasks), "aclose was cancelled")
            raise
        self._accepting = False
        left = {t for t in self._tasks if not t.done()}
        if left:
            self._log.warning(
                "supervisor %r cancelling %d task(s) still running after %ss: %s",
                self.name,
                len(left),
                wait_for,
                _names(left),
            )
            await self._cancel_within(left, "drain timed out")

    async def _cancel_within(self, tasks: set[asyncio.Task[Any]], why: str) -> None:
        """Cancel ``tasks`` and wait at most ``cancel_timeout`` for them; log who ignored it."""
        for task in tasks:
            task.cancel()
        pending = {t for t in tasks if not t.done()}
        if pending:
            try:
                _, pending = await asyncio.wait(pending, timeout=self.cancel_timeout)
            finally:
                pending = {t for t in pending if not t.done()}
                if pending:
                    self._log.error(
                        "supervisor %r (%s): %d task(s) still running %ss after cancel, left "
                        "behind: %s",
                        self.name,
                        why,
                        len(pending),
                        self.cancel_timeout,
                        _names(pending),
                    )

    async def __aenter__(self) -> TaskSupervisor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(0 if exc is not None else self.close_timeout)


def _names(tasks: set[asyncio.Task[Any]]) -> str:
    return ", ".join(sorted(t.get_name() for t in tasks))


def _check_timeout(value: float | None, name: str) -> float | None:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return check_optional_positive(value, name)
