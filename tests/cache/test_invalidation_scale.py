"""Invalidating a very large tag or namespace (issue 11, item 14): it finishes in chunks, each
within the operation deadline; reads keep using Redis meanwhile (maintenance never reaches the
read breaker); an interrupted invalidation is finished by the next call.

The data is built server-side with a Lua loop from one real entry, so the 100,000 entries are
byte-for-byte what the cache writes. The 1M-member tag / 1.2M-key namespace figures come from
``python -m benchmarks.cache_invalidation``.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.errors import CacheError
from sight_core.testing import FaultProxy

MEMBERS = 100_000


def _benchmark() -> Any:
    """``benchmarks/cache_invalidation.py`` (its ``fill`` builds the data; not a package on
    the test path)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cache_invalidation.py"
    spec = importlib.util.spec_from_file_location("_cache_invalidation_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fill = _benchmark().fill


def define(cache: Cache, computed: list[int]) -> Any:
    @cache.cached(namespace="big", ttl=3600, key="{i}", tags=("team:{team}",))
    async def member(i: int, team: str = "t1") -> dict[str, int]:
        computed.append(i)
        return {"i": 0}

    return member


@pytest.fixture
async def big_tag(redis_client: Redis) -> AsyncIterator[tuple[Cache, Any, list[int]]]:
    cache = Cache(prefix="scale")  # default deadline: 250 ms per operation, 1 s per chunk
    cache.bind(redis_client)
    computed: list[int] = []
    member = define(cache, computed)
    await member(0)
    raw = await redis_client.get(member.key(0))
    index = cache.keyspace.tag("team:t1")
    assert raw is not None and await redis_client.zcard(index) == 1
    await fill(redis_client, "scale:v1:big:", raw, MEMBERS - 1, index)
    assert await redis_client.zcard(index) == MEMBERS
    yield cache, member, computed
    await cache.aclose()


async def _read_meanwhile(member: Any, done: asyncio.Event, served: list[int]) -> None:
    n = 0
    while not done.is_set():
        n = (n + 7919) % MEMBERS
        await member(n + 1000 if n else 0)
        served.append(n)
        await asyncio.sleep(0)


@pytest.mark.standalone_only  # reads raw keys by their cache names
async def test_a_100k_member_tag_is_invalidated_in_chunks_while_reads_go_on(
    big_tag: tuple[Cache, Any, list[int]], redis_client: Redis
) -> None:
    cache, member, computed = big_tag
    done = asyncio.Event()
    served: list[int] = []
    reader = asyncio.ensure_future(_read_meanwhile(member, done, served))
    try:
        deleted = await cache.invalidate_tags("team:t1")
    finally:
        done.set()
        await reader
    stats = cache.stats()["big"]
    # Every member was deleted, except those a reader recomputed and stored after the fence
    # (they are new entries, indexed afresh).
    rewritten = len(set(computed[1:]))
    assert deleted + rewritten >= MEMBERS
    assert await redis_client.dbsize() < 2 * rewritten + 10  # entries, fences, indexes
    assert served  # reads were served during the invalidation...
    assert cache._breaker.opened == 0 and stats.errors == 0  # ...with Redis, not around it


async def test_an_interrupted_tag_invalidation_is_finished_by_the_next_call(
    fault_proxy: Any, redis_url: str, redis_client: Redis
) -> None:
    proxy: FaultProxy = fault_proxy(redis_url)
    client = Redis.from_url(proxy.url_for(redis_url), socket_timeout=5)
    cache = Cache(prefix="scale", op_timeout=0.1)
    cache.bind(client)
    member = define(cache, [])
    try:
        await member(0)
        raw = await redis_client.get(member.key(0))
        assert raw is not None
        index = cache.keyspace.tag("team:t1")
        await fill(redis_client, "scale:v1:big:", raw, MEMBERS - 1, index)
        dead = cache.keyspace.dead_tag("team:t1")
        running = asyncio.ensure_future(cache.invalidate_tags("team:t1"))
        while not running.done():  # until about a third of the chunks are done
            if 0 < await redis_client.zcard(dead) <= MEMBERS * 2 // 3:
                break
            await asyncio.sleep(0.005)
        assert not running.done()
        proxy.blackhole()  # Redis hangs mid-way through the chunks
        with pytest.raises(CacheError, match="OperationTimeout"):
            await running
        left = await redis_client.zcard(dead)
        assert 0 < left < MEMBERS
        assert cache.breaker_state == "closed" and cache._breaker.opened == 0
        proxy.restore()
        deleted = await cache.invalidate_tags("team:t1")  # picks up the retired members
        assert deleted == left
        assert await redis_client.zcard(dead) == 0
        assert await redis_client.exists(member.key(1000)) == 0
    finally:
        proxy.restore()
        await cache.aclose()
        await client.aclose()


@pytest.mark.standalone_only  # reads raw keys by their cache names
async def test_a_100k_key_namespace_is_invalidated_in_pages_and_spares_its_neighbour(
    redis_client: Redis,
) -> None:
    cache = Cache(prefix="scale")
    cache.bind(redis_client)
    member = define(cache, [])

    @cache.cached(namespace="big-2", ttl=3600, key="{i}")
    async def neighbour(i: int) -> dict[str, int]:
        return {"i": i}

    try:
        await member(0)
        await neighbour(0)
        raw = await redis_client.get(member.key(0))
        assert raw is not None
        await fill(redis_client, "scale:v1:big:", raw, MEMBERS - 1)
        await fill(redis_client, "scale:v2:big:", raw, 1000)  # another version: reached too
        await fill(redis_client, "scale:v1:big-2:", raw, 5000)
        deleted = await cache.invalidate_namespace("big")
        assert deleted == MEMBERS + 1000
        assert not [k async for k in redis_client.scan_iter(match="scale:v*:big:*", count=5000)]
        assert len([k async for k in redis_client.scan_iter("scale:v1:big-2:*", count=5000)]) == (
            5001
        )
        assert cache._breaker.opened == 0
    finally:
        await cache.aclose()


async def test_a_stalled_invalidation_raises_and_leaves_the_read_breaker_closed(
    proxied: tuple[FaultProxy, Redis],
) -> None:
    proxy, client = proxied
    cache = Cache(prefix="scale", op_timeout=0.1)
    cache.bind(client)
    member = define(cache, [])
    try:
        assert await member(1) == {"i": 0}
        proxy.blackhole()
        with pytest.raises(CacheError, match="OperationTimeout"):
            await cache.invalidate_tags("team:t1")
        with pytest.raises(CacheError, match="OperationTimeout"):
            await cache.invalidate_namespace("big")
        assert cache.breaker_state == "closed" and cache._breaker.opened == 0
        proxy.restore()
        assert await member(1) == {"i": 0}  # read from Redis at once: nothing was skipped
        assert cache.stats()["big"].hits == 1
    finally:
        proxy.restore()
        await cache.aclose()


@pytest.mark.xfail(
    strict=True,
    reason="found, not fixed: entries are dead once the invalidation returns, not the moment "
    "it starts; a read during the chunks can still be served an entry not yet unlinked "
    "(reads stay one GET and do not read the fence marks)",
)
async def test_a_read_during_a_chunked_tag_invalidation_gets_no_invalidated_entry(
    big_tag: tuple[Cache, Any, list[int]], redis_client: Redis
) -> None:
    cache, member, computed = big_tag
    dead = cache.keyspace.dead_tag("team:t1")
    running = asyncio.ensure_future(cache.invalidate_tags("team:t1"))
    try:
        while not running.done() and await redis_client.zcard(dead) == 0:
            await asyncio.sleep(0.001)
        assert await redis_client.zcard(dead) > MEMBERS // 2  # fenced, mostly not unlinked
        # 99999 is the last member in the index's order: unlinked by the last chunk.
        assert await redis_client.exists(member.key(99999)) == 1
        await member(99999)
        assert computed[-1] == 99999  # recomputed, not served the invalidated entry
    finally:
        await running
