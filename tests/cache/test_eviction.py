"""Fence marks under ``maxmemory`` (issue 11): an evicted mark would let a computation that
started before an invalidation be stored. With ``noeviction`` no mark is lost: a full Redis
refuses the write instead (the cache fails open). With an evicting policy the fence has a
hole; docs/caching.md states the required policy."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.testing.servers import EmbeddedServer


async def _scenario(url: str, policy: str) -> tuple[dict[str, int], int, int, Redis, Cache]:
    """A computation starts (source 0), the tag is invalidated after the source became 1,
    Redis fills up under ``policy``, then the computation finishes. Returns what a read
    gets afterwards, whether the tag's fence mark and the computation's lock survived, and
    the clients to close."""
    client = Redis.from_url(url)
    await client.config_set("maxmemory-policy", policy)
    cache = Cache(prefix="evict", op_timeout=1.0)
    cache.bind(client)
    source = {"row": 0}
    gate = asyncio.Event()

    @cache.cached(namespace="ev", ttl=600, key="{i}", tags=("t:{i}",))
    async def read(i: int) -> dict[str, int]:
        seen = source["row"]
        await gate.wait()
        return {"seen": seen}

    running = asyncio.ensure_future(read(1))  # holds the lock, saw the old row
    while cache.stats().get("ev") is None or cache.stats()["ev"].computations < 1:
        await asyncio.sleep(0.005)
    source["row"] = 1
    await cache.invalidate_tags("t:1")  # completed: later reads must see row 1
    mark = cache.keyspace.tag_fence("t:1")
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", used + 2_000_000)
    junk = b"x" * 10_000
    for n in range(2_000):  # well past maxmemory
        try:
            await client.set(f"junk:{n}", junk, px=600_000)
        except Exception:
            break  # noeviction: full
    kept = int(await client.exists(mark))
    lock_kept = int(await client.exists(cache.keyspace.lock(read.key(1))))
    gate.set()
    await running  # its commit: refused by the mark, refused for memory, or stored
    await client.config_set("maxmemory", 0)
    await client.delete(*[f"junk:{n}" for n in range(2_000)])
    return await read(1), kept, lock_kept, client, cache


async def _close(client: Redis, cache: Cache) -> None:
    await cache.aclose()
    await client.aclose()


async def test_with_noeviction_no_fence_mark_is_lost_and_no_stale_value_is_stored(
    own_redis: EmbeddedServer,
) -> None:
    value, kept, _, *clients = await _scenario(own_redis.url, "noeviction")
    try:
        assert kept == 1
        assert value == {"seen": 1}
    finally:
        await _close(*clients)


async def test_with_an_evicting_policy_an_evicted_mark_lets_no_stale_value_through(
    own_redis: EmbeddedServer,
) -> None:
    """The fill evicts the mark; a commit whose lock was evicted with it is refused (the lock
    no longer holds its token). A lock that survived while its mark did not is the hole that
    remains: pinned deterministically by ``test_cache_breakit2.py::
    test_an_evicted_fence_mark_with_a_surviving_lock_lets_no_stale_value_through``."""
    value, kept, lock_kept, *clients = await _scenario(own_redis.url, "allkeys-lru")
    try:
        assert kept == 0  # the mark was evicted (the scenario is what it claims)
        if lock_kept:
            pytest.xfail("the lock survived the fill: the known hole (see the docstring)")
        assert value == {"seen": 1}
    finally:
        await _close(*clients)
