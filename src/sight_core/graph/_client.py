"""``GraphClient``: managed read/write transactions, batched ``UNWIND`` writes, wrapped errors."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, LiteralString, Self

import neo4j
from neo4j.exceptions import DriverError, Neo4jError, ServiceUnavailable, SessionExpired

from sight_core.errors import ConfigurationError, GraphError, ServiceUnavailableError
from sight_core.settings import Neo4jSettings

from ._driver import create_driver

__all__ = ["BatchResult", "GraphClient", "WriteBatchError", "WriteSummary"]

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriteSummary:
    """What a write changed, summed over its transactions (from the server's counters)."""

    nodes_created: int = 0
    nodes_deleted: int = 0
    relationships_created: int = 0
    relationships_deleted: int = 0
    properties_set: int = 0
    labels_added: int = 0

    @classmethod
    def from_counters(cls, counters: Any) -> WriteSummary:
        return cls(**{f.name: int(getattr(counters, f.name, 0) or 0) for f in fields(cls)})

    def __add__(self, other: WriteSummary) -> WriteSummary:
        return WriteSummary(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


class WriteBatchError(GraphError):
    """``write_batch`` stopped after a chunk failed; says exactly what was committed.

    ``committed``, ``failed`` and ``not_started`` are chunk indices (sorted);
    ``committed_rows`` is how many rows the committed chunks carried, ``summary`` their
    server counters, ``errors`` the error of each failed chunk. Chunk ``i`` holds rows
    ``i * batch_size`` up to the next chunk's first row.
    """

    def __init__(
        self,
        *,
        rows: int,
        size: int,
        committed: Mapping[int, WriteSummary],
        failed: Mapping[int, BaseException],
    ) -> None:
        chunks = -(-rows // size)
        self.batch_size = size
        self.committed = tuple(sorted(committed))
        self.failed = tuple(sorted(failed))
        self.not_started = tuple(i for i in range(chunks) if i not in committed and i not in failed)
        self.committed_rows = sum(min(size, rows - i * size) for i in self.committed)
        self.summary = sum(committed.values(), WriteSummary())
        self.errors = dict(sorted(failed.items()))
        first = self.failed[0]
        error = failed[first]
        last_row = min((first + 1) * size, rows) - 1
        super().__init__(
            f"write_batch chunk {first} (rows {first * size}..{last_row}) failed: "
            f"{type(error).__name__}: {error}; committed "
            f"{len(self.committed)} of {chunks} chunks ({self.committed_rows} of {rows} rows), "
            f"failed {len(self.failed)} {list(self.failed)}, not started {len(self.not_started)}"
        )
        self.__cause__ = failed[first]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcome of :meth:`GraphClient.write_batch`: rows sent, transactions run, counters."""

    rows: int
    batches: int
    summary: WriteSummary


def _observe(op: str, started: float) -> None:
    try:
        from sight_core.observability import observe

        observe("sight_graph_query_seconds", time.perf_counter() - started, op=op)
    except Exception:  # observability must never break a query
        pass


@asynccontextmanager
async def _wrapped(what: str, timeout: float | None) -> AsyncIterator[None]:
    """Driver errors -> sight-core errors; the block must end within ``timeout`` seconds."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            yield
    except TimeoutError as exc:
        if not deadline.expired():
            raise ServiceUnavailableError(f"graph server timed out during {what}") from exc
        raise ServiceUnavailableError(
            f"graph server did not complete {what} within {timeout:g} s (operation_timeout)"
        ) from exc
    except (ServiceUnavailable, SessionExpired) as exc:
        raise ServiceUnavailableError(f"graph server unavailable during {what}") from exc
    except Neo4jError as exc:
        raise GraphError(f"{what} failed: {exc.code}: {(exc.message or '')[:200]}") from exc
    except DriverError as exc:
        raise GraphError(f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}") from exc


class GraphClient:
    """Cypher over one ``neo4j.AsyncDriver``: parameters only, managed transactions, batches.

    ``read``/``write`` run in managed transactions (``execute_read``/``execute_write``), so the
    driver retries transient failures (leader switch, deadlock) within its
    ``max_transaction_retry_time``. Queries are ``LiteralString``: type checkers reject Cypher
    built from data; values always travel as parameters. Driver errors become
    :class:`~sight_core.errors.GraphError` (connection loss:
    :class:`~sight_core.errors.ServiceUnavailableError`) with the driver's error on
    ``__cause__``. Every call is awaited on the event loop; nothing blocks it.

    ``timeout`` (from the preset's ``operation_timeout`` with :meth:`from_settings`; api:
    5 s) bounds each ``read``/``write`` and each ``write_batch`` chunk, driver retries
    included: a refused or hung server raises
    :class:`~sight_core.errors.ServiceUnavailableError` by then. ``None``: no bound.
    """

    def __init__(
        self,
        driver: neo4j.AsyncDriver,
        *,
        database: str | None = None,
        batch_size: int = 1000,
        max_concurrency: int = 4,
        owns_driver: bool = False,
        timeout: float | None = None,
    ) -> None:
        if batch_size < 1 or max_concurrency < 1:
            raise ConfigurationError("batch_size and max_concurrency must be >= 1")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.timeout = timeout
        self.driver = driver
        self.database = database
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self._owns_driver = owns_driver
        self.queries = 0  #: transactions run by this client (each batch counts one)

    @classmethod
    def from_settings(cls, settings: Neo4jSettings, **options: Any) -> GraphClient:
        """A client owning a driver built by :func:`create_driver` (closed by :meth:`aclose`)."""
        options.setdefault("timeout", settings.resolved().operation_timeout)
        return cls(create_driver(settings), database=settings.database, owns_driver=True, **options)

    async def aclose(self) -> None:
        """Close the driver if this client created it."""
        if self._owns_driver:
            await self.driver.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- queries ---------------------------------------------------------------------------

    async def read(
        self, query: LiteralString, parameters: Mapping[str, Any] | None = None
    ) -> list[Record]:
        """Rows of ``query`` as dicts, in a managed read transaction (routed to readers)."""
        params = _params(parameters)

        async def work(tx: neo4j.AsyncManagedTransaction) -> list[Record]:
            result = await tx.run(query, params)
            return [record.data() async for record in result]

        started = time.perf_counter()
        async with (
            _wrapped("graph read", self.timeout),
            self.driver.session(database=self.database) as session,
        ):
            self.queries += 1
            rows = await session.execute_read(work)
        _observe("read", started)
        return rows

    async def write(
        self, query: LiteralString, parameters: Mapping[str, Any] | None = None
    ) -> tuple[list[Record], WriteSummary]:
        """``(rows, summary)`` of ``query`` in a managed write transaction."""
        params = _params(parameters)
        started = time.perf_counter()
        async with _wrapped("graph write", self.timeout):
            rows, summary = await self._write(query, params)
        _observe("write", started)
        return rows, summary

    async def _write(
        self, query: LiteralString, params: dict[str, Any]
    ) -> tuple[list[Record], WriteSummary]:
        async def work(tx: neo4j.AsyncManagedTransaction) -> tuple[list[Record], WriteSummary]:
            result = await tx.run(query, params)
            rows = [record.data() async for record in result]
            summary = await result.consume()
            return rows, WriteSummary.from_counters(summary.counters)

        async with self.driver.session(database=self.database) as session:
            self.queries += 1
            return await session.execute_write(work)

    async def write_batch(
        self,
        query: LiteralString,
        rows: Sequence[Mapping[str, Any]],
        *,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> BatchResult:
        """Write ``rows`` through ``query``, which must read them as ``UNWIND $rows AS row``.

        Rows go in chunks of ``batch_size``, one managed transaction each: ⌈len(rows) /
        batch_size⌉ transactions instead of one per row. At most ``max_concurrency`` chunks
        run at once (concurrent chunks must not write the same nodes, or they contend on
        locks). ``parameters`` are passed to every chunk besides ``rows``.

        Not atomic. When a chunk fails, no further chunk starts; the chunks already running
        are awaited (never abandoned half-way), and :class:`WriteBatchError` lists exactly
        which chunks committed, which failed and which never started. Write idempotent Cypher
        (``MERGE``) so the failed and unstarted chunks can be sent again.

        Raises:
            ConfigurationError: the query has no ``$rows``, or a size/limit is below 1.
            WriteBatchError: one or more chunks failed (a :class:`GraphError`; the first
                failure's error is on ``__cause__``).
        """
        if not re.search(r"\$rows\b", query):
            raise ConfigurationError(
                "write_batch query must read its rows as `UNWIND $rows AS row`"
            )
        size = self.batch_size if batch_size is None else batch_size
        limit = self.max_concurrency if max_concurrency is None else max_concurrency
        if size < 1 or limit < 1:
            raise ConfigurationError("batch_size and max_concurrency must be >= 1")
        extra = _params(parameters)
        if "rows" in extra:
            raise ConfigurationError("write_batch passes `rows` itself; rename that parameter")
        starts = range(0, len(rows), size)
        started = time.perf_counter()

        async def chunk(index: int) -> WriteSummary:
            start = starts[index]
            batch = [dict(row) for row in rows[start : start + size]]
            async with _wrapped("graph write_batch chunk", self.timeout):
                _, summary = await self._write(query, {**extra, "rows": batch})
            return summary

        committed, failed = await _run_chunks(chunk, len(starts), limit)
        if failed:
            raise WriteBatchError(rows=len(rows), size=size, committed=committed, failed=failed)
        total = sum(committed.values(), WriteSummary())
        _observe("write_batch", started)
        return BatchResult(len(rows), len(starts), total)

    async def check(self, deadline: float = 2.0) -> None:
        """Verify the server answers within ``deadline`` seconds (async; never blocks the loop).

        Raises:
            ServiceUnavailableError: no answer in time, or the connection failed.
        """
        try:
            async with asyncio.timeout(deadline):
                await self.driver.verify_connectivity()
        except TimeoutError:
            raise ServiceUnavailableError(
                f"graph server did not answer within {deadline}s"
            ) from None
        except (Neo4jError, DriverError, OSError) as exc:
            raise ServiceUnavailableError(
                f"graph server unreachable: {type(exc).__name__}"
            ) from exc


async def _run_chunks(
    chunk: Callable[[int], Awaitable[WriteSummary]], count: int, limit: int
) -> tuple[dict[int, WriteSummary], dict[int, BaseException]]:
    """Run ``chunk(0..count-1)``, at most ``limit`` at once, in index order.

    After the first failure no chunk starts; those running are awaited. Returns the
    summaries of the committed chunks and the errors of the failed ones, by index. If the
    caller is cancelled, running chunks are cancelled and awaited before it propagates.
    """
    committed: dict[int, WriteSummary] = {}
    failed: dict[int, BaseException] = {}
    running: dict[asyncio.Task[WriteSummary], int] = {}
    next_index = 0
    try:
        while running or (next_index < count and not failed):
            while next_index < count and not failed and len(running) < limit:
                running[asyncio.ensure_future(chunk(next_index))] = next_index
                next_index += 1
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = running.pop(task)
                error = task.exception()
                if error is None:
                    committed[index] = task.result()
                else:
                    failed[index] = error
    finally:
        if running:  # only on cancellation of the caller: end the chunks, then propagate
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
    return committed, failed


def _params(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise ConfigurationError("Cypher parameters must be a mapping of name -> value")
    return dict(parameters)
