"""Unloaded relationships raise :class:`UnloadedRelationError` instead of lazy loading.

SQLAlchemy's ``raiseload`` raises ``InvalidRequestError`` (and an unloaded relation in async code
raises ``MissingGreenlet``). This module registers one more relationship strategy,
``lazy="sight_unloaded"``, a lazy loader that always raises our error, which is an
``AttributeError`` naming ``Model.relation`` and how to load it. It reaches objects three ways:

- :data:`GUARD`, a loader option that costs nothing per row: SQLAlchemy records it on every
  object the query (and its selectin sub-queries) creates (``state.load_options``), and
  :func:`guard_relationships` wraps, once per mapped class, each relationship's class-level lazy
  loader so that on an object carrying :data:`GUARD` it runs the raising strategy instead;
- per query, a loader option (:func:`raise_unloaded`, :func:`chain_raise_options`) setting the
  raising strategy on every loaded row, as ``raiseload`` does: needed where the model eager-loads
  a relationship by default and for objects the session already held (they keep the options of
  the query that created them);
- per object, for rows the session inserted (:func:`mark_unloaded`).

This leans on SQLAlchemy internals (the lazy loader class, ``_set_relationship_strategy``,
``AttributeImpl.callable_``, ``InstanceState.load_options``); ``tests/db`` pins the behaviour so
an upgrade that moves them fails loudly.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Load, Mapper, relationships, strategies
from sqlalchemy.orm.base import LoaderCallableStatus
from sqlalchemy.orm.interfaces import LoaderOption, UserDefinedOption
from sqlalchemy.orm.strategy_options import _AbstractLoad, _WildcardLoad
from sqlalchemy.sql.cache_key import HasCacheKey

from sight_core.errors import UnloadedRelationError

__all__ = [
    "GUARD",
    "STRATEGY",
    "chain_raise_options",
    "eager_by_default",
    "guard_relationships",
    "mark_unloaded",
    "raise_unloaded",
    "unloaded_message",
]

STRATEGY = "sight_unloaded"
_STRATEGY_KEY = (("lazy", STRATEGY),)

#: Class-level strategies that load at query time (so a query must override them).
_EAGER = frozenset({"joined", "selectin", "subquery", "immediate", False})
#: Relationships without a lazy loader to guard (they return a query object).
_UNGUARDED = frozenset({"dynamic", "write_only"})


def unloaded_message(model: str, relation: str, uselist: bool) -> str:
    loader = "selectinload" if uselist else "joinedload"
    return (
        f"{model}.{relation} was not loaded by this query and lazy loading is disabled; "
        f"declare it: load=({loader}({model}.{relation}),) on the repository or per call, "
        f"or eager(<path>, {model}.{relation}) when {model} rows come through another relation"
    )


@relationships.RelationshipProperty.strategy_for(lazy=STRATEGY)
class _UnloadedRelationLoader(strategies._LazyLoader):
    """``lazy="raise"`` with a useful error: never emits SQL, never returns a stale value."""

    __slots__ = ()

    def __init__(self, parent: Any, strategy_key: Any) -> None:
        super().__init__(parent, strategy_key)
        self._raise_always = True

    def _invoke_raise_load(self, state: Any, passive: Any, lazy: Any) -> None:
        prop = self.parent_property
        raise UnloadedRelationError(
            unloaded_message(state.class_.__name__, prop.key, bool(prop.uselist))
        )


class _Guard(HasCacheKey, UserDefinedOption):
    """Marks the objects a repository read creates; part of the statement's cache key."""

    __slots__ = ()
    propagate_to_loaders = True  # recorded on each loaded object's state.load_options
    _cache_key_traversal: Any = ()  # no attributes: one constant key
    inherit_cache = True

    def __repr__(self) -> str:
        return "GUARD"


#: The loader option that makes a query's objects raise on unloaded relationships.
GUARD: LoaderOption = _Guard()  # type: ignore[assignment]

_GUARDED: weakref.WeakSet[Mapper[Any]] = weakref.WeakSet()


def _guarded_loader(original: Any, prop: Any) -> Any:
    raising = prop._get_strategy(_STRATEGY_KEY)

    def load(state: Any, passive: Any) -> Any:
        options = state.load_options
        if options and any(option is GUARD for option in options):
            return raising._load_for_state(state, passive)
        if original is None:  # lazy="noload": nothing to load
            return LoaderCallableStatus.ATTR_EMPTY
        return original(state, passive)

    load._sight_guard = True  # type: ignore[attr-defined]
    return load


def guard_relationships(model: type[Any]) -> None:
    """Wrap the class-level lazy loaders of ``model`` and every class it relates to (once).

    An object that does not carry :data:`GUARD` keeps SQLAlchemy's behaviour; the wrapper costs
    one tuple membership test when an unloaded relationship is touched, nothing per loaded row.
    """
    todo: list[Mapper[Any]] = [inspect(model)]
    while todo:
        mapper = todo.pop()
        if mapper in _GUARDED:
            continue
        _GUARDED.add(mapper)
        todo.extend(mapper.self_and_descendants)
        for prop in mapper.relationships:
            todo.append(prop.mapper)
            if prop.lazy in _UNGUARDED:
                continue
            impl: Any = mapper.class_manager[prop.key].impl
            if not getattr(impl.callable_, "_sight_guard", False):
                impl.callable_ = _guarded_loader(impl.callable_, prop)


def eager_by_default(mapper: Mapper[Any]) -> bool:
    """Whether ``mapper`` has a relationship its model loads eagerly unless told otherwise."""
    return any(prop.lazy in _EAGER for prop in mapper.relationships)


def raise_unloaded(option: _AbstractLoad | None = None) -> LoaderOption:
    """Make unloaded relationships raise: of the root entity, or at the end of ``option``."""
    base: Any = option if option is not None else _WildcardLoad()
    attr = "*" if option is not None else "_sa_default"
    result: LoaderOption = base._set_relationship_strategy(attr, dict(_STRATEGY_KEY))
    return result


def chain_raise_options(option: LoaderOption, *, only_eager: bool = False) -> list[LoaderOption]:
    """Raise options for every entity a loader option loads (each prefix of each of its paths).

    With ``only_eager``, only for entities whose model eager-loads some relationship by default.
    """
    context = getattr(option, "context", ())
    out: list[LoaderOption] = []
    seen: set[tuple[Any, ...]] = set()
    for element in context:
        path = getattr(element, "path", None)
        if path is None:
            continue
        props = [p for p in path.path[1::2] if isinstance(p, relationships.RelationshipProperty)]
        for end in range(1, len(props) + 1):
            chain = tuple(props[:end])
            if chain in seen:
                continue
            seen.add(chain)
            if only_eager and not eager_by_default(chain[-1].mapper):
                continue
            load: _AbstractLoad = Load(chain[0].parent.class_)
            for prop in chain:
                load = load.defaultload(prop.class_attribute)
            out.append(raise_unloaded(load))
    return out


def mark_unloaded(obj: object) -> None:
    """Make every relationship of ``obj`` that holds no value raise on access (no lazy load)."""
    state: Any = inspect(obj)
    mapper = state.mapper
    callables = state.__dict__.get("callables")
    for prop in mapper.relationships:
        key = prop.key
        if key in state.dict:
            continue
        strategy = prop._get_strategy(_STRATEGY_KEY)
        if callables is None:
            callables = state.callables = {}
        lazy_attribute: Any = strategies._LoadLazyAttribute
        callables[key] = lazy_attribute(key, strategy, None, None)
