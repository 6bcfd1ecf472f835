"""Differential property: ``add_many`` / ``upsert_many`` store what SQLAlchemy's ``insert`` stores.

Invariant: for any rows of a table holding every column type (JSON/JSONB scalars, lists and
nested objects, ARRAY, pgvector ``vector`` and ``halfvec``, an enum, ``numeric``, timestamps with
zones, UUID, ``bytea``, server and Python defaults, NULLs, omitted columns), ``add_many`` into
``w_everything`` and SQLAlchemy's own ``insert(EverythingTwin)`` (one row at a time) into its twin
either both fail or both store rows whose every column has the same text in PostgreSQL.
``upsert_many`` over stored rows matches ``UPDATE`` of exactly the columns each row gave
(rows repeating an id applied in order).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from db_write_schema import Everything, EverythingRepository, EverythingTwin, Mood, reset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sight_core.db import count_queries
from sight_core.errors import IntegrityViolationError

_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_ZONES = st.builds(
    dt.timezone, st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timedelta(minutes=m))
)

#: Every optional column: each row gives a random subset of them (the others take defaults).
_COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "doc": _JSON,
    "docb": _JSON,
    "tags": st.none() | st.lists(_TEXT, max_size=3),
    "counts": st.none() | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    "embedding": st.none()
    | st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
    "half": st.none()
    | st.lists(st.floats(width=16, allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
    "mood": st.none() | st.sampled_from(Mood),
    "amount": st.none()
    | st.decimals(-(10**7), 10**7, places=6, allow_nan=False, allow_infinity=False),
    "ratio": st.none() | st.floats(width=64),
    "at": st.none() | st.datetimes(timezones=_ZONES),
    "ref": st.none() | st.uuids(),
    "blob": st.none() | st.binary(max_size=8),
    "code": st.none() | st.text(st.sampled_from("abcé€"), max_size=6),  # > 5 chars fails
    "label": st.text(st.sampled_from("xyz"), max_size=3),
    "rank": st.integers(-(2**31), 2**31 - 1),
    "kind": st.sampled_from(["plain", "fancy"]),
}
_ROW = st.fixed_dictionaries({"id": st.uuids()}, optional=_COLUMNS)
_EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def ws_sessions(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> async_sessionmaker[AsyncSession]:
    await reset(engine)
    return sessions


async def _empty(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await session.execute(text("TRUNCATE w_everything, w_everything_twin"))
        await session.commit()


async def _differences(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """Every (id, column) whose stored text differs between the two tables, or a missing row."""
    columns = [c.name for c in Everything.__table__.columns]
    differs = " OR ".join(f"a.{c}::text IS DISTINCT FROM b.{c}::text" for c in columns)
    listing = ", ".join(f"a.{c}::text, b.{c}::text" for c in columns)
    sql = (
        f"SELECT a.id, b.id, {listing} FROM w_everything a "
        f"FULL JOIN w_everything_twin b ON a.id = b.id WHERE {differs}"
    )
    async with sessions() as session:
        rows = (await session.execute(text(sql))).all()
    found = []
    for row in rows:
        for i, name in enumerate(columns):
            ours, theirs = row[2 + 2 * i], row[3 + 2 * i]
            if ours != theirs:
                found.append(f"{row[0] or row[1]}.{name}: add_many {ours!r} != insert {theirs!r}")
    return found


async def _reference_insert(
    sessions: async_sessionmaker[AsyncSession], rows: list[dict[str, Any]]
) -> BaseException | None:
    """SQLAlchemy's own insert, row by row, in one transaction; the error if it fails."""
    async with sessions() as session:
        try:
            for row in rows:
                await session.execute(insert(EverythingTwin), [row])
            await session.commit()
        except DBAPIError as exc:
            return exc
    return None


async def _ours(sessions: async_sessionmaker[AsyncSession], call: Any) -> BaseException | None:
    async with sessions() as session:
        try:
            await call(EverythingRepository(session))
            await session.commit()
        except (DBAPIError, IntegrityViolationError) as exc:
            return exc
    return None


def _unique_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({row["id"]: row for row in rows}.values())


#: Columns of list or document values: rows without them can take the ``unnest`` form.
_NOT_SCALAR = {"doc", "docb", "tags", "counts", "embedding", "half"}


@_EXAMPLES
@given(rows=st.lists(_ROW, min_size=1, max_size=6).map(_unique_ids), scalar_only=st.booleans())
async def test_add_many_stores_what_sqlalchemy_insert_stores(
    ws_sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    rows: list[dict[str, Any]],
    scalar_only: bool,
) -> None:
    if scalar_only:  # half the examples exercise the unnest form, the others mostly VALUES
        rows = [{k: v for k, v in row.items() if k not in _NOT_SCALAR} for row in rows]
    await _empty(ws_sessions)
    theirs = await _reference_insert(ws_sessions, rows)

    async def add(repo: EverythingRepository) -> None:
        async with count_queries(engine) as q:
            ids = await repo.add_many(rows)
        assert ids == [row["id"] for row in rows]
        if scalar_only:
            inserts = [sql for sql in q.statements if sql.startswith("INSERT")]
            assert inserts and all("unnest(" in sql for sql in inserts), q.report()

    ours = await _ours(ws_sessions, add)
    assert (ours is None) == (theirs is None), f"add_many: {ours!r}; insert: {theirs!r}"
    assert await _differences(ws_sessions) == []


@_EXAMPLES
@given(
    first=st.lists(_ROW, min_size=1, max_size=4).map(_unique_ids),
    second=st.lists(
        st.tuples(st.integers(0, 5), _ROW.map(lambda r: {k: v for k, v in r.items() if k != "id"})),
        min_size=1,
        max_size=5,
    ),
)
async def test_upsert_many_matches_insert_then_update_of_the_given_columns(
    ws_sessions: async_sessionmaker[AsyncSession],
    first: list[dict[str, Any]],
    second: list[tuple[int, dict[str, Any]]],
) -> None:
    await _empty(ws_sessions)
    # The second batch hits stored ids (index < len(first)) and new ones, some repeated.
    fresh = [uuid.uuid4() for _ in range(6)]
    changes = [
        {"id": first[i]["id"] if i < len(first) else fresh[i], **values} for i, values in second
    ]
    theirs = await _reference_insert(ws_sessions, first)
    ours = await _ours(ws_sessions, lambda repo: repo.upsert_many(first, on=("id",)))
    assert (ours is None) == (theirs is None), f"upsert_many: {ours!r}; insert: {theirs!r}"
    if theirs is not None:
        return
    # The documented merge: rows repeating an id merge column-wise, the last value winning.
    merged: dict[uuid.UUID, dict[str, Any]] = {}
    for row in changes:
        merged[row["id"]] = {**merged.get(row["id"], {}), **row}
    async with ws_sessions() as session:
        try:
            for ident, row in merged.items():
                values = {k: v for k, v in row.items() if k != "id"}
                stored = await session.scalar(
                    select(EverythingTwin.id).where(EverythingTwin.id == ident)
                )
                if stored is None:
                    await session.execute(insert(EverythingTwin), [row])
                elif values:
                    await session.execute(
                        update(EverythingTwin).where(EverythingTwin.id == ident).values(values)
                    )
            await session.commit()
        except DBAPIError as exc:
            theirs = exc
    ours = await _ours(ws_sessions, lambda repo: repo.upsert_many(changes, on=(Everything.id,)))
    assert (ours is None) == (theirs is None), f"upsert_many: {ours!r}; reference: {theirs!r}"
    assert await _differences(ws_sessions) == []


# Examples the property found or the issue named, kept as plain tests.

_ISSUE_ROWS: list[dict[str, Any]] = [
    {"docb": ["x"], "doc": ["x"]},
    {"docb": ["a", "b"], "doc": []},
    {"docb": [], "doc": {"nested": {"list": [1, "x", None]}}},
    {"docb": "scalar", "doc": 3},
    {"embedding": [1.0, 2.0, 3.0], "half": [0.5, -1.0, 2.0]},
    {"tags": ["a", "b"], "counts": [], "mood": Mood.plain_old},
    {"amount": decimal.Decimal("1.234567"), "at": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)},
    {"ratio": float("nan"), "blob": b"\x00\xff", "ref": uuid.UUID(int=7)},
    {"docb": None, "doc": None, "embedding": None, "tags": None},
]


@pytest.mark.parametrize("first", range(len(_ISSUE_ROWS)))
async def test_issue_rows_round_trip_whatever_row_comes_first(
    ws_sessions: async_sessionmaker[AsyncSession], first: int
) -> None:
    ordered = _ISSUE_ROWS[first:] + _ISSUE_ROWS[:first]
    # One shape for all rows, so one statement: the first row's values decide nothing.
    rows = [{"id": uuid.uuid4(), **dict.fromkeys(_COLUMNS.keys() - {"label", "rank", "kind"})}]
    rows = [{**rows[0], "id": uuid.uuid4(), **row} for row in ordered]
    assert await _reference_insert(ws_sessions, rows) is None
    assert await _ours(ws_sessions, lambda repo: repo.add_many(rows)) is None
    assert await _differences(ws_sessions) == []
