"""PostgreSQL outages through the fault proxy: fail within the preset's deadline, and say so.

Issue 12 item 8: a black-holed server fails a checkout within ``connect_timeout`` (api: 5 s),
server-side timeouts are set per preset, and outages raise ``ServiceUnavailableError`` naming
the host, never the password.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sight_core.db import create_engine, create_sessionmaker, session_scope
from sight_core.errors import ServiceUnavailableError
from sight_core.settings import DatabaseSettings
from sight_core.testing import FaultProxy

MakeProxy = Callable[[int | str], FaultProxy]
_PASSWORD = "s3cret-pw"


def _with_password(url: str) -> str:
    """The test server trusts every local user: a password in the URL is sent but never needed."""
    scheme, _, rest = url.partition("://")
    userinfo, _, hostpart = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] if userinfo else "postgres"
    return f"{scheme}://{user}:{_PASSWORD}@{hostpart}"


def _engine_behind(proxy: FaultProxy, db_url: str, **fields: Any) -> AsyncEngine:
    """An engine whose URL (with a password) points at ``proxy``; ``fields`` override the preset."""
    fields.setdefault("preset", "test")
    settings = DatabaseSettings(url=proxy.url_for(_with_password(db_url)), **fields)
    return create_engine(settings, check_budget=False)


def _assert_names_host_not_password(exc: BaseException, proxy: FaultProxy) -> None:
    message = str(exc)
    assert f"127.0.0.1:{proxy.port}" in message
    assert _PASSWORD not in message
    assert _PASSWORD not in repr(exc.__cause__)


async def test_server_side_timeouts_reach_the_server(db_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=db_url, preset="api"), check_budget=False)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW statement_timeout")) == "30s"
            assert await conn.scalar(text("SHOW idle_in_transaction_session_timeout")) == "1min"
            with pytest.raises(Exception, match="statement timeout"):
                await conn.execute(text("SET LOCAL statement_timeout = 50"))
                await conn.execute(text("SELECT pg_sleep(2)"))
    finally:
        await engine.dispose()


async def test_black_holed_postgres_fails_a_checkout_within_the_connect_timeout(
    fault_proxy: MakeProxy, db_url: str
) -> None:
    proxy = fault_proxy(db_url)
    assert DatabaseSettings(preset="api").resolved().connect_timeout == 5.0
    engine = _engine_behind(proxy, db_url, preset="api")
    sessions = create_sessionmaker(engine)
    proxy.blackhole()
    start = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailableError, match="connect_timeout") as raised:
            async with session_scope(sessions) as session:
                await session.execute(text("SELECT 1"))
        assert time.monotonic() - start < 5.0 + 2.0  # 60 s (asyncpg's default) before
        _assert_names_host_not_password(raised.value, proxy)
    finally:
        proxy.restore()
        await engine.dispose()


async def test_refused_connect_raises_service_unavailable(
    fault_proxy: MakeProxy, db_url: str
) -> None:
    proxy = fault_proxy(db_url)
    engine = _engine_behind(proxy, db_url)
    sessions = create_sessionmaker(engine)
    proxy.refuse()
    try:
        with pytest.raises(ServiceUnavailableError, match="refused") as raised:
            async with sessions() as session:
                await session.execute(text("SELECT 1"))
        _assert_names_host_not_password(raised.value, proxy)
        assert isinstance(raised.value, ConnectionError)
        proxy.restore()
        async with sessions() as session:  # the outage is not sticky
            assert await session.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


async def test_connection_reset_mid_statement_raises_service_unavailable(
    fault_proxy: MakeProxy, db_url: str
) -> None:
    proxy = fault_proxy(db_url)
    engine = _engine_behind(proxy, db_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            assert await session.scalar(text("SELECT 1")) == 1
            sleeping = asyncio.ensure_future(session.execute(text("SELECT pg_sleep(3)")))
            await asyncio.sleep(0.3)
            assert proxy.reset() == 1
            with pytest.raises(ServiceUnavailableError, match="connection lost") as raised:
                await sleeping
            _assert_names_host_not_password(raised.value, proxy)
    finally:
        await engine.dispose()


async def test_statement_on_a_hung_server_ends_at_command_timeout(
    fault_proxy: MakeProxy, db_url: str
) -> None:
    proxy = fault_proxy(db_url)
    engine = _engine_behind(proxy, db_url, command_timeout=0.5)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
            proxy.blackhole()
            with pytest.raises(ServiceUnavailableError, match=r"no answer within 0\.5 s"):
                await conn.execute(text("SELECT 2"))
    finally:
        proxy.restore()
        await engine.dispose()


async def test_pooled_connection_to_a_hung_server_fails_at_checkout(
    fault_proxy: MakeProxy, db_url: str
) -> None:
    proxy = fault_proxy(db_url)
    engine = _engine_behind(proxy, db_url, preset="api", command_timeout=0.5, connect_timeout=0.5)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
        proxy.blackhole()  # the pooled connection's pre-ping gets no answer
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="connect_timeout"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 2"))
        assert time.monotonic() - start < 0.5 + 0.5 + 2.0  # ping deadline + connect deadline
    finally:
        proxy.restore()
        await engine.dispose()


async def test_pre_ping_replaces_a_pooled_connection_the_network_dropped(
    fault_proxy: MakeProxy, db_url: str
) -> None:
    proxy = fault_proxy(db_url)
    engine = _engine_behind(proxy, db_url, preset="api")
    assert engine.pool.size() == 5  # api preset: pre-ping on
    try:
        for _ in range(3):
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
        assert proxy.accepted == 1  # a healthy pooled connection passes the ping and is reused
        assert proxy.reset() == 1  # the pooled connection is dead; the server is fine
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 2")) == 2
        assert proxy.accepted == 2
    finally:
        await engine.dispose()
