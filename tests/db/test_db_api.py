"""The public names of sight_core.db and sight_core.graph are pinned."""

from __future__ import annotations

import sight_core.db
import sight_core.graph


def test_db_public_names() -> None:
    assert sorted(sight_core.db.__all__) == sorted(
        [
            "MAX_PARAMETERS",
            "ConnectionBudget",
            "ConnectionBudgetWarning",
            "LoadSpec",
            "Page",
            "QueryCounter",
            "Repository",
            "RepositoryLoader",
            "assert_max_queries",
            "check_connection_budget",
            "count_queries",
            "create_engine",
            "create_sessionmaker",
            "eager",
            "engine_options",
            "integrity_errors",
            "session_dependency",
            "session_scope",
            "translate_integrity_error",
        ]
    )
    for name in sight_core.db.__all__:
        assert getattr(sight_core.db, name) is not None


def test_graph_public_names() -> None:
    assert sorted(sight_core.graph.__all__) == [
        "BatchResult",
        "GraphClient",
        "WriteSummary",
        "create_driver",
        "driver_options",
    ]
