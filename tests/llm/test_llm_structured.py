"""Structured output: extraction, validation, one repair, redacted errors, native vs prompt."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel
from typing_extensions import TypedDict

from sight_core.errors import ConfigurationError, StructuredOutputError
from sight_core.llm import (
    FakeChatModel,
    extract_json,
    parse_structured,
    redact_excerpt,
    structured_output,
)


class Persona(BaseModel):
    name: str
    age: int


class Point(TypedDict):
    x: int
    y: int


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Ada", "age": 36}',
        'Sure! Here is the persona:\n{"name": "Ada", "age": 36}\nHope it helps.',
        '```json\n{"name": "Ada", "age": 36}\n```',
        'Here:\n```\n{"name": "Ada", "age": 36}\n```',
        '  {"name": "Ada", "age": 36}  ',
    ],
)
def test_extraction_finds_the_json(text: str) -> None:
    assert parse_structured(text, Persona) == Persona(name="Ada", age=36)


def test_other_schema_kinds() -> None:
    assert parse_structured('[{"x": 1, "y": 2}]', list[Point]) == [{"x": 1, "y": 2}]
    schema = {"title": "Task", "type": "object", "required": ["title"]}
    assert parse_structured('{"title": "t"}', schema) == {"title": "t"}
    with pytest.raises(StructuredOutputError, match="Task: missing required key"):
        parse_structured('{"other": 1}', schema)


def test_no_json_raises() -> None:
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("I cannot help with that.")
    with pytest.raises(ValueError, match="empty"):
        extract_json("   ")


def test_errors_name_the_schema_and_hide_the_values() -> None:
    secret = '{"name": "Jane Secret-Person", "age": "thirty-four", "phone": "5551234567"}'
    with pytest.raises(StructuredOutputError) as info:
        parse_structured(secret, Persona)
    message = str(info.value)
    assert "Persona" in message
    assert "age" in message
    assert "Jane" not in message and "thirty" not in message and "5551234567" not in message


def test_redact_excerpt_keeps_keys_and_masks_values() -> None:
    shown = redact_excerpt('Here you go: {"name": "Ada Lovelace", "age": 36, "ok": true}')
    assert shown == '… … …: {"name": "***", "age": #, "ok": true}'
    assert len(redact_excerpt("word " * 200, limit=40)) == 40


async def test_native_mode_on_the_fake_sends_the_schema() -> None:
    fake = FakeChatModel()
    result = await structured_output(fake, Persona).ainvoke("make one")
    assert isinstance(result, Persona)
    assert fake.attempts == 1


async def test_one_repair_attempt_then_success() -> None:
    fake = FakeChatModel(responses=['{"name": "Ada"}', '{"name": "Ada", "age": 36}'])
    result = await structured_output(fake, Persona).ainvoke([HumanMessage("make one")])
    assert result == Persona(name="Ada", age=36)
    assert fake.attempts == 2


async def test_second_failure_raises_after_one_repair() -> None:
    fake = FakeChatModel(responses=["nope", "still nope"])
    with pytest.raises(StructuredOutputError, match="after one repair attempt"):
        await structured_output(fake, Persona).ainvoke("make one")
    assert fake.attempts == 2


async def test_include_raw_returns_the_error_instead_of_raising() -> None:
    fake = FakeChatModel(responses=["nope"])
    out = await structured_output(fake, Persona, include_raw=True, repair=False).ainvoke("x")
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], StructuredOutputError)
    assert out["raw"].text == "nope"


async def test_json_method_prompts_with_the_schema() -> None:
    fake = FakeChatModel(responses=['Here: {"name": "Ada", "age": 3}'])
    runnable = structured_output(fake, Persona, method="json")
    assert await runnable.ainvoke("make one") == Persona(name="Ada", age=3)
    assert runnable.invoke("make one") == Persona(name="Ada", age=3)


def test_native_required_but_missing() -> None:
    from langchain_core.language_models import GenericFakeChatModel

    model = GenericFakeChatModel(messages=iter([]))
    with pytest.raises(ConfigurationError, match="native"):
        structured_output(model, Persona, method="native")
