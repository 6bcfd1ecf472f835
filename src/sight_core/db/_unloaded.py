"""Strict sessions: a lazy load is refused with :class:`UnloadedRelationError` instead of N+1.

Built on public SQLAlchemy API only. Sessions from :func:`~sight_core.db.create_sessionmaker`
are of a :class:`~sqlalchemy.orm.Session` subclass whose ``do_orm_execute`` hook looks at every
statement the session runs; when the statement is a lazy load
(``ORMExecuteState.lazy_loaded_from`` is set: an attribute access on one object is about to
send one query for that object), it raises instead, naming the relation
(``ORMExecuteState.loader_strategy_path``) and the declaration that loads it up front. So:

- every query of the session is covered: repository reads, a plain ``select``, objects from
  ``session.get`` in a loop, ``awaitable_attrs``, rows the session inserted;
- nothing is added per loaded row (no loader option, no per-object callable): the check runs
  once per statement the session executes, and a relation that would not send SQL (a
  many-to-one whose target is already in the identity map, a pending object) never reaches it;
- the loads SQLAlchemy makes on its own behalf (collections a ``flush`` needs once the
  ``before_flush`` hooks have run, or a delete cascade needs, ``merge``,
  ``refresh(obj, ["relation"])``) are not N+1 and go through; as with
  ``raiseload(..., sql_only=True)``, only loads triggered by reading an attribute are refused
  (an application's ``before_flush`` hook reading a lazy relation is refused too).

Turn it off for one session with ``sessions(info={"raise_unloaded": False})`` (or
``session.info["raise_unloaded"] = False`` at any time), for all of them with
``create_sessionmaker(engine, info={"raise_unloaded": False})``. A detached object (its session
closed) raises SQLAlchemy's own ``DetachedInstanceError`` instead, which names the attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, RelationshipProperty, Session

from sight_core.errors import UnloadedRelationError

__all__ = ["RAISE_UNLOADED", "StrictSession", "strict_session_class", "unloaded_message"]

#: ``session.info`` key; ``False`` lets that session lazy load as SQLAlchemy does.
RAISE_UNLOADED = "raise_unloaded"


def unloaded_message(prop: RelationshipProperty[Any]) -> str:
    """What went wrong and the declaration that fixes it, for relation ``prop``."""
    model = prop.parent.class_.__name__
    target = f"{model}.{prop.key}"
    loader = "selectinload" if prop.uselist else "joinedload"
    return (
        f"{target} was not loaded, and loading it now would send one query per {model} "
        f"(N+1); this session refuses lazy loads. Load it with the rows that need it: "
        f"declare `load = (..., {loader}({target}))` on the {model} repository (or list "
        f"{target} in it), use eager(<path to {model}>, {target}) when {model} rows come "
        f"through another relation, or add .options({loader}({target})) to the select"
    )


def _refuse_lazy_load(execute: ORMExecuteState) -> None:
    if not execute.is_select or execute.lazy_loaded_from is None:
        return  # not a lazy load: a query the code wrote, or an eager loader's own query
    session = execute.session
    if not session.info.get(RAISE_UNLOADED, True):
        return
    if isinstance(session, StrictSession) and session._sight_own_loads:
        return  # flush, cascade, merge or refresh loading what it needs
    path = execute.loader_strategy_path
    prop = path[-1] if path is not None and len(path) else None
    if not isinstance(prop, RelationshipProperty):  # pragma: no cover - defensive
        raise UnloadedRelationError(
            "a relationship was not loaded and this session refuses lazy loads (N+1)"
        )
    raise UnloadedRelationError(unloaded_message(prop))


class StrictSession(Session):
    """A ``Session`` whose lazy loads raise :class:`UnloadedRelationError` (see module doc).

    Its own operations that load relations to do their job (``flush``, ``delete`` cascades,
    ``merge``, ``refresh``) are let through.
    """

    _sight_own_loads = 0

    @contextmanager
    def _own_loads(self) -> Iterator[None]:
        self._sight_own_loads += 1
        try:
            yield
        finally:
            self._sight_own_loads -= 1

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        # The flush's own loads start after the ``before_flush`` hooks: a hook of the
        # application reading a lazy relation is refused like any other code. Appended now,
        # this listener runs after every hook registered before the flush.
        entered = False

        def own_loads_from_here(*_: Any) -> None:
            nonlocal entered
            if not entered:
                entered = True
                self._sight_own_loads += 1

        event.listen(self, "before_flush", own_loads_from_here)
        try:
            super().flush(objects)
        finally:
            event.remove(self, "before_flush", own_loads_from_here)
            if entered:
                self._sight_own_loads -= 1

    def delete(self, instance: object) -> None:
        with self._own_loads():
            super().delete(instance)

    def delete_all(self, instances: Iterable[object]) -> None:
        with self._own_loads():
            super().delete_all(instances)

    def merge(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        with self._own_loads():
            return super().merge(instance, *args, **kwargs)

    def merge_all(self, instances: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        with self._own_loads():
            return super().merge_all(instances, *args, **kwargs)

    def refresh(self, instance: object, *args: Any, **kwargs: Any) -> None:
        with self._own_loads():
            super().refresh(instance, *args, **kwargs)


event.listen(StrictSession, "do_orm_execute", _refuse_lazy_load)

_STRICT_CLASSES: dict[type[Session], type[Session]] = {Session: StrictSession}


def strict_session_class(base: type[Session]) -> type[Session]:
    """``base`` with the lazy-load guard (``StrictSession`` for a plain ``Session``)."""
    if issubclass(base, StrictSession):
        return base
    found = _STRICT_CLASSES.get(base)
    if found is None:
        found = _STRICT_CLASSES[base] = type(f"Strict{base.__name__}", (StrictSession, base), {})
    return found
