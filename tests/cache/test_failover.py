"""Failover never reaches a cache caller: a primary killed under load on the cluster, and a
Sentinel failover. The cache fails open meanwhile and recovers without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from sight_core.cache import Cache, create_redis_client
from sight_core.cache._keyspace import ClusterLayout
from sight_core.errors import CacheError
from sight_core.settings import RedisSettings

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def _load(fn: Any, keys: list[str], stop: asyncio.Event, raised: list[BaseException]) -> None:
    for key in itertools.cycle(keys):
        if stop.is_set():
            return
        try:
            assert await fn(key) == {"key": key}
        except BaseException as exc:  # a caller error: the test fails on it
            raised.append(exc)
            return
        await asyncio.sleep(0.002)


async def test_a_primary_killed_under_load_never_fails_a_caller(redis_cluster: Any) -> None:
    client = RedisCluster.from_url(redis_cluster.url, socket_timeout=1, socket_connect_timeout=0.5)
    cache = Cache(prefix="failover", op_timeout=0.5, breaker_cooldown=1.0, lock_ttl=2.0)
    cache.bind(client)
    computed: list[str] = []

    @cache.cached(namespace="load", key="{key}", ttl=300)
    async def value(key: str) -> dict[str, str]:
        computed.append(key)
        return {"key": key}

    keys = [f"k{i}" for i in range(64)]
    killed: int | None = None
    try:
        for key in keys:
            await value(key)
        # the primary that serves the bucket of k0
        layout = ClusterLayout("failover")
        node = client.get_node_from_key(layout.physical(f"failover:v1:load:{keys[0]}"))
        stop, raised = asyncio.Event(), []
        readers = [asyncio.ensure_future(_load(value, keys, stop, raised)) for _ in range(8)]
        await asyncio.sleep(0.3)
        killed = node.port
        redis_cluster.kill(killed)
        await asyncio.sleep(4.0)  # node timeout 1 s, then the replica is promoted
        stop.set()
        await asyncio.gather(*readers)
        assert raised == []  # no caller ever saw the outage
        errors_during = sum(s.errors for s in cache.stats().values())
        # recovered without restarting anything: the whole keyspace is a hit again
        async with asyncio.timeout(20):
            while True:
                computed.clear()
                before = cache.stats()["load"].hits
                for key in keys:
                    await value(key)
                if cache.stats()["load"].hits - before == len(keys):
                    break
                await asyncio.sleep(0.2)
        errors_after = sum(s.errors for s in cache.stats().values())
        for key in keys:
            await value(key)
        assert sum(s.errors for s in cache.stats().values()) == errors_after
        assert errors_during >= 1  # the outage was seen (and counted), just not raised
    finally:
        await cache.aclose()
        await client.aclose()
        if killed is not None:
            redis_cluster.restart(killed)


async def test_a_sentinel_failover_never_fails_a_caller(redis_sentinel: Any) -> None:
    settings = RedisSettings(
        mode="sentinel",
        sentinels=[f"{h}:{p}" for h, p in redis_sentinel.sentinel_addresses],
        sentinel_master=redis_sentinel.master_name,
        preset="test",
        socket_timeout=1,
        socket_connect_timeout=0.5,
    )
    client = create_redis_client(settings)
    cache = Cache(prefix="sfailover", op_timeout=0.5, breaker_cooldown=1.0)
    cache.bind(client)

    @cache.cached(namespace="load", key="{key}", ttl=300)
    async def value(key: str) -> dict[str, str]:
        return {"key": key}

    keys = [f"k{i}" for i in range(32)]
    killed: int | None = None
    try:
        for key in keys:
            await value(key)
        stop, raised = asyncio.Event(), []
        readers = [asyncio.ensure_future(_load(value, keys, stop, raised)) for _ in range(8)]
        await asyncio.sleep(0.3)
        killed = redis_sentinel.kill_primary()
        async with asyncio.timeout(30):  # the sentinels promote the replica
            while redis_sentinel.current_primary_port() == killed:
                await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*readers)
        assert raised == []
        # writes reach the new primary again without rebuilding the client
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(CacheError):  # raised while the breaker is open
                    await value.invalidate("fresh")
                await value("fresh")
                with contextlib.suppress(RedisError):  # the test's own check, not a caller
                    if await client.exists(value.key("fresh")) == 1:
                        break
                await asyncio.sleep(0.1)
    finally:
        await cache.aclose()
        await client.aclose()
        if killed is not None:
            redis_sentinel.restart(killed)
