"""Bulk writes take column values: a relationship set on an instance is refused, like a dict key."""

from __future__ import annotations

import pytest
from db_write_schema import Member, MemberRepository, Segment, reset
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sight_core.errors import ConfigurationError


@pytest.fixture
async def ws(engine: AsyncEngine, session: AsyncSession) -> AsyncSession:
    await reset(engine)
    return session


async def test_an_instance_with_a_relationship_set_is_refused_naming_the_key_column(
    ws: AsyncSession,
) -> None:
    segment = Segment(name="b2b")
    ws.add(segment)
    await ws.commit()
    repo = MemberRepository(ws)
    for write in (
        lambda rows: repo.add_many(rows),
        lambda rows: repo.upsert_many(rows, on=("email",)),
    ):
        with pytest.raises(ConfigurationError, match=r"Member\.segment.*set segment_id") as exc:
            await write([Member(email="a@x.io", segment=segment)])
        assert "relationship" in str(exc.value)
        with pytest.raises(ConfigurationError, match="segment is a relationship"):
            await write([{"email": "a@x.io", "segment": segment}])
    assert await ws.scalar(select(func.count()).select_from(Member)) == 0  # nothing stored


async def test_an_instance_giving_the_key_column_stores_it(ws: AsyncSession) -> None:
    segment = Segment(name="b2b")
    ws.add(segment)
    await ws.commit()
    repo = MemberRepository(ws)
    [made] = await repo.add_many([Member(email="a@x.io", segment_id=segment.id)])
    [upserted] = await repo.upsert_many(
        [Member(email="b@x.io", segment_id=segment.id)], on=("email",)
    )
    ws.expunge_all()
    stored = (await ws.scalars(select(Member.segment_id).order_by(Member.email))).all()
    assert stored == [segment.id, segment.id]
    assert upserted.email == "b@x.io" and made is not None
