"""Adversarial data-layer scenarios against the real embedded PostgreSQL.

Each test names the invariant it attacks. Some found bugs (fixed in src); the others found
nothing and stay as cheap regression guards.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sight_core.db import session_scope


def _checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


async def _assert_pool_healthy(engine: AsyncEngine) -> None:
    assert _checked_out(engine) == 0
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT 41 + 1")) == 42
    assert _checked_out(engine) == 0


# --- cancellation is never an outage --------------------------------------------------------


async def test_cancelling_a_query_raises_cancelled_error_and_leaves_the_pool_healthy(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        async with session_scope(sessions) as session:
            await session.execute(text("SELECT 1"))
            started.set()
            await session.execute(text("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.1)  # inside pg_sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_pool_healthy(engine)


async def test_asyncio_timeout_around_a_query_raises_timeout_error(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            async with session_scope(sessions) as session:
                await session.execute(text("SELECT pg_sleep(5)"))
    await _assert_pool_healthy(engine)


async def test_cancelling_during_checkout_raises_cancelled_error(
    db_url: str,
) -> None:
    from sight_core.db import create_engine
    from sight_core.settings import DatabaseSettings

    engine = create_engine(DatabaseSettings(url=db_url, preset="test"), check_budget=False)
    try:
        for delay in (0.0, 0.001, 0.003, 0.01):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(delay):
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT pg_sleep(1)"))
            await _assert_pool_healthy(engine)
    finally:
        await engine.dispose()


async def test_task_group_sibling_failure_cancels_a_query_cleanly(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async def query() -> None:
        async with session_scope(sessions) as session:
            await session.execute(text("SELECT pg_sleep(5)"))

    async def fail() -> None:
        await asyncio.sleep(0.2)
        raise ValueError("sibling")

    with pytest.raises(ExceptionGroup) as raised:
        async with asyncio.TaskGroup() as group:
            group.create_task(query())
            group.create_task(fail())
    # only the sibling's error: the cancelled query is not reported as an outage
    assert [type(e) for e in raised.value.exceptions] == [ValueError]
    await _assert_pool_healthy(engine)
