"""Every Redis key name the cache uses, built in one place.

Entries live under ``{prefix}:v{version}:{namespace}:{part}``. Around them:

- ``{prefix}:lock:{entry}`` the stampede lock, ``{prefix}:done:{entry}`` its wake-up channel;
- ``{prefix}:tag:{tag}`` a tag index (sorted set of entry keys, scored by expiry) and
  ``{prefix}:tagdead:{tag}`` the index an invalidation is still draining;
- ``{prefix}:fence`` the fence clock: a counter every invalidation increments;
- ``{prefix}:fence:ns:{namespace}``, ``{prefix}:fence:key:{namespace}:{part}`` and
  ``{prefix}:fence:tag:{tag}``: the clock value of the last invalidation of that namespace,
  entry (every version) and tag. A commit is refused when one of them is newer than the clock
  value read when its computation started;
- ``{prefix}:nsversions:{namespace}`` the versions that ever stored an entry, so a key
  invalidation reaches every version;
- ``{prefix}:local`` the channel that tells in-process tiers what was invalidated.

A tag appears in names only through :func:`~._keys.tag_name` (so ``invalidate_tags`` with the
raw tag reaches what the write indexed). None of the names depends on the version except the
entry itself: invalidation and fencing reach every version of a namespace.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._backend import Write
from ._keys import tag_name

__all__ = ["CLUSTER_BUCKETS", "FENCE_HORIZON_MS", "ClusterLayout", "Keyspace"]

#: How long an invalidation's fence mark is kept; a computation that ran longer than this
#: is not stored (its fence could have expired under it).
FENCE_HORIZON_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names under one cache ``prefix``."""

    prefix: str

    @property
    def clock(self) -> str:
        return f"{self.prefix}:fence"

    @property
    def local_channel(self) -> str:
        return f"{self.prefix}:local"

    def base(self, namespace: str, version: int) -> str:
        """What every entry key of ``namespace`` at ``version`` starts with."""
        return f"{self.prefix}:v{version}:{namespace}:"

    def lock(self, entry: str) -> str:
        return f"{self.prefix}:lock:{entry}"

    def channel(self, entry: str) -> str:
        return f"{self.prefix}:done:{entry}"

    def tag(self, rendered: str) -> str:
        return f"{self.prefix}:tag:{tag_name(rendered)}"

    def dead_tag(self, rendered: str) -> str:
        return f"{self.prefix}:tagdead:{tag_name(rendered)}"

    def tag_fence(self, rendered: str) -> str:
        return f"{self.prefix}:fence:tag:{tag_name(rendered)}"

    def namespace_fence(self, namespace: str) -> str:
        return f"{self.prefix}:fence:ns:{namespace}"

    def key_fence(self, namespace: str, part: str) -> str:
        return f"{self.prefix}:fence:key:{namespace}:{part}"

    def versions(self, namespace: str) -> str:
        return f"{self.prefix}:nsversions:{namespace}"

    def entry_match(self, namespace: str, version: int | None) -> str:
        """``SCAN MATCH`` pattern of the entries of ``namespace`` (every version if None)."""
        v = "*" if version is None else str(int(version))
        return f"{self.prefix}:v{v}:{namespace}:*"

    def write(
        self,
        namespace: str,
        version: int,
        key: str,
        value: bytes,
        ttl_ms: int,
        tags: Sequence[str],
        fresh_ms: int | None = None,
    ) -> Write:
        """The :class:`Write` of entry ``key`` of ``namespace`` with its tag indexes and
        fence marks (``tags`` rendered, e.g. ``"project:42"``)."""
        part = key.split(":", 3)[3]
        return Write(
            key,
            value,
            ttl_ms,
            [self.tag(t) for t in tags],
            fresh_ms,
            tag_fences=[self.tag_fence(t) for t in tags],
            fences=(self.namespace_fence(namespace), self.key_fence(namespace, part)),
            versions=self.versions(namespace),
            version=version,
        )


#: Hash-tag buckets of the Redis Cluster layout (see :class:`ClusterLayout`).
CLUSTER_BUCKETS = 16


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """Where the names of a :class:`Keyspace` live on a Redis Cluster.

    Every name gets a hash tag ``{prefix:NN}`` in front, ``NN`` one of ``buckets``:

    - an entry, its lock, its wake-up channel and its key fence mark share the bucket of
      ``namespace:part`` (every version of an entry too), so each script runs in one slot;
    - names shared between entries (namespace and tag fence marks, tag indexes, the versions
      set, the local-tier channel) have one copy per bucket: a write touches its bucket's
      copy, an invalidation every copy;
    - the fence clock alone lives under ``{prefix:clock}``: invalidations advance it first
      and then set their marks, bucket by bucket, to the value it gave.

    ``logical`` undoes the mapping (the names the cache itself uses).
    """

    prefix: str
    buckets: int = CLUSTER_BUCKETS
    _tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = tuple(f"{{{self.prefix}:{b:02d}}}" for b in range(self.buckets))
        object.__setattr__(self, "_tags", tags)

    def identity(self, name: str) -> str | None:
        """``namespace:part`` of an entry, lock, channel or key fence mark; None for a name
        shared between entries."""
        rest = name[len(self.prefix) + 1 :]
        first = rest[:1]
        if first == "v":  # an entry: v{version}:{namespace}:{part}
            version, sep, tail = rest.partition(":")
            return tail if sep and tail and version[1:].isdigit() else None
        if first == "l" and rest.startswith("lock:"):
            return self.identity(self.prefix + ":" + rest[5:].split(":", 1)[1])
        if first == "d" and rest.startswith("done:"):
            return self.identity(self.prefix + ":" + rest[5:].split(":", 1)[1])
        if first == "f" and rest.startswith("fence:key:"):
            return rest[10:]
        return None

    def bucket(self, name: str) -> int:
        """The bucket of an entry (lock, channel, key fence mark) ``name``."""
        identity = self.identity(name)
        if identity is None:
            raise ValueError(f"{name!r} is shared between entries: give its bucket")
        return zlib.crc32(identity.encode()) % self.buckets

    def tag(self, bucket: int) -> str:
        return self._tags[bucket]

    def physical(self, name: str, bucket: int | None = None) -> str:
        """``name`` in ``bucket`` (default: its own, for names of one entry)."""
        b = self.bucket(name) if bucket is None else bucket
        return self._tags[b] + name[len(self.prefix) :]

    def entries(self, names: Sequence[str]) -> list[str]:
        """:meth:`physical` of many entry names (``{prefix}:v{n}:{namespace}:{part}``), the
        read path's fast version."""
        cut, tags, buckets, crc32 = len(self.prefix), self._tags, self.buckets, zlib.crc32
        out = []
        for name in names:
            identity = name[name.index(":", cut + 1) + 1 :]
            out.append(tags[crc32(identity.encode()) % buckets] + name[cut:])
        return out

    def clock(self, name: str) -> str:
        """The fence clock's name on the cluster."""
        return f"{{{self.prefix}:clock}}" + name[len(self.prefix) :]

    def bucket_clock(self, bucket: int) -> str:
        """A key of ``bucket`` that is never written: the scripts' clock slot (KEYS[1])."""
        return self.tag(bucket) + ":noclock"

    def logical(self, name: str) -> str:
        """The cache's own name for a physical ``name``."""
        if name.startswith("{"):
            return self.prefix + name[name.index("}") + 1 :]
        return name

    def match(self, pattern: str) -> str:
        """A ``SCAN MATCH`` pattern over every bucket for a pattern of logical names."""
        return f"{{{self.prefix}:*}}" + pattern[len(self.prefix) :]
