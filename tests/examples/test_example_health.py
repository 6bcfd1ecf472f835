"""Health of the example service when its Redis stops: degraded, and reads still succeed."""

from __future__ import annotations

from typing import Any

import httpx

from examples.sight_service import create_app
from sight_core.llm import clear_model_cache
from sight_core.settings import SightSettings
from sight_core.testing.servers import start_redis


async def test_stopped_redis_is_degraded_while_reads_still_succeed(postgres_url: str) -> None:
    redis = start_redis(with_bolt=False)
    try:
        values: Any = {
            "database": {"url": postgres_url, "preset": "test"},
            "redis": {"url": redis.url, "preset": "test"},
            "llm": {"provider": "fake"},
        }
        clear_model_cache()
        app = create_app(SightSettings(_env_file=None, **values))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                healthy = await client.get("/health")
                assert healthy.status_code == 200
                assert healthy.json()["status"] == "ok"

                project = (await client.post("/projects", json={"name": "p"})).json()["id"]
                generated = await client.post(
                    f"/projects/{project}/personas/generate", json={"count": 2}
                )
                persona = generated.json()["personas"][0]
                url = f"/projects/{project}/personas/{persona['id']}"
                assert (await client.get(url)).json() == persona  # cached now

                redis.stop()

                health = await client.get("/health")
                assert health.status_code == 200
                body = health.json()
                assert body["status"] == "degraded"
                assert body["checks"]["redis"]["ok"] is False
                assert body["checks"]["redis"]["error"]
                assert body["checks"]["postgres"]["ok"] is True

                for _ in range(5):  # the cache fails open: every read comes from PostgreSQL
                    read = await client.get(url)
                    assert read.status_code == 200
                    assert read.json() == persona
                changed = await client.patch(url, json={"occupation": "courier"})
                assert changed.status_code == 200
                assert (await client.get(url)).json()["occupation"] == "courier"
                stats = app.state.sight.cache.stats()["persona"]
                assert stats.errors >= 1
    finally:
        redis.stop()
