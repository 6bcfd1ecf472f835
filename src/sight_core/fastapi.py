"""FastAPI integration (extra ``fastapi``): lifespan, dependencies, timing middleware, health.

- :func:`sight_lifespan`: builds the engine, sessionmaker, Redis client, Neo4j driver and chat
  models from :class:`~sight_core.settings.SightSettings`, binds a :class:`~sight_core.cache.Cache`,
  and closes everything on shutdown; wraps the application's own lifespan.
- Dependencies: :data:`SessionDep` (one session per request, committed before the response is
  sent, rolled back on error), :func:`repository`, :func:`chat_model`, :func:`get_state`.
- :class:`SightMiddleware`: pure ASGI; per-route latency histograms in
  :mod:`sight_core.observability`, a ``Server-Timing`` header (db queries, cache hits/misses,
  llm time) and an ``X-Request-ID`` (incoming or generated) bound to the log context.
- :func:`health_router`: ``GET /health`` checking each dependency with a deadline; a stopped
  Redis is ``degraded`` (the cache fails open), a stopped PostgreSQL is ``down`` (HTTP 503).

Importing this module imports FastAPI; ``import sight_core`` never does.

Raises:
    MissingDependencyError: on import, when FastAPI is not installed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from sight_core.errors import IntegrityViolationError, MissingDependencyError, NotFoundError

try:
    from fastapi import APIRouter, Depends, Request
    from fastapi.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("fastapi", "fastapi") from exc

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sight_core.db import session_scope
from sight_core.observability import LatencyHistogram, get_registry, increment, log_context
from sight_core.settings import SightSettings

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from sight_core.cache import Cache
    from sight_core.health import CheckResult
    from sight_core.llm import ResilientChatModel, UsageRecord

__all__ = [
    "HealthReport",
    "RequestTiming",
    "SessionDep",
    "SightMiddleware",
    "SightState",
    "StateDep",
    "add_error_handlers",
    "chat_model",
    "check_state",
    "current_timing",
    "get_session",
    "get_state",
    "health_router",
    "repository",
    "sight_lifespan",
]

_log = logging.getLogger("sight_core.fastapi")
_RepoT = TypeVar("_RepoT")
Tier = Literal["flash", "pro"]
AppLifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]]


# --------------------------------------------------------------------------------------------
# Per-request timing (contextvar)
# --------------------------------------------------------------------------------------------


class RequestTiming:
    """What one request spent: db statements and time, cache hits/misses, llm calls and time.

    Created by :class:`SightMiddleware` and reachable through :func:`current_timing` from the
    request's task and every task it spawns (they copy the context and share this object).
    The lifespan feeds ``db_*`` from engine events and ``llm_*`` from usage records; the
    ``cache_*`` counts are the change of the bound cache's process-wide counters over the
    request (exact when requests do not overlap, approximate when they do).
    """

    __slots__ = (
        "cache_hits",
        "cache_misses",
        "db_queries",
        "db_seconds",
        "llm_calls",
        "llm_seconds",
        "request_id",
        "start",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.start = time.perf_counter()
        self.db_queries = 0
        self.db_seconds = 0.0
        self.cache_hits = 0
        self.cache_misses = 0
        self.llm_calls = 0
        self.llm_seconds = 0.0

    def server_timing(self, total: float) -> str:
        """The ``Server-Timing`` header value (durations in milliseconds)."""
        return (
            f'db;dur={self.db_seconds * 1000:.2f};desc="{self.db_queries} queries", '
            f'cache;desc="{self.cache_hits} hits {self.cache_misses} misses", '
            f'llm;dur={self.llm_seconds * 1000:.2f};desc="{self.llm_calls} calls", '
            f"total;dur={total * 1000:.2f}"
        )


_TIMING: ContextVar[RequestTiming | None] = ContextVar("sight_request_timing", default=None)


def current_timing() -> RequestTiming | None:
    """The :class:`RequestTiming` of the request being served, ``None`` outside a request."""
    return _TIMING.get()


# --------------------------------------------------------------------------------------------
# State and lifespan
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SightState:
    """The live clients of one application, built by :func:`sight_lifespan`.

    Reach it with :func:`get_state` / :data:`StateDep`, or ``app.state.sight``.
    """

    settings: SightSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis | RedisCluster
    graph: Any | None = None
    models: dict[str, ResilientChatModel] = field(default_factory=dict)
    cache: Cache | None = None

    def model(self, tier: Tier = "flash") -> ResilientChatModel:
        """The chat model of ``tier`` built at startup.

        Raises:
            KeyError: the lifespan was not asked to build that tier.
        """
        return self.models[tier]


def _instrument_engine(engine: AsyncEngine) -> Callable[[], None]:
    """Count statements and their time into the current request's timing; returns an undo."""
    sync = engine.sync_engine

    def before(conn: Any, *_args: Any) -> None:
        timing = _TIMING.get()
        if timing is not None:
            timing.db_queries += 1
            # one statement at a time per connection: a failed one is overwritten by the next
            conn.info["sight_query_start"] = time.perf_counter()

    def after(conn: Any, *_args: Any) -> None:
        timing = _TIMING.get()
        start = conn.info.pop("sight_query_start", None)
        if timing is not None and start is not None:
            timing.db_seconds += time.perf_counter() - start

    event.listen(sync, "before_cursor_execute", before)
    event.listen(sync, "after_cursor_execute", after)

    def undo() -> None:
        event.remove(sync, "before_cursor_execute", before)
        event.remove(sync, "after_cursor_execute", after)

    return undo


def _llm_sink(record: UsageRecord) -> None:
    timing = _TIMING.get()
    if timing is not None:
        timing.llm_calls += 1
        timing.llm_seconds += record.latency_s


_sink_users = [0]  # lifespans running in this process; the sink is installed once for all


def _install_llm_sink() -> None:
    from sight_core.llm import add_usage_sink

    if _sink_users[0] == 0:
        add_usage_sink(_llm_sink)
    _sink_users[0] += 1


def _uninstall_llm_sink() -> None:
    from sight_core.llm import remove_usage_sink

    _sink_users[0] -= 1
    if _sink_users[0] == 0:
        remove_usage_sink(_llm_sink)


def sight_lifespan(
    settings: SightSettings | None = None,
    *,
    app_lifespan: AppLifespan | None = None,
    cache: Cache | None = None,
    graph: bool = True,
    models: Sequence[Tier] = ("flash",),
    close_models: bool = True,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A FastAPI ``lifespan=`` that owns the application's clients.

    On startup, in order: ``configure_observability(settings.observability)``,
    ``create_engine`` + ``create_sessionmaker`` (no connection opened), ``create_redis_client``,
    ``create_driver`` (when ``graph``), ``build_chat_model`` for each tier in ``models`` (so a
    missing API key fails at startup, not on the first request), and ``cache.bind(redis)``.
    Then ``app_lifespan(app)`` runs inside, so the application's own startup can use
    ``app.state.sight``; the state it yields is merged into the lifespan state. On shutdown
    everything is closed in reverse order, even when one close fails.

    Models are process-wide (``build_chat_model`` caches them): with ``close_models`` the
    shutdown calls ``aclose_models()``, closing every built model's HTTP client.
    Query counts/time and LLM time of each request are gathered for :class:`SightMiddleware`.
    ``settings`` defaults to ``SightSettings()`` read at startup.

    Raises:
        ConfigurationError: invalid settings or a model that cannot be built.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        from sight_core.cache import create_redis_client
        from sight_core.db import create_engine, create_sessionmaker
        from sight_core.llm import aclose_models, build_chat_model
        from sight_core.observability import configure_observability

        config = settings if settings is not None else SightSettings()
        configure_observability(config.observability)
        async with contextlib.AsyncExitStack() as stack:
            engine = create_engine(config.database)
            stack.push_async_callback(engine.dispose)
            stack.callback(_instrument_engine(engine))
            sessions = create_sessionmaker(engine)
            redis = create_redis_client(config.redis)
            stack.push_async_callback(redis.aclose)
            driver: Any | None = None
            if graph:
                from sight_core.graph import create_driver

                driver = create_driver(config.neo4j)
                stack.push_async_callback(driver.close)
            if close_models:  # before building: a tier that fails closes those built before it
                stack.push_async_callback(aclose_models)
            built: dict[str, ResilientChatModel] = {
                tier: build_chat_model(tier, settings=config) for tier in models
            }
            _install_llm_sink()
            stack.callback(_uninstall_llm_sink)
            if cache is not None:
                cache.bind(redis)
                stack.push_async_callback(cache.aclose)
            state = SightState(
                settings=config,
                engine=engine,
                sessions=sessions,
                redis=redis,
                graph=driver,
                models=built,
                cache=cache,
            )
            app.state.sight = state
            stack.callback(_forget_state, app)
            extra: Mapping[str, Any] | None = None
            if app_lifespan is not None:
                extra = await stack.enter_async_context(app_lifespan(app))
            yield {**(extra or {}), "sight": state}

    return lifespan


def _forget_state(app: Any) -> None:
    with contextlib.suppress(AttributeError):
        del app.state.sight


# --------------------------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------------------------


async def get_state(request: Request) -> SightState:
    """The application's :class:`SightState` (from the lifespan state or ``app.state``).

    Raises:
        RuntimeError: the app was not started with :func:`sight_lifespan`.
    """
    state = getattr(request.state, "sight", None) or getattr(request.app.state, "sight", None)
    if state is None:
        raise RuntimeError("no sight state: create the app with lifespan=sight_lifespan(...)")
    return state  # type: ignore[no-any-return]


StateDep = Annotated[SightState, Depends(get_state)]
"""``state: StateDep`` in an endpoint signature."""


async def _request_unit_of_work(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with session_scope(state.sessions) as session:
        yield session


async def get_session(
    session: Annotated[AsyncSession, Depends(_request_unit_of_work, scope="function")],
) -> AsyncSession:
    """One ``AsyncSession`` per request: commit on success, roll back on error, always close.

    The contract of :func:`sight_core.db.session_dependency`, through the same
    :func:`sight_core.db.session_scope` (integrity errors translated), on the lifespan's
    sessionmaker. It ends *before* the response is sent whether used as :data:`SessionDep` or
    ``Depends(get_session)``: a client never reads before the commit, and a failed commit is
    an error response (409 with :func:`add_error_handlers`), never a 200.
    """
    return session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
"""``session: SessionDep``: a request-scoped session committed before the response is sent."""


def _error_response(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


def add_error_handlers(app: Any) -> None:
    """Answer the data layer's errors with their HTTP status instead of 500.

    :class:`~sight_core.errors.NotFoundError` -> 404; :class:`~sight_core.errors.DuplicateError`
    and :class:`~sight_core.errors.ForeignKeyError` (raised in the endpoint or by the commit of
    :data:`SessionDep` / :func:`sight_core.db.session_dependency`) -> 409. The body is
    ``{"detail": message}``; messages name the model and id or the constraint, never values.
    """
    app.add_exception_handler(NotFoundError, _error_response(404))
    app.add_exception_handler(IntegrityViolationError, _error_response(409))


def repository(repo_cls: type[_RepoT]) -> Callable[[AsyncSession], Awaitable[_RepoT]]:
    """A dependency building ``repo_cls(session)`` on the request's session.

    ``Personas = Annotated[PersonaRepository, Depends(repository(PersonaRepository))]``.
    Several repositories in one endpoint share the one session (one transaction).
    (Dependencies here are ``async def``: FastAPI runs plain ``def`` ones in a thread pool.)
    """

    async def dependency(session: SessionDep) -> _RepoT:
        return repo_cls(session)  # type: ignore[call-arg]

    dependency.__name__ = f"{repo_cls.__name__}_dependency"
    return dependency


def chat_model(tier: Tier = "flash") -> Callable[[SightState], Awaitable[ResilientChatModel]]:
    """A dependency returning the lifespan's chat model of ``tier`` (built once at startup)."""

    async def dependency(state: StateDep) -> ResilientChatModel:
        return state.model(tier)

    dependency.__name__ = f"chat_model_{tier}"
    return dependency


# --------------------------------------------------------------------------------------------
# Middleware
# --------------------------------------------------------------------------------------------

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}\Z")
_ID_PREFIX = [os.urandom(8).hex()]  # per process; the counter makes each id unique within it
_ID_COUNTER = [itertools.count(1)]


def _reseed_request_ids() -> None:
    """A forked worker (gunicorn ``--preload``, multiprocessing) draws its own prefix, so two
    workers never hand out the same ids."""
    _ID_PREFIX[0] = os.urandom(8).hex()
    _ID_COUNTER[0] = itertools.count(1)


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_reseed_request_ids)


def _new_request_id() -> str:
    """32 hex characters: a random per-process prefix and a counter (no syscall per id)."""
    return f"{_ID_PREFIX[0]}{next(_ID_COUNTER[0]) & 0xFFFFFFFFFFFFFFFF:016x}"


_UNMATCHED = "<unmatched>"
_OTHER_METHOD = "_OTHER"
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"))


def _route_of(scope: Mapping[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else _UNMATCHED


def _cache_of(scope: Mapping[str, Any]) -> Cache | None:
    """The cache bound by :func:`sight_lifespan`: from the lifespan state the server copied
    into the request (one dict lookup), else from ``app.state``."""
    state = scope.get("state")
    sight = state.get("sight") if state else None
    if sight is None:
        sight = getattr(getattr(scope.get("app"), "state", None), "sight", None)
    return getattr(sight, "cache", None)


class SightMiddleware:
    """Pure ASGI middleware: route latency histograms, ``Server-Timing``, ``X-Request-ID``.

    Per HTTP request: takes ``X-Request-ID`` from the request when it is 1-128 characters of
    ``[A-Za-z0-9._:-]`` (else generates 32 hex characters, unique per process, also in forked
    workers), binds it to the log context as ``request_id``, starts a :class:`RequestTiming`,
    adds ``x-request-id`` and ``server-timing`` to the response headers, and records
    ``metric`` (seconds, labels ``method``, ``route`` template, ``status``) plus
    ``sight_http_db_queries_total`` / ``sight_http_cache_hits_total`` /
    ``sight_http_cache_misses_total`` per route. Unmatched paths share one
    ``route="<unmatched>"`` series and methods outside the standard ones are ``_OTHER``
    (bounded cardinality). An exception from the application propagates unchanged (recorded
    as status 500 when no response had started); response bodies, streamed or not, pass
    through untouched. A failure to record a metric is logged, never raised.
    Cost: two ``perf_counter`` calls, one contextvar set, two reads of the cache's counters,
    two header appends, one histogram record. Other scopes (lifespan, websocket) pass
    through untouched.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        header: str = "x-request-id",
        server_timing: bool = True,
        metric: str = "sight_http_request_seconds",
    ) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.server_timing = server_timing
        self.metric = metric
        self._series: dict[tuple[str, str, int], LatencyHistogram] = {}
        self._generation = -1
        self._failed = False

    def _histogram(self, method: str, route: str, status: int) -> LatencyHistogram:
        """The live histogram of one (method, route, status): looked up once, then kept
        (until the registry is reset)."""
        registry = get_registry()
        if registry.generation != self._generation:
            self._series = {}
            self._generation = registry.generation
        key = (method, route, status)
        hist = self._series.get(key)
        if hist is None:
            hist = registry.histogram(self.metric, method=method, route=route, status=str(status))
            self._series[key] = hist
        return hist

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self.header
        request_id = ""
        for name, value in scope["headers"]:
            if name == header:
                if _REQUEST_ID.match(value):
                    request_id = value.decode("latin-1")
                break
        if not request_id:
            request_id = _new_request_id()
        timing = RequestTiming(request_id)
        token = _TIMING.set(timing)
        cache = _cache_of(scope)
        before = cache.totals() if cache is not None else (0, 0)
        status = 0  # no response started (yet)
        add_timing = self.server_timing

        def count_cache() -> None:
            if cache is not None:
                hits, misses = cache.totals()
                timing.cache_hits = hits - before[0]
                timing.cache_misses = misses - before[1]

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((header, request_id.encode("latin-1")))
                if add_timing:
                    count_cache()
                    elapsed = time.perf_counter() - timing.start
                    headers.append((b"server-timing", timing.server_timing(elapsed).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            with log_context(request_id=request_id):
                await self.app(scope, receive, send_wrapper)
        finally:
            _TIMING.reset(token)
            elapsed = time.perf_counter() - timing.start
            if not (add_timing and status):
                count_cache()  # not counted at the response start
            self._record(scope, status or 500, elapsed, timing)

    def _record(
        self, scope: Mapping[str, Any], status: int, elapsed: float, timing: RequestTiming
    ) -> None:
        """Record one request; observability never fails a request (the first failure of this
        middleware is logged with its traceback)."""
        try:
            route = _route_of(scope)
            method = scope["method"]
            self._histogram(method if method in _METHODS else _OTHER_METHOD, route, status).record(
                elapsed
            )
            if timing.db_queries:
                increment("sight_http_db_queries_total", timing.db_queries, route=route)
            if timing.cache_hits:
                increment("sight_http_cache_hits_total", timing.cache_hits, route=route)
            if timing.cache_misses:
                increment("sight_http_cache_misses_total", timing.cache_misses, route=route)
        except Exception:
            if not self._failed:
                self._failed = True
                _log.exception("SightMiddleware could not record request metrics")


# --------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthReport:
    """``status`` is ``ok`` (all up), ``degraded`` (a non-critical one down) or ``down``."""

    status: Literal["ok", "degraded", "down"]
    checks: list[CheckResult]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checks": {
                c.service: {
                    "ok": c.ok,
                    "latency_ms": None if c.latency_ms is None else round(c.latency_ms, 2),
                    "error": c.error,
                }
                for c in self.checks
            },
        }


async def check_state(
    state: SightState, *, timeout: float = 1.0, critical: Iterable[str] = ("postgres",)
) -> HealthReport:
    """Check every live client of ``state`` concurrently, each within ``timeout`` seconds."""
    import asyncio

    from sight_core.health import check_driver, check_engine, check_redis_client

    probes = [check_engine(state.engine, timeout), check_redis_client(state.redis, timeout)]
    if state.graph is not None:
        probes.append(check_driver(state.graph, timeout, target=state.settings.neo4j.uri))
    results = list(await asyncio.gather(*probes))
    vital = set(critical)
    if any(not r.ok and r.service in vital for r in results):
        status: Literal["ok", "degraded", "down"] = "down"
    elif any(not r.ok for r in results):
        status = "degraded"
    else:
        status = "ok"
    return HealthReport(status, results)


def health_router(
    *, path: str = "/health", timeout: float = 1.0, critical: Sequence[str] = ("postgres",)
) -> APIRouter:
    """An ``APIRouter`` with ``GET path`` reporting each dependency within ``timeout`` seconds.

    Answers 200 with ``status`` ``ok`` or ``degraded`` (a service outside ``critical`` failed:
    with Redis down the cache fails open and reads still work) and 503 with ``down`` when a
    ``critical`` service failed. The body lists each service's ``ok``, ``latency_ms`` and
    ``error`` (type and message, no secret). Worst-case time: about ``timeout``.
    """
    router = APIRouter()

    @router.get(path, include_in_schema=False)
    async def health(state: StateDep) -> JSONResponse:
        report = await check_state(state, timeout=timeout, critical=critical)
        code = 503 if report.status == "down" else 200
        return JSONResponse(report.as_dict(), status_code=code)

    return router
