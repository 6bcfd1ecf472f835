"""A process taking part in a cross-process stampede test (run by ``test_stampede.py``).

``python stampede_worker.py URL KEY CALLERS COMPUTE_SECONDS LOCK_TTL [hold|fail]``: connects,
prints ``ready``, waits for a line on stdin, then runs CALLERS concurrent calls of one cached
function on KEY and prints one JSON line with its stats and caller latencies. With ``hold``
it computes for a minute instead (to be killed while holding the lock); with ``fail`` the
computation raises after COMPUTE_SECONDS (``errors`` counts the callers that saw it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from sight_core.cache import Cache, create_redis_client
from sight_core.settings import RedisSettings


async def main() -> None:
    url, key, callers, compute, lock_ttl = sys.argv[1:6]
    hold = sys.argv[6:] == ["hold"]
    fail = sys.argv[6:] == ["fail"]
    client = create_redis_client(RedisSettings(url=url, preset="test"))
    await client.ping()
    cache = Cache(lock_ttl=float(lock_ttl), op_timeout=2.0)
    cache.bind(client)

    @cache.cached(namespace="stampede", key="{item}", ttl=60)
    async def expensive(item: str) -> dict[str, str]:
        await asyncio.sleep(60.0 if hold else float(compute))
        if fail:
            raise RuntimeError("the model said no")
        return {"item": item, "by": str(id(cache))}

    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def one() -> tuple[float, dict[str, str] | None]:
        start = time.perf_counter()
        try:
            value: dict[str, str] | None = await expensive(key)
        except RuntimeError:
            value = None
        return time.perf_counter() - start, value

    results = await asyncio.gather(*(one() for _ in range(int(callers))))
    stats = cache.stats()["stampede"].as_dict()
    values = {json.dumps(v, sort_keys=True) for _, v in results if v is not None}
    errors = sum(v is None for _, v in results)
    latencies = [t for t, _ in results]
    print(
        json.dumps(
            {"stats": stats, "latencies": latencies, "values": len(values), "errors": errors}
        )
    )
    await cache.aclose()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
