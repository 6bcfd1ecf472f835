"""Item 7 of issue 14: serverless presets, Redis keepalive, backoff, TLS and a str client."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from redis.asyncio.connection import SSLConnection

from sight_core.cache import Cache, create_redis_client
from sight_core.errors import ConfigurationError
from sight_core.settings import (
    DATABASE_PRESETS,
    NEO4J_PRESETS,
    REDIS_PRESETS,
    RedisSettings,
    SightSettings,
)


def test_serverless_presets_hold_one_short_lived_connection() -> None:
    db = DATABASE_PRESETS["serverless"]
    assert (db.pool_size, db.max_overflow) == (1, 0)
    assert 0 < db.pool_recycle <= 300
    assert db.pool_pre_ping
    assert REDIS_PRESETS["serverless"].max_connections <= 4
    assert NEO4J_PRESETS["serverless"].max_connection_lifetime <= 300


async def test_serverless_engine_serialises_on_one_connection(postgres_url: str) -> None:
    from sqlalchemy import text

    from sight_core.db import create_engine

    settings = SightSettings(database={"url": postgres_url, "preset": "serverless"})
    engine = create_engine(settings.database)

    async def backend_pid() -> int:
        async with engine.connect() as conn:
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.05)  # hold it, so the others must wait for it
            return int(pid)

    try:
        pids = await asyncio.gather(*(backend_pid() for _ in range(5)))
        assert len(set(pids)) == 1  # five callers, one server connection
        assert engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


async def test_keepalive_and_backoff_reach_the_client(redis_url: str) -> None:
    settings = RedisSettings(url=redis_url, preset="serverless", backoff_base=0.02, backoff_cap=0.5)
    pool = settings.resolved()
    assert (pool.socket_keepalive, pool.backoff_base, pool.backoff_cap) == (True, 0.02, 0.5)
    client = create_redis_client(settings)
    try:
        assert client.connection_pool.connection_kwargs["socket_keepalive"] is True
        assert await client.ping()
    finally:
        await client.aclose()
    off = create_redis_client(RedisSettings(url=redis_url, socket_keepalive=False))
    assert off.connection_pool.connection_kwargs["socket_keepalive"] is False
    await off.aclose()


def _closing_server() -> tuple[int, list[int], threading.Event]:
    """A TCP server that accepts and closes at once; counts connection attempts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                accepted.append(1)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], accepted, stop


@pytest.mark.parametrize("retries", [0, 2])
async def test_retries_setting_bounds_the_reconnects(retries: int) -> None:
    """A server that accepts and drops every connection is tried ``retries + 1`` times per
    command (redis-py's health-check PING inside the handshake used to square it)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    port, accepted, stop = _closing_server()
    settings = RedisSettings(url=f"redis://127.0.0.1:{port}/0", retries=retries, backoff_cap=0.01)
    client = create_redis_client(settings)
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
        stop.set()
    assert len(accepted) == retries + 1


def test_tls_ca_settings_make_an_ssl_pool() -> None:
    settings = SightSettings(
        redis={
            "url": "rediss://default:pw@example.upstash.io:6379/0",
            "ssl_ca_certs": "/etc/ssl/upstash-ca.pem",
            "ssl_cert_reqs": "required",
        }
    )
    client = create_redis_client(settings.redis)
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is SSLConnection
    assert kwargs["ssl_ca_certs"] == "/etc/ssl/upstash-ca.pem"
    assert kwargs["ssl_cert_reqs"] == "required"


def test_tls_settings_without_rediss_are_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        SightSettings(redis={"url": "redis://cache:6379/0", "ssl_ca_certs": "/ca.pem"})
    assert "ssl_ca_certs apply to TLS connections only; use a rediss:// URL" in str(info.value)


async def test_str_client_from_the_same_settings(redis_url: str, redis_client: object) -> None:
    settings = RedisSettings(url=redis_url)
    text_client = create_redis_client(settings, decode_responses=True)
    cache_client = create_redis_client(settings)
    try:
        await text_client.set("flag", "on")
        assert await text_client.get("flag") == "on"  # str
        assert await cache_client.get("flag") == b"on"  # bytes, as the cache needs
        with pytest.raises(ConfigurationError, match="decode_responses=False"):
            Cache(prefix="t").bind(text_client)
    finally:
        await text_client.aclose()
        await cache_client.aclose()
