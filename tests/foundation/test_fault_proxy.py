"""The fault proxy against the real Redis and PostgreSQL: each fault as a client sees it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import redis
import redis.asyncio
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from sight_core.testing import FaultProxy

MakeProxy = Callable[[int | str], FaultProxy]


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _sync_redis(url: str, timeout: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def _round_trip(client: redis.Redis) -> float:
    start = time.perf_counter()
    assert client.ping()
    return time.perf_counter() - start


def test_healthy_proxy_forwards_and_counts(fault_proxy: MakeProxy, redis_url: str) -> None:
    proxy = fault_proxy(redis_url)
    a, b = _sync_redis(proxy.url_for(redis_url)), _sync_redis(proxy.url_for(redis_url))
    try:
        a.set("k", "v")
        assert b.get("k") == b"v"
        assert proxy.accepted == 2
        assert proxy.live == 2
        assert [c.number for c in proxy.connections()] == [1, 2]
        a.close()
        _wait_until(lambda: proxy.live == 1)
        assert proxy.accepted == 2
    finally:
        a.close()
        b.close()


def test_latency_adds_delay_both_ways_and_keeps_order(
    fault_proxy: MakeProxy, redis_url: str
) -> None:
    proxy = fault_proxy(redis_url)
    client = _sync_redis(proxy.url_for(redis_url))
    try:
        baseline = min(_round_trip(client) for _ in range(3))
        proxy.set_latency(0.15)  # each direction: a round trip pays 0.3 s
        slow = _round_trip(client)
        assert 0.28 <= slow - baseline < 3.0
        proxy.set_latency(0.15, direction="upstream")
        proxy.set_latency(0.0, direction="downstream")
        one_way = _round_trip(client)
        assert 0.13 <= one_way - baseline < 3.0
        # jitter reorders nothing: 200 pipelined INCRs answer 1..200 in order
        proxy.set_latency(0.002, jitter=0.002)
        pipe = client.pipeline(transaction=False)
        for _ in range(200):
            pipe.incr("counter")
        assert pipe.execute() == list(range(1, 201))
        proxy.restore()
        assert _round_trip(client) < 0.13
    finally:
        client.close()


def test_latency_validates_arguments(fault_proxy: MakeProxy, redis_url: str) -> None:
    proxy = fault_proxy(redis_url)
    with pytest.raises(ValueError, match="jitter=-1"):
        proxy.set_latency(0.1, jitter=-1)
    with pytest.raises(ValueError, match="'sideways'"):
        proxy.set_latency(0.1, direction="sideways")  # type: ignore[arg-type]


def test_blackhole_times_out_clients_and_restore_heals(
    fault_proxy: MakeProxy, redis_url: str
) -> None:
    proxy = fault_proxy(redis_url)
    client = _sync_redis(proxy.url_for(redis_url), timeout=0.5)
    try:
        assert client.ping()
        proxy.blackhole()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        # a new connection is accepted but never answered: the connect handshake hangs
        fresh = _sync_redis(proxy.url_for(redis_url), timeout=0.5)
        with pytest.raises(redis.exceptions.TimeoutError):
            fresh.ping()
        fresh.close()
        proxy.restore()
        assert client.ping()  # redis-py reconnects after the timeout
    finally:
        client.close()


async def test_blackholed_postgres_times_out_connect_and_query(
    fault_proxy: MakeProxy, postgres_url: str
) -> None:
    proxy = fault_proxy(postgres_url)
    dsn = proxy.url_for(_asyncpg_dsn(postgres_url))
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        proxy.blackhole()
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 2", timeout=0.5)
        with pytest.raises(TimeoutError):
            await asyncpg.connect(dsn, timeout=0.5)
    finally:
        conn.terminate()
    proxy.restore()
    healed = await asyncpg.connect(dsn)
    try:
        assert await healed.fetchval("SELECT 3") == 3
    finally:
        await healed.close()


async def test_postgres_latency_is_added_per_round_trip(
    fault_proxy: MakeProxy, postgres_url: str
) -> None:
    proxy = fault_proxy(postgres_url)
    conn = await asyncpg.connect(proxy.url_for(_asyncpg_dsn(postgres_url)))
    try:
        start = time.perf_counter()
        await conn.fetchval("SELECT 1")
        baseline = time.perf_counter() - start
        proxy.set_latency(0.1, jitter=0.02)
        start = time.perf_counter()
        assert await conn.fetchval("SELECT 1") == 1
        assert 0.15 <= time.perf_counter() - start - baseline < 3.0
    finally:
        proxy.restore()
        await conn.close()


def test_reset_raises_connection_error_in_redis_clients(
    fault_proxy: MakeProxy, redis_url: str
) -> None:
    proxy = fault_proxy(redis_url)
    client = redis.Redis.from_url(
        proxy.url_for(redis_url), socket_timeout=10, retry=Retry(NoBackoff(), 0)
    )
    try:
        assert client.ping()
        sent = proxy.connections()[0].bytes_upstream
        with ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(client.blpop, ["never-pushed"], 8)
            _wait_until(lambda: proxy.connections()[0].bytes_upstream > sent)  # BLPOP is out
            assert proxy.reset() == 1
            with pytest.raises(redis.exceptions.ConnectionError):
                blocked.result(timeout=5)
        assert proxy.live == 0
        assert client.ping()  # reset is not a lasting fault: the pool reconnects
    finally:
        client.close()


async def test_reset_breaks_postgres_connections(fault_proxy: MakeProxy, postgres_url: str) -> None:
    proxy = fault_proxy(postgres_url)
    dsn = proxy.url_for(_asyncpg_dsn(postgres_url))
    conn = await asyncpg.connect(dsn)
    try:
        assert proxy.reset() == 1
        with pytest.raises((ConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError)):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    again = await asyncpg.connect(dsn)  # reset is not a lasting fault
    await again.close()


async def test_drop_kills_one_of_two_connections(fault_proxy: MakeProxy, redis_url: str) -> None:
    proxy = fault_proxy(redis_url)
    url = proxy.url_for(redis_url)
    commands = redis.asyncio.Redis.from_url(url, socket_timeout=5)
    listener = redis.asyncio.Redis.from_url(url, socket_timeout=5)
    pubsub = listener.pubsub()
    try:
        await commands.ping()
        await pubsub.subscribe("events")
        assert await pubsub.get_message(timeout=2) is not None  # the subscribe confirmation
        assert proxy.live == 2
        dropped = proxy.drop()  # the newest: the pub/sub connection
        assert dropped.number == 2
        with pytest.raises(redis.exceptions.ConnectionError):
            await pubsub.get_message(timeout=2)
        assert await commands.ping()  # the other connection is untouched
        numbers = [c.number for c in proxy.connections()]
        assert 1 in numbers and 2 not in numbers  # a pub/sub reconnect would be number 3
        with pytest.raises(LookupError, match="index 5"):
            proxy.drop(5)
        with pytest.raises(LookupError, match="predicate"):
            proxy.drop(lambda info: info.number == 99)
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await commands.aclose()


def test_refuse_rejects_new_connects_until_restore(fault_proxy: MakeProxy, redis_url: str) -> None:
    proxy = fault_proxy(redis_url)
    client = _sync_redis(proxy.url_for(redis_url))
    try:
        assert client.ping()
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=2).close()
        assert client.ping()  # live connections are untouched
        proxy.restore()
        socket.create_connection(proxy.address, timeout=2).close()
    finally:
        client.close()


async def test_pause_holds_bytes_and_resume_delivers_them(
    fault_proxy: MakeProxy, redis_url: str
) -> None:
    proxy = fault_proxy(redis_url)
    client = redis.asyncio.Redis.from_url(proxy.url_for(redis_url), socket_timeout=5)
    try:
        await client.ping()
        proxy.pause()
        pending = asyncio.ensure_future(client.incr("paused"))
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done
        proxy.resume()
        assert await asyncio.wait_for(pending, 5) == 1
    finally:
        await client.aclose()


def test_controls_need_a_started_proxy(redis_url: str) -> None:
    proxy = FaultProxy(6379)
    with pytest.raises(RuntimeError, match="not started"):
        proxy.reset()
    with FaultProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0])) as started:
        assert started.port > 0
    started.close()  # idempotent


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
