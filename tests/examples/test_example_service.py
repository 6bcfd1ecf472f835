"""The example service through HTTP (ASGI transport) on real PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from sight_core.db import count_queries


async def _project(client: httpx.AsyncClient) -> str:
    response = await client.post("/projects", json={"name": "e-bike study"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _generate(client: httpx.AsyncClient, project: str, count: int) -> list[dict[str, Any]]:
    response = await client.post(f"/projects/{project}/personas/generate", json={"count": count})
    assert response.status_code == 201, response.text
    personas: list[dict[str, Any]] = response.json()["personas"]
    return personas


def _timing(response: httpx.Response) -> dict[str, str]:
    """``Server-Timing`` as ``{metric: "dur=..;desc=.."}``."""
    entries = {}
    for part in response.headers["server-timing"].split(", "):
        name, _, rest = part.partition(";")
        entries[name] = rest
    return entries


async def test_generation_persists_20_personas_in_a_bounded_number_of_queries(
    app: Any, client: httpx.AsyncClient
) -> None:
    engine = app.state.sight.engine
    project = await _project(client)
    async with count_queries(engine) as small:
        await _generate(client, project, 2)
    async with count_queries(engine) as bulk:
        personas = await _generate(client, project, 20)

    assert len(personas) == 20
    assert len({p["id"] for p in personas}) == 20
    # project check + one multi-row INSERT + the usage row, whatever the count (the example's
    # write repositories turn the per-write SAVEPOINT off: a failed request rolls back whole)
    assert bulk.count == small.count == 3, bulk.report()
    assert sum("INSERT INTO personas" in s for s in bulk.statements) == 1
    listed = (await client.get(f"/projects/{project}/personas")).json()
    assert len(listed) == 22


async def test_generation_records_tokens_and_cost_per_project(client: httpx.AsyncClient) -> None:
    project = await _project(client)
    other = await _project(client)
    generated = await client.post(f"/projects/{project}/personas/generate", json={"count": 4})
    usage = generated.json()["usage"]

    totals = (await client.get(f"/projects/{project}/usage")).json()
    assert usage["calls"] == totals["calls"] == 4
    assert totals["input_tokens"] > 0 and totals["output_tokens"] > 0
    assert totals["cost_usd"] > 0
    assert (await client.get(f"/projects/{other}/usage")).json()["calls"] == 0


async def test_read_after_update_returns_fresh_data(client: httpx.AsyncClient) -> None:
    project = await _project(client)
    persona = (await _generate(client, project, 3))[0]
    url = f"/projects/{project}/personas/{persona['id']}"

    first = await client.get(url)
    second = await client.get(url)
    assert first.json() == second.json() == persona
    assert _timing(second)["db"].endswith('desc="0 queries"')  # served by the cache
    assert _timing(second)["cache"] == 'desc="1 hits 0 misses"'

    updated = await client.patch(url, json={"name": "Renamed Person", "age": 44})
    assert updated.status_code == 200, updated.text
    fresh = await client.get(url)
    assert fresh.json() == {**persona, "name": "Renamed Person", "age": 44}
    assert _timing(fresh)["db"].endswith('desc="1 queries"')  # the tag dropped the entry
    assert _timing(fresh)["cache"] == 'desc="0 hits 1 misses"'
    listed = (await client.get(f"/projects/{project}/personas")).json()
    assert {p["name"] for p in listed} >= {"Renamed Person"}


async def test_persona_of_another_project_is_not_found(client: httpx.AsyncClient) -> None:
    project = await _project(client)
    other = await _project(client)
    persona = (await _generate(client, project, 1))[0]
    assert (await client.get(f"/projects/{other}/personas/{persona['id']}")).status_code == 404
    missing = await client.get(f"/projects/{project}/personas/{uuid.uuid4()}")
    assert missing.status_code == 404


@contextlib.contextmanager
def _pool_use_during_model_calls(app: Any) -> Iterator[list[int]]:
    """The pool's checked-out connections at the start of each call of the fake model."""
    state = app.state.sight
    fake = state.model("flash").primary
    engine = state.engine
    held: list[int] = []
    original = fake._agenerate

    async def probe(*args: Any, **kwargs: Any) -> Any:
        held.append(engine.pool.checkedout())
        return await original(*args, **kwargs)

    fake.reset()
    object.__setattr__(fake, "_agenerate", probe)
    try:
        yield held
    finally:
        object.__delattr__(fake, "_agenerate")


async def test_generation_holds_no_connection_while_the_model_works(
    app: Any, client: httpx.AsyncClient
) -> None:
    project = await _project(client)
    with _pool_use_during_model_calls(app) as held:
        assert len(await _generate(client, project, 5)) == 5
    assert held == [0] * 5  # no pooled connection checked out during any model call


async def test_focus_group_respects_its_in_flight_limit_and_holds_no_connection(
    app: Any, client: httpx.AsyncClient
) -> None:
    fake = app.state.sight.model("flash").primary
    project = await _project(client)
    await _generate(client, project, 6)

    with _pool_use_during_model_calls(app) as held:
        response = await client.post(
            f"/projects/{project}/focus-groups",
            json={"topic": "pricing", "questions": ["Would you pay 49/month?", "Why?", "Worry?"]},
        )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["personas"] == 6 and body["answers"] == 18
    assert fake.attempts == 18
    assert fake.max_in_flight == 4  # create_app(focus_limit=4) in conftest: reached, never passed
    assert held == [0] * 18  # no pooled connection checked out during any model call


async def test_prometheus_output_has_route_histograms_and_cache_counters(
    client: httpx.AsyncClient,
) -> None:
    project = await _project(client)
    persona = (await _generate(client, project, 1))[0]
    route = "/projects/{project_id}/personas/{persona_id}"
    count_line = re.compile(
        r'^sight_http_request_seconds_count\{method="GET",route="'
        + re.escape(route)
        + r'",status="200"\} (\S+)$',
        re.M,
    )
    hits_line = re.compile(
        r'^sight_cache_hits_total\{namespace="persona",prefix="sight-example"\} (\S+)$', re.M
    )

    def read(text: str, pattern: re.Pattern[str]) -> float:
        found = pattern.search(text)
        return float(found.group(1)) if found else 0.0

    before = (await client.get("/metrics")).text
    for _ in range(3):
        assert (await client.get(f"/projects/{project}/personas/{persona['id']}")).is_success
    metrics = await client.get("/metrics")

    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert read(text, count_line) - read(before, count_line) == 3
    assert read(text, hits_line) - read(before, hits_line) == 2  # 1 miss, then 2 hits
    for q in ("0.5", "0.95", "0.99"):
        assert f'route="{route}",status="200",quantile="{q}"' in text
    assert "sight_cache_misses_total{" in text
    assert "sight_llm_" in text  # the model layer reports to the same registry


async def test_middleware_adds_server_timing_and_request_id(client: httpx.AsyncClient) -> None:
    project = await _project(client)
    generated = await client.post(
        f"/projects/{project}/personas/generate",
        json={"count": 3},
        headers={"X-Request-ID": "req-42.a"},
    )
    assert generated.headers["x-request-id"] == "req-42.a"
    timing = _timing(generated)
    assert set(timing) == {"db", "cache", "llm", "total"}
    # project check + the personas' INSERT + the usage INSERT (no SAVEPOINTs, see above)
    assert timing["db"].endswith('desc="3 queries"')
    assert timing["llm"].endswith('desc="3 calls"')

    bad = await client.get(f"/projects/{project}/usage", headers={"X-Request-ID": "bad id\t!"})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])
    generated_ids = {
        (await client.get(f"/projects/{project}/usage")).headers["x-request-id"] for _ in range(3)
    }
    assert len(generated_ids) == 3
