"""Fixtures for the cache tests: a bound Cache on the real Redis and a command counter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.testing import FaultProxy
from sight_core.testing.servers import EmbeddedServer, start_redis

# Commands the tests themselves send to read or reset the counters.
_OWN = frozenset({"info", "config|resetstat", "flushall", "flushdb"})


class CommandCounter:
    """Counts commands the server executed (``INFO commandstats``, Lua internals included)."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def reset(self) -> None:
        await self.client.config_resetstat()

    async def counts(self) -> dict[str, int]:
        stats = await self.client.info("commandstats")
        out: dict[str, int] = {}
        for name, row in stats.items():
            command = name.removeprefix("cmdstat_")
            if command not in _OWN:
                out[command] = int(row["calls"])
        return out

    async def total(self, *, setup: bool = False) -> int:
        """Commands since ``reset``; connection set-up (``client|setinfo``) only if asked."""
        counts = await self.counts()
        return sum(n for c, n in counts.items() if setup or not c.startswith("client|"))


@pytest.fixture
async def commands(redis_client: Redis) -> CommandCounter:
    counter = CommandCounter(redis_client)
    await counter.reset()
    return counter


@pytest.fixture
async def cache(redis_client: Redis) -> AsyncIterator[Cache]:
    c = Cache(prefix="sight", lock_ttl=2.0, op_timeout=1.0)
    c.bind(redis_client)
    yield c
    await c.aclose()


@pytest.fixture
async def proxied(
    fault_proxy: Callable[[int | str], FaultProxy], redis_url: str
) -> AsyncIterator[tuple[FaultProxy, Redis]]:
    """A client of the test Redis through a :class:`FaultProxy` (healthy until told)."""
    proxy = fault_proxy(redis_url)
    client = Redis.from_url(proxy.url_for(redis_url), socket_timeout=5, socket_connect_timeout=2)
    try:
        yield proxy, client
    finally:
        proxy.restore()
        await client.aclose()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedServer]:
    """A Redis of this test's own (to stop, restart or reconfigure), stopped at the end."""
    server = start_redis(with_bolt=False)
    try:
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Command counts are one server's: tests that take ``commands`` are standalone only."""
    for item in items:
        if "commands" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.standalone_only)
