"""The stored form of an entry: a 14-byte header then the codec's bytes (maybe compressed).

Header: magic ``0xCA``, flags (1 = zlib-compressed, 2 = a cached ``None``), ``fresh_until``
(unix seconds, float64; after it the entry is stale but may still be served within
``stale_ttl``) and ``delta`` (seconds the computation took, float32; used by XFetch).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

from sight_core.errors import CacheSerializationError

__all__ = ["HEADER", "MAGIC", "NONE", "ZLIB", "Entry", "pack", "plain_body", "unpack"]

HEADER = struct.Struct("<BBdf")
MAGIC = 0xCA
ZLIB = 1
NONE = 2


class Entry(NamedTuple):
    """A decoded header and the codec bytes."""

    flags: int
    fresh_until: float
    delta: float
    body: bytes

    def value(self, decode: Callable[[bytes], Any]) -> Any:
        """The stored value: None for a cached ``None``, else ``decode(body)`` (which may
        raise)."""
        return None if self.flags & NONE else decode(self.body)


def pack(
    body: bytes,
    *,
    fresh_until: float,
    delta: float,
    none: bool = False,
    compress_above: int | None = None,
) -> bytes:
    """Header + ``body``; compressed when longer than ``compress_above`` and it helps."""
    flags = NONE if none else 0
    if compress_above is not None and len(body) > compress_above:
        packed = zlib.compress(body, 1)
        if len(packed) < len(body):
            body = packed
            flags |= ZLIB
    return HEADER.pack(MAGIC, flags, fresh_until, delta) + body


_SIZE = HEADER.size


def plain_body(raw: bytes) -> bytes | None:
    """The codec bytes of a plain entry (not compressed, not a cached ``None``), read
    without parsing the rest of the header; None for anything else (use :func:`unpack`).
    The hit path's shortcut."""
    if len(raw) >= _SIZE and raw[0] == MAGIC and raw[1] == 0:
        return raw[_SIZE:]
    return None


def unpack(raw: bytes) -> Entry:
    """Split ``raw`` into header fields and codec bytes (decompressed).

    Raises:
        CacheSerializationError: not an entry written by this library.
    """
    try:
        magic, flags, fresh_until, delta = HEADER.unpack_from(raw)
    except struct.error:
        raise CacheSerializationError("cached value has no sight-core header") from None
    if magic != MAGIC:
        raise CacheSerializationError("cached value has no sight-core header")
    body = raw[HEADER.size :]
    if flags & ZLIB:
        try:
            body = zlib.decompress(body)
        except zlib.error:
            raise CacheSerializationError("cached value is not valid zlib data") from None
    return Entry(flags, fresh_until, delta, body)
