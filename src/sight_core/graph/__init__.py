"""Neo4j (or any Bolt server) without blocking the event loop.

- :func:`create_driver`: an async driver configured by ``settings.neo4j`` and its pool preset.
- :class:`GraphClient`: ``read``/``write`` in managed transactions (driver retries),
  ``write_batch`` chunking rows through ``UNWIND $rows`` under a concurrency cap, ``check``
  with a deadline; driver errors wrapped in :class:`~sight_core.errors.GraphError`.
"""

from ._client import BatchResult, GraphClient, WriteBatchError, WriteSummary
from ._driver import create_driver, driver_options

__all__ = [
    "BatchResult",
    "GraphClient",
    "WriteBatchError",
    "WriteSummary",
    "create_driver",
    "driver_options",
]
