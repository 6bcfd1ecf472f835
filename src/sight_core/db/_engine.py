"""``create_engine``: an ``AsyncEngine`` from :class:`DatabaseSettings` and its pool preset."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sight_core.settings import DatabasePool, DatabaseSettings

from ._outage import install_bounded_pre_ping, install_outage_translation

__all__ = [
    "ConnectionBudget",
    "ConnectionBudgetWarning",
    "check_connection_budget",
    "create_engine",
    "engine_options",
]


class ConnectionBudgetWarning(RuntimeWarning):
    """The pools of all workers may open more connections than the server accepts."""


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """How many connections the pools may open versus what the server accepts.

    ``needed`` is ``(pool_size + max_overflow) * workers``; ``available`` is the server's
    ``max_connections`` minus the slots reserved for superusers and ``pg_use_reserved_connections``.
    """

    needed: int
    available: int
    max_connections: int
    reserved: int

    @property
    def exceeded(self) -> bool:
        """Whether the pools may need more connections than the server accepts."""
        return self.needed > self.available

    def message(self) -> str:
        """The warning text: the numbers and what to change."""
        return (
            f"pool max x workers = {self.needed} connections exceeds the server's "
            f"{self.available} usable connections (max_connections={self.max_connections} "
            f"minus {self.reserved} reserved); lower SIGHT_DATABASE__POOL_SIZE / MAX_OVERFLOW, "
            "use fewer workers, or put PgBouncer in front (preset 'pgbouncer')"
        )


def _unique_statement_name() -> str:
    # PgBouncer in transaction mode may hand each transaction another server connection:
    # asyncpg's default sequential names would collide with statements left there by others.
    return f"__sight_{uuid.uuid4().hex}__"


def _async_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def engine_options(settings: DatabaseSettings) -> dict[str, Any]:
    """The keyword arguments :func:`create_engine` passes to ``create_async_engine``.

    Only what the preset means to set is set: pool sizing, recycle, pre-ping, LIFO, and asyncpg's
    connect ``timeout``, ``command_timeout``, statement caches and server settings
    (``application_name``, and ``statement_timeout`` / ``idle_in_transaction_session_timeout``
    in milliseconds unless the preset gives 0). PgBouncer mode turns off both
    prepared-statement caches (asyncpg's and SQLAlchemy's) and names statements uniquely.
    """
    pool: DatabasePool = settings.resolved()
    server_settings = {"application_name": settings.application_name}
    for name in ("statement_timeout", "idle_in_transaction_session_timeout"):
        seconds = getattr(pool, name)
        if seconds:
            server_settings[name] = str(round(seconds * 1000))
    connect_args: dict[str, Any] = {
        "server_settings": server_settings,
        "command_timeout": pool.command_timeout,
        "timeout": pool.connect_timeout,
    }
    if pool.statement_cache_size is not None:
        connect_args["statement_cache_size"] = pool.statement_cache_size
    if pool.pgbouncer:
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    return {
        "pool_size": pool.pool_size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.pool_timeout,
        "pool_recycle": pool.pool_recycle,
        "pool_pre_ping": pool.pool_pre_ping,
        "pool_use_lifo": pool.pool_use_lifo,
        "echo": settings.echo,
        "connect_args": connect_args,
    }


def create_engine(
    settings: DatabaseSettings, *, check_budget: bool = True, **overrides: Any
) -> AsyncEngine:
    """An ``AsyncEngine`` (asyncpg) configured by ``settings`` and its resolved pool preset.

    ``overrides`` are passed to ``create_async_engine`` last (e.g. ``poolclass=NullPool``).
    With ``check_budget`` (default), the first connection compares the pools of all
    ``settings.workers`` with the server's ``max_connections`` and emits a
    :class:`ConnectionBudgetWarning` when they may exceed it (skipped in PgBouncer mode, where
    the bouncer owns the server connections). Creating the engine opens no connection.

    Outages raise :class:`~sight_core.errors.ServiceUnavailableError` naming the host (never
    the password): a connect refused, reset or slower than the preset's ``connect_timeout``
    (api: 5 s), and a statement whose connection is lost or that outlives ``command_timeout``.
    ``pool_pre_ping`` is done by :func:`install_bounded_pre_ping`: a pooled connection that
    does not answer within ``connect_timeout`` is replaced, so a checkout against a hung server
    fails within about twice ``connect_timeout``.
    """
    options = engine_options(settings)
    options.update(overrides)
    pre_ping = options.pop("pool_pre_ping", False)
    url = _async_url(settings.url.get_secret_value())
    engine = create_async_engine(url, **options)
    pool = settings.resolved()
    install_outage_translation(engine, url, pool.connect_timeout, pool.command_timeout)
    if pre_ping:
        install_bounded_pre_ping(engine, min(pool.connect_timeout, pool.command_timeout))
    if check_budget and not pool.pgbouncer:
        needed = (pool.pool_size + pool.max_overflow) * settings.workers

        def first_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(_BUDGET_SQL)
                row = cursor.fetchone()
            finally:
                cursor.close()
            _warn_if_exceeded(_budget(needed, row))

        event.listen(engine.sync_engine.pool, "first_connect", first_connect)
    return engine


_BUDGET_SQL = (
    "SELECT current_setting('max_connections')::int, "
    "current_setting('superuser_reserved_connections')::int + "
    "coalesce(current_setting('reserved_connections', true)::int, 0)"
)


def _budget(needed: int, row: Any) -> ConnectionBudget:
    max_connections, reserved = int(row[0]), int(row[1])
    return ConnectionBudget(needed, max_connections - reserved, max_connections, reserved)


def _warn_if_exceeded(budget: ConnectionBudget) -> None:
    if budget.exceeded:
        warnings.warn(budget.message(), ConnectionBudgetWarning, stacklevel=2)


async def check_connection_budget(
    engine: AsyncEngine, settings: DatabaseSettings
) -> ConnectionBudget:
    """Query the server now and return the :class:`ConnectionBudget`; warns when exceeded.

    Costs one connection checkout and one query. Use it in a health check or ``doctor``.
    """
    pool = settings.resolved()
    needed = (pool.pool_size + pool.max_overflow) * settings.workers
    async with engine.connect() as conn:
        row = (await conn.execute(text(_BUDGET_SQL))).one()
    budget = _budget(needed, row)
    _warn_if_exceeded(budget)
    return budget
