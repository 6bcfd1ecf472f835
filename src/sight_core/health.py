"""Service health checks: used by ``sight-core doctor`` and health endpoints.

Each check connects with a short deadline, measures the round trip and reads the server
version. A check never raises: failures come back as a :class:`CheckResult` with the error
type and a message that holds no secret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sight_core.settings import SightSettings, redact_url

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CheckResult",
    "SERVICE_VARIABLES",
    "check_driver",
    "check_engine",
    "check_llm_key",
    "check_neo4j",
    "check_postgres",
    "check_redis",
    "check_redis_client",
    "run_checks",
]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one service check."""

    service: str
    target: str
    ok: bool
    latency_ms: float | None = None
    version: str | None = None
    error: str | None = None


async def _timed_check(
    service: str, target: str, probe: Callable[[], Awaitable[str]], timeout: float
) -> CheckResult:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            version = await probe()
    except TimeoutError:
        return CheckResult(service, target, False, error=f"no answer within {timeout:.1f}s")
    except Exception as exc:
        message = redact_url(str(exc)) if "://" in str(exc) else str(exc)
        return CheckResult(service, target, False, error=f"{type(exc).__name__}: {message}"[:300])
    return CheckResult(service, target, True, (time.perf_counter() - start) * 1000, version)


async def check_postgres(settings: SightSettings, timeout: float = 3.0) -> CheckResult:
    """Connect with asyncpg, run ``SHOW server_version``; within ``timeout`` in all, since a
    server that stops answering is dropped at once rather than sent a graceful close."""
    import asyncpg

    raw = settings.database.url.get_secret_value()
    dsn = raw.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def probe() -> str:
        conn = await asyncpg.connect(dsn, timeout=timeout)
        try:
            version = await conn.fetchval("SHOW server_version")
        except BaseException:  # the deadline (or an error): drop the socket, no goodbye wait
            conn.terminate()
            raise
        await conn.close(timeout=timeout)
        return f"PostgreSQL {version}"

    return await _timed_check("postgres", str(settings.database.url), probe, timeout)


async def check_redis(settings: SightSettings, timeout: float = 3.0) -> CheckResult:
    """PING and read ``redis_version`` with one connection and no client retries."""
    from redis.asyncio import Redis

    async def probe() -> str:
        client = Redis.from_url(
            settings.redis.url.get_secret_value(),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry_on_timeout=False,
        )
        try:
            await client.ping()
            info = await client.info("server")
            return f"Redis {info.get('redis_version', '?')}"
        finally:
            await client.aclose()

    return await _timed_check("redis", str(settings.redis.url), probe, timeout)


async def check_neo4j(settings: SightSettings, timeout: float = 3.0) -> CheckResult:
    """Verify Bolt connectivity and read the server agent string."""
    import neo4j

    cfg = settings.neo4j
    auth = None
    if cfg.user is not None:
        password = cfg.password.get_secret_value() if cfg.password is not None else ""
        auth = (cfg.user, password)

    async def probe() -> str:
        driver = neo4j.AsyncGraphDatabase.driver(
            cfg.uri, auth=auth, connection_timeout=timeout, max_connection_pool_size=1
        )
        try:
            info = await driver.get_server_info()
            return str(info.agent)
        finally:
            await driver.close()

    return await _timed_check("neo4j", cfg.uri, probe, timeout)


SERVICE_VARIABLES: dict[str, str] = {
    "postgres": "SIGHT_DATABASE__URL",
    "redis": "SIGHT_REDIS__URL",
    "neo4j": "SIGHT_NEO4J__URI",
    "llm": "GOOGLE_API_KEY (or SIGHT_LLM__API_KEY)",
}
"""The variable that configures each checked service, named in ``doctor``'s failure lines."""


async def check_llm_key(settings: SightSettings, timeout: float = 3.0) -> CheckResult:
    """With ``provider="google"``, check that an API key is configured (no request is sent:
    the key's validity shows on the first call). The fake provider needs no key."""
    llm = settings.llm
    if llm.provider != "google":
        return CheckResult("llm", llm.provider, True, 0.0, f"{llm.provider} provider, no key")
    if llm.api_key is None or not llm.api_key.get_secret_value():
        return CheckResult("llm", "google", False, error="no API key for provider google")
    return CheckResult("llm", "google", True, 0.0, "API key set (not sent)")


async def run_checks(
    settings: SightSettings, timeout: float = 3.0, *, skip: Collection[str] = ()
) -> list[CheckResult]:
    """Run every check but those in ``skip`` (``postgres``, ``redis``, ``neo4j``, ``llm``)
    concurrently; the total time is about the slowest one.

    Raises:
        ValueError: ``skip`` names an unknown service.
    """
    checks = {
        "postgres": check_postgres,
        "redis": check_redis,
        "neo4j": check_neo4j,
        "llm": check_llm_key,
    }
    unknown = sorted(set(skip) - set(checks))
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; accepted: {', '.join(checks)}")
    chosen = [check for name, check in checks.items() if name not in skip]
    return list(await asyncio.gather(*(check(settings, timeout) for check in chosen)))


# Checks over live clients (health endpoints): they reuse the application's pools.


async def check_engine(engine: AsyncEngine, timeout: float = 1.0) -> CheckResult:
    """Check out a pooled connection of ``engine`` and run ``SHOW server_version``."""
    from sqlalchemy import text

    async def probe() -> str:
        async with engine.connect() as conn:
            return "PostgreSQL " + str(await conn.scalar(text("SHOW server_version")))

    return await _timed_check("postgres", redact_url(str(engine.url)), probe, timeout)


async def check_redis_client(client: Redis | RedisCluster, timeout: float = 1.0) -> CheckResult:
    """``PING`` through ``client``'s pool (its own retries apply, bounded by ``timeout``); a
    ``RedisCluster`` pings every primary."""
    from redis.asyncio.cluster import RedisCluster

    async def probe() -> str:
        if isinstance(client, RedisCluster):
            await client.ping(target_nodes=RedisCluster.PRIMARIES)
            return "Redis Cluster"
        await client.ping()
        return "Redis"

    if isinstance(client, RedisCluster):
        where = ",".join(node.name for node in client.startup_nodes) or "?"
        return await _timed_check("redis", f"redis-cluster://{where}", probe, timeout)
    kwargs = client.connection_pool.connection_kwargs
    target = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
    return await _timed_check("redis", target, probe, timeout)


async def check_driver(driver: Any, timeout: float = 1.0, *, target: str = "neo4j") -> CheckResult:
    """Read the server agent through a Neo4j ``AsyncDriver`` (or a wrapper with ``.driver``)."""
    raw = getattr(driver, "driver", driver)

    async def probe() -> str:
        info = await raw.get_server_info()
        return str(info.agent)

    return await _timed_check("neo4j", target, probe, timeout)
