"""Item 4 of issue 14: ``sight-core demo`` stops everything it started on SIGTERM and SIGINT,
prints one line, and ``--external`` names the server that did not answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SIGHT_CORE = Path(sys.executable).parent / "sight-core"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SIGHT_", "GOOGLE_API_KEY"))}


def _server_directory(process: psutil.Process) -> Path:
    """The ``sight-*`` temporary directory a server runs in (PostgreSQL: its data dir's parent)."""
    cwd = Path(process.cwd())
    return next(p for p in (cwd, *cwd.parents) if p.name.startswith("sight-"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_process_and_directory_with_one_line(signum: int) -> None:
    demo = subprocess.Popen(
        [str(SIGHT_CORE), "demo", "--personas", "3", "--latency", "0.2"],
        cwd=ROOT,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    try:
        for line in demo.stdout:  # everything is up once the uvicorn copy is starting
            if "starting a uvicorn copy" in line:
                break
        else:
            pytest.fail(f"the demo ended early with code {demo.wait()}")
        time.sleep(0.5)  # let the uvicorn child get going
        children = psutil.Process(demo.pid).children(recursive=True)
        names = {child.name() for child in children}
        assert {"redis-server", "postgres"} <= names
        assert any("uvicorn" in " ".join(child.cmdline()) for child in children)
        directories = {_server_directory(c) for c in children if c.name() != "python"}
        assert len(directories) == 2  # one Redis, one PostgreSQL (its workers share it)

        if signum == signal.SIGINT:
            os.killpg(demo.pid, signum)  # what a terminal's Ctrl-C does: the whole group
        else:
            demo.send_signal(signum)  # what `timeout` and `kill` do: the demo alone
        rest = demo.stdout.read()  # EOF: no child holds the pipe any more
        code = demo.wait(60)
    finally:
        if demo.poll() is None:  # the test failed: leave nothing behind either
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        demo.stdout.close()
    assert code == 130
    # progress lines printed before the signal arrived, then the one line
    assert [line for line in rest.splitlines() if not line.startswith("[")] == ["interrupted"]
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    assert [d for d in directories if d.exists()] == []


def test_external_without_servers_names_each_one(tmp_path: Path) -> None:
    from sight_core.testing.servers import free_port

    dead = free_port()
    env = {
        **_clean_env(),
        "SIGHT_DATABASE__URL": f"postgresql+asyncpg://u:topsecret@127.0.0.1:{dead}/x",
        "SIGHT_REDIS__URL": f"redis://127.0.0.1:{dead}/0",
    }
    done = subprocess.run(
        [str(SIGHT_CORE), "demo", "--external"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 2, done.stderr
    assert errors[0].startswith("sight-core demo --external: postgres did not answer at ")
    assert errors[0].endswith("set SIGHT_DATABASE__URL")
    assert errors[1].startswith("sight-core demo --external: redis did not answer at ")
    assert errors[1].endswith("set SIGHT_REDIS__URL")
    assert "topsecret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
