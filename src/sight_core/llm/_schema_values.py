"""Deterministic values for a JSON schema: valid ones, and deliberately invalid ones.

The fake provider answers structured-output requests with :func:`example_for_schema`, so a
pydantic model with constraints (``ge``/``le``/``gt``/``lt``/``multiple_of``, ``min_length``/
``max_length``, ``datetime``/``date``/``time``/``UUID``/URL formats, enums and literals, nested
and optional models, tuples, dicts, unions) validates the fake's answer as it would validate
Gemini's. :func:`violation_of` produces a value that a validator of the same schema rejects,
for tests that script a bad answer.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["example_for_schema", "violation_of"]

_MAX_DEPTH = 12
_SHALLOW = 4
"""From this depth on, optional branches take ``null`` and arrays their fewest items, so a
recursive model (a tree, a linked list) ends in a valid leaf instead of the depth cut."""

_FORMATS: dict[str, str] = {
    "date-time": "2025-01-02T03:04:05Z",
    "date": "2025-01-02",
    "time": "03:04:05",
    "duration": "PT1H",
    "email": "ada@example.com",
    "uri": "https://example.com/item",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
}


def example_for_schema(schema: Mapping[str, Any], seed: str = "") -> Any:
    """A deterministic value valid for ``schema`` (a JSON schema as pydantic writes it).

    ``seed`` varies strings and numbers between prompts. Handles ``$ref``/``$defs``,
    ``enum``/``const``, ``anyOf``/``oneOf``/``allOf``, objects (every property),
    ``additionalProperties``, arrays (``minItems``/``maxItems``/``uniqueItems``/
    ``prefixItems``), numeric bounds (inclusive, exclusive, ``multipleOf``), string lengths and
    formats, and ``pattern`` for the regular expressions of plain literals, classes,
    repeats, groups and alternatives (others fall back to plain text).
    """
    defs: Mapping[str, Any] = schema.get("$defs") or schema.get("definitions") or {}
    return _example(schema, defs, seed, "value", 0)


def violation_of(schema: Mapping[str, Any], seed: str = "") -> Any:
    """A value that a validator of ``schema`` rejects: an object without one of its required
    keys, or a value of the wrong type."""
    defs: Mapping[str, Any] = schema.get("$defs") or schema.get("definitions") or {}
    node = _resolve(schema, defs)
    if _kind(node) == "object":
        value = _example(node, defs, seed, "value", 0)
        required = list(node.get("required") or ())
        if required and isinstance(value, dict):
            value.pop(required[0], None)
            return value
        return ["not", "an", "object"]
    if _kind(node) == "array":
        return {"not": "an array"}
    if _kind(node) in ("integer", "number", "boolean"):
        return "not a number"
    return {"not": "a string"}


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    for _ in range(_MAX_DEPTH):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        node = defs.get(ref.rsplit("/", 1)[-1], {})
    return node


def _kind(node: Mapping[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in node:
        return "object"
    return kind if isinstance(kind, str) else None


def _number(seed: str) -> int:
    return int(hashlib.sha256(seed.encode()).hexdigest()[:6], 16)


def _example(
    node: Mapping[str, Any], defs: Mapping[str, Any], seed: str, name: str, depth: int
) -> Any:
    if depth > _MAX_DEPTH:
        return None
    node = _resolve(node, defs)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][_number(seed) % len(node["enum"])]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if options:
            nullable = [o for o in options if _kind(_resolve(o, defs)) == "null"]
            if depth >= _SHALLOW and nullable:
                return None
            choice = next((o for o in options if o not in nullable), options[0])
            return _example(choice, defs, seed, name, depth + 1)
    if node.get("allOf"):
        merged: dict[str, Any] = {}
        for part in node["allOf"]:
            merged.update(_resolve(part, defs))
        return _example(merged, defs, seed, name, depth + 1)
    if "default" in node:
        return node["default"]
    kind = _kind(node)
    if kind == "object":
        return _object(node, defs, seed, depth)
    if kind == "array":
        return _array(node, defs, seed, name, depth)
    if kind == "integer":
        return _integer(node, seed)
    if kind == "number":
        return _float(node, seed)
    if kind == "boolean":
        return _number(seed) % 2 == 0
    if kind == "null":
        return None
    return _string(node, seed, name)


def _object(node: Mapping[str, Any], defs: Mapping[str, Any], seed: str, depth: int) -> Any:
    props: Mapping[str, Any] = node.get("properties") or {}
    value = {k: _example(v, defs, f"{seed}.{k}", k, depth + 1) for k, v in props.items()}
    extra = node.get("additionalProperties")
    wanted = int(node.get("minProperties") or 0)
    if isinstance(extra, Mapping) and not props:
        wanted = max(wanted, 1)
    if isinstance(extra, Mapping):
        i = 0
        while len(value) < wanted:
            value[f"key{i}"] = _example(extra, defs, f"{seed}.key{i}", f"key{i}", depth + 1)
            i += 1
    return value


def _array(
    node: Mapping[str, Any], defs: Mapping[str, Any], seed: str, name: str, depth: int
) -> Any:
    prefix = node.get("prefixItems")
    if prefix:
        return [_example(p, defs, f"{seed}[{i}]", name, depth + 1) for i, p in enumerate(prefix)]
    low = int(node.get("minItems") or 0)
    high = node.get("maxItems")
    count = max(low, 1) if depth < _SHALLOW else low
    if high is not None:
        count = min(count, int(high))
    item = node.get("items") or {}
    values: list[Any] = []
    attempt = 0
    while len(values) < count and attempt < count * 4 + 8:
        value = _example(item, defs, f"{seed}[{attempt}]", name, depth + 1)
        attempt += 1
        if node.get("uniqueItems") and value in values:
            continue
        values.append(value)
    return values


def _bounds(node: Mapping[str, Any]) -> tuple[float, float, bool, bool]:
    """``(low, high, low_open, high_open)``; missing bounds are infinite."""
    low: float = -math.inf
    high: float = math.inf
    low_open = high_open = False
    # bounds keep their JSON type: an int bound past 2**53 must not round through float
    if "minimum" in node:
        low = node["minimum"]
    if "exclusiveMinimum" in node and node["exclusiveMinimum"] >= low:
        low, low_open = node["exclusiveMinimum"], True
    if "maximum" in node:
        high = node["maximum"]
    if "exclusiveMaximum" in node and node["exclusiveMaximum"] <= high:
        high, high_open = node["exclusiveMaximum"], True
    return low, high, low_open, high_open


def _integer(node: Mapping[str, Any], seed: str) -> int:
    low, high, low_open, high_open = _bounds(node)
    lo: int | None = None
    hi: int | None = None
    if low != -math.inf:
        lo = math.floor(low) + 1 if low_open else math.ceil(low)
    if high != math.inf:
        hi = math.ceil(high) - 1 if high_open else math.floor(high)
    # an open side reaches 10**9 past the other bound (``gt=10**12`` alone is not capped below)
    lo = lo if lo is not None else min(hi if hi is not None else 0, 0) - 10**9
    hi = hi if hi is not None else max(lo, 0) + 10**9
    step = node.get("multipleOf")
    candidate = min(max(1 + _number(seed) % 50, lo), hi)
    if step:
        step = int(step)
        first = -(-lo // step) * step  # the smallest multiple >= lo
        candidate = max(first, candidate - candidate % step)
        if candidate > hi:
            candidate = first
    return candidate


def _float(node: Mapping[str, Any], seed: str) -> float:
    low, high, low_open, high_open = _bounds(node)
    # whole numbers: a ``Decimal`` field's ``decimal_places`` is not in its JSON schema
    candidate = float(1 + _number(seed) % 50)
    step = node.get("multipleOf")
    if low != -math.inf and high != math.inf:
        candidate = (
            (low + high) / 2
            if low_open or high_open or candidate < low or candidate > high
            else candidate
        )
    elif low != -math.inf and (candidate < low or (low_open and candidate <= low)):
        candidate = low + 1
    elif high != math.inf and (candidate > high or (high_open and candidate >= high)):
        candidate = high - 1
    if step:
        step = float(step)
        multiple = math.ceil(candidate / step) * step
        if not low_open and low != -math.inf:
            multiple = max(multiple, math.ceil(low / step) * step)
        candidate = multiple
    return candidate


def _string(node: Mapping[str, Any], seed: str, name: str) -> str:
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        matching = _matching(pattern)
        low, high = int(node.get("minLength") or 0), node.get("maxLength")
        if matching is not None and low <= len(matching) <= (high if high is not None else 1e9):
            return matching
    fmt = node.get("format")
    if fmt == "uuid":
        digest = hashlib.sha256(f"uuid:{seed}".encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    text = f"{name} {hashlib.sha256(seed.encode()).hexdigest()[:8]}".strip()
    low = int(node.get("minLength") or 0)
    high = node.get("maxLength")
    if len(text) < low:
        text += "x" * (low - len(text))
    if high is not None:
        text = text[: int(high)]
    return text


_POOL = "aA0_x-. Z9"
"""Characters tried, in order, for a negated character class (``[^@\\s]``)."""


def _matching(pattern: str) -> str | None:
    """The shortest-repeat string built from ``pattern``'s parse tree, if it matches (JSON
    schema patterns are searched, not anchored); ``None`` for what this cannot build
    (lookarounds, backreferences), which then falls back to plain text."""
    try:
        parser = importlib.import_module("re._parser")  # the stdlib's own regex parser

        text = "".join(_build(parser.parse(pattern)))
        if re.search(pattern, text):
            return text
    except Exception:  # an unusual construct: fall back to plain text
        return None
    return None


def _build(items: Any) -> list[str]:
    c = importlib.import_module("re._constants")

    out: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append(next(ch for ch in _POOL if ord(ch) != arg))
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            out.append(_in_class(arg))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, _high, sub = arg
            out.extend(_build(sub) * low)
        elif op is c.SUBPATTERN:
            out.extend(_build(arg[-1]))
        elif op is getattr(c, "ATOMIC_GROUP", None):
            out.extend(_build(arg))
        elif op is c.BRANCH:
            out.extend(_build(arg[1][0]))
        elif op is c.AT:
            continue
        else:
            raise ValueError(f"unsupported {op}")
    return out


def _in_class(items: Any) -> str:
    c = importlib.import_module("re._constants")

    categories = {
        c.CATEGORY_DIGIT: "0",
        c.CATEGORY_WORD: "a",
        c.CATEGORY_SPACE: " ",
        c.CATEGORY_NOT_DIGIT: "a",
        c.CATEGORY_NOT_WORD: "-",
        c.CATEGORY_NOT_SPACE: "a",
    }
    if items and items[0][0] is c.NEGATE:
        rest = items[1:]
        return next(ch for ch in _POOL if not any(_member(ch, op, arg) for op, arg in rest))
    op, arg = items[0]
    if op is c.LITERAL:
        return chr(arg)
    if op is c.RANGE:
        return chr(arg[0])
    if op is c.CATEGORY and arg in categories:
        return categories[arg]
    raise ValueError(f"unsupported class {op}")


def _member(ch: str, op: Any, arg: Any) -> bool:
    c = importlib.import_module("re._constants")

    if op is c.LITERAL:
        return bool(ord(ch) == arg)
    if op is c.RANGE:
        return bool(arg[0] <= ord(ch) <= arg[1])
    if op is c.CATEGORY:
        word = ch.isalnum() or ch == "_"
        checks = {
            c.CATEGORY_DIGIT: ch.isdigit(),
            c.CATEGORY_WORD: word,
            c.CATEGORY_SPACE: ch.isspace(),
            c.CATEGORY_NOT_DIGIT: not ch.isdigit(),
            c.CATEGORY_NOT_WORD: not word,
            c.CATEGORY_NOT_SPACE: not ch.isspace(),
        }
        return checks.get(arg, True)
    return True
