"""Request and response bodies (pydantic); also the cached values and the LLM's output shape."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FocusGroupIn",
    "FocusGroupOut",
    "GenerateIn",
    "GenerationOut",
    "PersonaDraft",
    "PersonaOut",
    "PersonaUpdate",
    "ProjectIn",
    "ProjectOut",
    "UsageOut",
]


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str


class PersonaDraft(BaseModel):
    """What the model is asked to produce for one persona (structured output)."""

    name: str
    age: int = Field(ge=0, le=120)
    occupation: str
    bio: str


class PersonaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    age: int
    occupation: str
    bio: str


class PersonaUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    age: int | None = Field(None, ge=0, le=120)
    occupation: str | None = None
    bio: str | None = None


class GenerateIn(BaseModel):
    count: int = Field(20, ge=1, le=200)
    brief: str = Field("urban commuters evaluating an e-bike subscription", max_length=2000)


class UsageOut(BaseModel):
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class GenerationOut(BaseModel):
    personas: list[PersonaOut]
    seconds: float
    call_latency_ms: list[int]
    usage: UsageOut


class FocusGroupIn(BaseModel):
    topic: str = Field(min_length=1, max_length=500)
    questions: list[str] = Field(min_length=1, max_length=20)


class FocusGroupOut(BaseModel):
    id: uuid.UUID
    personas: int
    answers: int
    seconds: float
    answer_latency_ms: list[int]
    usage: UsageOut
