"""Invalidating a 1M-member tag and a 1.2M-key namespace while reads go on (issue 11, item 14).

``uv run python -m benchmarks.cache_invalidation [--members N] [--keys N]``.
Starts its own Redis with ``sight_core.testing.servers.start_redis(with_bolt=False)`` and stops
it at the end.

Each case builds the data server-side (a Lua loop copying one real entry written by the
cache, 25,000 per script), then runs ``cache.invalidate_tags`` (or ``invalidate_namespace``)
with the default ``Cache`` (250 ms per operation, 1 s per maintenance step) while one task
reads members of the same namespace in a loop. It reports the time to finish, the entries
deleted, the breaker opens (target 0), the reads served during the invalidation and the
read errors. Times are wall-clock on this machine (2 shared cores): a figure, not a ratio.

A last row measures what making entries dead at the fence (before they are unlinked) would
cost every hit: the ``MGET`` of the entry and its marks that such a read needs, against the
``GET`` a hit is today, as a ratio of the client's CPU time, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from sight_core.cache import Cache

# KEYS[1] tag index ('' = none). ARGV: entry head, first, last, raw value, ttl ms, score.
FILL = """
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local key = ARGV[1] .. i
  redis.call('SET', key, ARGV[4], 'PX', ARGV[5])
  if KEYS[1] ~= '' then redis.call('ZADD', KEYS[1], ARGV[6], key) end
end
return 1
"""


async def fill(
    client: Redis, head: str, raw: bytes, count: int, index: str = "", start: int = 1000
) -> None:
    """``count`` copies of the entry ``raw`` under ``head + n`` (n from ``start``), indexed
    under the tag index key ``index`` (if any); 25,000 per script so Redis is never blocked
    long."""
    ttl_ms = 3_600_000
    score = (await client.time())[0] * 1000 + ttl_ms
    for first in range(start, start + count, 25_000):
        last = min(first + 25_000, start + count) - 1
        await client.eval(FILL, 1, index, head, first, last, raw, ttl_ms, score)


async def _case(url: str, kind: str, count: int) -> dict[str, Any]:
    client = Redis.from_url(url)
    await client.flushdb()
    cache = Cache(prefix="inv")
    cache.bind(client)

    @cache.cached(namespace="big", ttl=3600, key="{i}", tags=("team:{team}",))
    async def member(i: int, team: str = "t1") -> dict[str, int]:
        return {"i": 0}

    try:
        await member(0)
        raw = await client.get(member.key(0))
        assert raw is not None
        index = cache.keyspace.tag("team:t1") if kind == "tag" else ""
        built = time.perf_counter()
        await fill(client, "inv:v1:big:", raw, count - 1, index)
        built = time.perf_counter() - built
        done = asyncio.Event()
        served = 0

        async def read() -> None:
            nonlocal served
            n = 0
            while not done.is_set():
                n = (n + 7919) % count
                await member(n + 1000 if n else 0)
                served += 1
                await asyncio.sleep(0)

        reader = asyncio.ensure_future(read())
        start = time.perf_counter()
        try:
            if kind == "tag":
                deleted = await cache.invalidate_tags("team:t1")
            else:
                deleted = await cache.invalidate_namespace("big")
        finally:
            elapsed = time.perf_counter() - start
            done.set()
            await reader
        return {
            "case": f"{kind} of {count:,} entries",
            "build s": f"{built:.1f}",
            "finished in s": f"{elapsed:.1f}",
            "deleted": f"{deleted:,}",
            "breaker opens": cache._breaker.opened,
            "reads served meanwhile": served,
            "read errors": cache.stats()["big"].errors,
        }
    finally:
        await cache.aclose()
        await client.flushdb()
        await client.aclose()


async def _fenced_read_cost(url: str, rounds: int = 7, reads: int = 3000) -> dict[str, Any]:
    """What reading the fence with every hit would cost: sequential ``GET entry`` vs
    ``MGET entry namespace-mark tag-mark`` (the round trip a fence-checking hit needs),
    interleaved, the order reversed every other round; the median per-round ratio of this
    process's CPU time (the client's share of a hit; the server's is not counted)."""
    client = Redis.from_url(url)
    try:
        await client.set("inv:v1:hit:1", b"\xca\x00" + b"x" * 1000)
        await client.set("inv:fence:ns:hit", b"1712345678901234")
        mget = ("inv:v1:hit:1", "inv:fence:ns:hit", "inv:fence:tag:t1")

        async def plain() -> None:
            for _ in range(reads):
                await client.execute_command("GET", "inv:v1:hit:1")

        async def fenced() -> None:
            for _ in range(reads):
                await client.execute_command("MGET", *mget)

        ratios: list[float] = []
        for r in range(rounds):
            times: dict[str, float] = {}
            order = [("get", plain), ("mget", fenced)]
            for name, call in order if r % 2 == 0 else order[::-1]:
                start = time.process_time()  # this process's CPU: steadier than wall time
                await call()
                times[name] = time.process_time() - start
            ratios.append(times["mget"] / times["get"])
        ratios.sort()
        return {
            "case": "fence-checking hit: MGET of entry + 2 marks vs GET",
            "build s": "-",
            "finished in s": "-",
            "deleted": "-",
            "breaker opens": "-",
            "reads served meanwhile": f"client CPU ratio {ratios[len(ratios) // 2]:.2f}x "
            f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})",
            "read errors": "-",
        }
    finally:
        await client.aclose()


async def _run(members: int, keys: int) -> list[dict[str, Any]]:
    from sight_core.testing.servers import start_redis

    server = start_redis(with_bolt=False)
    try:
        return [
            await _case(server.url, "tag", members),
            await _case(server.url, "namespace", keys),
            await _fenced_read_cost(server.url),
        ]
    finally:
        server.stop()


def run(members: int = 1_000_000, keys: int = 1_200_000) -> list[dict[str, Any]]:
    """Both cases; one row each."""
    return asyncio.run(_run(members, keys))


def _print(rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_200_000)
    options = parser.parse_args()
    _print(run(options.members, options.keys))
