"""A focus-group persona's memories: stored with Gemini embeddings, recalled by similarity.

The platform ranked a persona's memories with a 54-line Python cosine loop over every row it
loaded (:func:`rank_memories_in_python`, kept here condensed as the "before"), and cached its
RAG search for 7 days with no invalidation. :class:`MemoryService` is the reference use of
sight-core for it: embeddings from :func:`~sight_core.llm.build_embeddings` (retries, breaker,
cap, usage), a ``halfvec`` HNSW index for the 3,072-dimension vectors, ``repo.nearest`` (exactly
k rows of that persona, ranked in SQL), and results cached per persona until that persona's
memories change.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pgvector.sqlalchemy import Vector
from sqlalchemy import Text, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sight_core.db import Repository, TextSearch, VectorIndex, session_scope
from sight_core.llm import ResilientEmbeddings

from .services import cache

__all__ = [
    "MEMORY_INDEX",
    "MemoryRepository",
    "MemoryService",
    "PersonaMemory",
    "create_memory_schema",
    "rank_memories_in_python",
]

DIMENSIONS = 3072
MEMORY_TAG = "memories:{persona_id}"


class MemoryBase(DeclarativeBase):
    pass


class PersonaMemory(MemoryBase):
    __tablename__ = "persona_memories"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    persona_id: Mapped[uuid.UUID] = mapped_column(index=True)
    content: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(Vector(DIMENSIONS))


MEMORY_INDEX = VectorIndex.halfvec("embedding", DIMENSIONS)
MEMORY_TEXT = TextSearch("content", config="english")
MEMORY_INDEX.index("persona_memories_embedding_hnsw", PersonaMemory)
MEMORY_TEXT.index("persona_memories_content_fts", PersonaMemory)


class MemoryRepository(Repository[PersonaMemory]):
    vector_index = MEMORY_INDEX
    text_search = MEMORY_TEXT


async def create_memory_schema(engine: AsyncEngine) -> None:
    """The ``vector`` extension, the table and its two indexes (an example's shortcut: real
    services migrate with Alembic, from the same ``VectorIndex.index`` objects)."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        await conn.run_sync(MemoryBase.metadata.create_all)


async def rank_memories_in_python(
    session: AsyncSession, persona_id: uuid.UUID, question: Sequence[float], k: int
) -> list[PersonaMemory]:
    """BEFORE: load every memory of the persona, cosine in Python, sort. Moves every row
    (3,072 floats each) over the network; kept to show ``recall`` answers the same."""
    rows = (
        await session.scalars(select(PersonaMemory).where(PersonaMemory.persona_id == persona_id))
    ).all()
    q_norm = math.sqrt(sum(x * x for x in question))
    scored = []
    for row in rows:
        dot = sum(a * b for a, b in zip(row.embedding, question, strict=True))
        norm = math.sqrt(sum(a * a for a in row.embedding))
        scored.append((dot / (norm * q_norm), row))
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [row for _, row in scored[:k]]


RECALL_K = 5


@dataclass
class MemoryService:
    """Remember and recall a persona's memories."""

    sessions: async_sessionmaker[AsyncSession]
    embeddings: ResilientEmbeddings

    async def remember(self, persona_id: uuid.UUID, contents: Sequence[str]) -> list[uuid.UUID]:
        """Embed ``contents`` (batched), store them, and drop the persona's cached recalls."""
        vectors = await self.embeddings.aembed_documents(list(contents))
        async with session_scope(self.sessions) as session:
            ids = await MemoryRepository(session).add_many(
                {"persona_id": persona_id, "content": c, "embedding": v}
                for c, v in zip(contents, vectors, strict=True)
            )
        await cache.invalidate_tags(cache.tag(MEMORY_TAG, persona_id=persona_id))
        return ids

    @cache.cached(
        namespace="persona-recall",
        version=MEMORY_INDEX.cache_version(k=RECALL_K, ef_search=100),
        ttl=7 * 86_400,
        key="{persona_id}:{question}",
        tags=(MEMORY_TAG,),
    )
    async def recall(self, persona_id: uuid.UUID, question: str) -> list[str]:
        """The persona's ``RECALL_K`` memories nearest to ``question``, nearest first: one
        embedding request and one statement on a miss, one Redis read on a hit."""
        vector = await self.embeddings.aembed_query(question)
        async with self.sessions() as session:
            found = await MemoryRepository(session).nearest(
                vector,
                RECALL_K,
                where=PersonaMemory.persona_id == persona_id,
                ef_search=100,
            )
        return [n.item.content for n in found]
