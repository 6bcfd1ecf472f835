"""The Redis backend: plain commands on the hot path, Lua only where atomicity needs it.

One :class:`_Hub` per backend owns a single pub/sub connection shared by every waiter of the
process: it is taken from the client's pool on the first wait and kept until ``aclose`` (so
size the pool one above what commands need), and waiting callers hold no connection of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from ._backend import QueueInbox, Write

__all__ = ["RedisBackend"]

logger = logging.getLogger("sight_core.cache")

# KEYS[1] entry, KEYS[2] lock, KEYS[3..] tag indexes.
# ARGV[1] value ('' = nothing to publish), ARGV[2] ttl ms, ARGV[3] token, ARGV[4] channel,
# ARGV[5] entry expiry (unix ms, tag score), ARGV[6] now (unix ms), ARGV[7] '1' = store,
# ARGV[8] how long the DONE marker stays (ms).
_COMMIT = """
local v = ARGV[1]
local stored = v ~= '' and ARGV[7] == '1'
if stored then
  redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
  for i = 3, #KEYS do
    redis.call('ZADD', KEYS[i], ARGV[5], KEYS[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[6])
    if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
    end
  end
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  if stored then
    redis.call('SET', KEYS[2], '=', 'PX', ARGV[8])
  else
    redis.call('DEL', KEYS[2])
  end
end
redis.call('PUBLISH', ARGV[4], v)
return 1
"""

# KEYS[1] lock; ARGV[1] token; ARGV[2] ttl ms ('' = delete).
_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class _Channel:
    __slots__ = ("confirmed", "inboxes")

    def __init__(self) -> None:
        self.confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inboxes: set[QueueInbox] = set()


class _Hub:
    """One pub/sub connection for every waiter of one backend; a listener task dispatches.

    ``SUBSCRIBE``/``UNSUBSCRIBE`` are sent one at a time, and an ``UNSUBSCRIBE`` is skipped
    when the channel gained a new subscriber meanwhile, so a late unsubscribe never cancels a
    fresh subscription on the server.
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._channels: dict[bytes, _Channel] = {}
        self._broken = False
        self._order: asyncio.Lock | None = None
        self._order_loop: asyncio.AbstractEventLoop | None = None

    def _order_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._order is None or self._order_loop is not loop:
            self._order, self._order_loop = asyncio.Lock(), loop
        return self._order

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[QueueInbox]:
        name = channel.encode()
        inbox = QueueInbox()
        entry = self._channels.get(name)
        if entry is None:
            entry = self._channels[name] = _Channel()
            entry.inboxes.add(inbox)
            try:
                await self._subscribe(name, entry)
            except BaseException:
                self._drop(name, entry, inbox)
                raise
        else:
            entry.inboxes.add(inbox)
        try:
            await asyncio.shield(entry.confirmed)
            yield inbox
        finally:
            self._drop(name, entry, inbox)

    def _drop(self, name: bytes, entry: _Channel, inbox: QueueInbox) -> None:
        entry.inboxes.discard(inbox)
        if entry.inboxes or self._channels.get(name) is not entry:
            return
        del self._channels[name]
        if not entry.confirmed.done():
            entry.confirmed.cancel()
        if self._pubsub is not None and not self._broken:
            task = asyncio.get_running_loop().create_task(self._unsubscribe(name))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    async def _subscribe(self, name: bytes, entry: _Channel) -> None:
        async with self._order_lock():
            if self._channels.get(name) is not entry:
                return  # every subscriber left while we queued
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
            await self._pubsub.subscribe(name)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py's pub/sub connect can swallow a cancellation that lands while it
                # connects; re-raise it, or the caller (a listener being shut down, a waiter
                # past its deadline) would carry on as if never cancelled.
                raise asyncio.CancelledError
            if self._listener is None or self._listener.done():
                self._broken = False
                self._listener = asyncio.get_running_loop().create_task(
                    self._listen(), name="sight-cache-pubsub"
                )

    async def _unsubscribe(self, name: bytes) -> None:
        async with self._order_lock():
            if name in self._channels or self._pubsub is None or self._broken:
                return  # subscribed again meanwhile (or the connection is gone)
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(name)

    async def _listen(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                entry = self._channels.get(message["channel"])
                if entry is None:
                    continue
                if kind == "subscribe":
                    if not entry.confirmed.done():
                        entry.confirmed.set_result(None)
                elif kind == "message":
                    data = message["data"]
                    for inbox in entry.inboxes:
                        inbox.put_nowait(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The connection broke: wake everyone (they re-check the entry themselves) and
            # start afresh on the next subscription.
            logger.debug("cache pub/sub listener stopped: %s", type(exc).__name__)
            self._broken = True
            self._pubsub = None
            for entry in self._channels.values():
                if not entry.confirmed.done():
                    entry.confirmed.set_exception(ConnectionError("pub/sub connection lost"))
                for inbox in entry.inboxes:
                    inbox.put_nowait(b"")
            self._channels.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait([self._listener], timeout=1.0)  # bounded, see Cache.aclose
            self._listener = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        self._channels.clear()


_BACKGROUND: set[asyncio.Task[Any]] = set()


class RedisBackend:
    """Backend over a ``redis.asyncio.Redis`` client (bytes responses; not owned)."""

    def __init__(self, client: Redis) -> None:
        self.client: Any = client  # redis-py's methods are untyped
        self._hub = _Hub(client)

    def get(self, key: str) -> Any:
        return self.client.execute_command("GET", key)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return list(await self.client.execute_command("MGET", *keys))

    async def write(self, writes: Sequence[Write], now_ms: int) -> None:
        if not writes:
            return
        pipe = self.client.pipeline(transaction=False)
        trimmed: dict[str, int] = {}
        for w in writes:
            pipe.execute_command("SET", w.key, w.value, "PX", w.ttl_ms)
            for tag in w.tags:
                pipe.execute_command("ZADD", tag, now_ms + w.ttl_ms, w.key)
                trimmed[tag] = max(trimmed.get(tag, 0), w.ttl_ms)
        for tag, ttl_ms in trimmed.items():
            pipe.execute_command("ZREMRANGEBYSCORE", tag, "-inf", now_ms)
            pipe.execute_command("PEXPIRE", tag, ttl_ms, "NX")
            pipe.execute_command("PEXPIRE", tag, ttl_ms, "GT")
        await pipe.execute()

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(await self.client.execute_command("UNLINK", *keys))

    async def try_lock(self, lock_key: str, token: str, ttl_ms: int) -> bytes | None:
        held = await self.client.execute_command(
            "SET", lock_key, token, "NX", "PX", ttl_ms, "GET", get=True
        )
        return held if held is None else bytes(held)

    async def unlock(self, lock_key: str, token: bytes) -> bool:
        return bool(await self._eval(_IF_HELD, [lock_key], [token, ""]))

    async def _eval(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        # EVAL, not EVALSHA: no NOSCRIPT round trip after a restart or on a new server;
        # the server caches the compiled script by its hash anyway.
        return await self.client.execute_command("EVAL", script, len(keys), *keys, *args)

    async def extend_lock(self, lock_key: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._eval(_IF_HELD, [lock_key], [token, ttl_ms]))

    async def commit(
        self,
        write: Write | None,
        lock_key: str,
        token: str,
        channel: str,
        now_ms: int,
        store: bool = True,
    ) -> None:
        if write is None:
            keys = [lock_key, lock_key]
            args: list[Any] = [b"", 0, token, channel, 0, now_ms, "0"]
        else:
            keys = [write.key, lock_key, *write.tags]
            args = [
                write.value,
                write.ttl_ms,
                token,
                channel,
                now_ms + write.ttl_ms,
                now_ms,
                "1" if store else "0",
            ]
        args.append(write.done_ms if write is not None else 0)
        await self._eval(_COMMIT, keys, args)

    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[QueueInbox]:
        return self._hub.subscribe(channel)

    async def publish(self, channel: str, message: bytes) -> None:
        await self.client.execute_command("PUBLISH", channel, message)

    async def tag_members(self, tag_keys: Sequence[str], now_ms: int) -> list[str]:
        if not tag_keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for tag in tag_keys:
            pipe.execute_command("ZRANGE", tag, now_ms, "+inf", "BYSCORE")
        found: set[str] = set()
        for members in await pipe.execute():
            found.update(m.decode() if isinstance(m, bytes) else m for m in members)
        return sorted(found)

    async def scan_delete(self, match: str, predicate: Callable[[str], bool], batch: int) -> int:
        deleted = 0
        pending: list[str] = []
        async for raw in self.client.scan_iter(match=match, count=batch):
            key = raw.decode() if isinstance(raw, bytes) else raw
            if predicate(key):
                pending.append(key)
                if len(pending) >= batch:
                    deleted += await self.delete(pending)
                    pending = []
        if pending:
            deleted += await self.delete(pending)
        return deleted

    async def aclose(self) -> None:
        await self._hub.aclose()
