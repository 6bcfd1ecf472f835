"""Scanning: find the files, parse and index them all (pass 1: the project index and its
call graph), run every enabled rule family per file (pass 2), apply suppressions."""

from __future__ import annotations

import ast
import gc
import io
import os
import time
import tokenize
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError
from ._config import AuditConfig, load_config, resolve_codes
from ._context import FileContext
from ._model import DEFAULT_DOCS_BASE, AuditResult, FileError, Finding
from ._project import ProjectIndex, module_names
from ._rules import CHECKS, SC001
from ._rules._common import finding
from ._suppress import find_suppressions

__all__ = [
    "DEFAULT_EXCLUDES",
    "audit_paths",
    "audit_source",
    "iter_python_files",
]

DEFAULT_EXCLUDES = frozenset(
    {
        ".git",
        ".hg",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "node_modules",
        "site-packages",
        "build",
        "dist",
    }
)


def audit_source(
    source: str,
    path: str = "<string>",
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    docs_base: str = DEFAULT_DOCS_BASE,
) -> AuditResult:
    """Audit one module's source text (nothing is imported or run); calls are followed
    within the module.

    Raises :class:`~sight_core.errors.ConfigurationError` for an unknown code in
    ``select``/``ignore``. A source that does not parse gives a result with one error.
    """
    enabled = resolve_codes(select, ignore)
    started = time.perf_counter()
    result = AuditResult()
    with _gc_paused():
        parsed = _parse(source, path, result)
        if parsed is not None:
            name = Path(path).stem if path != "<string>" else "module"
            _check_all([(parsed, enabled)], [[name]], result, docs_base)
    result.elapsed = time.perf_counter() - started
    result.findings.sort(key=_order)
    return result


def audit_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    config: AuditConfig | None = None,
    jobs: int = 1,
) -> AuditResult:
    """Audit every ``.py`` file under ``paths`` (files are taken as given, folders walked).

    ``config`` defaults to ``[tool.sight-core.audit]`` of the nearest ``pyproject.toml``
    above the first path; ``select``/``ignore`` replace its lists when given. Files that
    cannot be read or parsed land in ``result.errors`` and are skipped.

    Two passes: every file is parsed and indexed into one project index (symbols, call
    graph, per-function summaries), then the rules run per file with that index, so a
    finding can follow calls across modules. ``jobs`` is validated and kept for
    compatibility; the scan runs in this process (the index needs every file; see
    ``benchmarks/audit.py`` for the cost).

    Raises ``FileNotFoundError`` for a path that does not exist and ``ConfigurationError``
    for unknown codes or a negative ``jobs``. Cost: one parse and one tree walk per file,
    the graph fixpoint, plus one tokenize pass for files that contain a ``sight:`` comment;
    the audited code is never imported.
    """
    started = time.perf_counter()
    if jobs < 0:
        raise ConfigurationError(f"jobs must be 0 (one per CPU) or positive, got {jobs}")
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such file or directory: {root}")
    if config is None:
        config = load_config(roots[0] if roots else None)
    enabled = resolve_codes(
        select if select is not None else config.select,
        ignore if ignore is not None else config.ignore,
    )
    files = list(iter_python_files(roots, config))
    result = AuditResult(root=_scan_root(roots))
    cwd = os.getcwd()
    known = frozenset(os.path.abspath(f) for f in files)
    parsed: list[tuple[_Parsed, frozenset[str]]] = []
    names: list[list[str]] = []
    with _gc_paused():
        for file in files:
            shown = _display(file, cwd)
            try:
                source = _read(file)
            except (OSError, SyntaxError, UnicodeDecodeError) as exc:
                result.errors.append(FileError(shown, 0, f"cannot read: {exc}"))
                continue
            item = _parse(source, shown, result)
            if item is None:
                continue
            skip = config.ignored_for(file)
            parsed.append((item, enabled - skip if skip else enabled))
            names.append(module_names(str(file), [str(r) for r in roots], known))
        _check_all(parsed, names, result, config.docs_base)
    result.findings.sort(key=_order)
    result.errors.sort(key=lambda e: (e.path, e.line))
    result.elapsed = time.perf_counter() - started
    return result


def _scan_root(roots: Sequence[Path]) -> str:
    """The folder that SARIF paths are relative to: the common folder of the scanned paths."""
    if not roots:
        return os.getcwd()
    folders = [
        os.path.abspath(r if r.is_dir() else (r.parent if str(r.parent) else Path(".")))
        for r in roots
    ]
    return os.path.commonpath(folders)


@dataclass(slots=True)
class _Parsed:
    ctx: FileContext
    source: str


def _parse(source: str, path: str, result: AuditResult) -> _Parsed | None:
    """Parse and index one file (pass 1); None when it was reported and skipped."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        result.errors.append(FileError(path, exc.lineno or 0, f"syntax error: {exc.msg}"))
        return None
    except (ValueError, RecursionError, MemoryError) as exc:
        result.errors.append(FileError(path, 0, f"cannot parse: {type(exc).__name__}"))
        return None
    try:
        ctx = FileContext.build(path, source, tree)
    except RecursionError:
        result.errors.append(FileError(path, 0, "too deeply nested to analyse"))
        return None
    return _Parsed(ctx, source)


def _check_all(
    parsed: list[tuple[_Parsed, frozenset[str]]],
    names: list[list[str]],
    result: AuditResult,
    docs_base: str,
) -> None:
    """Build the project index over every parsed file, then run the rules file by file."""
    project: ProjectIndex | None = ProjectIndex()
    assert project is not None
    try:
        for (item, _), module in zip(parsed, names, strict=True):
            project.add(item.ctx, module)
        project.build()
    except RecursionError:
        project = None
        result.errors.append(FileError("<project>", 0, "call graph too deep; calls not followed"))
    except Exception as exc:  # a graph bug must not stop a CI run: fall back to per-file rules
        project = None
        message = (
            f"internal error in the call graph: {type(exc).__name__}: {exc} (please report it)"
        )
        result.errors.append(FileError("<project>", 0, message))
    for item, enabled in parsed:
        item.ctx.project = project
        item.ctx.docs_base = docs_base
        result.files_scanned += _check(item, enabled, result)


def iter_python_files(roots: Iterable[Path], config: AuditConfig) -> Iterator[Path]:
    """Python files under ``roots`` in a stable order, without excluded folders or duplicates."""
    seen: set[Path] = set()
    for root in roots:
        if root.is_file():
            files = [root]
        else:
            files = []
            for directory, subdirs, names in os.walk(root):
                here = Path(directory)
                subdirs[:] = sorted(
                    d
                    for d in subdirs
                    if d not in DEFAULT_EXCLUDES
                    and not d.endswith(".egg-info")
                    and not config.excluded(here / d)
                )
                files.extend(
                    here / n
                    for n in sorted(names)
                    if n.endswith((".py", ".pyi")) and not config.excluded(here / n)
                )
        for file in files:
            key = Path(os.path.abspath(file))
            if key not in seen:
                seen.add(key)
                yield file


def _display(path: Path, cwd: str) -> str:
    """``path`` relative to the working directory when it is below it, else as given."""
    rel = os.path.relpath(os.path.abspath(path), cwd)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return path.as_posix()
    return Path(rel).as_posix()


def _read(path: Path) -> str:
    """The file's text: UTF-8, or the encoding its PEP 263 cookie declares."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8")
    except UnicodeDecodeError:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)


@contextmanager
def _gc_paused() -> Generator[None, None, None]:
    """Pause the cyclic collector (collections triggered by tree allocations triple the
    parse time); resumes it only if it was running."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _order(f: Finding) -> tuple[str, int, int, str]:
    return (f.path, f.line, f.col, f.code)


def _check(item: _Parsed, enabled: frozenset[str], result: AuditResult) -> bool:
    """Run every enabled rule on one indexed file (pass 2) and apply its suppressions;
    False when a rule failed and the file was reported instead."""
    ctx = item.ctx
    raw: list[Finding] = []
    stage = "indexing"
    try:
        for codes, check in CHECKS:
            if codes & enabled:
                stage = f"{check.__module__.rsplit('.', 1)[-1]} rules"
                raw.extend(f for f in check(ctx, enabled) if f.code in enabled)
    except RecursionError:
        result.errors.append(FileError(ctx.path, 0, "too deeply nested to analyse"))
        return False
    except Exception as exc:  # a rule bug must not stop a CI run: report the file, go on
        message = f"internal error in {stage}: {type(exc).__name__}: {exc} (please report it)"
        result.errors.append(FileError(ctx.path, 0, message))
        return False
    suppressions = find_suppressions(item.source)
    if not suppressions:
        result.findings.extend(raw)
        return True
    for finding_ in raw:
        if any(s.covers(finding_.code, finding_.line) for s in suppressions):
            result.suppressed += 1
        else:
            result.findings.append(finding_)
    if SC001.code in enabled:
        for s in suppressions:
            if s.problem is not None:
                anchor = ast.Pass(lineno=s.line, col_offset=s.col - 1)
                result.findings.append(finding(ctx, SC001, anchor, f"this suppression {s.problem}"))
    return True
