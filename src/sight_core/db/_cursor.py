"""Keyset pagination: order keys, the WHERE clause after a row, and the opaque cursor."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Integer,
    SmallInteger,
    and_,
    literal,
    or_,
    tuple_,
)
from sqlalchemy.orm import Mapper, QueryableAttribute
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import desc_op

from sight_core.errors import ConfigurationError

__all__ = ["KeysetOrder", "OrderKey"]


@dataclass(frozen=True, slots=True)
class OrderKey:
    column: Column[Any]
    attr: str  # mapped attribute name holding the value
    descending: bool


def _key(mapper: Mapper[Any], item: Any) -> OrderKey:
    descending = False
    expr = item
    if isinstance(item, UnaryExpression):
        if item.modifier is desc_op:
            descending = True
        expr = item.element
    if isinstance(expr, QueryableAttribute):
        expr = expr.expression
    deannotate = getattr(expr, "_deannotate", None)  # ORM expressions carry annotated copies
    if deannotate is not None:
        expr = deannotate()
    columns = mapper.columns
    if not isinstance(expr, Column) or not any(expr is c for c in columns):
        raise ConfigurationError(
            f"page(order_by=...) takes columns of {mapper.class_.__name__} (optionally .desc()), "
            f"got {item!r}"
        )
    prop = mapper.get_property_by_column(expr)
    return OrderKey(expr, prop.key, descending)


_DECODERS: dict[type, Any] = {
    uuid.UUID: uuid.UUID,
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
    decimal.Decimal: decimal.Decimal,
    float: float,  # "NaN", "Infinity", "-Infinity" (JSON has no literal for them)
}


def _encode_value(value: Any) -> Any:
    """``value`` as JSON can hold it: a NaN or infinite float becomes its name (JSON has none).

    An enum member is written by name: SQLAlchemy's ``Enum`` stores names, and a value that
    differs from its name would not bind back to the column.
    """
    if type(value) is float and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, enum.Enum):
        return value.name
    return value


#: Integer column types by the bound of their values (the most specific type first).
_INT_BOUNDS = ((BigInteger, 2**63), (SmallInteger, 2**15), (Integer, 2**31))


def _encode_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal | uuid.UUID):  # asyncpg returns a UUID subclass
        return str(value)
    raise TypeError(f"cannot put a {type(value).__name__} in a page cursor")


class KeysetOrder:
    """The ordering of a keyset page: the given keys, then the primary key as tie-breaker.

    Ordering columns must be ``NOT NULL`` (a NULL has no place in a keyset comparison).
    """

    def __init__(self, mapper: Mapper[Any], order_by: Sequence[Any]) -> None:
        keys = [_key(mapper, item) for item in order_by]
        pk: Any = mapper.primary_key[0]
        for key in keys:
            if key.column.nullable and key.column is not pk:
                raise ConfigurationError(
                    f"page(order_by=...): {mapper.class_.__name__}.{key.attr} is nullable; "
                    "keyset pagination needs NOT NULL ordering columns"
                )
        if not any(key.column is pk for key in keys):
            descending = bool(keys) and all(key.descending for key in keys)
            keys.append(OrderKey(pk, mapper.get_property_by_column(pk).key, descending))
        self.keys = tuple(keys)
        signature = ",".join(f"{k.attr}:{int(k.descending)}" for k in keys)
        self._fingerprint = hashlib.blake2s(
            f"{mapper.class_.__qualname__}|{signature}".encode(), digest_size=4
        ).hexdigest()

    def order_by(self) -> list[ColumnElement[Any]]:
        return [k.column.desc() if k.descending else k.column.asc() for k in self.keys]

    def after(self, values: Sequence[Any]) -> ColumnElement[bool]:
        """Rows strictly after the row whose ordering values are ``values``."""
        bound = [literal(v, k.column.type) for k, v in zip(self.keys, values, strict=True)]
        directions = {k.descending for k in self.keys}
        if len(directions) == 1:  # a row comparison the index can serve
            left = tuple_(*(k.column for k in self.keys))
            right = tuple_(*bound)
            return left < right if directions.pop() else left > right
        clauses: list[ColumnElement[bool]] = []
        for i, key in enumerate(self.keys):
            equal = [self.keys[j].column == bound[j] for j in range(i)]
            step = key.column < bound[i] if key.descending else key.column > bound[i]
            clauses.append(and_(*equal, step))
        return or_(*clauses)

    def cursor_for(self, item: Any) -> str:
        values = [_encode_value(getattr(item, k.attr)) for k in self.keys]
        payload = orjson.dumps({"o": self._fingerprint, "v": values}, default=_encode_default)
        return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str) -> list[Any]:
        """The ordering values inside ``cursor``; ``ConfigurationError`` if it is not ours."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            data = orjson.loads(raw)
            values = data["v"]
            fingerprint = data["o"]
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
            raise ConfigurationError("invalid page cursor") from None
        if fingerprint != self._fingerprint or len(values) != len(self.keys):
            raise ConfigurationError(
                "page cursor was made for another model or ordering; restart from the first page"
            )
        return [self._decode_value(k, v) for k, v in zip(self.keys, values, strict=True)]

    @staticmethod
    def _decode_value(key: OrderKey, value: Any) -> Any:
        """The cursor's ``value`` as the column's Python type; a value that cannot be one (a
        tampered cursor) raises ``ConfigurationError`` here instead of reaching the server."""
        if value is None:
            return None
        try:
            python_type = key.column.type.python_type
        except NotImplementedError:
            return value
        if issubclass(python_type, enum.Enum):
            decoder: Any = python_type.__getitem__  # written by name
        else:
            decoder = _DECODERS.get(python_type)
        try:
            if decoder is not None and not isinstance(value, python_type):
                value = decoder(value)
        except (ValueError, TypeError, KeyError, AttributeError, decimal.InvalidOperation):
            raise ConfigurationError("invalid page cursor") from None
        if not isinstance(value, python_type) or (
            isinstance(value, bool) and python_type is not bool
        ):
            raise ConfigurationError("invalid page cursor")
        if type(value) is int:
            bound = next((b for t, b in _INT_BOUNDS if isinstance(key.column.type, t)), None)
            if bound is not None and not -bound <= value < bound:
                raise ConfigurationError("invalid page cursor")
        return value
