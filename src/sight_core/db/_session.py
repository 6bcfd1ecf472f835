"""Session factory (``expire_on_commit=False``), transactional scope, FastAPI dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ._errors import translate_integrity_error

__all__ = ["create_sessionmaker", "session_dependency", "session_scope"]


def create_sessionmaker(engine: AsyncEngine, **options: Any) -> async_sessionmaker[AsyncSession]:
    """An ``async_sessionmaker`` bound to ``engine`` with ``expire_on_commit=False``.

    Objects stay readable after ``commit()`` (no implicit refresh, which in async code would be an
    unawaited lazy load). ``options`` override any ``async_sessionmaker`` argument.
    """
    options.setdefault("expire_on_commit", False)
    return async_sessionmaker(engine, **options)


@asynccontextmanager
async def session_scope(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the block succeeds, roll back when it raises, always close.

    ``async with session_scope(sessions) as session: ...``. A unique or foreign-key violation
    raised by the block or by the commit becomes :class:`~sight_core.errors.DuplicateError` /
    :class:`~sight_core.errors.ForeignKeyError` naming the constraint (the driver error is on
    ``__cause__``). The session is for one task: never share it between concurrent tasks.
    """
    session = sessions()
    try:
        yield session
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise translate_integrity_error(exc) from exc
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


def session_dependency(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[], AsyncIterator[AsyncSession]]:
    """A FastAPI dependency: ``get = session_dependency(sessions)`` then ``Depends(get)``.

    Each request gets its own session, committed after the endpoint returns, rolled back when it
    raises, always closed: the same contract as :func:`session_scope`. The dependency does not
    import FastAPI.
    """

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with session_scope(sessions) as session:
            yield session

    get_session.__doc__ = (
        "A request-scoped ``AsyncSession`` (commit on success, rollback on error)."
    )
    return get_session
