"""Ids given as ``str`` are coerced like ``get()`` does; page cursors round-trip NaN and ±inf."""

from __future__ import annotations

import math
import uuid

import pytest
from db_write_schema import Member, MemberRepository, reset
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession


@pytest.fixture
async def ws(engine: AsyncEngine, session: AsyncSession) -> AsyncSession:
    await reset(engine)
    return session


_SCORES = [1.5, math.nan, -math.inf, 0.0, math.inf, math.nan, -2.0, math.inf, 3.25, -math.inf]


@pytest.mark.parametrize("descending", [True, False])
async def test_page_walks_every_row_of_a_float_order_holding_nan_and_infinities(
    ws: AsyncSession, descending: bool
) -> None:
    rows = [{"email": f"{i}@x.io", "score": s} for i, s in enumerate(_SCORES)]
    await ws.execute(insert(Member), rows)
    await ws.commit()
    order = Member.score.desc() if descending else Member.score.asc()
    tie = Member.id.desc() if descending else Member.id.asc()
    expected = list((await ws.scalars(select(Member.id).order_by(order, tie))).all())
    repo = MemberRepository(ws)
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await repo.page(after=cursor, limit=3, order_by=order)
        seen += [m.id for m in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == 10
    assert seen == expected  # PostgreSQL's order: NaN above +inf, each row once
    assert pages == 4


async def test_ids_given_as_str_find_their_rows_everywhere(ws: AsyncSession) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    await ws.execute(insert(Member), [{"id": i, "email": f"{i}@x.io"} for i in ids])
    await ws.commit()
    ws.expunge_all()
    repo = MemberRepository(ws)
    as_str = [str(i) for i in ids]
    assert (await repo.get(as_str[0])).id == ids[0]
    assert [m.id for m in await repo.get_many(as_str[::-1])] == ids[::-1]
    mixed = await repo.get_many([as_str[0], ids[1], str(uuid.uuid4())], missing="none")
    assert [m.id if m else None for m in mixed] == [ids[0], ids[1], None]
    loader = repo.loader()
    assert (await loader.load(as_str[2])).id == ids[2]
    assert [m.id for m in await loader.load_many(as_str)] == ids
    assert loader.queries == 2


async def test_an_id_that_is_not_a_uuid_is_refused_naming_the_value(ws: AsyncSession) -> None:
    repo = MemberRepository(ws)
    for call in (repo.get("nope"), repo.get_many(["nope"]), repo.loader().load("nope")):
        with pytest.raises(ValueError, match="'nope'"):
            await call


async def test_writes_take_str_ids_too(ws: AsyncSession) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    await ws.execute(insert(Member), [{"id": i, "email": f"{i}@x.io"} for i in ids])
    repo = MemberRepository(ws)
    assert (await repo.update(str(ids[0]), name="renamed")).name == "renamed"
    assert await repo.delete_many([str(ids[1])]) == 1
    await repo.delete(str(ids[2]))
    assert [m.id for m in await repo.list()] == [ids[0]]
