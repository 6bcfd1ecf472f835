"""The example service's FastAPI app: ``create_app(settings)``.

Run it with ``uv run uvicorn --factory examples.sight_service.app:create_app`` (settings from
``SIGHT_*``); without ``GOOGLE_API_KEY`` it uses the ``fake`` model provider.
"""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig

from sight_core.errors import NotFoundError
from sight_core.fastapi import SightMiddleware, health_router, sight_lifespan
from sight_core.observability import CONTENT_TYPE, prometheus_text
from sight_core.settings import SightSettings

from .models import Base
from .schemas import (
    FocusGroupIn,
    FocusGroupOut,
    GenerateIn,
    GenerationOut,
    PersonaOut,
    PersonaUpdate,
    ProjectIn,
    ProjectOut,
    UsageOut,
)
from .services import SightService, cache

__all__ = ["create_app", "resolve_settings"]


def resolve_settings(settings: SightSettings | None = None) -> SightSettings:
    """``settings`` (default: from the environment), with the ``fake`` provider when the
    ``google`` one has no API key (so the example runs anywhere)."""
    config = settings if settings is not None else SightSettings()
    if config.llm.provider == "google" and config.llm.api_key is None:
        fake = config.llm.model_copy(update={"provider": "fake"})
        config = config.model_copy(update={"llm": fake})
    return config


_NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


async def get_service(request: Request) -> SightService:
    service: SightService = request.app.state.service
    return service


ServiceDep = Annotated[SightService, Depends(get_service)]


def create_app(
    settings: SightSettings | None = None,
    *,
    generation_limit: int = 20,
    focus_limit: int = 16,
    create_schema: bool = True,
) -> FastAPI:
    """The example service. Its lifespan (``sight_lifespan``) builds the clients, binds the
    cache and closes everything; the app's own startup creates the tables (an example's
    shortcut: real services migrate with Alembic) and the :class:`SightService`."""
    config = resolve_settings(settings)

    @contextlib.asynccontextmanager
    async def startup(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        state = app.state.sight
        if create_schema:
            async with state.engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
        app.state.service = SightService(
            state.sessions,
            state.model("flash"),
            generation_limit=generation_limit,
            focus_limit=focus_limit,
        )
        # What exists now (modules, clients, models) lives as long as the app: freeze it, so
        # the full collections that request garbage triggers do not rescan it each time (a
        # 100+ ms pause of every request in flight on a small machine). Unfrozen at shutdown.
        gc.freeze()
        try:
            yield {}
        finally:
            gc.unfreeze()

    app = FastAPI(
        title="sight example service",
        lifespan=sight_lifespan(config, app_lifespan=startup, cache=cache, graph=False),
        # SightMiddleware records the HTTP metrics (exported to OpenTelemetry too when
        # SIGHT_OBSERVABILITY__OPENTELEMETRY is on). With OpenTelemetry off, FastAPI's own
        # instrumentation is off as well: it would look for OTel providers on every request
        # (environment reads) only to find none.
        telemetry=None if config.observability.opentelemetry else _NO_FASTAPI_TELEMETRY,
    )
    app.add_middleware(SightMiddleware)

    # The hot read is declared before the other API routes (routes are matched in order; only
    # FastAPI's /openapi.json, /docs and /redoc come first) and reads the service from
    # app.state directly: no dependency to solve on the path that must stay cheapest.
    @app.get("/projects/{project_id}/personas/{persona_id}")
    async def get_persona(
        project_id: uuid.UUID, persona_id: uuid.UUID, request: Request
    ) -> PersonaOut:
        service: SightService = request.app.state.service
        return await service.get_persona(project_id, persona_id)

    app.include_router(health_router())

    @app.exception_handler(NotFoundError)
    async def not_found(_request: Request, exc: NotFoundError) -> Response:
        return JSONResponse({"detail": f"{exc.model} not found"}, status_code=404)

    @app.post("/projects", status_code=201)
    async def create_project(body: ProjectIn, service: ServiceDep) -> ProjectOut:
        return await service.create_project(body.name)

    @app.post("/projects/{project_id}/personas/generate", status_code=201)
    async def generate_personas(
        project_id: uuid.UUID, body: GenerateIn, service: ServiceDep
    ) -> GenerationOut:
        return await service.generate_personas(project_id, body.count, body.brief)

    @app.get("/projects/{project_id}/personas")
    async def list_personas(project_id: uuid.UUID, service: ServiceDep) -> list[PersonaOut]:
        return await service.list_personas(project_id)

    @app.get("/projects/{project_id}/personas/{persona_id}/uncached")
    async def get_persona_uncached(
        project_id: uuid.UUID, persona_id: uuid.UUID, service: ServiceDep
    ) -> PersonaOut:
        return await service.read_persona(project_id, persona_id)

    @app.patch("/projects/{project_id}/personas/{persona_id}")
    async def update_persona(
        project_id: uuid.UUID, persona_id: uuid.UUID, body: PersonaUpdate, service: ServiceDep
    ) -> PersonaOut:
        return await service.update_persona(project_id, persona_id, body)

    @app.post("/projects/{project_id}/focus-groups", status_code=201)
    async def run_focus_group(
        project_id: uuid.UUID, body: FocusGroupIn, service: ServiceDep
    ) -> FocusGroupOut:
        return await service.run_focus_group(project_id, body.topic, body.questions)

    @app.get("/projects/{project_id}/usage")
    async def project_usage(project_id: uuid.UUID, service: ServiceDep) -> UsageOut:
        return await service.usage(project_id)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(prometheus_text(), media_type=CONTENT_TYPE)

    return app
