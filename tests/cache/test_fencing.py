"""Fenced commits: once an invalidation returns, no read returns a value whose computation
started before it (issue 11, items 1-4), in this process, in another one, and in every version
of the namespace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache


class Source:
    """The source of truth: a row whose ``version`` writers bump; computations read it, then
    wait on ``gate`` (a slow LLM call) before returning what they read."""

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


def _persona(cache: Cache, source: Source, *, version: int = 1, lock: bool = True):  # type: ignore[no-untyped-def]
    @cache.cached(
        namespace="fenced",
        version=version,
        ttl=60,
        key="{item}:project:{project}",
        tags=("project:{project}",),
        jitter=0,
        lock=lock,
    )
    async def get(item: int, project: int) -> dict[str, int]:
        return await source.compute(item)

    return get


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.002)


@pytest.fixture
async def other_cache(redis_url: str) -> AsyncIterator[Cache]:
    """A second Cache on its own client: another process, as far as the cache can tell."""
    client = Redis.from_url(redis_url)
    other = Cache(prefix="sight", lock_ttl=2.0, op_timeout=1.0)
    other.bind(client)
    yield other
    await other.aclose()
    await client.aclose()


def _invalidators(cache: Cache, get: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "key": lambda: get.invalidate(1, project=7),
        "tag": lambda: cache.invalidate_tags("project:7"),
        "namespace": lambda: cache.invalidate_namespace("fenced"),
    }


@pytest.mark.parametrize("kind", ["key", "tag", "namespace"])
@pytest.mark.parametrize("lock", [True, False])
async def test_an_invalidation_is_not_undone_by_a_computation_in_flight(
    cache: Cache, kind: str, lock: bool
) -> None:
    source = Source()
    get = _persona(cache, source, lock=lock)
    source.gate.clear()
    early = asyncio.ensure_future(get(1, project=7))  # reads version 0, then waits
    await _until(lambda: source.started == 1)
    source.version = 1
    await _invalidators(cache, get)[kind]()
    # Arrived after the invalidation returned: must not receive the early computation.
    late = asyncio.ensure_future(get(1, project=7))
    await asyncio.sleep(0.05)
    source.gate.set()
    assert (await early)["version"] == 0  # its own caller started before: that is fine
    assert (await late)["version"] == 1
    assert (await get(1, project=7))["version"] == 1  # and nothing stale was stored


@pytest.mark.parametrize("kind", ["key", "tag", "namespace"])
async def test_a_waiter_in_another_process_recomputes_instead_of_taking_the_fenced_value(
    cache: Cache, other_cache: Cache, kind: str
) -> None:
    source = Source()
    get = _persona(cache, source)
    get_elsewhere = _persona(other_cache, source)
    source.gate.clear()
    early = asyncio.ensure_future(get(1, project=7))
    await _until(lambda: source.started == 1)
    source.version = 1
    await _invalidators(cache, get)[kind]()
    late = [asyncio.ensure_future(get_elsewhere(1, project=7)) for _ in range(5)]
    await asyncio.sleep(0.05)
    source.gate.set()
    await early
    assert [(await t)["version"] for t in late] == [1] * 5
    assert source.started == 2  # the five late readers recomputed in one flight


async def test_refresh_always_computes_even_right_after_a_commit(cache: Cache) -> None:
    source = Source()
    get = _persona(cache, source)
    assert (await get(1, project=7))["version"] == 0
    source.version = 1
    assert (await get.refresh(1, project=7))["version"] == 1
    assert source.started == 2
    assert (await get(1, project=7))["version"] == 1
    results = await asyncio.gather(*(get.refresh(1, project=7) for _ in range(10)))
    assert all(r["version"] == 1 for r in results)
    assert source.started == 3  # concurrent refreshes share one computation


async def test_refresh_is_not_answered_by_a_computation_that_started_before_it(
    cache: Cache, other_cache: Cache
) -> None:
    source = Source()
    get = _persona(cache, source)
    source.gate.clear()
    early = asyncio.ensure_future(_persona(other_cache, source)(1, project=7))
    await _until(lambda: source.started == 1)
    source.version = 1
    refreshed = asyncio.ensure_future(get.refresh(1, project=7))
    await _until(lambda: source.started == 2)
    source.gate.set()
    await early
    assert (await refreshed)["version"] == 1
    assert (await get(1, project=7))["version"] == 1


@pytest.mark.parametrize("kind", ["key", "tag"])
async def test_invalidation_reaches_every_version_of_the_namespace(
    cache: Cache, redis_client: Redis, kind: str
) -> None:
    source = Source()
    v2, v3 = _persona(cache, source, version=2), _persona(cache, source, version=3)
    await v2(1, project=7)
    await v3(1, project=7)
    source.version = 1
    if kind == "key":
        await v3.invalidate(1, project=7)  # from a v3 pod, during a rolling deploy
    else:
        await cache.invalidate_tags("project:7")
    assert await redis_client.exists(v2.key(1, project=7)) == 0
    assert (await v2(1, project=7))["version"] == 1
    assert (await v3(1, project=7))["version"] == 1


async def test_a_v2_computation_in_flight_is_fenced_by_a_v3_key_invalidation(
    cache: Cache, other_cache: Cache
) -> None:
    source = Source()
    v2 = _persona(other_cache, source, version=2)
    v3 = _persona(cache, source, version=3)
    source.gate.clear()
    early = asyncio.ensure_future(v2(1, project=7))
    await _until(lambda: source.started == 1)
    source.version = 1
    await v3.invalidate(1, project=7)
    source.gate.set()
    await early
    assert (await v2(1, project=7))["version"] == 1


async def test_tag_invalidation_and_concurrent_writes_lose_no_index_member(
    cache: Cache, redis_client: Redis
) -> None:
    source = Source()
    get = _persona(cache, source, lock=False)
    for start in range(0, 3000, 50):  # the test client's pool is small
        await asyncio.gather(*(get(i, project=7) for i in range(start, start + 50)))
    written: list[int] = []
    stop = asyncio.Event()

    async def writer() -> None:
        i = 10_000
        while not stop.is_set():
            await get(i, project=7)
            written.append(i)
            i += 1

    task = asyncio.ensure_future(writer())
    await _until(lambda: len(written) > 2)
    await cache.invalidate_tags("project:7")
    stop.set()
    await task
    assert len(written) > 3  # writes interleaved with the invalidation
    await cache.invalidate_tags("project:7")
    left = [k async for k in redis_client.scan_iter(match="sight:v1:fenced:*")]
    assert left == []  # every entry written meanwhile was still in the index
