"""Adversarial graph scenarios against the real FalkorDB (Bolt), through the fault proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sight_core.errors import ServiceUnavailableError
from sight_core.graph import GraphClient, WriteBatchError
from sight_core.settings import Neo4jSettings
from sight_core.testing import FaultProxy

MakeProxy = Callable[[int | str], FaultProxy]
QUERY = "UNWIND $rows AS row CREATE (:BreakItem {id: row.id})"


async def _stored(graph: GraphClient) -> set[int]:
    rows = await graph.read("MATCH (i:BreakItem) RETURN i.id AS id")
    return {int(row["id"]) for row in rows}


@pytest.fixture
async def direct(bolt_uri: str) -> GraphClient:
    client = GraphClient.from_settings(Neo4jSettings(uri=bolt_uri, preset="test"))
    await client.write("MATCH (i:BreakItem) DELETE i")
    return client


async def test_a_chunk_whose_reply_is_late_is_reported_as_it_is_stored(
    fault_proxy: MakeProxy, bolt_uri: str, direct: GraphClient
) -> None:
    """Replies delayed past the operation timeout: the write may have happened server-side.

    What the error reports as committed must match the graph, or say it does not know.
    """
    proxy = fault_proxy(bolt_uri)
    settings = Neo4jSettings(uri=proxy.url_for(bolt_uri), preset="test", operation_timeout=1.0)
    try:
        async with GraphClient.from_settings(settings, batch_size=5) as graph:
            await graph.read("RETURN 1 AS one")  # a pooled connection
            proxy.set_latency(2.5, direction="downstream")
            with pytest.raises(WriteBatchError) as raised:
                await graph.write_batch(QUERY, [{"id": i} for i in range(5)])
            proxy.restore()
            await asyncio.sleep(2.0)
            stored = await _stored(direct)
            error = raised.value
            assert stored == {i for c in error.committed for i in range(c * 5, c * 5 + 5)}
    finally:
        await direct.aclose()


async def test_the_client_recovers_after_the_server_restarts(
    fault_proxy: MakeProxy, bolt_uri: str, direct: GraphClient
) -> None:
    """Refused while "down" (every pooled connection reset), fine again once it is back."""
    proxy = fault_proxy(bolt_uri)
    settings = Neo4jSettings(uri=proxy.url_for(bolt_uri), preset="test", operation_timeout=2.0)
    try:
        async with GraphClient.from_settings(settings) as graph:
            await graph.write("CREATE (:BreakItem {id: 1})")
            proxy.refuse()
            proxy.reset()
            with pytest.raises(ServiceUnavailableError):
                await graph.read("MATCH (i:BreakItem) RETURN i.id AS id")
            proxy.restore()
            for i in range(2, 5):
                await graph.write("CREATE (:BreakItem {id: $id})", {"id": i})
            assert await _stored(graph) == {1, 2, 3, 4}
    finally:
        await direct.aclose()


async def test_write_batch_of_no_rows_runs_nothing(direct: GraphClient) -> None:
    try:
        result = await direct.write_batch(QUERY, [])
        assert (result.rows, result.batches, direct.queries) == (0, 0, 1)
    finally:
        await direct.aclose()
