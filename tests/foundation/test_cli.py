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
    monkeypatch.setenv("SIGHT_LLM__PROVIDER", "fake")
    assert main(["doctor", "--timeout", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("  ok    ") == 4  # postgres, redis, neo4j, llm (fake: no key needed)
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
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("SIGHT_LLM__API_KEY", raising=False)
    monkeypatch.setenv("SIGHT_LLM__PROVIDER", "google")
    assert main(["doctor", "--timeout", "1"]) == 1
    captured = capsys.readouterr()
    assert "topsecret" not in captured.out + captured.err
    failures = [line for line in captured.out.splitlines() if line.startswith("  FAIL  ")]
    assert len(failures) == 4
    names = ("postgres", "redis", "neo4j", "llm")
    variables = ("SIGHT_DATABASE__URL", "SIGHT_REDIS__URL", "SIGHT_NEO4J__URI", "GOOGLE_API_KEY")
    for line, name, variable in zip(failures, names, variables, strict=True):
        assert line.startswith(f"  FAIL  {name} ")
        assert f"set {variable}" in line
        assert line.endswith(f"--skip {name}")
    assert "no API key for provider google" in failures[3]
    assert "unhealthy: postgres, redis, neo4j, llm" in captured.err


def test_doctor_skips_what_the_service_does_not_use(
    sight_settings, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from sight_core.testing.servers import free_port

    monkeypatch.setenv("SIGHT_DATABASE__URL", sight_settings.database.url.get_secret_value())
    monkeypatch.setenv("SIGHT_REDIS__URL", sight_settings.redis.url.get_secret_value())
    monkeypatch.setenv("SIGHT_NEO4J__URI", f"bolt://127.0.0.1:{free_port()}")  # no graph
    monkeypatch.setenv("SIGHT_LLM__PROVIDER", "google")
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-test-not-sent")
    assert main(["doctor", "--quiet", "--timeout", "5", "--skip", "neo4j"]) == 0
    out = capsys.readouterr().out
    assert "neo4j" not in out.replace("(skipped: neo4j)", "")
    assert out.count("  ok    ") == 3
    assert "API key set (not sent)" in out
    assert main(["doctor", "--quiet", "--timeout", "5", "--skip", "neo4j,llm,redis"]) == 0
    assert capsys.readouterr().out.count("  ok    ") == 1


def test_doctor_refuses_an_unknown_skip(capsys) -> None:
    assert main(["doctor", "--skip", "graph"]) == 2
    assert "--skip graph: unknown service; accepted: postgres, redis, neo4j, llm" in (
        capsys.readouterr().err
    )


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
