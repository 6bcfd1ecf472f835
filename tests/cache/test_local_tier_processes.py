"""The local tier across processes and a dropped subscription (issue 11, item 15).

Every tier here has a 10-minute ``local_ttl``: an entry that stops being served was dropped
by an invalidation message (or a flush), not by its TTL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.testing import FaultProxy

WORKER = Path(__file__).with_name("local_tier_worker.py")
SOURCE = "test:local-source"  # the worker's source of truth


def _functions(cache: Cache, client: Redis):  # type: ignore[no-untyped-def]
    @cache.cached(namespace="local-mp", key="{x}", tags=("t:{x}",), ttl=600)
    async def get(x: int) -> int:
        return int(await client.get(SOURCE) or 0)

    return get


def _spawn(redis_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), redis_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    return (await asyncio.to_thread(p.stdout.readline)).strip()


@pytest.mark.slow
async def test_invalidations_from_a_process_without_the_tier_reach_four_processes(
    redis_client: Redis, redis_url: str
) -> None:
    await redis_client.set(SOURCE, 0)
    procs = [_spawn(redis_url) for _ in range(4)]
    invalidator = Cache()  # no local tier: it must still tell the processes that have one
    invalidator.bind(redis_client)
    get = _functions(invalidator, redis_client)
    invalidations = [
        lambda: get.invalidate(0),
        lambda: invalidator.invalidate_tags("t:0"),
        lambda: invalidator.invalidate_namespace("local-mp"),
    ]
    try:
        for p in procs:
            assert await _line(p) == "ready"
        for n, invalidate in enumerate(invalidations, start=1):
            await redis_client.set(SOURCE, n)
            await invalidate()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"expect {n}\n")
                p.stdin.flush()
            # Each process reads n within 5 s (not after its 10-minute local TTL).
            assert [await _line(p) for p in procs] == [f"seen {n}"] * 4
        stats = []
        for p in procs:
            out, _ = await asyncio.to_thread(p.communicate, timeout=30)
            stats.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        await invalidator.aclose()
    assert all(s["local_hits"] > 0 for s in stats)  # they served from the tier meanwhile
    # (Computations are not counted here: a process stalled between its miss and the lock
    # on a loaded machine may compute once more; single flight is tested in test_stampede.)


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    async with asyncio.timeout(5):  # a condition that never comes fails here
        while not await condition():
            await asyncio.sleep(0.005)


async def test_a_dropped_subscription_loses_no_invalidation(
    redis_client: Redis, proxied: tuple[FaultProxy, Redis]
) -> None:
    # The tier's pub/sub connection is reset by the proxy and an invalidation is published
    # while nobody in the reader's process listens. Once the reader notices the drop, its
    # tier (flushed) never serves the old value again; it listens again after reconnecting.
    # Before the flush, the old value stayed for the whole local TTL (here 10 minutes).
    proxy, through_proxy = proxied
    await redis_client.set(SOURCE, 1)
    reader = Cache(local_tier=True, local_ttl=600, breaker_cooldown=30)
    reader.bind(through_proxy)
    writer = Cache()
    writer.bind(redis_client)
    read, write = _functions(reader, through_proxy), _functions(writer, redis_client)

    async def subscribers() -> int:
        return int((await redis_client.pubsub_numsub("sight:local"))[0][1])

    def local_hits() -> int:
        stats = reader.stats()
        return stats["local-mp"].local_hits if "local-mp" in stats else 0

    async def served_locally() -> bool:
        before = local_hits()
        assert await read(0) == 1
        return local_hits() > before

    await _until(served_locally, "the tier listens and holds the entry")
    assert await subscribers() == 1
    # Which proxied connection is the subscription? The one a published message crosses.
    before = {c.number: c.bytes_downstream for c in proxy.connections()}
    await redis_client.publish("sight:local", b"sight:v1:local-mp:no-such-entry")
    crossed: list[int] = []

    async def delivered() -> bool:
        crossed[:] = [
            c.number for c in proxy.connections() if c.bytes_downstream > before[c.number]
        ]
        return bool(crossed)

    await _until(delivered, "the probe message crosses the proxy")
    assert len(crossed) == 1, crossed
    proxy.drop(lambda c: c.number == crossed[0])

    async def gone() -> bool:
        return await subscribers() == 0

    await _until(gone, "Redis sees the subscription gone")  # so the next message is lost
    await redis_client.set(SOURCE, 2)
    await write.invalidate(0)
    values: list[int] = []

    async def fresh_and_listening() -> bool:
        values.append(await read(0))
        return values[-1] == 2 and await subscribers() == 1

    await _until(fresh_and_listening, "fresh, then subscribed again")
    hits = local_hits()
    values += [await read(0) for _ in range(20)]
    first_fresh = values.index(2)
    assert set(values[first_fresh:]) == {2}, values  # never the old value once flushed
    assert local_hits() > hits  # the tier is in use again
    # Listening again: the next invalidation reaches the tier.
    await redis_client.set(SOURCE, 3)
    await write.invalidate(0)

    async def newest() -> bool:
        return await read(0) == 3

    await _until(newest, "the next invalidation reaches the tier")
    await reader.aclose()
    await writer.aclose()


@pytest.mark.parametrize("path", ["hit", "miss"])
@pytest.mark.standalone_only  # one server's raw keys or channels
async def test_a_read_racing_an_invalidation_does_not_refill_the_tier(
    redis_client: Redis, path: str
) -> None:
    # A read's reply (the entry's old value, or the commit of a computation) crosses the
    # invalidation's message: the message is applied first (nothing to drop yet), then the
    # read stored the old value in the tier, stale for the whole local TTL.
    await redis_client.set(SOURCE, 1)
    reader = Cache(local_tier=True, local_ttl=600)
    reader.bind(redis_client)
    writer = Cache()
    writer.bind(redis_client)
    read, write = _functions(reader, redis_client), _functions(writer, redis_client)
    await write(0)  # the entry, in Redis only

    async def listening() -> bool:
        await read(0)
        return int((await redis_client.pubsub_numsub("sight:local"))[0][1]) == 1

    await _until(listening, "the tier listens")
    assert reader._local is not None
    reader._local.clear()  # the next read goes to Redis
    if path == "miss":
        await redis_client.delete(*await redis_client.keys("sight:v1:local-mp:*"))
    backend: Any = reader.backend
    name = "get" if path == "hit" else "commit"
    original = getattr(backend, name)

    async def crossed(*args: Any, **kwargs: Any) -> Any:
        reply = await original(*args, **kwargs)  # read (or committed) value 1
        await redis_client.set(SOURCE, 2)
        await write.invalidate(0)  # its message reaches the reader before this reply
        await asyncio.sleep(0.2)
        return reply

    setattr(backend, name, crossed)
    assert await read(0) == 1  # read before the invalidation: fine to return
    setattr(backend, name, original)
    assert await read(0) == 2  # not the old value from the tier
    await reader.aclose()
    await writer.aclose()
