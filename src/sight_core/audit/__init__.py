"""``sight-core audit``: find the platform's performance anti-patterns and name the fix.

Static analysis over Python sources with the standard library's :mod:`ast` (the audited code
is never imported or run). Each :class:`Finding` has a rule code (``SC101`` ...), a priority,
a location, the offending line, why it costs, and the sight-core piece that replaces it with
its docs page.

    from sight_core.audit import audit_paths
    result = audit_paths(["app/"], ignore=["SC4"])
    for f in result.findings: print(f.location, f.code, f.message)
"""

from __future__ import annotations

from ._cli import main
from ._config import AuditConfig, load_config
from ._engine import audit_paths, audit_source
from ._model import AuditResult, FileError, Finding, Priority, Rule
from ._report import render
from ._rules import RULES

__all__ = [
    "RULES",
    "AuditConfig",
    "AuditResult",
    "FileError",
    "Finding",
    "Priority",
    "Rule",
    "audit_paths",
    "audit_source",
    "load_config",
    "main",
    "render",
]
