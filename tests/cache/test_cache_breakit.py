"""Adversarial scenarios against the real Redis: each one tries to make the cache return a
value whose computation started before an invalidation that had returned, or lose data.
Scenarios that found nothing stay as regression tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache


class Source:
    """A row whose ``version`` writers bump; computations read it, then wait on ``gate``."""

    def __init__(self) -> None:
        self.version = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = 0

    async def compute(self, item: int) -> dict[str, int]:
        seen = self.version
        self.started += 1
        await self.gate.wait()
        return {"item": item, "version": seen}


def _cached(cache: Cache, source: Source, *, lock: bool = True, namespace: str = "brk") -> Any:
    @cache.cached(
        namespace=namespace,
        ttl=60,
        key="{item}",
        tags=("group:{item}",),
        jitter=0,
        lock=lock,
    )
    async def get(item: int) -> dict[str, int]:
        return await source.compute(item)

    return get


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.002)


@pytest.mark.parametrize("lock", [True, False])
async def test_a_flushed_fence_clock_does_not_let_an_older_computation_commit(
    cache: Cache, redis_client: Redis, lock: bool
) -> None:
    """Redis restarted without persistence (or FLUSHALL) while a computation ran: the fence
    clock starts again from nothing, yet an invalidation after it must still fence the
    computation that started before it."""
    source = Source()
    get = _cached(cache, source, lock=lock)
    for i in range(5):  # some history: the clock is well above what a fresh one reaches
        await get.invalidate(100 + i)
    await get(2)  # this process has seen the current clock (the unlocked path uses it)
    source.gate.clear()
    early = asyncio.ensure_future(get(1))
    await _until(lambda: source.started == 2)
    await redis_client.flushall()  # the restart: clock, marks, locks all gone
    source.version = 1
    await get.invalidate(1)
    source.gate.set()
    assert (await early)["version"] == 0  # its own caller started before: fine
    assert (await get(1))["version"] == 1


@pytest.mark.parametrize("lock", [True, False])
async def test_a_follower_after_an_invalidation_does_not_take_an_unstored_older_value(
    cache: Cache, lock: bool
) -> None:
    """A value that is not stored (None here) was computed before an invalidation: a caller
    of this process that arrives after the invalidation returned must not receive it."""
    source = Source()

    @cache.cached(namespace="brk-none", ttl=60, key="{item}", jitter=0, lock=lock)
    async def get(item: int) -> dict[str, int] | None:
        found = await source.compute(item)
        return None if found["version"] == 0 else found

    source.gate.clear()
    early = asyncio.ensure_future(get(1))
    await _until(lambda: source.started == 1)
    source.version = 1  # the row now exists
    await get.invalidate(1)
    late = asyncio.ensure_future(get(1))
    await asyncio.sleep(0.05)
    source.gate.set()
    assert await early is None  # its own caller started before: fine
    assert await late == {"item": 1, "version": 1}


async def test_tags_with_glob_and_odd_characters_reach_only_their_own_entries(
    cache: Cache,
) -> None:
    """Tag values are never patterns: ``*``, ``?``, ``[``, ``{``, ``:``, spaces and unicode."""
    source = Source()

    @cache.cached(namespace="brk-tags", ttl=60, key="{name}", tags=("t:{name}",), jitter=0)
    async def get(name: str) -> dict[str, int]:
        return await source.compute(len(name))

    names = ["a*", "a?", "a[b]", "{a}", "a:b", "a b", "é漢", "a"]
    for n in names:
        await get(n)
    source.version = 1
    await cache.invalidate_tags("t:a*")
    assert (await get("a*"))["version"] == 1
    assert [(await get(n))["version"] for n in names if n != "a*"] == [0] * (len(names) - 1)
