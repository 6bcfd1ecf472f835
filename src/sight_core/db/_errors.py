"""Integrity errors -> :class:`DuplicateError` / :class:`ForeignKeyError` naming the constraint.

And :func:`write_savepoint`: a repository write that fails leaves its session usable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from sight_core.errors import DuplicateError, ForeignKeyError, IntegrityViolationError

__all__ = ["integrity_errors", "translate_integrity_error", "write_savepoint"]

_UNIQUE = "23505"
_FOREIGN_KEY = "23503"
_KINDS = {
    "23502": "not-null constraint",
    "23514": "check constraint",
    "23P01": "exclusion constraint",
}


def _attr(exc: BaseException, name: str) -> str | None:
    """``name`` from the DBAPI error or the asyncpg error it wraps (its ``__cause__``)."""
    seen: BaseException | None = exc
    for _ in range(3):
        if seen is None:
            break
        value = getattr(seen, name, None)
        if isinstance(value, str) and value:
            return value
        seen = seen.__cause__
    return None


def translate_integrity_error(exc: IntegrityError) -> IntegrityViolationError:
    """The sight-core error for a SQLAlchemy ``IntegrityError``; the caller raises it ``from exc``.

    Messages name the constraint and table but never the offending values (they may hold personal
    data): the server's ``DETAIL`` stays on ``__cause__``.
    """
    orig = exc.orig if exc.orig is not None else exc
    sqlstate = _attr(orig, "sqlstate")
    constraint = _attr(orig, "constraint_name")
    table = _attr(orig, "table_name")
    where = f" on table {table!r}" if table else ""
    named = f" {constraint!r}" if constraint else ""
    if sqlstate == _UNIQUE:
        return DuplicateError(f"duplicate key violates unique constraint{named}{where}", constraint)
    if sqlstate == _FOREIGN_KEY:
        return ForeignKeyError(f"foreign-key constraint{named} violated{where}", constraint)
    kind = _KINDS.get(sqlstate or "", "integrity constraint")
    return IntegrityViolationError(f"{kind}{named} violated{where}", constraint)


@contextmanager
def integrity_errors() -> Iterator[None]:
    """Re-raise any ``IntegrityError`` inside the block as its sight-core error."""
    try:
        yield
    except IntegrityError as exc:
        raise translate_integrity_error(exc) from exc


@asynccontextmanager
async def write_savepoint(session: AsyncSession, *, enabled: bool = True) -> AsyncIterator[None]:
    """Run the block in a SAVEPOINT; on any error roll back to it and re-raise (translated).

    The session's transaction survives a failed write: what ran before the block is kept, what
    the block wrote is undone as a whole, and the session takes the next statement (no
    ``current transaction is aborted``, no ``PendingRollbackError``). Costs two statements
    (``SAVEPOINT``, ``RELEASE SAVEPOINT``). Objects pending in the session are flushed first,
    outside the savepoint (``begin_nested`` does that). With ``enabled=False`` the block runs
    in the session's transaction as it is: errors are still translated, no statement is added,
    and a failed write leaves the transaction to be rolled back as a whole.
    """
    with integrity_errors():
        if not enabled:
            yield
            return
        async with session.begin_nested():
            yield
