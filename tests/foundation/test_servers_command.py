"""Item 9 of issue 14: ``sight-core servers`` prints exports that work, and stops on SIGTERM."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

SIGHT_CORE = Path(sys.executable).parent / "sight-core"


@pytest.mark.slow
def test_servers_prints_exports_that_reach_every_server_then_cleans_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHT_")}
    command = subprocess.Popen(
        [str(SIGHT_CORE), "servers"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert command.stdout is not None
    exports: dict[str, str] = {}
    try:
        for line in command.stdout:
            if line.startswith("#"):
                break
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exports[name] = shlex.split(value)[0]
        assert set(exports) == {
            "SIGHT_DATABASE__URL",
            "SIGHT_REDIS__URL",
            "SIGHT_NEO4J__URI",
            "SIGHT_LLM__PROVIDER",
        }
        children = psutil.Process(command.pid).children(recursive=True)
        checked = subprocess.run(
            [str(SIGHT_CORE), "doctor", "--quiet", "--timeout", "10"],
            env={**env, **exports},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.count("  ok    ") == 4  # postgres, redis, neo4j (Bolt), llm
        command.send_signal(signal.SIGTERM)
        rest = command.stdout.read()
        assert command.wait(60) == 130
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait()
        command.stdout.close()
    assert rest.strip() == "interrupted"
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
