"""Adversarial data-layer scenarios against the real embedded PostgreSQL.

Each test names the invariant it attacks. Some found bugs (fixed in src); the others found
nothing and stay as cheap regression guards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import enum
import math
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Numeric,
    String,
    Text,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sight_core.db import Repository, session_scope
from sight_core.errors import (
    ConfigurationError,
    DuplicateError,
    IntegrityViolationError,
    ServiceUnavailableError,
)


def _checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


async def _assert_pool_healthy(engine: AsyncEngine) -> None:
    assert _checked_out(engine) == 0
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT 41 + 1")) == 42
    assert _checked_out(engine) == 0


# --- cancellation is never an outage --------------------------------------------------------


async def test_cancelling_a_query_raises_cancelled_error_and_leaves_the_pool_healthy(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        async with session_scope(sessions) as session:
            await session.execute(text("SELECT 1"))
            started.set()
            await session.execute(text("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.1)  # inside pg_sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_pool_healthy(engine)


async def test_asyncio_timeout_around_a_query_raises_timeout_error(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            async with session_scope(sessions) as session:
                await session.execute(text("SELECT pg_sleep(5)"))
    await _assert_pool_healthy(engine)


async def test_cancelling_during_checkout_raises_cancelled_error(
    db_url: str,
) -> None:
    from sight_core.db import create_engine
    from sight_core.settings import DatabaseSettings

    engine = create_engine(DatabaseSettings(url=db_url, preset="test"), check_budget=False)
    try:
        for delay in (0.0, 0.001, 0.003, 0.01):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(delay):
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT pg_sleep(1)"))
            await _assert_pool_healthy(engine)
    finally:
        await engine.dispose()


async def test_task_group_sibling_failure_cancels_a_query_cleanly(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async def query() -> None:
        async with session_scope(sessions) as session:
            await session.execute(text("SELECT pg_sleep(5)"))

    async def fail() -> None:
        await asyncio.sleep(0.2)
        raise ValueError("sibling")

    with pytest.raises(ExceptionGroup) as raised:
        async with asyncio.TaskGroup() as group:
            group.create_task(query())
            group.create_task(fail())
    # only the sibling's error: the cancelled query is not reported as an outage
    assert [type(e) for e in raised.value.exceptions] == [ValueError]
    await _assert_pool_healthy(engine)


# --- odd models and odd values on the write paths --------------------------------------------


class BreakBase(DeclarativeBase):
    pass


class Tone(enum.Enum):
    """Values that differ from the names (SQLAlchemy stores the names)."""

    loud = "LOUD!"
    quiet = "shh"
    plain_old = "plain old"


class _Odd:
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    user_: Mapped[str | None] = mapped_column("user", String(20))  # keyword, renamed
    tone: Mapped[Tone] = mapped_column(Enum(Tone, name="b_tone"), default=Tone.quiet)
    naive: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=False))
    aware: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric)
    ratio: Mapped[float | None]
    big: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    doc: Mapped[Any] = mapped_column(JSON, nullable=True)
    doc_sql_null: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    hits: Mapped[int] = mapped_column(default=0, onupdate=99)
    touched: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), onupdate=func.now()
    )


class Odd(_Odd, BreakBase):
    __tablename__ = "b_odd"


class OddTwin(_Odd, BreakBase):
    __tablename__ = "b_odd_twin"


class OddRepository(Repository[Odd]):
    pass


@pytest.fixture
async def odd_sessions(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> async_sessionmaker[AsyncSession]:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(1208)"))
        await conn.run_sync(BreakBase.metadata.create_all)
        await conn.execute(text("TRUNCATE b_odd, b_odd_twin"))
    return sessions


_ODD_COLUMNS = [c.name for c in Odd.__table__.columns]


async def _odd_differences(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    differs = " OR ".join(f'a."{c}"::text IS DISTINCT FROM b."{c}"::text' for c in _ODD_COLUMNS)
    listing = ", ".join(f'a."{c}"::text, b."{c}"::text' for c in _ODD_COLUMNS)
    sql = (
        f"SELECT a.id, b.id, {listing} FROM b_odd a "
        f"FULL JOIN b_odd_twin b ON a.id = b.id WHERE {differs}"
    )
    async with sessions() as session:
        rows = (await session.execute(text(sql))).all()
    found = []
    for row in rows:
        for i, name in enumerate(_ODD_COLUMNS):
            if row[2 + 2 * i] != row[3 + 2 * i]:
                found.append(
                    f"{row[0] or row[1]}.{name}: ours {row[2 + 2 * i]!r} != {row[3 + 2 * i]!r}"
                )
    return found


async def _twin_insert(
    sessions: async_sessionmaker[AsyncSession], rows: list[dict[str, Any]]
) -> BaseException | None:
    async with sessions() as session:
        try:
            for row in rows:
                await session.execute(insert(OddTwin), [row])
            await session.commit()
        except DBAPIError as exc:
            return exc
    return None


async def _odd_ours(sessions: async_sessionmaker[AsyncSession], call: Any) -> BaseException | None:
    async with sessions() as session:
        try:
            await call(OddRepository(session))
            await session.commit()
        except (DBAPIError, IntegrityViolationError) as exc:
            return exc
    return None


_ODD_VALUES: dict[str, dict[str, Any]] = {
    "nul-in-text": {"note": "a\x00b"},
    "nul-in-renamed-varchar": {"user_": "a\x00"},
    "int64-overflow": {"big": 2**63},
    "int64-max": {"big": 2**63 - 1, "ratio": -0.0},
    "decimal-nan": {"amount": decimal.Decimal("NaN")},
    "decimal-inf": {"amount": decimal.Decimal("-Infinity")},
    "decimal-tiny-negative-zero": {"amount": decimal.Decimal("-0E-30")},
    "float-specials": {"ratio": math.inf},
    "float-nan": {"ratio": math.nan},
    "naive-into-timestamptz": {"aware": dt.datetime(2024, 3, 31, 2, 30)},
    "aware-into-timestamp": {
        "naive": dt.datetime(
            2024, 3, 31, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))
        )
    },
    "odd-offset-seconds": {
        "aware": dt.datetime(
            1900, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-9, minutes=-30, seconds=-17))
        )
    },
    "enum-value-not-name": {"tone": Tone.plain_old},
    "enum-given-by-name": {"tone": "loud"},
    "json-nan": {"doc": {"x": math.nan}},
    "json-none-vs-sql-null": {"doc": None, "doc_sql_null": None},
    "json-nul-escape": {"doc": "\x00"},
    "keyword-renamed-column": {"user_": "select"},
}


@pytest.mark.parametrize("case", list(_ODD_VALUES))
@pytest.mark.parametrize("form", ["dicts", "instances", "upsert"])
async def test_odd_values_store_what_sqlalchemy_insert_stores(
    odd_sessions: async_sessionmaker[AsyncSession], case: str, form: str
) -> None:
    values = _ODD_VALUES[case]
    rows = [{"id": 1, **values}, {"id": 2, **values}]
    theirs = await _twin_insert(odd_sessions, rows)
    if form == "dicts":
        ours = await _odd_ours(odd_sessions, lambda repo: repo.add_many(rows))
    elif form == "instances":
        ours = await _odd_ours(odd_sessions, lambda repo: repo.add_many([Odd(**r) for r in rows]))
    else:
        ours = await _odd_ours(odd_sessions, lambda repo: repo.upsert_many(rows, on=("id",)))
    assert (ours is None) == (theirs is None), f"ours: {ours!r}; insert: {theirs!r}"
    assert await _odd_differences(odd_sessions) == []


async def test_add_many_of_zero_one_and_past_the_parameter_limit(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    many = [{"id": i, "user_": f"u{i}", "note": None, "doc": [i]} for i in range(40_000)]
    async with odd_sessions() as session:
        repo = OddRepository(session)
        assert await repo.add_many([]) == []
        assert await repo.upsert_many([], on=("id",)) == []
        assert await repo.add_many([{"id": -1}]) == [-1]
        assert await repo.add_many(many) == list(range(40_000))  # VALUES form (JSON column)
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(Odd)) == 40_001
        stored = await session.scalar(select(Odd.doc).where(Odd.id == 39_999))
        assert stored == [39_999]


async def test_upsert_that_updates_applies_onupdate_like_update_does(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with odd_sessions() as session:
        repo = OddRepository(session)
        await repo.add_many([{"id": 1, "note": "a"}, {"id": 2, "note": "b"}])
        updated = await repo.update(1, note="a2")
        assert (updated.hits, updated.touched is not None) == (99, True)
        await repo.upsert_many([{"id": 2, "note": "b2"}], on=("id",))
        await session.commit()
        session.expunge_all()
        row = await session.get(Odd, 2)
        assert row is not None
        assert (row.note, row.hits, row.touched is not None) == ("b2", 99, True)


async def test_mixed_instances_and_dicts_in_one_add_many(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with odd_sessions() as session:
        repo = OddRepository(session)
        ids = await repo.add_many(
            [Odd(id=3, user_="i"), {"id": 1, "user_": "d"}, Odd(id=2), {"id": 4}]
        )
        assert ids == [3, 1, 2, 4]
        await session.commit()
        got = {o.id: (o.user_, o.tone, o.hits) for o in await repo.list()}
        assert got == {
            1: ("d", Tone.quiet, 0),
            2: (None, Tone.quiet, 0),
            3: ("i", Tone.quiet, 0),
            4: (None, Tone.quiet, 0),
        }


async def test_page_ordered_by_an_enum_whose_values_differ_from_names(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with odd_sessions() as session:
        repo = OddRepository(session)
        tones = [Tone.loud, Tone.quiet, Tone.plain_old] * 3
        await repo.add_many([{"id": i, "tone": t} for i, t in enumerate(tones)])
        await session.commit()
        seen: list[int] = []
        cursor = None
        while True:
            page = await repo.page(after=cursor, limit=2, order_by=Odd.tone.desc())
            seen += [o.id for o in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        expected = (
            await session.scalars(select(Odd.id).order_by(Odd.tone.desc(), Odd.id.desc()))
        ).all()
        assert seen == list(expected)


async def test_page_ordered_by_a_renamed_keyword_column(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with odd_sessions() as session:
        repo = OddRepository(session)
        with pytest.raises(ConfigurationError, match="nullable"):
            await repo.page(order_by=Odd.user_)


async def test_a_tampered_cursor_is_refused_as_invalid_not_sent_to_the_server(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    import base64

    import orjson

    async with odd_sessions() as session:
        repo = OddRepository(session)
        await repo.add_many([{"id": i} for i in range(3)])
        page = await repo.page(limit=1)
        assert page.next_cursor is not None
        raw = orjson.loads(base64.urlsafe_b64decode(page.next_cursor + "=="))
        for bad in ("abc", [1], {"x": 1}, 1.5, True, 2**70):
            tampered = base64.urlsafe_b64encode(
                orjson.dumps({"o": raw["o"], "v": [bad]}, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
                if not isinstance(bad, int) or isinstance(bad, bool) or bad < 2**63
                else b'{"o":"%s","v":[%d]}' % (raw["o"].encode(), bad)
            ).decode()
            with pytest.raises(ConfigurationError, match="invalid page cursor"):
                await repo.page(after=tampered, limit=1)
        # the session is still usable after the refusals
        assert len((await repo.page(after=page.next_cursor, limit=5)).items) == 2


async def test_a_bad_id_fails_only_its_own_loader_caller(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with odd_sessions() as session:
        repo = OddRepository(session)
        await repo.add_many([{"id": 1}, {"id": 2}])
        loader = repo.loader()
        results = await asyncio.gather(
            loader.load(1), loader.load("2"), loader.load("two"), return_exceptions=True
        )
        assert [getattr(r, "id", None) for r in results[:2]] == [1, 2]
        assert isinstance(results[2], ValueError)
        assert "'two'" in str(results[2])
        assert loader.queries == 1


async def test_get_many_with_mixed_id_types_for_one_row(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with odd_sessions() as session:
        repo = OddRepository(session)
        await repo.add_many([{"id": 1}, {"id": 2}])
        got = await repo.get_many([1, "1", "2", 2])
        assert [o.id for o in got] == [1, 1, 2, 2]
        assert got[0] is got[1]
        with pytest.raises(ValueError, match="'x'"):
            await repo.get_many([1, "x"])


# --- the write SAVEPOINT and concurrent sessions ------------------------------------------------


@pytest.fixture
async def member_sessions(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> async_sessionmaker[AsyncSession]:
    from db_write_schema import Member, Segment, reset

    await reset(engine)
    async with sessions() as session:
        session.add_all([Segment(id=1, name="b2b"), Member(email="taken@x.io", segment_id=1)])
        await session.commit()
    return sessions


async def _member_emails(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    from db_write_schema import Member

    async with sessions() as session:
        return list((await session.scalars(select(Member.email).order_by(Member.email))).all())


async def test_a_failed_write_keeps_other_pending_objects_of_the_session(
    member_sessions: async_sessionmaker[AsyncSession],
) -> None:
    from db_write_schema import Member, MemberRepository

    async with session_scope(member_sessions) as session:
        session.add(Member(email="pending@x.io"))  # not flushed yet
        with pytest.raises(DuplicateError):
            await MemberRepository(session).add_many([{"email": "taken@x.io"}])
        session.add(Member(email="later@x.io"))
    assert await _member_emails(member_sessions) == ["later@x.io", "pending@x.io", "taken@x.io"]


async def test_a_failed_write_inside_the_callers_own_savepoint_keeps_that_savepoint(
    member_sessions: async_sessionmaker[AsyncSession],
) -> None:
    from db_write_schema import Member, MemberRepository

    async with session_scope(member_sessions) as session:
        repo = MemberRepository(session)
        async with session.begin_nested():
            await repo.add(Member(email="outer@x.io"))
            with pytest.raises(DuplicateError):
                await repo.upsert_many(
                    [{"email": "new@x.io", "id": (await repo.list())[0].id}], on=("email",)
                )
            await repo.add(Member(email="inner-after@x.io"))
    assert await _member_emails(member_sessions) == [
        "inner-after@x.io",
        "outer@x.io",
        "taken@x.io",
    ]


async def test_a_write_cancelled_mid_savepoint_never_commits_half_and_the_session_says_so(
    engine: AsyncEngine, member_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A timeout around one write: the caller catches it and goes on with the same session.

    SQLAlchemy invalidates a connection whose statement was cancelled (its state is unknown),
    so the transaction is gone: the next statement must fail loudly (never a commit that
    "succeeds" without the earlier rows), and after ``rollback()`` the session works again.
    """
    from db_write_schema import Member, MemberRepository

    async with member_sessions() as session:
        repo = MemberRepository(session)
        await repo.add(Member(email="before@x.io"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await repo.add_many(
                    [{"email": f"{i}@bulk.io", "name": "x" * 50} for i in range(200_000)]
                )
        with pytest.raises(PendingRollbackError):
            await repo.add(Member(email="after@x.io"))
        await session.rollback()
        await repo.add(Member(email="again@x.io"))
        await session.commit()
    assert await _member_emails(member_sessions) == ["again@x.io", "taken@x.io"]
    await _assert_pool_healthy(engine)


async def test_get_or_create_race_between_two_sessions_yields_one_row(
    member_sessions: async_sessionmaker[AsyncSession],
) -> None:
    from db_write_schema import Member, MemberRepository

    gate = asyncio.Barrier(2)

    async def get_or_create(name: str) -> Any:
        async with session_scope(member_sessions) as session:
            repo = MemberRepository(session)
            found = await repo.list(Member.email == "race@x.io")
            await gate.wait()  # both looked, both saw nothing
            if found:
                return found[0].id
            try:
                made = await repo.add(Member(email="race@x.io", name=name))
                await asyncio.sleep(0.1)  # hold the uncommitted row: the other insert waits
                return made.id
            except DuplicateError:
                [member] = await repo.list(Member.email == "race@x.io")
                return member.id

    first, second = await asyncio.gather(get_or_create("a"), get_or_create("b"))
    assert first == second
    assert (await _member_emails(member_sessions)).count("race@x.io") == 1


async def test_two_sessions_upserting_the_same_keys_in_opposite_orders_do_not_deadlock(
    member_sessions: async_sessionmaker[AsyncSession],
) -> None:
    from db_write_schema import Member, MemberRepository

    emails = [f"{i}@x.io" for i in range(3000)]
    gate = asyncio.Barrier(2)

    async def upsert(order: list[str], name: str) -> None:
        async with session_scope(member_sessions) as session:
            await session.execute(text("SELECT 1"))
            await gate.wait()
            rows = [{"email": e, "name": name} for e in order]
            await MemberRepository(session).upsert_many(rows, on=("email",))
            await asyncio.sleep(0.05)

    for _ in range(3):
        await asyncio.gather(upsert(emails, "a"), upsert(emails[::-1], "b"))
    async with member_sessions() as session:
        names = set(
            (await session.scalars(select(Member.name).where(Member.email.in_(emails)))).all()
        )
    assert len(names) == 1  # one whole upsert won every row (they ran one after the other)


# --- outages never show the password; the pool recovers after a restart ----------------------


def test_a_password_with_an_unencoded_at_sign_is_refused_at_settings_load() -> None:
    """SQLAlchemy splits ``user:se@cretZ@host`` at the first ``@``: the engine would dial the
    host ``cretZ@127.0.0.1`` and every outage message would quote that piece of the password."""
    from pydantic import ValidationError

    from sight_core.settings import DatabaseSettings

    with pytest.raises(ValidationError, match="percent-encoded") as raised:
        DatabaseSettings(url="postgresql+asyncpg://u:se@cretZ@127.0.0.1:5432/db")
    assert "cretZ" not in str(raised.value)
    encoded = DatabaseSettings(url="postgresql+asyncpg://u:se%40cretZ@127.0.0.1:5432/db")
    assert "cretZ" not in repr(encoded)


def test_a_rejected_url_is_never_echoed_in_the_validation_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydantic quotes the input of a failed field (``input_value='postgresql://u:pw@...'``)."""
    from pydantic import ValidationError

    from sight_core.settings import DatabaseSettings, SightSettings

    bad = "postgresql+asyncpg://u:p#ssZZ@127.0.0.1:5432/db"
    with pytest.raises(ValidationError) as raised:
        DatabaseSettings(url=bad)
    assert "ssZZ" not in str(raised.value)
    monkeypatch.setenv("SIGHT_DATABASE__URL", bad)
    with pytest.raises(ConfigurationError) as from_env:
        SightSettings(_env_file=None)  # type: ignore[call-arg]
    assert "ssZZ" not in str(from_env.value)
    assert "percent-encoded" in str(from_env.value)


async def test_the_pool_recovers_after_a_server_restart(fault_proxy: Any, db_url: str) -> None:
    """Three pooled connections die with the server ("restart": all reset, refused while down).

    While down: ServiceUnavailableError naming the host, not the password. Once back: every
    request works again at once (pre-ping replaces the dead connections), none leaks.
    """
    from sight_core.db import create_engine
    from sight_core.settings import DatabaseSettings

    proxy = fault_proxy(db_url)
    scheme, _, rest = db_url.partition("://")
    user = rest.rpartition("@")[0].split(":", 1)[0] or "postgres"
    url = proxy.url_for(f"{scheme}://{user}:pw-Zq9@{rest.rpartition('@')[2]}")
    engine = create_engine(
        DatabaseSettings(url=url, preset="api", connect_timeout=1.0), check_budget=False
    )

    async def one(n: int) -> int:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(0.05)"))
            return int(await conn.scalar(text(f"SELECT {n}")) or 0)

    try:
        assert await asyncio.gather(one(1), one(2), one(3)) == [1, 2, 3]
        proxy.refuse()
        assert proxy.reset() == 3
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError) as raised:
                await one(0)
            assert f"127.0.0.1:{proxy.port}" in str(raised.value)
            assert "pw-Zq9" not in str(raised.value) and "pw-Zq9" not in repr(
                raised.value.__cause__
            )
        proxy.restore()
        assert await asyncio.gather(one(4), one(5), one(6)) == [4, 5, 6]
        assert _checked_out(engine) == 0
    finally:
        await engine.dispose()


# --- the strict-session lazy-load guard --------------------------------------------------------


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> None:
    from db_schema import seed

    async with sessions() as session:
        await seed(session, personas=10, responses=2)


async def test_strict_guard_covers_awaitable_attrs_refresh_expire_and_identity_map(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], seeded: None
) -> None:
    from db_schema import Persona, Project
    from sqlalchemy.orm import selectinload

    from sight_core.db import count_queries
    from sight_core.errors import UnloadedRelationError

    async with sessions() as session:
        personas = (await session.scalars(select(Persona).order_by(Persona.email))).all()
        async with count_queries(engine) as q:
            with pytest.raises(UnloadedRelationError, match=r"Persona\.responses"):
                await personas[0].awaitable_attrs.responses
            # many-to-one: the project is not in the identity map yet -> refused
            with pytest.raises(UnloadedRelationError, match=r"Persona\.project"):
                await personas[1].awaitable_attrs.project
        assert q.count == 0
        # once the project is in the identity map, every persona's .project is free
        held = (await session.scalars(select(Project))).all()  # the identity map is weak
        async with count_queries(engine) as q:
            projects = {p.project.id for p in personas}
        assert (projects, q.count) == ({held[0].id}, 0)
        # refresh(obj, ["rel"]) is an explicit load and goes through (SQLAlchemy: the row's
        # SELECT, then the relation's)
        async with count_queries(engine) as q:
            await session.refresh(personas[2], ["responses"])
        assert (len(personas[2].responses), q.count) == (2, 2)
        # expiring a loaded relation makes the next read a lazy load: refused, not silent
        session.expire(personas[2], ["responses"])
        with pytest.raises(UnloadedRelationError):
            await personas[2].awaitable_attrs.responses
        # a selectinload chain loads every level in one query per hop
        async with count_queries(engine) as q:
            projects_loaded = (
                await session.scalars(
                    select(Project).options(
                        selectinload(Project.personas).selectinload(Persona.responses)
                    )
                )
            ).all()
            total = sum(len(p.responses) for pr in projects_loaded for p in pr.personas)
        assert (total, q.count) == (20, 3)


async def test_a_before_flush_hook_reading_lazy_relations_is_refused(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], seeded: None
) -> None:
    from db_schema import Persona
    from sqlalchemy import event

    from sight_core.db import count_queries
    from sight_core.errors import UnloadedRelationError

    async with sessions() as session:
        personas = (await session.scalars(select(Persona))).all()

        def audit(sync_session: Any, _ctx: Any, _instances: Any) -> None:
            for persona in sync_session.dirty:
                _ = len(persona.responses)  # one lazy query per dirty persona

        event.listen(session.sync_session, "before_flush", audit)
        for persona in personas:
            persona.age += 1
        async with count_queries(engine) as q:
            with pytest.raises(UnloadedRelationError):
                await session.flush()
        assert q.count == 0


async def test_int_ids_given_as_str_must_be_plain_digits(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """``int()`` also reads ``"1_000"``, ``" 7 "`` and ``"٣"`` (Arabic-Indic 3): an API path
    ``/items/1_000`` must not answer item 1000."""
    async with odd_sessions() as session:
        repo = OddRepository(session)
        await repo.add_many([{"id": 3}, {"id": 1000}, {"id": -5}])
        assert (await repo.get("-5")).id == -5
        assert (await repo.get("+3")).id == 3
        for odd in ("1_000", " 3 ", "\u0663", "3\n"):
            with pytest.raises(ValueError, match="is not a valid int"):
                await repo.get(odd)


async def test_stale_cursors_and_cursors_of_the_other_direction(
    odd_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with odd_sessions() as session:
        repo = OddRepository(session)
        await repo.add_many([{"id": i} for i in range(6)])
        await session.commit()
        first = await repo.page(limit=2, order_by=Odd.id)
        assert first.next_cursor is not None
        # the row the cursor points at is deleted: the listing goes on after it
        await repo.delete(1)
        rest = await repo.page(after=first.next_cursor, limit=10, order_by=Odd.id)
        assert [o.id for o in rest.items] == [2, 3, 4, 5]
        with pytest.raises(ConfigurationError, match="another model or ordering"):
            await repo.page(after=first.next_cursor, limit=2, order_by=Odd.id.desc())


async def test_upsert_merges_rows_whose_key_is_given_as_str_and_as_uuid(
    member_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """One row named twice, once by ``str(id)``: merged, not "cannot affect row a second time"."""
    from db_write_schema import Member, MemberRepository

    async with session_scope(member_sessions) as session:
        [taken] = (await session.scalars(select(Member))).all()
        rows = [
            {"id": str(taken.id), "email": "taken@x.io", "name": "by str"},
            {"id": taken.id, "email": "taken@x.io", "age": 41},
        ]
        [member] = await MemberRepository(session).upsert_many(rows, on=("id",))
        assert (member.name, member.age) == ("by str", 41)
