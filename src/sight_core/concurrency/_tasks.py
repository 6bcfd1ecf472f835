"""Waiting for child tasks to finish, whatever happens to the waiter meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]]) -> bool:
    """Cancel ``tasks`` and wait until every one has finished.

    Cancelling the waiter again does not cut the wait short (a child must never outlive its
    parent); the cancellations are re-applied to the children instead. Returns True if the
    waiter was cancelled meanwhile, so the caller can re-raise after cleaning up.
    """
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    return await wait_all(pending)


async def wait_all(tasks: Collection[asyncio.Future[Any]]) -> bool:
    """Wait until every task has finished, even if cancelled meanwhile (see above)."""
    cancelled = False
    pending = {t for t in tasks if not t.done()}
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
            for task in pending:
                task.cancel()
            pending = {t for t in pending if not t.done()}
    return cancelled


def note_also_failed(first: BaseException, exc: BaseException, where: str) -> None:
    """Record a further error on the one being raised, so it is not lost."""
    if exc is not first:
        first.add_note(f"{where} also failed: {type(exc).__name__}: {exc}")
