"""The classifier and the retry policy on the exceptions the real SDK raises.

``ChatGoogleGenerativeAI`` (langchain-google-genai 4.x over google-genai) is pointed at a stub
Gemini endpoint on 127.0.0.1 that answers with scripted statuses; requests are counted.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import GoogleInvalidRequestError, GoogleRateLimitError

from sight_core.errors import CircuitOpenError, DeadlineExceededError
from sight_core.resilience import (
    CircuitBreaker,
    RetryEvent,
    RetryPolicy,
    circuit_of,
    classify,
    set_testing,
)

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
OK = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "hello"}]}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
    "modelVersion": "gemini-2.5-flash",
}


def error(code: int, status: str, message: str, delay: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if delay is not None:
        body["details"] = [{"@type": RETRY_INFO, "retryDelay": delay}]
    return {"error": body}


class Stub:
    """Scripted replies ``(status, body, headers)``; the last one repeats."""

    def __init__(self) -> None:
        self.replies: deque[tuple[int, dict[str, Any], dict[str, str]]] = deque()
        self.requests = 0
        self.lock = threading.Lock()

    def next(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            self.requests += 1
            return self.replies.popleft() if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            status, body, headers = state.next()
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def model(url: str) -> ChatGoogleGenerativeAI:
    # max_retries=1: the SDK makes one attempt; retries are the policy's job
    return ChatGoogleGenerativeAI(
        model="gemini-2.5-flash", api_key="test-key", base_url=url, max_retries=1, timeout=10
    )


async def test_real_429_is_transient_with_retry_delay(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.replies.append((429, error(429, "RESOURCE_EXHAUSTED", "quota", "7s"), {}))
    with pytest.raises(GoogleRateLimitError) as info:
        await model(url).ainvoke("hi")
    assert state.requests == 1
    c = classify(info.value)
    assert (c.kind, c.status, c.retry_after) == ("transient", 429, 7.0)


async def test_real_retry_after_header(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.replies.append((503, error(503, "UNAVAILABLE", "overloaded"), {"Retry-After": "4"}))
    with pytest.raises(Exception) as info:
        await model(url).ainvoke("hi")
    c = classify(info.value)
    assert (c.kind, c.status, c.retry_after) == ("transient", 503, 4.0)


async def test_429_twice_then_success_through_the_policy(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.replies.extend(
        [
            (429, error(429, "RESOURCE_EXHAUSTED", "quota", "1.5s"), {}),
            (429, error(429, "RESOURCE_EXHAUSTED", "quota", "1.5s"), {}),
            (200, OK, {}),
        ]
    )
    events: list[RetryEvent] = []
    llm = model(url)
    with set_testing(True):
        answer = await RetryPolicy(initial=0.1, on_retry=[events.append]).call(llm.ainvoke, "hi")
    assert answer.content == "hello"
    assert state.requests == 3
    assert [e.classification.retry_after for e in events] == [1.5, 1.5]
    assert all(1.5 <= e.wait <= 1.5 + 0.75 for e in events)  # the hint, jittered upwards only


async def test_real_400_is_never_retried(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.replies.append((400, error(400, "INVALID_ARGUMENT", "Invalid JSON payload"), {}))
    with set_testing(True), pytest.raises(GoogleInvalidRequestError):
        await RetryPolicy(max_attempts=5).call(model(url).ainvoke, "hi")
    assert state.requests == 1


async def test_real_overflow_is_routed(stub: tuple[Stub, str]) -> None:
    state, url = stub
    message = (
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    )
    state.replies.append((400, error(400, "INVALID_ARGUMENT", message), {}))
    with pytest.raises(Exception) as info:
        await RetryPolicy(max_attempts=5).call(model(url).ainvoke, "hi")
    assert classify(info.value).kind == "context_overflow"
    assert state.requests == 1


async def test_real_retry_delay_beyond_deadline_fails_fast(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.replies.append((429, error(429, "RESOURCE_EXHAUSTED", "quota", "45s"), {}))
    policy = RetryPolicy(max_attempts=5, deadline=20.0, max_server_wait=60.0)
    with pytest.raises(DeadlineExceededError) as info:
        await policy.call(model(url).ainvoke, "hi")  # testing mode off: a sleep would hang
    assert state.requests == 1
    assert isinstance(info.value.__cause__, GoogleRateLimitError)


async def test_failing_model_opens_the_breaker_and_no_request_follows(
    stub: tuple[Stub, str],
) -> None:
    state, url = stub
    state.replies.append((503, error(503, "UNAVAILABLE", "overloaded"), {}))
    llm = model(url)
    breaker = CircuitBreaker("gemini-stub", failure_threshold=3, recovery_timeout=60)
    policy = RetryPolicy(max_attempts=10, name="gemini-stub")
    with set_testing(True), pytest.raises(Exception, match="503") as info:
        await policy.call(breaker.call, llm.ainvoke, "hi")
    assert state.requests == 3  # the third 503 opened the circuit: no 4th attempt
    assert circuit_of(info.value) is not None  # the real error, circuit state attached
    for _ in range(20):
        with pytest.raises(CircuitOpenError):
            await breaker.call(llm.ainvoke, "hi")
    assert state.requests == 3
    assert breaker.stats()["rejected"] == 20
