"""``EXPLAIN`` a statement and assert the planner uses an index (a guard for tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import ClauseElement, Executable, func, select
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["assert_uses_index", "explain"]


async def explain(session: AsyncSession, statement: Executable) -> dict[str, Any]:
    """The plan PostgreSQL chooses for ``statement`` (``EXPLAIN (FORMAT JSON)``, not run),
    with the statement's values inlined. Returns the top plan node."""
    if not isinstance(statement, ClauseElement):
        raise TypeError(f"explain() needs a SQLAlchemy statement, got {type(statement).__name__}")
    bind = session.get_bind()
    sql = statement.compile(dialect=bind.dialect, compile_kwargs={"literal_binds": True})
    connection = await session.connection()
    result = await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}")
    document = result.scalar_one()
    if isinstance(document, str):
        document = json.loads(document)
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _outline(plan: dict[str, Any], depth: int = 0) -> list[str]:
    label = plan.get("Node Type", "?")
    if "Index Name" in plan:
        label += f" using {plan['Index Name']}"
    if "Relation Name" in plan:
        label += f" on {plan['Relation Name']}"
    lines = ["  " * depth + label]
    for child in plan.get("Plans", ()):
        lines.extend(_outline(child, depth + 1))
    return lines


async def assert_uses_index(session: AsyncSession, statement: Executable, index: str) -> None:
    """Fail with ``AssertionError`` (showing the plan) unless PostgreSQL can answer
    ``statement`` with the index named ``index``.

    Sequential scans are switched off for the check (inside a savepoint rolled back after it),
    so on a small test table the planner still prefers the index whenever it can use it at
    all: a query whose expression does not match the index's (a different cast, operator or
    text configuration) fails here instead of silently scanning in production.
    """
    savepoint = await session.begin_nested()
    try:
        await session.execute(select(func.set_config("enable_seqscan", "off", True)))
        plan = await explain(session, statement)
    finally:
        await savepoint.rollback()
    used = {node["Index Name"] for node in _nodes(plan) if "Index Name" in node}
    if index not in used:
        outline = "\n".join(_outline(plan))
        found = ", ".join(sorted(used)) or "none"
        raise AssertionError(
            f"the plan does not use index {index!r} (indexes used: {found}); a query must use "
            f"the index's own expression (cast, operator class, text configuration):\n{outline}"
        )
