"""Repository reads: declared loads, raising on undeclared relations, get_many, keyset pages."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid

import pytest
from db_schema import FocusGroup, Label, Persona, PersonaRepository, Project, Response, seed
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import joinedload, selectinload

from sight_core.db import Repository, count_queries, eager
from sight_core.errors import ConfigurationError, NotFoundError, UnloadedRelationError


@pytest.mark.parametrize("personas", [20, 200])
async def test_listing_costs_one_query_plus_one_per_selectin_relation(
    engine: AsyncEngine, session: AsyncSession, personas: int
) -> None:
    await seed(session, personas=personas, responses=5)
    repo = PersonaRepository(session)
    async with count_queries(engine) as q:
        rows = await repo.list(order_by=Persona.email)
        answers = [[r.answer for r in p.responses] for p in rows]
        projects = {p.project.name for p in rows}
    # project is joined (scalar), responses selectin-loaded: 1 + 1, whatever the row count.
    assert q.count == 2, q.report()
    assert len(rows) == personas
    assert answers == [[f"answer {j}" for j in range(5)]] * personas
    assert projects == {"Sight"}

    session.expunge_all()
    both_selectin = (selectinload(Persona.project), selectinload(Persona.responses))
    async with count_queries(engine) as q:
        rows = await repo.list(load=both_selectin)
        assert all(p.project.name == "Sight" and len(p.responses) == 5 for p in rows)
    assert q.count == 3, q.report()


async def test_the_lazy_loop_it_replaces_costs_one_query_per_row(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        await seed(session, personas=20)
    lax = {"raise_unloaded": False}  # SQLAlchemy's own behaviour, guard off
    async with sessions(info=lax) as session, count_queries(engine) as q:
        personas = (await session.scalars(select(Persona))).all()
        for persona in personas:
            await session.run_sync(lambda _s, p=persona: len(p.responses))
    assert q.count == 21
    async with sessions(info=lax) as session:
        persona = (await session.scalars(select(Persona).limit(1))).one()
        with pytest.raises(MissingGreenlet):
            _ = persona.responses  # what a service sees without the guard


async def test_touching_an_undeclared_relation_raises_a_named_error(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await seed(session, personas=3)
    session.expunge_all()  # the project is not in the identity map: reading it needs SQL
    repo = PersonaRepository(session)
    persona = (await repo.list(load=(Persona.responses,)))[0]
    async with count_queries(engine) as q:
        with pytest.raises(UnloadedRelationError) as info:
            _ = persona.project
        with pytest.raises(UnloadedRelationError):  # not an AttributeError: hasattr is loud too
            hasattr(persona, "project")
        # A many-to-one whose key is NULL needs no SQL: None, nothing refused.
        assert persona.responses[0].focus_group is None
    assert q.count == 0  # never a query
    message = str(info.value)
    assert message.startswith("Persona.project was not loaded")
    assert "joinedload(Persona.project))` on the Persona repository" in message
    assert "load=(" not in message  # never a per-call load=, which replaces the declared loads

    projects = await _ProjectRepo(session).list()
    with pytest.raises(UnloadedRelationError, match=r"selectinload\(Project\.personas\)"):
        _ = projects[0].personas


class _ProjectRepo(Repository[Project]):
    pass


async def test_the_guard_costs_nothing_per_row_on_objects_the_read_creates(
    session: AsyncSession,
) -> None:
    await seed(session, personas=3, responses=2)
    # The same query without the guard, compiled first: the guard must not share its cache entry.
    hand = select(Persona).options(joinedload(Persona.project), selectinload(Persona.responses))
    assert len((await session.scalars(hand)).all()) == 3
    session.expunge_all()
    assert not session.identity_map  # fresh session: the per-row-free plan applies
    rows = await PersonaRepository(session).list()
    children = [r for p in rows for r in p.responses]
    # No raising loader was set on any loaded object; the session's hook does the work.
    assert all(not inspect(o).callables for o in [*rows, rows[0].project, *children])
    assert children[0].persona in rows  # many-to-one in the identity map: no SQL, no error
    with pytest.raises(UnloadedRelationError, match=r"Project\.focus_groups"):
        _ = rows[0].project.focus_groups


async def test_objects_the_session_already_held_raise_too(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await seed(session, personas=3, responses=2)
    # Loaded by plain queries first: they carry no repository options of their own.
    plain_project = (await session.scalars(select(Project))).one()
    plain_personas = (await session.scalars(select(Persona))).all()
    rows = await PersonaRepository(session).list(load=(Persona.project,))
    assert {id(p) for p in rows} == {id(p) for p in plain_personas}
    async with count_queries(engine) as q:
        with pytest.raises(UnloadedRelationError, match=r"Persona\.responses"):
            _ = rows[0].responses
        with pytest.raises(UnloadedRelationError, match=r"Project\.personas"):
            _ = rows[0].project.personas
    assert q.count == 0
    assert rows[0].project is plain_project


async def test_objects_of_plain_queries_raise_too_unless_the_session_opts_out(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        await seed(session, personas=2, responses=3)
    async with sessions() as session:
        plain = (await session.scalars(select(Persona).limit(1))).one()
        with pytest.raises(UnloadedRelationError, match=r"Persona\.responses"):
            _ = plain.responses
    async with sessions(info={"raise_unloaded": False}) as session:
        plain = (await session.scalars(select(Persona).limit(1))).one()
        with pytest.raises(MissingGreenlet):
            _ = plain.responses
        async with count_queries(engine) as q:
            assert await session.run_sync(lambda _s: len(plain.responses)) == 3
        assert q.count == 1  # a real lazy load, as SQLAlchemy does it


async def test_relations_the_model_eager_loads_load_as_the_model_says(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    project = await seed(session, personas=1)
    session.add(Label(project_id=project.id, name="vip"))
    await session.commit()
    session.expunge_all()
    async with count_queries(engine) as q:
        [label] = await _LabelRepo(session).list()
    assert q.count == 1 and "JOIN" in q.statements[0]  # Label.project is lazy="joined"
    assert label.project.name == "Sight"  # eager on the model: not N+1, so not refused
    session.expunge_all()
    async with count_queries(engine) as q:
        [label] = await _LabelRepo(session).list(load=(Label.project,))
    assert q.count == 1 and "JOIN" in q.statements[0]
    assert label.project.name == "Sight"
    with pytest.raises(UnloadedRelationError, match=r"Project\.personas"):
        _ = label.project.personas


class _LabelRepo(Repository[Label]):
    pass


async def test_per_call_load_overrides_and_eager_paths(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    project = await seed(session, personas=4, responses=2)
    group = FocusGroup(project_id=project.id, name="g1")
    session.add(group)
    await session.flush()
    await session.execute(Response.__table__.update().values(focus_group_id=group.id))
    await session.commit()
    session.expunge_all()

    repo = PersonaRepository(session)
    async with count_queries(engine) as q:
        rows = await repo.list(load=(eager(Persona.responses, Response.focus_group),))
        names = {r.focus_group.name for p in rows for r in p.responses if r.focus_group}
    assert names == {"g1"}
    assert q.count == 2  # personas; responses joined to their focus group
    with pytest.raises(UnloadedRelationError, match=r"Persona\.project"):
        _ = rows[0].project


async def test_two_joined_collections_are_refused(session: AsyncSession) -> None:
    repo = _ProjectRepo(session)
    with pytest.raises(ConfigurationError, match=r"Project\.personas, Project\.focus_groups"):
        await repo.list(load=(joinedload(Project.personas), joinedload(Project.focus_groups)))
    with pytest.raises(ConfigurationError, match="not a relationship"):
        await repo.list(load=(Project.name,))

    class Exploding(Repository[Project]):
        load = (joinedload(Project.personas), joinedload(Project.focus_groups))

    with pytest.raises(ConfigurationError):
        await Exploding(session).list()


async def test_one_joined_collection_is_deduplicated(session: AsyncSession) -> None:
    await seed(session, personas=3, responses=4)
    rows = await PersonaRepository(session).list(load=(joinedload(Persona.responses),))
    assert len(rows) == 3
    assert all(len(p.responses) == 4 for p in rows)


async def test_get_and_get_or_none(engine: AsyncEngine, session: AsyncSession) -> None:
    await seed(session, personas=2)
    repo = PersonaRepository(session)
    some_id = (await session.scalars(select(Persona.id))).first()
    async with count_queries(engine) as q:
        persona = await repo.get(some_id)
        assert len(persona.responses) == 5
    assert q.count == 2
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError) as info:
        await repo.get(missing)
    assert info.value.model == "Persona"
    assert info.value.ident == missing
    assert str(missing) in str(info.value)
    assert await repo.get_or_none(missing) is None


async def test_get_many_keeps_the_order_asked_in_one_query(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await seed(session, personas=1000, responses=0)
    ids = list((await session.scalars(select(Persona.id))).all())
    random.Random(7).shuffle(ids)
    repo = PersonaRepository(session)
    async with count_queries(engine) as q:
        rows = await repo.get_many(ids, load=())
    assert q.count == 1
    assert [p.id for p in rows] == ids

    a, b = ids[:2]
    ghost1, ghost2 = uuid.uuid4(), uuid.uuid4()
    asked = [b, ghost1, a, b, ghost2, ghost1]
    with pytest.raises(NotFoundError) as info:
        await repo.get_many(asked)
    assert info.value.ident == (ghost1, ghost2)
    aligned = await repo.get_many(asked, missing="none")
    assert [p.id if p else None for p in aligned] == [b, None, a, b, None, None]
    assert aligned[0] is aligned[3]
    async with count_queries(engine) as q:
        assert await repo.get_many([]) == []
    assert q.count == 0


async def test_count_and_exists_load_nothing(engine: AsyncEngine, session: AsyncSession) -> None:
    await seed(session, personas=30)
    repo = PersonaRepository(session)
    async with count_queries(engine) as q:
        assert await repo.count() == 30
        assert await repo.count(Persona.age < 25) == 5
        assert await repo.exists(Persona.email == "p3@example.com")
        assert not await repo.exists(Persona.email == "nobody@example.com")
    assert q.count == 4
    assert "count(*)" in q.statements[0]
    assert "responses" not in " ".join(q.statements)
    assert session.identity_map.keys() == set()


def _decode(cursor: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


async def test_keyset_pages_are_stable_under_concurrent_inserts(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        project = await seed(session, personas=60, responses=1)
        original = set((await session.scalars(select(Persona.id))).all())

    async def insert_more(round_: int) -> None:
        # Another connection commits rows before and after the reader's position.
        async with sessions() as other:
            rows = [
                {
                    "id": uuid.UUID(int=random.Random(round_ * 10 + i).getrandbits(128)),
                    "project_id": project.id,
                    "name": "late",
                    "age": 30,
                    "email": f"late{round_}-{i}@example.com",
                }
                for i in range(5)
            ]
            await other.execute(insert(Persona), rows)
            await other.commit()

    seen: list[uuid.UUID] = []
    async with sessions() as session:
        repo = PersonaRepository(session)
        cursor: str | None = None
        pages = 0
        while True:
            page = await repo.page(after=cursor, limit=7)
            seen += [p.id for p in page.items]
            assert all(len(p.responses) <= 1 for p in page.items)
            pages += 1
            if not page.has_more:
                break
            cursor = page.next_cursor
            assert cursor is not None
            assert set(_decode(cursor)) == {"o", "v"}  # opaque, but base64 JSON
            await asyncio.gather(insert_more(pages))
    assert len(seen) == len(set(seen))  # nothing twice
    assert original <= set(seen)  # nothing that existed before was skipped

    # The same interleaving with OFFSET repeats or skips rows: the test can tell.
    seen_offset: list[uuid.UUID] = []
    async with sessions() as session:
        repo = PersonaRepository(session)
        for n in range(12):
            rows = await repo.list(order_by=Persona.id, limit=7, offset=7 * n)
            seen_offset += [p.id for p in rows]
            await insert_more(100 + n)
    assert len(seen_offset) != len(set(seen_offset)) or not original <= set(seen_offset)


async def test_page_with_a_custom_order_and_bad_cursors(session: AsyncSession) -> None:
    await seed(session, personas=25, responses=0)
    repo = PersonaRepository(session)
    ordered: list[tuple[int, uuid.UUID]] = []
    cursor = None
    while True:
        page = await repo.page(after=cursor, limit=4, order_by=Persona.age.desc(), load=())
        ordered += [(p.age, p.id) for p in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(ordered) == 25
    assert ordered == sorted(ordered, reverse=True)

    first = await repo.page(limit=4, order_by=Persona.age.desc())
    assert first.next_cursor is not None
    with pytest.raises(ConfigurationError, match="another model or ordering"):
        await repo.page(after=first.next_cursor, limit=4)  # cursor of another ordering
    with pytest.raises(ConfigurationError, match="invalid page cursor"):
        await repo.page(after="not-a-cursor!", limit=4)
    with pytest.raises(ConfigurationError, match="nullable"):
        await repo.page(order_by=Persona.segment)
    with pytest.raises(ConfigurationError, match="limit"):
        await repo.page(limit=0)
