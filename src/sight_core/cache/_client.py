"""``create_redis_client``: the platform's one way to build a Redis client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from sight_core.settings import RedisSettings

__all__ = ["create_redis_client"]


def create_redis_client(settings: RedisSettings) -> Redis:
    """A ``redis.asyncio.Redis`` on a ``BlockingConnectionPool`` sized by the settings' preset.

    - Callers wait up to ``pool_timeout`` for a connection instead of opening more than
      ``max_connections`` (a plain pool raises at the limit; an unbounded one floods Redis).
    - ``socket_connect_timeout``/``socket_timeout`` bound every connect and read;
      ``health_check_interval`` pings idle connections before reuse.
    - ``retries`` retries of connection errors and timeouts with jittered exponential
      backoff capped at 100 ms, instead of redis-py's defaults (many retries on long
      timeouts: close to a minute per call against a black-holed server).
    - Responses stay ``bytes`` (``decode_responses=False``), as :class:`Cache` needs.

    Nothing connects until the first command. Close it with ``await client.aclose()``.
    """
    pool_config = settings.resolved()
    retry = Retry(
        ExponentialWithJitterBackoff(cap=0.1, base=0.01),
        pool_config.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    pool = BlockingConnectionPool.from_url(
        settings.url.get_secret_value(),
        max_connections=pool_config.max_connections,
        timeout=pool_config.pool_timeout,
        socket_connect_timeout=pool_config.socket_connect_timeout,
        socket_timeout=pool_config.socket_timeout,
        health_check_interval=pool_config.health_check_interval,
        retry=retry,
        decode_responses=False,
    )
    return Redis.from_pool(pool)
