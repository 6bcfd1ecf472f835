"""A scripted, deterministic chat model for tests, docs and benchmarks (provider ``fake``).

:class:`FakeChatModel` is a real LangChain ``BaseChatModel``. Each *attempt* (one call of
``_agenerate``/``_astream``) first consumes the next item of ``script``; with the script used
up, ``failure_rate`` (seeded) decides whether it fails with ``failure``. Injected failures are
the exceptions ``langchain-google-genai`` raises for the same HTTP answers (a 429 is a
``GoogleRateLimitError`` whose cause carries Gemini's ``RetryInfo.retryDelay``), so the
resilience classifier sees exactly what production sees. Like the real service, rejections
(429, 503, 400, context overflow) come back at once; answers and timeouts take ``latency``.
Answers are deterministic (scripted ``responses`` in turn, else derived from the prompt),
JSON matching ``response_json_schema`` when structured output is requested, tool calls when
tools are bound with a forced choice, and always carry realistic ``usage_metadata``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import orjson
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from ._provider_args import check_provider_kwargs, field_names
from ._schema_values import example_for_schema, violation_of

__all__ = ["FailureKind", "FakeChatModel", "FakeFailure", "ScriptItem", "example_for_schema"]

FailureKind = Literal[
    "rate_limit",
    "server_error",
    "timeout",
    "blocked",
    "empty",
    "context_overflow",
    "bad_request",
    "malformed_json",
    "schema_violation",
]
"""``malformed_json``/``schema_violation`` are answers (served, billed): a structured-output
request gets text that is not JSON, or JSON that its schema rejects (a required key missing
or a wrong type)."""


@dataclass(frozen=True, slots=True)
class FakeFailure:
    """One injected failure. ``retry_delay`` is the 429's server hint in seconds (``None``:
    no hint); ``after_chunks`` makes a stream fail after yielding that many chunks (a
    ``"blocked"`` stream then ends with an empty ``finish_reason="SAFETY"`` chunk)."""

    kind: FailureKind
    retry_delay: float | None = 1.0
    after_chunks: int = 0


ScriptItem = Literal["ok"] | FailureKind | FakeFailure


class FakeChatModel(BaseChatModel):
    """Deterministic chat model with configurable latency and scripted failures.

    Counters (``attempts``, ``served``, ``in_flight``, ``max_in_flight``) let tests assert how
    many requests reached the "provider" and how many ran at once.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"latency", "script", "failure", "failure_rate", "retry_delay", "timeout"}
    )
    """Fields that shape failures and timing, never an answer (left out of cache keys)."""

    model_name: str = Field(default="fake-flash", alias="model")
    latency: float = Field(default=0.0, ge=0)
    script: list[ScriptItem] = Field(default_factory=list)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    failure: FailureKind = "rate_limit"
    retry_delay: float | None = 1.0
    seed: int = 0
    responses: list[str] = Field(default_factory=list)
    reasoning_tokens: int = Field(default=0, ge=0)
    temperature: float | None = None
    timeout: float | None = Field(default=None, gt=0)
    """Like the SDK's: an attempt longer than this waits ``timeout`` and raises
    ``httpx.ReadTimeout``."""

    _queue: deque[ScriptItem] = PrivateAttr(default_factory=deque)
    _rng: random.Random = PrivateAttr(default_factory=random.Random)
    _attempts: int = PrivateAttr(default=0)
    _served: int = PrivateAttr(default=0)
    _in_flight: int = PrivateAttr(default=0)
    _max_in_flight: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **kwargs: Any) -> None:
        """Refuses what the google provider refuses: SDK retry options and unknown (misspelt)
        keywords, naming the closest field (:class:`ConfigurationError`)."""
        if kwargs:
            check_provider_kwargs(type(self).__name__, kwargs, _fields_of(type(self)))
        super().__init__(**kwargs)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)  # LangChain records its version in ``metadata``
        self._queue = deque(self.script)
        self._rng = random.Random(self.seed)
        if self.failure_rate or any(item != "ok" for item in self.script):
            # build the error types now, not on the event loop at the first injected failure
            import langchain_google_genai.chat_models  # noqa: F401

    # ---------------------------------------------------------------- counters

    @property
    def attempts(self) -> int:
        """Requests that reached the model (failed ones included)."""
        return self._attempts

    @property
    def served(self) -> int:
        """Requests answered without an injected exception."""
        return self._served

    @property
    def in_flight(self) -> int:
        """Requests running now."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Highest number of requests running at once since creation or :meth:`reset`."""
        return self._max_in_flight

    def reset(self, script: Sequence[ScriptItem] | None = None) -> None:
        """Zero the counters, re-seed, and replace the script (``None`` keeps the original)."""
        self._queue = deque(self.script if script is None else script)
        self._rng = random.Random(self.seed)
        self._attempts = self._served = self._in_flight = self._max_in_flight = 0

    def push(self, *items: ScriptItem) -> None:
        """Append items to the remaining script."""
        self._queue.extend(items)

    def native_structured_kwargs(self, json_schema: dict[str, Any]) -> dict[str, Any]:
        """Native structured output (``NativeStructuredOutput``): the schema rides with the
        request, like Gemini's ``response_json_schema``."""
        return {"response_json_schema": json_schema}

    # ---------------------------------------------------------------- LangChain API

    @property
    def _llm_type(self) -> str:
        return "sight-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature}

    def bind_tools(
        self,
        tools: Sequence[Mapping[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI format; a forced ``tool_choice`` makes the answer a tool call."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        item = self._begin()
        try:
            if self.latency and _waits(item):
                time.sleep(self._sleep_for(item))
            return self._finish(self._timed_out(item), messages, kwargs)
        finally:
            self._end()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        item = self._begin()
        try:
            if self.latency and _waits(item):
                await asyncio.sleep(self._sleep_for(item))
            return self._finish(self._timed_out(item), messages, kwargs)
        finally:
            self._end()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        item = self._begin()
        try:
            if self.latency and _waits(item):
                await asyncio.sleep(self._sleep_for(item))
            item = self._timed_out(item)
            fail_after: FakeFailure | None = None
            if isinstance(item, FakeFailure) and item.after_chunks > 0:
                fail_after, item = item, "ok"
            message = self._finish(item, messages, kwargs).generations[0].message
            assert isinstance(message, AIMessage)
            text = message.content if isinstance(message.content, str) else ""
            pieces = _split(text) or [""]
            for i, piece in enumerate(pieces):
                if fail_after is not None and i == fail_after.after_chunks:
                    if fail_after.kind != "blocked":
                        raise _error(fail_after, self.model_name)
                    # Gemini ends a stream it stops for safety with an empty SAFETY chunk
                    yield ChatGenerationChunk(
                        message=AIMessageChunk(
                            content="",
                            usage_metadata=message.usage_metadata,
                            response_metadata={"finish_reason": "SAFETY"},
                        )
                    )
                    return
                last = i == len(pieces) - 1
                chunk = AIMessageChunk(
                    content=piece,
                    usage_metadata=_chunk_usage(message.usage_metadata, i, len(pieces)),
                    response_metadata=dict(message.response_metadata) if last else {},
                    tool_calls=message.tool_calls if last else [],
                )
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece)
                yield ChatGenerationChunk(message=chunk)
        finally:
            self._end()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        result = self._generate(messages, stop, None, **kwargs)
        message = result.generations[0].message
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=message.content,
                usage_metadata=getattr(message, "usage_metadata", None),
                response_metadata=dict(message.response_metadata),
            )
        )

    # ---------------------------------------------------------------- internals

    def _sleep_for(self, item: ScriptItem) -> float:
        if self.timeout is not None:
            return min(self.latency, self.timeout)
        return self.latency

    def _timed_out(self, item: ScriptItem) -> ScriptItem:
        if self.timeout is not None and self.latency > self.timeout and _waits(item):
            return FakeFailure("timeout")
        return item

    def _begin(self) -> ScriptItem:
        with self._lock:  # sync calls run in worker threads
            self._attempts += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self._queue:
                return self._queue.popleft()
            if self.failure_rate and self._rng.random() < self.failure_rate:
                return FakeFailure(self.failure, retry_delay=self.retry_delay)
            return "ok"

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _finish(
        self, item: ScriptItem, messages: list[BaseMessage], kwargs: Mapping[str, Any]
    ) -> ChatResult:
        failure = item if isinstance(item, FakeFailure) else None
        if failure is None and item != "ok":
            failure = FakeFailure(item, retry_delay=self.retry_delay)  # type: ignore[arg-type]
        prompt = _prompt_text(messages)
        if failure is not None and failure.kind not in _ANSWERED:
            raise _error(failure, self.model_name)
        with self._lock:
            self._served += 1
        finish_reason = "STOP"
        tool_calls: list[dict[str, Any]] = []
        if failure is not None and failure.kind in _BAD_OUTPUT:
            text = _bad_output(failure.kind, kwargs.get("response_json_schema"), prompt)
        elif failure is not None:
            text = ""
            finish_reason = "SAFETY" if failure.kind == "blocked" else "STOP"
        else:
            text, tool_calls = self._answer(prompt, kwargs)
        output = max(1, len(text) // 4) if text or tool_calls else 0
        usage = UsageMetadata(
            input_tokens=max(1, len(prompt) // 4),
            output_tokens=output + self.reasoning_tokens,
            total_tokens=max(1, len(prompt) // 4) + output + self.reasoning_tokens,
            input_token_details={"cache_read": 0},
        )
        if self.reasoning_tokens:
            usage["output_token_details"] = {"reasoning": self.reasoning_tokens}
        message = AIMessage(
            content=text,
            tool_calls=tool_calls,
            usage_metadata=usage,
            response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _answer(self, prompt: str, kwargs: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        tools = kwargs.get("tools") or []
        choice = kwargs.get("tool_choice")
        if tools and choice not in (None, False, "none", "auto"):
            tool = next(
                (t for t in tools if t["function"]["name"] == choice),
                tools[0],
            )
            args = example_for_schema(tool["function"].get("parameters") or {}, digest)
            call = {"name": tool["function"]["name"], "args": args, "id": f"call_{digest}"}
            return "", [call]
        if self.responses:
            return self.responses[(self._served - 1) % len(self.responses)], []
        schema = kwargs.get("response_json_schema")
        if schema is not None:
            return orjson.dumps(example_for_schema(schema, digest)).decode(), []
        return f"{self.model_name} answer {digest}: {prompt[-80:]}", []


def _chunk_usage(total: UsageMetadata | None, index: int, count: int) -> UsageMetadata | None:
    """Chunk ``index``'s share of ``total``, as Gemini streams it: the prompt's tokens on the
    first chunk, the output tokens spread over the chunks (the shares sum to ``total``)."""
    if total is None:
        return None
    out = total["output_tokens"]
    share = out // count + (1 if index < out % count else 0)
    prompt = total["input_tokens"] if index == 0 else 0
    usage = UsageMetadata(input_tokens=prompt, output_tokens=share, total_tokens=prompt + share)
    if index == 0:
        usage["input_token_details"] = total.get("input_token_details") or {}
    details = total.get("output_token_details")
    if details and index == count - 1:
        usage["output_token_details"] = details
    return usage


@functools.cache
def _fields_of(model_type: type) -> frozenset[str]:
    return field_names(model_type)


_BAD_OUTPUT = frozenset({"malformed_json", "schema_violation"})
_ANSWERED = frozenset({"blocked", "empty"}) | _BAD_OUTPUT


def _bad_output(kind: str, schema: Mapping[str, Any] | None, prompt: str) -> str:
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    if kind == "malformed_json" or schema is None:
        return '{"answer": "cut off mid-wa'
    return orjson.dumps(violation_of(schema, digest)).decode()


def _waits(item: ScriptItem) -> bool:
    """Whether an attempt takes the model's latency: answers (blocked ones too), timeouts and
    mid-stream failures do; rejections (429, 503, 400, overflow) come back at once."""
    kind = item.kind if isinstance(item, FakeFailure) else item
    if isinstance(item, FakeFailure) and item.after_chunks:
        return True
    return kind in ("ok", "timeout") or kind in _ANSWERED


def _split(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words) if w or i == 0]


def _prompt_text(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(m.text if isinstance(m.text, str) else str(m.content) for m in messages)


def _error(failure: FakeFailure, model: str) -> Exception:
    """The exception ``langchain-google-genai`` raises for the same HTTP answer."""
    from google.genai.errors import ClientError
    from langchain_google_genai.chat_models import (
        GoogleAPIError,
        GoogleContextOverflowError,
        GoogleInvalidRequestError,
        GoogleRateLimitError,
    )

    if failure.kind == "timeout":
        import httpx

        return httpx.ReadTimeout("fake read timeout")
    if failure.kind == "server_error":
        body = _body(503, "The model is overloaded.", "UNAVAILABLE")
        return GoogleAPIError(code=503, response_json=body)
    if failure.kind == "context_overflow":
        message = "The input token count exceeds the maximum number of tokens allowed (1048576)."
        body = _body(400, message, "INVALID_ARGUMENT")
        return GoogleContextOverflowError(code=400, response_json=body)
    if failure.kind == "rate_limit":
        error: dict[str, Any] = {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
        }
        if failure.retry_delay is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{failure.retry_delay:g}s",
                }
            ]
        cause = ClientError(429, {"error": error})
        exc: Exception = GoogleRateLimitError(
            f"Error calling model '{model}' (RESOURCE_EXHAUSTED): {cause}"
        )
    else:
        cause = ClientError(400, _body(400, "Invalid argument.", "INVALID_ARGUMENT"))
        exc = GoogleInvalidRequestError(
            f"Error calling model '{model}' (INVALID_ARGUMENT): {cause}"
        )
    exc.__cause__ = cause
    return exc


def _body(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}
