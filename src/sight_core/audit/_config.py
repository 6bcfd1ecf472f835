"""``[tool.sight-core.audit]`` in the nearest ``pyproject.toml``, and rule selection."""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError
from ._model import DEFAULT_DOCS_BASE, Priority
from ._rules import RULES

__all__ = ["AuditConfig", "find_pyproject", "load_config", "resolve_codes"]

_KEYS = frozenset({"select", "ignore", "fail-on", "exclude", "per-file-ignores", "docs-base"})


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Settings from ``pyproject.toml``; ``root`` is the directory patterns are relative to."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    fail_on: Priority = Priority.P1
    exclude: tuple[str, ...] = ()
    per_file_ignores: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    root: Path | None = None
    docs_base: str = DEFAULT_DOCS_BASE

    def excluded(self, path: Path) -> bool:
        """True when ``path`` matches an ``exclude`` pattern (relative to ``root``)."""
        if not self.exclude:
            return False
        rel = self._relative(path)
        return rel is not None and any(_match(rel, pattern) for pattern in self.exclude)

    def ignored_for(self, path: Path) -> frozenset[str]:
        """Codes that ``per-file-ignores`` switches off for ``path`` (prefixes expanded)."""
        if not self.per_file_ignores:
            return frozenset()
        rel = self._relative(path)
        if rel is None:
            return frozenset()
        selectors = [
            s for p, codes in self.per_file_ignores.items() if _match(rel, p) for s in codes
        ]
        return frozenset(_expand(selectors)) if selectors else frozenset()

    def _relative(self, path: Path) -> str | None:
        base = os.path.abspath(self.root or os.getcwd())
        rel = os.path.relpath(os.path.abspath(path), base)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return None
        return Path(rel).as_posix()


def _match(rel: str, pattern: str) -> bool:
    pattern = pattern.rstrip("/")
    if fnmatch.fnmatchcase(rel, pattern):
        return True
    # a directory pattern ("migrations", "tests/**") excludes everything below it
    stem = pattern[:-3] if pattern.endswith("/**") else pattern
    parts = rel.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), stem) for i in range(1, len(parts) + 1))


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (a file or a directory)."""
    here = start.resolve()
    if not here.is_dir():
        here = here.parent
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(start: Path | None = None) -> AuditConfig:
    """Read ``[tool.sight-core.audit]`` from the nearest ``pyproject.toml`` above ``start``.

    Missing file or section gives the defaults. Raises :class:`ConfigurationError` for
    invalid TOML, unknown keys, unknown rule codes or a bad ``fail-on``.
    """
    pyproject = find_pyproject(start or Path.cwd())
    if pyproject is None:
        return AuditConfig()
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {pyproject}: {exc}") from exc
    section = data.get("tool", {}).get("sight-core", {}).get("audit", {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"{pyproject}: [tool.sight-core.audit] must be a table")
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise ConfigurationError(
            f"{pyproject}: unknown key {unknown[0]!r} in [tool.sight-core.audit]; "
            f"expected one of {', '.join(sorted(_KEYS))}"
        )
    where = f"{pyproject} [tool.sight-core.audit]"
    select = section.get("select")
    per_file = section.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigurationError(f"{where}: per-file-ignores must be a table")
    try:
        fail_on = Priority.parse(str(section.get("fail-on", "P1")))
    except ValueError as exc:
        raise ConfigurationError(f"{where}: fail-on: {exc}") from None
    docs_base = section.get("docs-base", DEFAULT_DOCS_BASE)
    if not isinstance(docs_base, str) or not docs_base.startswith(("https://", "http://")):
        raise ConfigurationError(
            f"{where}: docs-base must be an http(s) URL such as {DEFAULT_DOCS_BASE!r}, "
            f"got {docs_base!r}"
        )
    config = AuditConfig(
        docs_base=docs_base,
        select=None if select is None else _strings(select, "select", where),
        ignore=_strings(section.get("ignore", []), "ignore", where),
        fail_on=fail_on,
        exclude=_strings(section.get("exclude", []), "exclude", where),
        per_file_ignores={
            str(k): _strings(v, f"per-file-ignores.{k}", where) for k, v in per_file.items()
        },
        root=pyproject.parent,
    )
    resolve_codes(config.select, config.ignore)
    for codes in config.per_file_ignores.values():
        _expand(codes)
    return config


def _strings(value: object, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def _expand(selectors: Iterable[str]) -> set[str]:
    """Rule codes matched by selectors: exact codes, prefixes (``SC1``, ``SC20``) or ``ALL``."""
    codes: set[str] = set()
    for raw in selectors:
        selector = raw.strip().upper()
        if not selector:
            continue
        matched = {r.code for r in RULES if selector == "ALL" or r.code.startswith(selector)}
        if not matched:
            raise ConfigurationError(f"unknown rule code or prefix {raw!r}")
        codes |= matched
    return codes


def resolve_codes(select: Iterable[str] | None, ignore: Iterable[str] | None) -> frozenset[str]:
    """The enabled rule codes: ``select`` (default all) minus ``ignore``.

    Raises :class:`ConfigurationError` for a selector that matches no rule.
    """
    chosen = _expand(select) if select is not None else {r.code for r in RULES}
    return frozenset(chosen - _expand(ignore or ()))
