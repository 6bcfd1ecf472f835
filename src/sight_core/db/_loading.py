"""Load plans: the declared relationship loads of a query, normalised and checked once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy.orm import (
    QueryableAttribute,
    RelationshipProperty,
    joinedload,
    selectinload,
)
from sqlalchemy.orm.interfaces import LoaderOption
from sqlalchemy.orm.strategy_options import _AbstractLoad

from sight_core.errors import ConfigurationError

__all__ = ["LoadPlan", "LoadSpec", "eager", "plan_loads"]

#: One entry of ``load=``: a relationship attribute (strategy chosen for you) or a loader option.
LoadSpec: TypeAlias = QueryableAttribute[Any] | LoaderOption


def _relationship(attr: object) -> RelationshipProperty[Any]:
    prop = getattr(attr, "property", None)
    if not isinstance(prop, RelationshipProperty):
        raise ConfigurationError(
            f"{attr!r} is not a relationship attribute; load= takes relationship attributes "
            "(Persona.responses) or loader options (selectinload(Persona.responses))"
        )
    return prop


def eager(*path: QueryableAttribute[Any]) -> _AbstractLoad:
    """Load the relationship ``path`` (``eager(Persona.focus_group, FocusGroup.project)``).

    Each hop uses ``selectinload`` when it is a collection (one extra query per hop, no row
    explosion) and ``joinedload`` when it is a single object (no extra query).
    """
    if not path:
        raise ConfigurationError("eager() needs at least one relationship attribute")
    option: _AbstractLoad | None = None
    for attr in path:
        prop = _relationship(attr)
        if option is None:
            option = selectinload(attr) if prop.uselist else joinedload(attr)
        elif prop.uselist:
            option = option.selectinload(attr)
        else:
            option = option.joinedload(attr)
    assert option is not None
    return option


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Loader options to apply to a query, and whether its rows need ``unique()``.

    ``unique`` is set when a collection is joined-eager-loaded (its parent rows repeat).
    Relations outside the plan are not guarded here: the session refuses their lazy loads
    (see ``_unloaded``), whatever query loaded the object.
    """

    options: tuple[LoaderOption, ...]
    unique: bool


def _joined_collections(option: LoaderOption) -> list[str]:
    found: list[str] = []
    for element in getattr(option, "context", ()):
        strategy = dict(getattr(element, "strategy", None) or ())
        if strategy.get("lazy") not in ("joined", False):
            continue
        props = element.path.path[1::2]  # (mapper, prop, mapper, prop, mapper, ...)
        prop = props[-1] if props else None
        if isinstance(prop, RelationshipProperty) and prop.uselist:
            found.append(f"{prop.parent.class_.__name__}.{prop.key}")
    return found


def plan_loads(model: type[Any], specs: Sequence[LoadSpec]) -> LoadPlan:
    """Normalise ``specs`` into a :class:`LoadPlan` for queries on ``model``.

    Raises:
        ConfigurationError: an entry is neither a relationship attribute nor a loader option, or
            two collections would be joined-eager-loaded in one query (rows multiply: 200
            personas x 5 responses x 4 tags = 4,000 rows); use ``selectinload`` for one of them.
    """
    if isinstance(specs, QueryableAttribute | LoaderOption):
        specs = (specs,)
    options: list[LoaderOption] = []
    joined: list[str] = []
    for spec in specs:
        if isinstance(spec, QueryableAttribute):
            option: LoaderOption = eager(spec)
        elif isinstance(spec, LoaderOption):
            option = spec
        else:
            raise ConfigurationError(
                f"load= entries must be relationship attributes or loader options, got {spec!r}"
            )
        options.append(option)
        joined += _joined_collections(option)
    if len(joined) > 1:
        raise ConfigurationError(
            f"refusing to joinedload {len(joined)} collections in one query "
            f"({', '.join(joined)}): the rows multiply; load collections with selectinload "
            "(or list the attribute and the repository picks selectinload)"
        )
    return LoadPlan(tuple(options), bool(joined))
