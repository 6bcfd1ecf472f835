"""A small service as a platform team would write it on an installed sight-core wheel.

Copied into a fresh project by ``tests/foundation/test_wheel_install.py``; not imported by the
library's own suite.
"""

from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sight_core.cache import Cache
from sight_core.db import Repository
from sight_core.fastapi import SightMiddleware, StateDep, chat_model, repository, sight_lifespan
from sight_core.llm import ResilientChatModel
from sight_core.settings import SightSettings

cache = Cache(prefix="svc")
model_calls: list[int] = []


class Base(DeclarativeBase):
    pass


class Persona(Base):
    __tablename__ = "personas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Personas(Repository[Persona]):
    pass


PersonaRepo = Annotated[Personas, Depends(repository(Personas))]
Model = Annotated[ResilientChatModel, Depends(chat_model("flash"))]


@cache.cached(namespace="summary", key="{persona_id}")
async def summary(persona_id: int, name: str, model: ResilientChatModel) -> str:
    model_calls.append(persona_id)
    answer = await model.ainvoke(f"Summarise persona {name}")
    return f"{name}: {answer.content}"


def create_app(settings: SightSettings) -> FastAPI:
    app = FastAPI(lifespan=sight_lifespan(settings, cache=cache, graph=False))
    app.add_middleware(SightMiddleware)

    @app.post("/setup")
    async def setup(state: StateDep) -> None:
        async with state.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    @app.post("/personas")
    async def add(name: str, personas: PersonaRepo) -> dict[str, int]:
        persona = await personas.add(Persona(name=name))
        return {"id": persona.id}

    @app.get("/personas/{persona_id}/summary")
    async def get_summary(persona_id: int, personas: PersonaRepo, model: Model) -> str:
        persona = await personas.get(persona_id)
        return await summary(persona.id, persona.name, model)

    return app
