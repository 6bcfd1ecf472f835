"""The read-through decorator against the real Redis: types, versions, options, helpers."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from sight_core.cache import Cache, MemoryBackend, PickleCodec
from sight_core.errors import CacheSerializationError, ConfigurationError, NotBoundError


class PersonaOut(BaseModel):
    id: UUID
    name: str
    traits: list[str]


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Counter:
    def __init__(self) -> None:
        self.calls = 0


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_hit_returns_the_annotated_type(cache: Cache, redis_client: Redis) -> None:
    seen = Counter()

    @cache.cached(namespace="persona", version=2, key="{persona_id}:project:{project_id}")
    async def get_persona(persona_id: UUID, project_id: UUID) -> PersonaOut:
        seen.calls += 1
        return PersonaOut(id=persona_id, name="Ada", traits=["curious"])

    a, b = uuid4(), uuid4()
    miss = await get_persona(a, b)
    hit = await get_persona(a, b)
    assert seen.calls == 1
    assert type(hit) is PersonaOut
    assert hit == miss
    assert await redis_client.exists(f"sight:v2:persona:{a}:project:{b}") == 1
    stats = cache.stats()["persona"]
    assert (stats.hits, stats.misses, stats.computations) == (1, 1, 1)
    assert stats.hit_ratio == 0.5


@pytest.mark.parametrize(
    ("annotation_value"),
    [
        [PersonaOut(id=UUID(int=1), name="a", traits=[])],
        {"a": [1, 2], "b": None},
        Point(1, 2),
    ],
)
async def test_collections_and_dataclasses_round_trip(cache: Cache, annotation_value: Any) -> None:
    if isinstance(annotation_value, list):

        @cache.cached(namespace="rt")
        async def f() -> list[PersonaOut]:
            return annotation_value  # type: ignore[no-any-return]

    elif isinstance(annotation_value, dict):

        @cache.cached(namespace="rt")
        async def f() -> dict[str, list[int] | None]:  # type: ignore[misc]
            return annotation_value  # type: ignore[no-any-return]

    else:

        @cache.cached(namespace="rt")
        async def f() -> Point:  # type: ignore[misc]
            return annotation_value  # type: ignore[no-any-return]

    first = await f()
    second = await f()
    assert second == first == annotation_value
    assert type(second) is type(annotation_value)
    assert cache.stats()["rt"].hits == 1


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_version_bump_misses_old_entries(redis_client: Redis) -> None:
    results = []
    for version in (1, 1, 2, 2):
        cache = Cache()
        cache.bind(redis_client)

        @cache.cached(namespace="persona", version=version)
        async def get(item: int, _v: int = version) -> int:
            results.append(_v)
            return _v

        await get(7)
        await cache.aclose()
    assert results == [1, 2]
    assert sorted(k.decode() for k in await redis_client.keys("sight:v*")) == [
        "sight:v1:persona:7:1",
        "sight:v2:persona:7:2",
    ]


async def test_invalidate_by_key_removes_only_that_entry(cache: Cache) -> None:
    seen = Counter()

    @cache.cached(namespace="item", key="{item_id}")
    async def get(item_id: int) -> int:
        seen.calls += 1
        return item_id

    await get(1)
    await get(2)
    assert await get.invalidate(item_id=1) is True
    assert await get.invalidate(item_id=1) is False
    await get(1)
    await get(2)
    assert seen.calls == 3


async def test_set_refresh_uncached(cache: Cache) -> None:
    seen = Counter()

    @cache.cached(namespace="item")
    async def get(item_id: int) -> str:
        seen.calls += 1
        return f"computed-{seen.calls}"

    await get.set("preset", 1)
    assert await get(1) == "preset"
    assert await get.refresh(1) == "computed-1"
    assert await get(1) == "computed-1"
    assert await get.uncached(1) == "computed-2"
    assert await get(1) == "computed-1"
    assert seen.calls == 2


async def test_none_is_not_cached_unless_asked(cache: Cache) -> None:
    plain, negative = Counter(), Counter()

    @cache.cached(namespace="a")
    async def find(x: int) -> int | None:
        plain.calls += 1
        return None

    @cache.cached(namespace="b", cache_none=True, none_ttl=30)
    async def find_negative(x: int) -> int | None:
        negative.calls += 1
        return None

    for _ in range(3):
        assert await find(1) is None
        assert await find_negative(1) is None
    assert (plain.calls, negative.calls) == (3, 1)


async def test_condition_skips_storing(cache: Cache, redis_client: Redis) -> None:
    seen = Counter()

    @cache.cached(namespace="c", condition=lambda result: bool(result))
    async def search(q: str) -> list[int]:
        seen.calls += 1
        return [] if q == "none" else [1]

    for _ in range(2):
        await search("none")
        await search("some")
    assert seen.calls == 3
    assert await redis_client.exists(search.key("none")) == 0


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_ttl_jitter_spreads_expiry(cache: Cache, redis_client: Redis) -> None:
    @cache.cached(namespace="j", ttl=1000, jitter=0.2)
    async def get(i: int) -> int:
        return i

    for i in range(20):
        await get(i)
    ttls = {await redis_client.pttl(get.key(i)) for i in range(20)}
    assert len(ttls) > 10
    assert all(800_000 - 1000 <= t <= 1_000_000 for t in ttls)


async def test_methods_are_cached_per_arguments_not_per_instance(cache: Cache) -> None:
    seen = Counter()

    class Service:
        @cache.cached(namespace="svc", key="{item_id}")
        async def get(self, item_id: int) -> int:
            seen.calls += 1
            return item_id * 2

    assert await Service().get(2) == 4
    assert await Service().get(2) == 4
    assert seen.calls == 1
    assert Service().get.key(2) == "sight:v1:svc:2"
    assert await Service().get.invalidate(2) is True


async def test_unbound_cache_names_bind() -> None:
    cache = Cache()

    @cache.cached(namespace="n")
    async def f() -> int:
        return 1

    with pytest.raises(NotBoundError, match=r"bind"):
        await f()


async def test_sync_functions_and_str_clients_are_rejected(redis_url: str) -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match="async"):
        cache.cached(namespace="n")(lambda: 1)  # type: ignore[arg-type, return-value]
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses"):
            cache.bind(client)
    finally:
        await client.aclose()


async def test_disabled_cache_calls_through() -> None:
    cache = Cache(enabled=False)
    cache.bind(MemoryBackend())
    seen = Counter()

    @cache.cached(namespace="n")
    async def f() -> int:
        seen.calls += 1
        return 1

    await f()
    await f()
    assert seen.calls == 2


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_pickle_codec_signs_and_refuses_unsigned(cache: Cache, redis_client: Redis) -> None:
    codec = PickleCodec(b"k" * 32)

    @cache.cached(namespace="pk", codec=codec)
    async def f(x: int) -> set[int]:
        return {x}

    assert await f(1) == {1}
    assert await f(1) == {1}
    raw = await redis_client.get(f.key(1))
    assert raw is not None
    with pytest.raises(CacheSerializationError):
        PickleCodec(b"z" * 32).decode(raw[14:])
    tampered = raw[:14] + b"\x00" * 32 + raw[46:]
    await redis_client.set(f.key(1), tampered)
    assert await f(1) == {1}  # refused, recomputed, not loaded
    assert cache.stats()["pk"].errors >= 1
    assert cache.stats()["pk"].computations == 2
    assert await f(1) == {1}
    assert cache.stats()["pk"].computations == 2  # the recomputed value replaced it
    with pytest.raises(ConfigurationError):
        PickleCodec(b"short")


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_foreign_or_corrupt_values_are_misses(cache: Cache, redis_client: Redis) -> None:
    @cache.cached(namespace="bad")
    async def f(x: int) -> PersonaOut:
        return PersonaOut(id=UUID(int=x), name="n", traits=[])

    for i, junk in enumerate((b"not ours", b"", b"x", b"\xca\x00")):
        await redis_client.set(f.key(i), junk)
        assert (await f(i)).id == UUID(int=i)
        assert (await f(i)).id == UUID(int=i)
    assert cache.stats()["bad"].errors == 4
    assert cache.stats()["bad"].computations == 4


async def test_compression_above_threshold(redis_client: Redis) -> None:
    cache = Cache(compress_above=100)
    cache.bind(redis_client)

    @cache.cached(namespace="z")
    async def f(n: int) -> str:
        return "a" * n

    assert await f(5000) == "a" * 5000
    assert await f(5000) == "a" * 5000
    assert await redis_client.strlen(f.key(5000)) < 200
    await cache.aclose()


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_errors_are_logged_once_without_arguments(
    cache: Cache, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    @cache.cached(namespace="log")
    async def f(secret: str) -> PersonaOut:
        return PersonaOut(id=UUID(int=0), name=secret, traits=[])

    for i in range(5):
        await redis_client.set(f.key(f"pw-{i}"), b"garbage-payload")
    with caplog.at_level(logging.WARNING, logger="sight_core.cache"):
        for i in range(5):
            await f(f"pw-{i}")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "pw-" not in lines[0]
    assert "garbage" not in lines[0]
    assert "log" in lines[0]
    assert cache.stats()["log"].errors == 5


async def test_memory_backend_behaves_like_redis() -> None:
    cache = Cache()
    backend = MemoryBackend()
    cache.bind(backend)
    seen = Counter()

    @cache.cached(namespace="m", tags=("t:{x}",))
    async def f(x: int) -> int:
        seen.calls += 1
        return x

    await f(1)
    await f(1)
    await f(2)
    assert seen.calls == 2
    assert await cache.invalidate_tags("t:1") == 1
    await f(1)
    assert seen.calls == 3
    assert await cache.invalidate_namespace("m") == 2
    assert backend.commands > 0
