"""The read-through engine: every backend operation of the cache, behind one small interface.

The decorator (``CachedFunction``: calls, ``refresh``, ``get_many``), ``cached_many`` and the
``Cache``'s invalidations drive one :class:`Engine` per ``Cache``. It owns the bound backend,
the breaker, the operation deadline, the fence this process saw last, the in-process tier's
listener and the background tasks, and offers:

- reads: :meth:`Engine.read` (one ``GET``), :meth:`Engine.read_many` (one ``MGET``);
- the stampede lock: :meth:`Engine.lock`, :meth:`Engine.keep_lease`, :meth:`Engine.subscribe`,
  :meth:`Engine.wait_for_owner`, :meth:`Engine.clear_done`;
- fenced commits: :meth:`Engine.commit` (under the lock), :meth:`Engine.store` (without it),
  :meth:`Engine.release` (no value: failed or cancelled);
- invalidation: :meth:`Engine.invalidate_entries`, :meth:`Engine.strict` for the chunked steps
  of tag and namespace invalidation, :meth:`Engine.drop_local`.

Read-path operations fail open: they return :data:`FAILED` (an error, a timeout, the breaker
open) and the caller computes. Maintenance operations (:meth:`Engine.strict`) raise
:class:`~sight_core.errors.CacheError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sight_core.errors import CacheError, NotBoundError

from ._backend import DONE, FAILED, GAVE_UP, Backend, Fence, Write
from ._breaker import Breaker
from ._deadline import Expiry, Operations, OperationTimeout
from ._keyspace import Keyspace
from ._local import LocalTier
from ._log import RateLimitedLog
from ._stats import Counters

__all__ = ["Engine", "Locked"]

T = TypeVar("T")

_FAILED = FAILED
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
_MAINTENANCE_DEADLINES = 4  # a maintenance step (one invalidation chunk) gets 4 deadlines


class _Skipped(Exception):
    """The breaker opened while the operation waited for a slot: it was not sent."""


class Locked(NamedTuple):
    """What :meth:`Engine.lock` saw: ``owner`` None (the caller holds the lock now), another
    caller's token, or :data:`DONE` (its owner stored the value a moment ago); the fence
    clock; the lock's remaining lease in milliseconds."""

    owner: bytes | None
    fence: Fence
    lease_ms: int


class Engine:
    """The backend side of one ``Cache`` (see the module docstring). ``backend`` is None
    until ``Cache.bind``."""

    def __init__(
        self,
        prefix: str,
        *,
        op_timeout: float,
        lock_ttl: float,
        breaker: Breaker,
        log: RateLimitedLog,
        local: LocalTier | None,
    ) -> None:
        self.prefix = prefix
        self.op_timeout = op_timeout
        self.lock_ttl = lock_ttl
        self.breaker = breaker
        self.ops = Operations(op_timeout)
        self._log = log
        self.local = local
        self.keyspace = Keyspace(prefix)
        self.backend: Backend | None = None
        self._by_namespace: dict[str, Counters] = {}
        self.local_counters = Counters("(local tier)")  # not a namespace: kept out of stats
        self.tasks: set[asyncio.Task[Any]] = set()
        self._fence: Fence | None = None  # the newest fence seen (for unlocked writes)
        self.local_listener: asyncio.Task[None] | None = None

    def unbound_message(self) -> str:
        return (
            f"Cache(prefix={self.prefix!r}) is not bound: call cache.bind(redis_client) at "
            "startup (or cache.bind(MemoryBackend()) in tests)"
        )

    def require(self) -> Backend:
        """The bound backend.

        Raises:
            NotBoundError: ``Cache.bind`` was not called.
        """
        backend = self.backend
        if backend is None:
            raise NotBoundError(self.unbound_message())
        return backend

    def namespaces(self) -> dict[str, Counters]:
        """The live counters of every namespace (not copied)."""
        return self._by_namespace

    # ------------------------------------------------------------------ reads

    async def read(self, key: str, counters: Counters) -> Any:
        """The stored bytes of ``key`` (None: absent), one ``GET``; :data:`FAILED` when the
        backend failed or was skipped."""
        backend = self.require()
        return await self.guarded("get", counters, lambda: backend.get(key))

    async def read_many(self, keys: list[str], counters: Counters) -> Any:
        """The stored bytes of every key in order, one ``MGET``; :data:`FAILED` likewise."""
        backend = self.require()
        return await self.guarded("mget", counters, lambda: backend.mget(keys))

    # ------------------------------------------------------------------ the stampede lock

    async def lock(
        self, lock_key: str, token: str, counters: Counters, mark: str | None = None
    ) -> Locked | Any:
        """Take ``lock_key`` for ``token`` (leased ``lock_ttl``) or name its owner, and read
        the fence clock, in one script; ``mark`` (a key fence) takes it whatever it holds
        and fences the computations already running. :data:`FAILED` when the backend
        failed (a lock it may have taken is released in the background)."""
        backend = self.require()
        space = self.keyspace
        ttl_ms = max(int(self.lock_ttl * 1000), 1)
        locked = await self.guarded(
            "lock",
            counters,
            lambda: backend.try_lock(lock_key, token, ttl_ms, space.clock, mark),
            self.release_later(lock_key, token),
        )
        if locked is _FAILED:
            return _FAILED
        owner, fence, lease_ms = locked
        self.observe_fence(fence)
        return Locked(owner, fence, lease_ms)

    async def clear_done(self, lock_key: str, counters: Counters) -> None:
        """Remove the :data:`DONE` marker a stored value left on ``lock_key``."""
        backend = self.require()
        await self.guarded("lock", counters, lambda: backend.unlock(lock_key, DONE))

    async def keep_lease(self, lock_key: str, token: str, counters: Counters) -> None:
        """Extend the lease every third of ``lock_ttl`` until cancelled or the lease is lost.

        A failed extension (an error, the breaker open) is tried again at the next third, so
        one transient error does not let the lease run out mid-computation."""
        backend = self.require()
        ttl_ms = max(int(self.lock_ttl * 1000), 1)
        while True:
            await asyncio.sleep(self.lock_ttl / 3)
            held = await self.guarded(
                "lock", counters, lambda: backend.extend_lock(lock_key, token, ttl_ms)
            )
            if held is False:
                return  # the lease is lost (expired, taken over): nothing left to extend

    def subscribe(self, channel: str) -> Any:
        """An async context manager listening on ``channel`` (see ``Backend.subscribe``)."""
        return self.require().subscribe(channel)

    async def wait_for_owner(self, inbox: Any, wait: float) -> Any:
        """The lock owner's next message; None when ``wait`` seconds passed first;
        :data:`FAILED` when the breaker is open or opens meanwhile (the backend is known
        unhealthy)."""
        breaker = self.breaker
        if not breaker.healthy:
            return _FAILED
        opened = breaker.opening()
        receive = asyncio.ensure_future(inbox.next())
        try:
            done, _ = await asyncio.wait(
                {receive, opened}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            breaker.forget(opened)
            if not receive.done():
                receive.cancel()
        if receive in done:
            return receive.result()
        return _FAILED if opened in done else None

    # ------------------------------------------------------------------ fenced commits

    async def commit(
        self,
        write: Write | None,
        store: bool,
        lock_key: str,
        token: str,
        channel: str,
        fence: Fence,
        counters: Counters,
    ) -> bool | None:
        """The lock owner's fenced commit: store ``write`` (when ``store``), release the lock
        and publish the value to the waiters, unless an invalidation came after ``fence``.
        False when it was refused, True when it stood, None when its outcome is unknown."""
        backend = self.require()
        now_ms = int(time.time() * 1000)
        clock = self.keyspace.clock
        result = await self.guarded(
            "set",
            counters,
            lambda: backend.commit(write, lock_key, token, channel, now_ms, store, fence, clock),
        )
        if result is _FAILED:
            return None
        stood, now_fence = result
        self.observe_fence(now_fence)
        return bool(stood)

    async def store(
        self, writes: list[Write], fence: Fence, counters: Counters, store: bool = True
    ) -> Any:
        """A fenced write without the lock: per write, whether it stood; :data:`FAILED`
        when the backend failed. ``store`` False only checks the fence."""
        backend = self.require()
        now_ms = int(time.time() * 1000)
        clock = self.keyspace.clock
        result = await self.guarded(
            "set", counters, lambda: backend.write(writes, now_ms, fence, clock, store)
        )
        if result is _FAILED:
            return _FAILED
        stored, now_fence = result
        self.observe_fence(now_fence)
        return stored

    async def give_up(self, channel: str, counters: Counters) -> None:
        """Tell the waiters on ``channel`` to compute themselves (:data:`GAVE_UP`)."""
        backend = self.require()
        await self.guarded("publish", counters, lambda: backend.publish(channel, GAVE_UP))

    async def release(
        self,
        lock_key: str,
        token: str,
        channel: str,
        fence: Fence,
        counters: Counters,
        gave_up: bool,
    ) -> None:
        """Release the lock without a value; with ``gave_up``, first publish :data:`GAVE_UP`
        so the waiters compute at once rather than one process after another."""
        if gave_up:
            await self.give_up(channel, counters)
        await self.commit(None, False, lock_key, token, channel, fence, counters)

    # ------------------------------------------------------------------ shared state

    def counters(self, namespace: str) -> Counters:
        counters = self._by_namespace.get(namespace)
        if counters is None:
            counters = self._by_namespace[namespace] = Counters(namespace)
        return counters

    async def invalidate_entries(self, namespace: str, keys: list[str]) -> int:
        """Fence and delete these entry keys of ``namespace`` in every version, in one
        script; tells every local tier."""
        space = self.keyspace
        parts = [k.split(":", 3)[3] for k in keys]
        marks = [space.key_fence(namespace, p) for p in parts]
        tails = [f":{namespace}:{p}" for p in parts]
        head = f"{self.prefix}:v"
        args = (space.clock, space.versions(namespace), marks, keys, head, tails)
        deleted = await self.strict(
            "invalidate",
            lambda b: b.invalidate_entry(*args, space.local_channel),
        )
        if self.local is not None:
            self.local.discard_entries(namespace, parts)
        return int(deleted)

    # ------------------------------------------------------------------ guarded operations

    def fail(
        self,
        operation: str,
        counters: Counters,
        exc: BaseException,
        *,
        backend: bool = True,
        epoch: int | None = None,
    ) -> None:
        """Count and log a failed operation; report it to the breaker when it is evidence
        about the backend (``backend``), unless it is a timeout of an operation stuck behind
        others while the backend kept answering."""
        counters.errors += 1
        if backend and not (isinstance(exc, OperationTimeout) and not exc.stalled):
            self.breaker.failure(isinstance(exc, _UNREACHABLE), epoch)
        self._log.error(counters.namespace, operation, exc)

    async def bounded(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        epoch: int | None = None,
        timeout: float | None = None,
    ) -> T:
        """``call()`` once admitted (a slot of the client's pool is free) and within its
        deadline (``timeout``, default ``op_timeout``): the one way every backend operation
        is bounded. Queueing for a slot is not part of the deadline.

        Raises:
            OperationTimeout: the deadline passed.
            _Skipped: ``epoch`` was given and the breaker moved on while it queued.
            Exception: what ``call`` raised.
        """
        ops = self.ops
        if ops.free > 0:
            ops.free -= 1
        else:
            await ops.wait()
            if epoch is not None and epoch != self.breaker.epoch:
                ops.stop(None)
                raise _Skipped
        task = ops.start(timeout)
        try:
            result = await call()
        except asyncio.CancelledError:
            ops.stop(task)
            why = ops.expired(task)
            if why is Expiry.CANCELLED:
                raise
            raise OperationTimeout(why is Expiry.STALLED) from None
        except BaseException:
            ops.stop(task)
            raise
        ops.stop(task, True)
        return result

    async def guarded(
        self,
        operation: str,
        counters: Counters,
        call: Callable[[], Awaitable[T]],
        on_lost: Callable[[], None] | None = None,
    ) -> T:
        """``call()`` through the breaker and :meth:`bounded`; :data:`FAILED` on any error.

        ``on_lost`` runs when the call was sent but its outcome is unknown (it failed, timed
        out or the caller was cancelled), e.g. to release a lock it may have taken.
        """
        breaker = self.breaker
        if not breaker.allow():
            return _FAILED  # type: ignore[no-any-return]
        return await self.attempt(operation, counters, call, breaker.epoch, on_lost)

    async def attempt(
        self,
        operation: str,
        counters: Counters,
        call: Callable[[], Awaitable[T]],
        epoch: int,
        on_lost: Callable[[], None] | None = None,
    ) -> T:
        """:meth:`guarded` once the breaker allowed it (in ``epoch``)."""
        try:
            result = await self.bounded(call, epoch=epoch)
        except _Skipped:
            return _FAILED  # type: ignore[no-any-return]
        except Exception as exc:
            self.fail(operation, counters, exc, epoch=epoch)
            if on_lost is not None:
                on_lost()
            return _FAILED  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if on_lost is not None:
                on_lost()
            raise
        self.breaker.success(epoch)
        return result

    def release_later(self, lock_key: str, token: str) -> Callable[[], None]:
        """An ``on_lost`` for ``try_lock``: a background, token-checked release bounded by
        the deadline (past the breaker: the lock must not outlive a lost reply)."""

        def release() -> None:
            backend = self.backend
            if backend is not None:
                self.spawn(self._release(backend, lock_key, token.encode()))

        return release

    async def _release(self, backend: Backend, lock_key: str, token: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.bounded(lambda: backend.unlock(lock_key, token))

    async def strict(self, operation: str, call: Callable[[Backend], Awaitable[T]]) -> T:
        """A maintenance operation (an invalidation step, ``set``): bounded by
        :meth:`bounded` with ``_MAINTENANCE_DEADLINES`` deadlines; skipped while the breaker
        is open (Redis is known down). It never reports to the breaker, which guards reads:
        a slow invalidation chunk is not a reason to stop reading, and only the probe closes
        it. Errors raise CacheError.
        """
        backend = self.require()
        if self.breaker.skipping:
            raise CacheError(f"cache {operation} skipped: the backend breaker is open")
        try:
            return await self.bounded(
                lambda: call(backend), timeout=self.op_timeout * _MAINTENANCE_DEADLINES
            )
        except Exception as exc:
            raise CacheError(f"cache {operation} failed: {type(exc).__name__}") from exc

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def observe_fence(self, fence: Fence) -> None:
        """Remember the newest fence a reply carried (the start fence of unlocked writes)."""
        if self._fence is None or fence.clock >= self._fence.clock:
            self._fence = fence

    async def start_fence(self, counters: Counters) -> Any:
        """The fence for a computation starting now without the lock: the newest one seen
        (never newer than the truth, so at worst a write is refused needlessly), read once
        per process; ``FAILED`` when the backend cannot tell."""
        if self._fence is not None:
            return self._fence
        backend = self.backend
        assert backend is not None
        clock = self.keyspace.clock
        fence = await self.guarded("fence", counters, lambda: backend.read_fence(clock))
        if fence is not _FAILED:
            self.observe_fence(fence)
        return fence

    # ------------------------------------------------------------------ the local tier

    async def drop_local(self, keys: list[str], *, here: bool = True) -> None:
        """Drop ``keys`` from every process's local tier (published even when this process
        has none: others may)."""
        if not keys:
            return
        local = self.local
        if here and local is not None:
            local.discard(keys)
        await self.publish_local("\n".join(keys).encode())

    async def publish_local(self, message: bytes) -> None:
        backend = self.backend
        if backend is None:
            return
        self.ensure_local_listener()
        await self.guarded(
            "publish",
            self.local_counters,
            lambda: backend.publish(self.keyspace.local_channel, message),
        )

    def ensure_local_listener(self) -> None:
        if self.local is None or self.backend is None:
            return
        listener = self.local_listener
        if (
            listener is None
            or listener.done()
            or listener.get_loop() is not asyncio.get_running_loop()
        ):
            self.local_listener = asyncio.ensure_future(self.listen_local())

    async def listen_local(self) -> None:
        """Drop local entries other processes invalidate. While not subscribed (before the
        first subscription, after the connection dropped) the tier is empty and stores
        nothing, so it is never staler than the reconnect time; reconnects back off from
        0.1 s to the breaker cooldown."""
        local = self.local
        assert local is not None
        pause = 0.1
        while self.backend is not None:
            backend = self.backend
            try:
                async with backend.subscribe(self.keyspace.local_channel) as inbox:
                    local.clear()  # whatever was stored before we listened may be stale
                    local.online = True
                    pause = 0.1
                    while True:
                        message = await inbox.next()
                        if not message:
                            break
                        if message.startswith(b"ns:"):
                            local.discard_matching(message[3:].decode())
                        else:
                            local.discard(message.decode().split("\n"))
            except asyncio.CancelledError:
                raise
            except Exception:
                pass
            local.online = False
            local.clear()
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.breaker.cooldown)
