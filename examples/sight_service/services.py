"""The example service's use cases, built only on sight-core's public API.

Rules it follows (each one is a platform rule made code):

- Cached reads (``@cache.cached``) carry the tag ``project:{project_id}``; every write to a
  project's personas invalidates that tag *after* its transaction committed.
- LLM fan-outs go through :func:`gather_limited` with an explicit limit, on a model from
  ``build_chat_model`` (which adds its own per-model cap, retries and breaker).
- No database connection is held across a model call: load and release, call the models,
  then write in a new short transaction.
- Every fan-out runs inside ``usage_scope(project_id=...)`` and its tokens and cost are stored
  with the results.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import Runnable
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sight_core.cache import Cache
from sight_core.concurrency import gather_limited
from sight_core.db import session_scope
from sight_core.errors import CacheError, NotFoundError
from sight_core.llm import ResilientChatModel, Usage, structured_output, usage_scope

from .models import FocusGroup, LLMUsage, Project
from .repositories import (
    FocusGroupRepository,
    PersonaRepository,
    ProjectRepository,
    ResponseRepository,
    UsageRepository,
)
from .schemas import (
    FocusGroupOut,
    GenerationOut,
    PersonaDraft,
    PersonaOut,
    PersonaUpdate,
    ProjectOut,
    UsageOut,
)

__all__ = ["PROJECT_TAG", "SightService", "cache"]

_log = logging.getLogger("sight_service")

cache = Cache(prefix="sight-example", default_ttl=600, local_tier=True, local_ttl=5.0)
"""Created at import time, bound to Redis by the app's lifespan. Hot values also stay in
process for up to 5 s (invalidations reach every process through Redis pub/sub)."""

PROJECT_TAG = "project:{project_id}"


def _usage_out(usage: Usage) -> UsageOut:
    return UsageOut(
        calls=usage.calls,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=round(usage.cost_usd, 6),
    )


def _usage_row(project_id: uuid.UUID, operation: str, usage: Usage) -> LLMUsage:
    return LLMUsage(
        project_id=project_id,
        operation=operation,
        calls=usage.calls,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
    )


@dataclass
class SightService:
    """Projects, personas and focus groups over one sessionmaker and one chat model.

    ``generation_limit`` and ``focus_limit`` cap the requests in flight of one bulk
    generation / one focus-group round (the model's shared limiter caps the process).
    """

    sessions: async_sessionmaker[AsyncSession]
    model: ResilientChatModel
    generation_limit: int = 20
    focus_limit: int = 16

    # -- projects ----------------------------------------------------------------------

    async def create_project(self, name: str) -> ProjectOut:
        """One INSERT."""
        async with session_scope(self.sessions) as session:
            project = await ProjectRepository(session).add(Project(name=name))
            return ProjectOut.model_validate(project)

    async def usage(self, project_id: uuid.UUID) -> UsageOut:
        """Tokens and cost of every operation of the project. One query."""
        async with session_scope(self.sessions) as session:
            calls, tokens_in, tokens_out, cost = await UsageRepository(session).totals(project_id)
        return UsageOut(
            calls=calls, input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=round(cost, 6)
        )

    # -- cached reads ------------------------------------------------------------------

    @cache.cached(
        namespace="persona",
        version=1,
        ttl=600,
        key="{project_id}:{persona_id}",
        tags=(PROJECT_TAG,),
    )
    async def get_persona(self, project_id: uuid.UUID, persona_id: uuid.UUID) -> PersonaOut:
        """One persona; a miss costs one query, a hit none.

        Raises:
            NotFoundError: no such persona in this project (not cached).
        """
        return await self.read_persona(project_id, persona_id)

    async def read_persona(self, project_id: uuid.UUID, persona_id: uuid.UUID) -> PersonaOut:
        """The same read without the cache (one query): for comparisons and admin tools."""
        async with session_scope(self.sessions) as session:
            persona = await PersonaRepository(session).get_or_none(persona_id)
        if persona is None or persona.project_id != project_id:
            raise NotFoundError("Persona", persona_id)
        return PersonaOut.model_validate(persona)

    @cache.cached(
        namespace="persona-list", version=1, ttl=600, key="{project_id}", tags=(PROJECT_TAG,)
    )
    async def list_personas(self, project_id: uuid.UUID) -> list[PersonaOut]:
        """The project's personas; a miss costs one query."""
        async with session_scope(self.sessions) as session:
            personas = await PersonaRepository(session).for_project(project_id)
        return [PersonaOut.model_validate(p) for p in personas]

    async def invalidate_project(self, project_id: uuid.UUID) -> None:
        """Drop every cached read of the project (call after the write committed).

        With Redis unreachable the entries cannot be deleted; reads bypass the cache while
        its breaker is open and the entries expire with their TTL.
        """
        try:
            await cache.invalidate_tags(cache.tag(PROJECT_TAG, project_id=project_id))
        except CacheError:
            _log.warning("cache invalidation failed for a project; entries expire by TTL")

    # -- writes ------------------------------------------------------------------------

    async def update_persona(
        self, project_id: uuid.UUID, persona_id: uuid.UUID, changes: PersonaUpdate
    ) -> PersonaOut:
        """Write only the given fields (one UPDATE), commit, then invalidate the project tag.

        Raises:
            NotFoundError: no such persona in this project.
        """
        values = changes.model_dump(exclude_none=True)
        async with session_scope(self.sessions) as session:
            repo = PersonaRepository(session)
            if values:
                persona = await repo.update(persona_id, **values)
            else:
                persona = await repo.get(persona_id)
            if persona.project_id != project_id:
                raise NotFoundError("Persona", persona_id)  # rolls the update back
            out = PersonaOut.model_validate(persona)
        await self.invalidate_project(project_id)
        return out

    async def generate_personas(
        self, project_id: uuid.UUID, count: int, brief: str
    ) -> GenerationOut:
        """Generate ``count`` personas in parallel and store them with one INSERT.

        Queries: 1 (project exists) + 1 (personas, whatever ``count``) + 1 (usage row).
        No connection is open while the model works.

        Raises:
            NotFoundError: no such project.
            StructuredOutputError / RetryExhaustedError / CircuitOpenError: from the model.
        """
        async with session_scope(self.sessions) as session:
            await ProjectRepository(session).get(project_id)
        writer: Runnable[str, PersonaDraft] = structured_output(self.model, PersonaDraft)
        prompts = [_persona_prompt(brief, i, count) for i in range(count)]
        start = time.perf_counter()
        async with usage_scope(project_id=project_id, operation="personas") as usage:
            drafts: list[PersonaDraft] = await gather_limited(
                (writer.ainvoke(p) for p in prompts), limit=self.generation_limit
            )
        seconds = time.perf_counter() - start
        rows: list[dict[str, Any]] = [
            {"project_id": project_id, **draft.model_dump()} for draft in drafts
        ]
        async with session_scope(self.sessions) as session:
            ids = await PersonaRepository(session).add_many(rows)  # primary keys, input order
            await UsageRepository(session).add(_usage_row(project_id, "personas", usage))
        await self.invalidate_project(project_id)
        return GenerationOut(
            personas=[PersonaOut(id=pk, **row) for pk, row in zip(ids, rows, strict=True)],
            seconds=round(seconds, 3),
            call_latency_ms=[round(r.latency_s * 1000) for r in usage.records],
            usage=_usage_out(usage),
        )

    async def run_focus_group(
        self, project_id: uuid.UUID, topic: str, questions: Sequence[str]
    ) -> FocusGroupOut:
        """Every persona of the project answers every question; at most ``focus_limit``
        model calls in flight.

        Three steps, so no connection waits on a model: (1) load the personas and create the
        group, commit, release; (2) fan out the answers; (3) store all answers with one
        INSERT and the usage row, commit.

        Raises:
            NotFoundError: no such project.
        """
        async with session_scope(self.sessions) as session:
            await ProjectRepository(session).get(project_id)
            personas = await PersonaRepository(session).for_project(project_id)
            group = await FocusGroupRepository(session).add(
                FocusGroup(project_id=project_id, topic=topic, questions=list(questions))
            )
            group_id = group.id
        profiles = [(p.id, _profile(p.name, p.age, p.occupation, p.bio)) for p in personas]

        async def answer(persona_id: uuid.UUID, profile: str, index: int) -> dict[str, Any]:
            started = time.perf_counter()
            message = await self.model.ainvoke(_answer_prompt(profile, topic, questions[index]))
            elapsed = time.perf_counter() - started
            return {
                "focus_group_id": group_id,
                "persona_id": persona_id,
                "question_index": index,
                "answer": message.text,
                "latency_ms": round(elapsed * 1000),
            }

        start = time.perf_counter()
        async with usage_scope(project_id=project_id, operation="focus_group") as usage:
            rows = await gather_limited(
                (
                    answer(pid, profile, i)
                    for pid, profile in profiles
                    for i in range(len(questions))
                ),
                limit=self.focus_limit,
            )
        seconds = time.perf_counter() - start
        async with session_scope(self.sessions) as session:
            await ResponseRepository(session).add_many(rows)
            await UsageRepository(session).add(_usage_row(project_id, "focus_group", usage))
        return FocusGroupOut(
            id=group_id,
            personas=len(profiles),
            answers=len(rows),
            seconds=round(seconds, 3),
            answer_latency_ms=[r["latency_ms"] for r in rows],
            usage=_usage_out(usage),
        )


def _persona_prompt(brief: str, index: int, count: int) -> str:
    return (
        f"Create synthetic market-research persona {index + 1} of {count} for this study: "
        f"{brief}. Make them distinct from the others: vary age, occupation and attitudes. "
        "Return name, age, occupation and a two-sentence bio."
    )


def _profile(name: str, age: int, occupation: str, bio: str) -> str:
    return f"{name}, {age}, {occupation}. {bio}"


def _answer_prompt(profile: str, topic: str, question: str) -> str:
    return (
        f"You are this person: {profile}\nFocus group topic: {topic}\n"
        f"Question: {question}\nAnswer in two or three sentences, in your own voice."
    )
