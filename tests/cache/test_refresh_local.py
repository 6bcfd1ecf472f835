"""Stale-while-revalidate, XFetch early refresh and the in-process tier."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache


async def _background_done(cache: Cache) -> None:
    """Wait for the cache's background refreshes (not for a guessed amount of time)."""
    async with asyncio.timeout(10):
        while cache._tasks:
            await asyncio.gather(*cache._tasks, return_exceptions=True)


async def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until true (bounded), for effects of another connection."""
    async with asyncio.timeout(10):
        while not await condition():
            await asyncio.sleep(0.01)


async def test_stale_value_served_while_one_background_refresh_runs(
    redis_client: Redis,
) -> None:
    cache = Cache()
    cache.bind(redis_client)
    calls: list[int] = []

    @cache.cached(namespace="swr", ttl=0.1, stale_ttl=30, jitter=0)
    async def get(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.05)
        return len(calls)

    assert await get(1) == 1
    await asyncio.sleep(0.15)  # expired but within stale_ttl
    results = await asyncio.gather(*(get(1) for _ in range(50)))
    assert results == [1] * 50  # served stale, nobody waited for the computation
    assert cache.stats()["swr"].stale == 50
    await _background_done(cache)
    assert calls == [1, 1]  # exactly one background refresh
    assert await get(1) == 2
    assert cache.stats()["swr"].refreshes == 1
    await cache.aclose()


async def test_xfetch_refreshes_hot_keys_before_expiry(redis_client: Redis) -> None:
    cache = Cache()
    cache.bind(redis_client)
    calls: list[int] = []
    gate = asyncio.Event()

    # delta >= 10 ms and beta 1e6: every hit rolls "due" with probability > 99 %, 60 s
    # before expiry; the refresh is held until the hits are done, so none can start another.
    @cache.cached(namespace="xf", ttl=60, early_refresh=1e6, jitter=0)
    async def get(x: int) -> int:
        calls.append(x)
        if len(calls) > 1:
            await gate.wait()
        await asyncio.sleep(0.01)
        return len(calls)

    assert await get(1) == 1
    for _ in range(20):
        assert await get(1) == 1  # served at once, not waiting for the refresh

    async def refresh_started() -> bool:
        return len(calls) == 2

    await _until(refresh_started, "the early refresh starts")
    gate.set()
    await _background_done(cache)
    assert len(calls) == 2  # one early refresh, not one per hit
    assert cache.stats()["xf"].refreshes == 1
    assert cache.stats()["xf"].stale == 0
    assert await get(1) == 2
    await cache.aclose()


async def test_local_tier_serves_without_redis_and_is_invalidated_across_caches(
    redis_client: Redis, commands: object
) -> None:
    first, second = Cache(local_tier=True), Cache(local_tier=True)
    first.bind(redis_client)
    second.bind(redis_client)
    calls: list[str] = []

    def make(cache: Cache):  # type: ignore[no-untyped-def]
        @cache.cached(namespace="hot", key="{x}")
        async def get(x: int) -> str:
            calls.append(f"{x}")
            return f"v{len(calls)}"

        return get

    a, b = make(first), make(second)
    assert await a(1) == "v1"
    assert await b(1) == "v1"  # from Redis, now held locally by both

    async def both_listening() -> bool:
        numsub = await redis_client.pubsub_numsub("sight:local")
        return bool(numsub[0][1] == 2)

    await _until(both_listening, "the invalidation listeners subscribe")
    assert await a(1) == "v1"  # stored locally only once invalidations can reach the tier
    assert await b(1) == "v1"
    await commands.reset()  # type: ignore[attr-defined]
    for _ in range(100):
        assert await a(1) == "v1"
        assert await b(1) == "v1"
    assert await commands.total() == 0  # type: ignore[attr-defined]
    assert first.stats()["hot"].local_hits == 100
    await a.invalidate(1)  # deletes in Redis and tells every process to drop it

    async def dropped_by_second() -> bool:
        return len(second._local or ()) == 0

    await _until(dropped_by_second, "the other cache drops its copy")
    assert await b(1) == "v2"
    assert first.stats()["hot"].local_hits == 100
    assert set(first.stats()) == {"hot"}
    await first.aclose()
    await second.aclose()


def _local_cache(redis_client: Redis):  # type: ignore[no-untyped-def]
    """A cache with the local tier on and one function that always computes "computed"."""
    cache = Cache(local_tier=True)
    cache.bind(redis_client)

    @cache.cached(namespace="hot", key="{x}")
    async def get(x: int) -> str:
        return "computed"

    return cache, get


async def test_set_replaces_this_processs_local_copy_at_once(redis_client: Redis) -> None:
    cache, get = _local_cache(redis_client)
    assert await get(1) == "computed"
    await get.set("preset", 1)
    assert await get(1) == "preset"  # not the local copy of the old value
    await cache.aclose()


@pytest.mark.standalone_only  # one server's raw keys, channels or clients
async def test_one_failed_lease_extension_does_not_end_the_lease(redis_client: Redis) -> None:
    from redis.exceptions import ResponseError

    cache = Cache(lock_ttl=0.3)
    cache.bind(redis_client)
    backend: Any = cache.backend
    original = backend.extend_lock
    extensions: list[bool] = []

    async def flaky(*args: Any) -> bool:
        if not extensions:
            extensions.append(False)
            raise ResponseError("one bad moment")
        extensions.append(await original(*args))
        return extensions[-1]

    backend.extend_lock = flaky
    gate = asyncio.Event()

    @cache.cached(namespace="lease", key="{x}")
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    task = asyncio.ensure_future(slow(1))
    try:
        await _until(_async(lambda: len(extensions) >= 3), "the lease is extended again")
        assert extensions[1:3] == [True, True]  # still ours after the failed extension
        assert await redis_client.exists("sight:lock:" + slow.key(1)) == 1
    finally:
        gate.set()
        assert await task == 1
        await cache.aclose()


def _async(condition):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool(condition())

    return check


async def test_aclose_right_after_a_local_invalidation_returns(redis_client: Redis) -> None:
    # It used to hang for good: the invalidation listener, cancelled while its subscription
    # and our own invalidation message were in flight, was awaited without a bound.
    cache, get = _local_cache(redis_client)
    await get(1)
    await get.invalidate(1)
    listener = cache._engine.local_listener
    assert listener is not None
    closing = asyncio.ensure_future(cache.aclose())
    done, _ = await asyncio.wait([closing], timeout=5)  # (asyncio.timeout would be swallowed)
    assert closing in done
    # Really stopped, not abandoned after aclose's bounded wait: the cancellation that
    # redis-py's pub/sub connect swallowed is raised again.
    assert listener.done()


@pytest.mark.standalone_only  # one server's raw keys, channels or clients
async def test_invalidations_from_a_process_without_the_tier_reach_the_tiers(
    redis_client: Redis,
) -> None:
    with_tier, without = Cache(local_tier=True), Cache()
    with_tier.bind(redis_client)
    without.bind(redis_client)
    source = {"v": 1}

    def make(cache: Cache):  # type: ignore[no-untyped-def]
        @cache.cached(namespace="hot", key="{x}", tags=("t:{x}",))
        async def get(x: int) -> int:
            return source["v"]

        return get

    a, b = make(with_tier), make(without)
    await a(1)

    async def listening() -> bool:
        return bool((await redis_client.pubsub_numsub("sight:local"))[0][1] == 1)

    await _until(listening, "the listener subscribes")
    await a(1)
    assert len(with_tier._local or ()) == 1
    for invalidate in (lambda: b.invalidate(1), lambda: without.invalidate_tags("t:1")):
        source["v"] += 1
        await invalidate()

        async def dropped() -> bool:
            return len(with_tier._local or ()) == 0

        await _until(dropped, "the tier drops the entry")
        assert await a(1) == source["v"]
    await with_tier.aclose()
    await without.aclose()


@pytest.mark.standalone_only  # one server's raw keys, channels or clients
async def test_a_dropped_subscription_flushes_the_tier_and_resubscribes_quickly(
    redis_client: Redis,
) -> None:
    cache = Cache(local_tier=True, breaker_cooldown=30)
    cache.bind(redis_client)

    @cache.cached(namespace="hot", key="{x}")
    async def get(x: int) -> int:
        return x

    await get(1)

    async def listening() -> bool:
        return bool((await redis_client.pubsub_numsub("sight:local"))[0][1] == 1)

    await _until(listening, "the listener subscribes")
    await get(1)
    assert len(cache._local or ()) == 1
    await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    async def flushed() -> bool:
        return len(cache._local or ()) == 0

    await _until(flushed, "the tier is flushed")
    await get(1)  # offline: read from Redis, not stored locally
    assert len(cache._local or ()) == 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    await _until(listening, "the listener subscribes again")
    assert loop.time() - start < 5  # not the 30 s breaker cooldown
    await cache.aclose()


def test_local_true_on_a_cache_without_the_tier_is_refused() -> None:
    import pytest

    from sight_core.errors import ConfigurationError

    cache = Cache()
    with pytest.raises(ConfigurationError, match="local_tier=True"):

        @cache.cached(namespace="hot", local=True)
        async def get(x: int) -> int:
            return x
