"""The data layer behind FastAPI, used as ``docs/db-loading.md`` shows (issue 12 items 3 and 4).

- An unloaded relation never serializes as empty: a response model over a repository object
  fails instead of answering ``[]``.
- ``session_dependency`` used as ``Depends(get)`` commits before the response starts, and a
  failed commit is an error response (409 with the error handlers), never a 200.
"""

import uuid
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from db_schema import Persona, Project, seed
from fastapi import Depends, FastAPI
from fastapi.exceptions import ResponseValidationError
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sight_core.db import Repository, session_dependency
from sight_core.errors import UnloadedRelationError


class ResponseOut(BaseModel):
    answer: str


class PersonaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    responses: list[ResponseOut] = []  # a default: an AttributeError would read as "no responses"


class PersonaOnlyRepository(Repository[Persona]):
    load = ()  # responses are not declared


async def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://db.test")


# -- item 3: loud everywhere ---------------------------------------------------------------------


async def test_unloaded_relation_is_not_absent_for_hasattr_getattr_or_pydantic(
    session: AsyncSession,
) -> None:
    await seed(session, personas=1, responses=5)
    persona = (await PersonaOnlyRepository(session).list())[0]
    with pytest.raises(UnloadedRelationError):
        hasattr(persona, "responses")
    with pytest.raises(UnloadedRelationError):
        getattr(persona, "responses", [])
    # pydantic reports the error (an AttributeError would have become the default, [])
    with pytest.raises(ValidationError, match=r"UnloadedRelationError: Persona\.responses"):
        PersonaOut.model_validate(persona)


async def test_response_model_over_a_repository_object_fails_instead_of_returning_empty(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as setup:
        await seed(setup, personas=1, responses=5)
        await setup.commit()
    app = FastAPI()
    get_session = session_dependency(sessions)
    Session = Annotated[AsyncSession, Depends(get_session)]

    @app.get("/personas/first", response_model=PersonaOut)
    async def first_persona(session: Session) -> Any:
        return (await PersonaOnlyRepository(session).list())[0]

    async with await _client(app) as client:
        answer = await client.get("/personas/first")
    assert answer.status_code == 500, answer.text  # never 200 {"responses": []}

    transport = httpx.ASGITransport(app=app)  # the exception the server logs
    async with httpx.AsyncClient(transport=transport, base_url="http://db.test") as client:
        with pytest.raises(ResponseValidationError) as caught:
            await client.get("/personas/first")
    assert "UnloadedRelationError: Persona.responses" in str(caught.value.errors())


# -- item 4: committed before the response, a failed commit is an error response ---------------


#: The documented ways to get the request's session: ``sight_core.db.session_dependency``
#: (docs/db-loading.md) and ``sight_core.fastapi.get_session`` (docs/fastapi.md), each through
#: a plain ``Depends(...)``.
DEPENDENCY_STYLES = ["db.session_dependency", "fastapi.get_session"]


def _app_with_commit_probe(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, seen: list[int], style: str
) -> FastAPI:
    """``POST /projects`` adds a project (flushed only at commit); ``seen`` gets the number of
    committed projects of that name at the moment the response starts."""
    app = FastAPI()
    if style == "db.session_dependency":
        get_session: Any = session_dependency(sessions)  # exactly as docs/db-loading.md shows
    else:
        from sight_core.fastapi import get_session

        app.state.sight = SimpleNamespace(sessions=sessions)  # what sight_lifespan provides
    Session = Annotated[AsyncSession, Depends(get_session)]

    @app.post("/projects")
    async def create_project(name: str, session: Session) -> dict[str, bool]:
        session.add(Project(name=name))  # the INSERT (and its duplicate key) happens at commit
        return {"created": True}

    inner = app.build_middleware_stack

    def probing_stack() -> Any:
        asgi = inner()

        async def probe(scope: Any, receive: Any, send: Any) -> None:
            async def send_probe(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start" and scope["type"] == "http":
                    name = scope["query_string"].decode().removeprefix("name=")
                    async with engine.connect() as conn:  # another connection: committed rows
                        count = select(func.count()).where(Project.name == name)
                        seen.append(int(await conn.scalar(count) or 0))
                await send(message)

            await asgi(scope, receive, send_probe)

        return probe

    app.build_middleware_stack = probing_stack  # type: ignore[method-assign]
    return app


@pytest.mark.parametrize("style", DEPENDENCY_STYLES)
async def test_depends_get_commits_before_the_response_starts(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, style: str
) -> None:
    seen: list[int] = []
    app = _app_with_commit_probe(sessions, engine, seen, style)
    async with await _client(app) as client:
        answer = await client.post("/projects", params={"name": "fresh"})
    assert answer.status_code == 200 and answer.json() == {"created": True}
    assert seen == [1]  # the row was committed when the response started


@pytest.mark.parametrize("style", DEPENDENCY_STYLES)
async def test_commit_time_duplicate_key_is_409_never_200(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, style: str
) -> None:
    from sight_core.fastapi import add_error_handlers

    async with sessions() as setup:
        setup.add(Project(name="taken"))
        await setup.commit()
    seen: list[int] = []
    app = _app_with_commit_probe(sessions, engine, seen, style)
    add_error_handlers(app)
    async with await _client(app) as client:
        answer = await client.post("/projects", params={"name": "taken"})
    assert answer.status_code == 409, answer.text
    assert "projects_name_key" in answer.json()["detail"]
    assert seen == [1]  # only the first row: the failed one was rolled back

    bare = _app_with_commit_probe(
        sessions, engine, [], style
    )  # without the handlers: still never 200
    async with await _client(bare) as client:
        assert (await client.post("/projects", params={"name": "taken"})).status_code == 500


async def test_endpoint_error_rolls_back_and_not_found_is_404(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    from sight_core.fastapi import add_error_handlers

    app = FastAPI()
    add_error_handlers(app)
    get_session = session_dependency(sessions)
    Session = Annotated[AsyncSession, Depends(get_session)]

    class Projects(Repository[Project]):
        pass

    @app.post("/fail")
    async def fail(session: Session) -> None:
        session.add(Project(name="never"))
        await session.flush()
        raise RuntimeError("boom")

    @app.get("/projects/{ident}")
    async def read(ident: uuid.UUID, session: Session) -> dict[str, str]:
        return {"name": (await Projects(session).get(ident)).name}

    async with await _client(app) as client:
        assert (await client.post("/fail")).status_code == 500
        missing = await client.get(f"/projects/{uuid.uuid4()}")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Project)) == 0
