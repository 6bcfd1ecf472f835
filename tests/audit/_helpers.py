"""Helpers for the audit tests: run one rule over a snippet and check where it fired."""

from __future__ import annotations

import textwrap

from sight_core.audit import Finding, audit_source


def expected_lines(source: str) -> list[int]:
    """Lines marked with ``# expect`` in a snippet (1-based, after dedent)."""
    return [
        i for i, line in enumerate(source.splitlines(), 1) if line.rstrip().endswith("# expect")
    ]


def run_rule(source: str, code: str) -> list[Finding]:
    """Findings of ``code`` alone in the dedented ``source``; the snippet must parse."""
    result = audit_source(textwrap.dedent(source), "service.py", select=[code])
    assert not result.errors, result.errors
    return result.findings


def assert_flags(source: str, code: str) -> None:
    """The rule fires exactly on the ``# expect`` lines of ``source``, and nowhere else."""
    source = textwrap.dedent(source)
    want = expected_lines(source)
    assert want, "a positive case needs at least one `# expect` marker"
    got = [f.line for f in run_rule(source, code)]
    assert got == want, f"{code}: expected lines {want}, got {got}"


def assert_clean(source: str, code: str) -> None:
    """The rule does not fire anywhere in ``source``."""
    found = run_rule(source, code)
    assert found == [], [f"{f.line}: {f.message}" for f in found]
