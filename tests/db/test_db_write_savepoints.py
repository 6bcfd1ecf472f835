"""A failed repository write leaves the session usable: it ran in a SAVEPOINT.

Invariant: after any repository write raises (a translated integrity error or a driver error),
the same session keeps working, the work done before the write in its transaction is kept, and
the failed call wrote nothing (every statement of the call is rolled back together).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from db_write_schema import Member, MemberRepository, Segment, reset
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sight_core.db import Repository, count_queries, session_scope
from sight_core.errors import DuplicateError, ForeignKeyError


class SegmentRepository(Repository[Segment]):
    pass


@pytest.fixture
async def ws_sessions(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> async_sessionmaker[AsyncSession]:
    await reset(engine)
    async with sessions() as session:
        segment = Segment(id=1, name="b2b")
        session.add_all([segment, Member(email="taken@x.io", segment_id=1)])
        await session.commit()
    return sessions


async def _emails(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(Member.email).order_by(Member.email))).all())


async def test_get_or_create_falls_back_inside_session_scope(
    ws_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(ws_sessions) as session:
        repo = MemberRepository(session)
        await repo.add(Member(email="before@x.io"))  # earlier work of the same transaction
        try:
            member = await repo.add(Member(email="taken@x.io", name="dup"))
        except DuplicateError:
            [member] = await repo.list(Member.email == "taken@x.io")
        assert member.name is None  # the stored row, not the refused object
        await repo.add(Member(email="after@x.io"))
    assert await _emails(ws_sessions) == ["after@x.io", "before@x.io", "taken@x.io"]


_FAILING: dict[str, tuple[type[Exception], Callable[[AsyncSession], Awaitable[Any]]]] = {
    "add": (DuplicateError, lambda s: MemberRepository(s).add(Member(email="taken@x.io"))),
    "add_many": (
        DuplicateError,
        lambda s: MemberRepository(s).add_many(
            [{"email": "new@x.io"}, {"email": "new2@x.io", "name": "x"}, {"email": "taken@x.io"}]
        ),
    ),
    "upsert_many": (
        DuplicateError,  # conflicts on id, but the email belongs to another row
        lambda s: MemberRepository(s).upsert_many(
            [
                {"id": uuid.uuid4(), "email": "new@x.io"},
                {"id": uuid.uuid4(), "email": "taken@x.io"},
            ],
            on=("id",),
        ),
    ),
    "update": (
        ForeignKeyError,
        lambda s: _update_first(s, segment_id=99),
    ),
    "delete_many": (ForeignKeyError, lambda s: SegmentRepository(s).delete_many([1])),
    "delete": (ForeignKeyError, lambda s: SegmentRepository(s).delete(1)),
    "value too long": (
        DBAPIError,
        lambda s: MemberRepository(s).add_many([{"email": "x" * 101}]),
    ),
}


async def _update_first(session: AsyncSession, **changes: Any) -> Member:
    ident = await session.scalar(select(Member.id).where(Member.email == "taken@x.io"))
    return await MemberRepository(session).update(ident, **changes)


@pytest.mark.parametrize("write", list(_FAILING))
async def test_a_failed_write_keeps_the_session_and_the_earlier_work(
    ws_sessions: async_sessionmaker[AsyncSession], write: str
) -> None:
    error, call = _FAILING[write]
    async with ws_sessions() as session:
        await MemberRepository(session).add_many([{"email": "before@x.io"}])
        with pytest.raises(error):
            await call(session)
        # The session goes on: reads, writes and the commit work.
        assert len(await MemberRepository(session).list()) == 2
        await MemberRepository(session).add(Member(email="after@x.io"))
        await session.commit()
    # The failed call wrote nothing (not even its rows before the failing one).
    assert await _emails(ws_sessions) == ["after@x.io", "before@x.io", "taken@x.io"]


async def test_the_savepoint_costs_two_statements_per_write(
    engine: AsyncEngine, ws_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with ws_sessions() as session:
        async with count_queries(engine) as q:
            await MemberRepository(session).add_many([{"email": f"{i}@x.io"} for i in range(10)])
        assert [s.split()[0] for s in q.statements] == ["SAVEPOINT", "INSERT", "RELEASE"]


class _NoSavepointMembers(MemberRepository):
    write_savepoints = False


async def test_write_savepoints_off_adds_no_statement_and_still_translates(
    engine: AsyncEngine, ws_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with ws_sessions() as session:
        repo = _NoSavepointMembers(session)
        async with count_queries(engine) as q:
            await repo.add_many([{"email": f"{i}@x.io"} for i in range(10)])
        assert [s.split()[0] for s in q.statements] == ["INSERT"]
        with pytest.raises(DuplicateError):
            await repo.add(Member(email="taken@x.io"))
        # without the savepoint the transaction is aborted: the unit of work fails as a whole
        with pytest.raises((DBAPIError, PendingRollbackError)):
            await session.execute(select(Member.email))
        await session.rollback()
    assert "0@x.io" not in await _emails(ws_sessions)
