"""Repository writes: add, chunked add_many, upsert_many, update, delete_many, integrity errors."""

from __future__ import annotations

import asyncio
import math
import re
import uuid

import pytest
from db_schema import Label, Note, Persona, PersonaRepository, Project, Response, seed
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sight_core.db import MAX_PARAMETERS, QueryCounter, Repository, count_queries
from sight_core.errors import (
    ConfigurationError,
    DuplicateError,
    ForeignKeyError,
    NotFoundError,
    UnloadedRelationError,
)


def _dml(q: QueryCounter) -> list[str]:
    """The statements of ``q`` but the SAVEPOINT / RELEASE pair each repository write runs in."""
    return [s for s in q.statements if not s.startswith(("SAVEPOINT ", "RELEASE SAVEPOINT "))]


def _placeholders(sql: str) -> int:
    return len(set(re.findall(r"\$\d+", sql)))


def _persona_rows(project: Project, n: int) -> list[dict[str, object]]:
    return [
        {"project_id": project.id, "name": f"n{i}", "age": i % 90, "email": f"{i}@x.io"}
        for i in range(n)
    ]


async def _project(session: AsyncSession) -> Project:
    project = Project(name="P")
    session.add(project)
    await session.commit()
    return project


async def test_add_inserts_and_unset_relations_raise(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    project = await _project(session)
    repo = PersonaRepository(session)
    async with count_queries(engine) as q:
        persona = await repo.add(
            Persona(project_id=project.id, name="Ada", age=36, email="ada@example.com")
        )
    assert len(_dml(q)) == 1 and q.count == 3  # the INSERT, in a SAVEPOINT
    assert persona.id is not None
    with pytest.raises(UnloadedRelationError, match=r"Persona\.responses"):
        _ = persona.responses  # no MissingGreenlet, no lazy query
    await session.commit()
    assert (await repo.get(persona.id)).name == "Ada"


@pytest.mark.slow
async def test_add_many_sends_one_unnest_insert_per_chunk(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rows = _persona_rows(await _project(session), 10_000)
    repo = PersonaRepository(session)
    async with count_queries(engine) as q:
        created = await repo.add_many(rows)
    assert PersonaRepository.insert_chunk_rows == 5_000
    assert len(_dml(q)) == math.ceil(10_000 / 5_000) == 2, q.report()
    for sql in _dml(q):
        assert sql.startswith("INSERT INTO personas (project_id, name, age, email, id) SELECT")
        assert "unnest(" in sql and "RETURNING personas.id" in sql
        assert _placeholders(sql) == 5  # one array per column (4 given + the id default)
    assert len(set(created)) == 10_000
    # No Persona object was built (the identity map is weak: count what is there, by type).
    assert not [o for o in session.identity_map.values() if isinstance(o, Persona)]
    assert await repo.count() == 10_000
    # The ids come back in input order, across the chunk boundary too.
    sample = [0, 1, 4_999, 5_000, 9_999]
    found = await repo.get_many([created[i] for i in sample], load=())
    assert [p.email for p in found] == [rows[i]["email"] for i in sample]

    class Small(PersonaRepository):
        insert_chunk_rows = 300

    more = [{**row, "email": f"more-{i}@x.io"} for i, row in enumerate(rows[:1_000])]
    async with count_queries(engine) as q:
        ids = await Small(session).add_many(more)
    assert len(_dml(q)) == math.ceil(1_000 / 300) == 4
    assert [p.email for p in await repo.get_many(ids, load=())] == [r["email"] for r in more]


async def test_add_many_of_mixed_shapes_keeps_every_value_and_the_order(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rows = [
        row | ({"segment": "b2b"} if i % 2 else {})
        for i, row in enumerate(_persona_rows(await _project(session), 10))
    ]
    repo = PersonaRepository(session)
    async with count_queries(engine) as q:
        created = await repo.add_many(rows)
    assert len(_dml(q)) == 2  # one insert per shape
    found = await repo.get_many(created, load=())
    assert [(p.email, p.segment) for p in found] == [(r["email"], r.get("segment")) for r in rows]


async def test_add_many_unnest_keeps_types_nulls_and_server_defaults(
    session: AsyncSession,
) -> None:
    project = await _project(session)
    repo = _LabelRepo(session)
    rows = [
        {"project_id": project.id, "name": "a", "data": {"k": [1, "x"]}, "weight": 0.5},
        {"project_id": project.id, "name": "b", "data": None, "weight": None},
        {"project_id": project.id, "name": "c", "data": {"nested": {"ok": True}}, "weight": 2.0},
    ]
    ids = await repo.add_many(rows)
    assert all(isinstance(i, uuid.UUID) for i in ids)
    labels = await repo.get_many(ids, load=())
    assert [(x.name, x.data, x.weight) for x in labels] == [
        ("a", {"k": [1, "x"]}, 0.5),
        ("b", None, None),
        ("c", {"nested": {"ok": True}}, 2.0),
    ]
    assert all(x.created_at is not None for x in labels)  # server default applied


@pytest.mark.slow
async def test_add_many_with_a_server_generated_key_chunks_within_the_parameter_limit(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    repo = _NoteRepo(session)
    rows = [{"author": f"a{i % 7}", "body": f"b{i}", "pinned": i % 3 == 0} for i in range(12_000)]
    async with count_queries(engine) as q:
        created = await repo.add_many(rows)
    # 3 values per row: 10,900 rows fit in 32,700 parameters.
    assert len(_dml(q)) == math.ceil(12_000 / (32_700 // 3)) == 2, q.report()
    assert all(s.startswith("INSERT INTO notes") and "RETURNING" in s for s in _dml(q))
    assert not any("unnest(" in s for s in q.statements)
    sizes = [_placeholders(s) for s in _dml(q)]
    assert max(sizes) <= MAX_PARAMETERS
    assert sizes[0] > 25_000  # multi-row: thousands of rows per statement
    sample = [0, 1, 10_899, 10_900, 11_999]
    found = await repo.get_many([created[i] for i in sample], load=())
    assert [n.body for n in found] == [rows[i]["body"] for i in sample]


class _LabelRepo(Repository[Label]):
    pass


class _NoteRepo(Repository[Note]):
    pass


async def test_add_many_accepts_instances_and_rejects_relationships(session: AsyncSession) -> None:
    project = await _project(session)
    repo = PersonaRepository(session)
    [made] = await repo.add_many(
        [Persona(project_id=project.id, name="i", age=1, email="i@x.io", segment="b2b")]
    )
    persona = await repo.get(made)
    assert (persona.name, persona.segment) == ("i", "b2b")
    with pytest.raises(ConfigurationError, match="responses is a relationship"):
        await repo.add_many([{"project_id": project.id, "responses": []}])
    assert await repo.add_many([]) == []


async def test_duplicate_and_foreign_key_errors_name_the_constraint(
    session: AsyncSession,
) -> None:
    project = await _project(session)
    repo = PersonaRepository(session)
    await repo.add(Persona(project_id=project.id, name="a", age=1, email="same@x.io"))
    with pytest.raises(DuplicateError) as dup:
        await repo.add_many(
            [{"project_id": project.id, "name": "b", "age": 2, "email": "same@x.io"}]
        )
    assert dup.value.constraint == "personas_project_email_key"
    assert "same@x.io" not in str(dup.value)
    await session.rollback()
    with pytest.raises(ForeignKeyError) as fk:
        await repo.add(Persona(project_id=uuid.uuid4(), name="c", age=3, email="c@x.io"))
    assert fk.value.constraint == "personas_project_id_fkey"
    assert isinstance(fk.value.__cause__, Exception)


async def test_upsert_many_updates_on_conflict(engine: AsyncEngine, session: AsyncSession) -> None:
    project = await _project(session)
    repo = PersonaRepository(session)
    first = await repo.add_many(
        [
            {"project_id": project.id, "name": "old", "age": 20, "email": f"{i}@x.io"}
            for i in range(3)
        ]
    )
    rows = [
        {"project_id": project.id, "name": "new", "age": 21, "email": "0@x.io"},
        {"project_id": project.id, "name": "newer", "age": 22, "email": "0@x.io"},  # same key
        {"project_id": project.id, "name": "fresh", "age": 23, "email": "9@x.io"},
    ]
    async with count_queries(engine) as q:
        result = await repo.upsert_many(rows, on=("project_id", Persona.email))
    assert len(_dml(q)) == 1
    assert sorted((p.email, p.name, p.age) for p in result) == [
        ("0@x.io", "newer", 22),
        ("9@x.io", "fresh", 23),
    ]
    assert next(p for p in result if p.email == "0@x.io").id == first[0]  # same row
    assert await repo.count() == 4

    ignored = await repo.upsert_many(
        [{"project_id": project.id, "name": "x", "age": 1, "email": "1@x.io"}],
        on=("project_id", "email"),
        update=(),
    )
    assert ignored == []  # DO NOTHING: existing row untouched, nothing returned
    names = (await session.scalars(select(Persona.name).where(Persona.email == "1@x.io"))).all()
    assert names == ["old"]
    with pytest.raises(ConfigurationError):
        await repo.upsert_many(rows, on=("nope",))


async def test_update_writes_only_the_given_fields(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await seed(session, personas=2, responses=5)
    repo = PersonaRepository(session)
    before = (await repo.list(order_by=Persona.email))[0]
    snapshot = (before.id, before.project_id, before.age, before.email, before.created_at)
    async with count_queries(engine) as q:
        updated = await repo.update(before.id, name="Renamed")
    update_sql = _dml(q)[0]
    assert update_sql.startswith("UPDATE personas SET name=")
    assert "age" not in update_sql.split("WHERE")[0]
    # UPDATE ... RETURNING, then the declared loads: an UPDATE cannot join Persona.project,
    # so the row is selected again with it, plus the selectin load of responses.
    assert len(_dml(q)) == 3, q.report()
    assert updated.name == "Renamed"
    assert len(updated.responses) == 5  # declared loads are there

    session.expunge_all()
    fresh = await repo.get(before.id)
    assert (fresh.id, fresh.project_id, fresh.age, fresh.email, fresh.created_at) == snapshot
    assert [r.answer for r in fresh.responses] == [f"answer {j}" for j in range(5)]
    assert fresh.project.name == "Sight"
    responses = await session.scalar(
        select(func.count()).select_from(Response).where(Response.persona_id == before.id)
    )
    assert responses == 5

    with pytest.raises(ConfigurationError, match="responses is a relationship"):
        await repo.update(before.id, responses=[])
    with pytest.raises(ConfigurationError):
        await repo.update(before.id, id=uuid.uuid4())
    with pytest.raises(NotFoundError):
        await repo.update(uuid.uuid4(), name="ghost")
    other = (await repo.list(order_by=Persona.email))[1]
    with pytest.raises(DuplicateError, match="personas_project_email_key"):
        await repo.update(other.id, email=fresh.email)


async def test_delete_many_and_delete(engine: AsyncEngine, session: AsyncSession) -> None:
    await seed(session, personas=5, responses=0)
    repo = PersonaRepository(session)
    ids = list((await session.scalars(select(Persona.id).order_by(Persona.email))).all())
    async with count_queries(engine) as q:
        deleted = await repo.delete_many([*ids[:3], uuid.uuid4()])
    assert deleted == 3
    assert len(_dml(q)) == 1
    assert await repo.count() == 2
    await repo.delete(ids[3])
    with pytest.raises(NotFoundError):
        await repo.delete(ids[3])
    assert await repo.delete_many([]) == 0


async def test_delete_referenced_row_raises_foreign_key_error(session: AsyncSession) -> None:
    await seed(session, personas=1, responses=1)
    persona_id = (await session.scalars(select(Persona.id))).one()
    with pytest.raises(ForeignKeyError, match="responses_persona_id_fkey"):
        await PersonaRepository(session).delete_many([persona_id])


async def test_loader_coalesces_concurrent_loads_into_one_query(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await seed(session, personas=50, responses=2)
    ids = list((await session.scalars(select(Persona.id))).all())
    session.expunge_all()
    loader = PersonaRepository(session).loader()
    ghost = uuid.uuid4()
    async with count_queries(engine) as q:
        results = await asyncio.gather(
            *(loader.load(i) for i in ids),
            loader.load(ghost),
            loader.load_or_none(ghost),
            return_exceptions=True,
        )
    assert q.count == 2  # one get_many for 51 ids + the selectin load of responses
    assert loader.queries == 1
    assert [p.id for p in results[:50]] == ids  # type: ignore[union-attr]
    assert isinstance(results[50], NotFoundError)
    assert results[51] is None
    assert all(len(p.responses) == 2 for p in results[:50])  # type: ignore[union-attr]

    small = PersonaRepository(session).loader(max_batch_size=20)
    async with count_queries(engine) as q:
        await small.load_many(ids)
    assert small.queries == 3  # 50 ids in batches of 20, one after another on one session
