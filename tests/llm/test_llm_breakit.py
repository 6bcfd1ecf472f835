"""Adversarial checks of the LLM layer (sync loop, shared limiter, stream usage, prices, fake).

Each test drives the real langchain-google-genai SDK against the local fake Gemini (or the fake
provider where the SDK is beside the point) and asserts counts: requests, records, tokens, slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from collections import deque
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Annotated

import pytest
from llm_gemini_server import FakeGeminiServer, Reply
from pydantic import BaseModel, Field

from sight_core.llm import (
    FakeChatModel,
    ResilientChatModel,
    UsageRecord,
    add_usage_sink,
    build_chat_model,
    remove_usage_sink,
    usage_scope,
)
from sight_core.llm._limit import SharedLimiter
from sight_core.llm._usage import cost_of, normalize_model_name, price_for
from sight_core.resilience._store import BreakerConfig, MemoryBreakerStore, Snapshot
from sight_core.settings import LLMSettings


async def test_stream_collected_later_is_not_charged_to_the_collecting_scope(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.stream("one ", "two ", "three", prompt_tokens=1000, chunk_delay=0.05))
    llm = build_chat_model("flash", settings=google_settings)
    gc.disable()
    try:
        async with usage_scope(project_id="a") as usage_a:
            stream = llm.astream("count")
            assert (await anext(stream)).text == "one "
            cycle: list[object] = [stream]
            cycle.append(cycle)  # only the cycle collector frees it: at some later gc.collect()
            del stream, cycle
        async with usage_scope(project_id="b") as usage_b:
            gc.collect()  # another request's task happens to run the collector
            for _ in range(20):
                await asyncio.sleep(0.01)  # the loop's finalizer closes the abandoned stream
    finally:
        gc.enable()
    assert usage_b.records == deque() and usage_b.total_tokens == 0  # b did not pay for a
    assert usage_a.late == 1  # a's call, after a exited: counted as late, not lost silently
    assert llm.limiter.in_flight == 0


def _acquire_in_child(limiter: SharedLimiter, conn: Connection) -> None:
    async def take() -> int:
        await asyncio.wait_for(limiter.acquire(), 2.0)
        limiter.release()
        return limiter.in_flight

    try:
        conn.send(("ok", asyncio.run(take())))
    except BaseException as exc:
        conn.send(("error", type(exc).__name__))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_inherit_the_parents_held_slots() -> None:
    limiter = SharedLimiter("llm:fork", 2)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(limiter.acquire())
        loop.run_until_complete(limiter.acquire())  # two calls of the parent in flight
        parent, child = multiprocessing.get_context("fork").Pipe()
        process = multiprocessing.get_context("fork").Process(
            target=_acquire_in_child, args=(limiter, child)
        )
        process.start()
        process.join(10)
        assert parent.recv() == ("ok", 0)  # the child's own calls are not capped by ghosts
        assert limiter.in_flight == 2  # the parent's are untouched
        limiter.release()
        limiter.release()
    finally:
        loop.close()


class _SlowSuccessStore(MemoryBreakerStore):
    """The in-memory store, answering success records only once ``gate`` opens (a shared store
    such as Redis suspends the caller on every record)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def record(
        self,
        name: str,
        cfg: BreakerConfig,
        *,
        failure: bool,
        probe: bool,
        epoch: int | None = None,
    ) -> Snapshot:
        if not failure:
            self.entered.set()
            await self.gate.wait()
        return await super().record(name, cfg, failure=failure, probe=probe, epoch=epoch)


async def test_stream_cancelled_while_the_breaker_records_its_opening_frees_the_slot(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"backoff_initial": 0.0, "backoff_max": 0.0})
    gemini.push(Reply.unavailable(), Reply.stream("one ", "two", prompt_tokens=500))
    store = _SlowSuccessStore()
    llm = build_chat_model("flash", settings=settings, breaker_store=store)

    async def consume() -> None:
        async for _ in llm.astream("count"):
            pass

    async with usage_scope() as usage:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(store.entered.wait(), 5)  # first chunk in, success being recorded
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert llm.limiter.in_flight == 0  # the opened stream's slot came back
    [record] = usage.records
    assert (record.outcome, record.input_tokens) == ("incomplete", 500)  # the chunk was billed
    assert gemini.count == 2


_EXIT_SCRIPT = """
import threading, time
from llm_gemini_server import FakeGeminiServer, Reply
from sight_core.llm import build_chat_model
from sight_core.settings import LLMSettings

server = FakeGeminiServer().start()
settings = LLMSettings(provider="google", api_key="k", base_url=server.url, timeout=5.0)
llm = build_chat_model("flash", settings=settings)
server.push(Reply.text("warm"))
llm.invoke("start the sync loop and its workers")
server.push(Reply.stream("one ", "two ", "three", chunk_delay=0.3), Reply.text("after"))

def work():
    try:
        print("stream", "".join(c.text for c in llm.stream("hi")), flush=True)
        print("invoke", llm.invoke("again").text, flush=True)
    except BaseException as exc:
        print("error", type(exc).__name__, flush=True)
    print("requests", server.count, flush=True)

threading.Thread(target=work).start()  # non-daemon: the interpreter waits for it
time.sleep(0.1)  # the main thread returns with the stream in flight
"""


def test_sync_calls_in_flight_at_interpreter_exit_keep_their_answers() -> None:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    out = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.stdout.splitlines() == ["stream one two three", "invoke after", "requests 3"], (
        out.stderr
    )


def test_a_user_price_under_a_capitalised_path_replaces_the_built_in_one() -> None:
    settings = LLMSettings(
        prices={"Models/Gemini-2.5-PRO": {"input": 1.0, "output": 2.0}}  # type: ignore[dict-item]
    )
    assert "models/gemini-2.5-pro" not in settings.prices
    price = price_for("Models/Gemini-2.5-Pro", settings.prices)
    assert price is not None and (price.input, price.output, price.tiers) == (1.0, 2.0, ())
    assert normalize_model_name("Models/Gemini-2.5-Flash") == "gemini-2.5-flash"


@pytest.mark.parametrize(
    ("prompt", "cached", "rate_in", "rate_cached", "rate_out"),
    [
        (200_000, 0, 1.25, 0.31, 10.0),  # at the boundary: the <= 200k rate
        (200_001, 0, 2.50, 0.625, 15.0),  # one token over: every token at the long rate
        (200_001, 200_001, 2.50, 0.625, 15.0),  # cached tokens count towards the prompt size
        (150_000, 100_000, 1.25, 0.31, 10.0),
    ],
)
def test_pro_price_at_the_tier_boundary(
    prompt: int, cached: int, rate_in: float, rate_cached: float, rate_out: float
) -> None:
    price = LLMSettings().prices["gemini-2.5-pro"]
    expected = ((prompt - cached) * rate_in + cached * rate_cached + 1000 * rate_out) / 1e6
    assert cost_of(price, prompt, 1000, cached) == pytest.approx(expected)


class Tree(BaseModel):
    value: int
    children: list[Tree]  # required, no default: only an empty list ends it


class Chain(BaseModel):
    value: Annotated[int, Field(ge=1, le=9)]
    next: Chain | None  # required, nullable: only null ends it


class Odd(BaseModel):
    big: Annotated[int, Field(gt=10**12)]  # above the fake's default range
    huge: Annotated[int, Field(ge=2**53 + 1, le=2**53 + 1)]  # not exact as a float
    whole: Annotated[Decimal, Field(decimal_places=0)]  # not in the JSON schema
    money: Annotated[Decimal, Field(max_digits=4, decimal_places=1)]
    forest: Annotated[list[Tree], Field(min_length=2)]
    chains: list[Chain]


@pytest.mark.parametrize("schema", [Tree, Chain, Odd])
async def test_the_fake_answers_odd_schemas_validly_on_the_first_attempt(
    schema: type[BaseModel],
) -> None:
    fake = FakeChatModel()
    llm = ResilientChatModel(fake)
    for i in range(5):
        answer = await llm.with_structured_output(schema).ainvoke(f"question {i}")
        assert isinstance(answer, schema)
    assert fake.attempts == 5  # never a repair request


async def test_threads_invoking_while_the_app_loop_awaits_share_one_cap(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(update={"flash_concurrency": 3})
    gemini.default = Reply.text("ok", delay=0.02)
    llm = build_chat_model("flash", settings=settings)
    records: list[UsageRecord] = []
    add_usage_sink(records.append)
    answers: list[str] = []

    def worker() -> None:
        answers.extend(llm.invoke(f"sync {i}").text for i in range(5))

    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        results = await asyncio.gather(*(llm.ainvoke(f"async {i}") for i in range(10)))
        await asyncio.to_thread(lambda: [thread.join(30) for thread in threads])
    finally:
        remove_usage_sink(records.append)
    assert answers == ["ok"] * 20 and [r.text for r in results] == ["ok"] * 10
    assert gemini.count == 30 and gemini.max_in_flight <= 3  # one cap for both loops
    assert len(records) == 30 and all(r.outcome == "ok" for r in records)
    assert llm.limiter.in_flight == 0 and llm.limiter.waiting == 0


async def test_half_open_probe_cap_holds_across_the_app_loop_and_sync_threads(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    settings = google_settings.model_copy(
        update={
            "breaker_failure_threshold": 1,
            "breaker_recovery_timeout": 0.2,
            "max_attempts": 1,
        }
    )
    llm = build_chat_model("flash", settings=settings)
    gemini.push(Reply.unavailable())
    with pytest.raises(Exception):  # noqa: B017 - the 503 opens the circuit
        await llm.ainvoke("fail")
    await asyncio.sleep(0.3)  # half-open now: one probe may pass
    gemini.default = Reply.text("probe", delay=1.0)  # every other call arrives meanwhile
    outcomes: list[str] = []

    def sync_call() -> None:
        try:
            outcomes.append(llm.invoke("sync").text)
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    async def async_call() -> None:
        try:
            outcomes.append((await llm.ainvoke("async")).text)
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=sync_call) for _ in range(6)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(async_call() for _ in range(6)))
    await asyncio.to_thread(lambda: [thread.join(30) for thread in threads])
    assert gemini.count == 2  # the failure, then exactly one probe
    assert sorted(outcomes) == ["CircuitOpenError"] * 11 + ["probe"]


@pytest.mark.parametrize("stream", [False, True])
async def test_cancelled_while_an_async_sink_awaits_the_record_is_kept_once(
    gemini: FakeGeminiServer, google_settings: LLMSettings, stream: bool
) -> None:
    gemini.default = (
        Reply.stream("one ", "two", prompt_tokens=300) if stream else Reply.text(prompt_tokens=300)
    )
    llm = build_chat_model("flash", settings=google_settings)
    entered = asyncio.Event()
    seen: list[UsageRecord] = []

    async def slow_sink(record: UsageRecord) -> None:
        seen.append(record)
        entered.set()
        await asyncio.sleep(30)

    async def call() -> None:
        if stream:
            async for _ in llm.astream("hi"):
                pass
        else:
            await llm.ainvoke("hi")

    async with usage_scope(sink=slow_sink) as usage:
        task = asyncio.create_task(call())
        await asyncio.wait_for(entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r.input_tokens for r in usage.records] == [300]  # recorded once, before the sink
    assert len(seen) == 1 and usage.input_tokens == 300
    assert llm.limiter.in_flight == 0


def test_sync_stream_garbage_collected_unclosed_records_the_tokens_seen(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    gemini.push(Reply.stream("one ", "two ", "three", prompt_tokens=700, chunk_delay=0.05))
    llm = build_chat_model("flash", settings=google_settings)
    records: list[UsageRecord] = []
    add_usage_sink(records.append)
    try:
        stream = llm.stream("count")
        assert next(stream).text == "one "
        del stream  # never closed by the consumer: the collector closes it
        gc.collect()
    finally:
        remove_usage_sink(records.append)
    assert [(r.outcome, r.input_tokens) for r in records] == [("incomplete", 700)]
    assert llm.limiter.in_flight == 0


class Patterned(BaseModel):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    period: Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")]
    slug: Annotated[str, Field(pattern=r"^(draft|final)-[a-z0-9]+$", max_length=20)]
    email: Annotated[str, Field(pattern=r"^[^@\s]+@example\.org$")]
    iban: Annotated[str, Field(pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{1,30}$", min_length=5)]
    codes: list[Annotated[str, Field(pattern=r"^\S+$")]]


async def test_the_fake_answers_regex_patterned_fields_validly() -> None:
    fake = FakeChatModel()
    llm = ResilientChatModel(fake)
    for i in range(5):
        answer = await llm.with_structured_output(Patterned).ainvoke(f"question {i}")
        assert isinstance(answer, Patterned)
    assert fake.attempts == 5  # never a repair request


async def test_a_stream_cancelled_at_any_await_point_leaves_exactly_one_record(
    gemini: FakeGeminiServer, google_settings: LLMSettings
) -> None:
    llm = build_chat_model("flash", settings=google_settings)
    runs = 40
    gemini.default = Reply.stream("one ", "two ", "three", prompt_tokens=100)
    async with usage_scope() as usage:
        for ticks in range(runs):

            async def consume(call: int) -> None:
                async with usage_scope(call=call):
                    async for _ in llm.astream(f"count {call}"):
                        pass

            task = asyncio.create_task(consume(ticks))
            for _ in range(ticks * 3):
                await asyncio.sleep(0)  # cancel at a different point of the stream each run
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert llm.limiter.in_flight == 0
    sent = [json.dumps(r.body) for r in gemini.requests]
    for call in range(runs):
        records = [r for r in usage.records if r.labels["call"] == str(call)]
        reached = sum(f'count {call}"' in body for body in sent)
        assert reached <= 1  # never retried after a cancellation
        assert len(records) == 1 if reached else len(records) <= 1, (call, records)
        assert all(r.outcome in ("ok", "incomplete") for r in records)
        assert all(r.input_tokens in (0, 100) for r in records)
    assert usage.incomplete > 0 and usage.calls > 0  # the sweep hit both sides


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
        ("gemini-2.5-pro-exp-03-25", "gemini-2.5-pro"),
        ("gemini-2.5-flash-001", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-image-preview", None),  # image output: $30/M, not flash's $2.50
        ("gemini-2.5-flash-preview-tts", None),  # a speech model, its own rates
        ("gemini-2.5-pro-preview-tts", None),
        ("gemini-2.5-flash-native-audio-dialog", None),
    ],
)
def test_a_model_variant_is_not_priced_as_its_base_model(model: str, priced_as: str | None) -> None:
    prices = LLMSettings().prices
    expected = None if priced_as is None else prices[priced_as]
    assert price_for(model, prices) == expected
