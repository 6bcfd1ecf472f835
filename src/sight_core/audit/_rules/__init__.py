"""The rule families and the registry of every rule code."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .._context import FileContext
from .._model import Finding, Priority, Rule
from . import blocking, cache, clients, concurrency, database, llm, tasks

__all__ = ["CHECKS", "RULES", "RULES_BY_CODE", "SC001"]

Check = Callable[[FileContext, frozenset[str]], Iterator[Finding]]

SC001 = Rule(
    code="SC001",
    name="suppression-without-reason",
    priority=Priority.P1,
    summary="a `# sight: ignore[...]` comment with no reason or no rule code",
    why="an unexplained suppression hides a cost nobody can re-evaluate later",
    fix="name the codes and say why: `# sight: ignore[SC101] calls share one rate-limited account`",
    docs="docs/audit.md",
)

_FAMILIES = (concurrency, database, blocking, cache, tasks, llm, clients)

CHECKS: tuple[tuple[frozenset[str], Check], ...] = tuple(
    (frozenset(rule.code for rule in family.RULES), family.check) for family in _FAMILIES
)
RULES: tuple[Rule, ...] = (SC001, *(rule for family in _FAMILIES for rule in family.RULES))
RULES_BY_CODE: dict[str, Rule] = {rule.code: rule for rule in RULES}
