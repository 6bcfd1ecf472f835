"""Engine presets, the connection budget check, sessions and query counting on real PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import pytest
from db_schema import Project, seed
from fastapi import Depends, FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sight_core.db import (
    ConnectionBudgetWarning,
    assert_max_queries,
    check_connection_budget,
    count_queries,
    create_engine,
    engine_options,
    session_dependency,
    session_scope,
)
from sight_core.errors import DuplicateError, ServiceUnavailableError
from sight_core.settings import DATABASE_PRESETS, DatabaseSettings


@pytest.mark.parametrize("preset", sorted(DATABASE_PRESETS))
def test_engine_options_follow_the_preset(preset: str) -> None:
    settings = DatabaseSettings(preset=preset, application_name="svc")
    pool = settings.resolved()
    options = engine_options(settings)
    assert options["pool_size"] == pool.pool_size
    assert options["max_overflow"] == pool.max_overflow
    assert options["pool_pre_ping"] is pool.pool_pre_ping
    assert options["pool_recycle"] == pool.pool_recycle
    connect = options["connect_args"]
    server_side = {
        name: str(round(seconds * 1000))
        for name, seconds in (
            ("statement_timeout", pool.statement_timeout),
            ("idle_in_transaction_session_timeout", pool.idle_in_transaction_session_timeout),
        )
        if seconds
    }
    assert connect["server_settings"] == {"application_name": "svc", **server_side}
    assert connect["command_timeout"] == pool.command_timeout
    assert connect["timeout"] == pool.connect_timeout
    assert 0 < pool.connect_timeout <= 10
    if preset == "api":
        assert pool.connect_timeout <= 5
    if pool.pgbouncer:  # PgBouncer refuses unknown startup parameters: set them on the role
        assert server_side == {}
    else:
        assert set(server_side) == {"statement_timeout", "idle_in_transaction_session_timeout"}
    if pool.pgbouncer:
        assert connect["statement_cache_size"] == 0
        assert connect["prepared_statement_cache_size"] == 0
        names = {connect["prepared_statement_name_func"]() for _ in range(3)}
        assert len(names) == 3
    else:
        assert "prepared_statement_cache_size" not in connect


def test_overrides_on_top_of_a_preset() -> None:
    options = engine_options(DatabaseSettings(preset="api", pool_size=9, pool_pre_ping=False))
    assert (options["pool_size"], options["max_overflow"], options["pool_pre_ping"]) == (
        9,
        15,
        False,
    )


async def test_application_name_and_command_timeout_reach_the_server(db_url: str) -> None:
    settings = DatabaseSettings(
        url=db_url, preset="test", application_name="persona-api", command_timeout=0.2
    )
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            name = (await conn.execute(text("SHOW application_name"))).scalar_one()
            assert name == "persona-api"
            with pytest.raises(ServiceUnavailableError, match=r"within 0\.2 s \(command_timeout"):
                await conn.execute(text("SELECT pg_sleep(5)"))
    finally:
        await engine.dispose()


async def _prepared_after_two_runs(engine: AsyncEngine) -> list[tuple[str, str]]:
    """(name, statement) of the statements the server holds prepared on this connection."""
    async with engine.connect() as conn:
        for _ in range(2):
            await conn.execute(select(Project.id).where(Project.name == "x"))
        rows = await conn.execute(text("SELECT name, statement FROM pg_prepared_statements"))
        return [(name, sql) for name, sql in rows.all()]


async def test_pgbouncer_mode_leaves_no_named_statement_on_the_server(
    db_url: str, engine: AsyncEngine
) -> None:
    cached = await _prepared_after_two_runs(engine)
    assert any("FROM projects" in sql for _, sql in cached)  # default mode keeps them
    bouncer = create_engine(DatabaseSettings(url=db_url, preset="pgbouncer"))
    try:
        held = await _prepared_after_two_runs(bouncer)
        # Only the statement running right now; its name is unique, not __asyncpg_stmt_N__.
        assert len(held) == 1
        assert "pg_prepared_statements" in held[0][1]
        assert held[0][0].startswith("__sight_")
    finally:
        await bouncer.dispose()


async def test_budget_warns_when_workers_times_pool_exceed_max_connections(
    db_url: str,
) -> None:
    settings = DatabaseSettings(url=db_url, preset="api", workers=50)  # 20 x 50 = 1000
    engine = create_engine(settings)
    try:
        with pytest.warns(ConnectionBudgetWarning, match="1000 connections"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        with pytest.warns(ConnectionBudgetWarning):
            budget = await check_connection_budget(engine, settings)
        assert budget.needed == 1000
        assert budget.exceeded
        assert budget.available == budget.max_connections - budget.reserved
    finally:
        await engine.dispose()


async def test_budget_is_quiet_within_limits(
    engine: AsyncEngine, db_settings: DatabaseSettings
) -> None:
    budget = await check_connection_budget(engine, db_settings)  # filterwarnings=error
    assert not budget.exceeded
    assert budget.needed == 10


async def test_session_scope_commits_on_success(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessions) as session:
        session.add(Project(name="kept"))
    async with sessions() as session:
        assert (await session.scalars(select(Project.name))).all() == ["kept"]


async def test_session_scope_rolls_back_on_error(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    closed: list[AsyncSession] = []
    with pytest.raises(RuntimeError, match="boom"):
        async with session_scope(sessions) as session:
            closed.append(session)
            session.add(Project(name="lost"))
            await session.flush()  # the row reached the server inside the transaction
            raise RuntimeError("boom")
    async with sessions() as session:
        assert (await session.scalars(select(Project))).all() == []
    assert not closed[0].in_transaction()


async def test_session_scope_translates_integrity_errors(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessions) as session:
        session.add(Project(name="acme-secret"))
    with pytest.raises(DuplicateError) as info:
        async with session_scope(sessions) as session:
            session.add(Project(name="acme-secret"))
    assert info.value.constraint == "projects_name_key"
    assert "'projects_name_key'" in str(info.value)
    assert "acme-secret" not in str(info.value)  # values stay out of messages


async def test_fastapi_dependency_commits_and_rolls_back(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app = FastAPI()
    get_session = session_dependency(sessions)

    @app.post("/projects/{name}")
    async def create(
        name: str,
        session: AsyncSession = Depends(get_session),  # noqa: B008 (closure: no Annotated)
    ) -> dict[str, str]:
        session.add(Project(name=name))
        await session.flush()
        if name == "fail":
            raise RuntimeError("endpoint failed")
        return {"name": name}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/projects/ok")).status_code == 200
        assert (await client.post("/projects/fail")).status_code == 500
    async with sessions() as session:
        assert (await session.scalars(select(Project.name))).all() == ["ok"]


async def test_count_queries_lists_each_statement(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await seed(session, personas=3)
    async with count_queries(engine) as q:
        await session.execute(select(Project))
        await session.execute(text("SELECT 1"))
    assert q.count == 2
    assert "FROM projects" in q.statements[0]
    assert q.statements[1] == "SELECT 1"
    async with count_queries(engine) as nothing:
        pass
    assert nothing.count == 0


async def test_assert_max_queries_passes_and_fails_with_the_sql(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    async with assert_max_queries(engine, 1):
        await session.execute(select(Project))
    with pytest.raises(AssertionError) as info:
        async with assert_max_queries(engine, 1):
            await session.execute(select(Project.id))
            await session.execute(select(Project.name).where(Project.id == uuid.uuid4()))
    message = str(info.value)
    assert "expected at most 1 queries, 2 were sent" in message
    assert "1. SELECT projects.id FROM projects" in message
    assert "2. SELECT projects.name FROM projects WHERE projects.id = " in message


async def test_assert_max_queries_lets_the_block_error_through(engine: AsyncEngine) -> None:
    with pytest.raises(KeyError):
        async with assert_max_queries(engine, 0) as q:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            raise KeyError("x")
    assert q.count == 1
