"""The cache on a real Redis Cluster (3 primaries + 3 replicas): one slot per script, get_many
per primary, invalidation on every primary, sharded pub/sub, stampede locking.

The whole cache suite also runs on the cluster with ``SIGHT_TEST_REDIS_TOPOLOGY=cluster``
(``.ci/run``); these run in the default suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from sight_core.cache import Cache
from sight_core.cache._keyspace import CLUSTER_BUCKETS, ClusterLayout, Keyspace

pytestmark = pytest.mark.cluster


@pytest.fixture
async def cluster_cache(redis_cluster_client: RedisCluster) -> AsyncIterator[Cache]:
    # a generous deadline: errors counted here must be CROSSSLOT/MOVED, not a loaded machine
    cache = Cache(prefix="sight", lock_ttl=2.0, op_timeout=5.0)
    cache.bind(redis_cluster_client)
    yield cache
    await cache.aclose()


def _errors(cache: Cache) -> int:
    return sum(s.errors for s in cache.stats().values())


async def _command_calls(client: RedisCluster, command: str) -> int:
    stats = await client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
    total = 0
    for per_node in stats.values():
        row = per_node.get(f"cmdstat_{command}")
        if row:
            total += int(row["calls"])
    return total


async def _reset_stats(client: RedisCluster) -> None:
    await client.config_resetstat(target_nodes=RedisCluster.PRIMARIES)


def test_an_entry_its_lock_channel_and_fence_marks_share_a_slot() -> None:
    layout = ClusterLayout("sight")
    space = Keyspace("sight")
    entry = "sight:v2:persona:42:project:7"
    b = layout.bucket(entry)
    names = [
        layout.physical(entry),
        layout.physical("sight:v3:persona:42:project:7"),  # every version: same bucket
        layout.physical(space.lock(entry)),
        layout.physical(space.channel(entry)),
        layout.physical(space.key_fence("persona", "42:project:7")),
        layout.physical(space.namespace_fence("persona"), b),
        layout.physical(space.tag("project:7"), b),
        layout.physical(space.tag_fence("project:7"), b),
        layout.physical(space.versions("persona"), b),
        layout.physical(space.local_channel, b),
        layout.bucket_clock(b),
    ]
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert layout.logical(layout.physical(entry)) == entry
    many = [f"sight:v{v}:ns:{i}:x" for v in (1, 12) for i in range(200)]
    assert layout.entries(many) == [layout.physical(n) for n in many]  # the read fast path
    # the buckets spread over the slots (and so over the primaries)
    slots = {key_slot(layout.tag(i).encode()) for i in range(CLUSTER_BUCKETS)}
    assert len(slots) == CLUSTER_BUCKETS


async def test_every_operation_runs_without_a_cross_slot_error(
    cluster_cache: Cache,
) -> None:
    cache = cluster_cache
    calls: list[int] = []

    @cache.cached(namespace="persona", key="{pid}", ttl=60, tags=("project:{project}",))
    async def persona(pid: int, project: int) -> dict[str, int]:
        calls.append(pid)
        return {"pid": pid}

    @cache.cached_many(namespace="many", key="{ids}", ttl=60, tags=("project:{project}",))
    async def personas(ids: list[int], project: int) -> dict[int, dict[str, int]]:
        calls.extend(ids)
        return {i: {"pid": i} for i in ids}

    for pid in range(40):
        assert await persona(pid, 1) == {"pid": pid}
    assert len(calls) == 40
    for pid in range(40):
        await persona(pid, 1)
    assert len(calls) == 40  # all hits
    assert len(await personas(list(range(100)), 1)) == 100
    assert await personas.get_many(list(range(100)), 1) == {i: {"pid": i} for i in range(100)}
    await persona.invalidate(3, 1)
    await personas.invalidate([5, 6, 7], 1)
    calls.clear()
    await persona(3, 1)
    assert await personas.get_many([5, 6, 7, 8], 1) == {8: {"pid": 8}}
    assert calls == [3]
    # a tag reaches both namespaces in every bucket
    deleted = await cache.invalidate_tags("project:1")
    assert deleted == 40 + 97
    assert await personas.get_many(list(range(100)), 1) == {}
    calls.clear()
    await persona(1, 1)
    assert calls == [1]
    # a namespace is swept on every primary
    for pid in range(40):
        await persona(pid, 2)
    assert await cache.invalidate_namespace("persona") == 40
    calls.clear()
    for pid in range(40):
        await persona(pid, 2)
    assert len(calls) == 40
    assert _errors(cache) == 0  # a CROSSSLOT or MOVED error would count here (fail-open)


async def test_get_many_sends_one_mget_per_bucket_at_most(
    cluster_cache: Cache, redis_cluster_client: RedisCluster
) -> None:
    @cluster_cache.cached_many(namespace="items", key="{ids}", ttl=60)
    async def items(ids: list[int]) -> dict[int, int]:
        return {i: i * 2 for i in ids}

    ids = list(range(1000))
    await items(ids)
    await _reset_stats(redis_cluster_client)
    assert await items.get_many(ids) == {i: i * 2 for i in ids}
    mgets = await _command_calls(redis_cluster_client, "mget")
    assert 1 <= mgets <= CLUSTER_BUCKETS
    assert _errors(cluster_cache) == 0


async def test_a_computation_started_before_an_invalidation_is_not_stored(
    cluster_cache: Cache,
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    version = {"v": 1}

    @cluster_cache.cached(namespace="fenced", key="{k}", ttl=60)
    async def read(k: str) -> int:
        started.set()
        value = version["v"]
        await gate.wait()
        return value

    slow = asyncio.ensure_future(read("a"))
    await started.wait()
    version["v"] = 2
    await read.invalidate("a")
    gate.set()
    assert await slow == 1  # the caller gets what it computed ...
    started.clear()
    assert await read("a") == 2  # ... but it was not stored: the next read recomputes
    assert _errors(cluster_cache) == 0


async def test_200_callers_in_4_caches_on_a_cold_key_compute_once(
    redis_cluster: Any,
) -> None:
    clients = [RedisCluster.from_url(redis_cluster.url) for _ in range(4)]
    caches = [Cache(prefix="stampede", lock_ttl=5.0, op_timeout=5.0) for _ in clients]
    calls: list[str] = []
    fns = []
    for cache, client in zip(caches, clients, strict=True):
        cache.bind(client)

        @cache.cached(namespace="brief", key="{segment}", ttl=60)
        async def brief(segment: str) -> dict[str, str]:
            calls.append(segment)
            await asyncio.sleep(0.2)
            return {"segment": segment}

        fns.append(brief)
    try:
        segment = f"cold-{id(calls)}"
        results = await asyncio.gather(*(fn(segment) for fn in fns for _ in range(50)))
        assert calls == [segment]
        assert all(r == {"segment": segment} for r in results)
        assert sum(_errors(c) for c in caches) == 0
    finally:
        for cache, client in zip(caches, clients, strict=True):
            await cache.aclose()
            await client.aclose()


async def test_local_tiers_drop_what_another_process_invalidates(redis_cluster: Any) -> None:
    clients = [RedisCluster.from_url(redis_cluster.url) for _ in range(2)]
    caches = [
        Cache(prefix="tier", local_tier=True, local_ttl=60.0, op_timeout=5.0) for _ in clients
    ]
    source = {"v": 1}
    fns = []
    for cache, client in zip(caches, clients, strict=True):
        cache.bind(client)

        @cache.cached(namespace="local", key="{k}", ttl=60, tags=("t:{k}",))
        async def value(k: str) -> int:
            return source["v"]

        fns.append(value)
    try:
        reader, writer = fns
        async with asyncio.timeout(10):
            while not caches[0]._local or not caches[0]._local.online:  # listener subscribed
                await reader("x")
                await asyncio.sleep(0.01)
        assert await reader("x") == 1
        assert await reader("x") == 1  # served by the local tier now
        source["v"] = 2
        await writer.invalidate("x")
        async with asyncio.timeout(5):  # the sharded message reaches the other process
            while await reader("x") != 2:
                await asyncio.sleep(0.01)
        source["v"] = 3
        await caches[1].invalidate_tags("t:x")
        async with asyncio.timeout(5):
            while await reader("x") != 3:
                await asyncio.sleep(0.01)
        assert sum(_errors(c) for c in caches) == 0
    finally:
        for cache, client in zip(caches, clients, strict=True):
            await cache.aclose()
            await client.aclose()


async def test_a_burst_never_exceeds_the_clusters_connections_per_node(
    redis_cluster: Any,
) -> None:
    # RedisCluster raises MaxConnectionsError past max_connections per node instead of
    # waiting; the cache admits at most half of that many operations at once (an operation
    # may hold two connections of one node), so a burst queues instead of failing open.
    client = RedisCluster.from_url(redis_cluster.url, max_connections=4)
    cache = Cache(prefix="burst", op_timeout=5.0, lock_ttl=5.0)
    cache.bind(client)
    computed: list[int] = []

    @cache.cached(namespace="cold", key="{n}", ttl=60)
    async def cold(n: int) -> int:
        computed.append(n)
        await asyncio.sleep(0.01)
        return n

    try:
        assert await asyncio.gather(*(cold(n % 20) for n in range(200))) == [
            n % 20 for n in range(200)
        ]
        assert sorted(computed) == list(range(20))  # one computation per key
        assert _errors(cache) == 0
    finally:
        await cache.aclose()
        await client.aclose()
