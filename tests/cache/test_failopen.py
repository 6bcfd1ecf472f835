"""Fail-open: a stopped, refusing or black-holed Redis costs callers at most the deadline,
once per breaker window; the cache recovers when Redis comes back."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import tempfile
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache, create_redis_client
from sight_core.settings import RedisSettings
from sight_core.testing.servers import EmbeddedServer, free_port


class Spy:
    """Counts backend operations that reached the backend object (not skipped by the breaker)."""

    def __init__(self, cache: Cache) -> None:
        self.calls = 0
        backend: Any = cache.backend
        for name in ("get", "try_lock", "commit", "write", "mget"):
            original = getattr(backend, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.calls += 1
                return _original(*args, **kwargs)

            setattr(backend, name, counted)


def _restart(server: EmbeddedServer) -> EmbeddedServer:
    """Start a fresh redis-server on the stopped server's port."""
    args = list(server.process.args)  # type: ignore[arg-type]
    directory = tempfile.mkdtemp(prefix="sight-redis-restart-")
    args[args.index("--dir") + 1] = directory
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = int(args[args.index("--port") + 1])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    from pathlib import Path

    return EmbeddedServer("redis", server.url, process, Path(directory))


def _fn(cache: Cache, calls: list[int]):  # type: ignore[no-untyped-def]
    @cache.cached(namespace="fo", key="{i}")
    async def get(i: int) -> dict[str, int]:
        calls.append(i)
        return {"i": i}

    return get


async def test_redis_stopped_mid_test_then_restarted(own_redis: EmbeddedServer) -> None:
    client = create_redis_client(RedisSettings(url=own_redis.url, preset="test"))
    cache = Cache(op_timeout=0.2, breaker_cooldown=0.3)
    cache.bind(client)
    calls: list[int] = []
    get = _fn(cache, calls)
    assert await get(1) == {"i": 1}
    assert await get(1) == {"i": 1}
    assert calls == [1]

    own_redis.stop()
    spy = Spy(cache)
    durations = []
    for _ in range(20):
        start = time.perf_counter()
        assert await get(1) == {"i": 1}
        durations.append(time.perf_counter() - start)
    assert calls == [1] + [1] * 20  # every caller got a value, computed
    assert spy.calls == 1  # the breaker stopped contacting Redis after the first failure
    assert cache.breaker_state == "open"
    assert max(durations) < 0.2 * 4  # bounded by the deadline, not the client's retries
    assert cache.stats()["fo"].errors == 1

    restarted = _restart(own_redis)
    try:
        await asyncio.sleep(0.35)  # the cooldown passes: the next call probes
        assert await get(2) == {"i": 2}
        assert cache.breaker_state == "closed"
        assert await get(2) == {"i": 2}
        assert calls.count(2) == 1  # cached again
    finally:
        await cache.aclose()
        await client.aclose()
        restarted.stop()


async def test_black_holed_redis_costs_one_deadline_per_window() -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(100)  # never accepts, never answers
    port = hole.getsockname()[1]
    # A naive client: redis-py defaults (retries) with a long socket timeout.
    client = Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=5)
    cache = Cache(op_timeout=0.1, breaker_cooldown=60)
    cache.bind(client)
    spy = Spy(cache)
    calls: list[int] = []
    get = _fn(cache, calls)
    try:
        start = time.perf_counter()
        assert await get(1) == {"i": 1}
        first = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(50):
            assert await get(i) == {"i": i}
        rest = time.perf_counter() - start
        assert spy.calls == 1
        assert cache.breaker_state == "open"
        assert first < 1.0  # the deadline (0.1 s), not 5 s x retries
        assert rest < first  # 50 calls skipping Redis cost less than the one that waited
    finally:
        await cache.aclose()
        await client.aclose()
        hole.close()


async def test_refused_connections_open_the_breaker_and_one_probe_follows() -> None:
    port = free_port()
    client = create_redis_client(RedisSettings(url=f"redis://127.0.0.1:{port}/0", preset="test"))
    cache = Cache(op_timeout=0.5, breaker_cooldown=0.2)
    cache.bind(client)
    spy = Spy(cache)
    calls: list[int] = []
    get = _fn(cache, calls)
    try:
        await get(1)
        await asyncio.gather(*(get(i) for i in range(2, 30)))
        assert spy.calls == 1
        await asyncio.sleep(0.25)
        # Half-open: concurrent callers, exactly one probe reaches Redis.
        await asyncio.gather(*(get(i) for i in range(30, 60)))
        assert spy.calls == 2
        assert len(calls) == 59
        assert cache.breaker_state == "open"
    finally:
        await cache.aclose()
        await client.aclose()


async def test_maintenance_operations_raise_when_the_backend_is_down() -> None:
    from sight_core.errors import CacheError

    port = free_port()
    client = create_redis_client(RedisSettings(url=f"redis://127.0.0.1:{port}/0", preset="test"))
    cache = Cache(op_timeout=0.5)
    cache.bind(client)
    get = _fn(cache, [])
    try:
        with pytest.raises(CacheError, match="ConnectionError"):
            await get.invalidate(1)
        with pytest.raises(CacheError, match="ConnectionError"):
            await cache.invalidate_tags("x")
        # Maintenance reports nothing to the breaker (it guards reads); a read does.
        assert cache.breaker_state == "closed"
        assert await get(1) == {"i": 1}
        assert cache.breaker_state == "open"
        with pytest.raises(CacheError, match="breaker"):  # known down: skipped at once
            await cache.invalidate_tags("x")
    finally:
        await cache.aclose()
        await client.aclose()


async def test_cancelling_a_caller_is_not_mistaken_for_a_timeout() -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(100)
    client = Redis(host="127.0.0.1", port=hole.getsockname()[1], socket_timeout=5)
    cache = Cache(op_timeout=5.0)
    cache.bind(client)
    get = _fn(cache, [])
    try:
        task = asyncio.ensure_future(get(1))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cache.stats()["fo"].errors == 0  # a cancellation, not a backend failure
        assert cache.breaker_state == "closed"
        assert get._reads == {} and len(get._flights) == 0
    finally:
        await cache.aclose()
        await client.aclose()
        hole.close()


async def test_a_half_open_probe_that_reports_nothing_does_not_wedge_the_breaker(
    redis_client: Redis,
) -> None:
    # `refresh` claims the half-open probe, then its own guarded operations used to ask the
    # breaker again, were refused, and nothing ever closed or re-opened it: Redis was
    # never contacted again.
    cache = Cache(breaker_cooldown=60)
    cache.bind(redis_client)
    calls: list[int] = []
    get = _fn(cache, calls)
    cache._breaker.failure(True)  # opened by an earlier outage
    cache._breaker._probe_at = 0.0  # its cooldown is over
    assert await get.refresh(1) == {"i": 1}
    assert cache.breaker_state == "closed"
    assert await get(1) == {"i": 1}
    assert calls == [1]  # the refresh stored it; the call was a hit
    await cache.aclose()


async def test_a_cancelled_probe_lets_a_later_probe_through() -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(100)
    client = Redis(host="127.0.0.1", port=hole.getsockname()[1], socket_timeout=5)
    cache = Cache(op_timeout=5.0, breaker_cooldown=0.05)
    cache.bind(client)
    spy = Spy(cache)
    get = _fn(cache, [])
    try:
        cache._breaker.failure(True)
        cache._breaker._probe_at = 0.0
        probe = asyncio.ensure_future(get(1))
        async with asyncio.timeout(5):
            while spy.calls == 0:
                await asyncio.sleep(0.005)
        probe.cancel()  # the probe neither succeeded nor failed
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert cache.breaker_state == "half-open"
        await asyncio.sleep(0.1)  # longer than the cooldown: the lost probe is given up
        assert cache._breaker.allow() is True
    finally:
        await cache.aclose()
        await client.aclose()
        hole.close()


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_a_failing_lock_command_after_a_good_read_still_computes(
    redis_client: Redis,
) -> None:
    # GET answers (a miss) but SET NX fails (here WRONGTYPE: the lock key holds a list).
    cache = Cache(lock_ttl=30.0)
    cache.bind(redis_client)
    calls: list[int] = []
    get = _fn(cache, calls)
    await redis_client.lpush("sight:lock:" + get.key(1), "junk")
    async with asyncio.timeout(5):  # it used to wait on a lock it never saw
        assert await get(1) == {"i": 1}
    assert calls == [1]
    assert cache.stats()["fo"].errors == 1
    await cache.aclose()


async def test_get_many_fails_open() -> None:
    port = free_port()
    client = create_redis_client(RedisSettings(url=f"redis://127.0.0.1:{port}/0", preset="test"))
    cache = Cache(op_timeout=0.5)
    cache.bind(client)
    calls: list[int] = []
    get = _fn(cache, calls)
    try:
        assert await get.get_many([{"i": 1}, {"i": 2}]) == [{"i": 1}, {"i": 2}]
        assert calls == [1, 2]
    finally:
        await cache.aclose()
        await client.aclose()
