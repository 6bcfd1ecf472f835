"""``sight_core.fastapi`` on a minimal app: lifespan composition, sessions, log context."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sight_core.db import Repository
from sight_core.fastapi import (
    SessionDep,
    SightMiddleware,
    StateDep,
    chat_model,
    get_state,
    health_router,
    repository,
    sight_lifespan,
)
from sight_core.llm import ResilientChatModel, clear_model_cache
from sight_core.observability import get_log_context
from sight_core.settings import SightSettings


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


class NoteRepository(Repository[Note]):
    pass


Notes = Annotated[NoteRepository, Depends(repository(NoteRepository))]
Flash = Annotated[ResilientChatModel, Depends(chat_model("flash"))]


def make_app(settings: SightSettings, events: list[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        state = app.state.sight
        async with state.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        events.append("app started")
        yield {"greeting": "hello"}
        async with state.engine.connect() as conn:  # the clients are still open here
            events.append(f"app stopping, notes={await conn.scalar(select(func.count(Note.id)))}")

    app = FastAPI(lifespan=sight_lifespan(settings, app_lifespan=own, graph=False))
    app.add_middleware(SightMiddleware)
    app.include_router(health_router(path="/healthz"))

    @app.post("/notes")
    async def add(text: str, notes: Notes) -> dict[str, int]:
        note = await notes.add(Note(text=text))
        if text == "boom":
            raise RuntimeError("fails after the insert")
        return {"id": note.id}

    @app.get("/notes/count")
    async def count(session: SessionDep) -> int:
        return int(await session.scalar(select(func.count(Note.id))) or 0)

    @app.get("/context")
    async def context(state: StateDep, model: Flash) -> dict[str, Any]:
        logging.getLogger("sight.test").warning("inside")
        return {
            "log_context": dict(get_log_context()),
            "model": model.model_name,
            "same_model": model is state.model("flash"),
        }

    return app


@pytest.fixture
def settings(postgres_url: str, redis_url: str) -> SightSettings:
    values: Any = {
        "database": {"url": postgres_url, "preset": "test"},
        "redis": {"url": redis_url, "preset": "test"},
        "llm": {"provider": "fake"},
    }
    return SightSettings(_env_file=None, **values)


async def test_lifespan_wraps_the_app_lifespan_and_closes_everything(
    settings: SightSettings,
) -> None:
    clear_model_cache()
    events: list[str] = []
    app = make_app(settings, events)
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        assert state["greeting"] == "hello"
        sight = state["sight"]
        assert sight is app.state.sight
        assert sight.redis is not None and sight.graph is None
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://t",
        ) as client:
            assert (await client.post("/notes", params={"text": "kept"})).status_code == 200
            assert (await client.post("/notes", params={"text": "boom"})).status_code == 500
            # committed before the response was sent; the failed request rolled back
            assert (await client.get("/notes/count")).json() == 1
            health = await client.get("/healthz")
            assert health.json()["status"] == "ok"
            assert set(health.json()["checks"]) == {"postgres", "redis"}
        assert sight.engine.pool.checkedout() == 0
    assert events == ["app started", "app stopping, notes=1"]
    assert not hasattr(app.state, "sight")


async def test_request_id_reaches_the_log_context(
    settings: SightSettings, caplog: pytest.LogCaptureFixture
) -> None:
    from sight_core.observability import LogContextFilter

    clear_model_cache()
    app = make_app(settings, [])
    caplog.handler.addFilter(LogContextFilter())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.get("/context", headers={"x-request-id": "abc-123"})
    body = response.json()
    assert body["log_context"]["request_id"] == "abc-123"
    assert body["model"] == "fake-flash" and body["same_model"] is True
    assert [r.request_id for r in caplog.records if r.name == "sight.test"] == ["abc-123"]  # type: ignore[attr-defined]
    assert get_log_context().get("request_id") is None  # reset after the request


async def test_get_state_without_the_lifespan_is_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/")
    async def root(state: Annotated[Any, Depends(get_state)]) -> None:
        return None

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(RuntimeError, match="sight_lifespan"):
            await client.get("/")


async def test_lifespan_builds_the_graph_driver_and_health_checks_it(
    sight_settings: SightSettings,
) -> None:
    clear_model_cache()
    app = FastAPI(lifespan=sight_lifespan(sight_settings))
    app.include_router(health_router())
    async with app.router.lifespan_context(app):
        assert app.state.sight.graph is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = (await client.get("/health")).json()
    assert body["status"] == "ok", body
    assert set(body["checks"]) == {"postgres", "redis", "neo4j"}


async def test_unmatched_paths_share_one_route_series(settings: SightSettings) -> None:
    from sight_core.observability import snapshot

    clear_model_cache()
    app = make_app(settings, [])
    before = snapshot().histogram(
        "sight_http_request_seconds", method="GET", route="<unmatched>", status="404"
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        for path in ("/a", "/b/c", "/d?x=1"):
            assert (await client.get(path)).status_code == 404
    after = snapshot().histogram(
        "sight_http_request_seconds", method="GET", route="<unmatched>", status="404"
    )
    assert after.count - before.count == 3


def test_public_names() -> None:
    import sight_core.fastapi as module

    assert sorted(module.__all__) == [
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
    assert all(hasattr(module, name) for name in module.__all__)


async def test_a_model_that_cannot_be_built_closes_what_was_built_before(
    settings: SightSettings,
) -> None:
    from sight_core.errors import ConfigurationError
    from sight_core.llm import build_chat_model

    clear_model_cache()
    flash = build_chat_model("flash", settings=settings)  # the lifespan gets this cached one
    tiers: Any = ("flash", "no-such-tier")
    app = FastAPI(lifespan=sight_lifespan(settings, graph=False, models=tiers))
    with pytest.raises(ConfigurationError):
        async with app.router.lifespan_context(app):
            pass
    # aclose_models ran: the flash model was closed and forgotten, a new build is a new model
    assert build_chat_model("flash", settings=settings) is not flash
    assert not hasattr(app.state, "sight")


def _series(route: str, status: str, method: str = "GET") -> int:
    from sight_core.observability import snapshot

    series = snapshot().histogram(
        "sight_http_request_seconds", method=method, route=route, status=status
    )
    return series.count


async def test_middleware_streams_bodies_and_lets_exceptions_through(
    settings: SightSettings,
) -> None:
    from fastapi.responses import StreamingResponse

    clear_model_cache()
    app = make_app(settings, [])

    class Boom(Exception):
        pass

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/fails")
    async def fails() -> None:
        raise Boom("the handler's own error")

    before = _series("/fails", "500"), _series("/stream", "200")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        async with client.stream("GET", "/stream") as response:
            body = [line async for line in response.aiter_lines()]
        assert body == ["chunk 0", "chunk 1", "chunk 2"]
        assert response.headers["x-request-id"]
        assert "total;dur=" in response.headers["server-timing"]
        with pytest.raises(Boom, match="own error"):  # the same exception, not a wrapper
            await client.get("/fails")
    assert (_series("/fails", "500"), _series("/stream", "200")) == (before[0] + 1, before[1] + 1)


async def test_unknown_methods_share_one_series(settings: SightSettings) -> None:
    clear_model_cache()
    app = make_app(settings, [])
    before = _series("<unmatched>", "404", method="_OTHER")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        for method in ("PROPFIND", "BREW", "X-SCAN"):
            assert (await client.request(method, "/nowhere")).status_code == 404
    assert _series("<unmatched>", "404", method="_OTHER") - before == 3


async def test_a_metric_that_cannot_be_recorded_is_logged_once_and_never_fails_a_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    app.add_middleware(SightMiddleware, metric="not a valid metric name")

    @app.get("/")
    async def root() -> int:
        return 1

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(3):
            assert (await client.get("/")).status_code == 200
    failures = [r for r in caplog.records if r.name == "sight_core.fastapi"]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_forked_workers_generate_their_own_request_ids() -> None:
    import os

    from sight_core.fastapi import _new_request_id

    parent = _new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, _new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == len(parent) == 32
    assert child[:16] != parent[:16]  # another random prefix, so the counters cannot collide
    assert _new_request_id()[:16] == parent[:16]
