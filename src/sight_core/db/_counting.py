"""Count the SQL statements an engine sends: ``count_queries`` and ``assert_max_queries``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["QueryCounter", "assert_max_queries", "count_queries"]


class QueryCounter:
    """The statements seen by one :func:`count_queries` block, in the order they were sent.

    One ``execute`` is one statement; an ``executemany`` batch is one statement per round trip
    (SQLAlchemy's multi-row ``INSERT ... VALUES`` pages each count once). Transaction control
    (BEGIN/COMMIT by the driver) and pool pre-pings are not counted.
    """

    __slots__ = ("statements",)

    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        """How many statements were sent so far."""
        return len(self.statements)

    def report(self) -> str:
        """The statements numbered one per line, for assertion messages."""
        return "\n".join(
            f"{i}. {' '.join(sql.split())}" for i, sql in enumerate(self.statements, 1)
        )

    def __repr__(self) -> str:
        return f"<QueryCounter count={self.count}>"


def _sync(engine: AsyncEngine | Engine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


@asynccontextmanager
async def count_queries(engine: AsyncEngine | Engine) -> AsyncIterator[QueryCounter]:
    """``async with count_queries(engine) as q:`` then read ``q.count`` and ``q.statements``.

    Counts every statement sent through ``engine`` while the block runs, from any task. Costs
    one list append per statement.
    """
    counter = QueryCounter()
    target = _sync(engine)

    def before_cursor_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counter.statements.append(statement)

    event.listen(target, "before_cursor_execute", before_cursor_execute)
    try:
        yield counter
    finally:
        event.remove(target, "before_cursor_execute", before_cursor_execute)


@asynccontextmanager
async def assert_max_queries(engine: AsyncEngine | Engine, n: int) -> AsyncIterator[QueryCounter]:
    """Fail with ``AssertionError`` listing every statement when the block sends more than ``n``.

    Like Django's ``assertNumQueries`` but an upper bound. Not checked when the block raises
    (its own error is more useful).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    async with count_queries(engine) as counter:
        yield counter
    if counter.count > n:
        raise AssertionError(
            f"expected at most {n} queries, {counter.count} were sent:\n{counter.report()}"
        )
