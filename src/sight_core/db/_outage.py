"""Outage errors (refused, timed out, reset) -> :class:`ServiceUnavailableError` naming the host.

Installed on every engine from :func:`~sight_core.db.create_engine` through two public
SQLAlchemy events: ``do_connect`` (a new connection: asyncpg raises ``OSError`` or
``TimeoutError`` there, which SQLAlchemy does not wrap) and ``handle_error`` (a statement on an
open connection: a disconnect or a timeout). Messages name ``host:port`` and the database,
never the user or password; the driver's error stays on ``__cause__``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from sight_core.errors import ServiceUnavailableError

__all__ = ["install_bounded_pre_ping", "install_outage_translation", "is_outage"]


def _where(url: str) -> str:
    parsed = make_url(url)
    host = parsed.host or str(parsed.query.get("host", "")) or "localhost"
    port = parsed.port or 5432
    return f"PostgreSQL at {host}:{port} (database {parsed.database!r})"


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or the driver error it wraps) means the server is unreachable."""
    import asyncpg

    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(
            seen,
            OSError
            | TimeoutError
            | asyncpg.exceptions.ConnectionDoesNotExistError
            | asyncpg.exceptions.CannotConnectNowError,
        ):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"connection lost ({type(exc).__name__})"


def install_outage_translation(
    engine: AsyncEngine, url: str, connect_timeout: float, command_timeout: float
) -> None:
    """Make outages on ``engine`` raise :class:`ServiceUnavailableError` naming the host.

    A new connection that is refused, reset or not established within ``connect_timeout``
    seconds, and a statement that loses its connection or gets no answer within
    ``command_timeout`` seconds, both raise it.
    """
    where = _where(url)

    @event.listens_for(engine.sync_engine, "do_connect")
    def connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except Exception as exc:
            if not is_outage(exc):
                raise
            detail = _reason(exc)
            if isinstance(exc, TimeoutError):
                detail = f"not connected within {connect_timeout:g} s (connect_timeout)"
            raise ServiceUnavailableError(f"{where} is unavailable: {detail}") from exc

    @event.listens_for(engine.sync_engine, "handle_error")
    def statement_failed(context: ExceptionContext) -> None:
        if context.is_pre_ping:
            return  # the pool replaces the connection; a failed reconnect comes through connect
        exc = context.original_exception
        if not isinstance(exc, Exception):
            # CancelledError / KeyboardInterrupt: SQLAlchemy marks these "disconnect" (the
            # connection is invalidated), but they are the caller's cancellation, never an outage.
            return
        if context.is_disconnect or is_outage(exc):
            detail = _reason(exc)
            if isinstance(exc, TimeoutError):
                detail = f"no answer within {command_timeout:g} s (command_timeout)"
            raise ServiceUnavailableError(f"{where} is unavailable: {detail}") from (
                context.sqlalchemy_exception or exc
            )


def install_bounded_pre_ping(engine: AsyncEngine, timeout: float) -> None:
    """SQLAlchemy's ``pool_pre_ping``, with a deadline: ping a pooled connection at checkout.

    The built-in pre-ping waits ``command_timeout`` on a server that stopped answering and
    then raises a raw ``TimeoutError``. This one sends ``SELECT 1`` over the simple query
    protocol (no prepared statement, fine behind PgBouncer) with ``timeout`` seconds to
    answer. A connection that fails is replaced (``DisconnectionError``: the pool
    reconnects; a failed reconnect raises :class:`ServiceUnavailableError`). New
    connections are not pinged. Costs one round trip per checkout of a pooled connection,
    as the built-in one does.
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "connect")
    def fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info["sight_fresh"] = True

    @event.listens_for(pool, "checkout")
    def ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.pop("sight_fresh", False):
            return
        try:
            dbapi_connection.run_async(lambda conn: conn.execute("SELECT 1", timeout=timeout))
        except Exception as exc:
            raise sa_exc.DisconnectionError(f"pre-ping failed: {type(exc).__name__}") from exc
