"""``@cache.cached``: the read-through wrapper, its single-flight reads and its stampede lock.

A call renders its key (precomputed template and argument mapping), asks the in-process tier
if enabled, then Redis with one ``GET`` bounded by the cache's deadline; concurrent identical
reads in one process share that ``GET``. A miss is computed once per process (single-flight)
and once across processes (a Redis lock: ``SET NX PX``, lease extended while computing,
token-checked release); the others wait on one shared pub/sub connection for the value,
which the holder publishes with the write. Any backend error means "compute and return".
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sight_core.concurrency import gather_limited
from sight_core.errors import CacheSerializationError, NotBoundError

from ._backend import DONE, FAILED, GAVE_UP, Fence, Write
from ._checks import check_cached, check_method_owner, ensure_resolved
from ._codecs import Codec
from ._deadline import Expiry, OperationTimeout
from ._envelope import pack, plain_body, unpack
from ._flight import RETRY, Flight, Flights, arrival
from ._keys import KeyRenderer, tag_part
from ._local import LocalTier
from ._options import Options

if TYPE_CHECKING:
    from ._cache import Cache
    from ._engine import Engine

__all__ = ["BoundCachedFunction", "CachedFunction"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")

_FAILED = FAILED  # a backend operation failed or was skipped (breaker open)
_ABSENT = LocalTier.ABSENT
_CANCELLED = Expiry.CANCELLED
_STALLED = Expiry.STALLED
# A waiter looks at the lock again this long after the lease it read ends (Redis keeps a key
# through its last millisecond; a look that comes early just reads the few ms left).
_LEASE_MARGIN = 0.01


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class CachedFunction(Generic[P, R]):
    """An async function whose results are cached; call it like the original.

    Attributes: ``uncached`` (the original function), ``namespace``, ``version``.
    Methods: ``key``, ``tags``, ``invalidate``, ``refresh``, ``set``, ``get_many``.
    """

    def __init__(
        self, cache: Cache, engine: Engine, fn: Callable[P, Awaitable[R]], options: Options
    ) -> None:
        self._cache = cache
        self._engine = engine
        self._fn = fn
        self.uncached = fn
        self.options = options
        self.namespace = options.namespace
        self.version = options.version
        self._keys = KeyRenderer(fn, options.key)
        self._tag_keys = tuple(KeyRenderer(fn, t, tag_part) for t in options.tags)
        self._codec: Codec = check_cached(cache, fn, options)
        self._base = f"{cache.prefix}:v{options.version}:{options.namespace}:"
        self._render = self._keys.compile(self._base)
        self._counters = engine.counters(options.namespace)
        self._check_fresh = bool(options.stale_ttl or options.early_refresh)
        self._reads: dict[str, asyncio.Future[Any] | None] = {}
        self._flights = Flights()
        self._refreshes: dict[str, asyncio.Future[Any]] = {}
        self._refreshing: set[str] = set()
        self._use_local = cache.local_tier if options.local is None else options.local
        functools.update_wrapper(self, fn)

    # ------------------------------------------------------------------ descriptor (methods)

    def __set_name__(self, owner: type, name: str) -> None:
        check_method_owner(owner, name, self.options)

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> CachedFunction[P, R]: ...

    @overload
    def __get__(
        self: CachedFunction[Concatenate[Any, P2], R], obj: object, owner: type[Any] | None = None
    ) -> BoundCachedFunction[P2, R]: ...

    def __get__(self, obj: object | None, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        return BoundCachedFunction(self, obj)

    # ------------------------------------------------------------------ the hot path

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        engine = self._engine
        backend = engine.backend
        if backend is None:
            raise NotBoundError(engine.unbound_message())
        if not self._cache.enabled:
            return await self._fn(*args, **kwargs)
        key = self._render(args, kwargs)
        local = engine.local if self._use_local else None
        since = -1  # the tier's generation before our GET: see LocalTier.put
        if local is not None:
            found = local.get(key)
            if found is not _ABSENT:
                counters = self._counters
                counters.hits += 1
                counters.local_hits += 1
                return found  # type: ignore[no-any-return]
            since = local.generation
        reads = self._reads
        breaker = engine.breaker
        if key in reads:
            # Join the GET in flight only while the breaker is closed: when it is not, that
            # GET is the probe, and only the probe pays its deadline; compute at once.
            raw = await self._follow_read(key) if breaker.healthy else _FAILED
            since = -1  # sent before we came: the leader stores it locally, if anyone
        else:
            if breaker.healthy or breaker.allow():
                reads[key] = None
                epoch = breaker.epoch
                ops = engine.ops
                if ops.free > 0:  # a slot of the pool is free (else: queue, off the deadline)
                    ops.free -= 1
                    task = ops.start()
                    try:
                        raw = await backend.get(key)
                    except Exception as exc:
                        ops.stop(task)
                        raw = _FAILED
                        engine.fail("get", self._counters, exc, epoch=epoch)
                    except asyncio.CancelledError:
                        ops.stop(task)
                        why = ops.expired(task)
                        if why is _CANCELLED:
                            waiter = reads.pop(key, None)
                            if waiter is not None:
                                waiter.cancel()
                            raise
                        raw = _FAILED
                        timeout = OperationTimeout(why is _STALLED)
                        engine.fail("get", self._counters, timeout, epoch=epoch)
                    else:
                        ops.stop(task, True)
                        breaker.success(epoch)
                else:
                    try:
                        raw = await engine.attempt(
                            "get", self._counters, lambda: backend.get(key), epoch
                        )
                    except asyncio.CancelledError:
                        waiter = reads.pop(key, None)
                        if waiter is not None:
                            waiter.cancel()
                        raise
                waiter = reads.pop(key)
                if waiter is not None:
                    waiter.set_result(raw)
            else:
                raw = _FAILED
        if raw is not None and raw is not _FAILED:
            if local is None and not self._check_fresh:
                # Common case inline: plain entry (flags 0), no freshness checks.
                body = plain_body(raw)
                if body is not None:
                    try:
                        value = self._codec.decode(body)
                    except Exception:
                        pass  # the general path below counts and logs the error
                    else:
                        self._counters.hits += 1
                        return value  # type: ignore[no-any-return]
            value = self._decode(raw, key, args, kwargs, local, since=since)
            if value is not _ABSENT:
                return value  # type: ignore[no-any-return]
        return await self._compute_once(key, args, kwargs, raw is not _FAILED)  # type: ignore[no-any-return]

    async def _follow_read(self, key: str) -> Any:
        """Wait for the ``GET`` another task of this process already sent for ``key``."""
        reads = self._reads
        while True:
            fut = reads.get(key, _ABSENT)
            if fut is _ABSENT:
                return await self._engine.read(key, self._counters)  # asks the breaker once
            if fut is None:
                fut = reads[key] = asyncio.get_running_loop().create_future()
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if fut.cancelled() and (task is None or not task.cancelling()):
                    continue  # the leader was cancelled, not us: read again
                raise

    def _decode(
        self,
        raw: bytes,
        key: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        local: LocalTier | None,
        count_hit: bool = True,
        since: int = -1,
    ) -> Any:
        """The value in ``raw`` (``_ABSENT`` if unreadable); schedules refreshes when due;
        stores it in ``local`` if no invalidation reached the tier since ``since``."""
        try:
            entry = unpack(raw)
            fresh_until, delta = entry.fresh_until, entry.delta
            value = entry.value(self._codec.decode)
        except Exception as exc:
            self._engine.fail("decode", self._counters, exc, backend=False)
            return _ABSENT
        counters = self._counters
        if count_hit:
            counters.hits += 1
        if self._check_fresh:
            now = time.time()
            if now >= fresh_until:
                counters.stale += 1
                self._schedule_refresh(key, args, kwargs)
            elif self.options.early_refresh and (
                now - delta * self.options.early_refresh * math.log(random.random() or 1e-12)
                >= fresh_until
            ):
                self._schedule_refresh(key, args, kwargs)
        if local is not None:
            local.put(key, value, since, max(fresh_until - time.time(), 0.0))
            self._engine.ensure_local_listener()
        return value

    # ------------------------------------------------------------------ misses

    async def _compute_once(
        self, key: str, args: Sequence[Any], kwargs: Mapping[str, Any], backend_answered: bool
    ) -> Any:
        """A miss: follow this process's computation of ``key`` (single flight), or lead
        one (:meth:`_compute_and_store`). ``backend_answered``: the read reached the backend
        (False: it failed or was skipped, so compute without storing)."""
        self._counters.misses += 1
        flights = self._flights
        began = arrival()
        while (flight := flights.get(key)) is not None:
            value = await flights.follow(flight, began=began)
            if value is not RETRY:
                return value
            # The value may predate an invalidation this caller must see: read again, then
            # join (or lead) the next flight.
            raw = await self._engine.read(key, self._counters)
            backend_answered = raw is not _FAILED
            if backend_answered and raw is not None:
                value = self._decode(raw, key, args, kwargs, None, count_hit=False)
                if value is not _ABSENT:
                    return value
        flight = flights.lead(key)
        try:
            value, stood = await self._compute_and_store(
                key, args, kwargs, backend_answered, flight
            )
        except BaseException as exc:
            flights.fail(key, flight, exc)
            raise
        flights.land(key, flight, value, stood)
        return value

    async def _compute(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], flight: Flight | None = None
    ) -> tuple[Any, float]:
        """Run the function; stamps ``flight`` with the computation's start (what its
        followers' ``began`` is compared with when the value goes unchecked)."""
        if flight is not None:
            flight.started = arrival()
        ensure_resolved(self._codec)  # a bad forward reference is refused before fn runs
        self._counters.computations += 1
        start = time.perf_counter()
        fn: Callable[..., Awaitable[Any]] = self._fn
        value = await fn(*args, **kwargs)
        return value, time.perf_counter() - start

    def _entry(
        self, key: str, value: Any, delta: float, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Write | None:
        """The write for ``value``; None when it cannot be encoded. Check ``_storable`` first."""
        values = self._keys.values(args, kwargs) if self._tag_keys else args
        try:
            return self._write_for(key, value, delta, values)
        except CacheSerializationError as exc:
            self._engine.fail("encode", self._counters, exc, backend=False)
            return None

    def _write_for(self, key: str, value: Any, delta: float, values: Sequence[Any]) -> Write:
        """Encode ``value`` (raises CacheSerializationError) with its header, TTL, tags and
        fence marks; ``values`` are the arguments in signature order (read only for tags)."""
        options = self.options
        cache = self._cache
        ttl = options.ttl_for(value)
        body = b"" if value is None else self._codec.encode(value)
        raw = pack(
            body,
            fresh_until=time.time() + ttl,
            delta=delta,
            none=value is None,
            compress_above=cache.compress_above,
        )
        ttl_ms = max(int((ttl + options.stale_ttl) * 1000), 1)
        tags = [t.render_values(values) for t in self._tag_keys]
        return cache.keyspace.write(
            options.namespace, options.version, key, raw, ttl_ms, tags, max(int(ttl * 1000), 1)
        )

    def _storable(self, value: Any) -> bool:
        options = self.options
        if value is None and not options.cache_none:
            return False
        return options.condition is None or bool(options.condition(value))

    async def _compute_and_store(
        self,
        key: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        backend_answered: bool,
        flight: Flight | None,
    ) -> tuple[Any, bool | None]:
        """Compute the value for ``key`` and store it (fenced); returns it and whether it
        stood (False: an invalidation came after the computation started; None: nothing
        checked it against the fence, because Redis failed or the value cannot be encoded)."""
        engine = self._engine
        if not backend_answered:
            return (await self._compute(args, kwargs, flight))[0], None
        if self.options.lock:
            return await self._compute_under_lock(key, args, kwargs, flight)
        fence = await engine.start_fence(self._counters)
        value, delta = await self._compute(args, kwargs, flight)
        store = self._storable(value)
        if fence is _FAILED:
            return value, None
        if not (store or (flight is not None and flight.followed)):
            return value, True
        # A value that is not stored is still fence-checked when callers of this process
        # follow it: one of them may have arrived after an invalidation.
        write = self._entry(key, value, delta, args, kwargs)
        if write is None:
            return value, None
        if flight is not None:
            flight.sealed = True
        since = self._local_generation()
        stored = await engine.store([write], fence, self._counters, store)
        if stored is _FAILED:
            return value, None
        if stored[0] and store:
            self._remember(key, value, write, since)
        return value, stored[0]

    def _local_generation(self) -> int:
        local = self._engine.local if self._use_local else None
        return -1 if local is None else local.generation

    def _remember(self, key: str, value: Any, write: Write | None, since: int) -> None:
        """Keep a value just committed in the local tier, unless an invalidation reached
        the tier since ``since`` (read before the commit was sent)."""
        local = self._engine.local if self._use_local else None
        if local is not None and write is not None:
            local.put(key, value, since)
            self._engine.ensure_local_listener()

    async def _compute_under_lock(
        self,
        key: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        flight: Flight | None,
        *,
        steal: bool = False,
    ) -> tuple[Any, bool | None]:
        """Compute under the cross-process lock, or wait for its owner's published value.

        The lock script (``SET lock token NX PX ttl GET`` plus the fence clock) acquires or
        names the owner in one round trip. An owner that stored its value leaves a short
        ``DONE`` marker instead of deleting the lock, so a caller whose ``GET`` missed just
        before the commit finds the value instead of computing it again. A waiter
        subscribes, then looks at the lock once more, so it cannot miss the owner's
        message; it looks at the lock again to take over from an owner whose lease
        expired (it waits the lock's remaining lease, read with the lock, plus 10 ms).
        An empty message (the owner failed, or its commit was fenced) sends every
        waiter back to the lock: one of them computes. ``steal`` (``refresh``) takes the
        lock whatever it holds and fences the computations already running.
        """
        engine = self._engine
        counters = self._counters
        space = engine.keyspace
        lock_key = space.lock(key)
        channel = space.channel(key)
        mark = space.key_fence(self.namespace, key[len(self._base) :]) if steal else None
        token = uuid.uuid4().hex
        inbox_cm: Any = None
        inbox: Any = None
        waited = False
        try:
            while True:
                locked = await engine.lock(lock_key, token, counters, mark)
                if locked is _FAILED:
                    return (await self._compute(args, kwargs, flight))[0], None
                owner, fence, lease_ms = locked
                if owner is None:
                    if inbox_cm is not None:
                        cm, inbox_cm = inbox_cm, None
                        await cm.__aexit__(None, None, None)
                    return await self._compute_as_owner(
                        key, lock_key, token, channel, args, kwargs, fence, flight
                    )
                if owner == DONE:
                    # Committed a moment ago: the value is there unless just invalidated.
                    raw = await engine.read(key, counters)
                    if raw is _FAILED:
                        return (await self._compute(args, kwargs, flight))[0], None
                    if raw is not None:
                        value = self._decode(raw, key, args, kwargs, None, count_hit=False)
                        if value is not _ABSENT:
                            return value, True
                    await engine.clear_done(lock_key, counters)
                    continue
                if inbox_cm is None:
                    # Listen first, then look at the lock again: an owner still holding it
                    # publishes after we listen; one that finished left DONE or nothing.
                    if not waited:
                        counters.lock_waits += 1
                        waited = True
                    cm = engine.subscribe(channel)
                    entered = await engine.guarded("subscribe", counters, cm.__aenter__)
                    if entered is _FAILED:
                        return (await self._compute(args, kwargs, flight))[0], None
                    inbox_cm, inbox = cm, entered
                    continue
                # Until the owner's lease ends (+10 ms), when a dead owner's lock is gone
                # (a live owner extends it, and we look again; waking a moment early costs
                # one more look), or until the breaker opens: Redis is known unhealthy, so
                # the owner's value may never come; compute.
                wait = min(max(lease_ms, 0) / 1000, engine.lock_ttl) + _LEASE_MARGIN
                message = await engine.wait_for_owner(inbox, wait)
                if message is None:
                    continue
                if message is _FAILED or message == GAVE_UP:
                    # Redis is unhealthy, or the owner's computation failed (or cannot be
                    # stored): compute now, every waiting process at once, never in a queue.
                    return (await self._compute(args, kwargs, flight))[0], None
                if message:
                    value = self._decode(message, key, args, kwargs, None, count_hit=False)
                    if value is not _ABSENT:
                        return value, True
                # Empty: the owner failed or was fenced, or the pub/sub connection was
                # reset. Start over.
                cm, inbox_cm = inbox_cm, None
                await cm.__aexit__(None, None, None)
        finally:
            if inbox_cm is not None:
                await inbox_cm.__aexit__(None, None, None)

    async def _compute_as_owner(
        self,
        key: str,
        lock_key: str,
        token: str,
        channel: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        fence: Fence,
        flight: Flight | None,
    ) -> tuple[Any, bool | None]:
        """Compute holding the lock (its lease kept alive), then commit (fenced); returns
        the value and whether the commit stood."""
        engine = self._engine
        counters = self._counters
        keeper = asyncio.get_running_loop().create_task(
            engine.keep_lease(lock_key, token, counters)
        )
        try:
            value, delta = await self._compute(args, kwargs, flight)
            # Inside the try: a condition or a codec that raises must release the lock too.
            store = self._storable(value)
            write = self._entry(key, value, delta, args, kwargs)
        except BaseException as exc:
            keeper.cancel()
            # Release at once (even when cancelled). A failure first tells the waiters to
            # compute themselves; a cancellation only sends them back to the lock.
            gave_up = not isinstance(exc, asyncio.CancelledError)
            engine.spawn(engine.release(lock_key, token, channel, fence, counters, gave_up))
            raise
        keeper.cancel()
        if flight is not None:
            flight.sealed = True
        try:
            if store and write is None:  # unencodable: the waiters cannot have it
                await engine.give_up(channel, counters)
            since = self._local_generation()
            stood = await engine.commit(write, store, lock_key, token, channel, fence, counters)
        except asyncio.CancelledError:
            # Cancelled before the commit was sent (queued for a connection) or while it
            # ran: release in the background (token-checked, so a commit that did run is
            # left alone) rather than leave the lock to its lease.
            engine.spawn(engine.release(lock_key, token, channel, fence, counters, False))
            raise
        if stood and store:
            self._remember(key, value, write, since)
        return value, stood

    # ------------------------------------------------------------------ refresh in background

    def _schedule_refresh(self, key: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        if key in self._refreshing or self._engine.backend is None:
            return
        self._refreshing.add(key)
        self._engine.spawn(self._refresh_in_background(key, args, kwargs))

    async def _refresh_in_background(
        self, key: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        engine = self._engine
        counters = self._counters
        try:
            if engine.backend is None:
                return
            space = engine.keyspace
            lock_key = space.lock(key)
            token = uuid.uuid4().hex
            locked = await engine.lock(lock_key, token, counters)
            if locked is not _FAILED and locked.owner == DONE:
                # Stored a moment ago and due already (a short TTL): go on.
                await engine.clear_done(lock_key, counters)
                locked = await engine.lock(lock_key, token, counters)
            if locked is _FAILED or locked.owner is not None:
                return  # someone else is refreshing it (or the backend failed)
            counters.refreshes += 1
            try:
                await self._compute_as_owner(
                    key, lock_key, token, space.channel(key), args, kwargs, locked.fence, None
                )
            except Exception as exc:
                engine.fail("refresh", counters, exc, backend=False)
        finally:
            self._refreshing.discard(key)

    # ------------------------------------------------------------------ the public helpers

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The full Redis key for these arguments (only the template's arguments are needed)."""
        return self._base + self._keys.render_partial(args, kwargs)

    def tags(self, *args: Any, **kwargs: Any) -> list[str]:
        """The rendered tags an entry for these arguments is indexed under."""
        values = self._keys.values(args, kwargs)
        return [t.render_values(values) for t in self._tag_keys]

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Delete the entry for these arguments in every version of the namespace, and fence
        the computations of it already running (their results are not stored nor handed to
        callers that arrive after this returns); True if an entry existed.

        Costs one round trip (a script), which also tells every process's local tier.

        Raises:
            CacheError: the backend failed or is skipped by the open breaker (the entry
                may still be there).
        """
        key = self.key(*args, **kwargs)
        deleted = await self._engine.invalidate_entries(self.namespace, [key])
        return bool(deleted)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Recompute now and store the result, whatever is cached or being computed: the
        computations of this key already running are fenced (their results are not stored).
        Concurrent refreshes of one key in this process share one computation. Fails open
        like a call."""
        engine = self._engine
        engine.require()
        key = self._render(args, kwargs)
        running = self._refreshes.get(key)
        if running is not None:
            return await asyncio.shield(running)
        fut = self._refreshes[key] = asyncio.get_running_loop().create_future()
        self._counters.refreshes += 1
        try:
            # Every backend operation asks the breaker itself; asking here as well would
            # claim a half-open probe that no operation then reports.
            value, _ = await self._compute_under_lock(key, args, kwargs, None, steal=True)
        except BaseException as exc:
            del self._refreshes[key]
            if isinstance(exc, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(exc)
                fut.add_done_callback(_consume)
            raise
        del self._refreshes[key]
        fut.set_result(value)
        await engine.drop_local([key], here=False)
        return value  # type: ignore[no-any-return]

    async def set(self, value: R, *args: Any, **kwargs: Any) -> None:
        """Store ``value`` as the result for these arguments: it is the value now, so the
        computations of this key already running are fenced first (as by :meth:`invalidate`:
        their older results are not stored over it), then it is written. Two round trips.

        Raises:
            CacheError: the backend failed (or the breaker is open).
            CacheSerializationError: the codec cannot encode ``value``.
        """
        values = self._keys.values(args, kwargs)
        key = self._base + self._keys.render_values(values)
        write = self._write_for(key, value, 0.0, values)
        await self._engine.invalidate_entries(self.namespace, [key])
        now_ms = int(time.time() * 1000)
        clock = self._engine.keyspace.clock
        await self._engine.strict("set", lambda b: b.write([write], now_ms, None, clock))
        await self._engine.drop_local([key])  # this process's copy too, not only the others

    async def get_many(self, calls: Iterable[Mapping[str, Any]], *, limit: int = 16) -> list[R]:
        """Results for many argument sets (keyword mappings), in order: one ``MGET`` for all,
        then the misses through the normal path (locked, single-flight), at most ``limit``
        computing at once. Fails open like a call; a disabled cache calls the function for
        each set, under the same cap."""
        engine = self._engine
        engine.require()
        calls = list(calls)
        if not self._cache.enabled:
            fn: Callable[..., Awaitable[R]] = self._fn
            return await gather_limited((functools.partial(fn, **c) for c in calls), limit=limit)
        keys = [self._base + self._keys.render((), c) for c in calls]
        raws = await engine.read_many(keys, self._counters)
        backend_answered = raws is not _FAILED
        if not backend_answered:
            raws = [None] * len(keys)
        out: list[Any] = [None] * len(calls)
        missing: list[int] = []
        for i, raw in enumerate(raws):
            value = _ABSENT if raw is None else self._decode(raw, keys[i], (), calls[i], None)
            if value is _ABSENT:
                missing.append(i)
            else:
                out[i] = value
        if missing:
            # Straight to the miss path: the MGET already looked, no second GET per key.
            found = await gather_limited(
                (
                    functools.partial(self._compute_once, keys[i], (), calls[i], backend_answered)
                    for i in missing
                ),
                limit=limit,
            )
            for i, value in zip(missing, found, strict=True):
                out[i] = value
        return out

    @property
    def first_parameter(self) -> str:
        """The name of the function's first parameter (``self`` of a method)."""
        return self._keys.first_name

    def __repr__(self) -> str:
        return f"<cached {self._keys.qualname} {self._base}*>"


class BoundCachedFunction(Generic[P, R]):
    """A cached method bound to its instance (what ``obj.method`` returns)."""

    __slots__ = ("__self__", "__wrapped__")

    def __init__(self, cached: CachedFunction[Any, R], obj: object) -> None:
        self.__wrapped__ = cached
        self.__self__ = obj

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.__wrapped__(self.__self__, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        """As :meth:`CachedFunction.key`, without the instance."""
        return self.__wrapped__.key(self.__self__, *args, **kwargs)

    def tags(self, *args: Any, **kwargs: Any) -> list[str]:
        """As :meth:`CachedFunction.tags`, without the instance."""
        return self.__wrapped__.tags(self.__self__, *args, **kwargs)

    async def get_many(self, calls: Iterable[Mapping[str, Any]], *, limit: int = 16) -> list[R]:
        """As :meth:`CachedFunction.get_many`; the mappings leave out the instance."""
        wrapped = self.__wrapped__
        first = wrapped.first_parameter
        return await wrapped.get_many(({first: self.__self__, **c} for c in calls), limit=limit)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return await self.__wrapped__.invalidate(self.__self__, *args, **kwargs)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.__wrapped__.refresh(self.__self__, *args, **kwargs)

    async def set(self, value: R, *args: Any, **kwargs: Any) -> None:
        await self.__wrapped__.set(value, self.__self__, *args, **kwargs)

    @property
    def uncached(self) -> Callable[P, Awaitable[R]]:
        return functools.partial(self.__wrapped__.uncached, self.__self__)
