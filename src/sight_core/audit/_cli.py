"""``sight-core audit PATH... [--format] [--select] [--ignore] [--fail-on]`` with CI exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from ..errors import ConfigurationError
from ._config import load_config
from ._engine import audit_paths
from ._model import Priority
from ._report import Format, render
from ._rules import RULES

__all__ = ["EXIT_CLEAN", "EXIT_FINDINGS", "EXIT_USAGE", "main"]

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def _codes(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sight-core audit",
        description="Find async performance anti-patterns (sequential LLM calls, N+1 queries, "
        "unbounded fan-out, blocking calls, hand-written caches, lost tasks ...) and name "
        "the sight-core fix for each.",
        epilog="exit codes: 0 nothing at or above --fail-on, 1 findings at or above it, "
        "2 usage or configuration error",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to scan")
    parser.add_argument(
        "--format", choices=get_args(Format), default="text", help="output format (text)"
    )
    parser.add_argument(
        "--select", type=_codes, default=None, help="comma-separated codes or prefixes (SC1,SC201)"
    )
    parser.add_argument("--ignore", type=_codes, default=None, help="codes or prefixes to skip")
    parser.add_argument(
        "--fail-on",
        type=str.upper,
        choices=[p.name for p in Priority],
        default=None,
        help="lowest priority that fails the run (default P1, or fail-on in pyproject.toml)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=0,
        help="accepted for compatibility; the scan runs in one process (it builds one "
        "project-wide call graph)",
    )
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the report here")
    parser.add_argument("--list-rules", action="store_true", help="print every rule and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the audit command and return its exit code (0 clean, 1 findings, 2 usage error)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, or argparse's own usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.list_rules:
        for rule in RULES:
            print(f"{rule.code}  {rule.priority.name}  {rule.name:<28} {rule.docs}")
        return EXIT_CLEAN
    if not args.paths:
        parser.print_usage(sys.stderr)
        print("sight-core audit: error: at least one PATH is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(Path(args.paths[0]))
        result = audit_paths(
            args.paths, select=args.select, ignore=args.ignore, config=config, jobs=args.jobs
        )
    except (ConfigurationError, FileNotFoundError) as exc:
        print(f"sight-core audit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = render(result, args.format, docs_base=config.docs_base)
    if args.output is not None:
        try:
            args.output.write_text(report, encoding="utf-8")
        except OSError as exc:
            print(f"sight-core audit: error: cannot write {args.output}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        prio = result.by_priority()
        print(
            f"sight-core audit: {len(result.findings)} finding(s) "
            f"(P0 {prio['P0']}, P1 {prio['P1']}, P2 {prio['P2']}) in {result.files_scanned} "
            f"file(s), {len(result.errors)} skipped; report written to {args.output}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(report)
    fail_on = Priority[args.fail_on] if args.fail_on else config.fail_on
    return EXIT_FINDINGS if result.failing(fail_on) else EXIT_CLEAN
