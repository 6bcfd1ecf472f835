"""``create_redis_client``: the platform's one way to build a Redis client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
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


class _SentinelManagedRedis(Redis):
    """The primary's client in ``mode="sentinel"``: ``aclose`` also closes the connections to
    the sentinels, which redis-py's ``Sentinel`` keeps apart from the primary's pool."""

    _sentinel: Any = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()


def create_redis_client(
    settings: RedisSettings, *, decode_responses: bool = False
) -> Redis | RedisCluster:
    """A Redis client for ``settings.mode``, every connection bounded by the settings' preset.

    - ``standalone``: a ``redis.asyncio.Redis`` on a ``BlockingConnectionPool``.
    - ``sentinel``: a ``redis.asyncio.Redis`` whose pool asks the ``sentinels`` where the
      primary ``sentinel_master`` is on every new connection, so a failover is followed
      without a restart (connections to the old primary are dropped on their first error).
      Its pool does not block at ``max_connections``: it raises there (redis-py has no
      blocking Sentinel pool).
    - ``cluster``: a ``redis.asyncio.RedisCluster`` from ``url`` (and ``cluster_nodes``),
      ``max_connections`` per node; it follows ``MOVED``/``ASK`` and re-reads the slot map
      after a failover.

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
    if settings.mode == "cluster":
        return _cluster_client(settings, decode_responses)
    if settings.mode == "sentinel":
        return _sentinel_client(settings, decode_responses)
    pool = BlockingConnectionPool.from_url(
        settings.url.get_secret_value(),
        timeout=settings.resolved().pool_timeout,
        redis_connect_func=_handshake_without_health_check,
        decode_responses=decode_responses,
        **_connection_options(settings),
    )
    return Redis.from_pool(pool)


def _connection_options(settings: RedisSettings) -> dict[str, Any]:
    """Timeouts, retries, keepalive and TLS options shared by every mode."""
    pool_config = settings.resolved()
    retry = Retry(
        ExponentialWithJitterBackoff(cap=pool_config.backoff_cap, base=pool_config.backoff_base),
        pool_config.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    options: dict[str, Any] = {
        "max_connections": pool_config.max_connections,
        "socket_connect_timeout": pool_config.socket_connect_timeout,
        "socket_timeout": pool_config.socket_timeout,
        "health_check_interval": pool_config.health_check_interval,
        "retry": retry,
        **settings.tls_options(),
    }
    if settings.url.scheme != "unix":
        options["socket_keepalive"] = pool_config.socket_keepalive
    return options


def _sentinel_client(settings: RedisSettings, decode_responses: bool) -> Redis:
    from redis.asyncio.sentinel import Sentinel
    from redis.connection import parse_url

    url: dict[str, Any] = parse_url(settings.url.get_secret_value())  # type: ignore[no-untyped-call]
    options = _connection_options(settings)
    data = {k: url[k] for k in ("db", "username", "password") if url.get(k) is not None}
    if settings.url.scheme == "rediss":
        data["ssl"] = True
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}
    if settings.sentinel_password is not None:
        sentinel_options["password"] = settings.sentinel_password.get_secret_value()
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.addresses("sentinels"), sentinel_kwargs=sentinel_options, **options, **data
    )
    assert settings.sentinel_master is not None  # checked at load
    client: _SentinelManagedRedis = sentinel.master_for(
        settings.sentinel_master,
        redis_class=_SentinelManagedRedis,
        decode_responses=decode_responses,
    )
    client._sentinel = sentinel
    return client


def _cluster_client(settings: RedisSettings, decode_responses: bool) -> RedisCluster:
    from redis.connection import parse_url

    url: dict[str, Any] = parse_url(settings.url.get_secret_value())  # type: ignore[no-untyped-call]
    options = _connection_options(settings)
    credentials = {k: url[k] for k in ("username", "password") if url.get(k) is not None}
    if settings.url.scheme == "rediss":
        options["ssl"] = True
    nodes = [ClusterNode(host, port) for host, port in settings.addresses("cluster_nodes")]
    return RedisCluster(
        host=url.get("host", "127.0.0.1"),
        port=url.get("port", 6379),
        startup_nodes=nodes or None,
        decode_responses=decode_responses,
        **credentials,
        **options,
    )
