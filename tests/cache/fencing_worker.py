"""A process taking part in ``test_fencing_processes.py``.

``python fencing_worker.py URL``: prints ``ready``, then for each line ``compute X`` or
``read X`` on stdin calls the cached function once on key X and prints one JSON line
``{"value": ..., "computations": n}`` (n: this process's computations so far). The
computation reads the source of truth (``test:fence-source``), then waits until
``test:fence-release`` exists. With ``compute`` it first prints ``computing`` once its
computation has read the source.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sight_core.cache import Cache, create_redis_client
from sight_core.settings import RedisSettings

SOURCE = "test:fence-source"
RELEASE = "test:fence-release"


async def main() -> None:
    client = create_redis_client(RedisSettings(url=sys.argv[1], preset="test"))
    await client.ping()
    cache = Cache(lock_ttl=10, op_timeout=2.0)
    cache.bind(client)
    announce = False

    @cache.cached(namespace="fenced", key="{x}", tags=("t:{x}",), ttl=600)
    async def get(x: int) -> int:
        nonlocal announce
        value = int(await client.get(SOURCE) or 0)
        if announce:
            announce = False
            print("computing", flush=True)
        async with asyncio.timeout(20):
            while not await client.exists(RELEASE):
                await asyncio.sleep(0.01)
        return value

    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        command, x = line.split()
        announce = command == "compute"
        value = await get(int(x))
        computations = cache.stats()["fenced"].computations
        print(json.dumps({"value": value, "computations": computations}), flush=True)
    await cache.aclose()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
