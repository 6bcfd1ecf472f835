"""What ``@cache.cached`` refuses when it is applied, and the instance part of method keys.

Each refusal is a ConfigurationError raised at decoration (or class creation) that names the
function, the problem and the fix; the call-time checks cover what decoration cannot see.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.errors import ConfigurationError

if TYPE_CHECKING:
    from decimal import Context as OnlyForTypeCheckers


def _raised_by_class_body(info: pytest.ExceptionInfo[BaseException]) -> BaseException:
    """The ConfigurationError of a ``__set_name__`` check (Python 3.11 wraps it)."""
    error = info.value
    if isinstance(error, RuntimeError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, ConfigurationError)
    return error


# ---------------------------------------------------------------- methods: the instance (5)


class Repo:
    """Per tenant: the same item id is a different item in another tenant."""

    def __init__(self, cache_calls: list[tuple[str, int]], tenant: str) -> None:
        self.calls = cache_calls
        self.tenant = tenant

    def __cache_key__(self) -> str:
        return self.tenant


async def test_method_default_key_keeps_tenants_apart(cache: Cache) -> None:
    calls: list[tuple[str, int]] = []

    class TenantRepo(Repo):
        @cache.cached(namespace="item")
        async def get(self, item_id: int) -> dict[str, Any]:
            self.calls.append((self.tenant, item_id))
            return {"tenant": self.tenant, "item": item_id}

    a, b = TenantRepo(calls, "tenant-A"), TenantRepo(calls, "tenant-B")
    assert await a.get(1) == {"tenant": "tenant-A", "item": 1}
    assert await b.get(1) == {"tenant": "tenant-B", "item": 1}
    assert await TenantRepo(calls, "tenant-B").get(1) == {"tenant": "tenant-B", "item": 1}
    assert await a.get(1) == {"tenant": "tenant-A", "item": 1}
    assert calls == [("tenant-A", 1), ("tenant-B", 1)]  # one computation per tenant
    assert a.get.key(1) != b.get.key(1)
    assert await b.get.invalidate(1) is True
    assert await a.get(1) == {"tenant": "tenant-A", "item": 1}  # A's entry is untouched
    assert len(calls) == 2


def test_method_without_an_instance_key_is_refused_when_the_class_is_created() -> None:
    cache = Cache()
    with pytest.raises((ConfigurationError, RuntimeError)) as info:

        class PersonaService:
            @cache.cached(namespace="persona")
            async def get(self, persona_id: int) -> int:
                return persona_id

    message = str(_raised_by_class_body(info))
    assert "PersonaService.get" in message
    assert "__cache_key__" in message
    assert "key=" in message


def test_stateless_service_names_its_key_arguments() -> None:
    cache = Cache()

    class StatelessService:
        @cache.cached(namespace="persona", key="{persona_id}")
        async def get(self, persona_id: int) -> int:
            return persona_id

    assert StatelessService().get.key(3) == "sight:v1:persona:3"


async def test_a_method_the_class_check_cannot_see_is_refused_at_the_call(
    redis_client: Redis,
) -> None:
    cache = Cache()
    cache.bind(redis_client)

    async def get(self: object, item_id: int) -> int:
        return item_id

    class Service:
        pass

    cached_get = cache.cached(namespace="late")(get)
    with pytest.raises(ConfigurationError, match=r"__cache_key__") as info:
        await cached_get(Service(), 1)
    assert "'self'" in str(info.value)
    assert await redis_client.keys("sight:*late*") == []
    await cache.aclose()


def test_classmethods_key_on_the_class() -> None:
    cache = Cache()

    class Base:
        @classmethod
        @cache.cached(namespace="kind")
        async def describe(cls, n: int) -> str:
            return f"{cls.__name__}{n}"

    class Sub(Base):
        pass

    base_key = Base.describe.key(1)
    sub_key = Sub.describe.key(1)
    assert base_key != sub_key
    assert base_key.startswith("sight:v1:kind:!c")


# ---------------------------------------------------------------- one function per namespace (7)


def test_two_functions_under_one_namespace_and_version_are_refused() -> None:
    cache = Cache()

    @cache.cached(namespace="persona", version=2)
    async def get_persona(persona_id: int) -> int:
        return persona_id

    with pytest.raises(ConfigurationError) as info:

        @cache.cached(namespace="persona", version=2)
        async def get_persona_brief(persona_id: int) -> int:
            return persona_id

    message = str(info.value)
    assert "get_persona_brief" in message
    assert "get_persona " in message  # both names, the first one too
    assert "namespace='persona'" in message


def test_namespaces_are_shared_only_where_the_keys_cannot_meet() -> None:
    cache, other = Cache(), Cache()

    @cache.cached(namespace="persona", version=1)
    async def get_persona(persona_id: int) -> int:
        return persona_id

    @cache.cached(namespace="persona", version=2)  # another version: other keys
    async def get_persona_v2(persona_id: int) -> int:
        return persona_id

    @other.cached(namespace="persona", version=1)  # another Cache
    async def elsewhere(persona_id: int) -> int:
        return persona_id

    @cache.cached_many(namespace="persona", version=1, key="{ids}")  # the documented pairing
    async def get_personas(ids: list[int]) -> dict[int, int]:
        return {i: i for i in ids}

    for _ in range(2):  # the same function decorated again (a reloaded module) replaces itself

        @cache.cached(namespace="reloaded")
        async def reloaded(n: int) -> int:
            return n

    with pytest.raises(ConfigurationError, match=r"get_personas_again.*get_personas"):

        @cache.cached_many(namespace="persona", version=1, key="{ids}")
        async def get_personas_again(ids: list[int]) -> dict[int, int]:
            return {i: i for i in ids}


# ---------------------------------------------------------------- newcomer errors (14.12)


def test_cached_without_parentheses_says_how_to_call_it() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match=r"with parentheses") as info:

        @cache.cached  # type: ignore[arg-type]
        async def get_persona(persona_id: int) -> int:
            return persona_id

    assert "get_persona" in str(info.value)
    assert "@cache.cached(namespace=" in str(info.value)


def test_cached_without_a_namespace_names_it() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match=r"needs namespace="):
        cache.cached(ttl=5)


@pytest.mark.parametrize(
    ("key", "fixed"),
    [
        ("persona_id", "{persona_id}"),
        ("persona_id:project:{project_id}", "{persona_id}:project:{project_id}"),
    ],
)
def test_a_key_naming_an_argument_without_braces_is_refused(key: str, fixed: str) -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError) as info:

        @cache.cached(namespace="persona", key=key)
        async def get_persona(persona_id: int, project_id: int) -> int:
            return persona_id

    message = str(info.value)
    assert "get_persona" in message
    assert f"key={fixed!r}" in message


def test_a_constant_key_is_refused_when_the_function_has_arguments() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match=r"every call would share one entry") as info:

        @cache.cached(namespace="persona", key="all")
        async def get_persona(persona_id: int) -> int:
            return persona_id

    assert "key='{persona_id}'" in str(info.value)

    @cache.cached(namespace="settings", key="current")  # no arguments: one entry is right
    async def load_settings() -> int:
        return 1

    assert load_settings.key() == "sight:v1:settings:current"


def test_a_tag_naming_an_argument_without_braces_is_refused() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match=r"tag='project:\{project_id\}'"):

        @cache.cached(namespace="persona", key="{persona_id}", tags=("project:project_id",))
        async def get_persona(persona_id: int, project_id: int) -> int:
            return persona_id

    @cache.cached(namespace="persona", key="{persona_id}", tags=("all-personas",))
    async def constant_tag(persona_id: int, project_id: int) -> int:
        return persona_id


# ---------------------------------------------------------------- unresolved annotations (9)


async def _lock_gone(redis_client: Redis, lock_key: str) -> bool:
    """Whether ``lock_key`` is gone within a second (the release runs in the background)."""
    for _ in range(100):
        if not await redis_client.exists(lock_key):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_an_annotation_imported_under_type_checking_is_refused_and_frees_the_lock(
    cache: Cache, redis_client: Redis
) -> None:
    calls = 0

    @cache.cached(namespace="late", key="{n}")
    async def get_context(n: int) -> OnlyForTypeCheckers:
        nonlocal calls
        calls += 1
        return calls  # type: ignore[return-value]

    for _ in range(2):
        with pytest.raises(ConfigurationError) as info:
            await get_context(1)
        message = str(info.value)
        assert "get_context" in message
        assert "'OnlyForTypeCheckers'" in message
        assert "TYPE_CHECKING" in message
        assert await _lock_gone(redis_client, f"sight:lock:{get_context.key(1)}")
    assert await redis_client.exists(get_context.key(1)) == 0
    assert calls == 0  # refused before the function ran


async def test_a_forward_reference_resolves_at_the_first_call(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def get_later(n: int) -> Any:
        nonlocal calls
        calls += 1
        return DefinedLater(n=n)

    get_later.__annotations__["return"] = "DefinedLater"
    cached = cache.cached(namespace="later")(get_later)  # not defined yet: accepted

    class DefinedLater(BaseModel):
        n: int

    monkeypatch.setitem(globals(), "DefinedLater", DefinedLater)
    assert await cached(1) == DefinedLater(n=1)
    assert await cached(1) == DefinedLater(n=1)  # a hit, decoded into the model
    assert calls == 1


async def test_a_condition_that_raises_frees_the_lock(cache: Cache, redis_client: Redis) -> None:
    def broken(value: int) -> bool:
        raise ValueError("broken condition")

    @cache.cached(namespace="cond", key="{n}", condition=broken)
    async def get(n: int) -> int:
        return n

    with pytest.raises(ValueError, match="broken condition"):
        await get(1)
    assert await _lock_gone(redis_client, f"sight:lock:{get.key(1)}")
