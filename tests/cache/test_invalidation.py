"""Invalidation by tag and namespace removes exactly what it should; tag indexes expire."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from sight_core.cache import Cache


def _persona(cache: Cache, calls: list[tuple[int, int]], version: int = 1, ttl: float = 60):  # type: ignore[no-untyped-def]
    @cache.cached(
        namespace="persona",
        version=version,
        ttl=ttl,
        key="{persona_id}:project:{project_id}",
        tags=("project:{project_id}", "persona:{persona_id}"),
        jitter=0,
    )
    async def get_persona(persona_id: int, project_id: int) -> dict[str, int]:
        calls.append((persona_id, project_id))
        return {"persona": persona_id, "project": project_id}

    return get_persona


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_invalidate_tag_removes_project_42_and_none_of_43(
    cache: Cache, redis_client: Redis
) -> None:
    calls: list[tuple[int, int]] = []
    get = _persona(cache, calls)
    for persona in range(5):
        await get(persona, 42)
        await get(persona, 43)
    assert get.tags(1, 42) == ["project:42", "persona:1"]
    assert await cache.invalidate_tags("project:42") == 5
    for persona in range(5):
        assert await redis_client.exists(get.key(persona, 42)) == 0
        assert await redis_client.exists(get.key(persona, 43)) == 1
    calls.clear()
    for persona in range(5):
        await get(persona, 42)
        await get(persona, 43)
    assert sorted(calls) == [(p, 42) for p in range(5)]
    assert await cache.invalidate_tags("persona:3") == 2
    assert await cache.invalidate_tags("nothing") == 0


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_tag_index_entries_expire_with_their_entries(
    cache: Cache, redis_client: Redis
) -> None:
    calls: list[tuple[int, int]] = []
    short = _persona(cache, calls, ttl=0.2)
    await short(1, 7)
    index = "sight:tag:project:7"
    assert await redis_client.zcard(index) == 1
    assert 0 < await redis_client.pttl(index) <= 200
    await asyncio.sleep(0.3)
    assert await redis_client.exists(index) == 0  # the index itself expired: no leak
    long = _persona(cache, calls, version=2, ttl=60)
    await short(2, 8)
    await asyncio.sleep(0.3)
    await long(3, 8)  # a write trims expired members of the same tag
    members = await redis_client.zrange("sight:tag:project:8", 0, -1)
    assert members == [long.key(3, 8).encode()]
    assert await redis_client.pttl("sight:tag:project:8") > 50_000


@pytest.mark.standalone_only  # reads or writes raw keys by their cache names
async def test_invalidate_namespace_uses_scan_and_spares_other_namespaces(
    cache: Cache, redis_client: Redis, commands: Any
) -> None:
    calls: list[tuple[int, int]] = []
    v1, v2 = _persona(cache, calls, version=1), _persona(cache, calls, version=2)

    @cache.cached(namespace="persona-list", key="{project_id}")
    async def other(project_id: int) -> int:
        return project_id

    @cache.cached(namespace="segment", key="persona:{x}")
    async def tricky(x: int) -> int:  # its keys contain ":persona:" further right
        return x

    for i in range(600):
        await v1(i, 1)
    await v2(1, 1)
    await other(1)
    await tricky(1)
    await commands.reset()
    assert await cache.invalidate_namespace("persona") == 601
    counts = await commands.counts()
    assert "keys" not in counts
    assert counts["scan"] >= 1
    assert counts["unlink"] <= counts["scan"]  # one UNLINK per page of (at most) 500 keys
    assert await redis_client.exists(other.key(1), tricky.key(1)) == 2
    assert await cache.invalidate_namespace("persona", version=2) == 0


_prefixes = itertools.count()


@settings(max_examples=40, deadline=None)
@given(
    tags=st.lists(st.text(max_size=300), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_invalidating_a_raw_tag_removes_exactly_the_entries_tagged_with_it(
    redis_url: str, tags: list[str], data: st.DataObject
) -> None:
    """For any tag strings: ``invalidate_tags("t:" + tag)`` with the raw value drops every
    entry whose template ``"t:{tag}"`` rendered that tag, and no other entry."""
    owners = data.draw(st.lists(st.sampled_from(tags), min_size=1, max_size=6), label="owners")
    doomed = data.draw(st.sampled_from(tags), label="doomed")

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        cache = Cache(prefix=f"tagprop{next(_prefixes)}", op_timeout=2.0)
        cache.bind(client)
        computed: list[int] = []

        @cache.cached(namespace="tagged", ttl=60, key="{item}", tags=("t:{tag}",), jitter=0)
        async def get(item: int, tag: str) -> int:
            computed.append(item)
            return item

        try:
            for item, tag in enumerate(owners):
                await get(item, tag)
            assert [get.tags(i, t) for i, t in enumerate(owners)] == [[f"t:{t}"] for t in owners]
            expected = [i for i, t in enumerate(owners) if t == doomed]
            assert await cache.invalidate_tags(f"t:{doomed}") == len(expected)
            computed.clear()
            for item, tag in enumerate(owners):
                await get(item, tag)
            assert computed == expected
        finally:
            await cache.aclose()
            await client.aclose()

    asyncio.run(scenario())
