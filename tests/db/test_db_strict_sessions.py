"""Sessions from ``create_sessionmaker`` refuse N+1 in every query, not only repository reads.

Issue 12 item 12: the guard is a ``do_orm_execute`` hook on the sessions (public SQLAlchemy
API). Each N+1 scenario below sends 1 query and raises, where the same code on a session with
the guard off sends 1 + 50.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from db_schema import Persona, PersonaRepository, Project, Response, seed
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, immediateload, selectinload
from sqlalchemy.orm.exc import DetachedInstanceError

from sight_core.db import count_queries, create_sessionmaker, session_scope
from sight_core.db._unloaded import StrictSession
from sight_core.errors import UnloadedRelationError

ROWS = 50


async def _plain_select(session: AsyncSession) -> list[Persona]:
    return list((await session.scalars(select(Persona).order_by(Persona.email))).all())


async def _get_in_a_loop(session: AsyncSession) -> list[Persona]:
    ids = (await session.scalars(select(Persona.id).order_by(Persona.email))).all()
    session.expunge_all()
    return [p for i in ids if (p := await session.get(Persona, i)) is not None]


async def _repository_list(session: AsyncSession) -> list[Persona]:
    return await PersonaRepository(session).list(load=(), order_by=Persona.email)


SOURCES: dict[str, Callable[[AsyncSession], Awaitable[list[Persona]]]] = {
    "plain select": _plain_select,
    "session.get in a loop": _get_in_a_loop,
    "repository list": _repository_list,
}


@pytest.fixture
async def personas(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await seed(session, personas=ROWS, responses=2)


@pytest.mark.parametrize("source", list(SOURCES))
async def test_n_plus_one_raises_on_the_first_row_instead_of_50_queries(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    personas: None,
    source: str,
) -> None:
    async with sessions() as session:
        rows = await SOURCES[source](session)
        assert len(rows) == ROWS
        async with count_queries(engine) as q:
            with pytest.raises(UnloadedRelationError, match=r"^Persona\.responses was not"):
                for persona in rows:
                    _ = persona.responses
            with pytest.raises(UnloadedRelationError, match=r"^Persona\.responses was not"):
                await rows[0].awaitable_attrs.responses  # the async spelling is refused too
        assert q.count == 0

    # The same loop with the guard off: the 50 queries it prevents.
    async with sessions(info={"raise_unloaded": False}) as session:
        rows = await SOURCES[source](session)
        async with count_queries(engine) as q:
            for persona in rows:
                assert len(await persona.awaitable_attrs.responses) == 2
        assert q.count == ROWS


async def test_the_message_names_the_relation_and_the_declaration_that_fixes_it(
    sessions: async_sessionmaker[AsyncSession], personas: None
) -> None:
    async with sessions() as session:
        persona = (await _plain_select(session))[0]
        with pytest.raises(UnloadedRelationError) as many:
            _ = persona.responses
        session.expunge_all()  # the persona is no longer in the identity map: SQL needed
        response = (await session.scalars(select(Response).limit(1))).one()
        with pytest.raises(UnloadedRelationError) as one:
            _ = response.persona
    assert "`load = (..., selectinload(Persona.responses))` on the Persona repository" in str(
        many.value
    )
    assert "`load = (..., joinedload(Response.persona))` on the Response repository" in str(
        one.value
    )
    for error in (many.value, one.value):
        assert "N+1" in str(error) and "load=(" not in str(error)
        assert not isinstance(error, AttributeError)


async def test_a_many_to_one_already_in_the_identity_map_is_returned_without_sql(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], personas: None
) -> None:
    async with sessions() as session:
        project = (await session.scalars(select(Project))).one()
        rows = await _plain_select(session)
        answers = (await session.scalars(select(Response))).all()
        async with count_queries(engine) as q:
            assert all(p.project is project for p in rows)
            assert {a.persona for a in answers} == set(rows)
        assert q.count == 0


async def test_the_guard_adds_nothing_to_loaded_rows(
    sessions: async_sessionmaker[AsyncSession], personas: None
) -> None:
    async with sessions() as session:
        rows = await _plain_select(session)
        plain_state = [p._sa_instance_state for p in rows]
    async with sessions(info={"raise_unloaded": False}) as session:
        lax_state = [p._sa_instance_state for p in await _plain_select(session)]
    for strict, lax in zip(plain_state, lax_state, strict=True):
        assert strict.load_options == lax.load_options == ()
        assert not strict.callables and not lax.callables


async def test_rows_the_session_inserted_raise_too(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        project = Project(name="fresh")
        session.add(project)
        await session.flush()
        async with count_queries(engine) as q:
            with pytest.raises(UnloadedRelationError, match=r"Project\.personas"):
                _ = project.personas
        assert q.count == 0
        persona = await PersonaRepository(session).add(
            Persona(project_id=project.id, name="a", age=30, email="a@x")
        )
        with pytest.raises(UnloadedRelationError, match=r"Persona\.responses"):
            _ = persona.responses
        assert persona.project is project  # in the identity map: no SQL


async def test_sqlalchemy_s_own_loads_go_through(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        await seed(session, personas=2, responses=3)
        empty = Project(name="empty")
        session.add(empty)
        await session.commit()
        empty_id = empty.id
    # A flush that must load a collection (to unlink children of a deleted parent).
    async with session_scope(sessions) as session:
        doomed = await session.get(Project, empty_id)
        await session.delete(doomed)
    async with sessions() as session:
        assert await session.get(Project, empty_id) is None
        # refresh(obj, [relation]): an explicit load of one object's relation.
        persona = (await _plain_select(session))[0]
        await session.refresh(persona, ["responses"])
        assert len(persona.responses) == 3
        # merge() of a detached object loads what it merges into.
        other = (await _plain_select(session))[1]
        session.expunge(other)
        merged = await session.merge(other)
        assert merged.name == other.name


async def test_the_switch_is_per_session_and_can_change(
    sessions: async_sessionmaker[AsyncSession], personas: None
) -> None:
    async with sessions() as session:
        persona = (await _plain_select(session))[0]
        session.info["raise_unloaded"] = False
        assert len(await persona.awaitable_attrs.responses) == 2
        session.info["raise_unloaded"] = True
        other = (await _plain_select(session))[1]
        with pytest.raises(UnloadedRelationError):
            await other.awaitable_attrs.responses


async def test_a_custom_session_class_gets_the_guard(engine: AsyncEngine, personas: None) -> None:
    class Audited(Session):
        pass

    made = create_sessionmaker(engine, sync_session_class=Audited)
    async with made() as session:
        assert isinstance(session.sync_session, Audited)
        assert isinstance(session.sync_session, StrictSession)
        persona = (await _plain_select(session))[0]
        with pytest.raises(UnloadedRelationError):
            _ = persona.responses
        loaded = (
            await session.scalars(select(Persona).options(selectinload(Persona.responses)))
        ).all()
        assert sum(len(p.responses) for p in loaded) == 2 * ROWS
    # One guarded class per base class, made once.
    again = create_sessionmaker(engine, sync_session_class=Audited)
    assert again.kw["sync_session_class"] is made.kw["sync_session_class"]


async def test_immediateload_is_one_query_per_row_and_refused(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], personas: None
) -> None:
    async with sessions() as session, count_queries(engine) as q:
        with pytest.raises(UnloadedRelationError, match=r"Persona\.responses"):
            await session.scalars(select(Persona).options(immediateload(Persona.responses)))
    assert q.count == 1  # the personas; none of the 50 per-row loads was sent


async def test_after_the_session_closes_sqlalchemy_names_the_attribute(
    sessions: async_sessionmaker[AsyncSession], personas: None
) -> None:
    async with session_scope(sessions) as session:
        persona = (await _plain_select(session))[0]
    with pytest.raises(DetachedInstanceError, match="'responses'"):
        _ = persona.responses
