"""A black-holed Redis (issue 11, item 12): only the probe pays the deadline, lock waiters
stop waiting as soon as Redis is known unhealthy. Redis sits behind the fault proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.cache._redis import RedisBackend
from sight_core.testing import FaultProxy

MakeProxy = Callable[[int | str], FaultProxy]

OP_TIMEOUT = 1.0  # generous: a caller that did not pay it finishes far below it


class CountingBackend:
    """A backend that records every operation it is asked for (what reaches the socket)."""

    def __init__(self, inner: RedisBackend) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in {"subscribe", "aclose"} or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return counted


async def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    value = await call()
    return value, time.monotonic() - start


async def test_only_the_probe_pays_the_deadline_on_a_black_holed_redis(
    proxied: tuple[FaultProxy, Redis],
) -> None:
    proxy, client = proxied
    backend = CountingBackend(RedisBackend(client))
    cache = Cache(prefix="outage", op_timeout=OP_TIMEOUT, breaker_cooldown=0.5, lock_ttl=10)
    cache.bind(backend)  # type: ignore[arg-type]
    computed = 0

    @cache.cached(namespace="hot", ttl=60)
    async def hot(x: int) -> int:
        nonlocal computed
        computed += 1
        await asyncio.sleep(0.01)
        return x * 2

    try:
        assert await hot(1) == 2  # healthy: the pool has a connection
        proxy.blackhole()

        # Window 1 (breaker closed): the first GET goes, the others share it; it opens.
        backend.calls.clear()
        first = await asyncio.gather(*(_timed(lambda: hot(2)) for _ in range(50)))
        assert [v for v, _ in first] == [4] * 50
        assert backend.calls == ["get"]
        assert cache.breaker_state == "open"
        opened = cache._breaker.opened

        # Window 2 (cooled down): one caller probes; the 49 others compute at once.
        await asyncio.sleep(0.6)
        backend.calls.clear()
        second = await asyncio.gather(*(_timed(lambda: hot(2)) for _ in range(50)))
        assert [v for v, _ in second] == [4] * 50
        assert backend.calls == ["get"]  # the probe, and nothing else
        paid = [d for _, d in second if d >= OP_TIMEOUT]
        assert len(paid) == 1, sorted(d for _, d in second)
        assert cache._breaker.opened == opened + 1  # the probe failed: one more open
    finally:
        proxy.restore()
        await cache.aclose()


async def test_lock_waiters_stop_waiting_once_redis_is_known_unhealthy(
    proxied: tuple[FaultProxy, Redis], redis_client: Redis
) -> None:
    proxy, client = proxied
    holder_cache = Cache(prefix="outage", op_timeout=OP_TIMEOUT, lock_ttl=10)
    holder_cache.bind(redis_client)  # another process, with a healthy path to Redis
    waiter_cache = Cache(prefix="outage", op_timeout=OP_TIMEOUT, lock_ttl=10)
    waiter_cache.bind(client)
    release = asyncio.Event()
    computed: list[str] = []

    def define(cache: Cache, who: str) -> Any:
        @cache.cached(namespace="locked", ttl=60)
        async def slow(x: int) -> str:
            computed.append(who)
            if who == "holder":
                await release.wait()
            return f"{who}:{x}"

        return slow

    holder_fn = define(holder_cache, "holder")
    waiter_fn = define(waiter_cache, "waiter")
    try:
        holding = asyncio.ensure_future(holder_fn(3))
        while computed != ["holder"]:
            await asyncio.sleep(0.01)
        waiters = [asyncio.ensure_future(waiter_fn(3)) for _ in range(20)]
        while waiter_cache.stats()["locked"].lock_waits < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # subscribed and waiting on the holder's lease (10 s)

        proxy.blackhole()
        start = time.monotonic()
        # Any operation of the waiters' process finds Redis unreachable: the breaker opens.
        assert await waiter_fn(4) == "waiter:4"
        results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
        elapsed = time.monotonic() - start
        assert results == ["waiter:3"] * 20
        assert computed.count("waiter") == 2  # key 3 once (single flight), key 4 once
        assert elapsed < 2 * OP_TIMEOUT + 0.5  # not the holder's 10 s lease
        release.set()
        assert await holding == "holder:3"
    finally:
        release.set()
        proxy.restore()
        await holder_cache.aclose()
        await waiter_cache.aclose()
