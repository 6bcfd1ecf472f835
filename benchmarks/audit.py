"""Audit benchmark: how long ``sight-core audit`` takes over a service-shaped tree.

Run: ``uv run python -m benchmarks.audit`` (``--files N`` to change the size, ``--rounds R``).

Generates a package ``app/`` of 230 modules by default (the size of the platform's ``app/``):
20 sub-packages of realistic service modules (FastAPI routes, repositories, LangChain calls,
Redis caching, background tasks; good code and every anti-pattern mixed, about 110 lines
each) that import shared helpers from ``app.core`` (a connect-retry helper that sleeps, JSON
cache helpers, a service class that opens Redis in ``__init__``), so the call graph has
cross-module edges and the rules follow them. Then times, interleaved over several rounds:

- ours: ``audit_paths([app])``: discovery, read, parse, the project index and call graph
  (pass 1), every rule and suppressions (pass 2), in one process;
- reference: read + ``ast.parse`` of the same files and nothing else, the floor any
  ``ast``-based tool pays.

Target: the tree in under 5 s (wall, median) on this machine (2 noisy cores). CPU seconds
are printed too: they do not depend on what else the machine is running.
"""

from __future__ import annotations

import argparse
import ast
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from sight_core.audit import audit_paths

HEADER = '''"""Service module {index}: personas, surveys and insights for project workflows."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from uuid import UUID

import httpx
from fastapi import APIRouter, Depends, HTTPException
from langchain_google_genai import ChatGoogleGenerativeAI
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from sight_core.cache import Cache
from sight_core.concurrency import gather_limited
from sight_core.llm import build_chat_model

from app.core.helpers import ChatService, connect_with_retry, redis_get_json, redis_set_json

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v{index}")
cache = Cache(prefix="sight")
llm = build_chat_model(tier="flash")
'''

CORE = '''"""Shared helpers, as services grow them."""

from __future__ import annotations

import json
import time

import redis
from redis.asyncio import Redis

redis_client = Redis()


def connect_with_retry(connect, attempts=5):
    for attempt in range(attempts):
        try:
            return connect()
        except OSError:
            time.sleep(2 ** attempt)
    raise RuntimeError("no connection")


async def redis_get_json(key):
    raw = await redis_client.get(key)
    return json.loads(raw) if raw else None


async def redis_set_json(key, value, ttl):
    await redis_client.set(key, json.dumps(value), ex=ttl)


class ChatService:
    def __init__(self):
        self.redis_client = redis.from_url("redis://localhost")

    async def _answer(self, llm, question):
        return await llm.ainvoke(question)
'''

TEMPLATES = [
    # through helpers: blocking retry from a route, split read-through, per-request service
    """

@router.get("/health{n}")
async def health_{n}():
    store = connect_with_retry(lambda: object())
    return {{"ok": store is not None}}


async def summary_{n}(persona_id: UUID) -> dict:
    key = f"summary:v1:{{persona_id}}"
    cached = await redis_get_json(key)
    if cached is not None:
        return cached
    value = {{"id": str(persona_id)}}
    await redis_set_json(key, value, 600)
    return value


def get_chat_service_{n}():
    return ChatService()


@router.post("/chat{n}")
async def chat_{n}(service: ChatService = Depends(get_chat_service_{n})):
    return {{"ok": True}}
""",
    # clean: bounded fan-out
    """

@router.post("/projects/{{project_id}}/summaries{n}")
async def summarise_{n}(project_id: UUID, session: AsyncSession = Depends(get_session)):
    stmt = select(Persona).options(selectinload(Persona.project)).where(
        Persona.project_id == project_id
    )
    personas = (await session.scalars(stmt)).all()
    prompts = [f"Summarise {{p.name}} in {{p.project.name}}" for p in personas]
    answers = await gather_limited((llm.ainvoke(p) for p in prompts), limit=8)
    return [a.content for a in answers]
""",
    # SC101: sequential independent LLM calls
    """

async def score_answers_{n}(answers: list[str]) -> list[float]:
    scores = []
    for answer in answers:
        result = await llm.ainvoke(f"Score 1-10: {{answer}}")
        scores.append(float(result.content))
    return scores
""",
    # clean: dependent loop
    """

async def refine_{n}(drafts: list[str]) -> str:
    text = ""
    for instruction in drafts:
        text = (await llm.ainvoke(f"{{instruction}}\\n{{text}}")).content
    return text
""",
    # SC102: unbounded gather
    """

async def translate_{n}(sentences: list[str]) -> list[str]:
    results = await asyncio.gather(*[llm.ainvoke(s) for s in sentences])
    return [r.content for r in results]
""",
    # SC201: N+1
    """

async def cards_{n}(session: AsyncSession, project_id: UUID):
    stmt = select(Persona).where(Persona.project_id == project_id)
    personas = (await session.scalars(stmt)).all()
    out = []
    for persona in personas:
        project = await session.get(Project, persona.project_id)
        out.append((persona.name, project.name))
    return out
""",
    # SC401 + clean usage of json
    """

async def persona_{n}(redis: Redis, repo, persona_id: UUID):
    key = f"persona:{{persona_id}}"
    cached = await redis.get(key)
    if cached is not None:
        return json.loads(cached)
    persona = await repo.get(persona_id)
    await redis.setex(key, 600, json.dumps(persona.model_dump(mode="json")))
    return persona.model_dump(mode="json")
""",
    # clean: decorated cache
    """

@cache.cached(namespace="insight{n}", version=2, ttl=600, key="{{project_id}}")
async def insight_{n}(project_id: UUID, repo) -> dict:
    rows = await repo.get_many([project_id])
    return {{"count": len(rows)}}
""",
    # SC301 + SC501
    """

@router.post("/jobs{n}")
async def start_job_{n}(body: dict):
    time.sleep(0.01)
    asyncio.create_task(run_job(body))
    return {{"status": "queued"}}
""",
    # SC601
    """

async def classify_{n}(text: str) -> str:
    try:
        return (await llm.ainvoke(f"Classify: {{text}}")).content
    except Exception:
        logger.exception("classification failed")
        return "neutral"
""",
    # SC701
    """

async def ask_{n}(question: str) -> str:
    model = ChatGoogleGenerativeAI(model="gemini-2.5-flash")
    return (await model.ainvoke(question)).content
""",
    # clean: service class with repository and http client from lifespan
    """

class EnrichmentService{n}:
    def __init__(self, http: httpx.AsyncClient, repo) -> None:
        self.http = http
        self.repo = repo

    async def enrich(self, ids: list[UUID]) -> dict[UUID, dict]:
        companies = await self.repo.get_many(ids)
        responses = await gather_limited(
            (self.http.get(f"/companies/{{c.domain}}") for c in companies), limit=5
        )
        return {{c.id: r.json() for c, r in zip(companies, responses, strict=True)}}

    def describe(self) -> str:
        parts = []
        for name in ("http", "repo"):
            parts.append(name.upper())
        return ", ".join(parts)
""",
    # clean: error mapped to HTTP
    """

@router.get("/answers{n}/{{answer_id}}")
async def answer_{n}(answer_id: UUID, session: AsyncSession = Depends(get_session)):
    answer = await session.get(Answer, answer_id)
    if answer is None:
        raise HTTPException(status_code=404, detail="answer not found")
    try:
        summary = await llm.ainvoke(answer.text)
    except TimeoutError as exc:
        raise HTTPException(status_code=504, detail="model timed out") from exc
    return {{"id": str(answer.id), "summary": summary.content}}
""",
    # clean: sync helpers
    """

def format_table_{n}(rows: list[dict]) -> str:
    widths = {{k: max(len(str(r[k])) for r in rows) for k in rows[0]}} if rows else {{}}
    lines = []
    for row in rows:
        cells = [str(row[k]).ljust(w) for k, w in widths.items()]
        lines.append(" | ".join(cells))
    return "\\n".join(lines)
""",
]


def generate(root: Path, count: int, seed: int = 8) -> int:
    """Write the package ``root/app`` with ``count`` modules in all (``app/core`` and the
    ``__init__.py`` files included); returns the total number of lines."""
    rng = random.Random(seed)
    app = root / "app"
    (app / "core").mkdir(parents=True, exist_ok=True)
    (app / "__init__.py").write_text("", encoding="utf-8")
    (app / "core" / "__init__.py").write_text("", encoding="utf-8")
    (app / "core" / "helpers.py").write_text(CORE, encoding="utf-8")
    total = CORE.count("\n")
    written = 3
    for index in range(count):
        if written >= count:
            break
        package = app / f"service_{index % 20:02d}"
        if not package.exists():
            package.mkdir(parents=True)
            (package / "__init__.py").write_text("", encoding="utf-8")
            written += 1
        written += 1
        parts = [HEADER.format(index=index)]
        for n in range(rng.randint(7, 11)):
            parts.append(rng.choice(TEMPLATES).format(n=f"{index}_{n}"))
        text = "".join(parts)
        total += text.count("\n")
        (package / f"module_{index:04d}.py").write_text(text, encoding="utf-8")
    return total


def _parse_only(root: Path) -> int:
    count = 0
    for path in sorted(root.rglob("*.py")):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        count += 1
    return count


def _cpu() -> float:
    """CPU seconds used by this process and its finished workers."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_audit(root: Path) -> tuple[float, float, int, dict[str, int]]:
    cpu = _cpu()
    started = time.perf_counter()
    result = audit_paths([root / "app"])
    wall = time.perf_counter() - started
    return wall, _cpu() - cpu, result.files_scanned, result.by_code()


def _timed_parse(root: Path) -> float:
    started = time.perf_counter()
    _parse_only(root)
    return time.perf_counter() - started


def _span(values: list[float], unit: str = " s") -> str:
    return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


TARGET_SECONDS = 5.0


def run(
    quick: bool = False, *, files: int = 230, rounds: int | None = None
) -> list[dict[str, object]]:
    """Generate the tree, time ours and the parse-only floor, interleaved with the order
    alternating each round; return the row (``quick``: 3 rounds instead of 5; this is the
    entry point ``sight-core bench`` calls)."""
    if rounds is None:
        rounds = 3 if quick else 5
    times: list[float] = []
    cpu: list[float] = []
    ratios: list[float] = []
    reference: list[float] = []
    scanned = 0
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="sight-audit-bench-") as tmp:
        root = Path(tmp)
        lines = generate(root, files)
        for round_ in range(rounds):
            if round_ % 2:
                ref = _timed_parse(root)
                wall, spent, scanned, counts = _timed_audit(root)
            else:
                wall, spent, scanned, counts = _timed_audit(root)
                ref = _timed_parse(root)
            times.append(wall)
            cpu.append(spent)
            reference.append(ref)
            ratios.append(wall / ref)
    med = statistics.median(times)
    findings = sum(counts.values())
    return [
        {
            "case": f"scan {scanned:,} files ({lines:,} lines, {findings} findings), one process",
            "ours": f"{_span(times)}; {scanned / med:,.0f} files/s; "
            f"cpu {statistics.median(cpu):.2f} s",
            "reference": f"{_span(reference)} parse-only",
            "ratio": _span(ratios, "x"),
            "target": f"< {TARGET_SECONDS:.0f} s",
            "verdict": "PASS" if med < TARGET_SECONDS and scanned == files else "FAIL",
            "files": scanned,
            "seconds": med,
            "cpu_seconds": statistics.median(cpu),
            "by_code": counts,
        }
    ]


def _table(rows: list[dict[str, object]]) -> str:
    cols = ["case", "ours", "reference", "ratio", "target", "verdict"]
    cells = [[str(row[c]) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    out = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit")
    parser.add_argument("--files", type=int, default=230, help="modules in the tree (230)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (5)")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rows = run(args.quick, files=args.files, rounds=args.rounds)
    print(_table(rows))
    print("findings per rule:", rows[0]["by_code"])


if __name__ == "__main__":
    main()
