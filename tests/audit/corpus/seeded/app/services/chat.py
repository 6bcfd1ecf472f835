"""A service class built per request, with the model calls inside its methods."""

import asyncio

import httpx
import redis
from langchain_google_genai import ChatGoogleGenerativeAI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..core import connect, summarise_sync
from ..core.cache import redis_get_json, redis_set_json
from ..core.retry import VectorStore, fetch_profile, render_pdf

summarise = summarise_sync  # a module-level alias


class ChatService:
    def __init__(self, llm, session_factory: async_sessionmaker):
        self.llm = llm
        self.session_factory = session_factory
        self.redis_client = redis.from_url("redis://localhost:6379/0")

    async def _generate_answer_for_question(self, question):
        response = await self.llm.ainvoke(question)
        return response.content

    async def _ask(self, question):
        return await self._generate_answer_for_question(question)

    async def interview(self, questions):
        answers = []
        for question in questions:
            answer = await self._generate_answer_for_question(question)  # expect: SC101
            answers.append(answer)
        return answers

    async def interview_deep(self, personas):
        out = {}
        for persona in personas:
            for question in persona.questions:
                out[(persona.id, question)] = await self._ask(question)  # expect: SC101
        return out

    async def summaries(self, texts):
        return [await self._ask(t) for t in texts]  # expect: SC101

    async def summarise_one(self, chain, text):
        return summarise(chain, text)  # expect: SC303

    async def summarise_reexported(self, chain, text):
        return summarise_sync(chain, text)  # expect: SC303

    async def describe_personas(self, persona_ids):
        async with self.session_factory() as session:
            rows = (await session.execute(select(Persona).where(Persona.id.in_(persona_ids)))).all()
            for row in rows:
                row.summary = await self._ask(row.prompt)  # expect: SC101 SC206
            await session.commit()

    async def score(self, session: AsyncSession, persona_id):
        persona = await session.get(Persona, persona_id)
        verdict = await self.llm.ainvoke(persona.prompt)  # expect: SC206
        persona.score = verdict.content
        await session.commit()

    async def usage(self, prompt):
        message = await self.llm.ainvoke(prompt)
        return message.response_metadata["usage_metadata"]["total_tokens"]  # expect: SC602

    async def usage_get(self, prompt):
        message = await self.llm.ainvoke(prompt)
        meta = message.response_metadata.get("usage_metadata", {})  # expect: SC602
        return meta

    async def store(self, connect_fn):
        return VectorStore.open(connect_fn)  # expect: SC301

    async def profile(self, url):
        return fetch_profile(url)  # expect: SC301

    async def export(self, path):
        render_pdf(path)  # expect: SC301

    async def counts(self, session: AsyncSession, project_ids):
        totals = {}
        for project_id in project_ids:
            totals[project_id] = await session.scalar(  # expect: SC202
                select(func.count()).where(Persona.project_id == project_id)
            )
        return totals

    async def cached_summary(self, persona_id):
        key = f"summary:v3:{persona_id}"
        cached = await redis_get_json(key)  # expect: SC401
        if cached is not None:
            return cached
        value = await self._ask(str(persona_id))
        await redis_set_json(key, value)
        return value


async def load_store(connect_fn):
    store = connect(connect_fn)  # expect: SC301
    return store


async def ask_fresh_model(question):
    llm = ChatGoogleGenerativeAI(model="gemini-2.5-flash")  # expect: SC701
    return (await llm.ainvoke(question)).content


async def fetch_all(urls):
    async with httpx.AsyncClient() as client:  # expect: SC701
        return await asyncio.gather(*[client.get(u) for u in urls])  # expect: SC102


class Persona:
    id = None
    project_id = None
    prompt = ""
