"""Vector search on the real PostgreSQL + pgvector: presets, exactly k, SET LOCAL, hybrid.

Invariants:
- ``repo.nearest(v, k, where=f)`` returns exactly ``min(k, rows matching f)`` rows, all matching
  ``f``, nearest first, whatever the filter's selectivity and the search settings (hypothesis).
- Settings asked of a search hold for its transaction only: they are visible through
  ``current_setting`` inside it and gone for the next user of the pooled connection.
- ``repo.hybrid`` is one statement; its fusion is monotonic in each side's rank and a row found
  by one side only still ranks (hypothesis, evaluated by PostgreSQL itself).
- The index DDL and the query share one expression: ``assert_uses_index`` passes for every
  preset and fails for a query that casts or measures differently.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from db_vector_schema import (
    BITS,
    DIMS,
    WIDE,
    Coarse,
    CoarseRepository,
    Memory,
    MemoryRepository,
    Quantized,
    QuantizedRepository,
    Wide,
    WideRepository,
    reset,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy import Float, cast, literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.schema import CreateIndex

from sight_core.db import (
    TextSearch,
    VectorIndex,
    assert_uses_index,
    count_queries,
    create_engine,
    create_sessionmaker,
    rrf_score,
)
from sight_core.errors import ConfigurationError
from sight_core.llm import fake_vector
from sight_core.settings import DatabaseSettings

PERSONAS = 50  # each persona owns 2 % of the memories


def _unit(rng: random.Random, dims: int) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dims)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def _cosine_distance(a: list[float], b: list[float]) -> float:
    return 1.0 - sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture
async def vectors(engine: AsyncEngine) -> AsyncEngine:
    await reset(engine)
    return engine


@pytest.fixture
async def memories(
    vectors: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> list[dict[str, Any]]:
    """400 memories with random unit embeddings, persona = id % 50."""
    rng = random.Random(18)
    rows = [
        {
            "id": i,
            "persona": i % PERSONAS,
            "topic": ("coffee", "work", "family", "travel")[i % 4],
            "content": f"memory {i} about {('coffee', 'work', 'family', 'travel')[i % 4]}",
            "embedding": _unit(rng, DIMS),
        }
        for i in range(400)
    ]
    async with sessions() as session:
        await MemoryRepository(session).add_many(rows)
        await session.commit()
    return rows


# ------------------------------------------------------------------ presets and DDL


def test_presets_refuse_what_pgvector_cannot_index_naming_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"dimensions=3072.*VectorIndex.halfvec"):
        VectorIndex("embedding", dimensions=3072)
    with pytest.raises(ConfigurationError, match="needs dimensions="):
        VectorIndex("embedding", storage="halfvec")
    with pytest.raises(ConfigurationError, match="ef_construction=20"):
        VectorIndex.hnsw("embedding", m=16, ef_construction=20)
    with pytest.raises(ConfigurationError, match="dimensions=4001"):
        VectorIndex.halfvec("embedding", 4001)
    with pytest.raises(ConfigurationError, match="config="):
        TextSearch("content", config="english'; drop table x; --")


def test_ddl_is_built_on_the_query_expression() -> None:
    from sqlalchemy.dialects import postgresql

    index = WideRepository.vector_index
    assert index is not None
    [created] = [i for i in Wide.__table__.indexes if i.name == "v_wide_embedding_halfvec"]
    ddl = str(CreateIndex(created).compile(dialect=postgresql.dialect()))
    assert "USING hnsw (CAST(embedding AS halfvec(2100)) halfvec_cosine_ops)" in ddl
    assert "WITH (m = 8, ef_construction = 32)" in ddl
    order = index.ordering(Wide, [0.0] * WIDE).compile(dialect=postgresql.dialect())
    assert str(order).startswith("CAST(v_wide.embedding AS halfvec(2100)) <=>")


async def test_every_preset_query_uses_its_index(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    q16, q64, qwide = [0.1] * DIMS, [0.1] * BITS, [0.1] * WIDE
    await assert_uses_index(
        session, MemoryRepository(session).nearest_statement(q16, 5), "v_memories_embedding_hnsw"
    )
    await assert_uses_index(
        session, WideRepository(session).nearest_statement(qwide, 5), "v_wide_embedding_halfvec"
    )
    await assert_uses_index(
        session, CoarseRepository(session).nearest_statement(q16, 5), "v_coarse_embedding_ivfflat"
    )
    await assert_uses_index(
        session,
        QuantizedRepository(session).nearest_statement(q64, 5),
        "v_quantized_embedding_bits",
    )
    await assert_uses_index(
        session,
        MemoryRepository(session).hybrid_statement(q16, "coffee", 5),
        "v_memories_content_fts",
    )


async def test_assert_uses_index_fails_on_a_mismatched_expression(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    query = [0.1] * WIDE
    # the index is on embedding::halfvec(2100) with cosine; this orders the raw vector
    plain = (
        select(Wide)
        .order_by(Wide.embedding.op("<=>", return_type=Float)(literal(query, Vector(WIDE))))
        .limit(5)
    )
    with pytest.raises(AssertionError, match="does not use index 'v_wide_embedding_halfvec'"):
        await assert_uses_index(session, plain, "v_wide_embedding_halfvec")
    # right cast, wrong distance: l2 is not the index's operator class
    l2 = (
        select(Wide)
        .order_by(
            cast(Wide.embedding, HALFVEC(WIDE)).op("<->", return_type=Float)(
                literal(query, HALFVEC(WIDE))
            )
        )
        .limit(5)
    )
    with pytest.raises(AssertionError, match="v_wide_embedding_halfvec"):
        await assert_uses_index(session, l2, "v_wide_embedding_halfvec")
    # the text side with another configuration than the index's
    other = TextSearch("content", config="simple")
    words = select(Memory.id).where(other.document(Memory).op("@@")(other.query("coffee")))
    with pytest.raises(AssertionError, match="v_memories_content_fts"):
        await assert_uses_index(session, words, "v_memories_content_fts")
    # nothing leaked from the check: sequential scans are allowed again in this transaction
    assert (
        await session.execute(text("SELECT current_setting('enable_seqscan')"))
    ).scalar() == "on"


# ------------------------------------------------------------------ nearest: exactly k


async def test_fake_embeddings_rank_the_related_memory_first(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    contents = [
        "I drink black coffee every morning before work",
        "my daughter plays the violin in the school orchestra",
        "the quarterly tax filing deadline is next week",
        "we flew to Lisbon for the summer holidays",
    ]
    repo = MemoryRepository(session)
    await repo.add_many(
        [
            {"id": i, "persona": 1, "content": c, "embedding": fake_vector(c, DIMS)}
            for i, c in enumerate(contents)
        ]
    )
    found = await repo.nearest(fake_vector("which coffee does she drink", DIMS), k=2)
    assert found[0].item.content == contents[0]
    assert found[0].distance < found[1].distance


async def test_a_plain_filtered_hnsw_query_returns_fewer_than_k(
    memories: list[dict[str, Any]], session: AsyncSession
) -> None:
    """The failure mode ``nearest`` exists for: HNSW visits ``ef_search`` rows, then the filter
    drops 98 % of them."""
    query = memories[0]["embedding"]
    await session.execute(text("SELECT set_config('hnsw.ef_search', '10', true)"))
    # a 2 % filter no other index serves; the planner of a large table picks HNSW for it
    await session.execute(text("SELECT set_config('enable_seqscan', 'off', true)"))
    only = (Memory.id % PERSONAS) == 7
    plain = (
        select(Memory.id)
        .where(only)
        .order_by(Memory.embedding.op("<=>", return_type=Float)(literal(query, Vector(DIMS))))
        .limit(5)
    )
    await assert_uses_index(session, plain, "v_memories_embedding_hnsw")
    short = (await session.execute(plain)).all()
    assert len(short) < 5
    found = await MemoryRepository(session).nearest(query, 5, where=only)
    assert len(found) == 5


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    personas=st.sets(st.integers(0, PERSONAS - 1), max_size=6),
    topic=st.sampled_from([None, "coffee", "work"]),
    k=st.integers(1, 40),
    ef_search=st.sampled_from([None, 1, 5, 40, 200]),
    iterative=st.sampled_from([None, "off", "strict_order", "relaxed_order"]),
    probe=st.integers(0, 399),
    through_hnsw=st.booleans(),
    extra=st.sampled_from([None, 0, 25]),
)
async def test_nearest_returns_exactly_k_whenever_k_rows_match(
    memories: list[dict[str, Any]],
    sessions: async_sessionmaker[AsyncSession],
    personas: set[int],
    topic: str | None,
    k: int,
    ef_search: int | None,
    iterative: Any,
    probe: int,
    through_hnsw: bool,
    extra: int | None,
) -> None:
    query = memories[probe]["embedding"]
    candidates = None if extra is None else k + extra
    # through_hnsw: a filter no btree serves, sequential scans discouraged: the planner walks
    # the HNSW graph (the production plan on a large table); else the persona btree answers
    owner = (Memory.id % PERSONAS) if through_hnsw else Memory.persona
    where = [owner.in_(sorted(personas))]
    matching = [r for r in memories if r["persona"] in personas]
    if topic is not None:
        where.append(Memory.topic == topic)
        matching = [r for r in matching if r["topic"] == topic]
    async with sessions() as session:
        repo = MemoryRepository(session)
        if through_hnsw and personas:  # (an empty IN is false: no scan at all)
            await session.execute(text("SELECT set_config('enable_seqscan', 'off', true)"))
            await assert_uses_index(
                session, repo.nearest_statement(query, k, where=where), "v_memories_embedding_hnsw"
            )
        found = await repo.nearest(
            query,
            k,
            where=where,
            candidates=candidates,
            ef_search=ef_search,
            iterative_scan=iterative,
        )
    assert len(found) == min(k, len(matching))
    allowed = {r["id"] for r in matching}
    assert all(n.item.id in allowed for n in found)
    distances = [n.distance for n in found]
    assert distances == sorted(distances)
    by_id = {r["id"]: r["embedding"] for r in matching}
    for n in found:
        assert n.distance == pytest.approx(_cosine_distance(query, by_id[n.item.id]), abs=1e-5)


async def test_exact_branch_gives_the_true_top_k_when_the_index_comes_back_short(
    memories: list[dict[str, Any]], session: AsyncSession
) -> None:
    query = memories[3]["embedding"]
    matching = [r for r in memories if r["persona"] == 11]
    truth = sorted(matching, key=lambda r: _cosine_distance(query, r["embedding"]))[:6]
    found = await MemoryRepository(session).nearest(
        query, 6, where=Memory.persona == 11, ef_search=1
    )
    assert [n.item.id for n in found] == [r["id"] for r in truth]


# ------------------------------------------------------------------ SET LOCAL


async def test_settings_are_set_local_and_visible_in_the_transaction(
    memories: list[dict[str, Any]], session: AsyncSession
) -> None:
    repo = MemoryRepository(session)
    await repo.nearest(memories[0]["embedding"], 3, ef_search=77, iterative_scan="strict_order")
    row = (
        await session.execute(
            text("SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')")
        )
    ).one()
    assert tuple(row) == ("77", "strict_order")
    await session.rollback()
    after = await session.execute(text("SELECT current_setting('hnsw.ef_search')"))
    assert after.scalar() == "40"


async def test_settings_never_leak_to_the_next_user_of_a_pooled_connection(
    vectors: AsyncEngine, db_settings: DatabaseSettings
) -> None:
    engine = create_engine(db_settings.model_copy(update={"pool_size": 1, "max_overflow": 0}))
    sessions = create_sessionmaker(engine)
    try:
        pids = set()
        async with sessions() as first:
            await MemoryRepository(first).nearest([0.1] * DIMS, 3, ef_search=5)
            pids.add((await first.execute(text("SELECT pg_backend_pid()"))).scalar())
            await first.commit()
        async with sessions() as second:
            pids.add((await second.execute(text("SELECT pg_backend_pid()"))).scalar())
            seen = await second.execute(text("SELECT current_setting('hnsw.ef_search')"))
            assert seen.scalar() == "40"
        assert len(pids) == 1  # the same server connection served both sessions
    finally:
        await engine.dispose()


async def test_settings_under_autocommit_are_refused(vectors: AsyncEngine) -> None:
    auto = vectors.execution_options(isolation_level="AUTOCOMMIT")
    async with create_sessionmaker(auto)() as session:
        repo = MemoryRepository(session)
        with pytest.raises(ConfigurationError, match="autocommit"):
            await repo.nearest([0.1] * DIMS, 3, ef_search=100)
        assert await repo.nearest([0.1] * DIMS, 3) == []  # no settings asked: allowed


def test_settings_of_the_other_method_or_out_of_range_are_refused() -> None:
    from sight_core.db._vector import search_settings

    hnsw, ivf = VectorIndex.hnsw("e"), VectorIndex.ivfflat("e", lists=10)
    with pytest.raises(ConfigurationError, match="probes= applies to IVFFlat"):
        search_settings(hnsw, probes=3)
    with pytest.raises(ConfigurationError, match="ef_search=0"):
        search_settings(hnsw, ef_search=0)
    with pytest.raises(ConfigurationError, match="strict_order"):
        search_settings(ivf, iterative_scan="strict_order")
    assert search_settings(ivf, probes=10, iterative_scan="relaxed_order") == {
        "ivfflat.probes": "10",
        "ivfflat.iterative_scan": "relaxed_order",
    }


# ------------------------------------------------------------------ other presets


async def test_wide_vectors_search_through_the_halfvec_index(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rng = random.Random(3)
    rows = [{"id": i, "grp": i % 3, "embedding": _unit(rng, WIDE)} for i in range(30)]
    repo = WideRepository(session)
    await repo.add_many(rows)
    query = rows[4]["embedding"]
    found = await repo.nearest(query, 4, where=Wide.grp == 1, ef_search=10)
    assert found[0].item.id == 4
    assert len(found) == 4 and all(n.item.grp == 1 for n in found)
    with pytest.raises(ConfigurationError, match="2-dimension query vector"):
        await repo.nearest([0.1, 0.2], 3)


async def test_binary_quantization_reranks_by_the_exact_distance(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rng = random.Random(5)
    rows = [{"id": i, "grp": i % 4, "embedding": _unit(rng, BITS)} for i in range(200)]
    repo = QuantizedRepository(session)
    await repo.add_many(rows)
    query = rows[8]["embedding"]
    found = await repo.nearest(query, 7, where=Quantized.grp == 0)
    assert len(found) == 7 and found[0].item.id == 8
    exact = [_cosine_distance(query, n.item.embedding) for n in found]
    assert [n.distance for n in found] == pytest.approx(exact, abs=1e-5)
    assert exact == sorted(exact)


async def test_ivfflat_with_one_probe_still_returns_k(
    vectors: AsyncEngine, session: AsyncSession
) -> None:
    rng = random.Random(9)
    repo = CoarseRepository(session)
    await repo.add_many(
        [{"id": i, "grp": i % 20, "embedding": _unit(rng, DIMS)} for i in range(300)]
    )
    await session.execute(text("REINDEX INDEX v_coarse_embedding_ivfflat"))  # lists from rows
    found = await repo.nearest([0.2] * DIMS, 10, where=Coarse.grp == 3, probes=1)
    assert len(found) == 10 and all(n.item.grp == 3 for n in found)


# ------------------------------------------------------------------ hybrid


@pytest.fixture
async def notes(vectors: AsyncEngine, session: AsyncSession) -> MemoryRepository:
    contents = [
        "black coffee every morning before work",  # 0: both sides
        "espresso machine maintenance schedule",  # 1: near coffee in meaning only by words
        "coffee beans from Ethiopia and Colombia",  # 2: text side
        "my daughter plays the violin",  # 3
        "the tax deadline is next week",  # 4
        "a long walk on the beach",  # 5
    ]
    repo = MemoryRepository(session)
    await repo.add_many(
        [
            {"id": i, "persona": i % 2, "content": c, "embedding": fake_vector(c, DIMS)}
            for i, c in enumerate(contents)
        ]
    )
    await session.flush()
    return repo


async def test_hybrid_is_one_statement_and_fuses_both_sides(
    notes: MemoryRepository, engine: AsyncEngine
) -> None:
    query = fake_vector("morning coffee before work", DIMS)
    async with count_queries(engine) as counter:
        hits = await notes.hybrid(query, "coffee", k=4)
    assert counter.count == 1, counter.report()
    assert len(hits) == 4
    assert hits[0].item.id == 0 and hits[0].vector_rank == 1 and hits[0].text_rank is not None
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    text_only = await notes.hybrid(query, "coffee", k=6, weights=(0.0, 1.0))
    assert {h.item.id for h in text_only[:2]} == {0, 2}  # the two rows that say "coffee"


async def test_hybrid_applies_the_filter_to_both_sides(notes: MemoryRepository) -> None:
    query = fake_vector("coffee", DIMS)
    hits = await notes.hybrid(query, "coffee", k=3, where=Memory.persona == 1)
    assert len(hits) == 3 and all(h.item.persona == 1 for h in hits)


async def test_hybrid_row_found_by_text_only_still_ranks(notes: MemoryRepository) -> None:
    query = fake_vector("violin", DIMS)
    hits = await notes.hybrid(query, "Ethiopia", k=6, candidates=6)
    by_id = {h.item.id: h for h in hits}
    assert by_id[2].text_rank == 1 and by_id[2].score > 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    v=st.integers(1, 500),
    t=st.one_of(st.none(), st.integers(1, 500)),
    weights=st.tuples(st.floats(0.01, 5), st.floats(0.01, 5)),
    rrf_k=st.integers(0, 100),
)
async def test_rrf_is_monotonic_in_each_rank_and_one_sided_rows_rank(
    session: AsyncSession,
    v: int,
    t: int | None,
    weights: tuple[float, float],
    rrf_k: int,
) -> None:
    def score(a: int | None, b: int | None) -> Any:
        return rrf_score(literal(a), literal(b), weights=weights, rrf_k=rrf_k)

    row = (
        await session.execute(
            select(score(v, t), score(v + 1, t), score(None, t), score(v, None), score(t, v))
        )
    ).one()
    best, worse, text_only, vector_only, swapped = row
    assert best > worse  # a better vector rank never lowers the fused score
    assert vector_only > 0  # a row only one side found still ranks
    if t is not None:
        assert text_only > 0
        assert best > text_only and best > vector_only
        if t + 1 <= 500:
            lower = (await session.execute(select(score(v, t + 1)))).scalar()
            assert best > lower  # ... and so does a better text rank
    assert swapped is not None


def test_cache_version_follows_the_index_and_the_search_settings() -> None:
    index = VectorIndex.halfvec("embedding", 3072)
    version = index.cache_version(k=10, ef_search=100)
    assert isinstance(version, int) and version >= 1
    assert version == VectorIndex.halfvec("embedding", 3072).cache_version(ef_search=100, k=10)
    assert version != index.cache_version(k=10, ef_search=200)
    assert version != VectorIndex.halfvec("embedding", 3072, m=24).cache_version(
        k=10, ef_search=100
    )


async def test_candidates_below_k_are_refused(vectors: AsyncEngine, session: AsyncSession) -> None:
    with pytest.raises(ConfigurationError, match="candidates=3"):
        await MemoryRepository(session).nearest([0.1] * DIMS, 5, candidates=3)
