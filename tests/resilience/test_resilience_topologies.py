"""Shared LLM state (circuit breakers, cooldowns, quotas) on Redis Cluster and under Sentinel.

Every script of these stores touches one key (breaker) or one hash tag (quota), so they run
unchanged on a cluster; these tests prove it against the real fixtures. The whole resilience
suite also runs on the cluster with ``SIGHT_TEST_REDIS_TOPOLOGY=cluster`` (``.ci/run``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.genai.errors import ServerError
from resilience_support import unavailable

from sight_core.cache import create_redis_client
from sight_core.errors import CircuitOpenError
from sight_core.llm import QuotaGovernor
from sight_core.resilience import BreakerState, CircuitBreaker, RedisBreakerStore
from sight_core.settings import QuotaLimit, RedisSettings

pytestmark = pytest.mark.cluster


@pytest.fixture(params=["cluster", "sentinel"])
async def shared_redis(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        settings = RedisSettings(mode="cluster", url=cluster.url, preset="test")
    else:
        sentinel = request.getfixturevalue("redis_sentinel")
        settings = RedisSettings(
            mode="sentinel",
            sentinels=[f"{h}:{p}" for h, p in sentinel.sentinel_addresses],
            sentinel_master=sentinel.master_name,
            preset="test",
        )
    client = create_redis_client(settings)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_circuit_opened_in_one_worker_rejects_in_another(shared_redis: Any) -> None:
    name = f"gemini-{id(shared_redis)}"
    stores = [RedisBreakerStore(shared_redis, op_timeout=2.0) for _ in range(2)]
    a, b = (
        CircuitBreaker(name, store=s, failure_threshold=3, recovery_timeout=30, sync_interval=0)
        for s in stores
    )
    calls = {"b": 0}

    async def failing() -> str:
        raise unavailable()

    async def working() -> str:
        calls["b"] += 1
        return "ok"

    for _ in range(3):
        with pytest.raises(ServerError):
            await a.call(failing)
    assert a.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await b.call(working)
    assert calls["b"] == 0
    assert not any(s.degraded for s in stores)  # answered by Redis, not the local fallback
    # a cooldown (quota gone) set by one worker is seen by the other
    await stores[0].reset(name)
    fresh = [RedisBreakerStore(shared_redis, op_timeout=2.0) for _ in range(2)]
    c, d = (CircuitBreaker(name, store=s, sync_interval=0) for s in fresh)
    await c.cool_down(30.0)
    with pytest.raises(CircuitOpenError):
        await d.call(working)
    assert calls["b"] == 0


async def test_a_quota_is_booked_across_workers(shared_redis: Any) -> None:
    project = f"topo{id(shared_redis)}"
    governors = [
        QuotaGovernor(shared_redis, model="m", limits=QuotaLimit(rpm=2), project=project)
        for _ in range(2)
    ]
    first = await governors[0].reserve()
    second = await governors[1].reserve()
    assert first.wait == 0 and second.wait == 0
    assert await governors[0].outstanding() == 2
    assert not any(g.degraded for g in governors)
