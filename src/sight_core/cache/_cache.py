"""The :class:`Cache` object: configuration, binding, guarded backend calls and invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sight_core.errors import ConfigurationError

from ._backend import Backend
from ._breaker import Breaker
from ._codecs import Codec
from ._decorator import CachedFunction
from ._engine import Engine
from ._keys import check_name, tag_part
from ._local import LocalTier
from ._log import RateLimitedLog
from ._many import CachedManyFunction
from ._memory import MemoryBackend
from ._options import Options
from ._stats import FIELDS, NamespaceStats

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from sight_core.settings import CacheSettings

__all__ = ["Cache"]

P = ParamSpec("P")
R = TypeVar("R")
K = TypeVar("K")
V = TypeVar("V")

_SCAN_BATCH = 500
_CLOSE_WAIT = 1.0  # seconds aclose waits for cancelled background tasks


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    # tuple("project:{id}") would be one tag per character: let Options refuse a string.
    return tags if isinstance(tags, str) else tuple(tags)  # type: ignore[return-value]


def _slots(target: object) -> int:
    """How many operations may be on the wire at once: the client pool's size less its
    pub/sub connection (unlimited for a backend without a pool). A ``RedisCluster`` raises
    past ``max_connections`` per node instead of waiting, and one operation may hold two
    connections of a node (its script and the fence clock read): half of that."""
    from redis.asyncio.cluster import RedisCluster

    if isinstance(target, RedisCluster):
        per_node = target.get_connection_kwargs().get("max_connections")
        return max(int(per_node) // 2, 1) if isinstance(per_node, int) else 1 << 30
    pool = getattr(target, "connection_pool", None)
    size = getattr(pool, "max_connections", None)
    return size - 1 if isinstance(size, int) and size > 1 else (1 if size == 1 else 1 << 30)


def _check_called(decorator: str, fn: object, namespace: str) -> None:
    """Refuse ``@cache.cached`` used without its arguments (or without a namespace)."""
    if fn is not None:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        raise ConfigurationError(
            f"@cache.{decorator} on {name} needs its arguments: write "
            f"@cache.{decorator}(namespace=..., ttl=...), with parentheses"
        )
    if not namespace:
        raise ConfigurationError(
            f"@cache.{decorator}(...) needs namespace='...', the name of what is cached "
            "(e.g. namespace='persona')"
        )


class Cache:
    """A namespaced, versioned cache over Redis; create at import time, ``bind`` at startup.

    Every option has the default of :class:`~sight_core.settings.CacheSettings`;
    :meth:`from_settings` builds one from settings. Using the cache before :meth:`bind` raises
    :class:`~sight_core.errors.NotBoundError`.

    Args:
        prefix: first segment of every key (``[A-Za-z0-9_.-]+``).
        default_ttl: seconds an entry stays fresh when ``cached(ttl=...)`` is not given.
        op_timeout: deadline of one backend operation, whatever the client's own retries.
        lock_ttl: stampede-lock lease (extended every third of it while computing); waiters
            look again when the lease they saw ends, so a dead holder is taken over within its
            remaining lease plus about 10 ms (``benchmarks/cache.py``, case ``takeover``).
        breaker_threshold: consecutive backend errors that open the breaker (connection
            errors and timeouts open it at once).
        breaker_cooldown: seconds the open breaker skips the backend before one probe.
        local_tier: keep decoded hot values in process (``local_max_items``, ``local_ttl``).
        compress_above: zlib-compress encoded values longer than this many bytes.
        enabled: False makes every cached function call straight through.
        error_log_interval: at most one log line per (namespace, operation, error type) per
            this many seconds.

    Raises:
        ConfigurationError: an invalid option.
    """

    def __init__(
        self,
        prefix: str = "sight",
        *,
        default_ttl: float = 300.0,
        op_timeout: float = 0.25,
        lock_ttl: float = 10.0,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
        local_tier: bool = False,
        local_max_items: int = 1024,
        local_ttl: float = 5.0,
        compress_above: int | None = None,
        enabled: bool = True,
        error_log_interval: float = 60.0,
    ) -> None:
        self.prefix = check_name("prefix", prefix)
        for name, value in (
            ("default_ttl", default_ttl),
            ("op_timeout", op_timeout),
            ("lock_ttl", lock_ttl),
            ("breaker_cooldown", breaker_cooldown),
            ("local_ttl", local_ttl),
        ):
            if not value > 0:
                raise ConfigurationError(f"Cache {name} must be positive, got {value!r}")
        if breaker_threshold < 1 or local_max_items < 1:
            raise ConfigurationError("Cache breaker_threshold and local_max_items must be >= 1")
        self.default_ttl = default_ttl
        self.op_timeout = op_timeout
        self.lock_ttl = lock_ttl
        self.local_tier = local_tier
        self.compress_above = compress_above
        self.enabled = enabled
        self._engine = Engine(
            self.prefix,
            op_timeout=op_timeout,
            lock_ttl=lock_ttl,
            breaker=Breaker(breaker_threshold, breaker_cooldown),
            log=RateLimitedLog(error_log_interval),
            local=LocalTier(local_max_items, local_ttl) if local_tier else None,
        )
        # The engine's own objects, named here for the Cache's methods.
        self._breaker = self._engine.breaker
        self._local = self._engine.local
        self._tasks = self._engine.tasks
        self.keyspace = self._engine.keyspace
        self._unregister: Callable[[], None] | None = None

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> Cache:
        """A cache configured from ``SightSettings().cache``."""
        return cls(
            settings.prefix,
            default_ttl=settings.default_ttl,
            op_timeout=settings.op_timeout,
            lock_ttl=settings.lock_ttl,
            breaker_threshold=settings.breaker_threshold,
            breaker_cooldown=settings.breaker_cooldown,
            local_tier=settings.local_tier,
            local_max_items=settings.local_max_items,
            local_ttl=settings.local_ttl,
            compress_above=settings.compress_above,
            enabled=settings.enabled,
        )

    # ------------------------------------------------------------------ binding

    def bind(self, target: Redis | RedisCluster | Backend) -> None:
        """Use ``target``: a ``redis.asyncio.Redis`` (standalone or Sentinel-managed), a
        ``redis.asyncio.RedisCluster`` (both with ``decode_responses=False``, not closed by
        the cache) or a backend such as :class:`MemoryBackend`. Rebinding replaces
        the previous backend (call :meth:`aclose` first to release its pub/sub connection).

        Raises:
            ConfigurationError: the client decodes responses to ``str``.
        """
        from redis.asyncio.cluster import RedisCluster

        from ._redis import RedisBackend

        cluster = isinstance(target, RedisCluster)
        if cluster or (hasattr(target, "execute_command") and hasattr(target, "pipeline")):
            if isinstance(target, RedisCluster):
                kwargs = target.get_connection_kwargs()
            else:
                kwargs = getattr(getattr(target, "connection_pool", None), "connection_kwargs", {})
            if (kwargs or {}).get("decode_responses"):
                raise ConfigurationError(
                    "Cache.bind needs a Redis client with decode_responses=False: cached "
                    "values are bytes (use create_redis_client(settings.redis))"
                )
            if isinstance(target, RedisCluster):
                from ._cluster import ClusterBackend

                backend: Backend = ClusterBackend(target, self.keyspace)
            else:
                backend = RedisBackend(target)  # type: ignore[arg-type]
        elif isinstance(target, MemoryBackend) or hasattr(target, "try_lock"):
            backend = target
        else:
            raise ConfigurationError(
                f"Cache.bind expects a redis.asyncio.Redis or a MemoryBackend, "
                f"got {type(target).__name__}"
            )
        self._engine.backend = backend
        self._breaker.reset()
        self._engine.ops.resize(_slots(target))
        if self._local is not None:
            self._local.clear()
        self._register_metrics()

    @property
    def bound(self) -> bool:
        """Whether :meth:`bind` was called."""
        return self._engine.backend is not None

    @property
    def backend(self) -> Backend:
        """The bound backend.

        Raises:
            NotBoundError: :meth:`bind` was not called.
        """
        return self._engine.require()

    @property
    def breaker_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        return self._breaker.state

    async def aclose(self) -> None:
        """Cancel background refreshes, stop listeners and close the pub/sub connection
        (waiting at most about a second for each). The Redis client given to :meth:`bind`
        stays open (it is the caller's)."""
        engine = self._engine
        tasks = [*self._tasks]
        if engine.local_listener is not None:
            tasks.append(engine.local_listener)
            engine.local_listener = None
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that does not finish promptly once cancelled must not hang
            # shutdown (seen with the invalidation listener); and unlike awaiting each task
            # under suppress(BaseException), a cancellation of aclose itself propagates.
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT)
        if engine.backend is not None:
            await engine.backend.aclose()
        if self._unregister is not None:
            self._unregister()
            self._unregister = None

    # ------------------------------------------------------------------ decorators

    def cached(
        self,
        _fn: None = None,
        /,
        *,
        namespace: str = "",
        version: int = 1,
        ttl: float | None = None,
        key: str | None = None,
        tags: tuple[str, ...] = (),
        condition: Callable[[Any], bool] | None = None,
        cache_none: bool = False,
        none_ttl: float | None = None,
        stale_ttl: float = 0.0,
        early_refresh: float = 0.0,
        jitter: float = 0.1,
        lock: bool = True,
        codec: Codec | None = None,
        local: bool | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
        """Cache an async function's results under ``{prefix}:v{version}:{namespace}:{key}``.

        Args:
            namespace: what the values are (``persona``); ``[A-Za-z0-9_.-]+``.
            version: bump it when the value's shape or meaning changes: old entries become
                misses at once, with no SCAN.
            ttl: seconds fresh (default: the cache's ``default_ttl``).
            key: template over the arguments, e.g. ``"{persona_id}:project:{project_id}"``;
                default: every argument in order, a method's ``self`` through its class's
                ``__cache_key__()`` (:class:`CacheKeyed`), a classmethod's ``cls`` by name.
            tags: templates like ``"project:{project_id}"`` for :meth:`invalidate_tags`.
            condition: store a result only when ``condition(result)`` is true.
            cache_none: store ``None`` results too, for ``none_ttl`` (default ``ttl``).
            stale_ttl: keep serving an expired value this long while one background task
                recomputes it under the lock (the function's arguments must outlive the call).
            early_refresh: XFetch beta (1.0 is typical, 0 = off): recompute hot keys in the
                background shortly before they expire.
            jitter: fraction by which each entry's TTL is randomly shortened.
            lock: protect misses with the cross-process stampede lock.
            codec: how values are stored (default JSON, decoded into the return annotation;
                a value that would not come back equal and of the same types is not stored,
                so a hit is always what the miss returned).
            local: use the in-process tier for this function (default: the cache's setting).

        Raises:
            ConfigurationError: at decoration: a bad option; used without parentheses or
                ``namespace``; a template naming an argument the function does not have, or
                an argument without braces; a namespace and version another function of this
                cache uses; a return annotation whose values would not round-trip through
                JSON. When the class is created: a method without ``key=`` whose class has no
                ``__cache_key__``. See ``docs/caching.md``, "What can be cached, and keys".
        """
        _check_called("cached", _fn, namespace)
        options = Options(
            namespace=namespace,
            version=version,
            ttl=self.default_ttl if ttl is None else ttl,
            key=key,
            tags=_tags(tags),
            condition=condition,
            cache_none=cache_none,
            none_ttl=none_ttl,
            stale_ttl=stale_ttl,
            early_refresh=early_refresh,
            jitter=jitter,
            lock=lock,
            codec=codec,
            local=local,
        )

        def decorate(fn: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
            if not asyncio.iscoroutinefunction(fn):
                raise ConfigurationError(
                    f"@cache.cached needs an async function, got {getattr(fn, '__qualname__', fn)}"
                )
            if local and self._local is None:
                raise ConfigurationError(
                    f"@cache.cached(local=True) on {getattr(fn, '__qualname__', fn)}: this Cache "
                    "has no local tier; build it with Cache(local_tier=True) (or "
                    "SIGHT_CACHE__LOCAL_TIER=true), or drop local=True"
                )
            return CachedFunction(self, self._engine, fn, options)

        return decorate

    def cached_many(
        self,
        _fn: None = None,
        /,
        *,
        namespace: str = "",
        version: int = 1,
        ttl: float | None = None,
        key: str | None = None,
        items: str | None = None,
        tags: tuple[str, ...] = (),
        condition: Callable[[Any], bool] | None = None,
        jitter: float = 0.1,
        codec: Codec | None = None,
    ) -> Callable[[Callable[P, Awaitable[dict[K, V]]]], CachedManyFunction[P, K, V]]:
        """Cache a batch function ``(ids, ...) -> {id: value}`` entry by entry.

        A call costs one ``MGET`` for every id, one call of the function with the missing
        ids only, and one pipeline writing what it returned. Ids it leaves out are not
        cached (and absent from the result). ``items`` names the collection parameter
        (default: the first one after ``self``); in ``key`` and ``tags`` that name stands for
        one id, so ``key="{persona_ids}:project:{project_id}"`` makes the same keys as the
        single-item function with ``key="{persona_id}:project:{project_id}"``.

        Raises:
            ConfigurationError: as :meth:`cached`, or ``items`` is not a parameter.
        """
        _check_called("cached_many", _fn, namespace)
        options = Options(
            namespace=namespace,
            version=version,
            ttl=self.default_ttl if ttl is None else ttl,
            key=key,
            tags=_tags(tags),
            condition=condition,
            cache_none=False,
            none_ttl=None,
            stale_ttl=0.0,
            early_refresh=0.0,
            jitter=jitter,
            lock=False,
            codec=codec,
            local=False,
        )

        def decorate(fn: Callable[P, Awaitable[dict[K, V]]]) -> CachedManyFunction[P, K, V]:
            if not asyncio.iscoroutinefunction(fn):
                raise ConfigurationError(
                    "@cache.cached_many needs an async function, got "
                    f"{getattr(fn, '__qualname__', fn)}"
                )
            return CachedManyFunction(self, self._engine, fn, options, items)

        return decorate

    # ------------------------------------------------------------------ invalidation

    def tag(self, template: str, **values: Any) -> str:
        """Render a tag the way ``tags=`` does: ``cache.tag("project:{id}", id=pid)``.

        A ``str`` value is used as it is (``f"project:{name}"`` names the same tag); other
        values render canonically (a date in ISO form, an enum by value, a model digested).
        """
        return template.format(**{k: tag_part(v) for k, v in values.items()})

    async def invalidate_tags(self, *tags: str) -> int:
        """Delete every entry indexed under any of ``tags`` (rendered, e.g. ``"project:42"``),
        in every version; returns how many entries were deleted.

        First, atomically, the tags are fenced (computations that started before are not
        stored) and their indexes retired (writes from then on go to fresh indexes, so none
        is lost); then the retired members are unlinked in batches of 500, each batch one
        script within the operation deadline. When it returns, none of those entries is
        readable and every process's local tier was told. Interrupted (``CacheError``), a
        second call finishes the batches.

        Raises:
            CacheError: the backend failed or the breaker is open.
        """
        if not tags:
            return 0
        space = self.keyspace
        retired = [
            (space.tag_fence(t), space.tag(t), space.dead_tag(t)) for t in dict.fromkeys(tags)
        ]
        clock = space.clock
        await self._engine.strict("invalidate_tags", lambda b: b.retire_tags(clock, retired))
        channel = space.local_channel
        deleted = 0
        for _, _, dead in retired:
            while True:

                def drain(b: Backend, dead: str = dead) -> Awaitable[tuple[int, int]]:
                    return b.drain(dead, _SCAN_BATCH, channel)

                taken, gone = await self._engine.strict("invalidate_tags", drain)
                deleted += gone
                if not taken:
                    break
        if self._local is not None:
            self._local.clear()  # the drained names were published; this process drops all
        return deleted

    async def invalidate_namespace(self, namespace: str, version: int | None = None) -> int:
        """Delete every entry of ``namespace`` (all versions, or one) with ``SCAN`` and
        ``UNLINK`` in batches (never ``KEYS``); returns how many were deleted.

        First the namespace is fenced (every version): computations that started before are
        not stored. Each ``SCAN`` page and its ``UNLINK`` run within the operation deadline.

        Raises:
            CacheError: the backend failed or the breaker is open.
        """
        check_name("namespace", namespace)
        space = self.keyspace
        clock, mark = space.clock, space.namespace_fence(namespace)
        await self._engine.strict("invalidate_namespace", lambda b: b.fence_marks(clock, [mark]))
        match = space.entry_match(namespace, version)

        def belongs(key: str) -> bool:
            parts = key.split(":", 3)
            return len(parts) == 4 and parts[2] == namespace and parts[1][1:].isdigit()

        deleted = 0
        cursor = 0
        while True:
            cursor, keys = await self._engine.strict(
                "invalidate_namespace",
                lambda b, c=cursor: b.scan_page(match, c, _SCAN_BATCH),  # type: ignore[misc]
            )
            doomed = [k for k in keys if belongs(k)]
            if doomed:
                deleted += await self._engine.strict(
                    "invalidate_namespace",
                    lambda b, d=doomed: b.delete(d),  # type: ignore[misc]
                )
            if cursor == 0:
                break
        if self._local is not None:
            self._local.discard_matching(namespace)
        await self._engine.publish_local(b"ns:" + namespace.encode())
        return int(deleted)

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, NamespaceStats]:
        """Counters per namespace (hits, misses, stale, lock waits, computations, errors and
        ``hit_ratio``) since the cache was created."""
        return {ns: c.snapshot() for ns, c in sorted(self._engine.namespaces().items())}

    def totals(self) -> tuple[int, int]:
        """``(hits, misses)`` summed over every namespace, read from the live counters.

        Allocates nothing, unlike :meth:`stats`: cheap enough to call twice per request
        (the FastAPI middleware does, for ``Server-Timing``).
        """
        hits = misses = 0
        for counters in self._engine.namespaces().values():
            hits += counters.hits
            misses += counters.misses
        return hits, misses

    def _samples(self) -> Iterable[Any]:
        from sight_core.observability import Sample

        for ns, c in self._engine.namespaces().items():
            labels = {"namespace": ns, "prefix": self.prefix}
            for field in FIELDS:
                yield Sample(f"sight_cache_{field}_total", labels, getattr(c, field), "counter")
        state = {"closed": 0, "open": 1, "half-open": 2}[self._breaker.state]
        yield Sample("sight_cache_breaker_state", {"prefix": self.prefix}, state, "gauge")

    def _register_metrics(self) -> None:
        if self._unregister is not None:
            return
        try:
            from sight_core.observability import register_collector

            self._unregister = register_collector(self._samples)
        except Exception:  # observability is optional here; never break the cache
            self._unregister = None
