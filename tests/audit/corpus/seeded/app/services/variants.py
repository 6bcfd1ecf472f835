"""Realistic variants: module aliases, absolute imports, decorators, nested functions."""

import asyncio
import functools

import app.core.retry
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from ..core import retry as r

router = APIRouter()


def traced(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@traced
def slow_lookup(url):
    return r.fetch_profile(url)


@router.get("/profile")
@traced
async def profile(url: str):
    return slow_lookup(url)  # expect: SC301


async def through_module_alias(connect):
    return r.connect_with_retry(connect)  # expect: SC301


async def through_absolute_import(url):
    return app.core.retry.fetch_profile(url)  # expect: SC301


class Summariser:
    def __init__(self, llm):
        self.llm = llm

    @staticmethod
    def _invoke(chain, text):
        return chain.invoke(text)

    async def run(self, chain, text):
        return self._invoke(chain, text)  # expect: SC303

    async def _model(self, text):
        return (await self.llm.ainvoke(text)).content

    async def nested(self, items):
        async def one(item):
            return await self._model(item.text)

        results = []
        for item in items:
            results.append(await one(item))  # expect: SC101
        return results

    async def fixed_pair(self):
        out = []
        for prompt in ("a", "b"):
            out.append(await self._model(prompt))  # expect: SC101
        return out

    async def rewrite(self, session: AsyncSession, doc_id):
        doc = await session.get(Document, doc_id)
        doc.text = await self._model(doc.text)  # expect: SC206
        await session.commit()

    async def rewrite_through_helper(self, session: AsyncSession, doc_id):
        doc = await load_document(session, doc_id)
        doc.text = await self._model(doc.text)  # expect: SC206
        await session.commit()


async def load_document(session: AsyncSession, doc_id):
    return await session.get(Document, doc_id)


async def schedule(jobs):
    loop = asyncio.get_running_loop()
    for job in jobs:
        task = loop.create_task(job())  # expect: SC501
        task.add_done_callback(lambda t: None)


async def schedule_chained(jobs, log_failure):
    for job in jobs:
        asyncio.create_task(job()).add_done_callback(log_failure)  # expect: SC501


class Document:
    text = ""
