"""The fake's structured answers are valid instances of the schema, unless scripted otherwise.

Invariant: for any pydantic model built from constrained fields (bounds, lengths, formats,
enums, literals, nested and optional models, lists, dicts, tuples), the fake's structured
answer validates on the first attempt (no repair request). Scripted ``schema_violation`` and
``malformed_json`` answers are rejected by the same validation. The fake refuses the keyword
arguments the google provider refuses.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AnyUrl, BaseModel, Field, create_model

from sight_core.errors import ConfigurationError, StructuredOutputError
from sight_core.llm import FakeChatModel, ResilientChatModel, build_chat_model, structured_output
from sight_core.llm._schema_values import example_for_schema, violation_of
from sight_core.settings import LLMSettings


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 3


class Address(BaseModel):
    city: Annotated[str, Field(min_length=2, max_length=20)]
    zip_code: Annotated[str, Field(min_length=5, max_length=5)]


@st.composite
def _int_field(draw: st.DrawFn) -> Any:
    low = draw(st.integers(-1000, 1000))
    high = draw(st.integers(low, low + draw(st.sampled_from([0, 1, 7, 1000]))))
    kind = draw(st.sampled_from(["ge_le", "gt_lt", "ge", "le", "multiple"]))
    if kind == "ge_le":
        return Annotated[int, Field(ge=low, le=high)]
    if kind == "gt_lt":
        return Annotated[int, Field(gt=low - 1, lt=high + 1)]
    if kind == "ge":
        return Annotated[int, Field(ge=low)]
    if kind == "le":
        return Annotated[int, Field(le=high)]
    step = draw(st.integers(2, 9))
    return Annotated[int, Field(ge=low, le=low + 3 * step, multiple_of=step)]


@st.composite
def _float_field(draw: st.DrawFn) -> Any:
    low = draw(st.floats(-1e6, 1e6, allow_nan=False))
    width = draw(st.sampled_from([1e-3, 0.5, 10.0, 1e6]))
    kind = draw(st.sampled_from(["ge_le", "gt_lt", "gt", "lt"]))
    if kind == "ge_le":
        return Annotated[float, Field(ge=low, le=low + width)]
    if kind == "gt_lt":
        return Annotated[float, Field(gt=low, lt=low + width)]
    if kind == "gt":
        return Annotated[float, Field(gt=low)]
    return Annotated[float, Field(lt=low)]


@st.composite
def _str_field(draw: st.DrawFn) -> Any:
    low = draw(st.integers(0, 30))
    high = draw(st.integers(max(low, 1), 40))
    return Annotated[str, Field(min_length=low, max_length=high)]


_scalar = st.one_of(
    _int_field(),
    _float_field(),
    _str_field(),
    st.sampled_from(
        [
            dt.datetime,
            dt.date,
            dt.time,
            dt.timedelta,
            uuid.UUID,
            AnyUrl,
            bool,
            Colour,
            Level,
            Literal["a", "b"],
            Literal[1, 2, 3],
            Decimal,
            Address,
        ]
    ),
)


@st.composite
def _field(draw: st.DrawFn) -> Any:
    inner = draw(_scalar)
    wrap = draw(st.sampled_from(["plain", "optional", "list", "bounded_list", "dict", "tuple"]))
    if wrap == "optional":
        return inner | None
    if wrap == "list":
        return list[inner]  # type: ignore[valid-type]
    if wrap == "bounded_list":
        low = draw(st.integers(0, 3))
        return Annotated[list[inner], Field(min_length=low, max_length=low + 2)]  # type: ignore[valid-type]
    if wrap == "dict":
        return dict[str, inner]  # type: ignore[valid-type]
    if wrap == "tuple":
        return tuple[inner, int]  # type: ignore[valid-type]
    return inner


@st.composite
def _models(draw: st.DrawFn) -> type[BaseModel]:
    names = draw(
        st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=6, unique=True)
    )
    fields = {name: (draw(_field()), ...) for name in names}
    model = create_model("Generated", **fields)  # type: ignore[call-overload]
    if draw(st.booleans()):  # nest it one level
        return create_model("Outer", inner=(model, ...), items=(list[model], ...))  # type: ignore[valid-type]
    return model


@settings(max_examples=80, deadline=None)
@given(model=_models(), seed=st.text(max_size=8))
def test_values_for_any_constrained_schema_validate(model: type[BaseModel], seed: str) -> None:
    value = example_for_schema(model.model_json_schema(), seed)
    model.model_validate(value)  # raises on an invalid answer


@settings(max_examples=30, deadline=None)
@given(model=_models())
def test_violations_are_rejected(model: type[BaseModel]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        model.model_validate(violation_of(model.model_json_schema()))


class Booking(BaseModel):
    id: uuid.UUID
    when: dt.datetime
    guests: Annotated[int, Field(ge=1, le=8)]
    note: Annotated[str, Field(max_length=12)]
    rating: Annotated[float, Field(gt=0, le=5)]
    level: Level
    address: Address


async def test_the_fake_answers_valid_structured_output_on_the_first_attempt() -> None:
    fake = FakeChatModel()
    llm = ResilientChatModel(fake)
    for i in range(20):
        booking = await llm.with_structured_output(Booking).ainvoke(f"booking {i}")
        assert isinstance(booking, Booking)
    assert fake.attempts == 20  # never a repair request


async def test_scripted_invalid_answers_fail_validation_then_repair() -> None:
    fake = FakeChatModel(script=["schema_violation", "malformed_json"])
    llm = ResilientChatModel(fake)
    strict = structured_output(llm, Booking, repair=False)
    with pytest.raises(StructuredOutputError, match="Booking"):
        await strict.ainvoke("bad one")
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        await strict.ainvoke("cut one")
    fake.push("schema_violation")
    booking = await llm.with_structured_output(Booking).ainvoke("repaired")
    assert isinstance(booking, Booking)
    assert fake.attempts == 4  # the violation, then the repair


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": 3}, "max_retries cannot be set"),
        ({"retries": 3}, "retries cannot be set"),
        ({"temprature": 0.2}, "did you mean 'temperature'"),
        ({"laetncy": 0.1}, "did you mean 'latency'"),
    ],
)
def test_the_fake_refuses_what_google_refuses(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FakeChatModel(**kwargs)
    with pytest.raises(ConfigurationError, match=message):
        build_chat_model("flash", settings=LLMSettings(provider="fake"), **kwargs)


def test_google_refuses_the_same(google_settings: LLMSettings) -> None:
    for kwargs, message in (
        ({"max_retries": 3}, "max_retries"),
        ({"temprature": 0.2}, "temperature"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            build_chat_model("flash", settings=google_settings, **kwargs)
