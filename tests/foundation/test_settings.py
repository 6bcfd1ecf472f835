from __future__ import annotations

import logging

import pytest

from sight_core.errors import ConfigurationError, SightError
from sight_core.settings import (
    DATABASE_PRESETS,
    NEO4J_PRESETS,
    REDIS_PRESETS,
    SightSettings,
    redact_url,
)

PASSWORD = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SIGHT_") or name == "GOOGLE_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_use_api_presets() -> None:
    settings = SightSettings()
    assert settings.database.resolved() == DATABASE_PRESETS["api"]
    pool = settings.database.resolved()
    assert (pool.pool_size, pool.pool_size + pool.max_overflow) == (5, 20)
    assert pool.pool_pre_ping and pool.pool_use_lifo
    assert 0 < pool.pool_recycle < 3600
    assert settings.redis.resolved() == REDIS_PRESETS["api"]
    assert settings.neo4j.resolved() == NEO4J_PRESETS["api"]


def test_env_nesting_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__PRESET", "worker")
    monkeypatch.setenv("SIGHT_DATABASE__POOL_SIZE", "7")
    monkeypatch.setenv("SIGHT_REDIS__URL", "redis://10.0.0.5:6380/2")
    monkeypatch.setenv("SIGHT_LLM__PRO_MODEL", "gemini-3-pro")
    monkeypatch.setenv("SIGHT_CACHE__OP_TIMEOUT", "0.1")
    settings = SightSettings()
    pool = settings.database.resolved()
    assert pool.pool_size == 7
    assert pool.command_timeout == DATABASE_PRESETS["worker"].command_timeout
    assert settings.redis.url.get_secret_value() == "redis://10.0.0.5:6380/2"
    assert settings.llm.pro_model == "gemini-3-pro"
    assert settings.cache.op_timeout == 0.1


def test_dotenv_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SIGHT_NEO4J__URI=bolt://graph:7687\nSIGHT_NEO4J__PRESET=test\n")
    settings = SightSettings()
    assert settings.neo4j.uri == "bolt://graph:7687"
    assert settings.neo4j.resolved() == NEO4J_PRESETS["test"]


def test_pgbouncer_preset_turns_statement_caches_off() -> None:
    pool = SightSettings(database={"preset": "pgbouncer"}).database.resolved()
    assert pool.pgbouncer is True
    assert pool.statement_cache_size == 0


def test_google_api_key_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-from-platform")
    assert SightSettings().llm.api_key is not None
    assert SightSettings().llm.api_key.get_secret_value() == "AIza-from-platform"
    monkeypatch.setenv("SIGHT_LLM__API_KEY", "AIza-explicit")
    assert SightSettings().llm.api_key.get_secret_value() == "AIza-explicit"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SIGHT_DATABASE__POOL_SIZE", "-1", "greater than or equal to 1"),
        ("SIGHT_DATABASE__POOL_SIZE", "lots", "valid integer"),
        ("SIGHT_DATABASE__PRESET", "turbo", "accepted: api, worker, pgbouncer, test"),
        ("SIGHT_REDIS__PRESET", "pgbouncer", "accepted: api, worker, test"),
        ("SIGHT_DATABASE__URL", "mysql://u@h/db", "postgresql+asyncpg"),
        ("SIGHT_DATABASE__URL", "postgresql:///nohost", "no host: put host[:port] after the '@'"),
        ("SIGHT_REDIS__URL", "redis://host:port/0", "malformed URL"),
        ("SIGHT_NEO4J__URI", "http://graph:7474", "bolt"),
        ("SIGHT_LLM__BASE_URL", "ftp://x", "http"),
        ("SIGHT_LLM__PROVIDER", "openai", "'google' or 'fake'"),
        ("SIGHT_CACHE__OP_TIMEOUT", "0", "greater than 0"),
    ],
)
def test_bad_value_names_variable_value_and_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        SightSettings()
    message = str(info.value)
    assert variable in message
    assert value in message
    assert expected in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SightError)


def test_password_never_shown(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__URL", f"postgresql+asyncpg://sight:{PASSWORD}@db:5432/x")
    monkeypatch.setenv("SIGHT_REDIS__URL", f"redis://:{PASSWORD}@cache:6379/0")
    monkeypatch.setenv("SIGHT_NEO4J__PASSWORD", PASSWORD)
    monkeypatch.setenv("SIGHT_LLM__API_KEY", PASSWORD)
    settings = SightSettings()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s %r", settings, settings)
    shown = [repr(settings), str(settings), str(settings.redacted()), caplog.text]
    for text in shown:
        assert PASSWORD not in text
    assert "sight:***@db:5432" in repr(settings)
    assert settings.database.url.get_secret_value().endswith("@db:5432/x")


def test_password_never_in_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__URL", f"mysql://sight:{PASSWORD}@db/x")
    monkeypatch.setenv("SIGHT_LLM__API_KEY", "")
    monkeypatch.setenv("SIGHT_NEO4J__PASSWORD", PASSWORD)
    monkeypatch.setenv("SIGHT_NEO4J__PRESET", "nope")
    with pytest.raises(ConfigurationError) as info:
        SightSettings()
    text = str(info.value) + repr(info.value)
    assert PASSWORD not in text
    assert "sight:***@db" in text
    assert info.value.__cause__ is None  # the pydantic error (which holds the input) is dropped


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("bolt://u:p@h") == "bolt://u:***@h"


def test_settings_are_immutable() -> None:
    settings = SightSettings()
    with pytest.raises(Exception, match="frozen"):
        settings.database.pool_size = 3  # type: ignore[misc]
