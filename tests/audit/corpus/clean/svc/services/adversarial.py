"""Look-alikes written to trip the rules: counters, transactions that end, clients passed in,
blocking helpers handed to executors, lazy connections."""

import asyncio
import time

import redis
from fastapi import APIRouter, Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

router = APIRouter()
redis_client = Redis()
pool = redis.ConnectionPool()


async def get_counter(key):
    raw = await redis_client.get(key)
    return int(raw or 0)


async def set_counter(key, value):
    await redis_client.set(key, str(value), ex=60)


async def hit(key):  # clean: a counter read and written back is not a cache
    count = await get_counter(key)
    await set_counter(key, count + 1)
    return count + 1 < 100


async def rewrite(session: AsyncSession, llm, doc_id):  # clean: the transaction ends first
    async with session.begin():
        doc = await session.get(Doc, doc_id)
        text = doc.text
    return (await llm.ainvoke(text)).content


class Reporter:
    def __init__(self, client: Redis):  # clean: the client is passed in, not built
        self.client = client

    def connect(self):  # clean: a lazy connection not opened by __init__
        self.sync = redis.Redis(connection_pool=pool)


def get_reporter():  # clean: builds a class that opens nothing
    return Reporter(redis_client)


@router.get("/report")
async def report(reporter: Reporter = Depends(get_reporter)):  # clean
    return {"ok": reporter is not None}


def crunch(numbers):  # clean: CPU work only
    return sum(n * n for n in numbers)


def slow_io(path):
    time.sleep(0.5)
    return path


@router.get("/crunch")
async def crunch_route(numbers: list[int]):  # clean: sync helper without I/O
    return {"total": crunch(numbers)}


@router.get("/slow")
async def slow_route(path: str):  # clean: the blocking helper runs in the executor
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, slow_io, path)


@router.get("/slow2")
async def slow_route_lambda(path: str):  # clean: the blocking helper runs in a thread
    return await asyncio.to_thread(lambda: slow_io(path))


class Child:
    async def _pause(self):
        await asyncio.sleep(0.1)

    async def handle(self):  # clean: the awaited helper is async
        await self._pause()


class Doc:
    text = ""


class Saver:
    def __init__(self, session: AsyncSession, llm):
        self.session = session
        self.llm = llm

    async def _save(self, row):
        self.session.add(row)
        await self.session.flush()

    async def save_all(self, rows):  # clean: one write per row, not a model call
        for row in rows:
            await self._save(row)
        await self.session.commit()

    async def _ask(self, prompt):
        return (await self.llm.ainvoke(prompt)).content

    async def first_answer(self, prompts):  # clean: stops at the first answer
        for prompt in prompts:
            answer = await self._ask(prompt)
            if answer:
                break
        return prompts

    async def refine(self, draft, rounds):  # clean: each round refines the previous draft
        for _ in range(rounds):
            draft = await self._ask(draft)
        return draft


async def spawn_with_timeout(job):  # clean: the task is awaited with a timeout
    task = asyncio.create_task(job())
    task.add_done_callback(lambda t: None)
    return await asyncio.wait_for(task, 5)


from sight_core.llm import build_chat_model


class Answerer:
    def __init__(self):  # clean: sight_core's build_chat_model is cached per configuration
        self.llm = build_chat_model(tier="flash")


def get_answerer():  # clean: builds per request, but opens no new client
    return Answerer()


@router.get("/answer")
async def answer(a: Answerer = Depends(get_answerer)):  # clean
    return {"ok": a is not None}


async def shadowed(slow_io, path):  # clean: the parameter shadows the blocking helper
    return slow_io(path)


async def rebound(path):  # clean: the local name is rebound to an async-safe callable
    crunch = len
    slow_io = crunch
    return slow_io(path)


async def cached_or_generated(session: AsyncSession, llm, doc_id, fresh):  # clean: the query's branch returns
    if not fresh:
        doc = await session.get(Doc, doc_id)
        return doc.text
    return (await llm.ainvoke(str(doc_id))).content


class Stats:
    def __init__(self):
        self.hits = 0

    def bump(self):
        self.hits += 1
        return self.hits


class Tracker:
    def __init__(self):
        self.stats = Stats()

    async def track(self):  # clean: the held object's sync method does no I/O
        return self.stats.bump()


async def local_stats():  # clean: a local instance's sync method does no I/O
    stats = Stats()
    return stats.bump()


async def either(flag):  # clean: two possible classes, unknown, not guessed
    worker = Stats() if flag else Tracker()
    return worker.bump()


class Notifier:
    def __init__(self, client: Redis | None = None):
        self.client = client or Redis.from_url("redis://localhost")


def get_notifier():  # clean: the shared client is passed in, the fallback never runs
    return Notifier(redis_client)


@router.get("/notify")
async def notify(n: Notifier = Depends(get_notifier)):  # clean
    return {"ok": n is not None}


async def load_session(session_id):
    raw = await redis_client.get(f"sess:v1:{session_id}")
    return raw or None


async def save_session(session_id, data):
    await redis_client.set(f"sess:v1:{session_id}", data, ex=3600)


async def touch_session(session_id):  # clean: stored state read, changed, written back
    session = await load_session(session_id)
    if session is None:
        return None
    await save_session(session_id, session + b"!")
    return session


async def slide_session(session_id):  # clean: expiry refreshed on the value just read
    session = await redis_client.get(f"sess:v1:{session_id}")
    if session is None:
        return None
    await redis_client.set(f"sess:v1:{session_id}", session, ex=3600)
    return session


async def read_then_release(session: AsyncSession, doc_id):
    doc = await session.get(dict, doc_id)
    await session.commit()
    return doc


async def rewrite_through_helper(session: AsyncSession, llm, doc_id):  # clean: helper ends it
    doc = await read_then_release(session, doc_id)
    return (await llm.ainvoke(doc)).content
