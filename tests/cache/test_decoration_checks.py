"""What ``@cache.cached`` refuses when it is applied, and the instance part of method keys.

Each refusal is a ConfigurationError raised at decoration (or class creation) that names the
function, the problem and the fix; the call-time checks cover what decoration cannot see.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from sight_core.cache import Cache
from sight_core.errors import ConfigurationError


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
