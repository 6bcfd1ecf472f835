"""Type-checked, never run (not collected: no ``test_`` prefix): the cache decorators keep
the signatures users rely on. ``uv run mypy --strict tests/cache/typing_cache_api.py``."""

from __future__ import annotations

from typing import assert_type
from uuid import UUID

from pydantic import BaseModel

from sight_core.cache import Cache


class PersonaOut(BaseModel):
    id: UUID


cache = Cache()


@cache.cached(namespace="persona", version=2, key="{persona_id}:project:{project_id}")
async def get_persona(persona_id: UUID, project_id: UUID) -> PersonaOut:
    return PersonaOut(id=persona_id)


@cache.cached_many(namespace="persona", key="{ids}")
async def get_personas(ids: list[UUID]) -> dict[UUID, PersonaOut]:
    return {}


class Service:
    def __cache_key__(self) -> str:
        return "tenant"

    @cache.cached(namespace="svc")
    async def get(self, item_id: int) -> str:
        return str(item_id)


async def use(a: UUID, b: UUID) -> None:
    assert_type(await get_persona(a, b), PersonaOut)
    assert_type(await get_persona(persona_id=a, project_id=b), PersonaOut)
    assert_type(get_persona.key(persona_id=a, project_id=b), str)
    assert_type(await get_persona.invalidate(persona_id=a, project_id=b), bool)
    assert_type(await get_persona.refresh(a, b), PersonaOut)
    assert_type(await get_persona.uncached(a, b), PersonaOut)
    await get_persona.set(PersonaOut(id=a), a, b)
    assert_type(await get_personas([a]), dict[UUID, PersonaOut])
    assert_type(await Service().get(1), str)
    assert_type(await cache.invalidate_tags("project:1"), int)
    await get_persona(a)  # type: ignore[call-arg]
    await get_persona(a, "b")  # type: ignore[arg-type]
    await Service().get("x")  # type: ignore[arg-type]


async def use_methods() -> None:
    assert_type(Service().get.tags(1), list[str])
    assert_type(await Service().get.get_many([{"item_id": 1}]), list[str])
