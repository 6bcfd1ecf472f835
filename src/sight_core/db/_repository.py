"""``Repository[Model]``: loads declared once, everything else raises, bulk writes in chunks."""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    TypeVar,
    cast,
    get_args,
    get_origin,
    overload,
)

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import MANYTOONE, Mapper, QueryableAttribute
from sqlalchemy.sql import Select

from sight_core.errors import ConfigurationError, NotFoundError

from ._cursor import KeysetOrder
from ._errors import write_savepoint
from ._loader import RepositoryLoader
from ._loading import LoadPlan, LoadSpec, plan_loads
from ._unnest import UnnestInsert, plan_unnest
from ._vector import (
    HybridHit,
    IterativeScan,
    Neighbor,
    TextSearch,
    VectorIndex,
    hybrid_statement,
    nearest_statement,
    search_settings,
    set_local,
)

__all__ = ["MAX_PARAMETERS", "Page", "Repository"]

ModelT = TypeVar("ModelT")

#: PostgreSQL's limit on bind parameters in one statement (a 16-bit count).
MAX_PARAMETERS = 32767

#: What an ``int`` key given as ``str`` must look like: optional sign, ASCII digits only.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")

#: Plans of per-call ``load=`` values, so a repeated ``load=(...)`` is normalised once.
_PLANS: dict[tuple[Any, ...], LoadPlan] = {}


@dataclass(frozen=True, slots=True)
class Page(Generic[ModelT]):
    """One keyset page: ``items`` and the cursor of the next page (``None`` on the last one)."""

    items: builtins.list[ModelT]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        """Whether another page follows (``next_cursor`` is set)."""
        return self.next_cursor is not None


@dataclass(frozen=True, slots=True)
class _Meta:
    mapper: Mapper[Any]
    pk: Any  # the primary-key Column
    pk_attr: str
    columns: frozenset[str]  # column attribute names
    column_keys: dict[str, str]  # attribute name -> Column.key
    relationships: frozenset[str]
    pk_type: type[uuid.UUID] | type[int] | None  # what a str id is coerced to


class Repository(Generic[ModelT]):
    """Data access for one mapped model over one ``AsyncSession``; it cannot N+1.

    Subclass with the model and the relationships every read loads::

        class PersonaRepository(Repository[Persona]):
            load = (Persona.project, Persona.responses)   # joinedload / selectinload chosen

    Every read applies ``load`` (or the call's ``load=``, which replaces it). Entries of
    ``load`` are relationship attributes (collections get ``selectinload``, single objects
    ``joinedload``), :func:`eager` paths, or any SQLAlchemy loader option. Joining two
    collections in one query is refused (``ConfigurationError``). Relationships the model
    itself loads eagerly (``lazy="selectin"`` / ``"joined"``) load as the model says.

    Every other relationship raises :class:`~sight_core.errors.UnloadedRelationError` when
    touched (no lazy query, no ``MissingGreenlet``) on sessions from
    :func:`~sight_core.db.create_sessionmaker`: the guard belongs to the session, so it also
    covers objects of plain queries, and costs nothing per loaded row. On a session made
    elsewhere SQLAlchemy's own lazy loading applies.

    Query cost of a read: 1, plus 1 per ``selectinload`` hop (per 500 parents). Each write call
    runs in a SAVEPOINT (two more statements; ``write_savepoints = False`` turns it off): when it
    fails it is undone as a whole, its integrity error is translated to
    :class:`~sight_core.errors.DuplicateError` / :class:`~sight_core.errors.ForeignKeyError`,
    and the session goes on with the earlier work of its transaction kept. The model needs a
    single-column primary key. A repository, like its session, belongs to one task at a time.
    """

    model: ClassVar[type[Any]]
    load: ClassVar[Sequence[LoadSpec]] = ()
    #: Rows per statement of :meth:`add_many`'s ``unnest`` form (bounds client memory per chunk).
    insert_chunk_rows: ClassVar[int] = 5_000
    #: Run each write call in a SAVEPOINT so a failed write leaves the session usable (two
    #: statements per call). Set ``False`` on repositories used where any failed write fails
    #: the whole unit of work (a request handler that rolls back on error): errors are still
    #: translated, and the transaction must then be rolled back.
    write_savepoints: ClassVar[bool] = True
    #: How :meth:`nearest` and :meth:`hybrid` search (and the index DDL to create with it).
    vector_index: ClassVar[VectorIndex | None] = None
    #: The full-text side of :meth:`hybrid`.
    text_search: ClassVar[TextSearch | None] = None

    _plan: ClassVar[LoadPlan | None] = None
    _meta_cache: ClassVar[_Meta | None] = None
    _unnest_cache: ClassVar[dict[tuple[str, ...], UnnestInsert | None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plan = None
        cls._meta_cache = None
        for base in getattr(cls, "__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Repository):
                args = get_args(base)
                if args and isinstance(args[0], type):
                    cls.model = args[0]

    def __init__(self, session: AsyncSession) -> None:
        if not hasattr(type(self), "model"):
            raise ConfigurationError(
                f"{type(self).__name__} has no model: subclass Repository[YourModel]"
            )
        self.session = session

    # -- configuration ---------------------------------------------------------------------

    @classmethod
    def _meta(cls) -> _Meta:
        meta = cls._meta_cache
        if meta is None:
            mapper: Mapper[Any] = sa_inspect(cls.model)
            if len(mapper.primary_key) != 1:
                raise ConfigurationError(
                    f"{cls.__name__}: {cls.model.__name__} has a composite primary key; "
                    "Repository needs a single-column primary key"
                )
            pk = mapper.primary_key[0]
            meta = _Meta(
                mapper,
                pk,
                mapper.get_property_by_column(pk).key,
                frozenset(p.key for p in mapper.column_attrs),
                {p.key: p.columns[0].key for p in mapper.column_attrs},
                frozenset(p.key for p in mapper.relationships),
                _coercible_type(pk),
            )
            cls._meta_cache = meta
        return meta

    @classmethod
    def _declared_plan(cls) -> LoadPlan:
        plan = cls._plan
        if plan is None:
            plan = cls._plan = plan_loads(cls.model, cls.load)
        return plan

    def _plan_for(self, load: Sequence[LoadSpec] | None) -> LoadPlan:
        if load is None:
            return self._declared_plan()
        try:
            key = (self.model, tuple(load))
            plan = _PLANS.get(key)
        except TypeError:  # an unhashable entry: plan it every time
            return plan_loads(self.model, load)
        if plan is None:
            plan = plan_loads(self.model, load)
            if len(_PLANS) >= 512:
                _PLANS.clear()
            _PLANS[key] = plan
        return plan

    def _select(self, plan: LoadPlan, where: Iterable[Any] = ()) -> Select[Any]:
        return select(self.model).where(*where).options(*plan.options)

    async def _all(self, stmt: Select[Any], plan: LoadPlan) -> builtins.list[ModelT]:
        result = await self.session.scalars(stmt)
        if plan.unique:
            result = result.unique()
        return cast(builtins.list[ModelT], result.all())

    def _coerce_id(self, ident: Any) -> Any:
        """``ident`` as the primary key's Python type: a ``str`` becomes a ``UUID`` or ``int``.

        Raises:
            ValueError: the string is not one; names the model and the value.
        """
        if not isinstance(ident, str):
            return ident
        kind = self._meta().pk_type
        if kind is None:
            return ident
        try:
            if kind is int and not _INT_TEXT.fullmatch(ident):
                raise ValueError(ident)  # int() also reads "1_000", " 7 " and non-ASCII digits
            return kind(ident)
        except ValueError:
            raise ValueError(
                f"{self.model.__name__} id {ident!r} is not a valid {kind.__name__}"
            ) from None

    def _ids_param(self, ids: Sequence[Any]) -> Any:
        pk = self._meta().pk
        return pk == any_(bindparam("sight_ids", builtins.list(ids), type_=ARRAY(pk.type)))

    # -- reads -----------------------------------------------------------------------------

    async def get(self, ident: Any, *, load: Sequence[LoadSpec] | None = None) -> ModelT:
        """The row with primary key ``ident``. One query (+ selectin hops).

        An id given as ``str`` is converted to the key's type (``UUID``, ``int``) first, the same
        in every method that takes ids (``get_many``, loaders, ``update``, ``delete_many``).

        Raises:
            NotFoundError: no such row; names the model and the id.
            ValueError: a ``str`` id that is not a valid key (``"nope"`` for a UUID key).
        """
        found = await self.get_or_none(ident, load=load)
        if found is None:
            raise NotFoundError(self.model.__name__, ident)
        return found

    async def get_or_none(
        self, ident: Any, *, load: Sequence[LoadSpec] | None = None
    ) -> ModelT | None:
        """The row with primary key ``ident``, or ``None``. One query (+ selectin hops)."""
        plan = self._plan_for(load)
        where = (self._meta().pk == self._coerce_id(ident),)
        rows = await self._all(self._select(plan, where), plan)
        return rows[0] if rows else None

    @overload
    async def get_many(
        self,
        ids: Iterable[Any],
        *,
        missing: Literal["raise"] = "raise",
        load: Sequence[LoadSpec] | None = None,
    ) -> builtins.list[ModelT]: ...

    @overload
    async def get_many(
        self,
        ids: Iterable[Any],
        *,
        missing: Literal["none"],
        load: Sequence[LoadSpec] | None = None,
    ) -> builtins.list[ModelT | None]: ...

    async def get_many(
        self,
        ids: Iterable[Any],
        *,
        missing: Literal["raise", "none"] = "raise",
        load: Sequence[LoadSpec] | None = None,
    ) -> builtins.list[ModelT] | builtins.list[ModelT | None]:
        """The rows with these primary keys, one per id, in the order asked. One query.

        The ids travel as one array parameter (``id = ANY($1)``), so any number fits.
        A repeated id yields the same object at each position. With ``missing="raise"``
        (default) an absent id raises :class:`NotFoundError` whose ``ident`` is the tuple of
        every missing id, in the order asked; with ``missing="none"`` its slot is ``None``.
        """
        wanted = [self._coerce_id(i) for i in ids]
        if not wanted:
            return []
        plan = self._plan_for(load)
        rows = await self._all(self._select(plan, (self._ids_param(wanted),)), plan)
        pk_attr = self._meta().pk_attr
        by_id = {getattr(row, pk_attr): row for row in rows}
        ordered = [by_id.get(i) for i in wanted]
        if missing == "none":
            return ordered
        absent = tuple(
            dict.fromkeys(i for i, row in zip(wanted, ordered, strict=True) if row is None)
        )
        if absent:
            error = NotFoundError(self.model.__name__, absent)
            error.add_note(f"{len(absent)} of {len(set(wanted))} ids not found")
            raise error
        return cast(builtins.list[ModelT], ordered)

    async def list(
        self,
        *where: ColumnElement[bool],
        order_by: Any = None,
        limit: int | None = None,
        offset: int | None = None,
        load: Sequence[LoadSpec] | None = None,
    ) -> builtins.list[ModelT]:
        """Rows matching ``where`` (ANDed). One query (+ selectin hops), whatever the row count.

        ``order_by`` is one expression or a sequence. For deep listings prefer :meth:`page`:
        ``offset`` rescans the skipped rows and shifts when rows are inserted meanwhile.
        """
        plan = self._plan_for(load)
        stmt = self._select(plan, where)
        if order_by is not None:
            stmt = stmt.order_by(*_as_sequence(order_by))
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset is not None:
            stmt = stmt.offset(offset)
        return await self._all(stmt, plan)

    async def page(
        self,
        *where: ColumnElement[bool],
        after: str | None = None,
        limit: int = 50,
        order_by: Any = (),
        load: Sequence[LoadSpec] | None = None,
    ) -> Page[ModelT]:
        """One keyset page: rows after the cursor ``after``, ``limit`` of them. One query.

        Ordered by ``order_by`` (NOT NULL columns of the model, ``.desc()`` allowed) and then the
        primary key. Rows inserted while a client pages never make another row repeat or vanish
        (unlike ``offset``). The cursor is opaque (base64 JSON) and tied to the model and
        ordering; a foreign or damaged cursor raises ``ConfigurationError``.
        """
        if limit < 1:
            raise ConfigurationError(f"page(limit=...) must be >= 1, got {limit}")
        order = KeysetOrder(self._meta().mapper, _as_sequence(order_by))
        plan = self._plan_for(load)
        conditions = builtins.list(where)
        if after is not None:
            conditions.append(order.after(order.decode(after)))
        stmt = self._select(plan, conditions).order_by(*order.order_by()).limit(limit + 1)
        rows = await self._all(stmt, plan)
        if len(rows) > limit:
            rows = rows[:limit]
            return Page(rows, order.cursor_for(rows[-1]))
        return Page(rows, None)

    async def count(self, *where: ColumnElement[bool]) -> int:
        """How many rows match ``where``. One ``SELECT count(*)``; loads no object."""
        stmt = select(func.count()).select_from(self.model).where(*where)
        return int((await self.session.execute(stmt)).scalar_one())

    async def exists(self, *where: ColumnElement[bool]) -> bool:
        """Whether any row matches ``where``. One ``SELECT EXISTS``; loads no object."""
        stmt = select(exists().where(*where).select_from(self.model))
        return bool((await self.session.execute(stmt)).scalar_one())

    # -- writes ----------------------------------------------------------------------------

    async def add(self, obj: ModelT) -> ModelT:
        """Insert ``obj`` now (flush). Its unset relationships raise when touched. One INSERT.

        Raises:
            DuplicateError / ForeignKeyError: naming the violated constraint.
        """
        async with write_savepoint(self.session, enabled=self.write_savepoints):
            self.session.add(obj)
            await self.session.flush()
        return obj

    def _rows(self, rows: Iterable[ModelT | Mapping[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Rows as dicts of column attributes; each distinct set of keys is validated once.

        Plain ``dict`` rows are passed through as they are (never mutated).
        """
        return self._rows_and_shapes(rows)[0]

    def _rows_and_shapes(
        self, rows: Iterable[ModelT | Mapping[str, Any]]
    ) -> tuple[builtins.list[dict[str, Any]], set[tuple[str, ...]]]:
        """:meth:`_rows` and the distinct key tuples of the rows."""
        meta = self._meta()
        checked: set[tuple[str, ...]] = set()
        out: builtins.list[dict[str, Any]] = []
        append = out.append
        for row in rows:
            if type(row) is dict:
                values: dict[str, Any] = row
            elif isinstance(row, Mapping):
                values = dict(row)
            elif isinstance(row, self.model):
                values = {}
                for k, v in vars(row).items():
                    if k in meta.columns:
                        values[k] = v
                    elif k in meta.relationships and v is not None and v != []:
                        raise self._relationship_set(k)
            else:
                raise TypeError(
                    f"expected {self.model.__name__} or a mapping, got {type(row).__name__}"
                )
            shape = tuple(values)
            if shape not in checked:
                unknown = set(shape) - meta.columns
                if unknown:
                    raise ConfigurationError(
                        f"{self.model.__name__} has no column(s) {sorted(unknown)}"
                        + _relationship_hint(unknown & meta.relationships)
                    )
                checked.add(shape)
            append(values)
        return out, checked

    def _relationship_set(self, name: str) -> ConfigurationError:
        """The error for an instance whose relationship ``name`` is set: bulk writes skip them."""
        mapper = self._meta().mapper
        prop = mapper.relationships[name]
        if prop.direction is MANYTOONE:
            keys = sorted(mapper.get_property_by_column(c).key for c in prop.local_columns)
            fix = f"set {', '.join(keys)} instead"
        else:
            fix = "write those rows through their own repository"
        return ConfigurationError(
            f"{self.model.__name__}.{name} is set on an instance given to a bulk write, which "
            f"writes column values only and would not store the relationship: {fix} "
            "(or use add() for one object graph)"
        )

    def _page_size(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Rows per ``INSERT``: all of them, cut by SQLAlchemy's parameter budget per statement.

        SQLAlchemy's "insertmanyvalues" fills each multi-row statement up to the dialect's
        ``insertmanyvalues_max_parameters`` (32,700 for asyncpg, under PostgreSQL's 32,767).
        """
        dialect = self.session.get_bind().dialect
        budget = getattr(dialect, "insertmanyvalues_max_parameters", MAX_PARAMETERS)
        if budget > MAX_PARAMETERS:  # never above what the server accepts
            width = max(len(self._meta().columns), 1)
            return max(1, MAX_PARAMETERS // width)
        return max(1, len(rows))

    async def add_many(self, rows: Iterable[ModelT | Mapping[str, Any]]) -> builtins.list[Any]:
        """Insert many rows; return their primary keys in input order.

        One multi-row ``INSERT ... RETURNING <pk>`` per chunk (and per distinct set of columns
        the rows give; a row missing a column gets that column's default). When the primary key
        is known before the insert (given, or a Python default such as ``uuid.uuid4``), that is
        ``INSERT ... SELECT FROM unnest($1::type[], ...)``: one array parameter per column,
        :attr:`insert_chunk_rows` rows per statement (10,000 rows: 2 statements), the statement
        prepared once whatever the row count. Otherwise (a server-generated key, a column whose
        type is not a plain scalar: JSON, ARRAY, pgvector, a ``TypeDecorator``...; a
        SQL-expression or context-dependent default) it is ``INSERT ... VALUES (...), (...)``
        holding as many rows as fit in 32,700 bind parameters (PostgreSQL's limit is 32,767).
        Either way the stored rows are those SQLAlchemy's ``insert(Model)`` stores (a
        differential property test holds every column type to it). ``rows`` are mappings of
        attribute names or model instances (their set columns are used); column defaults apply,
        ORM events (``@validates``, ``before_insert``) do not. A relationship is never written:
        naming one, or passing an instance with one set (``Persona(segment=seg)``), raises
        ``ConfigurationError`` telling which key column to set. No ORM object is
        built: that costs more than the insert itself (see ``docs/db-loading.md``); load them
        with :meth:`get_many` when you need them.

        Raises:
            DuplicateError / ForeignKeyError: naming the violated constraint.
        """
        given, shapes = self._rows_and_shapes(rows)
        values = self._column_rows(given)
        if not values:
            return []
        async with write_savepoint(self.session, enabled=self.write_savepoints):
            return await self._insert_shapes(values, len(shapes))

    async def _insert_shapes(
        self, values: builtins.list[dict[str, Any]], shapes: int
    ) -> builtins.list[Any]:
        if shapes <= 1:
            return await self._insert_same_shape(values)
        # Rows of different shapes: one insert per shape (a row missing a column gets that
        # column's default, as when inserted alone), ids put back in input order.
        groups: dict[tuple[str, ...], builtins.list[int]] = {}
        for i, row in enumerate(values):
            groups.setdefault(tuple(row), []).append(i)
        ids: builtins.list[Any] = [None] * len(values)
        for positions in groups.values():
            made = await self._insert_same_shape([values[i] for i in positions])
            for i, ident in zip(positions, made, strict=True):
                ids[i] = ident
        return ids

    async def _insert_same_shape(self, values: builtins.list[dict[str, Any]]) -> builtins.list[Any]:
        if not values:
            return []
        unnest = self._unnest(tuple(values[0]))
        if unnest is not None:
            return await self._add_unnest(unnest, values)
        meta = self._meta()
        stmt = (
            insert(meta.pk.table)
            .returning(meta.pk, sort_by_parameter_order=True)
            .execution_options(insertmanyvalues_page_size=self._page_size(values))
        )
        result = await self.session.execute(stmt, values)
        return builtins.list(result.scalars().all())

    @classmethod
    def _unnest(cls, shape: tuple[str, ...]) -> UnnestInsert | None:
        cache = cls.__dict__.get("_unnest_cache")
        if cache is None:
            cache = {}
            cls._unnest_cache = cache
        if shape not in cache:
            meta = cls._meta()
            cache[shape] = plan_unnest(meta.pk.table, meta.pk, shape)
        found: UnnestInsert | None = cache[shape]
        return found

    async def _add_unnest(
        self, unnest: UnnestInsert, values: builtins.list[dict[str, Any]]
    ) -> builtins.list[Any]:
        size = max(1, self.insert_chunk_rows)
        ids: builtins.list[Any] = []
        for start in range(0, len(values), size):
            params = unnest.parameters(values[start : start + size])
            sent = params[f"u_{unnest.pk_index}"]
            result = await self.session.execute(unnest.statement, params)
            returned = builtins.list(result.scalars().all())
            if returned != sent:  # RETURNING order is not promised: restore input order
                position = {key: i for i, key in enumerate(sent)}
                returned.sort(key=position.__getitem__)
            ids += returned
        return ids

    def _column_rows(self, rows: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Rows keyed by column key instead of attribute name (they differ when renamed)."""
        keys = self._meta().column_keys
        if all(keys.get(k, k) == k for k in keys):
            return rows
        return [{keys[k]: v for k, v in row.items()} for row in rows]

    async def upsert_many(
        self,
        rows: Iterable[ModelT | Mapping[str, Any]],
        *,
        on: Sequence[str | QueryableAttribute[Any]],
        update: Sequence[str] | None = None,
    ) -> builtins.list[ModelT]:
        """``INSERT ... ON CONFLICT (on) DO UPDATE``; returns the inserted or updated rows.

        ``on`` names the columns of a unique constraint or index. On conflict a row overwrites
        exactly the columns it gave: ``update`` (default: every column but ``on`` and the primary
        key) cut to that row's columns, so a column a row omits keeps its stored value. A row
        with no column left to update is ``DO NOTHING`` (``update=()`` makes every row so):
        the stored row is untouched and not returned. Rows that repeat a key within the call are
        merged column by column, the last value of each column winning (``{"name": "a"}`` then
        ``{"age": 3}`` for one key writes both; PostgreSQL refuses to update a row twice in one
        statement). One statement per distinct set of columns (and per 32,700 bind parameters).
        Rows are sent sorted by key, so concurrent upserts of the same keys (rows of one set of
        columns) take their row locks in one order and wait for each other, never deadlock.
        A row that updates also sets the columns with an ``onupdate`` it does not give, as
        :meth:`update` does (a zero-argument callable is called once per statement).
        A new row gets the defaults of the columns it omits; PostgreSQL checks ``NOT NULL`` on
        the proposed row before it looks for a conflict, so a row must give every ``NOT NULL``
        column without a default even when it will update (use :meth:`update` for one row's
        partial change). Returned instances have columns loaded only, in no promised order.

        Raises:
            DuplicateError / ForeignKeyError: naming the violated constraint (another unique
                constraint than ``on``, a missing referenced row).
        """
        meta = self._meta()
        keys = [k if isinstance(k, str) else k.key for k in on]
        if not keys or set(keys) - meta.columns:
            raise ConfigurationError(
                f"upsert_many(on=...) needs columns of {self.model.__name__}, got {keys}"
            )
        if update is not None and set(update) - meta.columns:
            raise ConfigurationError(
                "upsert_many(update=...) names unknown columns "
                f"{sorted(set(update) - meta.columns)}"
            )
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        pk_attr = meta.pk_attr
        for row in self._rows(rows):
            if isinstance(row.get(pk_attr), str):  # one key whether given as str or UUID/int
                row = {**row, pk_attr: self._coerce_id(row[pk_attr])}
            try:
                key = tuple(row[k] for k in keys)
            except KeyError as exc:
                raise ConfigurationError(
                    f"upsert_many: every row needs the conflict columns {keys}; missing {exc}"
                ) from None
            seen = merged.get(key)
            merged[key] = row if seen is None else {**seen, **row}
        updatable = (
            frozenset(meta.columns - set(keys) - {meta.pk_attr})
            if update is None
            else frozenset(update)
        )
        shapes: dict[frozenset[str], builtins.list[dict[str, Any]]] = {}
        for row in _in_key_order(merged):
            shapes.setdefault(frozenset(row), []).append(row)
        out: builtins.list[ModelT] = []
        async with write_savepoint(self.session, enabled=self.write_savepoints):
            for shape, group in shapes.items():
                targets = sorted(shape & updatable)
                out += await self._upsert_same_shape(group, keys, targets)
        return out

    async def _upsert_same_shape(
        self,
        values: builtins.list[dict[str, Any]],
        keys: builtins.list[str],
        targets: builtins.list[str],
    ) -> builtins.list[ModelT]:
        """One ``INSERT ... ON CONFLICT`` for rows giving the same columns (attribute names)."""
        column = self._meta().column_keys
        stmt = pg_insert(self.model)
        index = [column[k] for k in keys]
        if targets:
            set_: dict[str, Any] = {column[c]: stmt.excluded[column[c]] for c in targets}
            # Columns with an ``onupdate`` the SET does not name get it, as ``update()`` does.
            for key, value in self._onupdates().items():
                if key not in set_ and key not in index:
                    set_[key] = value() if callable(value) else value
            stmt = stmt.on_conflict_do_update(index_elements=index, set_=set_)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=index)
        final = stmt.returning(self.model).execution_options(
            insertmanyvalues_page_size=self._page_size(values), populate_existing=True
        )
        result = await self.session.scalars(final, values)
        return builtins.list(result.all())

    @classmethod
    def _onupdates(cls) -> dict[str, Any]:
        """Column key -> its ``onupdate``: a value, a SQL expression or a zero-argument callable.

        Raises:
            ConfigurationError: an ``onupdate`` an ``ON CONFLICT DO UPDATE`` cannot apply (a
                function of the execution context, a sequence).
        """
        found: dict[str, Any] = {}
        for column in cls._meta().pk.table.c:
            default: Any = column.onupdate
            if default is None:
                continue
            if getattr(default, "is_scalar", False) or getattr(default, "is_clause_element", False):
                found[column.key] = default.arg
                continue
            original = getattr(default.arg, "__wrapped__", None) if default.is_callable else None
            if original is None:
                raise ConfigurationError(
                    f"upsert_many cannot apply {cls.model.__name__}.{column.key}'s onupdate "
                    "(a function of the execution context or a sequence): give the column a "
                    "zero-argument callable, a value or a SQL expression, or set it in each row"
                )
            found[column.key] = original
        return found

    async def update(self, ident: Any, /, **changes: Any) -> ModelT:
        """Write only ``changes`` (column values) to the row ``ident`` and return it reloaded.

        One ``UPDATE ... RETURNING`` plus the declared loads (selectin hops; when the plan joins a
        scalar relation, one ``SELECT`` again, as an ``UPDATE`` cannot join). Other columns and
        every relationship stay as they are in the database. The returned object carries the
        declared loads. Naming a relationship, the primary key or an unknown name raises
        ``ConfigurationError``.

        Raises:
            NotFoundError: no such row.
            DuplicateError / ForeignKeyError: naming the violated constraint.
        """
        meta = self._meta()
        bad = changes.keys() - meta.columns
        if bad or meta.pk_attr in changes or not changes:
            what = sorted(bad) if bad else [meta.pk_attr] if changes else []
            raise ConfigurationError(
                f"update() writes column values of {self.model.__name__}; cannot set {what}"
                + _relationship_hint(bad & meta.relationships)
            )
        plan = self._declared_plan()
        ident = self._coerce_id(ident)
        stmt = (
            update(self.model)
            .where(meta.pk == ident)
            .values(**changes)
            .returning(self.model)
            .options(*_selectin_options(plan))
            .execution_options(populate_existing=True, synchronize_session=False)
        )
        async with write_savepoint(self.session, enabled=self.write_savepoints):
            result = await self.session.scalars(stmt)
            row = result.unique().one_or_none() if plan.unique else result.one_or_none()
        if row is None:
            raise NotFoundError(self.model.__name__, ident)
        if _has_joined(plan):
            # Joined eager loads need a SELECT: reload with the declared plan.
            return await self.get(ident)
        return cast(ModelT, row)

    async def delete(self, ident: Any) -> None:
        """Delete the row ``ident``. One ``DELETE``.

        Raises:
            NotFoundError: no such row.
            ForeignKeyError: other rows still reference it.
        """
        if await self.delete_many([ident]) == 0:
            raise NotFoundError(self.model.__name__, ident)

    async def delete_many(self, ids: Iterable[Any]) -> int:
        """Delete the rows with these primary keys; return how many existed. One ``DELETE``.

        Objects already in the session for those rows are removed from it.

        Raises:
            ForeignKeyError: other rows still reference one of them.
        """
        wanted = [self._coerce_id(i) for i in ids]
        if not wanted:
            return 0
        stmt = (
            delete(self.model)
            .where(self._ids_param(wanted))
            .execution_options(synchronize_session="fetch")
        )
        async with write_savepoint(self.session, enabled=self.write_savepoints):
            result = await self.session.execute(stmt)
        return int(cast(CursorResult[Any], result).rowcount)

    # -- batching --------------------------------------------------------------------------

    def loader(self, *, max_batch_size: int = 1000) -> RepositoryLoader[ModelT]:
        """A :class:`RepositoryLoader`: concurrent ``load(id)`` calls of one tick -> one query.

        The loader gets ``get_many(ids, missing="none")`` as its batch function; an id that is
        not a valid key (``"two"`` for an ``int`` key) fails only its own callers with
        ``ValueError``, the other ids of its batch load.
        """

        async def fetch(ids: builtins.list[Hashable]) -> builtins.list[Any]:
            slots: builtins.list[Any] = []
            for ident in ids:
                try:
                    slots.append(self._coerce_id(ident))
                except ValueError as exc:
                    slots.append(exc)
            valid = [i for i in slots if not isinstance(i, ValueError)]
            rows = iter(await self.get_many(valid, missing="none") if valid else ())
            return [i if isinstance(i, ValueError) else next(rows) for i in slots]

        return RepositoryLoader(
            fetch, model_name=self.model.__name__, max_batch_size=max_batch_size
        )

    # -- vector search ---------------------------------------------------------------------

    def _vector_index(self, what: str) -> VectorIndex:
        index = type(self).vector_index
        if index is None:
            raise ConfigurationError(
                f"{type(self).__name__}.{what}: no vector_index; declare one on the repository, "
                "e.g. vector_index = VectorIndex.hnsw('embedding')"
            )
        return index

    def nearest_statement(
        self,
        vector: Sequence[float],
        k: int = 10,
        *,
        where: ColumnElement[bool] | Sequence[ColumnElement[bool]] = (),
        candidates: int | None = None,
        load: Sequence[LoadSpec] | None = None,
    ) -> Select[Any]:
        """The statement :meth:`nearest` runs (for ``assert_uses_index`` or ``EXPLAIN``)."""
        index = self._vector_index("nearest")
        stmt = nearest_statement(self.model, index, vector, k, where, candidates=candidates)
        return stmt.options(*self._plan_for(load).options)

    async def nearest(
        self,
        vector: Sequence[float],
        k: int = 10,
        *,
        where: ColumnElement[bool] | Sequence[ColumnElement[bool]] = (),
        candidates: int | None = None,
        ef_search: int | None = None,
        iterative_scan: IterativeScan | None = None,
        probes: int | None = None,
        load: Sequence[LoadSpec] | None = None,
    ) -> builtins.list[Neighbor[ModelT]]:
        """The ``k`` rows nearest to ``vector`` among those matching ``where``, nearest first,
        with their distances (by ``vector_index``; ties by primary key).

        Exactly ``min(k, rows matching where)`` rows, however selective the filter: when the
        index scan comes back short, the same statement answers with an exact scan of the
        filtered rows. ``ef_search``/``iterative_scan`` (HNSW) and ``probes`` (IVFFlat) are
        set with ``SET LOCAL`` in this session's transaction (one more statement; undone at
        its end, never leaking to the pooled connection). ``candidates`` (>= ``k``): the index
        path takes that many rows and keeps the ``k`` nearest (an iterative scan emits rows in
        approximate order). It did not raise recall in ``benchmarks.db --only vectors`` (1 %
        filter, ``relaxed_order``): measure before relying on it.

        Cost: one statement (two with settings), plus the declared ``selectinload`` queries.

        Raises:
            ConfigurationError: no ``vector_index``; ``k`` < 1; a vector of the wrong length;
                a setting out of range or of the other index method; settings asked on an
                autocommit connection (``SET LOCAL`` would do nothing there).
        """
        stmt = self.nearest_statement(vector, k, where=where, candidates=candidates, load=load)
        rows = await self._search(stmt, "nearest", ef_search, iterative_scan, probes, load)
        return [Neighbor(row[0], float(row[1])) for row in rows]

    async def _search(
        self,
        stmt: Select[Any],
        what: str,
        ef_search: int | None,
        iterative_scan: IterativeScan | None,
        probes: int | None,
        load: Sequence[LoadSpec] | None,
    ) -> Sequence[Any]:
        """Apply the search settings (``SET LOCAL``), then run ``stmt``; its rows."""
        values = search_settings(
            self._vector_index(what),
            ef_search=ef_search,
            iterative_scan=iterative_scan,
            probes=probes,
        )
        await set_local(self.session, values, model=self.model)
        result = await self.session.execute(stmt)
        if self._plan_for(load).unique:
            result = result.unique()
        return list(result.all())

    def hybrid_statement(
        self,
        vector: Sequence[float],
        text: str,
        k: int = 10,
        *,
        where: ColumnElement[bool] | Sequence[ColumnElement[bool]] = (),
        candidates: int | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
        rrf_k: int = 60,
        load: Sequence[LoadSpec] | None = None,
    ) -> Select[Any]:
        """The statement :meth:`hybrid` runs."""
        index = self._vector_index("hybrid")
        search = type(self).text_search
        if search is None:
            raise ConfigurationError(
                f"{type(self).__name__}.hybrid: no text_search; declare one on the repository, "
                "e.g. text_search = TextSearch('content', config='english')"
            )
        stmt = hybrid_statement(
            self.model,
            index,
            search,
            vector,
            text,
            k,
            where,
            candidates=candidates,
            weights=weights,
            rrf_k=rrf_k,
        )
        return stmt.options(*self._plan_for(load).options)

    async def hybrid(
        self,
        vector: Sequence[float],
        text: str,
        k: int = 10,
        *,
        where: ColumnElement[bool] | Sequence[ColumnElement[bool]] = (),
        candidates: int | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
        rrf_k: int = 60,
        ef_search: int | None = None,
        iterative_scan: IterativeScan | None = None,
        probes: int | None = None,
        load: Sequence[LoadSpec] | None = None,
    ) -> builtins.list[HybridHit[ModelT]]:
        """Vector similarity and full-text rank fused in one SQL statement.

        Each side takes its ``candidates`` best rows (default ``max(4 * k, 40)``) under the
        same ``where``: the nearest by ``vector_index`` (exact when the index comes back
        short, as in :meth:`nearest`) and the best ``ts_rank_cd`` matches of
        ``text_search``'s ``websearch_to_tsquery(text)``. Rows are fused by weighted
        reciprocal rank, ``w_v / (rrf_k + vector_rank) + w_t / (rrf_k + text_rank)`` (a side
        that did not find a row adds 0), best first, ``k`` of them.

        Cost: one statement (two with settings), plus the declared ``selectinload`` queries.

        Raises:
            ConfigurationError: no ``vector_index`` or ``text_search``, or a bad argument
                (as :meth:`nearest`; ``candidates`` < ``k``; negative weights).
        """
        stmt = self.hybrid_statement(
            vector,
            text,
            k,
            where=where,
            candidates=candidates,
            weights=weights,
            rrf_k=rrf_k,
            load=load,
        )
        rows = await self._search(stmt, "hybrid", ef_search, iterative_scan, probes, load)
        return [HybridHit(row[0], float(row[1]), row[2], row[3]) for row in rows]


def _coercible_type(column: Any) -> type[uuid.UUID] | type[int] | None:
    """``UUID`` or ``int`` when the column holds one (a ``str`` id is converted), else ``None``."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return None
    if issubclass(python_type, uuid.UUID):
        return uuid.UUID
    if issubclass(python_type, int) and not issubclass(python_type, bool):
        return int
    return None


def _in_key_order(rows: dict[tuple[Any, ...], dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """The rows sorted by their conflict key when the keys are comparable, else as given.

    Every upsert then takes its row locks in one order, so two sessions upserting the same
    keys wait for each other instead of deadlocking (``deadlock detected``).
    """
    try:
        return [rows[key] for key in sorted(rows)]
    except TypeError:  # keys of mixed types (a None, a str next to a UUID)
        return rows.values()


def _as_sequence(value: Any) -> builtins.list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return builtins.list(value)
    return [value]


def _relationship_hint(names: set[str] | frozenset[str]) -> str:
    if not names:
        return ""
    return f" ({', '.join(sorted(names))} is a relationship: write its foreign-key column instead)"


def _has_joined(plan: LoadPlan) -> bool:
    for option in plan.options:
        for element in getattr(option, "context", ()):
            strategy = dict(getattr(element, "strategy", None) or ())
            if strategy.get("lazy") in ("joined", False):
                return True
    return False


def _selectin_options(plan: LoadPlan) -> tuple[Any, ...]:
    """The plan's options, or none when it joins (an UPDATE ... RETURNING cannot join)."""
    return () if _has_joined(plan) else plan.options
