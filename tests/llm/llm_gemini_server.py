"""A local fake of the Gemini Developer API for tests: ``generateContent`` and its SSE stream,
and ``batchEmbedContents`` (what ``GoogleGenerativeAIEmbeddings`` calls for documents and
queries alike), answered with the fake provider's deterministic vectors.

It speaks the JSON the real ``google-genai`` SDK expects, so the real ``ChatGoogleGenerativeAI``
can be pointed at it through ``base_url`` and every exception in a test is the one production
would see. Replies are scripted per request; every request is recorded (path, model, body).
Runs in a daemon thread on 127.0.0.1 with an ephemeral port; nothing reaches the internet.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sight_core.llm import fake_vector

__all__ = ["FakeGeminiServer", "Quota", "RecordedRequest", "Reply", "prompt_tokens_of"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status, a JSON body (or SSE chunks) and optional delay/headers."""

    status: int = 200
    body: dict[str, Any] | None = None
    chunks: tuple[dict[str, Any], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    chunk_delay: float = 0.0
    """Seconds between two SSE chunks of a stream (the body is flushed chunk by chunk)."""

    @staticmethod
    def text(
        text: str = "Hello from fake Gemini.",
        *,
        prompt_tokens: int = 12,
        output_tokens: int = 6,
        thoughts_tokens: int = 0,
        cached_tokens: int = 0,
        model: str = "gemini-2.5-flash",
        finish_reason: str = "STOP",
        delay: float = 0.0,
    ) -> Reply:
        return Reply(
            body=_candidate_body(
                text,
                prompt_tokens=prompt_tokens,
                output_tokens=output_tokens,
                thoughts_tokens=thoughts_tokens,
                cached_tokens=cached_tokens,
                model=model,
                finish_reason=finish_reason,
            ),
            delay=delay,
        )

    @staticmethod
    def stream(
        *texts: str,
        model: str = "gemini-2.5-flash",
        prompt_tokens: int = 12,
        finish_reason: str = "STOP",
        chunk_delay: float = 0.0,
    ) -> Reply:
        """SSE chunks of ``texts`` (cumulative usage in each, as Gemini sends it); the last one
        carries ``finish_reason``."""
        chunks = []
        produced = 0
        for i, piece in enumerate(texts):
            produced += max(1, len(piece) // 4)
            last = i == len(texts) - 1
            chunks.append(
                _candidate_body(
                    piece,
                    prompt_tokens=prompt_tokens,
                    output_tokens=produced,
                    model=model,
                    finish_reason=finish_reason if last else None,
                )
            )
        return Reply(chunks=tuple(chunks), chunk_delay=chunk_delay)

    @staticmethod
    def error(
        status: int,
        message: str,
        grpc_status: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        error: dict[str, Any] = {"code": status, "message": message, "status": grpc_status}
        if details:
            error["details"] = details
        return Reply(status=status, body={"error": error}, headers=headers)

    @staticmethod
    def rate_limited(retry_delay: str | None = "2s", retry_after: str | None = None) -> Reply:
        details = (
            [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]
            if retry_delay is not None
            else None
        )
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return Reply.error(
            429,
            "Resource has been exhausted (e.g. check quota).",
            "RESOURCE_EXHAUSTED",
            details=details,
            headers=headers,
        )

    @staticmethod
    def daily_quota(retry_delay: str | None = "20s") -> Reply:
        """A 429 whose ``QuotaFailure`` names a per-day quota (the free tier's RPD)."""
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    }
                ],
            }
        ]
        if retry_delay is not None:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            )
        return Reply.error(
            429, "You exceeded your current quota.", "RESOURCE_EXHAUSTED", details=details
        )

    @staticmethod
    def quota_exceeded(violations: list[dict[str, Any]], retry_in: float) -> Reply:
        """A 429 as Gemini sends it over a quota: the violated quotas (``QuotaFailure``), a
        help link and ``RetryInfo`` with the whole seconds to wait."""
        details: list[dict[str, Any]] = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations},
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{math.ceil(retry_in)}s",
            },
        ]
        lines = "".join(
            f"\n* Quota exceeded for metric: {v['quotaMetric']}, limit: {v['quotaValue']}, "
            f"model: {v['quotaDimensions']['model']}"
            for v in violations
        )
        return Reply.error(
            429,
            "You exceeded your current quota, please check your plan and billing details."
            f"{lines}\nPlease retry in {retry_in:.6f}s.",
            "RESOURCE_EXHAUSTED",
            details=details,
        )

    @staticmethod
    def unavailable() -> Reply:
        return Reply.error(503, "The model is overloaded. Please try again later.", "UNAVAILABLE")

    @staticmethod
    def bad_request(message: str = "Invalid JSON payload received.") -> Reply:
        return Reply.error(400, message, "INVALID_ARGUMENT")

    @staticmethod
    def context_overflow() -> Reply:
        return Reply.error(
            400,
            "The input token count (1200000) exceeds the maximum number of tokens allowed "
            "(1048576).",
            "INVALID_ARGUMENT",
        )

    @staticmethod
    def prompt_blocked() -> Reply:
        return Reply(
            body={
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                "modelVersion": "gemini-2.5-flash",
            }
        )

    @staticmethod
    def answer_blocked() -> Reply:
        return Reply(
            body={
                "candidates": [{"finishReason": "SAFETY", "index": 0}],
                "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                "modelVersion": "gemini-2.5-flash",
            }
        )

    @staticmethod
    def slow(seconds: float) -> Reply:
        return Reply.text("too late", delay=seconds)


def _candidate_body(
    text: str,
    *,
    prompt_tokens: int,
    output_tokens: int,
    thoughts_tokens: int = 0,
    cached_tokens: int = 0,
    model: str,
    finish_reason: str | None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt_tokens + output_tokens + thoughts_tokens,
    }
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    if cached_tokens:
        usage["cachedContentTokenCount"] = cached_tokens
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": "fake-response",
    }


def _embeddings_for(body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ``batchEmbedContents`` request: one fake vector per request, of its
    ``outputDimensionality`` (Gemini's default 3,072 without one)."""
    embeddings = []
    for request in body.get("requests", []):
        parts = request.get("content", {}).get("parts", [])
        text = "".join(part.get("text", "") for part in parts)
        size = int(request.get("outputDimensionality") or 3072)
        embeddings.append({"values": fake_vector(text, size)})
    return {"embeddings": embeddings}


def _with_prompt_tokens(reply: Reply, tokens: int) -> Reply:
    """``reply`` with ``promptTokenCount`` set to ``tokens`` (the fake's count of the prompt)."""

    def patched(body: dict[str, Any] | None) -> dict[str, Any] | None:
        usage = (body or {}).get("usageMetadata")
        if body is None or not isinstance(usage, dict):
            return body
        output = int(usage.get("candidatesTokenCount") or 0)
        thoughts = int(usage.get("thoughtsTokenCount") or 0)
        usage = {**usage, "promptTokenCount": tokens, "totalTokenCount": tokens + output + thoughts}
        return {**body, "usageMetadata": usage}

    return replace(
        reply, body=patched(reply.body), chunks=tuple(patched(c) or c for c in reply.chunks)
    )


class _Server(ThreadingHTTPServer):
    request_queue_size = 512
    """The listen backlog: the default of 5 refuses connections in a 20-way burst, and the
    resulting connection errors would open breakers."""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    model: str
    stream: bool
    body: dict[str, Any]
    client: str = ""  # the ``x-test-client`` header: which test process sent it


def prompt_tokens_of(body: dict[str, Any]) -> int:
    """The fake's token count of a request: ``ceil(characters / 4)`` of every text part of
    ``contents`` and ``systemInstruction`` (the estimate sight-core reserves with)."""
    chars = 0
    parts_lists = [c.get("parts") or [] for c in body.get("contents") or []]
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        parts_lists.append(system.get("parts") or [])
    for parts in parts_lists:
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                chars += len(part["text"])
    return math.ceil(chars / 4)


@dataclass
class Quota:
    """A true sliding-window quota of one model, as Gemini enforces it per project: at most
    ``rpm`` requests and ``tpm`` input tokens in any ``window`` seconds, ``rpd`` requests in
    total (a "day" that never ends in a test). Refused requests are not counted."""

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    window: float = 60.0
    admitted: list[tuple[float, int]] = field(default_factory=list)
    refused: int = 0

    def admit(self, now: float, tokens: int, model: str) -> Reply | None:
        """``None`` when the request fits (and is counted), else the 429 Gemini would send."""
        live = [(t, n) for t, n in self.admitted if t > now - self.window]
        violations: list[dict[str, Any]] = []
        if self.rpd is not None and len(self.admitted) + 1 > self.rpd:
            violations.append(
                _violation("requests", "GenerateRequestsPerDayPerProjectPerModel", model, self.rpd)
            )
        if self.rpm is not None and len(live) + 1 > self.rpm:
            violations.append(
                _violation(
                    "requests", "GenerateRequestsPerMinutePerProjectPerModel", model, self.rpm
                )
            )
        if self.tpm is not None and sum(n for _, n in live) + tokens > self.tpm:
            violations.append(
                _violation(
                    "input_token_count",
                    "GenerateContentInputTokensPerModelPerMinute",
                    model,
                    self.tpm,
                )
            )
        if not violations:
            self.admitted.append((now, tokens))
            return None
        self.refused += 1
        # the earliest time the oldest request in the window ages out
        wait = (live[0][0] + self.window - now) if live else self.window
        return Reply.quota_exceeded(violations, max(wait, 0.0))

    def max_in_window(self) -> tuple[int, int]:
        """Most requests and input tokens admitted in any window (ending at an admission)."""
        best = (0, 0)
        for end, _ in self.admitted:
            inside = [n for t, n in self.admitted if end - self.window < t <= end]
            best = max(best[0], len(inside)), max(best[1], sum(inside))
        return best


def _violation(metric: str, quota_id: str, model: str, limit: int) -> dict[str, Any]:
    return {
        "quotaMetric": f"generativelanguage.googleapis.com/generate_content_paid_tier_{metric}",
        "quotaId": f"{quota_id}-PaidTier",
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),
    }


@dataclass
class _State:
    script: deque[Reply] = field(default_factory=deque)
    default: Reply = field(default_factory=Reply.text)
    by_model: dict[str, Reply] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    generation: int = 0  # bumped by reset(): requests of an earlier test are not counted
    quotas: dict[str, Quota] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeGeminiServer:
    """``with FakeGeminiServer() as server:``; ``server.url`` is the ``base_url`` to use.

    ``server.push(reply, ...)`` queues replies for the next requests (FIFO); once the queue is
    empty ``server.default`` answers. ``server.count`` is the number of requests received.
    """

    def __init__(self) -> None:
        self._state = _State()
        state = self._state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                path = self.path.split("?", 1)[0]
                tail = path.rsplit("/", 1)[-1]
                model, _, method = tail.partition(":")
                stream = method == "streamGenerateContent"
                embed = method == "batchEmbedContents"
                client = self.headers.get("x-test-client") or ""
                with state.lock:
                    state.requests.append(
                        RecordedRequest("POST", self.path, model, stream, body, client)
                    )
                    if state.script:
                        reply = state.script.popleft()
                    else:
                        reply = state.by_model.get(model, state.default)
                    quota = state.quotas.get(model)
                    if quota is not None and reply.status == 200:
                        tokens = prompt_tokens_of(body)
                        refusal = quota.admit(time.monotonic(), tokens, model)
                        reply = refusal or _with_prompt_tokens(reply, tokens)
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                    generation = state.generation
                try:
                    if reply.delay:
                        time.sleep(reply.delay)
                    if stream and reply.status == 200:
                        self._send_stream(reply)
                    elif embed and reply.status == 200 and "embeddings" not in (reply.body or {}):
                        self._send_json(Reply(body=_embeddings_for(body)))
                    else:
                        self._send_json(reply)
                except (BrokenPipeError, ConnectionResetError):
                    return
                finally:
                    with state.lock:
                        if state.generation == generation:
                            state.in_flight -= 1

            def _send_json(self, reply: Reply) -> None:
                body = reply.body
                if body is None and reply.chunks:
                    body = reply.chunks[-1]
                data = json.dumps(body or {}).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _send_stream(self, reply: Reply) -> None:
                chunks = reply.chunks or ((reply.body or {}),)
                pieces = [b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in chunks]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(sum(len(p) for p in pieces)))
                self.end_headers()
                for i, piece in enumerate(pieces):
                    if i and reply.chunk_delay:
                        time.sleep(reply.chunk_delay)
                    self.wfile.write(piece)
                    self.wfile.flush()

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-gemini", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def count(self) -> int:
        with self._state.lock:
            return len(self._state.requests)

    @property
    def default(self) -> Reply:
        return self._state.default

    @default.setter
    def default(self, reply: Reply) -> None:
        self._state.default = reply

    @property
    def max_in_flight(self) -> int:
        """Most requests the server was handling at once since the last :meth:`reset`."""
        with self._state.lock:
            return self._state.max_in_flight

    def answer(self, model: str, reply: Reply) -> None:
        """``reply`` for every request to ``model`` once the script is empty (instead of
        ``default``)."""
        with self._state.lock:
            self._state.by_model[model] = reply

    def push(self, *replies: Reply) -> None:
        with self._state.lock:
            self._state.script.extend(replies)

    def enforce(self, model: str, quota: Quota) -> Quota:
        """Enforce ``quota`` on ``model``: over it, a 429 with ``RetryInfo`` and
        ``QuotaFailure``; within it, answers report the fake's prompt token count."""
        with self._state.lock:
            self._state.quotas[model] = quota
        return quota

    def reset(self) -> None:
        with self._state.lock:
            self._state.quotas.clear()
            self._state.script.clear()
            self._state.by_model.clear()
            self._state.requests.clear()
            self._state.generation += 1
            self._state.in_flight = self._state.max_in_flight = 0
            self._state.default = Reply.text()

    def start(self) -> FakeGeminiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeGeminiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
