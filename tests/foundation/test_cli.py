from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sight_core.cli import main


def test_doctor_reports_all_three_healthy(
    sight_settings, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__URL", sight_settings.database.url.get_secret_value())
    monkeypatch.setenv("SIGHT_REDIS__URL", sight_settings.redis.url.get_secret_value())
    monkeypatch.setenv("SIGHT_NEO4J__URI", sight_settings.neo4j.uri)
    assert main(["doctor", "--timeout", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("  ok    ") == 3
    assert "PostgreSQL 18" in out
    assert "Redis 8" in out


def test_doctor_names_what_failed_and_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from sight_core.testing.servers import free_port

    dead = free_port()
    monkeypatch.setenv("SIGHT_DATABASE__URL", f"postgresql://u:topsecret@127.0.0.1:{dead}/x")
    monkeypatch.setenv("SIGHT_REDIS__URL", f"redis://:topsecret@127.0.0.1:{dead}/0")
    monkeypatch.setenv("SIGHT_NEO4J__URI", f"bolt://127.0.0.1:{dead}")
    assert main(["doctor", "--timeout", "1"]) == 1
    captured = capsys.readouterr()
    assert "topsecret" not in captured.out + captured.err
    assert captured.out.count("  FAIL  ") == 3
    assert "unhealthy: postgres, redis, neo4j" in captured.err


def test_bad_setting_exits_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__POOL_SIZE", "-1")
    assert main(["doctor"]) == 2
    assert "SIGHT_DATABASE__POOL_SIZE" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    env = {**os.environ, "SIGHT_DATABASE__POOL_SIZE": "-1"}
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "sight-core"), "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "SIGHT_DATABASE__POOL_SIZE" in done.stderr
