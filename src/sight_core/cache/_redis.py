"""The Redis backend: plain commands on the hot path, Lua only where atomicity needs it.

One :class:`_Hub` per backend owns a single pub/sub connection shared by every waiter of the
process: it is taken from the client's pool on the first wait and kept until ``aclose`` (so
size the pool one above what commands need), and waiting callers hold no connection of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis

from ._backend import Fence, QueueInbox, Write
from ._keyspace import FENCE_HORIZON_MS as _HORIZON_MS

__all__ = ["RedisBackend"]

logger = logging.getLogger("sight_core.cache")

# Advances the fence clock at KEYS[1] and returns it (as text, exact: Lua's own number
# formatting would round it). The clock is at least the server's time in microseconds, so it
# keeps growing when Redis loses it (a restart without persistence, FLUSHALL, eviction): a
# computation that read the clock before the loss is still fenced by an invalidation after it.
_ADVANCE = """
local function advance()
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local c = string.format('%d', math.max(tonumber(redis.call('GET', KEYS[1]) or '0') + 1, us))
  redis.call('SET', KEYS[1], c)
  return c
end
"""

_PRELUDE = (
    _ADVANCE
    + """
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- One write: KEYS from k: entry, versions set ('' = none), nf fence marks, nt pairs
-- (tag index, tag fence mark); ARGV from a: value, ttl ms, expiry score (index), version,
-- nf, nt. Checks the marks against clock (nil = unfenced), stores when asked and allowed.
-- ``now`` is the server's time (never a client's: a pod whose clock runs ahead would trim
-- other pods' live entries out of the tag indexes). ARGV[a + 2] is not read.
-- Returns whether the write stood (not fenced) and where the next write starts.
local function store(k, a, clock, young, now, wanted)
  local nf, nt = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local ok = young
  if ok and clock then
    for i = k + 2, k + 1 + nf + 2 * nt do
      if i <= k + 1 + nf or (i - k - nf) % 2 == 1 then
        local g = redis.call('GET', KEYS[i])
        if g and tonumber(g) > clock then ok = false; break end
      end
    end
  end
  if ok and wanted then
    local entry, ttl = KEYS[k], tonumber(ARGV[a + 1])
    redis.call('SET', entry, ARGV[a], 'PX', ttl)
    if KEYS[k + 1] ~= '' then redis.call('SADD', KEYS[k + 1], ARGV[a + 3]) end
    for j = 0, nt - 1 do
      local index = KEYS[k + 2 + nf + 2 * j]
      redis.call('ZADD', index, now + ttl, entry)
      redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
      if redis.call('PTTL', index) < ttl then redis.call('PEXPIRE', index, ttl) end
    end
  end
  return ok, k + 2 + nf + 2 * nt, a + 6
end
local function fence_now()
  return {tonumber(redis.call('GET', KEYS[1]) or '0'), server_ms()}
end
"""
)

# KEYS[1] clock, then writes. ARGV[1] now ms (unread: the server's time is used),
# ARGV[2] fence clock ('' = unfenced),
# ARGV[3] fence server ms, ARGV[4] horizon ms, ARGV[5] number of writes, ARGV[6] '1' = store
# ('0': only check the fence), then writes.
_WRITE = (
    _PRELUDE
    + """
local clock, young = nil, true
if ARGV[2] ~= '' then
  clock = tonumber(ARGV[2])
  young = server_ms() - tonumber(ARGV[3]) <= tonumber(ARGV[4])
end
local k, a, out = 2, 7, {}
for w = 1, tonumber(ARGV[5]) do
  local ok
  ok, k, a = store(k, a, clock, young, server_ms(), ARGV[6] == '1')
  out[w] = ok and 1 or 0
end
local f = fence_now()
out[#out + 1] = f[1]
out[#out + 1] = f[2]
return out
"""
)

# KEYS[1] clock, KEYS[2] lock, then the write (if any). ARGV[1] token, ARGV[2] channel,
# ARGV[3] DONE marker ms, ARGV[4] '1' = store, ARGV[5] now ms (unread), ARGV[6] fence clock,
# ARGV[7] fence server ms, ARGV[8] horizon ms, ARGV[9] '1' = has a write, ARGV[10..] write.
_COMMIT = (
    _PRELUDE
    + """
local stood, stored = false, false
-- A lock that no longer holds the token was lost: its lease ran out, or Redis lost its data
-- (a restart without persistence, FLUSHALL) and with it the fence marks of invalidations
-- that may have come after the computation started. Either way the write is refused.
local held = redis.call('GET', KEYS[2]) == ARGV[1]
if ARGV[9] == '1' then
  local young = held and server_ms() - tonumber(ARGV[7]) <= tonumber(ARGV[8])
  stood = store(3, 10, tonumber(ARGV[6]), young, server_ms(), ARGV[4] == '1')
  stored = stood and ARGV[4] == '1'
end
if held then
  if stored then
    redis.call('SET', KEYS[2], '=', 'PX', ARGV[3])
  else
    redis.call('DEL', KEYS[2])
  end
end
redis.call('PUBLISH', ARGV[2], stood and ARGV[10] or '')
local f = fence_now()
return {stood and 1 or 0, f[1], f[2]}
"""
)

# KEYS[1] clock, KEYS[2] lock, KEYS[3] key fence mark (steal only). ARGV[1] token,
# ARGV[2] ttl ms, ARGV[3] horizon ms.
_LOCK = (
    _PRELUDE
    + """
local held = ''
if #KEYS == 3 then
  redis.call('SET', KEYS[3], advance(), 'PX', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
else
  held = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2], 'GET') or ''
end
local f = fence_now()
return {held, f[1], f[2], held ~= '' and redis.call('PTTL', KEYS[2]) or 0}
"""
)

_READ_FENCE = _PRELUDE + "return fence_now()"

# KEYS[1] clock, KEYS[2..] marks. ARGV[1] horizon ms.
_FENCE_MARKS = (
    _ADVANCE
    + """
local c = advance()
for i = 2, #KEYS do redis.call('SET', KEYS[i], c, 'PX', ARGV[1]) end
return c
"""
)

# KEYS[1] clock, KEYS[2] versions set, KEYS[3 .. 2+n] key fence marks, then entry keys.
# ARGV[1] horizon ms, ARGV[2] entry head ('{prefix}:v'), ARGV[3] channel, ARGV[4] n,
# ARGV[5 .. 4+n] entry tails (':{namespace}:{part}', one per mark).
# The entries of other versions are named here, not in KEYS: they are only known inside.
_INVALIDATE_ENTRY = (
    _ADVANCE
    + """
local c = advance()
local n = tonumber(ARGV[4])
for i = 3, 2 + n do redis.call('SET', KEYS[i], c, 'PX', ARGV[1]) end
local seen, names = {}, {}
for i = 3 + n, #KEYS do
  if not seen[KEYS[i]] then seen[KEYS[i]] = true; names[#names + 1] = KEYS[i] end
end
for _, v in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  for i = 5, 4 + n do
    local name = ARGV[2] .. v .. ARGV[i]
    if not seen[name] then seen[name] = true; names[#names + 1] = name end
  end
end
local deleted = 0
for i = 1, #names, 500 do
  deleted = deleted + redis.call('UNLINK', unpack(names, i, math.min(i + 499, #names)))
end
if #names > 0 then redis.call('PUBLISH', ARGV[3], table.concat(names, '\\n')) end
return deleted
"""
)

# KEYS[1] clock, then triples (tag fence mark, index, dead index). ARGV[1] horizon ms.
_RETIRE_TAGS = (
    _ADVANCE
    + """
local c = advance()
for i = 2, #KEYS, 3 do
  local index, dead = KEYS[i + 1], KEYS[i + 2]
  redis.call('SET', KEYS[i], c, 'PX', ARGV[1])
  if redis.call('EXISTS', index) == 1 then
    if redis.call('EXISTS', dead) == 1 then
      local ttl = math.max(redis.call('PTTL', index), redis.call('PTTL', dead))
      redis.call('ZUNIONSTORE', dead, 2, dead, index, 'AGGREGATE', 'MAX')
      redis.call('DEL', index)
      if ttl > 0 then redis.call('PEXPIRE', dead, ttl) end
    else
      redis.call('RENAME', index, dead)
    end
  end
end
return c
"""
)

# KEYS[1] dead index. ARGV[1] batch, ARGV[2] channel.
_DRAIN = """
local m = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #m == 0 then return {0, 0} end
local n = redis.call('UNLINK', unpack(m))
redis.call('ZREM', KEYS[1], unpack(m))
redis.call('PUBLISH', ARGV[2], table.concat(m, '\\n'))
return {#m, n}
"""

# KEYS[1] lock; ARGV[1] token; ARGV[2] ttl ms ('' = delete).
_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _write_parts(write: Write, keys: list[Any], args: list[Any], now_ms: int) -> None:
    """Append one write's KEYS and ARGV in the layout ``store`` in the Lua prelude reads."""
    keys.append(write.key)
    keys.append(write.versions or "")
    keys.extend(write.fences)
    for index, mark in zip(write.tags, write.tag_fences, strict=True):
        keys.append(index)
        keys.append(mark)
    args.extend(
        (
            write.value,
            write.ttl_ms,
            now_ms + write.ttl_ms,
            write.version,
            len(write.fences),
            len(write.tags),
        )
    )


def _fence(clock: Any, server_ms: Any) -> Fence:
    return Fence(int(clock), int(server_ms))


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

    ``sharded``: ``SSUBSCRIBE``/``SUNSUBSCRIBE`` instead (one Redis Cluster node's shard
    channels); a ``sunsubscribe`` the server sends on its own (the slot moved) wakes that
    channel's waiters, who subscribe again where the slot is now.
    """

    def __init__(self, client: Redis, *, sharded: bool = False) -> None:
        self._client = client
        self._sharded = sharded
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
            if self._sharded:
                await self._pubsub.ssubscribe(name)
            else:
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
                if self._sharded:
                    await self._pubsub.sunsubscribe(name)
                else:
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
                if kind in ("subscribe", "ssubscribe"):
                    if not entry.confirmed.done():
                        entry.confirmed.set_result(None)
                elif kind == "sunsubscribe" and entry.confirmed.done():
                    # the server dropped the subscription (its slot moved): wake them
                    del self._channels[message["channel"]]
                    for inbox in entry.inboxes:
                        inbox.put_nowait(b"")
                elif kind in ("message", "smessage"):
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

    async def read_fence(self, clock: str) -> Fence:
        return _fence(*await self._eval(_READ_FENCE, [clock], []))

    async def write(
        self,
        writes: Sequence[Write],
        now_ms: int,
        fence: Fence | None = None,
        clock: str = "",
        store: bool = True,
    ) -> tuple[list[bool], Fence]:
        keys: list[Any] = [clock]
        args: list[Any] = [now_ms, "", 0, _HORIZON_MS, len(writes), "1" if store else "0"]
        if fence is not None:
            args[1:3] = [fence.clock, fence.server_ms]
        for w in writes:
            _write_parts(w, keys, args, now_ms)
        reply = await self._eval(_WRITE, keys, args)
        return [bool(x) for x in reply[:-2]], _fence(*reply[-2:])

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(await self.client.execute_command("UNLINK", *keys))

    async def try_lock(
        self, lock_key: str, token: str, ttl_ms: int, clock: str, steal: str | None = None
    ) -> tuple[bytes | None, Fence, int]:
        keys = [clock, lock_key] if steal is None else [clock, lock_key, steal]
        held, c, ms, pttl = await self._eval(_LOCK, keys, [token, ttl_ms, _HORIZON_MS])
        return (bytes(held) if held else None), _fence(c, ms), int(pttl)

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
        store: bool,
        fence: Fence,
        clock: str,
    ) -> tuple[bool, Fence]:
        keys: list[Any] = [clock, lock_key]
        args: list[Any] = [
            token,
            channel,
            write.done_ms if write is not None else 1,
            "1" if store else "0",
            now_ms,
            fence.clock,
            fence.server_ms,
            _HORIZON_MS,
            "0" if write is None else "1",
        ]
        if write is not None:
            _write_parts(write, keys, args, now_ms)
        stood, c, ms = await self._eval(_COMMIT, keys, args)
        return bool(stood), _fence(c, ms)

    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[QueueInbox]:
        return self._hub.subscribe(channel)

    async def publish(self, channel: str, message: bytes) -> None:
        await self.client.execute_command("PUBLISH", channel, message)

    async def fence_marks(self, clock: str, marks: Sequence[str]) -> int:
        return int(await self._eval(_FENCE_MARKS, [clock, *marks], [_HORIZON_MS]))

    async def invalidate_entry(
        self,
        clock: str,
        versions: str,
        marks: Sequence[str],
        keys: Sequence[str],
        head: str,
        tails: Sequence[str],
        channel: str,
    ) -> int:
        return int(
            await self._eval(
                _INVALIDATE_ENTRY,
                [clock, versions, *marks, *keys],
                [_HORIZON_MS, head, channel, len(marks), *tails],
            )
        )

    async def retire_tags(self, clock: str, tags: Sequence[tuple[str, str, str]]) -> None:
        await self._eval(_RETIRE_TAGS, [clock, *(k for t in tags for k in t)], [_HORIZON_MS])

    async def drain(self, dead: str, batch: int, channel: str) -> tuple[int, int]:
        taken, deleted = await self._eval(_DRAIN, [dead], [batch, channel])
        return int(taken), int(deleted)

    async def scan_page(self, match: str, cursor: int, count: int) -> tuple[int, list[str]]:
        cursor, raw = await self.client.execute_command(
            "SCAN", cursor, "MATCH", match, "COUNT", count
        )
        return int(cursor), [k.decode() if isinstance(k, bytes) else k for k in raw]

    async def aclose(self) -> None:
        await self._hub.aclose()
