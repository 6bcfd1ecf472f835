"""A value nothing checked against the fence (Redis unreachable for this process) is handed
only to callers that began before its computation started: a caller that begins after another
process completed an invalidation computes its own (found by the consistency machine with
faults: the new caller joined the old, fail-open computation of its process)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.testing import FaultProxy


@pytest.mark.parametrize("lock", [True, False])
async def test_a_caller_after_an_invalidation_does_not_take_an_unchecked_older_value(
    proxied: tuple[FaultProxy, Redis], redis_client: Redis, lock: bool
) -> None:
    proxy, cut_off_client = proxied
    cut_off = Cache(prefix="unconfirmed", op_timeout=0.5, breaker_cooldown=30)
    healthy = Cache(prefix="unconfirmed", op_timeout=2.0)
    cut_off.bind(cut_off_client)
    healthy.bind(redis_client)
    source = {"value": 0}
    gate = asyncio.Event()
    computations: list[int] = []

    def define(cache: Cache) -> Any:
        @cache.cached(namespace="flight", key="{item}", ttl=60, lock=lock)
        async def read(item: int) -> int:
            seen = source["value"]
            computations.append(seen)
            await gate.wait()
            return seen

        return read

    read_cut_off, read_healthy = define(cut_off), define(healthy)
    try:
        proxy.refuse()
        proxy.reset()
        first = asyncio.ensure_future(read_cut_off(1))  # fail-open: computes, seen 0
        while not computations:
            await asyncio.sleep(0.01)
        source["value"] = 1
        await read_healthy.invalidate(1)  # completes in another process's cache
        late = asyncio.ensure_future(read_cut_off(1))  # begins after the invalidation
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == 0  # began before the invalidation: may see the old value
        assert await late == 1
    finally:
        gate.set()
        proxy.restore()
        await cut_off.aclose()
        await healthy.aclose()


async def test_callers_that_began_before_an_unchecked_flight_share_it(
    proxied: tuple[FaultProxy, Redis],
) -> None:
    """The rule costs little during an outage: callers that came while an unchecked
    computation ran share one more flight (which started after they began, so they take
    it), rather than one computation each; callers that were waiting before it started take
    it (test_outage.py: lock waiters on a Redis that dies)."""
    proxy, client = proxied
    cache = Cache(prefix="unconfirmed-burst", op_timeout=0.5, breaker_cooldown=30)
    cache.bind(client)
    gates: list[asyncio.Event] = []

    @cache.cached(namespace="burst", key="{item}", ttl=60)
    async def read(item: int) -> int:
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        return item

    async def computing(n: int) -> None:
        while len(gates) < n:
            await asyncio.sleep(0.01)

    try:
        proxy.refuse()
        proxy.reset()
        first = asyncio.ensure_future(read(7))
        await computing(1)
        later = [asyncio.ensure_future(read(7)) for _ in range(20)]
        await asyncio.sleep(0.05)
        gates[0].set()
        assert await first == 7
        await asyncio.wait_for(computing(2), 5)
        await asyncio.sleep(0.05)
        gates[1].set()
        assert await asyncio.gather(*later) == [7] * 20
        assert len(gates) == 2  # the first flight, then one flight for all who came later
    finally:
        for gate in gates:
            gate.set()
        proxy.restore()
        await cache.aclose()
