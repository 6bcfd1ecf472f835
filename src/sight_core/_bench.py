"""``sight-core bench``: run the ``benchmarks/`` modules and print their ratio tables."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["format_table", "run_bench"]

_COLUMNS = ("case", "ours", "reference", "ratio", "target", "verdict")


def _benchmarks_package() -> Any:
    root = Path.cwd()
    if (root / "benchmarks" / "__init__.py").exists() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module("benchmarks")
    except ImportError:
        raise SystemExit(
            "sight-core bench needs a checkout of the sight-core repository (benchmarks/ is not "
            "part of the installed package): run `uv run --group bench sight-core bench` from "
            "the repository root"
        ) from None


def format_table(rows: list[dict[str, Any]], *, extra: bool = True) -> str:
    """Render benchmark rows as a Markdown table: the standard columns first, then (with
    ``extra``) any other keys the rows carry, such as raw numbers meant for ``--json``."""
    columns = list(_COLUMNS)
    if extra:
        columns = list(dict.fromkeys(columns + [k for r in rows for k in r]))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def run_bench(*, areas: list[str], quick: bool, as_json: bool) -> int:
    """Run each area's ``run(quick=...)``; exit 1 if any row's verdict is a failure."""
    package = _benchmarks_package()
    available = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    chosen = areas or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        print(f"unknown area(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {}
    for area in chosen:
        try:
            module = importlib.import_module(f"benchmarks.{area}")
        except ModuleNotFoundError as exc:  # a peer library of the comparison
            print(
                f"benchmarks.{area} needs {exc.name!r}: the peers are in the bench group; run "
                "`uv run --group bench sight-core bench`",
                file=sys.stderr,
            )
            return 2
        rows = list(module.run(quick=quick))
        results[area] = rows
        if not as_json:
            print(f"\n## {area}\n\n{format_table(rows, extra=False)}", flush=True)
    if as_json:
        print(json.dumps(results, indent=2, default=str))
    failed = [
        r for rows in results.values() for r in rows if str(r.get("verdict", "")).upper() == "FAIL"
    ]
    return 1 if failed else 0
