"""Repositories: declared eager loads (none needed here), bulk writes, aggregate reads."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from sight_core.db import Repository

from .models import FocusGroup, LLMUsage, Persona, Project, Response

__all__ = [
    "FocusGroupRepository",
    "PersonaRepository",
    "ProjectRepository",
    "ResponseRepository",
    "UsageRepository",
]


class ProjectRepository(Repository[Project]):
    pass


class PersonaRepository(Repository[Persona]):
    # Generation writes personas and usage in one request that fails as a whole on any error,
    # so a SAVEPOINT per write would only add two statements to every request.
    write_savepoints = False

    async def for_project(self, project_id: uuid.UUID) -> list[Persona]:
        """The project's personas, oldest first. One query."""
        return await self.list(
            Persona.project_id == project_id, order_by=(Persona.created_at, Persona.id)
        )


class FocusGroupRepository(Repository[FocusGroup]):
    pass


class ResponseRepository(Repository[Response]):
    pass


class UsageRepository(Repository[LLMUsage]):
    write_savepoints = False  # written with the personas; the request fails as a whole

    async def totals(self, project_id: uuid.UUID) -> tuple[int, int, int, float]:
        """``(calls, input_tokens, output_tokens, cost_usd)`` of a project. One query."""
        stmt = select(
            func.coalesce(func.sum(LLMUsage.calls), 0),
            func.coalesce(func.sum(LLMUsage.input_tokens), 0),
            func.coalesce(func.sum(LLMUsage.output_tokens), 0),
            func.coalesce(func.sum(LLMUsage.cost_usd), 0.0),
        ).where(LLMUsage.project_id == project_id)
        row = (await self.session.execute(stmt)).one()
        return int(row[0]), int(row[1]), int(row[2]), float(row[3])
