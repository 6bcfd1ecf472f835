from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from db_schema import Base
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sight_core.db import create_engine, create_sessionmaker
from sight_core.settings import DatabaseSettings


@pytest.fixture
def db_settings(postgres_url: str) -> DatabaseSettings:
    return DatabaseSettings(url=postgres_url, preset="test", application_name="sight-tests")


@pytest.fixture
async def engine(db_settings: DatabaseSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_settings)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session
