"""The ``redis_cluster`` and ``redis_sentinel`` fixtures start real topologies."""

from __future__ import annotations

import os

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from sight_core.testing.servers import EmbeddedCluster, EmbeddedSentinel


async def test_cluster_has_three_primaries_each_with_a_replica_covering_every_slot(
    redis_cluster: EmbeddedCluster, redis_cluster_client: RedisCluster
) -> None:
    assert len(redis_cluster_client.get_primaries()) == 3
    nodes = await redis_cluster_client.cluster_nodes()
    roles = sorted("master" if "master" in n["flags"] else "slave" for n in nodes.values())
    assert roles == ["master"] * 3 + ["slave"] * 3
    info = await redis_cluster_client.cluster_info(target_nodes=RedisCluster.RANDOM)
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_ok"]) == 16384
    assert len(redis_cluster.pids) == 6
    for pid in redis_cluster.pids:
        os.kill(pid, 0)  # alive: raises if not
    # keys land on different primaries and come back
    await redis_cluster_client.mset_nonatomic({f"k{i}": str(i) for i in range(30)})
    assert await redis_cluster_client.mget_nonatomic([f"k{i}" for i in range(30)]) == [
        str(i).encode() for i in range(30)
    ]
    sizes = await redis_cluster_client.dbsize(target_nodes=RedisCluster.PRIMARIES)
    assert sizes == 30


async def test_sentinel_names_the_primary_and_its_replica(
    redis_sentinel: EmbeddedSentinel,
) -> None:
    sentinel = Sentinel(redis_sentinel.sentinel_addresses, socket_timeout=2)
    host, port = await sentinel.discover_master(redis_sentinel.master_name)
    assert (host, port) == ("127.0.0.1", redis_sentinel.current_primary_port())
    replicas = await sentinel.discover_slaves(redis_sentinel.master_name)
    assert len(replicas) == 1
    client = sentinel.master_for(redis_sentinel.master_name, socket_timeout=2)
    try:
        assert await client.set("sentinel-probe", b"1")
        assert await client.get("sentinel-probe") == b"1"
    finally:
        await client.aclose()
        for connection in sentinel.sentinels:
            await connection.aclose()
    assert len(redis_sentinel.pids) == 5
