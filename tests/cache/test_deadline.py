"""One mechanism bounds every backend operation (issue 11, items 13 and the engine cleanup):
admission to the client's pool first, then the deadline; a timeout is an outage sign only when
nothing else completed meanwhile; a slow Redis opens the breaker once, and it never flaps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.cache._deadline import Operations, OperationTimeout
from sight_core.testing import FaultProxy

MakeProxy = Callable[[int | str], FaultProxy]


class _Pool:
    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections


class _Sized:
    """Looks like a client with a pool of ``size`` connections (only for counting slots)."""

    def __init__(self, size: int) -> None:
        self.connection_pool = _Pool(size)


def _cache(op_timeout: float, pool: int | None = None) -> Cache:
    cache = Cache(prefix="deadline", op_timeout=op_timeout)
    if pool is not None:
        from sight_core.cache._cache import _slots

        cache._engine.ops.resize(_slots(_Sized(pool)))
    return cache


async def test_queueing_for_a_slot_is_not_part_of_the_deadline() -> None:
    cache = _cache(op_timeout=0.2, pool=3)  # 2 slots: the pool less the pub/sub connection
    running = peak = 0

    async def op() -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)  # well within the deadline, but 10 of them take 0.25 s
        running -= 1
        return 1

    results = await asyncio.gather(*(cache._engine.bounded(op) for _ in range(10)))
    assert results == [1] * 10  # none timed out, though the last waited 0.2 s for a slot
    assert peak == 2
    assert cache._engine.ops.free == 2


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    cache = _cache(op_timeout=5.0, pool=2)  # 1 slot
    gate = asyncio.Event()

    async def op() -> str:
        await gate.wait()
        return "done"

    first = asyncio.ensure_future(cache._engine.bounded(op))
    second = asyncio.ensure_future(cache._engine.bounded(op))
    third = asyncio.ensure_future(cache._engine.bounded(op))
    await asyncio.sleep(0.01)
    second.cancel()
    gate.set()
    assert await first == "done" and await third == "done"
    assert second.cancelled()
    assert cache._engine.ops.free == 1


async def test_a_timeout_is_stalled_only_when_nothing_else_completed() -> None:
    cache = _cache(op_timeout=0.1)
    with pytest.raises(OperationTimeout) as alone:
        await cache._engine.bounded(asyncio.Event().wait)
    assert alone.value.stalled  # nothing answered meanwhile: an outage sign

    async def quick() -> None:
        await asyncio.sleep(0.02)

    stuck = asyncio.ensure_future(cache._engine.bounded(asyncio.Event().wait))
    await asyncio.sleep(0)
    await cache._engine.bounded(quick)  # the backend answered another operation meanwhile
    with pytest.raises(OperationTimeout) as busy:
        await stuck
    assert not busy.value.stalled  # stuck behind others (load): no outage


async def test_an_expiry_decided_a_turn_later_spares_the_tasks_next_operation() -> None:
    # The timer fires for operation 1 in the very loop turn its reply was read; the task
    # finishes it and starts operation 2 before the decision runs: 2 must not be cancelled.
    ops = Operations(timeout=5.0)
    first = ops.start()
    assert first is not None
    deadline, completed, extra = ops._inflight[first]
    ops._inflight[first] = (deadline - 10.0, completed, extra)  # overdue now
    ops._fire()  # schedules the decision for the next turn
    ops.stop(first, True)
    second = ops.start()
    await asyncio.sleep(0)  # the decision runs: operation 2's deadline is 5 s away
    await asyncio.sleep(0)
    assert second in ops._inflight and not ops._expired
    ops.stop(second, True)


async def test_a_real_cancellation_is_not_a_timeout() -> None:
    cache = _cache(op_timeout=5.0)
    task = asyncio.ensure_future(cache._engine.bounded(asyncio.Event().wait))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache._engine.ops.free > 1 << 20 and not cache._engine.ops._inflight


async def test_a_slow_redis_opens_the_breaker_once_per_window_and_it_never_flaps(
    proxied: tuple[FaultProxy, Redis],
) -> None:
    proxy, client = proxied
    cache = Cache(prefix="slow", op_timeout=0.1, breaker_cooldown=0.4)
    cache.bind(client)

    @cache.cached(namespace="s", ttl=60)
    async def value(x: int) -> int:
        return x

    states: list[str] = []
    stop = asyncio.Event()

    async def callers() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await asyncio.gather(*(value(i % 7) for i in range(n, n + 20)))
            states.append(cache.breaker_state)
            await asyncio.sleep(0.005)

    try:
        await value(0)
        proxy.set_latency(0.15)  # every reply arrives after the 0.1 s deadline
        load = asyncio.ensure_future(callers())
        await asyncio.sleep(1.3)  # about three cooldowns: a first open, then failed probes
        during = list(states)
        opened = cache._breaker.opened
        proxy.set_latency(0.0)
        await asyncio.sleep(0.6)  # a probe succeeds
        stop.set()
        await load
    finally:
        proxy.restore()
        await cache.aclose()
    # A late reply of an operation sent before the breaker opened never closed it: from the
    # first open to the end of the outage it is never seen closed.
    first_open = next(i for i, s in enumerate(during) if s != "closed")
    assert "closed" not in during[first_open:], during
    # One open, plus one per failed probe (one probe per cooldown window), never more.
    assert 1 <= opened <= 1 + 1.3 / 0.4 + 1
    assert states[-1] == "closed"  # healed: the probe closed it
    assert cache._breaker.opened == opened  # and nothing opened it after that
