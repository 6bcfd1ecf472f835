"""Distinct arguments get distinct keys, and secrets never appear in one (issue 11 item 8).

The property: for two values of one argument type, equal key parts imply equal values, where
"equal" is strict (same types all the way down, NaN equal to NaN, secrets compared by their
secret, every model field compared, excluded ones too). And a copy of a value keys the same.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr

from sight_core.cache import Cache, MemoryBackend
from sight_core.cache._keys import render_part


class Query(BaseModel):
    text: str
    api_key: SecretStr
    limit: int = 10


class Audited(BaseModel):
    text: str
    requested_by: str = Field("", exclude=True)


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str


@dataclasses.dataclass(frozen=True)
class Range:
    low: float | None
    high: float | None


def test_models_differing_only_in_a_secret_get_different_keys_without_the_secret() -> None:
    a = Query(text="q", api_key=SecretStr("sk-live-aaaaaaaa"))
    b = Query(text="q", api_key=SecretStr("sk-live-bbbbbbbb"))
    assert render_part(a) != render_part(b)
    assert render_part(a) == render_part(Query(text="q", api_key=SecretStr("sk-live-aaaaaaaa")))

    cache = Cache()
    cache.bind(MemoryBackend())

    @cache.cached(namespace="search")
    async def search(query: Query, token: SecretStr, raw: SecretBytes) -> list[str]:
        return []

    key = search.key(a, SecretStr("tok-123456"), SecretBytes(b"raw-secret"))
    for secret in ("sk-live-aaaaaaaa", "tok-123456", "raw-secret", b"raw-secret".hex()):
        assert secret not in key
    assert key != search.key(a, SecretStr("tok-654321"), SecretBytes(b"raw-secret"))
    assert key != search.key(a, SecretStr("tok-123456"), SecretBytes(b"raw-secreT"))


def test_models_differing_only_in_an_excluded_field_or_an_extra_get_different_keys() -> None:
    assert render_part(Audited(text="q", requested_by="ann")) != render_part(
        Audited(text="q", requested_by="bob")
    )
    assert render_part(Open(text="q", page=1)) != render_part(Open(text="q", page=2))


def test_dataclasses_with_nan_inf_and_none_get_different_keys() -> None:
    values = [math.nan, math.inf, -math.inf, None, 0.0]
    parts = {render_part(Range(v, 1.0)) for v in values}
    assert len(parts) == len(values)


# ---------------------------------------------------------------- the property


def _same(a: Any, b: Any) -> bool:
    """Strict equality: same types all the way down; NaN equals NaN; secrets by value."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, SecretStr | SecretBytes):
        return bool(a.get_secret_value() == b.get_secret_value())
    if isinstance(a, BaseModel):
        return _same(a.__dict__, b.__dict__) and _same(
            a.__pydantic_extra__ or {}, b.__pydantic_extra__ or {}
        )
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# Small domains, so that two draws often come close: a collision would be found.
_floats = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, 1e300]) | st.floats()
_optional_float = st.none() | _floats
_text = st.sampled_from(["", "a", "A", ":", "!n", "!e", "%3A", "a:b", "é", "x" * 70]) | st.text(
    max_size=4
)
_secret = st.builds(SecretStr, _text)
_query = st.builds(Query, text=_text, api_key=_secret, limit=st.integers(0, 3))
_audited = st.builds(Audited, text=_text, requested_by=_text)
_range = st.builds(Range, low=_optional_float, high=_optional_float)
_scalar = st.none() | st.booleans() | st.integers(-3, 3) | _text
TYPES: dict[str, st.SearchStrategy[Any]] = {
    "float | None": _optional_float,
    "str": _text,
    "SecretStr": _secret,
    "Query": _query,
    "Audited": _audited,
    "Range": _range,
    "list[float | None]": st.lists(_optional_float, max_size=3),
    "dict[str, str | int | bool | None]": st.dictionaries(_text, _scalar, max_size=3),
    "tuple[str, bytes]": st.tuples(_text, st.binary(max_size=3)),
    "list[Range]": st.lists(_range, max_size=2),
}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(TYPES)))
def test_distinct_values_of_one_type_get_distinct_keys(data: st.DataObject, kind: str) -> None:
    a = data.draw(TYPES[kind], label="a")
    b = data.draw(TYPES[kind], label="b")
    if render_part(a) == render_part(b):
        assert _same(a, b)
    assert render_part(copy.deepcopy(a)) == render_part(a)  # keys do not depend on identity
