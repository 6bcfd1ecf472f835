"""Look-alikes of the seeded service: concurrency capped, chains dependent, tasks kept."""

import asyncio
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sight_core.concurrency import TaskSupervisor, gather_limited
from sight_core.llm import build_chat_model

from ..core.helpers import Store, connect_with_retry, format_rows, redis_get_json, summarise_sync

llm = build_chat_model(tier="flash")  # clean: the model built once
supervisor = TaskSupervisor()
background: set[asyncio.Task] = set()


class ChatService:
    def __init__(self, session_factory: async_sessionmaker):
        self.session_factory = session_factory
        self.sem = asyncio.Semaphore(8)

    async def _answer(self, question):
        return (await llm.ainvoke(question)).content

    async def _guarded(self, question):
        async with self.sem:
            return await self._answer(question)

    async def interview(self, questions):  # clean: semaphore-guarded gather
        return await asyncio.gather(*(self._guarded(q) for q in questions))

    async def interview_limited(self, questions):  # clean: gather_limited
        return await gather_limited((self._answer(q) for q in questions), limit=8)

    async def follow_up(self, questions):  # clean: next call needs the previous answer
        answer = ""
        for question in questions:
            answer = await self._answer(f"{answer}\n{question}")
        return answer

    async def conversation(self, turns):  # clean: history grows each turn
        history = []
        for turn in turns:
            reply = await self._answer("\n".join([*history, turn]))
            history.append(reply)
        return history

    async def first_good(self, prompts):  # clean: stops at the first hit
        for prompt in prompts:
            answer = await self._answer(prompt)
            if answer:
                return answer
        return None

    async def fixed_pair(self):  # clean: two different prompts, gathered
        return await asyncio.gather(self._answer("a"), self._answer("b"))

    async def in_chunks(self, chunks):  # clean: each iteration is a batch
        out = []
        for chunk in chunks:
            out.extend(await llm.abatch(chunk))
        return out

    async def summarise(self, chain, text):  # clean: sync helper in a thread
        return await asyncio.to_thread(summarise_sync, chain, text)

    async def table(self, rows):  # clean: sync helper without I/O
        return format_rows(rows)

    async def describe(self, persona_id):  # clean: session closed before the model call
        async with self.session_factory() as session:
            persona = await session.get(Persona, persona_id)
            prompt = persona.prompt
        return await self._answer(prompt)

    async def describe_commit(self, session: AsyncSession, persona_id):  # clean: commit first
        persona = await session.get(Persona, persona_id)
        prompt = persona.prompt
        await session.commit()
        return await self._answer(prompt)

    async def model_then_write(self, session: AsyncSession, text):  # clean: model before query
        summary = await self._answer(text)
        session.add(Persona())
        await session.commit()
        return summary

    async def counts(self, session: AsyncSession, project_ids):  # clean: one GROUP BY
        stmt = (
            select(Persona.project_id, func.count())
            .where(Persona.project_id.in_(project_ids))
            .group_by(Persona.project_id)
        )
        return dict((await session.execute(stmt)).all())

    async def usage(self, prompt):  # clean: usage read from the message
        message = await llm.ainvoke(prompt)
        return message.usage_metadata, message.response_metadata.get("finish_reason")

    async def peek(self, key):  # clean: a cache read without a write-back
        return await redis_get_json(key)

    async def spawn_kept(self, job):  # clean: task kept in a set
        task = asyncio.create_task(job())
        background.add(task)
        task.add_done_callback(background.discard)

    async def spawn_awaited(self, job):  # clean: task awaited later
        task = asyncio.create_task(job())
        task.add_done_callback(lambda t: None)
        return await task

    async def spawn_returned(self, job):  # clean: task handed to the caller
        task = asyncio.create_task(job())
        task.add_done_callback(print)
        return task

    async def spawn_supervised(self, job):  # clean: TaskSupervisor keeps it
        supervisor.spawn(job(), name="job")

    async def task_group(self, jobs):  # clean: TaskGroup owns the tasks
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job())

    async def first_three(self, ids):  # clean: a slice of three
        return await asyncio.gather(*(self._answer(str(i)) for i in ids[:3]))


def connect_in_thread(connect):  # clean: a sync helper calling the sync retry
    return connect_with_retry(connect)


async def warm_up(connect):  # clean: the blocking helper handed to a thread
    return await asyncio.to_thread(connect_in_thread, connect)


@lru_cache
def get_store():  # clean: memoised dependency
    return Store()


class Persona:
    project_id = None
    prompt = ""
