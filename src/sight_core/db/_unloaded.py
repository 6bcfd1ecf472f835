"""A relationship loader that raises :class:`UnloadedRelationError` instead of lazy loading.

SQLAlchemy's ``raiseload`` raises ``InvalidRequestError`` (and an unloaded relation in async code
raises ``MissingGreenlet``). This module registers one more relationship strategy,
``lazy="sight_unloaded"``, a lazy loader that always raises our error, which is an
``AttributeError`` naming ``Model.relation`` and how to load it. It is installed the same way
SQLAlchemy installs ``raiseload``: per query through a loader option (:func:`raise_unloaded`), or
per object for rows the session inserted (:func:`mark_unloaded`).

This leans on two SQLAlchemy internals (the lazy loader class and ``_set_relationship_strategy``);
``tests/db`` pins the behaviour so an upgrade that moves them fails loudly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Load, relationships, strategies
from sqlalchemy.orm.interfaces import LoaderOption
from sqlalchemy.orm.strategy_options import _AbstractLoad, _WildcardLoad

from sight_core.errors import UnloadedRelationError

__all__ = ["STRATEGY", "mark_unloaded", "raise_unloaded", "unloaded_message"]

STRATEGY = "sight_unloaded"
_STRATEGY_KEY = (("lazy", STRATEGY),)


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


def raise_unloaded(option: _AbstractLoad | None = None) -> LoaderOption:
    """Make unloaded relationships raise: of the root entity, or at the end of ``option``."""
    base: Any = option if option is not None else _WildcardLoad()
    attr = "*" if option is not None else "_sa_default"
    result: LoaderOption = base._set_relationship_strategy(attr, dict(_STRATEGY_KEY))
    return result


def chain_raise_options(option: LoaderOption) -> list[LoaderOption]:
    """Raise options for every entity a loader option loads (each prefix of each of its paths)."""
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
