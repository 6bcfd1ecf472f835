"""SC201 N+1, SC202 query per item, SC203 lazy relationships, SC204 shared session, SC205 graph."""

from __future__ import annotations

import pytest

from ._helpers import assert_clean, assert_flags

SC201_POSITIVE = {
    "project-per-persona": """
        from sqlalchemy import select
        from sqlalchemy.ext.asyncio import AsyncSession

        async def persona_cards(session: AsyncSession, project_id):
            stmt = select(Persona).where(Persona.project_id == project_id)
            personas = (await session.scalars(stmt)).all()
            cards = []
            for persona in personas:
                project = await session.get(Project, persona.project_id)  # expect
                cards.append((persona.name, project.name))
            return cards
        """,
    "answers-per-survey-row": """
        async def export(session, survey_id):
            result = await session.execute(select(Response).where(Response.survey_id == survey_id))
            rows = []
            for response in result.scalars():
                answers = await session.scalars(  # expect
                    select(Answer).where(Answer.response_id == response.id)
                )
                rows.append((response.id, answers.all()))
            return rows
        """,
    "repository-inside-loop-over-repository": """
        class ReportService:
            def __init__(self, personas: PersonaRepository, interviews: InterviewRepository):
                self.personas = personas
                self.interviews = interviews

            async def report(self, project_id):
                out = {}
                for persona in await self.personas.list(project_id=project_id):
                    out[persona.id] = await self.interviews.get_for_persona(persona.id)  # expect
                return out
        """,
    "async-for-stream": """
        async def tags(db: AsyncSession):
            async for row in await db.stream_scalars(select(Persona)):
                tag = await db.scalar(select(Tag).where(Tag.persona_id == row.id))  # expect
                print(tag)
        """,
}

SC201_NEGATIVE = {
    "name-rebound-from-itself": """
        async def settle(session: AsyncSession, calls):
            calls = list(calls)
            for c in calls:
                print(c)
            return {c["id"]: c for c in calls}
        """,
    "eager-loaded-single-query": """
        async def persona_cards(session: AsyncSession, project_id):
            stmt = (
                select(Persona)
                .options(selectinload(Persona.project))
                .where(Persona.project_id == project_id)
            )
            personas = (await session.scalars(stmt)).all()
            return [(p.name, p.project.name) for p in personas]
        """,
    "query-not-using-loop-variable": """
        async def totals(session: AsyncSession):
            projects = (await session.scalars(select(Project))).all()
            for project in projects:
                project.seen = True
            count = await session.scalar(select(func.count(Persona.id)))
            return count
        """,
    "loop-over-request-body-not-query": """
        @router.post("/personas/bulk")
        async def bulk_create(body: list[PersonaIn], session: AsyncSession = Depends(get_session)):
            for item in body:
                session.add(Persona(**item.model_dump()))
            await session.commit()
        """,
    "get-many-after-query": """
        async def persona_cards(repo: PersonaRepository, projects: ProjectRepository, pid):
            personas = await repo.list(project_id=pid)
            by_id = await projects.get_many([p.project_id for p in personas])
            return [(p.name, by_id[p.project_id].name) for p in personas]
        """,
}


@pytest.mark.parametrize("source", SC201_POSITIVE.values(), ids=SC201_POSITIVE.keys())
def test_sc201_flags_queries_per_row(source: str) -> None:
    assert_flags(source, "SC201")


@pytest.mark.parametrize("source", SC201_NEGATIVE.values(), ids=SC201_NEGATIVE.keys())
def test_sc201_accepts_batched_loading(source: str) -> None:
    assert_clean(source, "SC201")


SC202_POSITIVE = {
    "session-get-per-id": """
        @router.get("/personas")
        async def get_personas(ids: list[UUID], session: AsyncSession = Depends(get_session)):
            personas = []
            for persona_id in ids:
                persona = await session.get(Persona, persona_id)  # expect
                personas.append(persona)
            return personas
        """,
    "repository-get-per-id": """
        async def load_team(repo: PersonaRepository, member_ids: list[int]):
            team = {}
            for member_id in member_ids:
                team[member_id] = await repo.get(member_id)  # expect
            return team
        """,
    "select-per-email": """
        async def find_users(db: AsyncSession, emails: list[str]):
            users = []
            for email in emails:
                stmt = select(User).where(User.email == email)
                users.append(await db.scalar(stmt))  # expect
            return users
        """,
}

SC202_NEGATIVE = {
    "writes-not-reads": """
        async def save(session: AsyncSession, rows):
            for row in rows:
                await session.merge(row)
            await session.commit()
        """,
    "search-stops-at-first-hit": """
        async def first_free_slug(session: AsyncSession, candidates: list[str]):
            for slug in candidates:
                if await session.scalar(select(Project.id).where(Project.slug == slug)) is None:
                    return slug
            return None
        """,
    "cursor-pagination-depends-on-previous-page": """
        async def all_ids(session: AsyncSession, pages: int):
            cursor = 0
            ids = []
            for _ in range(pages):
                stmt = select(Row.id).where(Row.id > cursor).limit(100)
                batch = (await session.scalars(stmt)).all()
                ids += batch
                cursor = batch[-1]
            return ids
        """,
    "chunked-delete-returning": """
        async def delete_many(session: AsyncSession, ids: list[int]):
            removed = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                stmt = delete(Persona).where(Persona.id.in_(chunk)).returning(Persona)
                removed.extend(await session.scalars(stmt))
            return removed
        """,
    "already-batched-ids": """
        async def load(session: AsyncSession, id_batches):
            out = []
            for batch in id_batches:
                out += (await session.scalars(select(Persona).where(Persona.id.in_(batch)))).all()
            return out
        """,
    "bounded-literal": """
        async def defaults(session: AsyncSession):
            out = []
            for name in ("admin", "viewer"):
                out.append(await session.scalar(select(Role).where(Role.name == name)))
            return out
        """,
}


@pytest.mark.parametrize("source", SC202_POSITIVE.values(), ids=SC202_POSITIVE.keys())
def test_sc202_flags_read_per_item(source: str) -> None:
    assert_flags(source, "SC202")


@pytest.mark.parametrize("source", SC202_NEGATIVE.values(), ids=SC202_NEGATIVE.keys())
def test_sc202_accepts_writes_searches_and_dependent_pages(source: str) -> None:
    assert_clean(source, "SC202")


SC203_POSITIVE = {
    "relationship-attribute": """
        async def persona_rows(session: AsyncSession):
            personas = (await session.scalars(select(Persona))).all()
            rows = []
            for persona in personas:
                rows.append({"name": persona.name, "project": persona.project.name})  # expect
            return rows
        """,
    "collection-iterated": """
        async def transcript(session: AsyncSession, interview_id):
            stmt = select(Interview).where(Interview.id == interview_id)
            result = await session.execute(stmt)
            lines = []
            for interview in result.scalars():
                for answer in interview.answers:  # expect
                    lines.append(answer.text)
            return lines
        """,
    "scalars-on-session": """
        async def owners(db: AsyncSession):
            for project in await db.scalars(select(Project).where(Project.active)):
                print(project.owner.email)  # expect
        """,
}

SC203_POSITIVE |= {
    "relationship-in-a-list-comprehension": """
        async def persona_out(session: AsyncSession):
            rows = (await session.scalars(select(Persona))).all()
            return [PersonaOut(name=p.name, project=p.project.name) for p in rows]  # expect
        """,
    "relationship-in-a-dict-comprehension-over-the-query": """
        async def owners(db: AsyncSession):
            return {
                project.id: project.owner.email  # expect
                for project in await db.scalars(select(Project))
            }
        """,
    "collection-in-a-generator-expression": """
        async def answer_count(session: AsyncSession):
            result = await session.scalars(select(Interview))
            return sum(len(list(a.text for a in i.answers)) for i in result)  # expect
        """,
}

SC203_NEGATIVE = {
    "selectinload-options": """
        async def persona_rows(session: AsyncSession):
            stmt = select(Persona).options(selectinload(Persona.project))
            for persona in (await session.scalars(stmt)).all():
                print(persona.project.name)
        """,
    "column-methods-and-enum-value": """
        async def persona_rows(session: AsyncSession):
            for persona in (await session.scalars(select(Persona))).all():
                print(persona.created_at.isoformat(), persona.status.value, persona.name.upper())
        """,
    "rows-not-entities": """
        async def names(session: AsyncSession):
            result = await session.execute(select(Persona.id, Persona.name))
            for row in result:
                print(row.name.title)
        """,
    "array-column-of-strings": """
        async def tags(session: AsyncSession):
            for persona in (await session.scalars(select(Persona))).all():
                for tag in persona.tags:
                    print(tag.lower())
        """,
    "repository-never-lazy-loads": """
        async def rows(repo: PersonaRepository):
            for persona in await repo.list():
                print(persona.project.name)
        """,
    "comprehension-with-selectinload": """
        async def persona_out(session: AsyncSession):
            stmt = select(Persona).options(selectinload(Persona.project))
            rows = (await session.scalars(stmt)).all()
            return [PersonaOut(name=p.name, project=p.project.name) for p in rows]
        """,
    "comprehension-over-columns-only": """
        async def labels(session: AsyncSession):
            rows = (await session.scalars(select(Persona))).all()
            return [f"{p.name.title()} ({p.created_at.isoformat()})" for p in rows]
        """,
    "comprehension-over-plain-dicts": """
        async def labels(payload: list[dict]):
            return [item.project.name for item in payload]
        """,
}


@pytest.mark.parametrize("source", SC203_POSITIVE.values(), ids=SC203_POSITIVE.keys())
def test_sc203_flags_lazy_relationships(source: str) -> None:
    assert_flags(source, "SC203")


@pytest.mark.parametrize("source", SC203_NEGATIVE.values(), ids=SC203_NEGATIVE.keys())
def test_sc203_accepts_eager_loads_and_columns(source: str) -> None:
    assert_clean(source, "SC203")


SC204_POSITIVE = {
    "same-session-two-coroutines": """
        import asyncio

        @router.get("/projects/{pid}/overview")
        async def overview(pid, session: AsyncSession = Depends(get_session)):
            personas, surveys = await asyncio.gather(  # expect
                load_personas(session, pid), load_surveys(session, pid)
            )
            return personas, surveys
        """,
    "session-methods-gathered": """
        import asyncio

        async def counts(session: AsyncSession):
            return await asyncio.gather(  # expect
                session.scalar(select(func.count(Persona.id))),
                session.scalar(select(func.count(Survey.id))),
            )
        """,
    "session-into-gather-limited-comprehension": """
        from sight_core.concurrency import gather_limited

        async def refresh_all(sessionmaker, ids):
            async with sessionmaker() as session:
                await gather_limited((refresh(session, i) for i in ids), limit=5)  # expect
        """,
    "taskgroup-in-loop": """
        import asyncio

        async def score(db: AsyncSession, persona_ids):
            async with asyncio.TaskGroup() as tg:
                for pid in persona_ids:
                    tg.create_task(score_one(db, pid))  # expect
        """,
}

SC204_NEGATIVE = {
    "session-per-task": """
        import asyncio

        async def refresh_all(sessionmaker, ids):
            async def one(i):
                async with sessionmaker() as session:
                    return await refresh(session, i)
            return await asyncio.gather(*(one(i) for i in ids[:5]))
        """,
    "aiohttp-session-is-shareable": """
        import asyncio
        import aiohttp

        async def fetch_all(urls):
            async with aiohttp.ClientSession() as session:
                return await asyncio.gather(*(fetch(session, u) for u in urls))
        """,
    "one-task-uses-session": """
        import asyncio

        async def overview(pid, session: AsyncSession):
            personas, summary = await asyncio.gather(load_personas(session, pid), llm.ainvoke("x"))
            return personas, summary
        """,
    "unannotated-helper-parameter": """
        import asyncio

        async def fetch_all(session, urls):
            return await asyncio.gather(*(session.get(u) for u in urls))
        """,
}


@pytest.mark.parametrize("source", SC204_POSITIVE.values(), ids=SC204_POSITIVE.keys())
def test_sc204_flags_session_shared_by_tasks(source: str) -> None:
    assert_flags(source, "SC204")


@pytest.mark.parametrize("source", SC204_NEGATIVE.values(), ids=SC204_NEGATIVE.keys())
def test_sc204_accepts_session_per_task_and_http_sessions(source: str) -> None:
    assert_clean(source, "SC204")


SC205_POSITIVE = {
    "merge-per-persona": """
        from neo4j import AsyncGraphDatabase

        driver = AsyncGraphDatabase.driver("bolt://localhost:7687")

        async def sync_personas(personas):
            async with driver.session() as neo:
                for p in personas:
                    await neo.run("MERGE (p:Persona {id: $id})", id=p.id)  # expect
        """,
    "graph-client-write-with-constant": """
        LINK = "MATCH (a:Persona {id: $a}), (b:Persona {id: $b}) CREATE (a)-[:KNOWS]->(b)"

        async def link_all(graph: GraphClient, pairs):
            for a, b in pairs:
                await graph.write(LINK, {"a": a, "b": b})  # expect
        """,
    "execute-query-per-edge": """
        async def tag(driver: AsyncDriver, tags):
            for t in tags:
                await driver.execute_query("MERGE (:Tag {name: $n})", n=t)  # expect
        """,
}

SC205_NEGATIVE = {
    "unwind-batch": """
        async def sync_personas(graph: GraphClient, personas):
            rows = [{"id": p.id} for p in personas]
            await graph.write_batch("UNWIND $rows AS row MERGE (p:Persona {id: row.id})", rows)
        """,
    "reads-in-loop": """
        async def neighbours(graph: GraphClient, ids):
            out = []
            for i in ids:
                out.append(await graph.read("MATCH (p {id: $id})--(q) RETURN q", {"id": i}))
            return out
        """,
    "unwind-inside-loop-over-chunks": """
        async def sync(graph: GraphClient, chunks):
            for chunk in chunks:
                await graph.write("UNWIND $rows AS r MERGE (:P {id: r.id})", {"rows": chunk})
        """,
}


@pytest.mark.parametrize("source", SC205_POSITIVE.values(), ids=SC205_POSITIVE.keys())
def test_sc205_flags_graph_write_per_item(source: str) -> None:
    assert_flags(source, "SC205")


@pytest.mark.parametrize("source", SC205_NEGATIVE.values(), ids=SC205_NEGATIVE.keys())
def test_sc205_accepts_unwind_and_reads(source: str) -> None:
    assert_clean(source, "SC205")
