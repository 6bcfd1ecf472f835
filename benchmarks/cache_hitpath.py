"""What a cache hit costs this process: CPU time per sequential 1 KB hit, ours vs raw redis-py.

``uv run --group bench python -m benchmarks.cache_hitpath [--quick]``.
Starts its own Redis with ``sight_core.testing.servers.start_redis(with_bolt=False)``.

``benchmarks/cache.py`` compares wall-clock times, which on a loaded machine swing by 2x from
one round to the next. This one counts the CPU time of the benchmark process only
(``time.process_time``: the Redis server's work and the time spent waiting for it are left
out), so it isolates what the library adds to a hit. Same payload shapes as
``benchmarks/cache.py`` (flat dict of strings; dict holding 16 small dicts, both ``-> dict``),
same client for every implementation (``create_redis_client``, the ``api`` preset), rounds
interleaved with the order reversed every other round:

- ``raw+json``: ``json.loads(await client.get(key))``, the target's reference;
- ``raw+orjson``: ``orjson.loads(await client.get(key))``, the same GET with the parser the
  cache uses for ``-> dict``: ours minus this is the cache's own cost per hit;
- ``ours``: ``@cache.cached(namespace=..., key="{i}")`` returning the payload;
- ``plain client``: ``raw+json`` on ``redis.asyncio.Redis.from_url`` (no pool limit, no
  socket timeouts), to show what the platform client's settings cost each GET.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from benchmarks.cache import NESTED, PAYLOAD

KEYS = 100


def _span(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} us ({min(values):.1f}-{max(values):.1f})"


async def _cpu_per_call(fn: Callable[[int], Awaitable[Any]], n: int) -> float:
    """Microseconds of this process's CPU time per call, over ``n`` sequential calls."""
    start = time.process_time()
    for j in range(n):
        await fn(j % KEYS)
    return (time.process_time() - start) / n * 1e6


async def _run(quick: bool) -> list[dict[str, Any]]:
    from redis.asyncio import Redis

    from sight_core.cache import Cache, create_redis_client
    from sight_core.settings import RedisSettings
    from sight_core.testing.servers import start_redis

    server = start_redis(with_bolt=False)
    rounds, n = (7, 1000) if quick else (21, 2000)
    rows: list[dict[str, Any]] = []
    try:
        client = create_redis_client(
            RedisSettings(url=server.url, preset="api", max_connections=100, pool_timeout=10)
        )
        plain = Redis.from_url(server.url)
        cache = Cache(prefix="hitpath", op_timeout=2.0)  # no fail-open timeout in the figures
        cache.bind(client)
        for shape, payload in (("flat", PAYLOAD), ("nested", NESTED)):

            @cache.cached(namespace=f"hitpath-{shape}", ttl=3600, key="{i}")
            async def ours(i: int, payload: dict[str, Any] = payload) -> dict[str, Any]:
                return payload

            keys = [f"raw:{shape}:{i}" for i in range(KEYS)]
            for key in keys:
                await client.set(key, json.dumps(payload))

            async def raw_json(i: int, keys: list[str] = keys) -> Any:
                return json.loads(await client.get(keys[i]))

            async def raw_orjson(i: int, keys: list[str] = keys) -> Any:
                return orjson.loads(await client.get(keys[i]))

            async def plain_json(i: int, keys: list[str] = keys) -> Any:
                return json.loads(await plain.get(keys[i]))

            impls: dict[str, Callable[[int], Awaitable[Any]]] = {
                "raw+json": raw_json,
                "raw+orjson": raw_orjson,
                "ours": ours,
                "plain client": plain_json,
            }
            for fn in impls.values():  # warm: entries written, connections open
                for i in range(KEYS):
                    assert await fn(i) == payload
            times: dict[str, list[float]] = {name: [] for name in impls}
            names = list(impls)
            for r in range(rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    times[name].append(await _cpu_per_call(impls[name], n))
            ratios = [a / b for a, b in zip(times["ours"], times["raw+json"], strict=True)]
            own = [a - b for a, b in zip(times["ours"], times["raw+orjson"], strict=True)]
            client_cost = [
                a / b for a, b in zip(times["raw+json"], times["plain client"], strict=True)
            ]
            rows.append(
                {
                    "case": f"1 KB {shape}, sequential hits, CPU per call",
                    "ours": _span(times["ours"]),
                    "reference": "raw+json: " + _span(times["raw+json"]),
                    "ratio": (
                        f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                    ),
                    "target": "<= 1.15x CPU time",
                    "verdict": "PASS" if statistics.median(ratios) <= 1.15 else "FAIL",
                    "ours - raw+orjson": _span(own),
                    "client / plain client": (
                        f"{statistics.median(client_cost):.2f}x "
                        f"({min(client_cost):.2f}-{max(client_cost):.2f})"
                    ),
                }
            )
        errors = sum(s.errors for s in cache.stats().values())
        assert errors == 0, f"{errors} backend errors: the figures would include fail-opens"
        await cache.aclose()
        await client.aclose()
        await plain.aclose()
    finally:
        server.stop()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows with ``case, ours, reference, ratio, target, verdict`` (CPU per call of ours and
    of raw GET + ``json.loads``), plus the cache's own cost (ours minus a raw GET parsed with
    orjson) and the platform client's (vs a plain client)."""
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
