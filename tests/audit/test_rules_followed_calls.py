"""One BAD and one GOOD case per rule that follows calls (issue 15)."""

from __future__ import annotations

from ._helpers import assert_clean, assert_flags, run_rule


def test_sc301_blocking_helper_called_from_async_def() -> None:
    assert_flags(
        """
        import time

        def _connect_with_retry(connect):
            for attempt in range(5):
                try:
                    return connect()
                except OSError:
                    time.sleep(2 ** attempt)

        async def health(connect):
            _connect_with_retry(connect)  # expect
        """,
        "SC301",
    )
    assert_clean(
        """
        import asyncio, time

        def _connect_with_retry(connect):
            time.sleep(1)
            return connect()

        async def health(connect):
            await asyncio.to_thread(_connect_with_retry, connect)
        """,
        "SC301",
    )


def test_sc303_sync_chain_invoke_in_a_helper() -> None:
    assert_flags(
        """
        def _summarise(chain, text):
            return chain.invoke({"text": text})

        async def summarise(chain, text):
            return _summarise(chain, text)  # expect
        """,
        "SC303",
    )
    assert_clean(
        """
        async def _summarise(chain, text):
            return await chain.ainvoke({"text": text})

        async def summarise(chain, text):
            return await _summarise(chain, text)
        """,
        "SC303",
    )


def test_sc101_model_call_inside_an_awaited_method() -> None:
    source = """
        class Interviewer:
            async def _generate_answer_for_question(self, question):
                return await self.llm.ainvoke(question)

            async def run(self, questions):
                answers = []
                for question in questions:
                    answer = await self._generate_answer_for_question(question)  # expect
                    answers.append(answer)
                return answers
        """
    assert_flags(source, "SC101")
    (found,) = run_rule(source, "SC101")
    assert found.chain_text == (
        "Interviewer.run() -> Interviewer._generate_answer_for_question() -> self.llm.ainvoke"
    )
    assert_clean(
        """
        class Interviewer:
            async def _follow_up(self, previous):
                return await self.llm.ainvoke(previous)

            async def run(self, questions):
                answer = questions[0]
                for question in questions:
                    answer = await self._follow_up(answer)
                return answer
        """,
        "SC101",
    )


def test_sc202_aggregate_per_item_is_told_to_group_by() -> None:
    source = """
        async def counts(session, project_ids):
            out = {}
            for project_id in project_ids:
                out[project_id] = await session.scalar(  # expect
                    select(func.count()).where(Persona.project_id == project_id)
                )
            return out
        """
    assert_flags(source, "SC202")
    (found,) = run_rule(source, "SC202")
    assert "group_by" in found.fix and "get_many" not in found.fix
    (plain,) = run_rule(
        """
        async def load(session, ids):
            return [await session.get(Persona, i) for i in ids if i] or [
                x for x in ids
            ]

        async def load_all(repo, ids):
            out = []
            for i in ids:
                out.append(await repo.get(i))
            return out
        """,
        "SC202",
    )
    assert "get_many" in plain.fix


def test_sc202_query_inside_an_awaited_repository_helper() -> None:
    assert_flags(
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        async def _count_for(session: AsyncSession, project_id):
            return await session.scalar(select(func.count()).where(P.project_id == project_id))

        async def dashboard(session: AsyncSession, project_ids):
            totals = {}
            for project_id in project_ids:
                totals[project_id] = await _count_for(session, project_id)  # expect
            return totals
        """,
        "SC202",
    )
    assert_clean(
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        async def _counts(session: AsyncSession, project_ids):
            stmt = select(P.project_id, func.count()).where(P.project_id.in_(project_ids))
            return dict((await session.execute(stmt.group_by(P.project_id))).all())

        async def dashboard(session: AsyncSession, project_ids):
            return await _counts(session, project_ids)
        """,
        "SC202",
    )


def test_sc701_service_built_per_request_opens_a_pool_in_init() -> None:
    assert_flags(
        """
        import redis
        from fastapi import APIRouter, Depends

        router = APIRouter()

        class ChatService:
            def __init__(self):
                self.redis_client = redis.from_url("redis://localhost")

        def get_chat_service():
            return ChatService()  # expect

        @router.post("/chat")
        async def chat(service: ChatService = Depends(get_chat_service)):
            return service
        """,
        "SC701",
    )
    assert_clean(
        """
        from functools import lru_cache

        import redis
        from fastapi import APIRouter, Depends

        router = APIRouter()

        class ChatService:
            def __init__(self):
                self.redis_client = redis.from_url("redis://localhost")

        @lru_cache
        def get_chat_service():
            return ChatService()

        @router.post("/chat")
        async def chat(service: ChatService = Depends(get_chat_service)):
            return service
        """,
        "SC701",
    )


def test_sc501_task_kept_only_by_its_done_callback() -> None:
    assert_flags(
        """
        import asyncio

        async def handle(event):
            task = asyncio.create_task(process(event))  # expect
            task.add_done_callback(lambda t: t.exception())
        """,
        "SC501",
    )
    assert_clean(
        """
        import asyncio

        background = set()

        async def handle(event):
            task = asyncio.create_task(process(event))
            background.add(task)
            task.add_done_callback(background.discard)
        """,
        "SC501",
    )


def test_sc401_read_through_split_across_cache_helpers() -> None:
    assert_flags(
        """
        import json
        from redis.asyncio import Redis

        redis_client = Redis()

        async def redis_get_json(key):
            raw = await redis_client.get(key)
            return json.loads(raw) if raw else None

        async def redis_set_json(key, value, ttl):
            await redis_client.set(key, json.dumps(value), ex=ttl)

        async def persona_summary(persona_id):
            key = f"summary:v1:{persona_id}"
            cached = await redis_get_json(key)  # expect
            if cached is not None:
                return cached
            value = await compute(persona_id)
            await redis_set_json(key, value, 600)
            return value
        """,
        "SC401",
    )
    assert_clean(
        """
        import json
        from redis.asyncio import Redis

        redis_client = Redis()

        async def redis_get_json(key):
            raw = await redis_client.get(key)
            return json.loads(raw) if raw else None

        async def redis_set_json(key, value, ttl):
            await redis_client.set(key, json.dumps(value), ex=ttl)

        async def warm(keys, values):
            for key, value in zip(keys, values):
                await redis_set_json(key, value, 600)

        async def peek(key):
            return await redis_get_json(key)
        """,
        "SC401",
    )


def test_sc206_session_held_across_an_llm_call() -> None:
    assert_flags(
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        async def describe(session: AsyncSession, llm, persona_id):
            persona = await session.get(Persona, persona_id)
            answer = await llm.ainvoke(persona.prompt)  # expect
            persona.summary = answer.content
            await session.commit()
        """,
        "SC206",
    )
    assert_clean(
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        async def describe(session: AsyncSession, llm, persona_id):
            persona = await session.get(Persona, persona_id)
            prompt = persona.prompt
            await session.commit()
            answer = await llm.ainvoke(prompt)
            return answer.content
        """,
        "SC206",
    )


def test_sc602_usage_read_from_response_metadata() -> None:
    assert_flags(
        """
        async def ask(llm, prompt):
            message = await llm.ainvoke(prompt)
            usage = message.response_metadata.get("usage_metadata", {})  # expect
            tokens = message.response_metadata["usage_metadata"]  # expect
            return usage, tokens
        """,
        "SC602",
    )
    assert_clean(
        """
        async def ask(llm, prompt):
            message = await llm.ainvoke(prompt)
            usage = message.usage_metadata or {}
            return message.response_metadata.get("finish_reason"), usage
        """,
        "SC602",
    )
