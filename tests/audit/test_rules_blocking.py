"""SC301 blocking I/O, SC302 sync clients, SC303 sync LangChain calls inside async def."""

from __future__ import annotations

import pytest

from ._helpers import assert_clean, assert_flags

SC301_POSITIVE = {
    "time-sleep-backoff": """
        import time

        @router.post("/generate")
        async def generate(body, llm):
            for attempt in range(3):
                try:
                    return await llm.ainvoke(body.prompt)
                except TimeoutError:
                    time.sleep(2 ** attempt)  # expect
        """,
    "requests-in-route": """
        import requests

        @app.get("/weather/{city}")
        async def weather(city: str):
            response = requests.get(f"https://api.weather.example/{city}", timeout=5)  # expect
            return response.json()
        """,
    "module-level-sync-httpx-client": """
        import httpx

        http = httpx.Client(base_url="https://crm.example.com")

        async def push_contact(contact):
            http.post("/contacts", json=contact)  # expect
        """,
    "aliased-sleep": """
        from time import sleep as pause

        async def poll(job):
            while not await job.done():
                pause(0.5)  # expect
        """,
}

SC301_NEGATIVE = {
    "asyncio-sleep": """
        import asyncio

        async def poll(job):
            while not await job.done():
                await asyncio.sleep(0.5)
        """,
    "offloaded-to-thread": """
        import asyncio
        import requests

        async def weather(city: str):
            response = await asyncio.to_thread(requests.get, f"https://w.example/{city}")
            return response.json()
        """,
    "sync-function": """
        import time
        import requests

        def nightly_export():
            time.sleep(1)
            return requests.get("https://example.com/export").content
        """,
    "nested-sync-helper-run-in-thread": """
        import asyncio
        import time

        async def handler():
            def blocking_work():
                time.sleep(0.1)
                return 1
            return await asyncio.to_thread(blocking_work)
        """,
    "async-httpx": """
        import httpx

        async def push_contact(contact):
            async with httpx.AsyncClient() as client:
                await client.post("https://crm.example.com/contacts", json=contact)
        """,
}


@pytest.mark.parametrize("source", SC301_POSITIVE.values(), ids=SC301_POSITIVE.keys())
def test_sc301_flags_blocking_io(source: str) -> None:
    assert_flags(source, "SC301")


@pytest.mark.parametrize("source", SC301_NEGATIVE.values(), ids=SC301_NEGATIVE.keys())
def test_sc301_accepts_async_or_offloaded_io(source: str) -> None:
    assert_clean(source, "SC301")


SC302_POSITIVE = {
    "sync-redis-module-client": """
        import redis

        r = redis.Redis.from_url("redis://localhost:6379/0")

        @router.get("/personas/{pid}")
        async def get_persona(pid: str):
            cached = r.get(f"persona:{pid}")  # expect
            return cached
        """,
    "sync-neo4j-driver": """
        from neo4j import GraphDatabase

        async def neighbours(pid):
            driver = GraphDatabase.driver("bolt://localhost:7687")  # expect
            return pid, driver
        """,
    "sync-sqlalchemy-session": """
        from sqlalchemy.orm import Session

        async def count_personas(engine):
            with Session(engine) as session:  # expect
                return session.query(Persona).count()  # expect
        """,
}

SC302_NEGATIVE = {
    "redis-asyncio": """
        from redis.asyncio import Redis

        r = Redis.from_url("redis://localhost:6379/0")

        async def get_persona(pid: str):
            return await r.get(f"persona:{pid}")
        """,
    "sync-client-in-sync-worker": """
        import redis

        r = redis.Redis()

        def rq_job(pid):
            return r.get(pid)
        """,
    "async-session": """
        from sqlalchemy.ext.asyncio import AsyncSession

        async def count_personas(session: AsyncSession):
            return await session.scalar(select(func.count(Persona.id)))
        """,
    "sight-core-create-engine": """
        from sight_core.db import create_engine

        async def migrate(settings):
            engine = create_engine(settings.database)
            await engine.dispose()
        """,
}


@pytest.mark.parametrize("source", SC302_POSITIVE.values(), ids=SC302_POSITIVE.keys())
def test_sc302_flags_sync_clients(source: str) -> None:
    assert_flags(source, "SC302")


@pytest.mark.parametrize("source", SC302_NEGATIVE.values(), ids=SC302_NEGATIVE.keys())
def test_sc302_accepts_async_clients(source: str) -> None:
    assert_clean(source, "SC302")


SC303_POSITIVE = {
    "invoke-in-route": """
        from sight_core.llm import build_chat_model

        llm = build_chat_model(tier="flash")

        @router.post("/ask")
        async def ask(question: str):
            return llm.invoke(question).content  # expect
        """,
    "chain-batch": """
        async def classify(prompt, llm, texts):
            chain = prompt | llm
            return chain.batch([{"text": t} for t in texts])  # expect
        """,
    "structured-output-invoke": """
        from langchain_google_genai import ChatGoogleGenerativeAI

        model = ChatGoogleGenerativeAI(model="gemini-2.5-flash")
        extractor = model.with_structured_output(PersonaOut)

        async def extract(text: str):
            return extractor.invoke(text)  # expect
        """,
    "genai-sync-client": """
        async def summarise(client, text):
            response = client.models.generate_content(model=MODEL, contents=text)  # expect
            return response.text
        """,
}

SC303_NEGATIVE = {
    "ainvoke": """
        async def ask(llm, question: str):
            return (await llm.ainvoke(question)).content
        """,
    "invoke-in-sync-function": """
        def ask_sync(llm, question: str):
            return llm.invoke(question).content
        """,
    "non-llm-invoke": """
        async def run(lambda_client, payload):
            return await lambda_client.invoke(FunctionName="f", Payload=payload)
        """,
    "genai-aio": """
        async def summarise(client, text):
            response = await client.aio.models.generate_content(model=MODEL, contents=text)
            return response.text
        """,
    "unrelated-batch-method": """
        async def write(pipeline_repo, rows):
            pipeline_repo.batch(rows)
        """,
}


@pytest.mark.parametrize("source", SC303_POSITIVE.values(), ids=SC303_POSITIVE.keys())
def test_sc303_flags_sync_llm_calls(source: str) -> None:
    assert_flags(source, "SC303")


@pytest.mark.parametrize("source", SC303_NEGATIVE.values(), ids=SC303_NEGATIVE.keys())
def test_sc303_accepts_async_llm_calls(source: str) -> None:
    assert_clean(source, "SC303")
