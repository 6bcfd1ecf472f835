"""``@cache.cached_many``: batch functions ``(ids, ...) -> {id: value}`` cached per id.

One call = one ``MGET`` for every id, one call of the function for the missing ids only, one
pipeline for the writes. No stampede lock: a batch is cheap to recompute per id set, and
locking N keys would cost N commands.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from sight_core.errors import CacheSerializationError, ConfigurationError, NotBoundError

from ._backend import FAILED, Fence, Write
from ._checks import check_cached
from ._codecs import Codec
from ._envelope import HEADER, NONE, pack
from ._keys import KeyRenderer
from ._options import Options

if TYPE_CHECKING:
    from ._cache import Cache

__all__ = ["CachedManyFunction"]

P = ParamSpec("P")
K = TypeVar("K")
V = TypeVar("V")

_MAGIC = 0xCA


class CachedManyFunction(Generic[P, K, V]):
    """A cached batch function; call it like the original. ``keys(ids, ...)`` lists the
    Redis keys, ``invalidate(ids, ...)`` deletes them, ``get_many(ids, ...)`` reads only."""

    def __init__(
        self,
        cache: Cache,
        fn: Callable[P, Awaitable[dict[K, V]]],
        options: Options,
        items: str | None,
    ) -> None:
        self._cache = cache
        self._fn = fn
        self.uncached = fn
        self.options = options
        self._keys = KeyRenderer(fn, options.key)
        self._tag_keys = tuple(KeyRenderer(fn, t) for t in options.tags)
        names = list(self._keys._names)
        first = 1 if names[:1] and names[0] in ("self", "cls") else 0
        if items is None:
            if len(names) <= first:
                raise ConfigurationError(f"{fn.__qualname__} has no parameter for the ids")
            items = names[first]
        if items not in names:
            raise ConfigurationError(
                f"cached_many(items={items!r}): {fn.__qualname__} has no such parameter"
            )
        self._items = names.index(items)
        self._codec: Codec = check_cached(cache, fn, options, many=True)
        self._base = f"{cache.prefix}:v{options.version}:{options.namespace}:"
        self._counters = cache._counters_for(options.namespace)
        functools.update_wrapper(self, fn)

    def _get_codec(self) -> Codec:
        return self._codec

    def _split(
        self, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[list[Any], list[Any], list[str]]:
        values = list(self._keys.values(args, kwargs))
        ids = list(dict.fromkeys(values[self._items]))
        keys = []
        per_id = list(values)  # ``values`` keeps the caller's collection for the call
        for item in ids:
            per_id[self._items] = item
            keys.append(self._base + self._keys.render_values(per_id))
        return values, ids, keys

    def keys(self, *args: Any, **kwargs: Any) -> list[str]:
        """The Redis key of every id."""
        return self._split(args, kwargs)[2]

    async def get_many(self, *args: Any, **kwargs: Any) -> dict[K, V]:
        """Only the cached values (one ``MGET``); ids not cached are absent."""
        _, ids, keys = self._split(args, kwargs)
        found, _ = await self._read(ids, keys)
        return found

    async def _read(self, ids: list[Any], keys: list[str]) -> tuple[dict[Any, Any], bool]:
        cache = self._cache
        backend = cache._backend
        if backend is None:
            raise NotBoundError(cache._unbound_message())
        found: dict[Any, Any] = {}
        raws = await cache._guard("mget", self._counters, lambda: backend.mget(keys))
        if not isinstance(raws, list):
            return found, False
        codec = self._get_codec()
        for item, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            try:
                magic, flags, _, _ = HEADER.unpack_from(raw)
                if magic != _MAGIC:
                    raise CacheSerializationError("cached value has no sight-core header")
                body = raw[HEADER.size :]
                if flags & 1:
                    import zlib

                    body = zlib.decompress(body)
                found[item] = None if flags & NONE else codec.decode(body)
            except Exception as exc:
                cache._fail("decode", self._counters, exc, backend=False)
        return found, True

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> dict[K, V]:
        cache = self._cache
        if cache._backend is None:
            raise NotBoundError(cache._unbound_message())
        if not cache.enabled:
            return await self._fn(*args, **kwargs)
        values, ids, keys = self._split(args, kwargs)
        found, redis_ok = await self._read(ids, keys)
        counters = self._counters
        counters.hits += len(found)
        missing = [i for i in ids if i not in found]
        counters.misses += len(missing)
        if not missing:
            return found
        call_values = list(values)
        original = values[self._items]  # the caller's collection: its type is kept
        call_values[self._items] = (
            type(original)(missing)
            if isinstance(original, list | tuple | set | frozenset)
            else missing
        )
        fence = await cache._start_fence(counters) if redis_ok else FAILED
        counters.computations += 1
        start = time.perf_counter()
        computed = await self._call(call_values)
        delta = time.perf_counter() - start
        if fence is not FAILED:
            await self._write(values, missing, computed, delta, fence)
        found.update((i, computed[i]) for i in missing if i in computed)
        return found

    async def _call(self, values: list[Any]) -> dict[Any, Any]:
        names = self._keys._names
        signature = self._keys._signature
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, value in zip(names, values, strict=True):
            kind = signature.parameters[name].kind
            if kind is kind.KEYWORD_ONLY:
                kwargs[name] = value
            elif kind is kind.VAR_POSITIONAL:
                args.extend(value)
            elif kind is kind.VAR_KEYWORD:
                kwargs.update(value)
            else:
                args.append(value)
        fn: Callable[..., Awaitable[dict[Any, Any]]] = self._fn
        return await fn(*args, **kwargs)

    async def _write(
        self,
        values: list[Any],
        missing: Iterable[Any],
        computed: Mapping[Any, Any],
        delta: float,
        fence: Fence,
    ) -> None:
        cache = self._cache
        backend = cache._backend
        assert backend is not None
        options = self.options
        codec = self._get_codec()
        writes: list[Write] = []
        now = time.time()
        values = list(values)
        for item in missing:
            if item not in computed:
                continue
            value = computed[item]
            if value is None or (options.condition is not None and not options.condition(value)):
                continue
            try:
                body = codec.encode(value)
            except CacheSerializationError as exc:
                cache._fail("encode", self._counters, exc, backend=False)
                continue
            ttl = options.ttl_for(value)
            values[self._items] = item
            key = self._base + self._keys.render_values(values)
            tags = [t.render_values(values) for t in self._tag_keys]
            raw = pack(
                body, fresh_until=now + ttl, delta=delta, compress_above=cache.compress_above
            )
            writes.append(
                cache.keyspace.write(
                    options.namespace, options.version, key, raw, max(int(ttl * 1000), 1), tags
                )
            )
        if writes:
            now_ms = int(now * 1000)
            clock = cache.keyspace.clock
            result = await cache._guard(
                "set", self._counters, lambda: backend.write(writes, now_ms, fence, clock)
            )
            if result is not FAILED:
                cache._observe_fence(result[1])

    async def invalidate(self, *args: Any, **kwargs: Any) -> int:
        """Delete the entries of these ids; returns how many existed.

        Raises:
            CacheError: the backend failed or the breaker is open.
        """
        keys = self.keys(*args, **kwargs)
        return await self._cache._invalidate_entries(self.options.namespace, keys)
