"""``upsert_many``: a conflict updates exactly the columns its row gave; repeated keys merge."""

from __future__ import annotations

import pytest
from db_write_schema import Member, MemberRepository, Segment, reset
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sight_core.db import count_queries


@pytest.fixture
async def ws(engine: AsyncEngine, session: AsyncSession) -> AsyncSession:
    await reset(engine)
    return session


async def _state(session: AsyncSession) -> dict[str, tuple[object, ...]]:
    session.expunge_all()
    rows = (await session.execute(select(Member).order_by(Member.email))).scalars().all()
    return {m.email: (m.name, m.age, m.segment_id) for m in rows}


async def _seed(session: AsyncSession) -> int:
    segment = Segment(name="b2b")
    session.add(segment)
    await session.flush()
    session.add(Member(email="a@x.io", name="old", age=30, segment_id=segment.id))
    await session.commit()
    return segment.id


async def test_rows_of_different_shapes_update_only_the_columns_they_give(
    engine: AsyncEngine, ws: AsyncSession
) -> None:
    segment = await _seed(ws)
    async with count_queries(engine) as q:
        result = await MemberRepository(ws).upsert_many(
            [{"email": "a@x.io", "name": "new"}, {"email": "b@x.io", "age": 5}], on=("email",)
        )
    # One statement per set of columns, in one SAVEPOINT.
    assert [sql.split()[0] for sql in q.statements] == ["SAVEPOINT", "INSERT", "INSERT", "RELEASE"]
    assert sorted(m.email for m in result) == ["a@x.io", "b@x.io"]
    assert await _state(ws) == {
        "a@x.io": ("new", 30, segment),  # age and segment_id untouched
        "b@x.io": (None, 5, None),
    }


async def test_rows_repeating_a_key_merge_column_wise_last_wins(
    engine: AsyncEngine, ws: AsyncSession
) -> None:
    segment = await _seed(ws)
    rows = [
        {"email": "a@x.io", "name": "first"},
        {"email": "c@x.io", "name": "c"},
        {"email": "a@x.io", "age": 31},
        {"email": "a@x.io", "name": "last"},
    ]
    async with count_queries(engine) as q:
        result = await MemberRepository(ws).upsert_many(rows, on=(Member.email,))
    # a@x.io merges to {name: "last", age: 31}; c@x.io gives only name: two shapes.
    assert q.count == 2 + 2, q.report()  # and SAVEPOINT, RELEASE
    assert len(result) == 2
    assert await _state(ws) == {
        "a@x.io": ("last", 31, segment),
        "c@x.io": ("c", None, None),
    }


async def test_explicit_update_list_is_cut_to_the_columns_a_row_gave(ws: AsyncSession) -> None:
    segment = await _seed(ws)
    await MemberRepository(ws).upsert_many(
        [{"email": "a@x.io", "name": "renamed"}], on=("email",), update=("name", "age")
    )
    assert await _state(ws) == {"a@x.io": ("renamed", 30, segment)}


async def test_a_row_giving_only_the_key_changes_nothing(ws: AsyncSession) -> None:
    segment = await _seed(ws)
    result = await MemberRepository(ws).upsert_many(
        [{"email": "a@x.io"}, {"email": "d@x.io"}], on=("email",)
    )
    assert [m.email for m in result] == ["d@x.io"]  # DO NOTHING: only the new row returns
    assert await _state(ws) == {"a@x.io": ("old", 30, segment), "d@x.io": (None, None, None)}
