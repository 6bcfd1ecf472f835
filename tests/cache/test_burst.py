"""A burst on a healthy Redis is not an outage (issue 11, item 13): time spent queueing for
one of the pool's connections does not count against an operation's deadline, so the breaker
stays closed and every computed value is written."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from sight_core.cache import Cache, create_redis_client
from sight_core.settings import RedisSettings

CALLS = 1000


async def _burst(redis_url: str, redis_client: Redis, *, preset: str, max_connections: int) -> None:
    client = create_redis_client(
        RedisSettings(url=redis_url, preset=preset, max_connections=max_connections)
    )
    cache = Cache(prefix="burst")  # the defaults: 250 ms deadline, breaker at the first timeout
    cache.bind(client)
    computed: list[int] = []

    @cache.cached(namespace="cold", ttl=600)
    async def cold(n: int) -> int:
        computed.append(n)
        await asyncio.sleep(0)
        return n * 3

    try:
        results = await asyncio.gather(*(cold(n) for n in range(CALLS)))
        assert results == [n * 3 for n in range(CALLS)]  # every caller gets its own value
        assert sorted(computed) == list(range(CALLS))  # each key computed once
        assert cache._breaker.opened == 0
        assert cache.breaker_state == "closed"
        assert cache.stats()["cold"].errors == 0
        stored = [k async for k in redis_client.scan_iter(match="burst:v1:cold:*", count=1000)]
        assert len(stored) == CALLS  # every computed value was written
        # And they are hits now.
        before = len(computed)
        assert await asyncio.gather(*(cold(n) for n in range(0, CALLS, 7))) == [
            n * 3 for n in range(0, CALLS, 7)
        ]
        assert len(computed) == before
    finally:
        await cache.aclose()
        await client.aclose()


async def test_a_burst_of_cold_calls_on_the_default_pool_opens_no_breaker(
    redis_url: str, redis_client: Redis
) -> None:
    # The "api" preset: 50 connections, callers wait up to 1 s for one.
    await _burst(redis_url, redis_client, preset="api", max_connections=50)


async def test_a_burst_of_cold_calls_on_a_small_pool_opens_no_breaker(
    redis_url: str, redis_client: Redis
) -> None:
    # Four connections (the "serverless" size): 1000 callers queue for three of them.
    await _burst(redis_url, redis_client, preset="serverless", max_connections=4)
