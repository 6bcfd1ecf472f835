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

from collections.abc import Sequence
from dataclasses import dataclass

from ._backend import Write
from ._keys import tag_name

__all__ = ["FENCE_HORIZON_MS", "Keyspace"]

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
