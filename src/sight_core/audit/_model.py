"""Findings, rules and the result of a scan: plain data, no analysis."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DEFAULT_DOCS_BASE", "AuditResult", "FileError", "Finding", "Hop", "Priority", "Rule"]

DEFAULT_DOCS_BASE = "https://sight-core.readthedocs.io/en/latest/"
"""Where ``docs/<page>.md`` is published; ``docs-base`` in the config replaces it."""


class Priority(enum.IntEnum):
    """How much a finding costs: P0 breaks under load, P1 wastes latency or money, P2 hygiene."""

    P0 = 0
    P1 = 1
    P2 = 2

    @classmethod
    def parse(cls, text: str) -> Priority:
        """``"P1"`` or ``"p1"`` to :attr:`P1`; raises ``ValueError`` on anything else."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown priority {text!r}; expected P0, P1 or P2") from None


@dataclass(frozen=True, slots=True)
class Rule:
    """One check: a stable code, its priority, why it costs and what replaces it."""

    code: str
    name: str
    priority: Priority
    summary: str
    why: str
    fix: str
    docs: str


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of a finding's call chain: what runs (``_retry()``, ``time.sleep``) and the
    line where the previous step calls it (for the first step: where it is defined)."""

    label: str
    path: str
    line: int

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "path": self.path, "line": self.line}


def docs_url(docs: str, base: str = DEFAULT_DOCS_BASE) -> str:
    """``docs/pools.md#anchor`` as a URL under ``base`` (``.../pools/#anchor``)."""
    page, _, anchor = docs.partition("#")
    page = page.removeprefix("docs/").removesuffix(".md")
    url = base.rstrip("/") + "/" + ("" if page == "index" else page + "/")
    return url + (f"#{anchor}" if anchor else "")


@dataclass(frozen=True, slots=True)
class Finding:
    """One occurrence of a rule in a file (``line`` and ``col`` are 1-based)."""

    code: str
    priority: Priority
    path: str
    line: int
    col: int
    snippet: str
    message: str
    why: str
    fix: str
    docs: str
    chain: tuple[Hop, ...] = ()
    docs_url: str = ""

    @property
    def chain_text(self) -> str:
        """``health() -> get_vector_store() -> _retry() -> time.sleep``, or ``""``."""
        return " -> ".join(h.label for h in self.chain)

    @property
    def location(self) -> str:
        """``path:line:col``."""
        return f"{self.path}:{self.line}:{self.col}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (priority as ``"P1"``)."""
        return {
            "code": self.code,
            "priority": self.priority.name,
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "snippet": self.snippet,
            "message": self.message,
            "why": self.why,
            "fix": self.fix,
            "docs": self.docs,
            "docs_url": self.docs_url,
            "chain": [h.to_dict() for h in self.chain],
        }


@dataclass(frozen=True, slots=True)
class FileError:
    """A file that was reported and skipped (unreadable or not valid Python)."""

    path: str
    line: int
    message: str


@dataclass(slots=True)
class AuditResult:
    """Everything one scan found; ``findings`` are sorted by path, line, column, code."""

    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files_scanned: int = 0
    suppressed: int = 0
    elapsed: float = 0.0
    root: str = ""
    """Absolute directory that SARIF paths are relative to (the scan root)."""

    def by_code(self) -> dict[str, int]:
        """Number of findings per rule code, sorted by code."""
        return dict(sorted(Counter(f.code for f in self.findings).items()))

    def by_priority(self) -> dict[str, int]:
        """Number of findings per priority, always with the three keys P0, P1, P2."""
        counts = Counter(f.priority.name for f in self.findings)
        return {p.name: counts.get(p.name, 0) for p in Priority}

    def failing(self, fail_on: Priority) -> list[Finding]:
        """Findings at ``fail_on`` or more severe (P0 is the most severe)."""
        return [f for f in self.findings if f.priority <= fail_on]

    def summary(self) -> dict[str, object]:
        """Counts per rule and priority, files scanned, suppressed, errors, seconds taken."""
        return {
            "files_scanned": self.files_scanned,
            "findings": len(self.findings),
            "by_priority": self.by_priority(),
            "by_code": self.by_code(),
            "suppressed": self.suppressed,
            "errors": len(self.errors),
            "elapsed_seconds": round(self.elapsed, 3),
        }
