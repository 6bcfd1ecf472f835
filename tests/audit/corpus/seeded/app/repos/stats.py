"""Repositories and jobs with the classic database and cache anti-patterns."""

import asyncio
import json

import redis
from neo4j import AsyncDriver
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

sync_redis = redis.Redis()


class StatsRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def count_answers(self, survey_id):
        return await self.session.scalar(
            select(func.count()).where(Answer.survey_id == survey_id)
        )

    async def _load(self, persona_id):
        return await self.session.get(Persona, persona_id)

    async def loaded(self, persona_id):
        return await self._load(persona_id)

    async def dashboard(self, survey_ids):
        out = {}
        for survey_id in survey_ids:
            out[survey_id] = await self.count_answers(survey_id)  # expect: SC202
        return out

    async def team(self, member_ids):
        members = []
        for member_id in member_ids:
            members.append(await self.loaded(member_id))  # expect: SC202
        return members

    async def answers_per_persona(self):
        personas = (await self.session.scalars(select(Persona))).all()
        out = {}
        for persona in personas:
            out[persona.id] = await self.session.scalars(  # expect: SC201
                select(Answer).where(Answer.persona_id == persona.id)
            )
        return out

    async def project_names(self):
        personas = (await self.session.scalars(select(Persona))).all()
        return [p.project.name for p in personas]  # expect: SC203

    async def parallel(self, ids):
        return await asyncio.gather(*(self.session.get(Persona, i) for i in ids[:3]))  # expect: SC204


async def write_nodes(driver: AsyncDriver, people):
    async with driver.session() as session:
        for person in people:
            await session.run("MERGE (p:Person {id: $id})", id=person.id)  # expect: SC205


async def sync_cache(key):
    return sync_redis.get(key)  # expect: SC302


async def sync_orm(engine, persona_id):
    with Session(engine) as session:  # expect: SC302
        return session.get(Persona, persona_id)  # expect: SC302


async def save_profile(cache, user_id, profile):
    await cache.set(f"profile:{user_id}", json.dumps(profile))  # expect: SC402


async def classify(llm, text):
    try:
        return (await llm.ainvoke(f"Classify: {text}")).content
    except Exception:
        return "neutral"  # expect: SC601


class Answer:
    survey_id = None
    persona_id = None


class Persona:
    id = None
    project = None
