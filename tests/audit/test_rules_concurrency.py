"""SC101 sequential awaits in a loop, SC102 unbounded fan-out, SC501 lost tasks."""

from __future__ import annotations

import textwrap

import pytest

from ._helpers import assert_clean, assert_flags, run_rule

SC101_POSITIVE = {
    "llm-per-persona": """
        from fastapi import APIRouter

        router = APIRouter()

        @router.post("/projects/{project_id}/summaries")
        async def summarise(project_id: str, personas: list[dict]) -> list[str]:
            summaries = []
            for persona in personas:
                prompt = f"Summarise {persona['name']} for {project_id}"
                answer = await llm.ainvoke(prompt)  # expect
                summaries.append(answer.content)
            return summaries
        """,
    "chain-per-question-into-dict": """
        async def answer_survey(self, survey):
            answers = {}
            for question in survey.questions:
                answers[question.id] = await self.chain.ainvoke({"q": question.text})  # expect
            return answers
        """,
    "http-enrichment": """
        import httpx

        async def enrich(companies: list[str]) -> list[dict]:
            out = []
            async with httpx.AsyncClient(base_url="https://api.example.com") as client:
                for name in companies:
                    response = await client.get("/companies", params={"q": name})  # expect
                    out.append(response.json())
            return out
        """,
    "webhook-per-event": """
        async def forward(http_client, events):
            for event in events:
                await http_client.post("/hooks/crm", json=event.model_dump())  # expect
        """,
    "generate-per-segment-with-walrus-free-prompt": """
        async def describe_segments(self, segments):
            descriptions = []
            for segment in segments:
                messages = [("system", self.system_prompt), ("user", segment.summary)]
                result = await self.llm.agenerate([messages])  # expect
                descriptions.append(result.generations[0][0].text)
            return descriptions
        """,
}

SC101_POSITIVE |= {
    "awaits-in-a-list-comprehension": """
        async def answer_all(chain, questions: list[str]) -> list[str]:
            return [(await chain.ainvoke({"q": q})).content for q in questions]  # expect
        """,
    "awaits-in-a-dict-comprehension": """
        async def translate(llm, labels: dict[str, str]) -> dict[str, str]:
            return {
                key: (await llm.ainvoke(f"Translate: {text}")).content  # expect
                for key, text in labels.items()
            }
        """,
    "http-per-url-in-a-comprehension": """
        async def statuses(http_client, urls):
            return [(await http_client.get(u)).status_code for u in urls]  # expect
        """,
}

SC101_NEGATIVE = {
    "conversation-uses-previous-answer": """
        async def refine(llm, drafts: list[str]) -> str:
            answer = ""
            for instruction in drafts:
                answer = (await llm.ainvoke(f"{instruction}\\n\\n{answer}")).content
            return answer
        """,
    "history-appended-and-read": """
        async def interview(llm, questions: list[str]) -> list[str]:
            history: list[str] = []
            for question in questions:
                reply = await llm.ainvoke(history + [question])
                history.append(reply.content)
            return history
        """,
    "fallback-chain-returns-first-success": """
        async def ask_with_fallback(models, prompt: str) -> str:
            for model in models:
                try:
                    return (await model.ainvoke(prompt)).content
                except TimeoutError:
                    continue
            raise RuntimeError("every model failed")
        """,
    "paced-on-purpose": """
        import asyncio

        async def backfill(llm, items: list[str]) -> None:
            for item in items:
                await llm.ainvoke(item)
                await asyncio.sleep(1.0)  # provider allows one call per second
        """,
    "stamina-retry-loop": """
        import stamina

        async def fetch_report(client, url: str):
            for attempt in stamina.retry_context(on=TimeoutError):
                with attempt:
                    response = await client.get(url)
            return response
        """,
    "already-bounded-with-gather-limited": """
        from sight_core.concurrency import gather_limited

        async def summarise(llm, personas):
            return await gather_limited((llm.ainvoke(p.bio) for p in personas), limit=8)
        """,
    "same-call-repeated-polling-or-measuring": """
        async def warm_up(client, url):
            for _ in range(5):
                response = await client.get(url)
                assert response.status_code == 200
        """,
    "batches-sent-in-sequence": """
        async def embed_corpus(embedder, texts, size=64):
            vectors = []
            for batch in (texts[i : i + size] for i in range(0, len(texts), size)):
                vectors += await embedder.abatch(batch)
            return vectors
        """,
    "comprehension-over-a-literal-tuple": """
        async def tiers(llm):
            return [await llm.ainvoke(f"name a {t} model") for t in ("fast", "smart")]
        """,
    "comprehension-of-chunks": """
        async def embed(embedder, chunks):
            return [await embedder.aembed_documents(chunk) for chunk in chunks]
        """,
    "comprehension-call-independent-of-the-item": """
        async def ping_each(client_http, n_items):
            return [await client_http.get("/health") for _ in n_items]
        """,
    "streamed-one-by-one": """
        async def stream_answers(llm, questions):
            for question in questions:
                yield await llm.ainvoke(question)
        """,
}


@pytest.mark.parametrize("source", SC101_POSITIVE.values(), ids=SC101_POSITIVE.keys())
def test_sc101_flags_independent_sequential_awaits(source: str) -> None:
    assert_flags(source, "SC101")


@pytest.mark.parametrize("source", SC101_NEGATIVE.values(), ids=SC101_NEGATIVE.keys())
def test_sc101_leaves_dependent_or_intentional_loops_alone(source: str) -> None:
    assert_clean(source, "SC101")


SC102_POSITIVE = {
    "gather-list-comprehension": """
        import asyncio

        async def score_all(llm, answers: list[str]) -> list[str]:
            results = await asyncio.gather(*[llm.ainvoke(a) for a in answers])  # expect
            return [r.content for r in results]
        """,
    "gather-generator-of-method": """
        import asyncio

        class PersonaService:
            async def enrich_all(self, persona_ids):
                return await asyncio.gather(*(self.enrich(pid) for pid in persona_ids))  # expect

            async def enrich(self, pid):
                return await self.llm.ainvoke(str(pid))
        """,
    "tasks-list-built-in-loop": """
        import asyncio

        async def crawl(client, urls):
            tasks = []
            for url in urls:
                tasks.append(asyncio.create_task(client.get(url)))
            return await asyncio.gather(*tasks)  # expect
        """,
    "taskgroup-per-item": """
        import asyncio

        async def embed_documents(embedder, documents):
            async with asyncio.TaskGroup() as tg:
                for doc in documents:
                    tg.create_task(embedder.aembed_query(doc.text))  # expect
        """,
    "gather-aliased-import": """
        from asyncio import gather

        async def translate(llm, sentences):
            return await gather(*(llm.ainvoke(s) for s in sentences))  # expect
        """,
}

SC102_NEGATIVE = {
    "bounded-literal-list": """
        import asyncio

        async def dashboard(repo, llm, project_id):
            personas, summary = await asyncio.gather(
                repo.list_personas(project_id), llm.ainvoke(f"summary {project_id}")
            )
            return personas, summary
        """,
    "comprehension-over-literal-tuple": """
        import asyncio

        async def all_tiers(build):
            return await asyncio.gather(*[build(tier) for tier in ("flash", "pro")])
        """,
    "semaphore-in-worker": """
        import asyncio

        sem = asyncio.Semaphore(10)

        async def fetch_one(client, url):
            async with sem:
                return await client.get(url)

        async def fetch_all(client, urls):
            return await asyncio.gather(*(fetch_one(client, u) for u in urls))
        """,
    "gather-limited": """
        from sight_core.concurrency import gather_limited

        async def fetch_all(client, urls):
            return await gather_limited((client.get(u) for u in urls), limit=10)
        """,
    "batch-of-fixed-size": """
        import asyncio
        from itertools import batched

        async def embed(embedder, texts):
            out = []
            for batch in batched(texts, 16):
                out += await asyncio.gather(*(embedder.aembed_query(t) for t in batch))
            return out
        """,
    "range-constant": """
        import asyncio

        async def warm_pool(redis):
            await asyncio.gather(*(redis.ping() for _ in range(4)))
        """,
    "n-copies-of-one-call-is-load-generation": """
        import asyncio

        async def stampede(get_report, callers: int):
            return await asyncio.gather(*(get_report("project-1") for _ in range(callers)))
        """,
    "range-of-constant-name": """
        import asyncio

        WORKERS = 8

        async def run_workers(queue):
            await asyncio.gather(*(worker(queue, i) for i in range(WORKERS)))
        """,
    "method-on-each-handler": """
        import asyncio

        async def notify_all(handlers, event):
            await asyncio.gather(*(h.on_event(event) for h in handlers))
        """,
    "batch-loader-coalesces": """
        import asyncio

        async def authors(author_loader, posts):
            return await asyncio.gather(*(author_loader.load(p.author_id) for p in posts))
        """,
    # event dispatch to observers, as langchain_core's callback managers do it
    "each-handler-passed-to-a-dispatcher": """
        import asyncio

        async def handle_event(handlers, event_name, *args):
            await asyncio.gather(
                *(_handle_for(handler, event_name, *args) for handler in handlers if handler.on)
            )
        """,
    "manager-per-index-notified": """
        import asyncio

        async def report_errors(run_managers, errors):
            await asyncio.gather(*(run_managers[i].on_chain_error(err) for i, err in errors))
        """,
    "event-tasks-appended-per-prompt": """
        import asyncio

        async def on_llm_start(self, prompts):
            tasks = []
            for prompt in prompts:
                tasks.append(ahandle_event(self.handlers, "on_llm_start", [prompt]))
            await asyncio.gather(*tasks)
        """,
}


@pytest.mark.parametrize("source", SC102_POSITIVE.values(), ids=SC102_POSITIVE.keys())
def test_sc102_flags_unbounded_fan_out(source: str) -> None:
    assert_flags(source, "SC102")


@pytest.mark.parametrize("source", SC102_NEGATIVE.values(), ids=SC102_NEGATIVE.keys())
def test_sc102_accepts_bounded_or_limited_fan_out(source: str) -> None:
    assert_clean(source, "SC102")


SC501_POSITIVE = {
    "fire-and-forget-audit-log": """
        import asyncio

        @router.post("/personas")
        async def create_persona(body, repo):
            persona = await repo.add(body)
            asyncio.create_task(write_audit_log(persona.id))  # expect
            return persona
        """,
    "ensure-future": """
        from asyncio import ensure_future

        async def on_message(message):
            ensure_future(process(message))  # expect
        """,
    "loop-create-task-assigned-to-underscore": """
        import asyncio

        async def refresh_later(cache, key):
            loop = asyncio.get_running_loop()
            _ = loop.create_task(cache.refresh(key))  # expect
        """,
    "get-running-loop-inline": """
        import asyncio

        def schedule_warmup(service):
            asyncio.get_running_loop().create_task(service.warm())  # expect
        """,
}

SC501_NEGATIVE = {
    "kept-in-a-set": """
        import asyncio

        background: set[asyncio.Task[None]] = set()

        async def create_persona(body):
            task = asyncio.create_task(notify(body))
            background.add(task)
            task.add_done_callback(background.discard)
        """,
    "kept-in-a-list-and-awaited": """
        import asyncio

        async def run_all(jobs):
            tasks = [asyncio.create_task(j()) for j in jobs[:3]]
            for t in tasks:
                await t
        """,
    "task-group": """
        import asyncio

        async def pipeline(a, b):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(a())
                tg.create_task(b())
        """,
    "supervisor": """
        from sight_core.concurrency import TaskSupervisor

        supervisor = TaskSupervisor()

        async def create_persona(body):
            supervisor.spawn(notify(body))
        """,
    "returned-to-caller": """
        import asyncio

        def start_refresh(cache):
            return asyncio.create_task(cache.refresh_all())
        """,
}


@pytest.mark.parametrize("source", SC501_POSITIVE.values(), ids=SC501_POSITIVE.keys())
def test_sc501_flags_dropped_tasks(source: str) -> None:
    assert_flags(source, "SC501")


@pytest.mark.parametrize("source", SC501_NEGATIVE.values(), ids=SC501_NEGATIVE.keys())
def test_sc501_accepts_kept_tasks(source: str) -> None:
    assert_clean(source, "SC501")


def test_a_chained_call_is_named_in_the_message() -> None:
    source = textwrap.dedent(
        """
        async def extract(llm, schema, texts):
            out = []
            for text in texts:
                out.append(await llm.with_structured_output(schema).ainvoke(text))
            return out
        """
    )
    (found,) = run_rule(source, "SC101")
    assert "`llm.with_structured_output(...).ainvoke(...)` is awaited once per item" in (
        found.message
    )
