"""Key format, template validation and collision-freedom of the canonical rendering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sight_core.cache import Cache, MemoryBackend
from sight_core.cache._keys import KeyRenderer, render_part, tag_name
from sight_core.errors import ConfigurationError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Filter(BaseModel):
    q: str
    limit: int


@dataclasses.dataclass
class Window:
    start: int
    end: int


def _cache() -> Cache:
    c = Cache(prefix="sight")
    c.bind(MemoryBackend())
    return c


def test_key_format_is_prefix_version_namespace_rendered() -> None:
    cache = _cache()

    @cache.cached(namespace="persona", version=2, key="{persona_id}:project:{project_id}")
    async def get_persona(persona_id: UUID, project_id: UUID) -> dict[str, Any]:
        return {}

    a, b = uuid4(), uuid4()
    assert get_persona.key(persona_id=a, project_id=b) == f"sight:v2:persona:{a}:project:{b}"
    assert get_persona.key(a, b) == f"sight:v2:persona:{a}:project:{b}"


def test_default_key_uses_every_argument_in_order_and_defaults() -> None:
    cache = _cache()

    @cache.cached(namespace="n")
    async def f(a: int, b: str = "x", *, c: bool = False) -> int:
        return 1

    assert f.key(1) == "sight:v1:n:1:x:!f"
    assert f.key(1, "y", c=True) == "sight:v1:n:1:y:!t"
    assert f.key(b="x", a=1) == f.key(1)


def test_template_naming_a_missing_argument_fails_at_decoration() -> None:
    cache = _cache()
    with pytest.raises(ConfigurationError) as info:

        @cache.cached(namespace="persona", key="{persona_id}:project:{project}")
        async def get_persona(persona_id: UUID, project_id: UUID) -> None: ...

    message = str(info.value)
    assert "'project'" in message
    assert "get_persona" in message


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{a}{b}", "separate"),
        ("{a!r}", "conversions"),
        ("{a:>5}", "format specs"),
        ("a b:{a}", "whitespace"),
        ("{a", "template"),
    ],
)
def test_ambiguous_or_malformed_templates_are_rejected(template: str, fragment: str) -> None:
    cache = _cache()
    with pytest.raises(ConfigurationError, match=fragment):

        @cache.cached(namespace="n", key=template)
        async def f(a: int, b: int) -> None: ...


@pytest.mark.parametrize("bad", ["", "has space", "a:b", "ä"])
def test_namespace_and_prefix_are_validated(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        Cache(prefix=bad)
    cache = _cache()
    with pytest.raises(ConfigurationError):
        cache.cached(namespace=bad)


def test_methods_default_key_includes_the_instance_cache_key() -> None:
    cache = _cache()

    class Service:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        def __cache_key__(self) -> str:
            return self.tenant

        @cache.cached(namespace="svc")
        async def get(self, item_id: int) -> int:
            return item_id

    assert Service("a").get.key(5) == "sight:v1:svc:!oService=a:5"
    assert Service("a").get.key(5) != Service("b").get.key(5)


def test_parts_for_supported_types_are_stable_and_colon_free() -> None:
    u = UUID("12345678-1234-5678-1234-567812345678")
    samples: list[Any] = [
        "plain",
        "with:colon",
        "x" * 200,
        42,
        -1,
        1.5,
        True,
        None,
        u,
        Color.RED,
        dt.date(2024, 1, 2),
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        Decimal("1.10"),
        b"\x00\x01",
        [1, "a"],
        (1, 2),
        {"b": 1, "a": 2},
        {3, 1, 2},
        Filter(q="x", limit=3),
        Window(1, 2),
    ]
    for value in samples:
        part = render_part(value)
        assert ":" not in part
        assert part == render_part(value)
        assert len(part) <= 64
    assert render_part(u) == str(u)
    assert render_part("with:colon") == "with%3Acolon"
    assert render_part({"b": 1, "a": 2}) == render_part({"a": 2, "b": 1})
    assert render_part("x" * 200).startswith("#")


def test_unsupported_argument_type_names_the_argument() -> None:
    cache = _cache()

    @cache.cached(namespace="n")
    async def f(conn: object) -> int:
        return 1

    with pytest.raises(ConfigurationError, match="'conn'"):
        f.key(object())


_TRICKY = ":%!#[]{},=~ab1"
_kinds = [
    st.text(max_size=80),
    st.text(alphabet=_TRICKY, max_size=8),
    st.integers(),
    st.uuids(),
    st.dates(),
    st.floats(allow_nan=False),
    st.none() | st.integers(),
    st.lists(st.text(alphabet=_TRICKY, max_size=4), max_size=4),
    st.dictionaries(st.text(alphabet=_TRICKY, max_size=3), st.integers(-3, 3), max_size=3),
    st.lists(st.lists(st.integers(0, 2), max_size=2), max_size=3),
]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_different_argument_tuples_never_share_a_key(data: st.DataObject) -> None:
    def f(x: Any, y: Any, z: Any) -> None: ...

    kinds = [data.draw(st.sampled_from(_kinds)) for _ in range(3)]
    a = tuple(data.draw(k) for k in kinds)
    b = tuple(data.draw(k) for k in kinds)
    if a == b:
        return
    default = KeyRenderer(f, None)
    template = KeyRenderer(f, "{x}:t:{y}:{z}")
    assert default.render(a, {}) != default.render(b, {})
    assert template.render(a, {}) != template.render(b, {})
    assert default.compile("p:")(a, {}) == "p:" + default.render(a, {})


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_strings_never_collide(a: str, b: str) -> None:
    if a != b:
        assert render_part(a) != render_part(b)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_tag_names_are_distinct_and_never_patterns(a: str, b: str) -> None:
    """The one form a tag takes in key names: no glob character, brace (a Cluster hash tag)
    or whitespace, and two tags never share it."""
    for tag in (a, b):
        assert not set(tag_name(tag)) & set("*?[]{}\\ \t\n\r")
    if a != b:
        assert tag_name(a) != tag_name(b)


def test_var_positional_calls_never_share_a_key() -> None:
    cache = _cache()

    @cache.cached(namespace="n")
    async def f(a: int, *rest: Any) -> int:
        return 1

    # f(1, [2, 3]) has rest == ([2, 3],); f(1, 2, 3) has rest == (2, 3).
    assert f._render((1, [2, 3]), {}) != f._render((1, 2, 3), {})
    assert f._render((1, 2), {}) == f._render((1, 2), {}) != f._render((1, [2]), {})


def test_one_tag_given_as_a_string_is_refused() -> None:
    cache = _cache()
    with pytest.raises(ConfigurationError, match="tuple"):
        cache.cached(namespace="n", tags="project:{p}")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="tuple"):
        cache.cached_many(namespace="n", tags="project:{p}")  # type: ignore[arg-type]
