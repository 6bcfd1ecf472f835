"""Adversarial checks of the LLM layer (sync loop, shared limiter, stream usage, prices, fake).

Each test drives the real langchain-google-genai SDK against the local fake Gemini (or the fake
provider where the SDK is beside the point) and asserts counts: requests, records, tokens, slots.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque

from llm_gemini_server import FakeGeminiServer, Reply

from sight_core.llm import build_chat_model, usage_scope
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
