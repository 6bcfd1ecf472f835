"""The Redis Cluster backend: the :class:`RedisBackend` scripts, each run in one slot.

Names are mapped by :class:`~._keyspace.ClusterLayout`: an entry and everything that must
change with it atomically (its lock, its wake-up channel, its key fence mark, its bucket's
copy of the namespace and tag fence marks, tag index shards and versions set) share a hash
tag, so every script touches keys of one slot. The cost on a cluster:

- reads: ``get_many`` sends one ``MGET`` per bucket, pipelined per primary and sent to every
  primary at once (redis-py's ``mget_nonatomic``);
- fences: the fence clock lives in its own slot; a commit reads it concurrently with its
  script (two commands, one round trip of latency); an invalidation advances it first and
  then fences and deletes bucket by bucket (two round trips);
- invalidation of a namespace or tag touches every bucket (one script per bucket, pipelined
  per primary), and ``SCAN`` runs on every primary;
- wake-ups and local-tier invalidations are sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``),
  one subscriber connection per primary that holds a channel of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ._backend import Fence, QueueInbox, Write
from ._keyspace import FENCE_HORIZON_MS as _HORIZON_MS
from ._keyspace import ClusterLayout, Keyspace
from ._redis import (
    _ADVANCE,
    _FENCE_MARKS,
    _INVALIDATE_ENTRY,
    _LOCK,
    _RETIRE_TAGS,
    RedisBackend,
    _Hub,
)

__all__ = ["ClusterBackend"]

# On a cluster the clock is advanced in its own slot first; the scripts that fence then take
# its value as their last argument instead of advancing a clock of their own slot.
_GIVEN_CLOCK = """
local function advance()
  return ARGV[#ARGV]
end
"""

# Connection options a node's own pub/sub client inherits from the cluster client.
_NODE_OPTIONS = (
    "username",
    "password",
    "credential_provider",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_cert_reqs",
    "ssl_check_hostname",
    "ssl_certfile",
    "ssl_keyfile",
)


def _sharded(script: str) -> str:
    """``script`` with sharded publishing and, if it advances the clock, the given clock."""
    return script.replace("'PUBLISH'", "'SPUBLISH'").replace(_ADVANCE, _GIVEN_CLOCK, 1)


class ClusterBackend(RedisBackend):
    """Backend over a ``redis.asyncio.RedisCluster`` (bytes responses; not owned)."""

    def __init__(self, client: RedisCluster, keyspace: Keyspace) -> None:
        super().__init__(client)  # type: ignore[arg-type]
        self._layout = ClusterLayout(keyspace.prefix)
        self._local_channel = keyspace.local_channel
        self._scripts: dict[str, str] = {}
        self._hubs: dict[str, tuple[Redis, _Hub]] = {}
        self._warming: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # bound outside a running loop: no warm-up
            self._warming = asyncio.get_running_loop().create_task(self._warm_up())

    # ------------------------------------------------------------------ plumbing

    async def _eval(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        text = self._scripts.get(script)
        if text is None:
            text = self._scripts[script] = _sharded(script)
        return await self.client.execute_command("EVAL", text, len(keys), *keys, *args)

    async def _advance(self, clock: str) -> str:
        """Advance the fence clock (its own slot) and return its new value."""
        phys = self._layout.clock(clock)
        c = await self.client.execute_command("EVAL", _FENCE_MARKS, 1, phys, _HORIZON_MS)
        return c.decode() if isinstance(c, bytes) else str(c)

    def _in(self, write: Write, bucket: int) -> Write:
        p = self._layout.physical
        return dataclasses.replace(
            write,
            key=p(write.key, bucket),
            tags=[p(t, bucket) for t in write.tags],
            tag_fences=[p(t, bucket) for t in write.tag_fences],
            fences=[p(f, bucket) for f in write.fences],
            versions=p(write.versions, bucket) if write.versions else write.versions,
        )

    def _buckets(self) -> range:
        return range(self._layout.buckets)

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Any:
        return self.client.execute_command("GET", self._layout.physical(key))

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return list(await self.client.mget_nonatomic(self._layout.entries(keys)))

    async def read_fence(self, clock: str) -> Fence:
        return await super().read_fence(self._layout.clock(clock))

    # ------------------------------------------------------------------ writes

    async def write(
        self,
        writes: Sequence[Write],
        now_ms: int,
        fence: Fence | None = None,
        clock: str = "",
        store: bool = True,
    ) -> tuple[list[bool], Fence]:
        layout = self._layout
        groups: dict[int, list[int]] = defaultdict(list)
        for i, w in enumerate(writes):
            groups[layout.bucket(w.key)].append(i)
        calls = [
            super(ClusterBackend, self).write(
                [self._in(writes[i], b) for i in members],
                now_ms,
                fence,
                layout.bucket_clock(b),
                store,
            )
            for b, members in groups.items()
        ]
        replies, now = await asyncio.gather(asyncio.gather(*calls), self.read_fence(clock))
        stood = [False] * len(writes)
        for members, (flags, _) in zip(groups.values(), replies, strict=True):
            for i, flag in zip(members, flags, strict=True):
                stood[i] = flag
        return stood, now

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        layout = self._layout
        groups: dict[int, list[str]] = defaultdict(list)
        for k in keys:
            b = layout.bucket(k)
            groups[b].append(layout.physical(k, b))
        counts = await asyncio.gather(  # sight: ignore[SC102] one call per bucket: at most 16
            *(self.client.execute_command("UNLINK", *names) for names in groups.values())
        )
        return sum(int(n) for n in counts)

    # ------------------------------------------------------------------ locks

    async def try_lock(
        self, lock_key: str, token: str, ttl_ms: int, clock: str, steal: str | None = None
    ) -> tuple[bytes | None, Fence, int]:
        layout = self._layout
        b = layout.bucket(lock_key)
        lock = layout.physical(lock_key, b)
        if steal is None:
            (held, _, pttl), now = await asyncio.gather(
                super().try_lock(lock, token, ttl_ms, layout.bucket_clock(b)),
                self.read_fence(clock),
            )
            return held, now, pttl
        c = await self._advance(clock)
        keys = [layout.bucket_clock(b), lock, layout.physical(steal, b)]
        held, _, ms, pttl = await self._eval(_LOCK, keys, [token, ttl_ms, _HORIZON_MS, c])
        return (bytes(held) if held else None), Fence(int(c), int(ms)), int(pttl)

    async def unlock(self, lock_key: str, token: bytes) -> bool:
        return await super().unlock(self._layout.physical(lock_key), token)

    async def extend_lock(self, lock_key: str, token: str, ttl_ms: int) -> bool:
        return await super().extend_lock(self._layout.physical(lock_key), token, ttl_ms)

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
        layout = self._layout
        b = layout.bucket(lock_key)
        (stood, _), now = await asyncio.gather(
            super().commit(
                None if write is None else self._in(write, b),
                layout.physical(lock_key, b),
                token,
                layout.physical(channel, b),
                now_ms,
                store,
                fence,
                layout.bucket_clock(b),
            ),
            self.read_fence(clock),
        )
        return stood, now

    # ------------------------------------------------------------------ invalidation

    async def fence_marks(self, clock: str, marks: Sequence[str]) -> int:
        c = await self._advance(clock)
        layout = self._layout
        per_bucket: dict[int, list[str]] = defaultdict(list)
        for mark in marks:
            if layout.identity(mark) is not None:
                per_bucket[layout.bucket(mark)].append(layout.physical(mark))
            else:
                for b in self._buckets():
                    per_bucket[b].append(layout.physical(mark, b))
        await asyncio.gather(
            *(
                self._eval(_FENCE_MARKS, [layout.bucket_clock(b), *names], [_HORIZON_MS, c])
                for b, names in per_bucket.items()
            )
        )
        return int(c)

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
        layout = self._layout
        groups: dict[int, list[int]] = defaultdict(list)
        for i, k in enumerate(keys):
            groups[layout.bucket(k)].append(i)
        c = await self._advance(clock)
        calls: list[Awaitable[Any]] = []
        for b, members in groups.items():
            phys_head = layout.tag(b) + head[len(layout.prefix) :]
            script_keys = [
                layout.bucket_clock(b),
                layout.physical(versions, b),
                *(layout.physical(marks[i], b) for i in members),
                *(layout.physical(keys[i], b) for i in members),
            ]
            args = [
                _HORIZON_MS,
                phys_head,
                layout.physical(channel, b),
                len(members),
                *(tails[i] for i in members),
                c,
            ]
            calls.append(self._eval(_INVALIDATE_ENTRY, script_keys, args))
        counts = await asyncio.gather(*calls)  # sight: ignore[SC102] one call per bucket (<= 16)
        return sum(int(n) for n in counts)

    async def retire_tags(self, clock: str, tags: Sequence[tuple[str, str, str]]) -> None:
        c = await self._advance(clock)
        layout = self._layout
        await asyncio.gather(
            *(
                self._eval(
                    _RETIRE_TAGS,
                    [layout.bucket_clock(b), *(layout.physical(k, b) for t in tags for k in t)],
                    [_HORIZON_MS, c],
                )
                for b in self._buckets()
            )
        )

    async def drain(self, dead: str, batch: int, channel: str) -> tuple[int, int]:
        """One batch from every bucket's shard of ``dead`` (concurrently)."""
        layout = self._layout
        replies = await asyncio.gather(  # sight: ignore[SC102] one call per bucket: at most 16
            *(
                super(ClusterBackend, self).drain(
                    layout.physical(dead, b), batch, layout.physical(channel, b)
                )
                for b in self._buckets()
            )
        )
        return sum(t for t, _ in replies), sum(n for _, n in replies)

    async def scan_page(self, match: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """One ``SCAN`` page of one primary; the cursor also says which primary
        (``node cursor << 8 | primary index``; 0 when every primary was scanned)."""
        primaries = sorted(self.client.get_primaries(), key=lambda n: n.name)
        index, node_cursor = cursor & 0xFF, cursor >> 8
        if index >= len(primaries):
            return 0, []
        node_cursor, raw = await self.client.execute_command(
            "SCAN",
            node_cursor,
            "MATCH",
            self._layout.match(match),
            "COUNT",
            count,
            target_nodes=primaries[index],
        )
        names = [k.decode() if isinstance(k, bytes) else k for k in raw]
        logical = [self._layout.logical(k) for k in names]
        if isinstance(node_cursor, dict):  # redis-py keys a cluster SCAN cursor by node
            node_cursor = next(iter(node_cursor.values()))
        node_cursor = int(node_cursor)
        if node_cursor:
            return node_cursor << 8 | index, logical
        return (index + 1 if index + 1 < len(primaries) else 0), logical

    # ------------------------------------------------------------------ pub/sub

    def _node_hub(self, channel: str) -> _Hub:
        """The sharded pub/sub hub of the primary that serves ``channel`` now."""
        return self._hub_of(self.client.get_node_from_key(channel))[1]

    async def _warm_up(self) -> None:
        """Open one connection to every primary's pub/sub client ahead of the first wait: a
        waiter's ``SSUBSCRIBE`` then takes it warm from the pool instead of connecting within
        its deadline (one node's pub/sub borrows a connection of the command pool)."""
        with contextlib.suppress(Exception):
            await self.client.initialize()
            for node in self.client.get_primaries():
                await self._hub_of(node)[0].ping()

    def _hub_of(self, node: Any) -> tuple[Redis, _Hub]:
        found = self._hubs.get(node.name)
        if found is None:
            kwargs = self.client.connection_kwargs
            options = {k: kwargs[k] for k in _NODE_OPTIONS if kwargs.get(k) is not None}
            if kwargs.get("connection_class") is not None and "SSL" in str(
                kwargs["connection_class"]
            ):
                options["ssl"] = True
            node_client = Redis(host=node.host, port=node.port, **options)
            found = self._hubs[node.name] = (node_client, _Hub(node_client, sharded=True))
        return found

    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[QueueInbox]:
        if channel == self._local_channel:
            return self._subscribe_local()
        return self._node_hub(self._layout.physical(channel)).subscribe(
            self._layout.physical(channel)
        )

    @contextlib.asynccontextmanager
    async def _subscribe_local(self) -> AsyncIterator[QueueInbox]:
        """Every bucket's local-tier channel as one inbox, entry names given back in the
        cache's own form; an empty message when any of them dropped."""
        layout = self._layout
        merged = QueueInbox()
        async with contextlib.AsyncExitStack() as stack:
            inboxes = []
            for b in self._buckets():
                name = layout.physical(self._local_channel, b)
                inboxes.append(
                    await stack.enter_async_context(self._node_hub(name).subscribe(name))
                )

            async def forward(inbox: QueueInbox) -> None:
                while True:
                    message = await inbox.next()
                    if message and not message.startswith(b"ns:"):
                        lines = message.decode().split("\n")
                        message = "\n".join(layout.logical(n) for n in lines).encode()
                    merged.put_nowait(message)
                    if not message:
                        return

            tasks = [asyncio.ensure_future(forward(inbox)) for inbox in inboxes]
            try:
                yield merged
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def publish(self, channel: str, message: bytes) -> None:
        if channel == self._local_channel:
            name = self._layout.physical(channel, 0)  # every listener hears every bucket
        else:
            name = self._layout.physical(channel)
        await self.client.execute_command("SPUBLISH", name, message)

    async def aclose(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.wait([self._warming], timeout=1.0)
            self._warming = None
        hubs, self._hubs = list(self._hubs.values()), {}
        for node_client, hub in hubs:
            await hub.aclose()
            await node_client.aclose()
