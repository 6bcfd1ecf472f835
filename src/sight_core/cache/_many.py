"""``@cache.cached_many``: batch functions ``(ids, ...) -> {id: value}`` cached per id.

One call = one ``MGET`` for every id, one call of the function for the missing ids only, one
script for the (fenced) writes. Ids another call of this process is computing are not computed
again: the call waits for them (single flight per id). No cross-process lock: a batch is cheap
to recompute per id set, and locking N keys would cost N commands.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from sight_core.errors import CacheSerializationError, ConfigurationError

from ._backend import FAILED, Fence, Write
from ._checks import check_cached
from ._codecs import Codec
from ._envelope import pack, unpack
from ._flight import RETRY, Flights, arrival
from ._keys import KeyRenderer, tag_part
from ._options import Options

if TYPE_CHECKING:
    from ._cache import Cache
    from ._engine import Engine

__all__ = ["CachedManyFunction"]

_LEFT_OUT: Any = object()  # the batch function left this id out of its result

P = ParamSpec("P")
K = TypeVar("K")
V = TypeVar("V")


class CachedManyFunction(Generic[P, K, V]):
    """A cached batch function; call it like the original. ``keys(ids, ...)`` lists the
    Redis keys, ``invalidate(ids, ...)`` deletes them, ``get_many(ids, ...)`` reads only."""

    def __init__(
        self,
        cache: Cache,
        engine: Engine,
        fn: Callable[P, Awaitable[dict[K, V]]],
        options: Options,
        items: str | None,
    ) -> None:
        self._cache = cache
        self._engine = engine
        self._fn = fn
        self.uncached = fn
        self.options = options
        self._keys = KeyRenderer(fn, options.key)
        self._tag_keys = tuple(KeyRenderer(fn, t, tag_part) for t in options.tags)
        names = list(self._keys.names)
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
        self._counters = engine.counters(options.namespace)
        self._flights = Flights()
        functools.update_wrapper(self, fn)

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
        """The decodable cached values by id, and whether the backend answered."""
        engine = self._engine
        found: dict[Any, Any] = {}
        raws = await engine.read_many(keys, self._counters)
        if not isinstance(raws, list):
            return found, False
        codec = self._codec
        for item, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            try:
                found[item] = unpack(raw).value(codec.decode)
            except Exception as exc:
                engine.fail("decode", self._counters, exc, backend=False)
        return found, True

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> dict[K, V]:
        self._engine.require()
        if not self._cache.enabled:
            return await self._fn(*args, **kwargs)
        values, ids, keys = self._split(args, kwargs)
        found, backend_answered = await self._read(ids, keys)
        counters = self._counters
        counters.hits += len(found)
        missing = {i: k for i, k in zip(ids, keys, strict=True) if i not in found}
        counters.misses += len(missing)
        flights = self._flights
        began = arrival()
        while missing:
            # (flight, sealed when found): a flight found now may be followed after others
            followed = {
                i: (f, f.sealed) for i, k in missing.items() if (f := flights.get(k)) is not None
            }
            led = {i: k for i, k in missing.items() if i not in followed}
            if led:
                found.update(await self._lead(values, led, backend_answered))
            retry: dict[Any, str] = {}
            for item, (flight, sealed) in followed.items():
                value = await flights.follow(flight, sealed, began)
                if value is RETRY:
                    retry[item] = missing[item]
                elif value is not _LEFT_OUT:
                    found[item] = value
            if retry:
                # Sealed or fenced when joined: read those ids again (one MGET).
                again, backend_answered = await self._read(list(retry), list(retry.values()))
                found.update(again)
            missing = {i: k for i, k in retry.items() if i not in found}
        return found

    async def _lead(
        self, values: list[Any], led: dict[Any, str], backend_answered: bool
    ) -> dict[Any, Any]:
        """Compute the ``led`` ids (id -> key) in one call, store them (fenced), and hand
        each to the callers waiting for it."""
        engine = self._engine
        flights = self._flights
        mine = {k: flights.lead(k) for k in led.values()}
        try:
            call_values = list(values)
            original = values[self._items]  # the caller's collection: its type is kept
            call_values[self._items] = (
                type(original)(led)
                if isinstance(original, list | tuple | set | frozenset)
                else list(led)
            )
            counters = self._counters
            fence = await engine.start_fence(counters) if backend_answered else FAILED
            counters.computations += 1
            for flight in mine.values():
                flight.started = arrival()
            start = time.perf_counter()
            computed = await self._call(call_values)
            delta = time.perf_counter() - start
            for flight in mine.values():
                flight.sealed = True
            stood: dict[Any, bool] = {}  # ids missing from it were not fence-checked
            if fence is not FAILED:
                stood = await self._write(values, led, computed, delta, fence)
        except BaseException as exc:
            for key, flight in mine.items():
                flights.fail(key, flight, exc)
            raise
        for item, key in led.items():
            flights.land(key, mine[key], computed.get(item, _LEFT_OUT), stood.get(item))
        return {i: computed[i] for i in led if i in computed}

    async def _call(self, values: list[Any]) -> dict[Any, Any]:
        names = self._keys.names
        signature = self._keys.signature
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
    ) -> dict[Any, bool]:
        """Store the computed values (one fenced script); returns, per id written, whether
        it stood (was not fenced)."""
        engine = self._engine
        options = self.options
        codec = self._codec
        writes: list[Write] = []
        written: list[Any] = []
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
                engine.fail("encode", self._counters, exc, backend=False)
                continue
            ttl = options.ttl_for(value)
            values[self._items] = item
            key = self._base + self._keys.render_values(values)
            tags = [t.render_values(values) for t in self._tag_keys]
            raw = pack(
                body, fresh_until=now + ttl, delta=delta, compress_above=self._cache.compress_above
            )
            writes.append(
                engine.keyspace.write(
                    options.namespace, options.version, key, raw, max(int(ttl * 1000), 1), tags
                )
            )
            written.append(item)
        if not writes:
            return {}
        stored = await engine.store(writes, fence, self._counters)
        if stored is FAILED:
            return {}
        return dict(zip(written, stored, strict=True))

    async def invalidate(self, *args: Any, **kwargs: Any) -> int:
        """Delete the entries of these ids; returns how many existed.

        Raises:
            CacheError: the backend failed or the breaker is open.
        """
        keys = self.keys(*args, **kwargs)
        return await self._engine.invalidate_entries(self.options.namespace, keys)
