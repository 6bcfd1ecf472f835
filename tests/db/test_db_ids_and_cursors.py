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
