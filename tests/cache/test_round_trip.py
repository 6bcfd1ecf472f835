"""A hit never differs from the miss: annotations whose values would not round-trip are refused
at decoration, values that would not are not stored, and what is accepted round-trips (a
hypothesis property over the accepted annotations)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import math
import socket
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from redis.asyncio import Redis

from sight_core.cache import Cache, JsonCodec, MemoryBackend, PickleCodec
from sight_core.cache._checks import json_codec
from sight_core.errors import CacheSerializationError, ConfigurationError

# ---------------------------------------------------------------- types used below


class Kind(enum.Enum):
    A = "a"
    B = "b"


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Persona(BaseModel):
    id: UUID
    name: str
    age: int
    score: float
    kind: Kind
    born: dt.datetime
    tags: list[str]
    pair: tuple[int, str]
    address: Address | None = None


@dataclasses.dataclass(frozen=True)
class Window:
    start: dt.date
    owner: UUID
    counts: dict[str, int]


class Hidden(BaseModel):
    name: str
    internal: str = Field("", exclude=True)


class CamelCase(BaseModel):
    persona_id: int = Field(alias="personaId")


class Generated(BaseModel):
    model_config = ConfigDict(alias_generator=lambda name: name.upper())

    persona_id: int


class CamelCaseByName(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    persona_id: int = Field(alias="personaId")


class WithSecret(BaseModel):
    name: str
    token: SecretStr


class Animal(BaseModel):
    name: str


class Dog(Animal):
    barks: bool = True


class NoSchema:
    """A plain class: pydantic has no JSON schema for it."""


def _memory_cache() -> Cache:
    cache = Cache()
    cache.bind(MemoryBackend())
    return cache


# ---------------------------------------------------------------- refused at decoration (6)


@pytest.mark.parametrize(
    ("annotation", "words"),
    [
        (Hidden, ["Hidden.internal", "exclude=True"]),
        (list[Hidden], ["Hidden.internal", "exclude=True"]),
        (dict[str, Hidden | None], ["Hidden.internal"]),
        (CamelCase, ["CamelCase.persona_id", "'personaId'", "populate_by_name=True"]),
        (Generated, ["Generated.persona_id", "'PERSONA_ID'"]),
        (BaseModel, ["bare BaseModel", "concrete model"]),
        (WithSecret, ["SecretStr", "masked"]),
    ],
)
def test_annotations_that_would_not_round_trip_are_refused(
    annotation: Any, words: list[str]
) -> None:
    cache = Cache()

    async def get_value(n: int) -> Any:
        return None

    get_value.__annotations__["return"] = annotation
    with pytest.raises(ConfigurationError) as info:
        cache.cached(namespace="n")(get_value)
    message = str(info.value)
    assert "get_value" in message
    for word in words:
        assert word in message


def test_a_type_pydantic_cannot_store_names_the_function_and_pickle_codec() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError) as info:

        @cache.cached(namespace="sock")
        async def open_socket(host: str) -> socket.socket:
            raise NotImplementedError

    message = str(info.value)
    assert "open_socket" in message
    assert "socket" in message
    assert "PickleCodec" in message


async def test_alias_models_with_populate_by_name_round_trip() -> None:
    cache = _memory_cache()
    calls = 0

    @cache.cached(namespace="camel")
    async def get(n: int) -> CamelCaseByName:
        nonlocal calls
        calls += 1
        return CamelCaseByName(persona_id=n)

    assert await get(3) == CamelCaseByName(persona_id=3)
    assert await get(3) == CamelCaseByName(persona_id=3)
    assert calls == 1


# ---------------------------------------------------------------- not stored at run time (6)


async def test_a_subclass_of_the_annotated_model_is_not_stored(
    cache: Cache, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    @cache.cached(namespace="animal")
    async def get_animal(name: str) -> Animal:
        nonlocal calls
        calls += 1
        return Dog(name=name)

    with caplog.at_level(logging.WARNING, logger="sight_core.cache"):
        for _ in range(3):
            found = await get_animal("rex")
            assert type(found) is Dog  # never a bare Animal from a hit
    assert calls == 3
    assert await redis_client.exists(get_animal.key("rex")) == 0
    assert cache.stats()["animal"].errors == 3  # counted every time
    lines = [r.getMessage() for r in caplog.records if "round-trip" in r.getMessage()]
    assert len(lines) == 1  # logged once
    assert "Dog comes back as a" in lines[0]
    assert "Animal" in lines[0]
    assert "rex" not in lines[0]  # types, never values
    with pytest.raises(CacheSerializationError, match=r"Dog"):
        await get_animal.set(Dog(name="rex"), "rex")

    @cache.cached(namespace="animals")
    async def get_animals(name: str) -> list[Animal]:
        return [Animal(name=name), Dog(name=name)]  # one subclass deep inside

    assert [type(a) for a in await get_animals("rex")] == [Animal, Dog]
    assert [type(a) for a in await get_animals("rex")] == [Animal, Dog]
    assert await redis_client.exists(get_animals.key("rex")) == 0


@pytest.mark.parametrize(
    ("value", "lost"),
    [
        ({"id": UUID(int=1)}, "UUID comes back as a str"),
        ({"at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}, "datetime comes back as a str"),
        ({"pair": (1, 2)}, "tuple comes back as a list"),
        ({"score": math.nan}, "float comes back as a NoneType"),
        ({"kind": Kind.A}, "Kind comes back as a str"),
        ({"window": Window(dt.date(2026, 1, 1), UUID(int=2), {})}, "Window comes back"),
    ],
)
async def test_unannotated_values_that_json_would_change_are_not_stored(
    cache: Cache, redis_client: Redis, value: dict[str, Any], lost: str
) -> None:
    calls = 0

    @cache.cached(namespace="plain")
    async def get_plain(n: int):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return value

    assert await get_plain(1) == value
    assert await get_plain(1) == value
    assert calls == 2
    assert await redis_client.exists(get_plain.key(1)) == 0
    with pytest.raises(CacheSerializationError, match=lost):
        await get_plain.set(value, 1)


async def test_unannotated_json_values_are_cached(cache: Cache) -> None:
    calls = 0

    @cache.cached(namespace="plain")
    async def get_plain(n: int):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return {"n": n, "items": [{"a": 1.5, "b": None, "c": [True, "x"]}]}

    first = await get_plain(1)
    assert await get_plain(1) == first
    assert calls == 1


def test_serialization_errors_name_the_type() -> None:
    with pytest.raises(CacheSerializationError, match=r"no JSON form for NoSchema"):
        JsonCodec().encode({"x": NoSchema()})
    with pytest.raises(CacheSerializationError, match=r"test_round_trip.NoSchema") as info:
        JsonCodec(list[int]).encode([NoSchema()])
    assert "a list as JSON of list[int]" in str(info.value)
    with pytest.raises(CacheSerializationError, match=r"a str as JSON of int") as info:
        JsonCodec(int).encode("secret-value")
    assert "secret-value" not in str(info.value)
    with pytest.raises(CacheSerializationError, match=r"cached JSON does not match Persona"):
        JsonCodec(Persona).decode(b'{"id": 1}')


# ---------------------------------------------------------------- what is accepted round-trips

_text = st.text(max_size=12)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_aware = st.datetimes(timezones=st.just(dt.UTC))
_address = st.builds(Address, city=_text, zip_code=st.none() | _text)
_persona = st.builds(
    Persona,
    id=st.uuids(),
    name=_text,
    age=st.integers(-(2**63), 2**63 - 1),
    score=_finite,
    kind=st.sampled_from(Kind),
    born=_aware,
    tags=st.lists(_text, max_size=3),
    pair=st.tuples(st.integers(), _text),
    address=st.none() | _address,
)
_window = st.builds(
    Window,
    start=st.dates(),
    owner=st.uuids(),
    counts=st.dictionaries(_text, st.integers(-(2**63), 2**63 - 1), max_size=3),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _finite | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)
ACCEPTED: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (Persona, _persona),
    (list[Persona], st.lists(_persona, max_size=3)),
    (dict[UUID, Address], st.dictionaries(st.uuids(), _address, max_size=3)),
    (Window, _window),
    (
        tuple[int, str, Decimal],
        st.tuples(st.integers(), _text, st.decimals(allow_nan=False, allow_infinity=False)),
    ),
    (frozenset[int], st.frozensets(st.integers(), max_size=4)),
    (dt.datetime, _aware),
    (Kind | None, st.none() | st.sampled_from(Kind)),
    (Any, _json),
    (dict[str, Any], st.dictionaries(_text, _json, max_size=3)),
]


@pytest.mark.parametrize(("annotation", "values"), ACCEPTED, ids=lambda a: repr(a)[:40])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_accepted_annotations_round_trip(
    annotation: Any, values: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    codec = json_codec("f", annotation)  # what the decorator would build: accepted
    value = data.draw(values)
    back = codec.decode(codec.encode(value))  # encode refuses anything that would differ
    assert back == value
    assert type(back) is type(value)


class _CountingJsonCodec(JsonCodec):
    __slots__ = ("decodes",)

    def __init__(self, annotation: Any) -> None:
        super().__init__(annotation)
        self.decodes = 0

    def decode(self, data: bytes) -> Any:
        self.decodes += 1
        return super().decode(data)


async def test_the_round_trip_check_costs_one_decode_per_miss_and_nothing_on_a_hit(
    cache: Cache,
) -> None:
    codec = _CountingJsonCodec(Persona)

    @cache.cached(namespace="persona", codec=codec)
    async def get(n: int) -> Persona:
        return Persona(
            id=UUID(int=n),
            name="Ada",
            age=n,
            score=0.5,
            kind=Kind.A,
            born=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            tags=["a"],
            pair=(1, "x"),
        )

    await get(1)
    assert codec.decodes == 1  # the miss: the check's decode
    for _ in range(3):
        await get(1)
    assert codec.decodes == 4  # each hit: its own decode only


class Opaque:
    """Equal only to itself: JSON cannot carry it, pickle can."""


async def test_pickle_codec_values_are_stored_without_the_json_check(cache: Cache) -> None:
    calls = 0

    @cache.cached(namespace="opaque", codec=PickleCodec(b"k" * 32))
    async def get(n: int) -> Opaque:
        nonlocal calls
        calls += 1
        return Opaque()

    assert type(await get(1)) is Opaque
    assert type(await get(1)) is Opaque
    assert calls == 1


@settings(max_examples=25, deadline=None)
@given(persona=_persona, plain=st.dictionaries(_text, _json, max_size=3))
def test_a_hit_from_redis_is_what_the_miss_returned(
    redis_url: str, persona: Persona, plain: dict[str, Any]
) -> None:
    """End to end through the header, zlib and Redis: hit == miss, types included."""

    async def run() -> None:
        client = Redis.from_url(redis_url)
        cache = Cache(prefix="roundtrip", compress_above=64)
        cache.bind(client)
        computed = 0

        @cache.cached(namespace="persona", key="{n}")
        async def get_persona(n: int) -> Persona:
            nonlocal computed
            computed += 1
            return persona

        @cache.cached(namespace="plain", key="{n}")
        async def get_plain(n: int) -> dict[str, Any]:
            nonlocal computed
            computed += 1
            return plain

        try:
            await get_persona.invalidate(1)
            await get_plain.invalidate(1)
            misses = (await get_persona(1), await get_plain(1))
            hits = (await get_persona(1), await get_plain(1))
            assert computed == 2  # both stored: the second calls were hits
            for miss, hit in zip(misses, hits, strict=True):
                assert hit == miss
                assert type(hit) is type(miss)
        finally:
            await cache.aclose()
            await client.aclose()

    asyncio.run(run())
