"""``sight-core demo``: the example service end to end, judged against the platform's rules.

Starts embedded PostgreSQL and Redis (or uses the ``SIGHT_*`` servers with ``--external``),
runs the example service (``examples/sight_service``) in process through its HTTP API: a
project, bulk persona generation, a read after an update, a focus-group round, usage per
project. Then it serves the same app with uvicorn in a child process and puts 50 concurrent
keep-alive HTTP clients on the cached read endpoint. It prints one line per step and a report
with a met / NOT MET verdict per rule; the exit code is 0 only when every rule is met.
Every server and child process it started is stopped before it returns.

The helpers :func:`serve_example` and :func:`http_load` are shared with ``benchmarks/api.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sight_core.settings import SightSettings

__all__ = [
    "ExampleServer",
    "LoadResult",
    "Rule",
    "embedded_settings",
    "http_load",
    "load_example",
    "percentile",
    "run_demo",
    "run_servers",
    "server_environment",
    "serve_example",
]

QUESTIONS = (
    "Would you pay 49 per month for an e-bike subscription? Why or why not?",
    "What is your biggest worry about it?",
)
LOAD_CLIENTS = 50
LOAD_ROUNDS = 3
LOAD_REQUESTS = 1500
MAX_PERSONAS = 200  # what one generation request of the example accepts (GenerateIn.count)


# --------------------------------------------------------------------------------------------
# Servers and the example package
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) for the block, then raise the ``KeyboardInterrupt``.

    A server start is a process spawn followed by a wait for its port: interrupted in between,
    the process runs on, known to nobody. Deferred, the start either did not begin or its
    server is in the cleanup list. The children are unaffected (a handler is not inherited).
    Outside the main thread (no signal handlers there) the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:  # also when the block failed because the signal stopped a child
            raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``timeout``, ``kill``, a CI cancel) and SIGHUP (the terminal closed, an
    ssh session dropped) like Ctrl-C for the block.

    The handler re-sends SIGINT to this process, so the same path runs: inside
    ``asyncio.run`` the main task is cancelled and every ``async with`` unwinds (the uvicorn
    child is stopped, the lifespan closes its pools); outside, ``KeyboardInterrupt`` unwinds the
    ``with`` blocks that stop the servers. Outside the main thread the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])

    def interrupt(*_: object) -> None:
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            # Started with SIGINT ignored (a `command &` from a script, some supervisors):
            # a re-sent SIGINT would be dropped and the command would exit 0 as if asked to.
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT)

    previous = {signum: signal.signal(signum, interrupt) for signum in stops}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def embedded_settings(*, graph: bool = True) -> Iterator[SightSettings]:
    """Start PostgreSQL, Redis and (with ``graph``) a FalkorDB Bolt server on loopback; yield
    settings with ``api`` pool presets and the fake model provider; stop them all on exit,
    also when a start fails or Ctrl-C arrives while one is starting."""
    try:
        from sight_core.testing.servers import EmbeddedServer, start_postgres, start_redis
    except ImportError as exc:  # pragma: no cover - dev group missing
        raise SystemExit(
            f"embedded servers need the dev dependencies ({exc}); run `uv sync` first"
        ) from None
    servers: list[EmbeddedServer] = []

    def start(starter: Callable[[], EmbeddedServer]) -> EmbeddedServer:
        with _interrupt_deferred():
            server = starter()
            servers.append(server)
        return server

    try:
        redis = start(lambda: start_redis(with_bolt=False))
        values: dict[str, object] = {"redis": {"url": redis.url, "preset": "api"}}
        if graph:
            bolt = start(lambda: start_redis(with_bolt=True))
            values["neo4j"] = {"uri": bolt.extra_urls["bolt"], "preset": "api"}
        postgres = start(start_postgres)
        dsn = postgres.url.replace("postgresql://", "postgresql+asyncpg://", 1)
        values["database"] = {"url": dsn, "preset": "api"}
        values["llm"] = {"provider": "fake"}
        yield SightSettings(_env_file=None, **values)
    finally:
        for server in reversed(servers):
            server.stop()


def _example_root() -> Path | None:
    """The directory holding ``examples/sight_service``: the source tree this package was
    imported from first (``src/sight_core`` → repository root: the example that matches this
    code), then the working directory and its parents."""
    source_root = Path(__file__).resolve().parent.parent.parent
    cwd = Path.cwd()
    for candidate in (source_root, cwd, *cwd.parents):
        if (candidate / "examples" / "sight_service" / "__init__.py").is_file():
            return candidate
    return None


def load_example() -> tuple[ModuleType, Path]:
    """Import ``examples.sight_service`` (not an installed package) from the repository root
    found by :func:`_example_root`, which is put first on ``sys.path``; return the module
    and that root.

    Raises:
        SystemExit: ``examples/sight_service`` is not found, or an ``examples`` package from
            elsewhere is already imported and shadows it; the message says what to do.
    """
    root = _example_root()
    if root is None:
        raise SystemExit(
            "examples/sight_service not found: run `sight-core demo` from a sight-core "
            "checkout (the example service is not installed with the package)"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module("examples.sight_service")
    expected = (root / "examples" / "sight_service").resolve()
    found = Path(module.__file__ or "").resolve().parent
    if found != expected:
        raise SystemExit(
            f"`examples.sight_service` was imported from {found}, not from {expected}: another "
            "package named `examples` shadows the sight-core checkout; run from the checkout "
            "in a clean environment"
        )
    return module, root


def server_environment(settings: SightSettings) -> dict[str, str]:
    """The ``SIGHT_*`` variables that point a process at the servers of ``settings`` (and the
    fake model): what ``sight-core servers`` prints and what the docs examples run with."""
    env = {
        "SIGHT_DATABASE__URL": settings.database.url.get_secret_value(),
        "SIGHT_REDIS__URL": settings.redis.url.get_secret_value(),
        "SIGHT_LLM__PROVIDER": "fake",
    }
    if "neo4j" in settings.model_fields_set:
        env["SIGHT_NEO4J__URI"] = settings.neo4j.uri
    return env


def _env_for(settings: SightSettings) -> dict[str, str]:
    return {
        **server_environment(settings),
        "SIGHT_DATABASE__PRESET": settings.database.preset,
        "SIGHT_REDIS__PRESET": settings.redis.preset,
    }


def run_servers() -> int:
    """``sight-core servers``: start the embedded servers, print ``export`` lines, wait.

    Stops every server on Ctrl-C or SIGTERM and prints one line. Returns the exit code.
    """
    with _terminate_as_interrupt(), embedded_settings(graph=True) as settings:
        for name, value in server_environment(settings).items():
            print(f"export {name}='{value}'")
        print(
            "# PostgreSQL 18 (+pgvector), Redis 8 and Bolt (FalkorDB) on 127.0.0.1; paste the "
            "lines above into another shell. Ctrl-C stops the servers.",
            flush=True,
        )
        signal.pause() if hasattr(signal, "pause") else time.sleep(1e9)  # until a signal
    return 0


@dataclass
class ExampleServer:
    """The example app under uvicorn in a child process; :meth:`ready` waits for ``/health``."""

    host: str
    port: int
    process: asyncio.subprocess.Process

    async def ready(self, timeout: float = 60.0) -> None:
        """Return once ``/health`` answers 200.

        Raises:
            RuntimeError: the process exited, or did not answer within ``timeout`` seconds.
        """
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"uvicorn exited with code {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    health = await client.get(f"http://{self.host}:{self.port}/health")
                    if health.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the example service did not answer within {timeout} s")
                await asyncio.sleep(0.05)

    async def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        import httpx

        async with httpx.AsyncClient(timeout=10.0) as client:
            return (await client.get(f"http://{self.host}:{self.port}/metrics")).text


@contextlib.asynccontextmanager
async def serve_example(
    settings: SightSettings, root: Path, *, wait: bool = True, workers: int = 1
) -> AsyncIterator[ExampleServer]:
    """Run the example app under uvicorn (one worker, a child process) on a free loopback port.

    Yields once ``/health`` answers (or at once with ``wait=False``: call ``ready()`` later).
    The schema must exist already (the child's startup only checks it). On exit the process
    gets SIGTERM, then SIGKILL after 10 s. The child serves reads with the fake provider.
    """
    from sight_core.testing.servers import free_port

    port = free_port()
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **_env_for(settings), "PYTHONPATH": path}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "examples.sight_service.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--workers",
        str(workers),
    ]
    # its own session: a terminal's Ctrl-C reaches the parent only, which stops it below
    process = await asyncio.create_subprocess_exec(
        *command, cwd=root, env=env, start_new_session=True
    )
    server = ExampleServer("127.0.0.1", port, process)
    try:
        if wait:
            await server.ready()
        yield server
    finally:
        if process.returncode is None:
            # SIGTERM: uvicorn's graceful shutdown once it runs, a silent exit while it is still
            # importing (SIGINT there prints a KeyboardInterrupt traceback)
            with contextlib.suppress(ProcessLookupError):  # it may exit in the meantime
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


@dataclass
class LoadResult:
    """Latencies (seconds) of every request, and the wall time of the whole load."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


async def http_load(
    host: str, port: int, paths: Sequence[str], *, clients: int, requests: int
) -> LoadResult:
    """``clients`` keep-alive HTTP/1.1 connections sending ``requests`` GETs in total over
    ``paths`` (round robin), each client waiting for its answer before the next request.

    The client is a few lines over asyncio streams, so it costs far less CPU than the server
    it measures. A non-200 answer counts in ``errors``.
    """
    result = LoadResult()
    counter = iter(range(requests))

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for index in counter:
                path = paths[index % len(paths)]
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                at = head.lower().find(b"content-length:")
                length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
                await reader.readexactly(length)
                result.latencies.append(time.perf_counter() - start)
                if not head.startswith(b"HTTP/1.1 200"):
                    result.errors += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.wall = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One line of the report: the rule, its target, what was measured, and the verdict."""

    name: str
    target: str
    measured: str
    met: bool | None
    """``None``: information, no target to meet (an amortized figure, say)."""

    @property
    def verdict(self) -> str:
        return "info" if self.met is None else "met" if self.met else "NOT MET"


REPORT_WIDTH = 100


def _table(rules: Sequence[Rule], width: int = REPORT_WIDTH) -> str:
    """The report, no wider than ``width``: per rule a line ``verdict  rule (target: ...)``,
    then what was measured, indented and wrapped."""
    import textwrap

    lines = []
    for rule in rules:
        target = f" (target: {rule.target})" if rule.target != "-" else ""
        lines.append(f"{rule.verdict:<8} {rule.name}{target}")
        lines += textwrap.wrap(
            rule.measured, width, initial_indent=" " * 9, subsequent_indent=" " * 9
        )
    return "\n".join(lines)


def _metric(text: str, name: str, **labels: str) -> float:
    """One sample of Prometheus text (labels matched as a subset), 0.0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0


class _Progress:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f}s] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------


@dataclass
class _Workflow:
    """What the in-process part of the scenario measured."""

    personas: int = 0
    generation_seconds: float = 0.0
    generation_queries: int = 0
    per_persona: list[float] = field(default_factory=list)
    fresh_after_update: bool = False
    answers: int = 0
    focus_seconds: float = 0.0
    per_answer: list[float] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    pool_size: int = 0
    pool_max: int = 0
    pool_peak: int = 0


async def _workflow(app: Any, personas: int, say: _Progress, out: _Workflow) -> None:
    """Drive the in-process app through its HTTP API (ASGI transport)."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo", timeout=600) as c:
        project = (await c.post("/projects", json={"name": "e-bike study"})).json()["id"]
        say(f"project {project} created")

        say(f"generating {personas} personas in parallel ...")
        response = await c.post(f"/projects/{project}/personas/generate", json={"count": personas})
        response.raise_for_status()
        generated = response.json()
        timing = response.headers["server-timing"]
        out.generation_queries = int(timing.split('desc="', 1)[1].split(" ", 1)[0])
        out.personas = len(generated["personas"])
        out.generation_seconds = generated["seconds"]
        out.per_persona = [ms / 1000 for ms in generated["call_latency_ms"]]
        say(
            f"  {out.personas} personas stored in {out.generation_seconds:.2f} s "
            f"({out.generation_queries} queries for the whole request)"
        )

        first = generated["personas"][0]
        url = f"/projects/{project}/personas/{first['id']}"
        await c.get(url)
        await c.patch(url, json={"occupation": "bike courier"})
        out.fresh_after_update = (await c.get(url)).json()["occupation"] == "bike courier"
        say(f"read after update: {'fresh' if out.fresh_after_update else 'STALE'}")

        say(f"focus group: {out.personas} personas x {len(QUESTIONS)} questions ...")
        response = await c.post(
            f"/projects/{project}/focus-groups",
            json={"topic": "e-bike subscription", "questions": list(QUESTIONS)},
        )
        response.raise_for_status()
        group = response.json()
        out.answers = group["answers"]
        out.focus_seconds = group["seconds"]
        out.per_answer = [ms / 1000 for ms in group["answer_latency_ms"]]
        say(f"  {out.answers} answers in {out.focus_seconds:.2f} s")

        out.usage = (await c.get(f"/projects/{project}/usage")).json()
        out.paths = [f"/projects/{project}/personas/{p['id']}" for p in generated["personas"]]


async def _scenario(
    settings: SightSettings, root: Path, example: ModuleType, personas: int, say: _Progress
) -> list[Rule]:
    """The scenario. Ctrl-C (or SIGTERM, re-sent as SIGINT) cancels it once: every ``async
    with`` unwinds, a second signal does not cut the cleanup short, and asyncio's "never
    retrieved" reports of connections the stopping servers dropped (a terminal's Ctrl-C reaches
    them too) are not printed. Raises ``KeyboardInterrupt`` once unwound."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted = False

    def on_interrupt() -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            task.cancel()

    def quiet_when_interrupted(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not interrupted:
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet_when_interrupted)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        return await _scenario_steps(settings, root, example, personas, say)
    except BaseException:
        if interrupted:  # whatever the unwinding raised (a DB call cut short...) is the interrupt
            raise KeyboardInterrupt from None
        raise
    finally:
        if main_thread:
            loop.remove_signal_handler(signal.SIGINT)


async def _scenario_steps(
    settings: SightSettings, root: Path, example: ModuleType, personas: int, say: _Progress
) -> list[Rule]:
    from sqlalchemy import event

    from sight_core.llm import clear_model_cache

    clear_model_cache()
    app = example.create_app(settings)
    work = _Workflow()
    loads: list[LoadResult] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        state = app.state.sight
        pool = state.engine.sync_engine.pool
        now = [0]

        def checkout(*_: Any) -> None:
            now[0] += 1
            work.pool_peak = max(work.pool_peak, now[0])

        def checkin(*_: Any) -> None:
            now[0] -= 1

        event.listen(pool, "checkout", checkout)
        stack.callback(event.remove, pool, "checkout", checkout)
        event.listen(pool, "checkin", checkin)
        stack.callback(event.remove, pool, "checkin", checkin)
        work.pool_size = pool.size()
        work.pool_max = work.pool_size + settings.database.resolved().max_overflow
        say(
            f"example service up in process (model {state.model('flash').model_name}, "
            f"pool {work.pool_size} kept / {work.pool_max} max)"
        )
        say("starting a uvicorn copy for the load test")
        # the schema exists now; the child process starts while the workflow runs
        server = await stack.enter_async_context(serve_example(settings, root, wait=False))
        await _workflow(app, personas, say, work)

        await server.ready()
        before = await server.metrics()  # the warm-up's misses count in the hit ratio
        await http_load(server.host, server.port, work.paths, clients=LOAD_CLIENTS, requests=500)
        say(
            f"load: {LOAD_CLIENTS} keep-alive clients, {LOAD_ROUNDS} rounds of "
            f"{LOAD_REQUESTS} GETs of the cached persona read ..."
        )
        for _ in range(LOAD_ROUNDS):
            load = await http_load(
                server.host, server.port, work.paths, clients=LOAD_CLIENTS, requests=LOAD_REQUESTS
            )
            loads.append(load)
            say(
                f"  {load.rps:.0f} req/s, P50 {load.ms(0.5):.1f} ms, P95 {load.ms(0.95):.1f} ms, "
                f"P99 {load.ms(0.99):.1f} ms, {load.errors} errors"
            )
        after = await server.metrics()
        say("stopping the uvicorn child and the in-process app")
    return _judge(settings, work, loads, before, after)


def _judge(
    settings: SightSettings,
    work: _Workflow,
    loads: list[LoadResult],
    before: str,
    after: str,
) -> list[Rule]:
    route = "/projects/{project_id}/personas/{persona_id}"

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    hits = delta("sight_cache_hits_total", namespace="persona")
    misses = delta("sight_cache_misses_total", namespace="persona")
    ratio = hits / (hits + misses) if hits + misses else 0.0
    served = delta("sight_http_request_seconds_count", route=route, status="200")
    read_queries = delta("sight_http_db_queries_total", route=route)
    server_p95 = _metric(after, "sight_http_request_seconds", route=route, quantile="0.95")
    median = sorted(loads, key=lambda r: r.ms(0.95))[len(loads) // 2]
    p95s = [r.ms(0.95) for r in loads]
    errors = sum(r.errors for r in loads)

    latency = settings.llm.fake_latency if settings.llm.provider == "fake" else None
    p50_persona = percentile(work.per_persona, 0.5)
    extra = ""
    if latency is not None:
        overhead = max(0.0, p50_persona - latency) * 1000
        extra = f" (one call {latency:g} s; wrapper overhead {overhead:.0f} ms)"
    per_pq = work.focus_seconds / work.answers if work.answers else float("inf")
    per_read = read_queries / served if served else float("inf")
    expected_calls = work.personas + work.answers
    usage = work.usage
    return [
        Rule(
            f"{work.personas} personas in bulk",
            "< 60 s",
            f"{work.generation_seconds:.2f} s{extra}; per persona p50 {p50_persona:.2f} s, "
            f"max {max(work.per_persona):.2f} s",
            work.generation_seconds < 60,
        ),
        Rule(
            "focus-group answer latency",
            "< 3 s each",
            f"per answer p50 {percentile(work.per_answer, 0.5):.2f} s, "
            f"p95 {percentile(work.per_answer, 0.95):.2f} s, max {max(work.per_answer):.2f} s"
            + (f" (the fake model takes {latency:g} s per call)" if latency is not None else ""),
            max(work.per_answer) < 3,
        ),
        Rule(
            "focus-group round, amortized",
            "-",
            f"{work.focus_seconds:.1f} s wall / {work.answers} answers = {per_pq:.2f} s per "
            "answer (answers run concurrently: not a per-answer latency)",
            None,
        ),
        Rule(
            f"API P95, cached read, {LOAD_CLIENTS} clients",
            "<= 50 ms (platform: < 500 ms)",
            f"P50 {median.ms(0.5):.1f} / P95 {median.ms(0.95):.1f} / P99 {median.ms(0.99):.1f} ms"
            f" (median of {len(loads)} rounds, P95 {min(p95s):.1f}-{max(p95s):.1f}); "
            f"{median.rps:.0f} req/s; server-side P95 {server_p95 * 1000:.1f} ms",
            median.ms(0.95) <= 50 and errors == 0,
        ),
        Rule(
            "cache hit ratio, repeated reads",
            "> 80 %",
            f"{ratio:.1%} ({hits:.0f} hits, {misses:.0f} misses)",
            ratio > 0.8,
        ),
        Rule(
            "queries per request",
            "read < 1, generation <= 3",
            f"cached read {per_read:.3f}; generation of {work.personas}: {work.generation_queries}",
            per_read < 1 and work.generation_queries <= 3,
        ),
        Rule(
            "read after update",
            "fresh",
            "fresh" if work.fresh_after_update else "stale",
            work.fresh_after_update,
        ),
        Rule(
            "database pool",
            "5 kept / 20 max",
            f"{work.pool_size} kept / {work.pool_max} max; peak checked out {work.pool_peak}",
            work.pool_size == 5 and work.pool_max == 20 and work.pool_peak <= work.pool_max,
        ),
        Rule(
            "tokens and cost per project",
            "every call accounted",
            f"{usage['calls']} calls of {expected_calls}; {usage['input_tokens']} in + "
            f"{usage['output_tokens']} out tokens; ${usage['cost_usd']:.4f}",
            usage["calls"] == expected_calls and usage["cost_usd"] > 0,
        ),
    ]


def _unanswered(settings: SightSettings) -> list[str]:
    """One line per server of ``settings`` (PostgreSQL, Redis) that did not answer."""
    from sight_core.health import SERVICE_VARIABLES, run_checks

    results = asyncio.run(run_checks(settings, timeout=3.0, skip=("neo4j", "llm")))
    return [
        f"{r.service} did not answer at {r.target} ({' '.join(str(r.error).split())}); "
        f"set {SERVICE_VARIABLES[r.service]}"
        for r in results
        if not r.ok
    ]


def _settings_for(base: SightSettings, provider: str, latency: float) -> SightSettings:
    update: dict[str, Any] = {"provider": provider}
    if provider == "fake":
        update["fake_latency"] = latency
    return base.model_copy(update={"llm": base.llm.model_copy(update=update)})


def run_demo(*, provider: str, external: bool, personas: int, latency: float) -> int:
    """Run the demo; returns the process exit code (0: every rule met, 1: not, 2: usage)."""
    if not 1 <= personas <= MAX_PERSONAS:
        print(f"--personas must be between 1 and {MAX_PERSONAS}", file=sys.stderr)
        return 2
    if latency < 0:
        print("--latency must not be negative", file=sys.stderr)
        return 2
    try:
        example, root = load_example()
    except SystemExit as exc:
        print(f"sight-core demo: {exc}", file=sys.stderr)
        return 2
    with _terminate_as_interrupt():
        return _run(
            example, root, provider=provider, external=external, personas=personas, latency=latency
        )


def _run(
    example: ModuleType,
    root: Path,
    *,
    provider: str,
    external: bool,
    personas: int,
    latency: float,
) -> int:
    say = _Progress()
    what = f"fake model, {latency:g} s per call" if provider == "fake" else "Gemini"
    print(f"sight-core demo: {personas} personas, {what}", flush=True)
    with contextlib.ExitStack() as stack:
        if external:
            base = SightSettings()
            say("using the servers configured by SIGHT_* settings")
            silent = _unanswered(base)
            if silent:
                for line in silent:
                    print(f"sight-core demo --external: {line}", file=sys.stderr)
                return 2
        else:
            say("starting embedded PostgreSQL and Redis ...")
            base = stack.enter_context(embedded_settings(graph=False))
            say("servers up")
        settings = _settings_for(base, provider, latency)
        if provider == "google" and settings.llm.api_key is None:
            print("--provider google needs GOOGLE_API_KEY (or SIGHT_LLM__API_KEY)", file=sys.stderr)
            return 2
        rules = asyncio.run(_scenario(settings, root, example, personas, say))
        say("stopping servers")
    print()
    print(_table(rules))
    met = all(rule.met is not False for rule in rules)
    print()
    print(
        f"{'every rule met' if met else 'some rules NOT MET'} "
        f"in {time.perf_counter() - say.start:.1f} s"
    )
    return 0 if met else 1
