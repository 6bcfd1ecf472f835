"""The public names of sight_core.db and sight_core.graph are pinned."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sight_core.db
import sight_core.graph
from sight_core.db import Repository
from sight_core.errors import ConfigurationError


def test_db_public_names() -> None:
    assert sorted(sight_core.db.__all__) == sorted(
        [
            "MAX_PARAMETERS",
            "ConnectionBudget",
            "Distance",
            "HybridHit",
            "IterativeScan",
            "Neighbor",
            "TextSearch",
            "VectorIndex",
            "assert_uses_index",
            "explain",
            "rrf_score",
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
        "WriteBatchError",
        "WriteSummary",
        "create_driver",
        "driver_options",
    ]


def test_repository_needs_a_model_with_a_single_primary_key() -> None:
    with pytest.raises(ConfigurationError, match=r"subclass Repository\[YourModel\]"):
        Repository(session=None)  # type: ignore[arg-type]

    class Base(DeclarativeBase):
        pass

    class Membership(Base):
        __tablename__ = "memberships"
        project_id: Mapped[int] = mapped_column(primary_key=True)
        persona_id: Mapped[int] = mapped_column(primary_key=True)

    class MembershipRepository(Repository[Membership]):
        pass

    assert MembershipRepository.model is Membership
    with pytest.raises(ConfigurationError, match="composite primary key"):
        MembershipRepository._meta()
