"""The reference use: a persona's memories recalled by ``repo.nearest``, cached until they
change. Same answer as the Python cosine loop it replaces; one statement instead of a full
load; a cached recall sends nothing to PostgreSQL; a new memory is recalled at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from examples.sight_service.memories import (
    MemoryService,
    create_memory_schema,
    rank_memories_in_python,
)
from examples.sight_service.services import cache
from sight_core.db import count_queries, create_engine, create_sessionmaker
from sight_core.llm import build_embeddings
from sight_core.settings import SightSettings

MEMORIES = [
    "I drink black coffee every morning before work",
    "my daughter plays the violin in the school orchestra",
    "the quarterly tax filing deadline is next week",
    "we flew to Lisbon for the summer holidays",
    "espresso after lunch keeps me awake in meetings",
    "I started running half marathons last spring",
    "our team switched to a four-day work week",
]


@pytest.fixture
async def service(settings: SightSettings, redis_client: Redis) -> AsyncIterator[MemoryService]:
    engine = create_engine(settings.database)
    await create_memory_schema(engine)
    cache.bind(redis_client)
    try:
        yield MemoryService(create_sessionmaker(engine), build_embeddings(settings=settings))
    finally:
        await cache.aclose()
        await engine.dispose()


async def test_recall_matches_the_python_loop_in_one_statement(service: MemoryService) -> None:
    persona, other = uuid.uuid4(), uuid.uuid4()
    await service.remember(persona, MEMORIES)
    await service.remember(other, ["coffee, coffee and more coffee every morning"])
    engine = service.sessions.kw["bind"]
    async with count_queries(engine) as miss:
        recalled = await service.recall(persona, "what coffee does she drink in the morning?")
    assert miss.count == 2  # SET LOCAL hnsw.ef_search, then the search
    assert recalled[0] == MEMORIES[0] and len(recalled) == 5
    question = await service.embeddings.aembed_query("what coffee does she drink in the morning?")
    async with service.sessions() as session:
        before = await rank_memories_in_python(session, persona, question, 5)
    assert [m.content for m in before] == recalled


async def test_cached_recall_until_a_memory_is_added(service: MemoryService) -> None:
    persona = uuid.uuid4()
    await service.remember(persona, MEMORIES)
    first = await service.recall(persona, "coffee in the morning")
    engine = service.sessions.kw["bind"]
    async with count_queries(engine) as hit:
        assert await service.recall(persona, "coffee in the morning") == first
    assert hit.count == 0
    await service.remember(persona, ["every morning I grind fresh coffee beans"])
    assert "every morning I grind fresh coffee beans" in await service.recall(
        persona, "coffee in the morning"
    )
