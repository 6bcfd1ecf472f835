from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


async def test_assert_max_queries_fixture(postgres_url: str, assert_max_queries) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            async with assert_max_queries(engine, 2) as counter:
                await conn.execute(text("SELECT 1"))
                await conn.execute(text("SELECT 2"))
            assert counter.count == 2
            with pytest.raises(AssertionError) as info:
                async with assert_max_queries(engine, 1):
                    await conn.execute(text("SELECT 'first'"))
                    await conn.execute(text("SELECT 'second'"))
            assert "SELECT 'second'" in str(info.value)
    finally:
        await engine.dispose()
