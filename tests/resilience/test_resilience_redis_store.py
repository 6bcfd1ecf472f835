"""RedisBreakerStore on the real Redis: shared state, server time, TTL, fallback when down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.genai.errors import ServerError
from redis.asyncio import Redis
from resilience_support import Clock, unavailable

from sight_core.errors import CircuitOpenError
from sight_core.resilience import (
    BreakerState,
    CircuitBreaker,
    RedisBreakerStore,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Dependency:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def __call__(self) -> str:
        self.calls += 1
        if self.fail:
            raise unavailable()
        return "ok"


async def trip(breaker: CircuitBreaker, dep: Dependency, times: int) -> None:
    dep.fail = True
    for _ in range(times):
        with pytest.raises(ServerError):
            await breaker.call(dep)
    dep.fail = False


def worker(redis: Redis, **kw: float) -> CircuitBreaker:
    """A breaker as one worker process would build it: its own store object, same name."""
    options: dict[str, float] = {"failure_threshold": 3, "recovery_timeout": 30, "sync_interval": 0}
    options.update(kw)
    return CircuitBreaker("gemini-pro", store=RedisBreakerStore(redis), **options)  # type: ignore[arg-type]


async def test_a_circuit_opened_by_one_worker_rejects_in_another(redis_client: Redis) -> None:
    a, b = worker(redis_client), worker(redis_client)
    dep_a, dep_b = Dependency(), Dependency()
    started = time.monotonic()
    await trip(a, dep_a, 3)
    assert a.state is OPEN
    with pytest.raises(CircuitOpenError) as info:
        await b.call(dep_b)
    elapsed = time.monotonic() - started  # however loaded the machine, Redis saw no more
    assert dep_b.calls == 0
    assert info.value.retry_after is not None
    assert 30.0 - elapsed - 0.001 <= info.value.retry_after <= 30.0  # from Redis server time
    for _ in range(50):  # b now knows: further rejections are local, no Redis round trip
        with pytest.raises(CircuitOpenError):
            await b.call(dep_b)
    assert dep_b.calls == 0


async def test_failures_from_several_workers_add_up(redis_client: Redis) -> None:
    a, b = worker(redis_client), worker(redis_client)
    dep = Dependency()
    await trip(a, dep, 2)
    await trip(b, dep, 1)
    assert b.state is OPEN
    assert await a.refresh() is OPEN


async def test_state_key_has_a_ttl(redis_client: Redis) -> None:
    store = RedisBreakerStore(redis_client, prefix="t:breaker", key_ttl=600)
    breaker = CircuitBreaker("ttl", failure_threshold=1, store=store)
    await trip(breaker, Dependency(), 1)
    ttl_ms = await redis_client.pttl(store.key("ttl"))
    assert 590_000 < ttl_ms <= 600_000
    assert await redis_client.hget(store.key("ttl"), "st") in (b"1", "1")


async def test_half_open_probes_are_bounded_across_workers(redis_client: Redis) -> None:
    a = worker(redis_client, failure_threshold=1, recovery_timeout=0.05)
    b = worker(redis_client, failure_threshold=1, recovery_timeout=0.05)
    await trip(a, Dependency(), 1)
    await asyncio.sleep(0.08)
    gate = asyncio.Event()
    entered = 0

    async def probe() -> str:
        nonlocal entered
        entered += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.ensure_future(w.call(probe)) for w in (a, b, a, b)]
    while sum(t.done() for t in tasks) < 3:
        await asyncio.sleep(0.005)
    assert entered == 1  # half_open_max_calls=1, shared by both workers
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 3
    assert await b.refresh() is CLOSED


async def test_failure_rate_in_redis(redis_client: Redis) -> None:
    store = RedisBreakerStore(redis_client)
    breaker = CircuitBreaker(
        "rate", failure_threshold=None, failure_rate=0.5, minimum_calls=4, store=store
    )
    dep = Dependency()
    await trip(breaker, dep, 1)
    await breaker.call(dep)
    await trip(breaker, dep, 1)
    assert breaker.state is CLOSED  # 3 calls
    await trip(breaker, dep, 1)
    assert breaker.state is OPEN  # 4 calls, 3 failed


@pytest.fixture
async def unreachable() -> AsyncIterator[Redis]:
    client = Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.05, socket_timeout=0.05
    )
    yield client
    await client.aclose()


async def test_redis_down_falls_back_to_local_state(unreachable: Redis) -> None:
    clock = Clock()
    store = RedisBreakerStore(unreachable, retry_interval=5, clock=clock)
    breaker = CircuitBreaker("down", failure_threshold=2, store=store, clock=clock)
    dep = Dependency()
    assert await breaker.call(dep) == "ok"
    assert store.degraded
    await trip(breaker, dep, 2)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    assert dep.calls == 3
    clock.now += 5
    assert not store.degraded  # will try Redis again on the next operation


async def test_slow_redis_falls_back_then_recovers(redis_client: Redis, redis_url: str) -> None:
    clock = Clock()
    store = RedisBreakerStore(redis_client, op_timeout=0.05, retry_interval=5, clock=clock)
    breaker = CircuitBreaker("slow", failure_threshold=1, store=store, clock=clock)
    dep = Dependency()
    admin = Redis.from_url(redis_url)
    try:
        # writes (our EVALSHA) wait until the unpause below, however slow this machine is
        await admin.client_pause(30_000, all=False)
        assert await breaker.call(dep) == "ok"  # EVALSHA blocked by the pause: local answer
        assert store.degraded
    finally:
        await admin.client_unpause()
        await admin.aclose()
    clock.now += 5
    await trip(breaker, dep, 1)
    assert not store.degraded
    assert await redis_client.hget(store.key("slow"), "st") in (b"1", "1")


class SlowReplies(RedisBreakerStore):
    """The real store, but the reply of a success is delivered late (a slow connection), after
    replies of operations that Redis ran later."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.held = asyncio.Event()
        self.release_reply = asyncio.Event()

    async def record(
        self, name: str, cfg: Any, *, failure: bool, probe: bool, epoch: int | None = None
    ) -> Any:
        snap = await super().record(name, cfg, failure=failure, probe=probe, epoch=epoch)
        if not failure and not self.held.is_set():
            self.held.set()
            await self.release_reply.wait()
        return snap


async def test_a_late_reply_does_not_undo_a_newer_state(redis_client: Redis) -> None:
    store = SlowReplies(redis_client)
    breaker = CircuitBreaker("late", failure_threshold=2, sync_interval=60, store=store)
    dep = Dependency()
    await trip(breaker, dep, 1)  # one failure seen: the next success is sent to Redis
    success = asyncio.ensure_future(breaker.call(dep))
    await store.held.wait()  # Redis ran the success (closed, count 0); its reply is in flight
    await trip(breaker, dep, 2)  # later operations: open
    assert breaker.state is OPEN
    store.release_reply.set()
    assert await success == "ok"  # the late "closed" reply arrives now
    assert breaker.state is OPEN
    calls = dep.calls
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    assert dep.calls == calls
