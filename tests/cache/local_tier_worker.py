"""A process with the local tier, run by ``test_local_tier_processes.py``.

``python local_tier_worker.py URL``: holds key 0 of namespace ``local-mp`` in its local tier
(``local_ttl`` of 10 minutes, so only an invalidation message can drop it), prints ``ready``,
then for each line ``expect N`` on stdin polls the key every 5 ms until it reads N and prints
``seen N``, or prints ``stale V`` if it still read V after 5 s. On EOF it prints its stats as
JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sight_core.cache import Cache, create_redis_client
from sight_core.settings import RedisSettings

SOURCE = "test:local-source"


async def main() -> None:
    url = sys.argv[1]
    client = create_redis_client(RedisSettings(url=url, preset="test"))
    await client.ping()
    cache = Cache(local_tier=True, local_ttl=600)
    cache.bind(client)

    @cache.cached(namespace="local-mp", key="{x}", tags=("t:{x}",), ttl=600)
    async def get(x: int) -> int:
        return int(await client.get(SOURCE) or 0)

    async with asyncio.timeout(10):  # until the tier listens and holds the entry
        while "local-mp" not in cache.stats() or not cache.stats()["local-mp"].local_hits:
            await get(0)
            await asyncio.sleep(0.01)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        want = int(line.split()[1])
        value = await get(0)
        try:
            async with asyncio.timeout(5):
                while value != want:
                    await asyncio.sleep(0.005)
                    value = await get(0)
            print(f"seen {want}", flush=True)
        except TimeoutError:
            print(f"stale {value}", flush=True)
    print(json.dumps(cache.stats()["local-mp"].as_dict()), flush=True)
    await cache.aclose()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
