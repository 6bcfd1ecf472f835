"""Value codecs: JSON into the return annotation (default) and opt-in HMAC-signed pickle.

A codec turns a function's result into bytes and back. :class:`JsonCodec` validates what it
reads against the function's return annotation with a pydantic ``TypeAdapter`` built once, so a
hit returns the same type as a miss (models, ``list[Model]``, dataclasses, dicts), and refuses
to encode a value that would come back different. Writing to
Redis never becomes code execution: :class:`PickleCodec` is opt-in and refuses any value whose
HMAC-SHA256 signature does not verify under your key.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import pickle
import re
import typing
from typing import Any, Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from sight_core.errors import CacheSerializationError, ConfigurationError

__all__ = ["Codec", "JsonCodec", "PickleCodec", "type_name"]


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


def type_name(annotation: Any) -> str:
    """A readable name of a type or annotation (``Persona``, ``list[Persona]``)."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _difference(value: Any, back: Any) -> str | None:
    """How ``back`` (decoded) differs from ``value`` (encoded), by type or value; None if it
    does not. Names types only, never values (they may hold personal data)."""
    cls, back_cls = type(value), type(back)
    if cls is not back_cls:
        if value == back and (
            (cls is int and back_cls is float)  # ``-> float`` returning an int: both allowed
            or (
                # A subclass of a plain value type that decodes to its base, equal (asyncpg's
                # UUID): not an enum, model or dataclass, whose type is part of the value.
                isinstance(value, back_cls)
                and not isinstance(value, enum.Enum | BaseModel)
                and not dataclasses.is_dataclass(value)
            )
        ):
            return None
        name, back_name = cls.__qualname__, back_cls.__qualname__
        if name == back_name:
            name, back_name = f"{cls.__module__}.{name}", f"{back_cls.__module__}.{back_name}"
        return f"a {name} comes back as a {back_name}"
    if isinstance(value, BaseModel):
        found = _difference(value.__dict__, back.__dict__) or _difference(
            value.__pydantic_extra__, back.__pydantic_extra__
        )
        if found is None and value.__pydantic_private__ != back.__pydantic_private__:
            found = f"the private attributes of a {cls.__qualname__} are lost"
        return found
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            found = _difference(getattr(value, field.name), getattr(back, field.name))
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        if len(value) != len(back):
            return f"a {cls.__qualname__} loses entries"
        for (k, v), (bk, bv) in zip(value.items(), back.items(), strict=True):
            found = _difference(k, bk) or _difference(v, bv)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        if len(value) != len(back):
            return f"a {cls.__qualname__} changes length"
        for v, bv in zip(value, back, strict=True):
            found = _difference(v, bv)
            if found is not None:
                return found
        return None
    if value == back:
        return None
    return f"a {cls.__qualname__} changes value"


# The type named by orjson's and pydantic's "cannot serialize" messages; their other
# messages may quote the value, so only this part is ever repeated.
_CULPRIT = re.compile(r"not JSON serializable: ([\w.]+)|unknown type: <class '([\w.]+)'>")


def _culprit(exc: Exception) -> str:
    found = _CULPRIT.search(str(exc))
    if found is None:
        return type(exc).__name__
    return f"{type(exc).__name__}: no JSON form for {found.group(1) or found.group(2)}"


class JsonCodec:
    """JSON through orjson/pydantic, decoded into ``annotation`` (``Any`` = plain JSON types).

    ``encode`` checks that the value round-trips: decoding its JSON gives an equal value of
    the same types all the way down. A ``Dog`` returned under ``-> Animal``, a ``UUID`` or a
    ``tuple`` under ``-> dict``, a ``NaN`` (JSON has none) are refused with a
    CacheSerializationError naming the types, so a hit never differs from the miss.

    Costs: one ``validate_json`` (pydantic-core's parser) per hit; plain JSON annotations
    (``Any``, ``dict``, ``list``, ``dict[str, Any]``, ``list[Any]``) use ``orjson.loads``.
    ``encode`` (a miss) also decodes once and compares, about the cost of a hit.
    """

    __slots__ = ("_adapter", "_plain", "annotation")

    def __init__(self, annotation: Any = Any) -> None:
        self.annotation = annotation
        self._plain = _is_plain(annotation)
        self._adapter: TypeAdapter[Any] | None = None if self._plain else TypeAdapter(annotation)

    def encode(self, value: Any) -> bytes:
        """The JSON of ``value``.

        Raises:
            CacheSerializationError: ``value`` cannot be encoded, or would not decode to an
                equal value of the same types (the message names them).
        """
        try:
            if self._adapter is None:
                data = orjson.dumps(value)
            else:
                data = self._adapter.dump_json(value, warnings="error")
        except Exception as exc:
            raise CacheSerializationError(
                f"cannot encode a {type(value).__qualname__} as JSON of "
                f"{type_name(self.annotation)} ({_culprit(exc)}): return that type, or "
                "pass codec=PickleCodec(secret_key) for values only pickle can carry"
            ) from None
        try:
            back = self.decode(data)
        except CacheSerializationError as exc:
            found: str | None = f"it would not decode ({str(exc).partition(': ')[2]})"
        else:
            found = _difference(value, back)
        if found is not None:
            raise CacheSerializationError(
                f"a {type(value).__qualname__} does not round-trip through JSON as "
                f"{type_name(self.annotation)}: {found}; not cached (return exactly the "
                "annotated types)"
            )
        return data

    def decode(self, data: bytes) -> Any:
        """The value in ``data``.

        Raises:
            CacheSerializationError: ``data`` is not JSON of ``annotation``.
        """
        try:
            if self._adapter is None:
                return orjson.loads(data)
            return self._adapter.validate_json(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "the value"
            raise CacheSerializationError(
                f"cached JSON does not match {type_name(self.annotation)}: {first['type']} "
                f"at {where}"
            ) from None
        except Exception as exc:
            raise CacheSerializationError(
                f"cached JSON does not match {type_name(self.annotation)}: {type(exc).__name__}"
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
                f"cannot pickle a {type(value).__qualname__}: {type(exc).__name__}"
            ) from None
        return hmac.new(self._key, body, hashlib.sha256).digest() + body

    def decode(self, data: bytes) -> Any:
        signature, body = data[: self._SIG], data[self._SIG :]
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if len(signature) != self._SIG or not hmac.compare_digest(signature, expected):
            raise CacheSerializationError("refusing an unsigned or tampered pickled value")
        return pickle.loads(body)  # signature verified above
