"""Scanning: find the files, parse each once, run every enabled rule family, apply suppressions."""

from __future__ import annotations

import ast
import gc
import io
import multiprocessing
import os
import threading
import time
import tokenize
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path

from ..errors import ConfigurationError
from ._config import AuditConfig, load_config, resolve_codes
from ._context import FileContext
from ._model import AuditResult, FileError, Finding
from ._rules import CHECKS, SC001
from ._rules._common import finding
from ._suppress import find_suppressions

__all__ = [
    "DEFAULT_EXCLUDES",
    "PARALLEL_MIN_FILES",
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
) -> AuditResult:
    """Audit one module's source text (nothing is imported or run).

    Raises :class:`~sight_core.errors.ConfigurationError` for an unknown code in
    ``select``/``ignore``. A source that does not parse gives a result with one error.
    """
    enabled = resolve_codes(select, ignore)
    started = time.perf_counter()
    result = AuditResult()
    result.files_scanned = int(_scan_text(source, path, enabled, result))
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
    cannot be read or parsed land in ``result.errors`` and are skipped. ``jobs`` > 1 (or 0
    for one per CPU) spreads files over that many worker processes when there are at least
    :data:`PARALLEL_MIN_FILES` of them; results are identical, only faster.

    Raises ``FileNotFoundError`` for a path that does not exist and ``ConfigurationError``
    for unknown codes. Cost: one parse and one tree walk per file, plus one tokenize pass
    for files that contain a ``sight:`` comment; the audited code is never imported.
    """
    started = time.perf_counter()
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
    files = [str(f) for f in iter_python_files(roots, config)]
    workers = _workers(jobs, len(files))
    if workers > 1:
        result = _scan_parallel(files, enabled, config, workers)
    else:
        result = _scan_files(files, enabled, config, os.getcwd())
    result.findings.sort(key=_order)
    result.elapsed = time.perf_counter() - started
    return result


PARALLEL_MIN_FILES = 64


def _workers(jobs: int, files: int) -> int:
    if jobs < 0:
        raise ConfigurationError(f"jobs must be 0 (one per CPU) or positive, got {jobs}")
    wanted = jobs or os.cpu_count() or 1
    if files < PARALLEL_MIN_FILES:
        return 1
    return max(1, min(wanted, files // (PARALLEL_MIN_FILES // 2)))


def _scan_files(
    files: Sequence[str], enabled: frozenset[str], config: AuditConfig, cwd: str
) -> AuditResult:
    """Scan ``files`` in this process (also the body of each worker process)."""
    result = AuditResult()
    for name in files:
        file = Path(name)
        shown = _display(file, cwd)
        try:
            source = _read(file)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            result.errors.append(FileError(shown, 0, f"cannot read: {exc}"))
            continue
        skip = config.ignored_for(file)
        result.files_scanned += _scan_text(
            source, shown, enabled - skip if skip else enabled, result
        )
    return result


def _scan_parallel(
    files: list[str], enabled: frozenset[str], config: AuditConfig, workers: int
) -> AuditResult:
    """Scan in ``workers`` processes: forked when this process runs a single thread (the
    CLI), spawned otherwise, since forking a multi-threaded process can deadlock."""
    method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
    chunks = [files[i :: workers * 4] for i in range(workers * 4)]
    merged = AuditResult()
    cwd = os.getcwd()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        for part in pool.map(_scan_files, chunks, repeat(enabled), repeat(config), repeat(cwd)):
            merged.findings.extend(part.findings)
            merged.errors.extend(part.errors)
            merged.files_scanned += part.files_scanned
            merged.suppressed += part.suppressed
    merged.errors.sort(key=lambda e: (e.path, e.line))
    return merged


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


def _scan_text(source: str, path: str, enabled: frozenset[str], result: AuditResult) -> bool:
    """Parse and check one file into ``result``; False when it was reported and skipped.

    The cyclic garbage collector is paused for the file and resumed only after its syntax
    tree has been freed (trees hold no cycles; reference counting frees them), so the
    collector never walks hundreds of thousands of live nodes.
    """
    with _gc_paused():
        return _scan_unpaused(source, path, enabled, result)


def _scan_unpaused(source: str, path: str, enabled: frozenset[str], result: AuditResult) -> bool:
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        result.errors.append(FileError(path, exc.lineno or 0, f"syntax error: {exc.msg}"))
        return False
    except (ValueError, RecursionError, MemoryError) as exc:
        result.errors.append(FileError(path, 0, f"cannot parse: {type(exc).__name__}"))
        return False
    raw: list[Finding] = []
    stage = "indexing"
    try:
        ctx = FileContext.build(path, source, tree)
        for codes, check in CHECKS:
            if codes & enabled:
                stage = f"{check.__module__.rsplit('.', 1)[-1]} rules"
                raw.extend(f for f in check(ctx, enabled) if f.code in enabled)
    except RecursionError:
        result.errors.append(FileError(path, 0, "too deeply nested to analyse"))
        return False
    except Exception as exc:  # a rule bug must not stop a CI run: report the file, go on
        message = f"internal error in {stage}: {type(exc).__name__}: {exc} (please report it)"
        result.errors.append(FileError(path, 0, message))
        return False
    suppressions = find_suppressions(source)
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
