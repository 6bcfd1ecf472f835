"""Pin the public names of the foundation modules: a change here is an API change."""

from __future__ import annotations

import inspect

import sight_core
from sight_core import errors, settings


def test_top_level_names() -> None:
    assert sorted(sight_core.__all__) == [
        "ConfigurationError",
        "SightError",
        "SightSettings",
        "__version__",
    ]
    assert sight_core.__version__.count(".") >= 2


def test_every_error_derives_from_sight_error() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(inspect.isclass(c) and issubclass(c, errors.SightError) for c in classes)
    assert issubclass(errors.ConfigurationError, ValueError)
    assert issubclass(errors.NotFoundError, LookupError)
    assert issubclass(errors.DeadlineExceededError, TimeoutError)
    assert not issubclass(errors.UnloadedRelationError, AttributeError)  # loud, never "absent"
    assert issubclass(errors.ServiceUnavailableError, ConnectionError)


def test_error_tree_is_drawn_in_module_docstring() -> None:
    doc = errors.__doc__ or ""
    missing = [name for name in errors.__all__ if name not in doc]
    assert missing == []


def test_settings_names() -> None:
    assert set(settings.__all__) >= {
        "SightSettings",
        "DatabaseSettings",
        "RedisSettings",
        "Neo4jSettings",
        "LLMSettings",
        "CacheSettings",
        "ObservabilitySettings",
        "DATABASE_PRESETS",
        "REDIS_PRESETS",
        "NEO4J_PRESETS",
    }
    for name in settings.__all__:
        assert hasattr(settings, name), name
