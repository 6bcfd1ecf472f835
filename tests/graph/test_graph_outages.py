"""Graph reads and writes against a refused or hung server end within the preset's deadline.

Issue 12 item 9: the driver's managed-transaction retry (30 s by default) made ``read()`` take
33-41 s to fail; a connection that stops answering mid-query hung forever. Through the fault
proxy in front of the FalkorDB Bolt port.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sight_core.errors import ConfigurationError, ServiceUnavailableError
from sight_core.graph import GraphClient, driver_options
from sight_core.settings import NEO4J_PRESETS, Neo4jSettings
from sight_core.testing import FaultProxy

MakeProxy = Callable[[int | str], FaultProxy]


@pytest.mark.parametrize("preset", sorted(NEO4J_PRESETS))
async def test_presets_bound_the_driver_retry_and_each_operation(preset: str) -> None:
    settings = Neo4jSettings(preset=preset)
    pool = settings.resolved()
    assert driver_options(settings)["max_transaction_retry_time"] == pool.max_transaction_retry_time
    assert pool.max_transaction_retry_time < pool.operation_timeout
    async with GraphClient.from_settings(settings) as client:
        assert client.timeout == pool.operation_timeout
    if preset == "api":
        assert pool.operation_timeout <= 5.0


async def test_timeout_is_validated() -> None:
    from sight_core.graph import create_driver

    driver = create_driver(Neo4jSettings())
    try:
        with pytest.raises(ConfigurationError, match="got -1"):
            GraphClient(driver, timeout=-1)
    finally:
        await driver.close()


async def test_api_read_against_a_refused_server_fails_within_five_seconds(
    fault_proxy: MakeProxy, bolt_uri: str
) -> None:
    proxy = fault_proxy(bolt_uri)
    proxy.refuse()
    async with GraphClient.from_settings(
        Neo4jSettings(uri=proxy.url_for(bolt_uri), preset="api")
    ) as graph:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError):
            await graph.read("RETURN 1 AS x")
        assert time.monotonic() - start < 5.0 + 1.5  # 33-41 s before


async def test_api_read_against_a_black_holed_server_fails_within_five_seconds(
    fault_proxy: MakeProxy, bolt_uri: str
) -> None:
    proxy = fault_proxy(bolt_uri)
    async with GraphClient.from_settings(
        Neo4jSettings(uri=proxy.url_for(bolt_uri), preset="api")
    ) as graph:
        assert await graph.read("RETURN 1 AS x") == [{"x": 1}]
        proxy.blackhole()  # the pooled connection stops answering mid-query: hung forever before
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="within 5 s"):
            await graph.read("RETURN 2 AS x")
        assert time.monotonic() - start < 5.0 + 1.5
        proxy.restore()
        assert await graph.read("RETURN 3 AS x") == [{"x": 3}]


async def test_write_against_a_server_that_hangs_new_connections_ends_at_the_deadline(
    fault_proxy: MakeProxy, bolt_uri: str
) -> None:
    proxy = fault_proxy(bolt_uri)
    proxy.blackhole()  # connections are accepted and the Bolt handshake never answered
    settings = Neo4jSettings(uri=proxy.url_for(bolt_uri), preset="test", operation_timeout=1.0)
    async with GraphClient.from_settings(settings) as graph:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match=r"graph write within 1 s"):
            await graph.write("CREATE (:Probe)")
        assert time.monotonic() - start < 1.0 + 1.5
    proxy.restore()
