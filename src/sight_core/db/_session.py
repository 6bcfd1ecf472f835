"""Session factory (``expire_on_commit=False``), transactional scope, FastAPI dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from sight_core.errors import MissingDependencyError

from ._errors import translate_integrity_error
from ._unloaded import strict_session_class

__all__ = ["create_sessionmaker", "session_dependency", "session_scope"]


def create_sessionmaker(engine: AsyncEngine, **options: Any) -> async_sessionmaker[AsyncSession]:
    """An ``async_sessionmaker`` bound to ``engine``: strict sessions, ``expire_on_commit=False``.

    Strict: reading a relationship that no query loaded raises
    :class:`~sight_core.errors.UnloadedRelationError` (naming the relation and the ``load=``
    declaration that fixes it) instead of sending one query per object, in every query of the
    session, repository or not; a many-to-one whose target the session already holds is
    returned without SQL. It costs one check per statement executed, nothing per loaded row.
    Off for one session: ``sessions(info={"raise_unloaded": False})``; for all:
    ``create_sessionmaker(engine, info={"raise_unloaded": False})``.

    Objects stay readable after ``commit()`` (no implicit refresh, which in async code would be an
    unawaited lazy load). ``options`` override any ``async_sessionmaker`` argument; a
    ``sync_session_class`` of your own gets the guard mixed in.
    """
    options.setdefault("expire_on_commit", False)
    options["sync_session_class"] = strict_session_class(
        options.get("sync_session_class") or Session
    )
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
) -> Callable[..., Awaitable[AsyncSession]]:
    """A FastAPI dependency: ``get = session_dependency(sessions)`` then ``Depends(get)``.

    Each request gets its own session with the contract of :func:`session_scope`: committed
    when the endpoint returns, rolled back when it raises, always closed, and all of it
    *before* the response is sent, however ``get`` is declared (``Depends(get)`` in a
    signature or an ``Annotated`` alias, with or without ``scope=``). A failed commit therefore
    fails the request (``DuplicateError`` / ``ForeignKeyError``; 409 with
    :func:`sight_core.fastapi.add_error_handlers`) instead of answering 200 for a row that was
    never written. Response models are serialized before the commit, on the open session.

    ``get`` is a plain ``async def`` depending on a generator dependency declared with
    ``scope="function"`` (FastAPI >= 0.121): a ``yield`` dependency of the default scope runs
    its exit code *after* the response is sent. Several ``Depends(get)`` in one request share
    the one session.

    Raises:
        MissingDependencyError: FastAPI is not installed (extra ``fastapi``).
    """
    try:
        from fastapi import Depends
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("fastapi", "fastapi") from exc

    async def request_unit_of_work() -> AsyncIterator[AsyncSession]:
        async with session_scope(sessions) as session:
            yield session

    async def get_session(
        session: AsyncSession = Depends(request_unit_of_work, scope="function"),  # noqa: B008
    ) -> AsyncSession:
        """A request-scoped ``AsyncSession``, committed before the response is sent."""
        return session

    return get_session
