"""Variants written to slip past the rules: super(), inherited __init__, yield dependencies,
transactions, aliases of imported helpers."""

import asyncio

import httpx
import redis
from fastapi import APIRouter, Depends
from sqlalchemy.ext.asyncio import AsyncSession

from ..core.retry import fetch_profile as fp

router = APIRouter()
lookup = fp


class BaseWorker:
    def _sync_io(self, url):
        return fetch_profile_twice(url)

    async def handle(self, url):
        return url


def fetch_profile_twice(url):
    return [fp(url), fp(url)]


class Worker(BaseWorker):
    async def handle(self, url):
        return super()._sync_io(url)  # expect: SC301


async def through_alias(url):
    return lookup(url)  # expect: SC301


class BaseService:
    def __init__(self):
        self.redis = redis.from_url("redis://localhost")


class UserService(BaseService):
    async def name(self, user_id):
        return str(user_id)


def get_user_service():
    return UserService()  # expect: SC701


class HttpService:
    def __init__(self):
        self.client = httpx.AsyncClient(timeout=5)

    async def close(self):
        await self.client.aclose()


async def get_http_service():
    service = HttpService()  # expect: SC701
    try:
        yield service
    finally:
        await service.close()


@router.get("/users/{user_id}")
async def user(
    user_id: int,
    users: UserService = Depends(get_user_service),
    http: HttpService = Depends(get_http_service),
):
    return await users.name(user_id)


async def rewrite_in_transaction(session: AsyncSession, llm, doc_id):
    async with session.begin():
        doc = await session.get(Doc, doc_id)
        doc.text = (await llm.ainvoke(doc.text)).content  # expect: SC206


class Doc:
    text = ""


async def fire_and_forget(job):
    future = asyncio.ensure_future(job())  # expect: SC501
    return None


class Translator:
    def __init__(self, llm):
        self.llm = llm

    async def _translate(self, text, language):
        return (await self.llm.ainvoke(f"{language}: {text}")).content

    async def all_languages(self, text, languages):
        out = {}
        for language in sorted(languages):
            out[language] = await self._translate(text, language)  # expect: SC101
        return out


async def generate_unless_cached(session: AsyncSession, llm, doc_id):
    doc = await session.get(Doc, doc_id)
    if doc.text:
        return doc.text
    doc.text = (await llm.ainvoke(str(doc_id))).content  # expect: SC206
    await session.commit()
    return doc.text


class Index:
    def __init__(self, path):
        self.path = path

    def search(self, query):
        return fp(f"{self.path}?q={query}")

    async def asearch(self, query, llm):
        return (await llm.ainvoke(query)).content


class Finder:
    def __init__(self):
        self.index = Index("/idx")

    async def find(self, query):
        return self.index.search(query)  # expect: SC301


async def local_instance(query):
    index = Index("/tmp")
    return index.search(query)  # expect: SC301


@router.get("/search")
async def search_route(query: str, index: Index = Depends(Index)):
    return index.search(query)  # expect: SC301


async def many(index: Index, queries, llm):
    out = []
    for query in queries:
        out.append(await index.asearch(query, llm))  # expect: SC101
    return out


class Notifier:
    def __init__(self, client=None):
        self.client = client or redis.from_url("redis://localhost")


def get_notifier():
    return Notifier()  # expect: SC701


@router.get("/notify")
async def notify(n: Notifier = Depends(get_notifier)):
    return {"ok": n is not None}
