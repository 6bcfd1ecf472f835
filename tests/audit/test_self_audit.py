"""The library's own code and examples are what the audit recommends: zero findings."""

from __future__ import annotations

from pathlib import Path

from sight_core.audit import audit_paths

ROOT = Path(__file__).parents[2]


def test_src_and_examples_have_no_findings() -> None:
    paths = [p for p in (ROOT / "src", ROOT / "examples") if p.exists()]
    result = audit_paths(paths)
    assert result.errors == []
    assert [f"{f.location} {f.code} {f.message}" for f in result.findings] == []
    assert result.files_scanned > 0
