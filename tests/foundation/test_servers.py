"""The plugin's servers: real round trips, isolation, and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


async def test_redis_round_trip(redis_client) -> None:
    await redis_client.set("sight:v1:probe", "1", px=10_000)
    assert await redis_client.get("sight:v1:probe") == b"1"
    info = await redis_client.info("server")
    assert str(info["redis_version"]).startswith("8.")


async def test_redis_flushed_between_tests(redis_client) -> None:
    assert await redis_client.get("sight:v1:probe") is None


async def test_postgres_round_trip_with_pgvector(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            version = await conn.scalar(text("SHOW server_version"))
            assert str(version).startswith("18")
            await conn.execute(text("CREATE TABLE t (id int primary key, v vector(3))"))
            await conn.execute(text("INSERT INTO t VALUES (1, '[1,2,3]'), (2, '[9,9,9]')"))
            nearest = await conn.scalar(text("SELECT id FROM t ORDER BY v <-> '[1,2,4]' LIMIT 1"))
            assert nearest == 1
    finally:
        await engine.dispose()


async def test_postgres_database_is_fresh_per_test(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.scalar(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            )
            assert tables == 0
    finally:
        await engine.dispose()


async def test_graph_emptied_between_tests(bolt_uri: str) -> None:
    import neo4j

    driver = neo4j.AsyncGraphDatabase.driver(bolt_uri, auth=None)
    try:
        records, _, _ = await driver.execute_query("MATCH (n) RETURN count(n) AS n")
        assert records[0]["n"] == 0
        await driver.execute_query("CREATE (:Persona {id: 99})")
    finally:
        await driver.close()


async def test_bolt_round_trip(bolt_uri: str) -> None:
    import neo4j

    driver = neo4j.AsyncGraphDatabase.driver(bolt_uri, auth=None)
    try:
        async with driver.session() as session:
            result = await session.run(
                "UNWIND $rows AS row CREATE (p:Persona {id: row}) RETURN count(p) AS n",
                rows=[1, 2, 3],
            )
            record = await result.single()
            assert record is not None and record["n"] == 3
            result = await session.run("MATCH (p:Persona) RETURN p.id AS id ORDER BY id")
            assert [r["id"] async for r in result] == [1, 2, 3]
        info = await driver.get_server_info()
        assert info.agent.startswith("Neo4j/")
    finally:
        await driver.close()


def test_sight_settings_fixture_points_at_servers(sight_settings, redis_url: str) -> None:
    assert sight_settings.redis.url.get_secret_value() == redis_url
    assert sight_settings.database.resolved().pool_pre_ping is False  # test preset
    assert sight_settings.llm.provider == "fake"


def test_no_server_left_after_pytest_exits(tmp_path: Path) -> None:
    """A child pytest session starts all servers, records their PIDs; after it exits none runs."""
    pids_file = tmp_path / "pids.json"
    (tmp_path / "test_child.py").write_text(
        textwrap.dedent(
            f"""
            import json

            def test_start_all(postgres_url, redis_url, bolt_uri, embedded_servers):
                with open({str(pids_file)!r}, "w") as f:
                    json.dump(embedded_servers.pids, f)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHT_TEST_")}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    pids = json.loads(pids_file.read_text())
    assert len(pids) == 3  # postgres, redis, graph
    for pid in pids:
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert not alive, f"server pid {pid} still running"


@pytest.mark.parametrize("name", ["sight_core.testing.plugin"])
def test_plugin_import_is_light(name: str) -> None:
    code = (
        f"import sys; import {name}; "
        "heavy = [m for m in ('redis', 'sqlalchemy', 'asyncpg', 'neo4j', 'langchain_core') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
