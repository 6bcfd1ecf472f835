"""``sight-core bench``: runs ``benchmarks/<area>.py`` modules; verdicts become exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sight_core._bench import format_table, run_bench

AREA = """
def run(quick=False):
    return [
        {"case": "a", "ours": "1", "reference": "2", "ratio": "0.5x", "target": "-",
         "verdict": "PASS", "quick": quick},
        {"case": "b", "ours": "3", "reference": "2", "ratio": "1.5x", "target": "<= 1x",
         "verdict": VERDICT},
    ]
"""


@pytest.fixture
def benchmarks_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "benchmarks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text("VERDICT = 'info'\n" + AREA)
    (package / "bad.py").write_text("VERDICT = 'FAIL'\n" + AREA)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    return package


def test_table_has_the_standard_columns_first() -> None:
    table = format_table([{"extra": 1, "case": "c", "verdict": "PASS"}])
    header = table.splitlines()[0]
    assert header == "| case | ours | reference | ratio | target | verdict | extra |"


@pytest.mark.usefixtures("benchmarks_dir")
def test_exit_code_follows_the_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(areas=["good"], quick=True, as_json=False) == 0
    assert "## good" in capsys.readouterr().out
    assert run_bench(areas=[], quick=False, as_json=False) == 1  # all areas; bad has a FAIL
    assert run_bench(areas=["nope"], quick=False, as_json=False) == 2


@pytest.mark.usefixtures("benchmarks_dir")
def test_json_output_holds_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(areas=["good"], quick=True, as_json=True) == 0
    rows = json.loads(capsys.readouterr().out)["good"]
    assert [r["case"] for r in rows] == ["a", "b"]
    assert rows[0]["quick"] is True
