"""Break-it attacks on vector search (issue 18), against the real PostgreSQL + pgvector.

Each test is one attempt to make ``repo.nearest`` / ``repo.hybrid`` / ``assert_uses_index``
return a wrong result: NULL embeddings, ties, deleted rows, joined filters, bad vectors,
``SET LOCAL`` inside savepoints, tsquery syntax in the text, and a brute-force RRF in Python
computed from the same data.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from db_vector_schema import DIMS, WIDE, Memory, MemoryRepository, WideRepository, reset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Float, delete, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased

from sight_core.db import assert_uses_index, create_engine, create_sessionmaker
from sight_core.errors import ConfigurationError
from sight_core.settings import DatabaseSettings


def _unit(rng: random.Random, dims: int) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dims)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


@pytest.fixture
async def vectors(engine: AsyncEngine) -> AsyncEngine:
    await reset(engine)
    return engine


async def _load(session: AsyncSession, rows: list[dict[str, Any]]) -> MemoryRepository:
    if any(r.get("embedding") is None or r.get("content", "") is None for r in rows):
        # the schema is NOT NULL; a nullable column is what a real table may have (undone at
        # the test's rollback)
        await session.execute(
            text(
                "ALTER TABLE v_memories ALTER COLUMN embedding DROP NOT NULL, "
                "ALTER COLUMN content DROP NOT NULL"
            )
        )
    repo = MemoryRepository(session)
    await repo.add_many(rows)
    await session.flush()
    return repo


def _rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "persona": i % 5,
            "topic": ("coffee", "work")[i % 2],
            "content": f"memory {i} about {('coffee', 'work')[i % 2]}",
            "embedding": _unit(rng, DIMS),
        }
        for i in range(n)
    ]


# ------------------------------------------------------------------ nearest: counts and rows


async def test_filter_matching_exactly_k_and_k_above_the_matches(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rows = _rows(50)
    repo = await _load(session, rows)
    q = rows[0]["embedding"]
    exactly = await repo.nearest(q, 10, where=Memory.persona == 2, ef_search=1)
    assert sorted(n.item.id for n in exactly) == [r["id"] for r in rows if r["persona"] == 2]
    more = await repo.nearest(q, 1000, where=Memory.persona == 2)
    assert len(more) == 10
    assert await repo.nearest(q, 5, where=Memory.persona == 99) == []


async def test_rows_with_a_null_embedding_are_never_neighbors(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rows = _rows(20)
    for r in rows[10:]:
        r["embedding"] = None
    repo = await _load(session, rows)
    found = await repo.nearest(rows[0]["embedding"], 15)
    assert sorted(n.item.id for n in found) == list(range(10))
    assert all(isinstance(n.distance, float) for n in found)
    filtered = await repo.nearest(rows[0]["embedding"], 5, where=Memory.id >= 8)
    assert sorted(n.item.id for n in filtered) == [8, 9]


async def test_duplicate_vectors_tie_by_primary_key(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    same = _unit(random.Random(4), DIMS)
    rows = _rows(40)
    for r in rows:
        if r["id"] % 3 == 0:
            r["embedding"] = same
    repo = await _load(session, rows)
    tied = sorted(r["id"] for r in rows if r["id"] % 3 == 0)
    for k in (1, 3, 7):
        for where in ((), Memory.persona.in_([0, 1, 2, 3, 4]), Memory.id % 1 == 0):
            found = await repo.nearest(same, k, where=where, ef_search=100)
            assert [n.item.id for n in found] == tied[:k], (k, where)
        # an approximate scan that visits one node still returns true nearest rows (distance
        # 0), but which of the tied rows it saw is the graph's choice, not the key order
        rough = await repo.nearest(same, k, ef_search=1)
        assert len(rough) == k and {n.item.id for n in rough} <= set(tied)
        assert all(n.distance == pytest.approx(0, abs=1e-6) for n in rough)


async def test_deleted_rows_are_not_returned_and_k_still_holds(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rows = _rows(60)
    repo = await _load(session, rows)
    await session.commit()
    q = rows[5]["embedding"]
    await session.execute(delete(Memory).where(Memory.id % 2 == 1))
    found = await repo.nearest(q, 20, ef_search=5)
    assert len(found) == 20 and all(n.item.id % 2 == 0 for n in found)
    await session.rollback()
    again = await repo.nearest(q, 1)
    assert again[0].item.id == 5  # the rollback brought the row back


async def test_a_filter_on_a_joined_column_returns_k_distinct_rows(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rows = _rows(30)
    repo = await _load(session, rows)
    other = aliased(Memory)
    # "memories of a persona that has talked about coffee": true for every persona, joined
    where = [other.persona == Memory.persona, other.topic == "coffee"]
    found = await repo.nearest(rows[0]["embedding"], 10, where=where)
    ids = [n.item.id for n in found]
    assert len(ids) == 10 and len(set(ids)) == 10
    truth = await repo.nearest(rows[0]["embedding"], 10)
    assert ids == [n.item.id for n in truth]
    few = await repo.nearest(rows[0]["embedding"], 10, where=[*where, other.id == 2])
    assert sorted(n.item.id for n in few) == [r["id"] for r in rows if r["persona"] == 2]
    mixed = await repo.nearest(
        rows[0]["embedding"], 10, where=[Memory.topic == "work", *where, other.id == 2]
    )
    assert sorted(n.item.id for n in mixed) == [
        r["id"] for r in rows if r["persona"] == 2 and r["topic"] == "work"
    ]
    hits = await repo.hybrid(rows[0]["embedding"], "coffee", 10, where=where)
    assert len({h.item.id for h in hits}) == 10


@pytest.mark.parametrize("k", [0, -1, True, 2.5, "3"])
async def test_bad_k_is_refused(vectors: AsyncEngine, session: AsyncSession, k: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"k="):
        await MemoryRepository(session).nearest([0.1] * DIMS, k)


@pytest.mark.parametrize("dims", [3, DIMS + 1])
async def test_a_query_vector_of_the_wrong_dimension_is_a_clear_error(
    vectors: AsyncEngine, session: AsyncSession, dims: int
) -> None:
    repo = MemoryRepository(session)
    with pytest.raises(ConfigurationError, match=rf"{dims}-dimension query vector.*{DIMS}"):
        await repo.nearest([0.1] * dims, 3)
    with pytest.raises(ConfigurationError, match=rf"{dims}-dimension query vector.*{DIMS}"):
        await repo.hybrid([0.1] * dims, "coffee", 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
async def test_nan_or_infinite_components_are_a_clear_error(
    vectors: AsyncEngine, session: AsyncSession, bad: float
) -> None:
    vector = [0.1] * DIMS
    vector[3] = bad
    with pytest.raises(ConfigurationError, match=r"component 3.*(nan|inf)"):
        await MemoryRepository(session).nearest(vector, 3)
    wide = [0.1] * WIDE
    wide[7] = bad
    with pytest.raises(ConfigurationError, match=r"component 7"):
        await WideRepository(session).nearest(wide, 3)


# ------------------------------------------------------------------ SET LOCAL


async def test_settings_inside_a_savepoint_apply_and_end_with_the_outer_transaction(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    await _load(session, _rows(10))
    repo = MemoryRepository(session)
    async with session.begin_nested():
        await repo.nearest([0.1] * DIMS, 3, ef_search=123)
        seen = await session.execute(text("SELECT current_setting('hnsw.ef_search')"))
        assert seen.scalar() == "123"
    # SET LOCAL lasts for the transaction (a released savepoint keeps it), as documented
    seen = await session.execute(text("SELECT current_setting('hnsw.ef_search')"))
    assert seen.scalar() == "123"
    await session.commit()
    seen = await session.execute(text("SELECT current_setting('hnsw.ef_search')"))
    assert seen.scalar() == "40"


async def test_settings_in_a_rolled_back_savepoint_are_undone(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    repo = MemoryRepository(session)
    await session.execute(text("SELECT 1"))
    nested = await session.begin_nested()
    await repo.nearest([0.1] * DIMS, 3, ef_search=321, iterative_scan="relaxed_order")
    await nested.rollback()
    seen = await session.execute(
        text("SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')")
    )
    assert tuple(seen.one()) == ("40", "off")


async def test_a_failed_search_does_not_leave_its_settings_on_the_pooled_connection(
    vectors: AsyncEngine,
) -> None:
    sessions = create_sessionmaker(vectors)
    async with sessions() as first:
        repo = MemoryRepository(first)
        await repo.nearest([0.1] * DIMS, 3, ef_search=222)
        with pytest.raises(Exception):  # noqa: B017 - any server error
            await first.execute(text("SELECT 1/0"))
    async with sessions() as second:
        seen = await second.execute(text("SELECT current_setting('hnsw.ef_search')"))
        assert seen.scalar() == "40"


async def test_autocommit_chosen_per_session_is_refused_too(vectors: AsyncEngine) -> None:
    async with create_sessionmaker(vectors)() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        with pytest.raises(ConfigurationError, match="autocommit"):
            await MemoryRepository(session).nearest([0.1] * DIMS, 3, ef_search=50)


# ------------------------------------------------------------------ hybrid


@pytest.mark.parametrize(
    "query",
    ["", "the of and", "a & | !", "'coffee", 'coffee" OR "', "(coffee", "coffee:* & !", "\\", "-"],
)
async def test_hybrid_text_with_tsquery_syntax_or_only_stop_words_never_fails(
    vectors: AsyncEngine, session: AsyncSession, query: str
) -> None:
    rows = _rows(12)
    repo = await _load(session, rows)
    hits = await repo.hybrid(rows[0]["embedding"], query, 5)
    assert len(hits) == 5
    assert hits[0].item.id == 0 and hits[0].vector_rank == 1
    assert len({h.item.id for h in hits}) == 5


async def test_hybrid_rows_with_null_text_or_null_embedding(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rows = _rows(10)
    rows[1]["content"] = None
    rows[2]["embedding"] = None
    rows[2]["content"] = "coffee coffee coffee"
    repo = await _load(session, rows)
    hits = await repo.hybrid(rows[1]["embedding"], "coffee", 10)
    by_id = {h.item.id: h for h in hits}
    assert len(hits) == 10  # every row is found by at least one side
    assert by_id[1].text_rank is None and by_id[1].vector_rank == 1
    assert by_id[2].vector_rank is None and by_id[2].text_rank is not None


async def test_hybrid_with_one_side_empty_or_zero_weights(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rows = _rows(12)
    repo = await _load(session, rows)
    q = rows[3]["embedding"]
    no_text = await repo.hybrid(q, "zebra", 4)
    assert [h.text_rank for h in no_text] == [None] * 4
    assert [h.vector_rank for h in no_text] == [1, 2, 3, 4]
    only_text = await repo.hybrid(q, "coffee", 6, weights=(0.0, 1.0))
    assert all(h.text_rank is not None for h in only_text)  # the 6 coffee rows outrank the rest
    zero = await repo.hybrid(q, "coffee", 5, weights=(0.0, 0.0))
    assert len(zero) == 5 and all(h.score == 0 for h in zero)


WORDS = ["coffee", "tea", "work", "beach", "violin", "tax"]


@pytest.fixture
async def corpus(vectors: AsyncEngine, session: AsyncSession) -> MemoryRepository:
    rng = random.Random(11)
    rows = [
        {
            "id": i,
            "persona": i % 3,
            "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6))),
            "embedding": _unit(rng, DIMS),
        }
        for i in range(80)
    ]
    return await _load(session, rows)


async def _brute_force_hybrid(
    session: AsyncSession,
    q: list[float],
    text_query: str,
    k: int,
    pool: int,
    weights: tuple[float, float],
    filters: list[Any],
) -> tuple[list[int], dict[int, int], dict[int, int], dict[int, float]]:
    """RRF in Python over every row's distance and ``ts_rank_cd`` (both from PostgreSQL)."""
    dist = Memory.embedding.op("<=>", return_type=Float)(literal(q, Memory.embedding.type))
    tsq = func.websearch_to_tsquery(text("'english'::regconfig"), text_query)
    doc = func.to_tsvector(text("'english'::regconfig"), Memory.content)
    data = (
        await session.execute(
            select(Memory.id, dist, doc.op("@@")(tsq), func.ts_rank_cd(doc, tsq)).where(*filters)
        )
    ).all()
    vec = sorted(data, key=lambda r: (r[1], r[0]))[:pool]
    txt = sorted((r for r in data if r[2]), key=lambda r: (-r[3], r[0]))[:pool]
    vrank = {r[0]: i + 1 for i, r in enumerate(vec)}
    trank = {r[0]: i + 1 for i, r in enumerate(txt)}
    score = {
        i: (weights[0] / (60 + vrank[i]) if i in vrank else 0.0)
        + (weights[1] / (60 + trank[i]) if i in trank else 0.0)
        for i in set(vrank) | set(trank)
    }
    return sorted(score, key=lambda i: (-score[i], i))[:k], vrank, trank, score


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    words=st.lists(st.sampled_from([*WORDS, "OR", "-tea", '"coffee tea"', "zebra"]), max_size=3),
    k=st.integers(1, 30),
    extra=st.integers(0, 30),
    weights=st.tuples(st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.sampled_from([0.0, 1.0, 2.0])),
    persona=st.sampled_from([None, 0, 1, 2]),
    seed=st.integers(0, 1000),
)
async def test_hybrid_matches_a_brute_force_rrf_in_python(
    corpus: MemoryRepository,
    session: AsyncSession,
    words: list[str],
    k: int,
    extra: int,
    weights: tuple[float, float],
    persona: int | None,
    seed: int,
) -> None:
    q = _unit(random.Random(seed), DIMS)
    text_query = " ".join(words)
    filters = [] if persona is None else [Memory.persona == persona]
    pool = k + extra
    expected, vrank, trank, score = await _brute_force_hybrid(
        session, q, text_query, k, pool, weights, filters
    )
    hits = await corpus.hybrid(
        q, text_query, k, where=filters, candidates=pool, weights=weights, ef_search=1000
    )
    assert [h.item.id for h in hits] == expected
    for h in hits:
        assert h.vector_rank == vrank.get(h.item.id)
        assert h.text_rank == trank.get(h.item.id)
        assert h.score == pytest.approx(score[h.item.id])


# ------------------------------------------------------------------ assert_uses_index


async def test_assert_uses_index_fails_when_only_a_filter_uses_another_index(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    """A query whose ORDER BY the HNSW index cannot serve, but whose filter a btree can: the
    plan uses *an* index, not the one asked for."""
    await _load(session, _rows(30))
    q = [0.1] * DIMS
    stmt = (
        select(Memory.id)
        .where(Memory.persona == 1)
        .order_by(Memory.embedding.op("<->", return_type=Float)(literal(q, Memory.embedding.type)))
        .limit(3)
    )
    with pytest.raises(AssertionError, match="does not use index 'v_memories_embedding_hnsw'"):
        await assert_uses_index(session, stmt, "v_memories_embedding_hnsw")


async def test_assert_uses_index_fails_on_a_halfvec_cast_of_another_width(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    from db_vector_schema import Wide

    from sight_core.db._vector import VectorIndex

    other = VectorIndex.halfvec("embedding", WIDE - 1)
    stmt = select(Wide.id).order_by(other.ordering(Wide, [0.1] * (WIDE - 1))).limit(3)
    with pytest.raises(AssertionError, match="v_wide_embedding_halfvec"):
        await assert_uses_index(session, stmt, "v_wide_embedding_halfvec")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": (float("nan"), 1.0)},
        {"weights": (1.0, float("inf"))},
        {"weights": ()},
        {"weights": (1.0,)},
        {"weights": (1.0, 1.0, 1.0)},
        {"weights": (-0.5, 1.0)},
        {"rrf_k": float("nan")},
        {"rrf_k": -1},
        {"rrf_k": 1.5},
    ],
)
async def test_hybrid_refuses_weights_or_rrf_k_that_would_garble_the_order(
    vectors: AsyncEngine, session: AsyncSession, kwargs: dict[str, Any]
) -> None:
    """A NaN weight makes every score NaN (PostgreSQL sorts NaN above every number), an
    infinite one makes scores inf/NaN: the order would be garbage, not an error."""
    with pytest.raises(ConfigurationError, match=r"hybrid\((weights|rrf_k)="):
        await MemoryRepository(session).hybrid([0.1] * DIMS, "coffee", 3, **kwargs)


async def test_a_textual_filter_is_one_filter(vectors: AsyncEngine, session: AsyncSession) -> None:
    rows = _rows(20)
    repo = await _load(session, rows)
    found = await repo.nearest(rows[0]["embedding"], 10, where=text("v_memories.persona = 3"))
    assert sorted(n.item.id for n in found) == [r["id"] for r in rows if r["persona"] == 3]


async def test_settings_reach_the_connection_of_the_models_bind(
    vectors: AsyncEngine, db_settings: DatabaseSettings
) -> None:
    """A session whose default bind is another engine than the model's (``binds=``): the
    ``SET LOCAL`` must be sent on the connection that runs the search, not the default one."""
    other = create_engine(db_settings)
    try:
        maker = create_sessionmaker(other)
        async with maker(binds={Memory: vectors}) as session:
            await MemoryRepository(session).nearest([0.1] * DIMS, 3, ef_search=77)
            search_conn = await session.connection(bind_arguments={"mapper": Memory})
            seen = await search_conn.execute(text("SELECT current_setting('hnsw.ef_search')"))
            assert seen.scalar() == "77"
    finally:
        await other.dispose()
