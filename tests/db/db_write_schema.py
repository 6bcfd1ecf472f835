"""Tables of the write-path tests: members of segments, and a table holding every column type.

They live on their own metadata (not ``db_schema.Base``), created on first use in the test
database and emptied by :func:`reset`, so the write tests do not change the shared schema.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    LargeBinary,
    Numeric,
    String,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sight_core.db import Repository


class WriteBase(DeclarativeBase):
    pass


class Segment(WriteBase):
    __tablename__ = "w_segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class Member(WriteBase):
    """A persona-like row: nullable columns an upsert must not touch when a row omits them."""

    __tablename__ = "w_members"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str | None] = mapped_column(String(100))
    age: Mapped[int | None]
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("w_segments.id"))
    score: Mapped[float] = mapped_column(default=0.0)

    segment: Mapped[Segment | None] = relationship()


class Mood(enum.Enum):
    happy = "happy"
    sad = "sad"
    plain_old = "plain old"


class _EveryType:
    """Every column type the write paths must store as ``insert(Model)`` does."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    doc: Mapped[Any] = mapped_column(JSON, nullable=True)
    docb: Mapped[Any] = mapped_column(JSONB, nullable=True)
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(String))
    counts: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    embedding: Mapped[Any] = mapped_column(Vector(3), nullable=True)
    half: Mapped[Any] = mapped_column(HALFVEC(3), nullable=True)
    mood: Mapped[Mood | None] = mapped_column(Enum(Mood, name="w_mood"))
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(12, 4))
    ratio: Mapped[float | None]
    at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ref: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    code: Mapped[str | None] = mapped_column(String(5))
    label: Mapped[str] = mapped_column(String(20), server_default=text("'unnamed'"))
    rank: Mapped[int] = mapped_column(server_default=text("7"))
    kind: Mapped[str] = mapped_column(String(20), default="plain")


class Everything(_EveryType, WriteBase):
    __tablename__ = "w_everything"


class EverythingTwin(_EveryType, WriteBase):
    """The same columns: filled by SQLAlchemy's own ``insert(EverythingTwin)``."""

    __tablename__ = "w_everything_twin"


class MemberRepository(Repository[Member]):
    pass


class EverythingRepository(Repository[Everything]):
    pass


_TABLES = ", ".join(t.name for t in reversed(WriteBase.metadata.sorted_tables))


async def reset(engine: AsyncEngine) -> None:
    """Create the tables if needed and empty them."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(1207)"))
        await conn.run_sync(WriteBase.metadata.create_all)
        await conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY"))
