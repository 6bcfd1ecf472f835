"""SC401 hand-written read-through, SC402 unversioned keys, SC601 swallowed LLM errors,
SC701 clients built per call."""

from __future__ import annotations

import pytest

from ._helpers import assert_clean, assert_flags

SC401_POSITIVE = {
    "persona-read-through": """
        import json

        async def get_persona(redis, repo, persona_id):
            key = f"persona:v1:{persona_id}"
            cached = await redis.get(key)  # expect
            if cached is not None:
                return json.loads(cached)
            persona = await repo.get(persona_id)
            await redis.setex(key, 600, json.dumps(persona.model_dump()))
            return persona.model_dump()
        """,
    "inline-key-and-set-ex": """
        class InsightService:
            async def insight(self, project_id):
                raw = await self.redis.get(f"insight:{project_id}")  # expect
                if raw:
                    return Insight.model_validate_json(raw)
                insight = await self.llm.ainvoke(f"insight for {project_id}")
                await self.redis.set(f"insight:{project_id}", insight.model_dump_json(), ex=300)
                return insight
        """,
    "format-key": """
        async def summary(cache, llm, survey_id):
            key = "summary:{}".format(survey_id)
            hit = await cache.get(key)  # expect
            if hit:
                return hit.decode()
            text = (await llm.ainvoke(str(survey_id))).content
            await cache.set(key, text)
            return text
        """,
}

SC401_NEGATIVE = {
    "rate-limiter-counter": """
        async def allow(redis, user_id):
            key = f"rl:{user_id}"
            current = await redis.get(key)
            if current is not None and int(current) > 100:
                raise TooManyRequests()
            await redis.set(key, 1, ex=60)
            return True
        """,
    "decorated-function": """
        from sight_core.cache import Cache

        cache = Cache(prefix="sight")

        @cache.cached(namespace="persona", version=2, ttl=600, key="{persona_id}")
        async def get_persona(persona_id, repo):
            return await repo.get(persona_id)
        """,
    "generic-backend-with-key-parameter": """
        async def read_through(backend, key, compute, ttl):
            raw = await backend.get(key)
            if raw is not None:
                return decode(raw)
            value = await compute()
            await backend.set(key, encode(value), ttl)
            return value
        """,
    "different-keys": """
        async def move(redis, a, b):
            value = await redis.get(f"draft:{a}")
            await redis.set(f"final:{b}", value)
            return value
        """,
}


@pytest.mark.parametrize("source", SC401_POSITIVE.values(), ids=SC401_POSITIVE.keys())
def test_sc401_flags_hand_written_read_through(source: str) -> None:
    assert_flags(source, "SC401")


@pytest.mark.parametrize("source", SC401_NEGATIVE.values(), ids=SC401_NEGATIVE.keys())
def test_sc401_accepts_counters_and_library_code(source: str) -> None:
    assert_clean(source, "SC401")


SC402_POSITIVE = {
    "setex-json": """
        import json

        async def remember_persona(redis, persona):
            payload = json.dumps(persona.model_dump())
            await redis.setex(f"persona:{persona.id}", 600, payload)  # expect
        """,
    "set-model-dump-json-with-key-variable": """
        async def store_report(redis_client, report):
            key = f"report:{report.project_id}:{report.kind}"
            await redis_client.set(key, report.model_dump_json(), ex=3600)  # expect
        """,
    "orjson-on-cache-attribute": """
        import orjson

        class Store:
            async def put(self, survey):
                await self.cache.set(f"survey:{survey.id}", orjson.dumps(survey.answers))  # expect
        """,
}

SC402_NEGATIVE = {
    "versioned-key": """
        import json

        async def remember_persona(redis, persona):
            await redis.setex(f"persona:v3:{persona.id}", 600, json.dumps(persona.model_dump()))
        """,
    "lock-with-nx": """
        async def acquire(redis, job_id, token):
            return await redis.set(f"lock:{job_id}", token, nx=True, ex=30)
        """,
    "counter-value-not-serialized": """
        async def mark_seen(redis, user_id):
            await redis.set(f"seen:{user_id}", 1, ex=86400)
        """,
    "version-variable-in-key": """
        import json

        SCHEMA_VERSION = 4

        async def remember(redis, p):
            await redis.set(f"persona:{SCHEMA_VERSION}:{p.id}", json.dumps(p.model_dump()))
        """,
}


@pytest.mark.parametrize("source", SC402_POSITIVE.values(), ids=SC402_POSITIVE.keys())
def test_sc402_flags_unversioned_keys(source: str) -> None:
    assert_flags(source, "SC402")


@pytest.mark.parametrize("source", SC402_NEGATIVE.values(), ids=SC402_NEGATIVE.keys())
def test_sc402_accepts_versioned_keys_locks_and_counters(source: str) -> None:
    assert_clean(source, "SC402")


def test_sc402_is_not_repeated_inside_a_sc401_block() -> None:
    from sight_core.audit import audit_source

    source = (
        "import json\n"
        "async def get_persona(redis, repo, pid):\n"
        "    cached = await redis.get(f'persona:{pid}')\n"
        "    if cached:\n"
        "        return json.loads(cached)\n"
        "    value = await repo.get(pid)\n"
        "    await redis.set(f'persona:{pid}', json.dumps(value))\n"
        "    return value\n"
    )
    codes = [f.code for f in audit_source(source, select=["SC4"]).findings]
    assert codes == ["SC401"]


SC601_POSITIVE = {
    "empty-string-answer": """
        import logging

        async def summarise(llm, text: str) -> str:
            try:
                return (await llm.ainvoke(f"Summarise: {text}")).content
            except Exception:
                logging.exception("llm failed")
                return ""  # expect
        """,
    "bare-except-default-model": """
        async def persona_profile(chain, bio):
            try:
                profile = await chain.ainvoke({"bio": bio})
            except:
                profile = PersonaProfile(summary="Unknown", traits=[])  # expect
            return profile
        """,
    "tuple-with-exception-returns-dict": """
        async def sentiment(llm, text):
            try:
                result = await llm.ainvoke(text)
                return {"label": result.content}
            except (ValueError, Exception) as exc:
                return {"label": "neutral", "error": f"{exc}"}  # expect
        """,
    "none-on-failure": """
        async def classify(self, text):
            try:
                return await self.classifier.ainvoke(text)
            except Exception:
                return None  # expect
        """,
}

SC601_POSITIVE |= {
    "logged-and-fell-off-the-end": """
        async def tagline(llm, persona):
            try:
                return (await llm.ainvoke(f"Tagline for {persona.name}")).content
            except Exception:  # expect
                logger.exception("tagline failed")
        """,
    "pass-and-none-returned": """
        async def classify_answer(chain, answer):
            try:
                result = await chain.ainvoke({"answer": answer})
                return result.label
            except Exception:  # expect
                pass
        """,
}

SC601_NEGATIVE = {
    "fall-through-to-an-explicit-raise": """
        async def tagline(llm, persona):
            try:
                return (await llm.ainvoke(persona.name)).content
            except Exception:
                logger.exception("tagline failed")
            raise TaglineUnavailable(persona.id)
        """,
    "fall-through-inside-a-loop-skips-the-item": """
        async def taglines(llm, personas):
            out = {}
            for persona in personas:
                try:
                    out[persona.id] = (await llm.ainvoke(persona.name)).content
                except Exception:
                    logger.exception("tagline failed")
            return out
        """,
    "try-that-returns-nothing-itself": """
        async def warm(llm):
            try:
                await llm.ainvoke("ping")
            except Exception:
                logger.warning("warm-up failed")
        """,
    "reraised-as-http-error": """
        from fastapi import HTTPException

        async def summarise(llm, text):
            try:
                return (await llm.ainvoke(text)).content
            except Exception as exc:
                raise HTTPException(status_code=502, detail="model unavailable") from exc
        """,
    "specific-exception": """
        from langchain_core.exceptions import OutputParserException

        async def extract(chain, text):
            try:
                return await chain.ainvoke(text)
            except OutputParserException:
                return None
        """,
    "fallback-model-call": """
        async def answer(primary, fallback, prompt):
            try:
                return await primary.ainvoke(prompt)
            except Exception:
                return await fallback.ainvoke(prompt)
        """,
    "skip-item-in-batch": """
        async def score_all(llm, items):
            scores = []
            for item in items:
                try:
                    scores.append(await llm.ainvoke(item))
                except Exception:
                    logger.warning("skipping item")
                    continue
            return scores
        """,
    "error-response-not-an-answer": """
        from fastapi.responses import JSONResponse

        @router.post("/summaries")
        async def summarise(body, llm):
            try:
                return {"summary": (await llm.ainvoke(body.text)).content}
            except Exception:
                logger.exception("summary failed")
                return JSONResponse(status_code=502, content={"detail": "model unavailable"})
        """,
    "no-llm-in-try": """
        async def load(repo, pid):
            try:
                return await repo.get(pid)
            except Exception:
                return None
        """,
}


@pytest.mark.parametrize("source", SC601_POSITIVE.values(), ids=SC601_POSITIVE.keys())
def test_sc601_flags_fake_answers(source: str) -> None:
    assert_flags(source, "SC601")


@pytest.mark.parametrize("source", SC601_NEGATIVE.values(), ids=SC601_NEGATIVE.keys())
def test_sc601_accepts_raised_specific_or_fallback_handling(source: str) -> None:
    assert_clean(source, "SC601")


SC701_POSITIVE = {
    "chat-model-per-request": """
        from langchain_google_genai import ChatGoogleGenerativeAI

        @router.post("/ask")
        async def ask(question: str):
            llm = ChatGoogleGenerativeAI(model="gemini-2.5-flash", temperature=0)  # expect
            return (await llm.ainvoke(question)).content
        """,
    "redis-per-call-dependency": """
        from redis.asyncio import Redis

        async def get_redis():
            client = Redis.from_url("redis://localhost:6379/0")  # expect
            try:
                yield client
            finally:
                await client.aclose()
        """,
    "engine-in-service-method": """
        from sqlalchemy.ext.asyncio import create_async_engine

        class ReportService:
            async def run(self, url):
                engine = create_async_engine(url)  # expect
                async with engine.connect() as conn:
                    return await conn.execute(text("select 1"))
        """,
    "http-client-per-call": """
        import httpx

        async def fetch_company(domain):
            async with httpx.AsyncClient() as client:  # expect
                return (await client.get(f"https://api.example.com/{domain}")).json()
        """,
    "inline-call": """
        from langchain_google_genai import ChatGoogleGenerativeAI

        async def tag(text):
            return await ChatGoogleGenerativeAI(model="gemini-2.5-flash").ainvoke(text)  # expect
        """,
}

SC701_NEGATIVE = {
    "lifespan": """
        from contextlib import asynccontextmanager
        from redis.asyncio import Redis

        @asynccontextmanager
        async def lifespan(app):
            app.state.redis = Redis.from_url("redis://localhost:6379/0")
            yield
            await app.state.redis.aclose()
        """,
    "memoised-getter": """
        from functools import lru_cache
        from langchain_google_genai import ChatGoogleGenerativeAI

        @lru_cache
        def get_llm():
            llm = ChatGoogleGenerativeAI(model="gemini-2.5-flash")
            return llm
        """,
    "stored-on-self-in-constructor": """
        import httpx

        class CrmClient:
            def __init__(self, base_url):
                self._http = httpx.AsyncClient(base_url=base_url)
        """,
    "module-level": """
        from redis.asyncio import Redis

        redis = Redis.from_url("redis://localhost:6379/0")

        async def get(key):
            return await redis.get(key)
        """,
    "factory-returns-client": """
        from sqlalchemy.ext.asyncio import create_async_engine

        def engine_for(url):
            return create_async_engine(url, pool_size=5)
        """,
    "context-manager-factory": """
        from contextlib import asynccontextmanager
        import httpx

        @asynccontextmanager
        async def crm_client(token):
            client = httpx.AsyncClient(headers={"Authorization": token})
            try:
                yield client
            finally:
                await client.aclose()
        """,
}


@pytest.mark.parametrize("source", SC701_POSITIVE.values(), ids=SC701_POSITIVE.keys())
def test_sc701_flags_clients_built_per_call(source: str) -> None:
    assert_flags(source, "SC701")


@pytest.mark.parametrize("source", SC701_NEGATIVE.values(), ids=SC701_NEGATIVE.keys())
def test_sc701_accepts_clients_built_once(source: str) -> None:
    assert_clean(source, "SC701")


def test_sc701_ignores_async_client_in_helper_run_from_sync_code() -> None:
    assert_clean(
        """
        import asyncio
        import neo4j

        def empty_graph(uri):
            async def delete_all():
                driver = neo4j.AsyncGraphDatabase.driver(uri)
                try:
                    await driver.execute_query("MATCH (n) DETACH DELETE n")
                finally:
                    await driver.close()

            asyncio.run(delete_all())
        """,
        "SC701",
    )


def test_sc701_skips_script_modules_but_not_their_routes() -> None:
    assert_flags(
        """
        import asyncio
        import httpx
        import uvicorn
        from fastapi import FastAPI

        app = FastAPI()

        async def smoke_test(url):
            async with httpx.AsyncClient() as client:
                return (await client.get(url)).status_code

        @app.get("/proxy")
        async def proxy(url: str):
            async with httpx.AsyncClient() as client:  # expect
                return (await client.get(url)).json()

        if __name__ == "__main__":
            asyncio.run(smoke_test("http://127.0.0.1:8000/health"))
            uvicorn.run(app)
        """,
        "SC701",
    )
