"""Public names, the Redis client factory, settings, stats and the observability hook."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool

import sight_core.cache as cache_module
from sight_core.cache import Cache, MemoryBackend, create_redis_client
from sight_core.settings import CacheSettings, RedisSettings


def test_public_names_are_pinned() -> None:
    assert sorted(cache_module.__all__) == [
        "Backend",
        "BoundCachedFunction",
        "Cache",
        "CacheError",
        "CacheKeyed",
        "CacheSerializationError",
        "CachedFunction",
        "CachedManyFunction",
        "Codec",
        "JsonCodec",
        "MemoryBackend",
        "NamespaceStats",
        "NotBoundError",
        "PickleCodec",
        "Write",
        "create_redis_client",
    ]
    for name in cache_module.__all__:
        assert getattr(cache_module, name) is not None


async def test_create_redis_client_uses_a_blocking_pool_and_the_preset(redis_url: str) -> None:
    settings = RedisSettings(url=redis_url, preset="api", retries=2)
    client = create_redis_client(settings)
    try:
        pool = client.connection_pool
        assert isinstance(pool, BlockingConnectionPool)
        assert pool.max_connections == 50
        assert pool.timeout == 1.0
        kwargs = pool.connection_kwargs
        assert kwargs["socket_timeout"] == 1.0
        assert kwargs["socket_connect_timeout"] == 1.0
        assert kwargs["health_check_interval"] == 30
        assert kwargs["retry"].get_retries() == 2
        assert not kwargs.get("decode_responses")
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_from_settings() -> None:
    cache = Cache.from_settings(CacheSettings(prefix="app", op_timeout=0.1, local_tier=True))
    assert cache.prefix == "app"
    assert cache.op_timeout == 0.1
    assert cache.local_tier is True


async def test_stats_and_observability_collector() -> None:
    from sight_core.observability import snapshot

    cache = Cache(prefix="obs")
    cache.bind(MemoryBackend())

    @cache.cached(namespace="things")
    async def f(x: int) -> int:
        return x

    await f(1)
    await f(1)
    stats = cache.stats()["things"]
    assert stats.as_dict() == {
        "hits": 1,
        "misses": 1,
        "stale": 0,
        "local_hits": 0,
        "lock_waits": 0,
        "computations": 1,
        "refreshes": 0,
        "errors": 0,
        "hit_ratio": 0.5,
    }
    text = repr(snapshot())
    assert "sight_cache_hits_total" in text
    await cache.aclose()


async def test_redis_cluster_is_bound_unless_it_decodes_responses() -> None:
    import pytest
    from redis.asyncio.cluster import RedisCluster

    from sight_core.cache._cluster import ClusterBackend
    from sight_core.errors import ConfigurationError

    decoding = RedisCluster(host="127.0.0.1", port=7000, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        Cache().bind(decoding)
    await decoding.aclose()
    cluster = RedisCluster(host="127.0.0.1", port=7000)  # nothing connects until used
    cache = Cache()
    cache.bind(cluster)
    assert isinstance(cache.backend, ClusterBackend)
    await cluster.aclose()


async def test_totals_sum_hits_and_misses_over_namespaces() -> None:
    cache = Cache()
    cache.bind(MemoryBackend())

    @cache.cached(namespace="a")
    async def a(x: int) -> int:
        return x

    @cache.cached(namespace="b")
    async def b(x: int) -> int:
        return x

    await a(1)
    await a(1)
    await b(2)
    assert cache.totals() == (1, 2)
    stats = cache.stats()
    assert cache.totals() == (
        sum(s.hits for s in stats.values()),
        sum(s.misses for s in stats.values()),
    )
