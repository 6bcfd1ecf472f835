"""The audit over a realistic service tree built here, shaped like the platform's patterns
(issue 15): helpers one call away, services built per request, split cache helpers."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from sight_core.audit import audit_paths, render

FEATURES = 6

CORE = {
    "app/__init__.py": "",
    "app/core/__init__.py": "",
    "app/core/db.py": """
        import time

        def _retry(connect, attempts=10):
            for attempt in range(attempts):
                try:
                    return connect()
                except OSError:
                    time.sleep(min(2 ** attempt, 10))

        def get_vector_store():
            return _retry(lambda: object())
    """,
    "app/core/llm.py": """
        from langchain_google_genai import ChatGoogleGenerativeAI

        def build_chat_model(tier="flash"):
            # the platform's own factory: called once at import below
            return ChatGoogleGenerativeAI(model=f"gemini-2.5-{tier}")

        llm = build_chat_model()

        def run_chain(chain, inputs):
            return chain.invoke(inputs)
    """,
    "app/core/cache.py": """
        import json
        from redis.asyncio import Redis

        redis_client = Redis()

        async def redis_get_json(key):
            raw = await redis_client.get(key)
            return json.loads(raw) if raw else None

        async def redis_set_json(key, value, ttl=600):
            await redis_client.set(key, json.dumps(value), ex=ttl)
    """,
}

FEATURE = {
    "app/f{i}/__init__.py": "",
    "app/f{i}/service.py": """
        import asyncio

        import redis
        from sqlalchemy import func, select
        from sqlalchemy.ext.asyncio import AsyncSession

        from sight_core.concurrency import gather_limited

        from ..core.cache import redis_get_json, redis_set_json
        from ..core.llm import llm, run_chain

        background = set()


        class PersonaService{i}:
            def __init__(self, session: AsyncSession):
                self.session = session
                self.redis_client = redis.from_url("redis://localhost:6379/0")

            async def _generate_answer_for_question(self, question):
                return (await llm.ainvoke(question)).content

            async def interview(self, questions):
                answers = []
                for question in questions:
                    answers.append(await self._generate_answer_for_question(question))
                return answers

            async def interview_concurrently(self, questions):
                return await gather_limited(
                    (self._generate_answer_for_question(q) for q in questions), limit=8
                )

            async def summarise(self, chain, text):
                return run_chain(chain, {{"text": text}})

            async def summary(self, persona_id):
                key = f"summary:v1:{{persona_id}}"
                cached = await redis_get_json(key)
                if cached is not None:
                    return cached
                value = await self._generate_answer_for_question(str(persona_id))
                await redis_set_json(key, value)
                return value

            async def describe(self, persona_id):
                persona = await self.session.get(Persona, persona_id)
                persona.summary = await self._generate_answer_for_question(persona.prompt)
                await self.session.commit()

            async def usage(self, prompt):
                message = await llm.ainvoke(prompt)
                return message.response_metadata.get("usage_metadata", {{}})

            async def notify(self, event):
                task = asyncio.create_task(self.summary(event))
                task.add_done_callback(lambda t: t.exception())

            async def notify_kept(self, event):
                task = asyncio.create_task(self.summary(event))
                background.add(task)
                task.add_done_callback(background.discard)

            async def answer_counts(self, persona_ids):
                counts = {{}}
                for persona_id in persona_ids:
                    counts[persona_id] = await self.session.scalar(
                        select(func.count()).where(Answer.persona_id == persona_id)
                    )
                return counts


        class Persona:
            prompt = ""


        class Answer:
            persona_id = None
    """,
    "app/f{i}/routes.py": """
        from fastapi import APIRouter, Depends
        from sqlalchemy.ext.asyncio import AsyncSession

        from ..core.db import get_vector_store
        from ..core.llm import build_chat_model
        from .service import PersonaService{i}

        router = APIRouter(prefix="/f{i}")


        async def get_session():
            yield None


        def get_service(session: AsyncSession = Depends(get_session)):
            return PersonaService{i}(session)


        @router.get("/health")
        async def health():
            store = get_vector_store()
            return {{"ok": store is not None}}


        @router.post("/interview")
        async def interview(
            questions: list[str], service: PersonaService{i} = Depends(get_service)
        ):
            return await service.interview(questions)


        @router.get("/model")
        async def model_name():
            return {{"tier": "flash", "factory": build_chat_model.__name__}}
    """,
}


def _build(root: Path) -> None:
    files = dict(CORE)
    for i in range(FEATURES):
        for name, text in FEATURE.items():
            files[name.format(i=i)] = text.format(i=i)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_counts_per_rule_over_a_service_tree(tmp_path: Path) -> None:
    _build(tmp_path)
    result = audit_paths([tmp_path / "app"])
    assert result.errors == []
    assert result.files_scanned == len(CORE) + len(FEATURE) * FEATURES
    assert result.by_code() == {
        "SC101": FEATURES,  # the loop over questions, model call inside the helper
        "SC202": FEATURES,  # a count per persona
        "SC206": FEATURES,  # self.session holds its connection across the model call
        "SC301": FEATURES,  # health() -> get_vector_store() -> _retry() -> time.sleep
        "SC303": FEATURES,  # summarise() -> run_chain() -> chain.invoke
        "SC401": FEATURES,  # redis_get_json ... redis_set_json
        "SC501": FEATURES,  # task kept only by its done callback
        "SC602": FEATURES,  # response_metadata["usage_metadata"]
        "SC701": FEATURES,  # get_service() builds a service that opens Redis in __init__
    }
    by_code = {f.code: f for f in result.findings}
    assert by_code["SC301"].chain_text == "health() -> get_vector_store() -> _retry() -> time.sleep"
    assert by_code["SC202"].fix.startswith("count every item in one query")
    assert "group_by" in by_code["SC202"].fix
    assert "sight_core.llm.build_chat_model" in by_code["SC303"].fix
    assert by_code["SC701"].chain_text.startswith("get_service() -> PersonaService")
    assert by_code["SC701"].chain_text.endswith("redis.from_url")
    # the platform's own build_chat_model wrapper is never reported as a client per call
    assert not any(Path(f.path).name == "llm.py" for f in result.findings)
    payload = json.loads(render(result, "json"))
    assert payload["summary"]["by_code"] == result.by_code()
