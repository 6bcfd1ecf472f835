"""A small Sight-like schema for the db tests: projects, focus groups, personas, responses."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint, func, insert
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sight_core.db import Repository


class Base(AsyncAttrs, DeclarativeBase):  # AsyncAttrs: ``await obj.awaitable_attrs.rel``
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    personas: Mapped[list[Persona]] = relationship(back_populates="project")
    focus_groups: Mapped[list[FocusGroup]] = relationship(back_populates="project")


class FocusGroup(Base):
    __tablename__ = "focus_groups"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200))

    project: Mapped[Project] = relationship(back_populates="focus_groups")
    responses: Mapped[list[Response]] = relationship(back_populates="focus_group")


class Persona(Base):
    __tablename__ = "personas"
    __table_args__ = (UniqueConstraint("project_id", "email", name="personas_project_email_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200))
    age: Mapped[int]
    email: Mapped[str] = mapped_column(String(200))
    segment: Mapped[str | None] = mapped_column(String(50), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    project: Mapped[Project] = relationship(back_populates="personas")
    responses: Mapped[list[Response]] = relationship(
        back_populates="persona", order_by="Response.position"
    )


class Response(Base):
    __tablename__ = "responses"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    persona_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("personas.id"))
    focus_group_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("focus_groups.id"), default=None
    )
    position: Mapped[int] = mapped_column(default=0)
    answer: Mapped[str] = mapped_column(String(2000))

    persona: Mapped[Persona] = relationship(back_populates="responses")
    focus_group: Mapped[FocusGroup | None] = relationship(back_populates="responses")


class Label(Base):
    """A model that eager-loads a relationship by default (repository reads must override it)."""

    __tablename__ = "labels"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, object] | None] = mapped_column(JSONB, default=None)
    weight: Mapped[float | None]
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    project: Mapped[Project] = relationship(lazy="joined")


class Note(Base):
    """Server-generated integer key: add_many takes the multi-row VALUES form."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    author: Mapped[str] = mapped_column(String(50))
    body: Mapped[str]
    pinned: Mapped[bool | None]


class PersonaRepository(Repository[Persona]):
    load = (Persona.project, Persona.responses)


class ProjectRepository(Repository[Project]):
    pass


async def seed(
    session: AsyncSession, *, personas: int, responses: int = 5, project: str = "Sight"
) -> Project:
    """One project with ``personas`` personas of ``responses`` responses each (bulk, committed)."""
    proj = Project(name=project)
    session.add(proj)
    await session.flush()
    persona_rows = [
        {
            "id": uuid.uuid4(),
            "project_id": proj.id,
            "name": f"persona {i}",
            "age": 20 + i % 50,
            "email": f"p{i}@example.com",
        }
        for i in range(personas)
    ]
    if persona_rows:
        await session.execute(insert(Persona), persona_rows)
    response_rows = [
        {"persona_id": row["id"], "position": j, "answer": f"answer {j}"}
        for row in persona_rows
        for j in range(responses)
    ]
    if response_rows:
        await session.execute(insert(Response), response_rows)
    await session.commit()
    session.expunge_all()
    return proj
