"""A versioned, namespaced cache over Redis with stampede locking, tags and fail-open reads.

::

    from sight_core.cache import Cache, create_redis_client

    cache = Cache(prefix="sight")                    # at import time
    cache.bind(create_redis_client(settings.redis))  # at startup (MemoryBackend() in tests)

    @cache.cached(namespace="persona", version=2, ttl=600,
                  key="{persona_id}:project:{project_id}", tags=("project:{project_id}",))
    async def get_persona(persona_id: UUID, project_id: UUID) -> PersonaOut: ...

See ``docs/caching.md`` for the guide and ``docs/cache-migration.md`` to replace hand-written
``redis.get``/``redis.set`` blocks.
"""

from sight_core.errors import CacheError, CacheSerializationError, NotBoundError

from ._backend import Backend, Write
from ._cache import Cache
from ._client import create_redis_client
from ._codecs import Codec, JsonCodec, PickleCodec
from ._decorator import BoundCachedFunction, CachedFunction
from ._keys import CacheKeyed
from ._many import CachedManyFunction
from ._memory import MemoryBackend
from ._stats import NamespaceStats

__all__ = [
    "Backend",
    "BoundCachedFunction",
    "Cache",
    "CacheError",
    "CacheKeyed",
    "CacheSerializationError",
    "CachedFunction",
    "CachedManyFunction",
    "Codec",
    "JsonCodec",
    "MemoryBackend",
    "NamespaceStats",
    "NotBoundError",
    "PickleCodec",
    "Write",
    "create_redis_client",
]
