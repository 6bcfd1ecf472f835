"""``cached_many``: 1 MGET, 1 call for the misses only, 1 pipeline for the writes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from sight_core.cache import Cache


class Persona(BaseModel):
    id: int
    name: str


async def test_batch_reads_once_computes_misses_once_writes_once(
    cache: Cache, commands: Any
) -> None:
    batches: list[list[int]] = []

    @cache.cached_many(namespace="persona", version=2, key="{ids}:project:{project_id}")
    async def get_personas(ids: list[int], project_id: UUID) -> dict[int, Persona]:
        batches.append(list(ids))
        return {i: Persona(id=i, name=f"p{i}") for i in ids if i != 99}

    project = UUID(int=5)
    first = await get_personas([1, 2, 3], project)
    assert list(first) == [1, 2, 3]
    await commands.reset()
    second = await get_personas(list(range(1, 101)), project)
    assert batches == [[1, 2, 3], list(range(4, 101))]
    assert all(type(v) is Persona for v in second.values())
    assert 99 not in second and len(second) == 99
    counts = await commands.counts()
    assert counts["mget"] == 1
    assert counts["eval"] == 1  # one fenced write script: 96 SETs (99 not returned, 1-3 hits)
    assert counts["set"] == 96
    assert get_personas.keys([1], project) == [f"sight:v2:persona:1:project:{project}"]

    await commands.reset()
    third = await get_personas(list(range(1, 101)), project)
    assert batches[-1] == [99]
    assert third == second
    assert (await commands.counts()) == {"mget": 1}
    assert await get_personas.get_many([1, 2, 500], project) == {
        1: Persona(id=1, name="p1"),
        2: Persona(id=2, name="p2"),
    }


async def test_same_keys_as_the_single_item_function(cache: Cache, redis_client: Redis) -> None:
    @cache.cached(namespace="persona", key="{persona_id}")
    async def get_one(persona_id: int) -> Persona:
        return Persona(id=persona_id, name="single")

    @cache.cached_many(namespace="persona", key="{persona_ids}")
    async def get_many(persona_ids: list[int]) -> dict[int, Persona]:
        return {i: Persona(id=i, name="batch") for i in persona_ids}

    await get_one(1)
    assert (await get_many([1, 2]))[1].name == "single"
    assert (await get_one(2)).name == "batch"
    assert await get_many.invalidate([1, 2]) == 2


async def test_get_many_on_a_single_item_function_uses_one_mget(
    cache: Cache, commands: Any
) -> None:
    calls: list[int] = []

    @cache.cached(namespace="item", key="{item_id}")
    async def get(item_id: int) -> int:
        calls.append(item_id)
        return item_id * 10

    await get(1)
    await commands.reset()
    assert await get.get_many([{"item_id": 1}, {"item_id": 2}, {"item_id": 3}]) == [10, 20, 30]
    assert calls == [1, 2, 3]
    counts = await commands.counts()
    assert counts["mget"] == 1
    assert counts["eval"] == 4  # lock + commit per miss: no second read per miss
    # every GET ran inside those scripts (lock: the fence clock; commit: the namespace and
    # key fence marks, the lock, the fence clock)
    assert counts["get"] == 2 * (1 + 4)
    stats = cache.stats()["item"]
    assert (stats.hits, stats.misses) == (1, 3)  # 1 from the MGET; the warm-up and 2 misses


async def test_cached_methods_have_tags_and_get_many(cache: Cache, commands: Any) -> None:
    calls: list[int] = []

    class Service:
        @cache.cached(namespace="svc", key="{item_id}", tags=("project:{project_id}",))
        async def get(self, item_id: int, project_id: int) -> int:
            calls.append(item_id)
            return item_id * 10

    service = Service()
    assert service.get.tags(1, 7) == ["project:7"]
    assert await service.get(1, 7) == 10
    await commands.reset()
    assert await service.get.get_many(
        [{"item_id": 1, "project_id": 7}, {"item_id": 2, "project_id": 7}]
    ) == [10, 20]
    assert calls == [1, 2]
    assert (await commands.counts())["mget"] == 1
    assert await cache.invalidate_tags("project:7") == 2


async def test_get_many_on_a_disabled_cache_calls_through(redis_client: Redis) -> None:
    cache = Cache(enabled=False)
    cache.bind(redis_client)
    calls: list[int] = []

    @cache.cached(namespace="off")
    async def get(item_id: int) -> int:
        calls.append(item_id)
        return item_id

    assert await get.get_many([{"item_id": 1}, {"item_id": 1}]) == [1, 1]
    assert calls == [1, 1]
    assert await redis_client.dbsize() == 0


@pytest.mark.parametrize("enabled", [True, False])
async def test_get_many_caps_concurrent_computations(redis_client: Redis, enabled: bool) -> None:
    import asyncio

    cache = Cache(enabled=enabled)
    cache.bind(redis_client)
    in_flight = peak = 0
    three_running = asyncio.Event()  # held until the cap is reached, then open for good

    @cache.cached(namespace="cap")
    async def get(item_id: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 3:
            three_running.set()
        await asyncio.wait_for(three_running.wait(), timeout=10)
        await asyncio.sleep(0)
        in_flight -= 1
        return item_id

    ids = [{"item_id": i} for i in range(40)]
    assert await get.get_many(ids, limit=3) == list(range(40))
    assert peak == 3
    await cache.aclose()


async def test_identical_concurrent_batches_compute_once(cache: Cache, commands: Any) -> None:
    import asyncio

    batches: list[list[int]] = []
    gate = asyncio.Event()

    @cache.cached_many(namespace="flight", key="{ids}")
    async def get(ids: list[int]) -> dict[int, int]:
        batches.append(sorted(ids))
        await gate.wait()
        return {i: i * 10 for i in ids}

    gate.set()
    await get([0])  # the fence is read once per process; not part of what is counted
    gate.clear()
    await commands.reset()
    calls = [asyncio.ensure_future(get([1, 2, 3])) for _ in range(20)]
    # The overlapping call starts once the batch computes: the MGET replies come back on
    # different connections in any order, so started together it could compute first.
    async with asyncio.timeout(10):
        while len(batches) < 2:
            await asyncio.sleep(0.005)
        overlapping = asyncio.ensure_future(get([2, 3, 4]))
        while cache.stats()["flight"].misses < 1 + 20 * 3 + 3:  # every call has read (MGET)
            await asyncio.sleep(0.005)
    gate.set()
    results = await asyncio.gather(*calls)
    assert all(r == {1: 10, 2: 20, 3: 30} for r in results)
    assert await overlapping == {2: 20, 3: 30, 4: 40}
    assert batches == [[0], [1, 2, 3], [4]]  # the overlapping call computed only its new id
    counts = await commands.counts()
    assert counts["mget"] == 21  # one read round trip per call
    assert counts["eval"] == 2  # one write round trip per computing call
