"""Vector search on PostgreSQL + pgvector: one object gives the index DDL and the query.

:class:`VectorIndex` is an index preset (HNSW, IVFFlat, a ``halfvec`` expression index for more
than 2,000 dimensions, binary quantization with re-ranking). Its :meth:`~VectorIndex.index` (the
DDL) and :meth:`~VectorIndex.ordering` (the ``ORDER BY`` of a search) are built from the same
expression, so the planner can always match them: a query that casts differently from its
index silently scans the table, and that cannot happen here by construction.

The search statements (:func:`nearest_statement`, :func:`hybrid_statement`) return exactly
``k`` rows whenever at least ``k`` rows match the filter: the approximate (index) scan runs
first; when it comes back short (a selective filter removed most of what HNSW visited), an
exact scan of the filtered rows answers instead, in the same statement. PostgreSQL evaluates
that branch's guard once, so the exact scan costs nothing when the index scan was complete.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import (
    CTE,
    ClauseElement,
    ColumnElement,
    Float,
    Index,
    Select,
    cast,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String, UserDefinedType

from sight_core.errors import ConfigurationError

__all__ = [
    "Distance",
    "HybridHit",
    "IterativeScan",
    "Neighbor",
    "TextSearch",
    "VectorIndex",
    "hybrid_statement",
    "nearest_statement",
    "rrf_score",
    "search_settings",
    "set_local",
]

ModelT = TypeVar("ModelT")

Distance = Literal["cosine", "l2", "inner_product"]
IterativeScan = Literal["off", "strict_order", "relaxed_order"]

_OPERATOR: Mapping[str, str] = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}
_OPCLASS: Mapping[str, str] = {"cosine": "cosine_ops", "l2": "l2_ops", "inner_product": "ip_ops"}
_HAMMING = "<~>"
_MAX_DIMENSIONS = {"vector": 2_000, "halfvec": 4_000, "bit": 64_000}
"""The most dimensions pgvector indexes per storage type (HNSW and IVFFlat alike)."""
_HALF_MAX = 65_504.0
"""The largest finite half-precision value."""
_CONFIG_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class _PgVector(UserDefinedType[Any]):
    """``vector(n)`` / ``halfvec(n)`` for casts and bind parameters (lists of floats)."""

    cache_ok = True

    def __init__(self, kind: str, dimensions: int | None = None) -> None:
        self.kind = kind
        self.dimensions = dimensions

    def get_col_spec(self, **kw: Any) -> str:
        return self.kind if self.dimensions is None else f"{self.kind}({self.dimensions})"

    def bind_processor(self, dialect: Any) -> Any:
        return _to_text

    def literal_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> str:  # digits, signs, dots, commas, brackets: no quoting
            return f"'{_to_text(value)}'::{self.get_col_spec()}"

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        def process(value: Any) -> list[float] | None:
            if value is None or not isinstance(value, str):
                return value
            return [float(x) for x in value.strip("[]").split(",") if x]

        return process


def _to_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return "[" + ",".join(repr(float(x)) for x in value) + "]"


def _column(model: Any, name: str) -> Any:
    attribute = getattr(model, name, None)
    if attribute is None:
        raise ConfigurationError(f"{model.__name__} has no column {name!r} to search")
    return attribute


def _attached(index: Index) -> Index:
    if index.table is None:  # pragma: no cover - every expression here names its column
        raise ConfigurationError(f"index {index.name!r} found no table in its expression")
    return index


@dataclass(frozen=True, slots=True)
class VectorIndex:
    """How a vector column is indexed and searched; build it with a preset.

    ``VectorIndex.hnsw("embedding")``, ``VectorIndex.ivfflat("embedding", lists=200)``,
    ``VectorIndex.halfvec("embedding", 3072)`` (an HNSW index on ``embedding::halfvec(3072)``:
    pgvector indexes at most 2,000 dimensions of ``vector``, 4,000 of ``halfvec``),
    ``VectorIndex.binary("embedding", 3072)`` (HNSW on ``binary_quantize(embedding)``, Hamming
    distance, then the best ``k * rerank`` candidates re-ranked by the exact distance).

    Use :meth:`index` for the DDL (in your model module or migration) and the same object on
    the repository (``vector_index = ...``): the query uses the index's expression.

    Raises:
        ConfigurationError: an unknown method, storage or distance; ``halfvec``/``binary``
            without ``dimensions``; more dimensions than pgvector indexes for the storage;
            ``m``/``ef_construction``/``lists``/``rerank`` outside pgvector's bounds.
    """

    column: str
    method: Literal["hnsw", "ivfflat"] = "hnsw"
    distance: Distance = "cosine"
    storage: Literal["vector", "halfvec", "bit"] = "vector"
    dimensions: int | None = None
    m: int = 16
    ef_construction: int = 64
    lists: int = 100
    rerank: int = 4

    def __post_init__(self) -> None:
        name = f"VectorIndex({self.column!r})"
        if self.method not in ("hnsw", "ivfflat"):
            raise ConfigurationError(f"{name}: method={self.method!r}; use 'hnsw' or 'ivfflat'")
        if self.distance not in _OPERATOR:
            raise ConfigurationError(
                f"{name}: distance={self.distance!r}; use 'cosine', 'l2' or 'inner_product'"
            )
        if self.storage not in _MAX_DIMENSIONS:
            raise ConfigurationError(
                f"{name}: storage={self.storage!r}; use 'vector', 'halfvec' or 'bit'"
            )
        if self.storage != "vector" and self.dimensions is None:
            raise ConfigurationError(
                f"{name}: storage={self.storage!r} needs dimensions= (the cast is to "
                f"{self.storage}(n)), e.g. VectorIndex.halfvec({self.column!r}, 3072)"
            )
        limit = _MAX_DIMENSIONS[self.storage]
        if self.dimensions is not None and not 1 <= self.dimensions <= limit:
            hint = (
                f"; index it as halfvec: VectorIndex.halfvec({self.column!r}, {self.dimensions})"
                if self.storage == "vector" and self.dimensions <= _MAX_DIMENSIONS["halfvec"]
                else ""
            )
            raise ConfigurationError(
                f"{name}: dimensions={self.dimensions}: pgvector indexes 1..{limit} dimensions "
                f"of {self.storage}{hint}"
            )
        if not 2 <= self.m <= 100:
            raise ConfigurationError(f"{name}: m={self.m}; pgvector accepts 2..100")
        if not 2 * self.m <= self.ef_construction <= 1000:
            raise ConfigurationError(
                f"{name}: ef_construction={self.ef_construction}; use 2*m ({2 * self.m})..1000"
            )
        if not 1 <= self.lists <= 32_768:
            raise ConfigurationError(f"{name}: lists={self.lists}; pgvector accepts 1..32768")
        if not 1 <= self.rerank <= 100:
            raise ConfigurationError(f"{name}: rerank={self.rerank}; use 1..100")

    # ---------------------------------------------------------------- presets

    @classmethod
    def hnsw(
        cls, column: str, *, distance: Distance = "cosine", m: int = 16, ef_construction: int = 64
    ) -> VectorIndex:
        """HNSW on the column itself (at most 2,000 dimensions)."""
        return cls(column, "hnsw", distance, "vector", None, m, ef_construction)

    @classmethod
    def ivfflat(
        cls, column: str, *, distance: Distance = "cosine", lists: int = 100
    ) -> VectorIndex:
        """IVFFlat on the column (build it after loading data: its lists come from the rows)."""
        return cls(column, "ivfflat", distance, "vector", lists=lists)

    @classmethod
    def halfvec(
        cls,
        column: str,
        dimensions: int,
        *,
        distance: Distance = "cosine",
        m: int = 16,
        ef_construction: int = 64,
    ) -> VectorIndex:
        """HNSW on ``column::halfvec(dimensions)`` (up to 4,000 dimensions; a 3,072-dimension
        Gemini embedding needs it). Distances are computed in half precision."""
        return cls(column, "hnsw", distance, "halfvec", dimensions, m, ef_construction)

    @classmethod
    def binary(
        cls,
        column: str,
        dimensions: int,
        *,
        distance: Distance = "cosine",
        rerank: int = 4,
        m: int = 16,
        ef_construction: int = 64,
    ) -> VectorIndex:
        """HNSW on ``binary_quantize(column)::bit(dimensions)`` (Hamming distance, 1 bit per
        dimension); the ``k * rerank`` nearest candidates are re-ranked by the exact
        ``distance`` on the full vectors."""
        return cls(column, "hnsw", distance, "bit", dimensions, m, ef_construction, rerank=rerank)

    # ---------------------------------------------------------------- expressions

    def indexed(self, model: Any) -> ColumnElement[Any]:
        """The expression the index is built on (and the search orders by)."""
        col = _column(model, self.column)
        if self.storage == "halfvec":
            return cast(col, _PgVector("halfvec", self.dimensions))
        if self.storage == "bit":
            return cast(func.binary_quantize(col), _PgVector("bit", self.dimensions))
        return col  # type: ignore[no-any-return]

    def _query(self, vector: Sequence[float]) -> ColumnElement[Any]:
        if self.storage == "halfvec":
            return literal(list(vector), _PgVector("halfvec", self.dimensions))
        if self.storage == "bit":
            full = _PgVector("vector", self.dimensions)
            value = cast(literal(list(vector), full), full)  # binary_quantize is overloaded
            return cast(func.binary_quantize(value), _PgVector("bit", self.dimensions))
        return literal(list(vector), _PgVector("vector", self.dimensions))

    def ordering(self, model: Any, vector: Sequence[float]) -> ColumnElement[float]:
        """The ``ORDER BY`` expression the index serves: ``indexed <op> query``."""
        operator = _HAMMING if self.storage == "bit" else _OPERATOR[self.distance]
        return self.indexed(model).op(operator, return_type=Float)(self._query(vector))

    def exact(self, model: Any, vector: Sequence[float]) -> ColumnElement[float]:
        """The distance reported to callers: the index's own distance, except for ``bit``
        storage, whose candidates are re-ranked by ``distance`` on the full vectors."""
        if self.storage != "bit":
            return self.ordering(model, vector)
        query = literal(list(vector), _PgVector("vector", self.dimensions))
        col = _column(model, self.column)
        return col.op(_OPERATOR[self.distance], return_type=Float)(query)  # type: ignore[no-any-return]

    @property
    def operator_class(self) -> str:
        """The operator class of the index (``halfvec_cosine_ops``, ``bit_hamming_ops``...)."""
        if self.storage == "bit":
            return "bit_hamming_ops"
        return f"{self.storage}_{_OPCLASS[self.distance]}"

    def index(self, name: str, model: Any) -> Index:
        """The index DDL on ``model``'s table, on :meth:`indexed` (attach it by defining it
        after the model class; ``metadata.create_all`` or Alembic then creates it)."""
        expression = self.indexed(model)
        label = f"{name}_expr"
        options: dict[str, Any] = (
            {"m": self.m, "ef_construction": self.ef_construction}
            if self.method == "hnsw"
            else {"lists": self.lists}
        )
        if self.storage == "vector":
            col = _column(model, self.column)
            return _attached(
                Index(
                    name,
                    col,
                    postgresql_using=self.method,
                    postgresql_with=options,
                    postgresql_ops={col.key: self.operator_class},
                )
            )
        return _attached(
            Index(
                name,
                expression.label(label),
                postgresql_using=self.method,
                postgresql_with=options,
                postgresql_ops={label: self.operator_class},
            )
        )

    def fingerprint(self) -> str:
        """A short digest of every field: part of a search cache's version."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]

    def cache_version(self, **search: object) -> int:
        """A cache namespace version (``@cache.cached(version=...)``) derived from this index
        and the search settings (``k=10, ef_search=100, embedding_model=...``): change either
        and cached search results become misses at once. Stable across processes."""
        settings = ",".join(f"{name}={search[name]!r}" for name in sorted(search))
        digest = hashlib.sha256(f"{self.fingerprint()}|{settings}".encode()).digest()
        return 1 + int.from_bytes(digest[:4], "big") % 2_000_000_000


@dataclass(frozen=True, slots=True)
class TextSearch:
    """The full-text side of a hybrid search: a ``tsvector`` column, or a text column searched
    through ``to_tsvector(config, column)`` (index it with :meth:`index`, which uses the same
    expression). Queries are parsed with ``websearch_to_tsquery(config, text)``.

    Raises:
        ConfigurationError: ``config`` is not a plain configuration name.
    """

    column: str
    config: str = "english"

    def __post_init__(self) -> None:
        if not _CONFIG_NAME.match(self.config):
            raise ConfigurationError(
                f"TextSearch(config={self.config!r}): use a text search configuration name "
                "such as 'english' or 'simple'"
            )

    def _regconfig(self) -> Any:
        # inline SQL (a bound value would not match the expression index); a TextClause, so
        # an index on ``document`` still finds its table through the column
        return sql_text(f"'{self.config}'::regconfig")

    def document(self, model: Any) -> ColumnElement[Any]:
        """The ``tsvector`` searched: the column, or ``to_tsvector(config, column)``."""
        col = _column(model, self.column)
        if isinstance(col.type, TSVECTOR):
            return col  # type: ignore[no-any-return]
        return func.to_tsvector(self._regconfig(), col)

    def query(self, text: str) -> ColumnElement[Any]:
        """``websearch_to_tsquery(config, text)``."""
        return func.websearch_to_tsquery(self._regconfig(), literal(text, String()))

    def index(self, name: str, model: Any) -> Index:
        """A GIN index on :meth:`document`."""
        return _attached(
            Index(name, self.document(model).label(f"{name}_expr"), postgresql_using="gin")
        )


@dataclass(frozen=True, slots=True)
class Neighbor(Generic[ModelT]):
    """One result of ``repo.nearest``: the object and its distance (smaller is nearer)."""

    item: ModelT
    distance: float


@dataclass(frozen=True, slots=True)
class HybridHit(Generic[ModelT]):
    """One result of ``repo.hybrid``: the object, its fused score (larger is better) and its
    rank on each side (``None``: that side did not find it)."""

    item: ModelT
    score: float
    vector_rank: int | None
    text_rank: int | None


async def set_local(
    session: AsyncSession, values: Mapping[str, str], *, model: Any | None = None
) -> None:
    """``SET LOCAL`` each of ``values`` in ``session``'s transaction, in one statement
    (``set_config(name, value, true)``: parameterised, and undone at commit or rollback, so
    nothing reaches the next user of the pooled connection). ``model``: the mapped class the
    search reads, so a session with per-model ``binds=`` sets them on the connection that runs
    the search (not its default bind's).

    Raises:
        ConfigurationError: the session's connection is in autocommit, where ``SET LOCAL``
            lasts only until the end of its own statement and would do nothing.
    """
    if not values:
        return
    bind_arguments = None if model is None else {"mapper": model}
    connection = await session.connection(bind_arguments=bind_arguments)
    raw = await connection.get_raw_connection()
    if getattr(raw.dbapi_connection, "autocommit", False):
        raise ConfigurationError(
            f"cannot apply {', '.join(f'{k}={v}' for k, v in values.items())} under autocommit: "
            "SET LOCAL would end with its own statement; search in a session with a "
            "transaction (the default isolation level), not isolation_level='AUTOCOMMIT'"
        )
    await session.execute(
        select(
            *(
                func.set_config(literal(name, String()), literal(value, String()), True)
                for name, value in values.items()
            )
        ),
        bind_arguments=bind_arguments,
    )


def search_settings(
    index: VectorIndex,
    *,
    ef_search: int | None = None,
    iterative_scan: IterativeScan | None = None,
    probes: int | None = None,
) -> dict[str, str]:
    """The pgvector settings to ``SET LOCAL`` for one search (``{}``: none asked).

    Raises:
        ConfigurationError: a value out of pgvector's range, or a setting of the other index
            method (``ef_search`` on IVFFlat, ``probes`` on HNSW).
    """
    values: dict[str, str] = {}
    if ef_search is not None:
        if index.method != "hnsw":
            raise ConfigurationError("ef_search= applies to HNSW indexes; IVFFlat takes probes=")
        if not 1 <= ef_search <= 1000:
            raise ConfigurationError(f"ef_search={ef_search}; pgvector accepts 1..1000")
        values["hnsw.ef_search"] = str(ef_search)
    if probes is not None:
        if index.method != "ivfflat":
            raise ConfigurationError("probes= applies to IVFFlat indexes; HNSW takes ef_search=")
        if not 1 <= probes <= index.lists:
            raise ConfigurationError(f"probes={probes}; use 1..lists ({index.lists})")
        values["ivfflat.probes"] = str(probes)
    if iterative_scan is not None:
        allowed: tuple[str, ...] = ("off", "strict_order", "relaxed_order")
        if index.method == "ivfflat":
            allowed = ("off", "relaxed_order")
        if iterative_scan not in allowed:
            raise ConfigurationError(
                f"iterative_scan={iterative_scan!r}; {index.method} accepts {', '.join(allowed)}"
            )
        values[f"{index.method}.iterative_scan"] = iterative_scan
    return values


def _pk(model: Any) -> Any:
    mapper = sa_inspect(model)
    if len(mapper.primary_key) != 1:
        raise ConfigurationError(f"{model.__name__}: vector search needs a single-column key")
    return mapper.primary_key[0]


def _hits(
    model: Any,
    index: VectorIndex,
    vector: Sequence[float],
    limit: int,
    where: Sequence[ColumnElement[bool]],
    name: str,
    pool: int | None = None,
) -> CTE:
    """``(id, distance)`` of the ``limit`` nearest rows matching ``where``, nearest first:
    the index scan (which takes ``pool`` candidates and keeps the ``limit`` nearest), or when
    it returned fewer than ``limit`` rows, an exact scan."""
    pk = _pk(model)
    ordering = index.ordering(model, vector)
    reported = index.exact(model, vector)
    taken = max(limit, pool or limit)
    # a row without a vector has no distance: it is nobody's neighbour (the exact scan would
    # otherwise return it last, with a NULL distance)
    where = [*where, _column(model, index.column).is_not(None)]
    if index.storage == "bit":
        candidates = (
            select(pk.label("id"))
            .where(*where)
            .order_by(ordering, pk)
            .limit(taken * index.rerank)
            .cte(f"{name}_candidates")
        )
        ann = (
            select(candidates.c.id, reported.label("distance"))
            .join_from(candidates, model, candidates.c.id == pk)
            .order_by(reported, candidates.c.id)
            .limit(taken)
            .cte(f"{name}_ann")
        )
    else:
        ann = (
            select(pk.label("id"), ordering.label("distance"))
            .where(*where)
            .order_by(ordering, pk)  # ties by key: the index scan feeds an incremental sort
            .limit(taken)
            .cte(f"{name}_ann")
        )
    found = select(func.count()).select_from(ann).scalar_subquery()
    # ``+ 0``: an ORDER BY the index cannot serve, so this branch is an exact scan
    exact = (
        select(pk.label("id"), reported.label("distance"))
        .where(*where, found < limit)
        .order_by(reported + literal_column("0"), pk)
        .limit(limit)
    )
    complete = select(ann.c.id, ann.c.distance).where(found >= limit)
    if taken > limit:  # an iterative scan emits in approximate order: keep the nearest
        complete = complete.order_by(ann.c.distance, ann.c.id).limit(limit)
    return union_all(complete, exact).cte(name)


def _where(model: Any, where: ColumnElement[bool] | Sequence[ColumnElement[bool]]) -> list[Any]:
    """The filters as a list; filters that reach another table (a join written in ``where``)
    become one ``EXISTS`` semi-join, so a row matched by several joined rows is still one
    candidate (a plain join would return it several times and fewer than k distinct rows)."""
    filters = [where] if isinstance(where, ClauseElement) else list(where)  # text("...") too
    pk = _pk(model)
    if len(select(pk).where(*filters).get_final_froms()) <= 1:
        return filters
    own = [f for f in filters if len(select(pk).where(f).get_final_froms()) <= 1]
    joined = [f for f in filters if not any(f is o for o in own)]
    return [*own, select(literal_column("1")).where(*joined).exists()]


def _check_k(k: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigurationError(f"{what}(k={k!r}): use a row count >= 1")


def nearest_statement(
    model: Any,
    index: VectorIndex,
    vector: Sequence[float],
    k: int,
    where: ColumnElement[bool] | Sequence[ColumnElement[bool]] = (),
    *,
    candidates: int | None = None,
) -> Select[Any]:
    """``SELECT model, distance`` of the ``k`` nearest rows matching ``where`` (rows whose
    vector is ``NULL`` never match), nearest first (ties by primary key among the rows the
    index scan returned). Exactly ``min(k, rows matching)`` rows. ``candidates``: the index
    path takes that many rows and keeps the ``k`` nearest (default ``k``).

    Raises:
        ConfigurationError: ``k`` < 1, ``candidates`` < ``k``, a vector of the wrong length
            (the index's or the column's) or with a NaN/infinite component.
    """
    _check_k(k, "nearest")
    _check_vector(model, index, vector)
    if candidates is not None and not k <= candidates <= 10_000:
        raise ConfigurationError(f"nearest(candidates={candidates}): use k ({k})..10000")
    hits = _hits(model, index, vector, k, _where(model, where), "nearest", candidates)
    pk = _pk(model)
    return select(model, hits.c.distance).join(hits, pk == hits.c.id).order_by(hits.c.distance, pk)


def _check_vector(model: Any, index: VectorIndex, vector: Sequence[float]) -> None:
    """Refuse, before any SQL, a query vector the server would reject (or half precision
    would turn into infinities): the wrong length for the index or the column, or a
    component that is not a finite number."""
    declared = getattr(getattr(_column(model, index.column), "type", None), "dim", None)
    expected = index.dimensions if index.dimensions is not None else declared
    if expected is not None and len(vector) != expected:
        source = "indexed with" if index.dimensions is not None else "a column of"
        raise ConfigurationError(
            f"a {len(vector)}-dimension query vector for {index.column!r}, {source} "
            f"{expected} dimensions"
        )
    bound = _HALF_MAX if index.storage == "halfvec" else math.inf
    for position, value in enumerate(vector):
        number = float(value)
        if not abs(number) < bound:
            raise ConfigurationError(
                f"query vector component {position} is {number!r}: pgvector takes finite "
                + ("numbers" if bound == math.inf else f"numbers within +-{_HALF_MAX} (halfvec)")
                + "; check the embedding that produced it"
            )


def rrf_score(
    vector_rank: Any,
    text_rank: Any,
    *,
    weights: tuple[float, float] = (1.0, 1.0),
    rrf_k: int = 60,
) -> ColumnElement[float]:
    """Weighted reciprocal rank fusion, in SQL: ``w_v / (rrf_k + vector_rank) +
    w_t / (rrf_k + text_rank)``, a missing rank (``NULL``) contributing 0. Ranks start at 1."""
    wv = literal(float(weights[0]), Float())
    wt = literal(float(weights[1]), Float())
    base = literal(int(rrf_k))
    fused: ColumnElement[float] = func.coalesce(wv / (base + vector_rank), 0.0) + func.coalesce(
        wt / (base + text_rank), 0.0
    )
    return fused


def hybrid_statement(
    model: Any,
    index: VectorIndex,
    text_search: TextSearch,
    vector: Sequence[float],
    text: str,
    k: int,
    where: ColumnElement[bool] | Sequence[ColumnElement[bool]] = (),
    *,
    candidates: int | None = None,
    weights: tuple[float, float] = (1.0, 1.0),
    rrf_k: int = 60,
) -> Select[Any]:
    """``SELECT model, score, vector_rank, text_rank``: the ``candidates`` nearest rows and the
    ``candidates`` best full-text matches (``ts_rank_cd``), each under ``where``, fused by
    :func:`rrf_score`, best first (ties by primary key), ``k`` rows. One statement.

    Raises:
        ConfigurationError: ``k`` < 1, ``candidates`` < ``k``, weights that are not two finite
            numbers >= 0, ``rrf_k`` not an integer >= 0.
    """
    _check_k(k, "hybrid")
    _check_vector(model, index, vector)
    pool = candidates if candidates is not None else max(4 * k, 40)
    if pool < k:
        raise ConfigurationError(f"hybrid(candidates={pool}): use at least k ({k})")
    if len(weights) != 2 or not all(0 <= float(w) < math.inf for w in weights):
        raise ConfigurationError(f"hybrid(weights={weights!r}): two finite weights >= 0")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise ConfigurationError(f"hybrid(rrf_k={rrf_k!r}): use an integer >= 0 (60 is usual)")
    filters = _where(model, where)
    pk = _pk(model)
    hits = _hits(model, index, vector, pool, filters, "vector_hits")
    vector_side = select(
        hits.c.id,
        func.row_number().over(order_by=(hits.c.distance, hits.c.id)).label("rank"),
    ).cte("vector_side")
    document = text_search.document(model)
    query = text_search.query(text)
    relevance = func.ts_rank_cd(document, query)
    matches = (
        select(pk.label("id"), relevance.label("relevance"))
        .where(*filters, document.op("@@")(query))
        .order_by(relevance.desc(), pk)
        .limit(pool)
        .subquery("text_matches")
    )
    text_side = select(
        matches.c.id,
        func.row_number().over(order_by=(matches.c.relevance.desc(), matches.c.id)).label("rank"),
    ).cte("text_side")
    fused = (
        select(
            func.coalesce(vector_side.c.id, text_side.c.id).label("id"),
            vector_side.c.rank.label("vector_rank"),
            text_side.c.rank.label("text_rank"),
            rrf_score(vector_side.c.rank, text_side.c.rank, weights=weights, rrf_k=rrf_k).label(
                "score"
            ),
        )
        .select_from(vector_side.join(text_side, vector_side.c.id == text_side.c.id, full=True))
        .cte("fused")
    )
    return (
        select(model, fused.c.score, fused.c.vector_rank, fused.c.text_rank)
        .join(fused, pk == fused.c.id)
        .order_by(fused.c.score.desc(), pk)
        .limit(k)
    )
