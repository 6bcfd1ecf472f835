"""Value codecs: JSON into the return annotation (default) and opt-in HMAC-signed pickle.

A codec turns a function's result into bytes and back. :class:`JsonCodec` validates what it
reads against the function's return annotation with a pydantic ``TypeAdapter`` built once, so a
hit returns the same type as a miss (models, ``list[Model]``, dataclasses, dicts). Writing to
Redis never becomes code execution: :class:`PickleCodec` is opt-in and refuses any value whose
HMAC-SHA256 signature does not verify under your key.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import typing
from typing import Any, Protocol, runtime_checkable

import orjson
from pydantic import TypeAdapter

from sight_core.errors import CacheSerializationError, ConfigurationError

__all__ = ["Codec", "JsonCodec", "PickleCodec"]


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back; ``decode`` raises CacheSerializationError on bad input."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


_PLAIN = frozenset({Any, object, None, dict, list})


def _is_plain(annotation: Any) -> bool:
    """Whether ``orjson.loads`` already returns exactly this type (no validation to do)."""
    if annotation in _PLAIN:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        return args in ((str, Any), (str, object))
    if origin is list:
        return args in ((Any,), (object,))
    return False


class JsonCodec:
    """JSON through orjson/pydantic, decoded into ``annotation`` (``Any`` = plain JSON types).

    Costs: one ``validate_json`` (pydantic-core's parser) per hit; plain JSON annotations
    (``Any``, ``dict``, ``list``, ``dict[str, Any]``, ``list[Any]``) use ``orjson.loads``.
    """

    __slots__ = ("_adapter", "_plain", "annotation")

    def __init__(self, annotation: Any = Any) -> None:
        self.annotation = annotation
        self._plain = _is_plain(annotation)
        self._adapter: TypeAdapter[Any] | None = None if self._plain else TypeAdapter(annotation)

    def encode(self, value: Any) -> bytes:
        try:
            if self._adapter is None:
                return orjson.dumps(value)
            return self._adapter.dump_json(value)
        except Exception as exc:
            raise CacheSerializationError(
                f"cannot encode a {type(value).__name__} as JSON: {type(exc).__name__}"
            ) from None

    def decode(self, data: bytes) -> Any:
        try:
            if self._adapter is None:
                return orjson.loads(data)
            return self._adapter.validate_json(data)
        except Exception as exc:
            raise CacheSerializationError(
                f"cached JSON does not match {self.annotation!r}: {type(exc).__name__}"
            ) from None


class PickleCodec:
    """Pickle signed with HMAC-SHA256; unsigned or tampered values are refused, never loaded.

    Use only for values JSON cannot carry. Anyone holding ``key`` can make this process run
    code, so keep it secret and at least 32 bytes.

    Raises:
        ConfigurationError: ``key`` shorter than 32 bytes.
    """

    __slots__ = ("_key",)
    _SIG = 32

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < 32:
            raise ConfigurationError("PickleCodec needs a secret key of at least 32 bytes")
        self._key = key

    def encode(self, value: Any) -> bytes:
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise CacheSerializationError(
                f"cannot pickle a {type(value).__name__}: {type(exc).__name__}"
            ) from None
        return hmac.new(self._key, body, hashlib.sha256).digest() + body

    def decode(self, data: bytes) -> Any:
        signature, body = data[: self._SIG], data[self._SIG :]
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if len(signature) != self._SIG or not hmac.compare_digest(signature, expected):
            raise CacheSerializationError("refusing an unsigned or tampered pickled value")
        return pickle.loads(body)  # signature verified above
