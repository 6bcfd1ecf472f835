"""``create_redis_client``: the platform's one way to build a Redis client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from sight_core.settings import RedisSettings

__all__ = ["create_redis_client"]


async def _handshake_without_health_check(connection: Any) -> None:
    """The connect handshake (HELLO/AUTH, SELECT) without a health-check PING.

    redis-py sends the RESP3 ``HELLO`` with a health check whose PING is retried, reconnecting,
    by the same ``Retry`` that already wraps the connect: a server that accepts and then drops
    connections saw ``(retries + 1) ** 2`` connects per command. A socket that just connected
    needs no PING, and without it ``retries`` bounds the connects to ``retries + 1``.
    """
    await connection.on_connect_check_health(check_health=False)


def create_redis_client(settings: RedisSettings, *, decode_responses: bool = False) -> Redis:
    """A ``redis.asyncio.Redis`` on a ``BlockingConnectionPool`` sized by the settings' preset.

    - Callers wait up to ``pool_timeout`` for a connection instead of opening more than
      ``max_connections`` (a plain pool raises at the limit; an unbounded one floods Redis).
    - ``socket_connect_timeout``/``socket_timeout`` bound every connect and read;
      ``health_check_interval`` pings idle connections before reuse.
    - ``retries`` retries of connection errors and timeouts with jittered exponential
      backoff from ``backoff_base`` capped at ``backoff_cap`` (10 ms .. 100 ms by default),
      instead of redis-py's defaults (many retries on long timeouts: close to a minute per
      call against a black-holed server). A command against a server that refuses or drops
      connections tries at most ``retries + 1`` connections.
    - TCP keepalive (``socket_keepalive``) and, for ``rediss://``, the ``ssl_*`` settings
      (CA bundle or PEM text, certificate requirement, hostname check).
    - Responses stay ``bytes`` (``decode_responses=False``), as :class:`Cache` needs. For
      other uses that want ``str`` (queues, flags, rate counters), build a second client from
      the same settings with ``decode_responses=True``: it has its own pool of the same size,
      and :meth:`Cache.bind` refuses it.

    Nothing connects until the first command. Close it with ``await client.aclose()``.
    """
    pool_config = settings.resolved()
    retry = Retry(
        ExponentialWithJitterBackoff(cap=pool_config.backoff_cap, base=pool_config.backoff_base),
        pool_config.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    tcp: dict[str, Any] = {}
    if settings.url.scheme != "unix":  # keepalive is a TCP option; unix sockets refuse it
        tcp["socket_keepalive"] = pool_config.socket_keepalive
    pool = BlockingConnectionPool.from_url(
        settings.url.get_secret_value(),
        max_connections=pool_config.max_connections,
        timeout=pool_config.pool_timeout,
        socket_connect_timeout=pool_config.socket_connect_timeout,
        socket_timeout=pool_config.socket_timeout,
        health_check_interval=pool_config.health_check_interval,
        **tcp,
        retry=retry,
        redis_connect_func=_handshake_without_health_check,
        decode_responses=decode_responses,
        **settings.tls_options(),
    )
    return Redis.from_pool(pool)
