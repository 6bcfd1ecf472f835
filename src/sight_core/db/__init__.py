"""Data access on PostgreSQL: engine presets, sessions, repositories that cannot N+1, query counts.

- :func:`create_engine` / :func:`create_sessionmaker`: an asyncpg engine configured by the
  settings' pool preset; strict sessions (a lazy load raises
  :class:`~sight_core.errors.UnloadedRelationError` instead of N+1) that keep objects readable
  after commit.
- :func:`session_scope` / :func:`session_dependency`: commit on success, roll back on error,
  always close (the second is a FastAPI dependency).
- :class:`Repository`: declared eager loads applied to every read; ``get_many``, keyset ``page``,
  chunked ``add_many`` / ``upsert_many``.
- :func:`count_queries` / :func:`assert_max_queries`: how many statements a block sent.
- :class:`VectorIndex` / :class:`TextSearch`: pgvector index presets whose DDL and query share
  one expression; ``repo.nearest`` (exactly k rows under any filter) and ``repo.hybrid``
  (vector + full text, fused by reciprocal rank in one statement);
  :func:`assert_uses_index` fails a test whose query the planner would answer by scanning.
"""

from ._counting import QueryCounter, assert_max_queries, count_queries
from ._engine import (
    ConnectionBudget,
    ConnectionBudgetWarning,
    check_connection_budget,
    create_engine,
    engine_options,
)
from ._errors import integrity_errors, translate_integrity_error
from ._explain import assert_uses_index, explain
from ._loader import RepositoryLoader
from ._loading import LoadSpec, eager
from ._repository import MAX_PARAMETERS, Page, Repository
from ._session import create_sessionmaker, session_dependency, session_scope
from ._vector import (
    Distance,
    HybridHit,
    IterativeScan,
    Neighbor,
    TextSearch,
    VectorIndex,
    rrf_score,
)

__all__ = [
    "ConnectionBudget",
    "ConnectionBudgetWarning",
    "Distance",
    "HybridHit",
    "IterativeScan",
    "LoadSpec",
    "MAX_PARAMETERS",
    "Neighbor",
    "Page",
    "QueryCounter",
    "Repository",
    "RepositoryLoader",
    "TextSearch",
    "VectorIndex",
    "assert_max_queries",
    "assert_uses_index",
    "check_connection_budget",
    "count_queries",
    "create_engine",
    "create_sessionmaker",
    "eager",
    "engine_options",
    "explain",
    "integrity_errors",
    "rrf_score",
    "session_dependency",
    "session_scope",
    "translate_integrity_error",
]
