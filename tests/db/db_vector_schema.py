"""Tables of the vector-search tests, one per index preset, on their own metadata.

Created on first use in the test database (with their indexes, from the same
:class:`VectorIndex` objects the repositories search with) and emptied by :func:`reset`.
"""

from __future__ import annotations

from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import Index, Text, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sight_core.db import Repository, TextSearch, VectorIndex

DIMS = 16
WIDE = 2_100  # more than pgvector indexes as ``vector``: needs the halfvec expression index
BITS = 64


class VectorBase(DeclarativeBase):
    pass


class Memory(VectorBase):
    """A persona's memory: the platform's ``persona_events`` in small."""

    __tablename__ = "v_memories"

    id: Mapped[int] = mapped_column(primary_key=True)
    persona: Mapped[int] = mapped_column(index=True)
    topic: Mapped[str] = mapped_column(default="misc")
    content: Mapped[str] = mapped_column(Text, default="")
    embedding: Mapped[Any] = mapped_column(Vector(DIMS))


MEMORY_INDEX = VectorIndex.hnsw("embedding", m=8, ef_construction=32)
MEMORY_TEXT = TextSearch("content", config="english")
MEMORY_INDEX.index("v_memories_embedding_hnsw", Memory)
MEMORY_TEXT.index("v_memories_content_fts", Memory)


class MemoryRepository(Repository[Memory]):
    vector_index = MEMORY_INDEX
    text_search = MEMORY_TEXT


class Wide(VectorBase):
    __tablename__ = "v_wide"

    id: Mapped[int] = mapped_column(primary_key=True)
    grp: Mapped[int]
    embedding: Mapped[Any] = mapped_column(Vector(WIDE))


WIDE_INDEX = VectorIndex.halfvec("embedding", WIDE, m=8, ef_construction=32)
WIDE_INDEX.index("v_wide_embedding_halfvec", Wide)


class WideRepository(Repository[Wide]):
    vector_index = WIDE_INDEX


class Coarse(VectorBase):
    __tablename__ = "v_coarse"

    id: Mapped[int] = mapped_column(primary_key=True)
    grp: Mapped[int]
    embedding: Mapped[Any] = mapped_column(Vector(DIMS))


COARSE_INDEX = VectorIndex.ivfflat("embedding", lists=4, distance="l2")
COARSE_INDEX.index("v_coarse_embedding_ivfflat", Coarse)


class CoarseRepository(Repository[Coarse]):
    vector_index = COARSE_INDEX


class Quantized(VectorBase):
    __tablename__ = "v_quantized"

    id: Mapped[int] = mapped_column(primary_key=True)
    grp: Mapped[int]
    embedding: Mapped[Any] = mapped_column(Vector(BITS))


QUANTIZED_INDEX = VectorIndex.binary("embedding", BITS, rerank=4)
QUANTIZED_INDEX.index("v_quantized_embedding_bits", Quantized)


class QuantizedRepository(Repository[Quantized]):
    vector_index = QUANTIZED_INDEX


ALL_INDEXES: list[Index] = [
    index for table in VectorBase.metadata.sorted_tables for index in table.indexes
]
_TABLES = ", ".join(t.name for t in reversed(VectorBase.metadata.sorted_tables))


async def reset(engine: AsyncEngine) -> None:
    """Create the tables (and their indexes) if needed and empty them."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(1808)"))
        await conn.run_sync(VectorBase.metadata.create_all)
        await conn.execute(text(f"TRUNCATE {_TABLES}"))
