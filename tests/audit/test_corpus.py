"""Precision corpus: seeded anti-patterns in realistic shapes, and clean look-alikes.

``corpus/seeded`` is a small service package; every line that must be reported ends with
``# expect: SC101`` (several codes separated by spaces). ``corpus/clean`` is its twin with
the fixes and the look-alikes (each case marked ``# clean: why``). The files are audited as
data, never imported, and are not collected as tests (no ``test_`` prefix).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sight_core.audit import audit_paths

CORPUS = Path(__file__).parent / "corpus"
_EXPECT = re.compile(r"# expect: ([A-Z0-9 ]+)$")


def _expected(root: Path) -> set[tuple[str, int, str]]:
    want: set[tuple[str, int, str]] = set()
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = _EXPECT.search(line.rstrip())
            if match:
                for code in match.group(1).split():
                    want.add((os.path.abspath(path), number, code))
    return want


def _found(root: Path) -> set[tuple[str, int, str]]:
    result = audit_paths(sorted(root.iterdir()))
    assert result.errors == []
    return {(os.path.abspath(f.path), f.line, f.code) for f in result.findings}


def test_every_seeded_anti_pattern_is_found_at_its_line_and_nothing_else() -> None:
    root = CORPUS / "seeded"
    want = _expected(root)
    assert len(want) >= 40
    assert len({code for _, _, code in want}) >= 15  # the corpus spans the rule families
    got = _found(root)
    missed = sorted(want - got)
    extra = sorted(got - want)
    assert missed == [], f"recall below 100 %: {missed}"
    assert extra == [], f"unexpected findings in the seeded set: {extra}"


def test_clean_look_alikes_give_no_finding() -> None:
    root = CORPUS / "clean"
    cases = sum(p.read_text().count("# clean") for p in root.rglob("*.py"))
    assert cases >= 40
    assert _expected(root) == set()
    assert sorted(_found(root)) == []
