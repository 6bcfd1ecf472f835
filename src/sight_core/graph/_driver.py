"""``create_driver``: a Neo4j async driver configured by :class:`Neo4jSettings` and its preset."""

from __future__ import annotations

from typing import Any

import neo4j

from sight_core.settings import Neo4jSettings

__all__ = ["create_driver", "driver_options"]


def driver_options(settings: Neo4jSettings) -> dict[str, Any]:
    """Keyword arguments :func:`create_driver` passes to ``AsyncGraphDatabase.driver``."""
    pool = settings.resolved()
    auth: tuple[str, str] | None = None
    if settings.user:
        password = settings.password.get_secret_value() if settings.password else ""
        auth = (settings.user, password)
    return {
        "auth": auth,  # None: FalkorDB and unauthenticated servers refuse a basic token
        "max_connection_pool_size": pool.max_connection_pool_size,
        "connection_acquisition_timeout": pool.connection_acquisition_timeout,
        "max_connection_lifetime": pool.max_connection_lifetime,
        "liveness_check_timeout": pool.liveness_check_timeout,
        "connection_timeout": pool.connection_timeout,
        "max_transaction_retry_time": pool.max_transaction_retry_time,
    }


def create_driver(settings: Neo4jSettings, **overrides: Any) -> neo4j.AsyncDriver:
    """An ``AsyncDriver`` for ``settings.uri`` with the resolved pool preset.

    No connection is opened until first use (check with :meth:`GraphClient.check`).
    ``overrides`` go to the driver last (e.g. ``max_transaction_retry_time=5``).
    """
    options = driver_options(settings)
    options.update(overrides)
    return neo4j.AsyncGraphDatabase.driver(settings.uri, **options)
