"""``create_redis_client`` builds a working client for each ``RedisSettings.mode``."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from sight_core.cache import create_redis_client
from sight_core.health import check_redis_client
from sight_core.settings import RedisSettings
from sight_core.testing.servers import EmbeddedCluster, EmbeddedSentinel


async def test_sentinel_mode_reaches_the_primary_the_sentinels_name(
    redis_sentinel: EmbeddedSentinel,
) -> None:
    settings = RedisSettings(
        mode="sentinel",
        sentinels=[f"{h}:{p}" for h, p in redis_sentinel.sentinel_addresses],
        sentinel_master=redis_sentinel.master_name,
        preset="test",
    )
    client = create_redis_client(settings)
    assert isinstance(client, Redis)
    try:
        assert await client.set("topology:probe", b"v")
        info = await client.info("server")
        assert int(info["tcp_port"]) == redis_sentinel.current_primary_port()
        assert (await check_redis_client(client)).ok
    finally:
        await client.aclose()  # also closes the sentinel connections (no ResourceWarning)


async def test_cluster_mode_builds_a_redis_cluster_on_every_primary(
    redis_cluster: EmbeddedCluster,
) -> None:
    settings = RedisSettings(
        mode="cluster",
        url=redis_cluster.url,
        cluster_nodes=[u.split("//")[1].split("/")[0] for u in redis_cluster.urls[1:2]],
        preset="test",
    )
    client = create_redis_client(settings)
    assert isinstance(client, RedisCluster)
    try:
        await client.mset_nonatomic({f"k{i}": b"x" for i in range(20)})
        assert len(await client.mget_nonatomic([f"k{i}" for i in range(20)])) == 20
        assert len(client.get_primaries()) == 3
        result = await check_redis_client(client)
        assert result.ok, result
        assert result.version == "Redis Cluster"
    finally:
        await client.aclose()
