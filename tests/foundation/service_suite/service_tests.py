"""The service's own tests: only the sight_core plugin's fixtures, no conftest."""

from __future__ import annotations

import httpx
from app import cache, create_app, model_calls


async def test_summary_is_computed_once_then_served_from_redis(sight_settings, redis_client):
    app = create_app(sight_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            assert (await client.post("/setup")).status_code == 200
            created = await client.post("/personas", params={"name": "Ada"})
            persona_id = created.json()["id"]
            first = await client.get(f"/personas/{persona_id}/summary")
            second = await client.get(f"/personas/{persona_id}/summary")
    assert first.status_code == 200, first.text
    assert first.json() == second.json()
    assert first.json().startswith("Ada: ")
    assert model_calls == [persona_id]  # the second answer came from the cache
    assert await redis_client.exists(f"svc:v1:summary:{persona_id}") == 1
    assert cache.totals()[0] == 1  # (hits, misses)


async def test_fixtures_give_a_fresh_database(postgres_url, assert_max_queries):
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_url)
    try:
        async with assert_max_queries(engine, 1), engine.connect() as conn:
            tables = await conn.scalar(
                text("SELECT count(*) FROM pg_tables WHERE tablename = 'personas'")
            )
    finally:
        await engine.dispose()
    assert tables == 0  # the previous test's table lived in another database
