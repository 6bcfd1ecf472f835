"""Items 5 and 6 of issue 14: opt-in platform aliases, and unknown ``SIGHT_*`` variables warned."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from sight_core.errors import ConfigurationError
from sight_core.settings import PLATFORM_ENV_ALIASES, SightSettings, UnknownSettingWarning

PASSWORD = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SIGHT_") or name in PLATFORM_ENV_ALIASES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class PlatformSettings(SightSettings):
    """The documented recipe (docs/settings.md): read the platform's Cloud Run names."""

    env_aliases = PLATFORM_ENV_ALIASES


def _platform_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql+asyncpg://sight:{PASSWORD}@/sight_db?host=/cloudsql/p:r:i"
    )
    monkeypatch.setenv("REDIS_URL", "rediss://cache.upstash.io:6379/0")
    monkeypatch.setenv("NEO4J_URI", "neo4j+s://graph.example:7687")
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-platform")


def test_aliases_fill_settings_when_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    _platform_env(monkeypatch)
    settings = PlatformSettings()
    assert settings.database.url.get_secret_value().endswith("?host=/cloudsql/p:r:i")
    assert settings.redis.url.get_secret_value() == "rediss://cache.upstash.io:6379/0"
    assert settings.neo4j.uri == "neo4j+s://graph.example:7687"
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.get_secret_value() == "AIza-platform"
    assert PASSWORD not in repr(settings)


def test_aliases_are_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    _platform_env(monkeypatch)
    settings = SightSettings()
    assert (
        settings.database.url.get_secret_value()
        == "postgresql+asyncpg://postgres@127.0.0.1:5432/sight"
    )
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert settings.neo4j.uri == "bolt://127.0.0.1:7687"


def test_sight_variable_beats_its_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    _platform_env(monkeypatch)
    monkeypatch.setenv("SIGHT_REDIS__URL", "redis://10.0.0.9:6379/3")
    monkeypatch.setenv("SIGHT_REDIS__PRESET", "worker")
    settings = PlatformSettings()
    assert settings.redis.url.get_secret_value() == "redis://10.0.0.9:6379/3"
    assert settings.redis.preset == "worker"  # nested values from both sources merge
    assert settings.database.url.get_secret_value().startswith("postgresql+asyncpg://sight:")


def test_bad_alias_value_is_named_by_the_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://sight:{PASSWORD}@db/x")
    with pytest.raises(ConfigurationError) as info:
        PlatformSettings()
    message = str(info.value)
    assert "DATABASE_URL (read as SIGHT_DATABASE__URL)" in message
    assert PASSWORD not in message


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        (
            "SIGHT_DATABASE_URL",
            "SIGHT_DATABASE__URL",
        ),  # one underscore: used to be ignored silently
        ("SIGHT_CACHE__TTL", "SIGHT_CACHE__LOCK_TTL"),  # unknown field: used to be rejected
        ("SIGHT_REDIS__POOLSIZE", None),
        ("SIGHT_GRAPH__URI", None),
    ],
)
def test_unknown_sight_variable_warns_and_is_ignored(
    monkeypatch: pytest.MonkeyPatch, variable: str, suggestion: str | None
) -> None:
    monkeypatch.setenv(variable, "postgresql+asyncpg://u@db.example/x")
    with pytest.warns(UnknownSettingWarning) as record:
        settings = SightSettings()
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(f"{variable} is not a sight-core setting and is ignored")
    if suggestion:
        assert f"did you mean {suggestion}?" in message
    assert record[0].filename == __file__  # points at the caller's line
    assert (
        settings.database.url.get_secret_value()
        == "postgresql+asyncpg://postgres@127.0.0.1:5432/sight"
    )


def test_unknown_variable_in_dotenv_warns_the_same(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SIGHT_CACHE__TTL=3\nSIGHT_CACHE__DEFAULT_TTL=7\n")
    with pytest.warns(UnknownSettingWarning, match="SIGHT_CACHE__TTL"):
        settings = SightSettings()
    assert settings.cache.default_ttl == 7


def test_known_variables_do_not_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__POOL_SIZE", "3")
    monkeypatch.setenv("SIGHT_LLM__PRICES__GEMINI_X__INPUT", "1")  # dict field: free keys
    monkeypatch.setenv("SIGHT_LLM__PRICES__GEMINI_X__OUTPUT", "2")
    monkeypatch.setenv("SIGHT_TEST_REDIS_URL", "redis://127.0.0.1:1/0")  # the plugin's own
    monkeypatch.setenv("SIGHT_OBSERVABILITY", '{"service_name": "svc"}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = SightSettings()
    assert settings.database.pool_size == 3
    assert settings.llm.prices["gemini_x"].output == 2
    assert settings.observability.service_name == "svc"


def test_unknown_field_in_code_still_raises() -> None:
    with pytest.raises(ConfigurationError, match=r"cache\.ttl"):
        SightSettings(cache={"ttl": 3})
