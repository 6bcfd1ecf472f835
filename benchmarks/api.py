"""API benchmark: the example service's cached persona read vs the same read without the cache.

The example app runs under uvicorn in a child process (one worker) on embedded PostgreSQL and
Redis; 50 keep-alive HTTP clients in this process send GETs round robin over 20 personas.
Cached (``GET /projects/{p}/personas/{id}``: ``@cache.cached`` with the in-process tier over
Redis) and uncached (``.../uncached``: the same one-query read through the repository) runs
alternate A B A B ... for several rounds; each figure is the median of the rounds with min-max.

Run: ``uv run python -m benchmarks.api`` (``--quick`` for fewer requests).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable
from typing import Any

from sight_core._demo import LoadResult, embedded_settings, http_load, load_example, serve_example
from sight_core.settings import SightSettings

CLIENTS = 50
PERSONAS = 20
TARGET_P95_MS = 50.0
SETTLE = 1.0  # seconds between runs


def _fmt(values: list[float], unit: str) -> str:
    return f"{statistics.median(values):.1f} {unit} ({min(values):.1f}-{max(values):.1f})"


async def _seed(settings: SightSettings, example: Any) -> tuple[list[str], list[str]]:
    import httpx

    app = example.create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            project = (await client.post("/projects", json={"name": "bench"})).json()["id"]
            response = await client.post(
                f"/projects/{project}/personas/generate", json={"count": PERSONAS}
            )
            response.raise_for_status()
            ids = [p["id"] for p in response.json()["personas"]]
    cached = [f"/projects/{project}/personas/{i}" for i in ids]
    return cached, [path + "/uncached" for path in cached]


async def _measure(settings: SightSettings, quick: bool) -> list[dict[str, Any]]:
    example, root = load_example()
    cached, uncached = await _seed(settings, example)
    rounds = 3 if quick else 5
    requests = 1000 if quick else 3000
    results: dict[str, list[LoadResult]] = {"cached": [], "uncached": []}
    async with serve_example(settings, root) as server:
        host, port = server.host, server.port
        for paths in (cached, uncached):  # warm-up: connections, pools, cache entries
            await http_load(host, port, paths, clients=CLIENTS, requests=len(paths) * 5)
        for _ in range(rounds):
            for name, paths in (("cached", cached), ("uncached", uncached)):
                await asyncio.sleep(SETTLE)  # let the previous run's backlog drain
                load = await http_load(host, port, paths, clients=CLIENTS, requests=requests)
                if load.errors:
                    raise RuntimeError(f"{load.errors} failed requests on the {name} endpoint")
                results[name].append(load)

    def stat(name: str, pick: Callable[[LoadResult], float]) -> list[float]:
        return [pick(r) for r in results[name]]

    rows: list[dict[str, Any]] = []
    for label, q in (("P50", 0.5), ("P95", 0.95), ("P99", 0.99)):
        ours = [r.ms(q) for r in results["cached"]]
        ref = [r.ms(q) for r in results["uncached"]]
        is_p95 = label == "P95"
        rows.append(
            {
                "case": f"cached read {label}, {CLIENTS} clients (vs uncached same read)",
                "ours": _fmt(ours, "ms"),
                "reference": _fmt(ref, "ms"),
                "ratio": f"{statistics.median(ours) / statistics.median(ref):.2f}x",
                "target": f"<= {TARGET_P95_MS:g} ms" if is_p95 else "-",
                "verdict": (
                    ("PASS" if statistics.median(ours) <= TARGET_P95_MS else "FAIL")
                    if is_p95
                    else "info"
                ),
            }
        )
    ours_rps = stat("cached", lambda r: r.rps)
    ref_rps = stat("uncached", lambda r: r.rps)
    rows.append(
        {
            "case": f"throughput, {CLIENTS} clients",
            "ours": _fmt(ours_rps, "req/s"),
            "reference": _fmt(ref_rps, "req/s"),
            "ratio": f"{statistics.median(ours_rps) / statistics.median(ref_rps):.2f}x",
            "target": "-",
            "verdict": "info",
        }
    )
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Start embedded servers, run the interleaved rounds, return the table rows."""
    with embedded_settings(graph=False) as settings:
        return asyncio.run(_measure(settings, quick))


def main() -> None:
    from sight_core._bench import format_table

    print(format_table(run(quick="--quick" in sys.argv[1:])))


if __name__ == "__main__":
    main()
