"""Pieces of ``sight-core demo`` that need no servers: finding the example, parsing, tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sight_core import _demo


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _demo.percentile(values, 0.5) == 50.0
    assert _demo.percentile(values, 0.95) == 95.0
    assert _demo.percentile(values, 1.0) == 100.0
    assert _demo.percentile([3.0], 0.99) == 3.0
    assert _demo.percentile([], 0.5) == 0.0


def test_metric_reads_one_prometheus_sample_by_label_subset() -> None:
    text = (
        "# TYPE sight_cache_hits_total counter\n"
        'sight_cache_hits_total{namespace="persona",prefix="x"} 42.0\n'
        'sight_cache_hits_total{namespace="persona-list",prefix="x"} 7.0\n'
    )
    assert _demo._metric(text, "sight_cache_hits_total", namespace="persona") == 42.0
    assert _demo._metric(text, "sight_cache_hits_total", namespace="persona-list") == 7.0
    assert _demo._metric(text, "sight_cache_misses_total", namespace="persona") == 0.0


def test_report_table_says_met_or_not_met() -> None:
    table = _demo._table(
        [_demo.Rule("a rule", "< 1 s", "0.5 s", True), _demo.Rule("b", "> 80 %", "10 %", False)]
    )
    assert table.splitlines() == [
        "met      a rule (target: < 1 s)",
        "         0.5 s",
        "NOT MET  b (target: > 80 %)",
        "         10 %",
    ]


def test_report_fits_100_columns_and_labels_information() -> None:
    long = "P50 1.0 / P95 2.0 / P99 3.0 ms (median of 3 rounds, P95 1.9-2.1); 4000 req/s; " * 3
    table = _demo._table(
        [
            _demo.Rule("API P95, cached read, 50 clients", "<= 50 ms", long, True),
            _demo.Rule("focus-group round, amortized", "-", "20 s wall / 40 answers", None),
        ]
    )
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "P99 3.0 ms" in table  # wrapped, not cut
    assert table.splitlines()[-2] == "info     focus-group round, amortized"


def test_example_is_found_from_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module, root = _demo.load_example()
    assert module.__name__ == "examples.sight_service"
    assert (root / "examples" / "sight_service" / "app.py").is_file()


def test_missing_example_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "_example_root", lambda: None)
    with pytest.raises(SystemExit, match="sight-core checkout"):
        _demo.load_example()


def test_an_examples_package_from_elsewhere_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    other = tmp_path / "site-packages" / "examples"
    (other / "sight_service").mkdir(parents=True)
    shadow = types.ModuleType("examples")
    shadow.__path__ = [str(other)]
    inner = types.ModuleType("examples.sight_service")
    inner.__file__ = str(other / "sight_service" / "__init__.py")
    monkeypatch.setitem(sys.modules, "examples", shadow)
    monkeypatch.setitem(sys.modules, "examples.sight_service", inner)
    with pytest.raises(SystemExit, match="shadows the sight-core checkout"):
        _demo.load_example()


def test_ctrl_c_while_a_server_starts_is_raised_once_the_start_is_over() -> None:
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), _demo._interrupt_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # delivered to this (main) thread right away
        steps.append("server tracked")  # not cut short: the server joins the cleanup list
    assert steps == ["server tracked"]
    assert signal.getsignal(signal.SIGINT) is before


def test_interrupted_command_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sight_core.cli import main

    def interrupted(**_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(_demo, "run_demo", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize(
    ("personas", "latency", "message"),
    [(0, 5.0, "--personas"), (201, 5.0, "--personas"), (20, -1.0, "--latency")],
)
def test_out_of_range_options_are_usage_errors_before_anything_starts(
    personas: int, latency: float, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _demo.run_demo(provider="fake", external=False, personas=personas, latency=latency)
    assert code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""  # no server was started
