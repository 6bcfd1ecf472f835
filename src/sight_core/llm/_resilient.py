"""The resilient chat model: a LangChain ``BaseChatModel`` that wraps a provider's model.

Every call goes through, in order:

1. the usage scope's budget check (:class:`~sight_core.errors.BudgetExceededError`, no
   request made);
2. the opt-in response cache (hits cost nothing and are recorded as served, not billed);
3. the retry policy, around
4. the circuit breaker (an open circuit refuses in well under a millisecond, no request), around
5. the model's shared concurrency :class:`~sight_core.concurrency.Limiter` (held only while a
   request runs, never during a backoff) and the per-attempt timeout, around the provider's
   ``_agenerate``; an empty or safety-blocked answer raises
   :class:`~sight_core.errors.ContentBlockedError` there and is never returned as text;
6. on an exhausted transient error, an open circuit (or a cooldown) or a context overflow,
   the fallback model (``pro`` → ``flash``), with its own breaker and limiter; never on other
   permanent errors, and on an overflow only to a model with a larger context window (see
   :mod:`._models`). One deadline covers the whole call: the fallback gets what is left of the
   first model's ``deadline``, never a fresh one.

When a server refuses for longer than ``max_server_wait`` (or names a per-day quota), the
model's breaker holds its circuit open for that time (a cooldown, shared through the breaker's
store): calls go straight to the fallback, or, without one, fail at once with
:class:`~sight_core.errors.RateLimitedError`.

One :class:`~sight_core.llm.UsageRecord` is written per logical call, priced as the model
that served it (or naming the model that failed last), with the failed attempts counted.
Streams retry only before the first chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Literal, cast

import orjson
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, SkipValidation

from sight_core.concurrency import Limiter
from sight_core.errors import (
    CircuitOpenError,
    ConfigurationError,
    ContentBlockedError,
    ContextOverflowError,
    DeadlineExceededError,
    MalformedAnswerError,
    RateLimitedError,
    RetryExhaustedError,
)
from sight_core.resilience import CircuitBreaker, RetryPolicy, circuit_of, classify
from sight_core.settings import ModelPrice

from . import _metrics
from ._limit import SharedLimiter
from ._models import overflow_target
from ._quota import QuotaGovernor, QuotaLease, close_failed_call, reserve_call, settle_call
from ._response_cache import ResponseCache
from ._sync import in_sync_call, iterate_sync, run_sync, to_thread, to_thread_holding
from ._usage import (
    Outcome,
    UsageRecord,
    active_labels,
    check_budget,
    cost_of,
    deliver_usage,
    emit_usage,
    normalize_model_name,
    note_unpriced,
    price_for,
    restored_scopes,
    scopes_snapshot,
    tokens_of,
    usage_wanted,
)

__all__ = ["BLOCK_REASONS", "MALFORMED_REASONS", "ResilientChatModel", "check_content"]

BLOCK_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
"""``finish_reason`` values that mean the answer was withheld (Gemini's names)."""
MALFORMED_REASONS = frozenset({"MALFORMED_FUNCTION_CALL"})
"""``finish_reason`` values of a malformed answer: a transient model error, retried."""
_NO_BLOCK = frozenset({"BLOCKED_REASON_UNSPECIFIED", "0"})

_OPERATIONAL = frozenset(
    {
        # how the request is sent, not what it asks for (langchain-google-genai's names)
        "timeout",
        "request_timeout",
        "max_retries",
        "retries",
        "base_url",
        "client_options",
        "client",
        "client_args",
        "transport",
        "additional_headers",
        "default_metadata",
        "google_api_key",
        "api_key",
        "credentials",
        "project",
        "location",
        "vertexai",
        "api_version",
        "labels",
        "streaming",
    }
)
"""Provider fields that never change an answer: left out of the response-cache key. A provider
model adds its own through a class attribute ``operational_fields`` (the fake's latency and
failure scripting)."""
_BASE_FIELDS = frozenset(BaseChatModel.model_fields)


@functools.cache
def _operational_of(provider: type) -> frozenset[str]:
    """:data:`_OPERATIONAL` plus every ``operational_fields`` declared along ``provider``'s MRO
    (a subclass adds to its parents' fields, it does not hide them)."""
    declared = (vars(cls).get("operational_fields") or () for cls in provider.__mro__)
    return _OPERATIONAL.union(*declared)


def _refuse_sdk_retries(kwargs: Mapping[str, Any], model: str) -> None:
    """Raise if call-time ``kwargs`` would turn the SDK's own retries back on.

    langchain-google-genai reads ``max_retries`` and ``http_options.retry_options`` per call,
    so ``ainvoke(..., max_retries=6)`` or ``bind(max_retries=6)`` would multiply our attempts.
    """
    http = kwargs.get("http_options")
    retry = (
        http.get("retry_options")
        if isinstance(http, Mapping)
        else getattr(http, "retry_options", None)
    )
    if retry is not None or "max_retries" in kwargs or "retries" in kwargs:
        raise ConfigurationError(
            f"{model}: SDK retries cannot be set per call (max_retries, retries, "
            "http_options.retry_options); the SDK makes a single attempt and sight-core's policy "
            "retries (SIGHT_LLM__MAX_ATTEMPTS)"
        )


def _finish_reason(message: BaseMessage, info: Mapping[str, Any] | None) -> str | None:
    reason = message.response_metadata.get("finish_reason")
    if reason is None and info:
        reason = info.get("finish_reason")
    if reason is None or type(reason) is str:
        return reason
    return str(getattr(reason, "name", reason))  # the SDK's FinishReason enum


def _block_reason(feedback: Any) -> str | None:
    if not feedback or not isinstance(feedback, Mapping):  # ``not``: no ABC check when absent
        return None
    reason = feedback.get("block_reason")
    if not reason:
        return None
    name = str(getattr(reason, "name", reason))
    return None if name in _NO_BLOCK else name


def check_content(
    message: BaseMessage,
    *,
    info: Mapping[str, Any] | None = None,
    llm_output: Mapping[str, Any] | None = None,
    model: str = "model",
) -> None:
    """Raise :class:`ContentBlockedError` if ``message`` is blocked or empty, or
    :class:`MalformedAnswerError` if the model produced a malformed function call.

    Blocked: the prompt was refused (``prompt_feedback.block_reason``) or the answer stopped
    for a safety-like reason (:data:`BLOCK_REASONS`). Empty: no text and no tool call (for
    example every output token went to thinking). Malformed: ``MALFORMED_FUNCTION_CALL``, a
    transient model error (retried, then the fallback). The message names the reason only.
    """
    feedback = message.response_metadata.get("prompt_feedback") or (
        (llm_output or {}).get("prompt_feedback")
    )
    blocked = _block_reason(feedback)
    if blocked is not None:
        raise ContentBlockedError(f"{model}: prompt blocked ({blocked})")
    reason = _finish_reason(message, info)
    if reason in BLOCK_REASONS:
        raise ContentBlockedError(f"{model}: answer blocked (finish_reason={reason})")
    if reason in MALFORMED_REASONS:
        raise MalformedAnswerError(f"{model}: malformed answer (finish_reason={reason})")
    content = message.content
    if isinstance(content, str) and content and not content.isspace():
        return
    if isinstance(message, AIMessage) and message.tool_calls:
        return
    if not message.text.strip():
        raise ContentBlockedError(f"{model}: empty answer (finish_reason={reason or 'none'})")


def _stream_blocked(
    last: ChatGenerationChunk | None, produced: bool, model: str
) -> ContentBlockedError | MalformedAnswerError | None:
    """Why a finished stream is not an answer, from its final chunk: the prompt was refused, it
    stopped for a safety-like reason (even after some text), or it produced nothing."""
    if last is not None:
        blocked = _block_reason(last.message.response_metadata.get("prompt_feedback"))
        if blocked is not None:
            return ContentBlockedError(f"{model}: prompt blocked ({blocked})")
    reason = _finish_reason(last.message, last.generation_info) if last is not None else None
    if reason in BLOCK_REASONS:
        return ContentBlockedError(f"{model}: answer blocked mid-stream (finish_reason={reason})")
    if reason in MALFORMED_REASONS:
        return MalformedAnswerError(f"{model}: malformed answer (finish_reason={reason})")
    if not produced:
        return ContentBlockedError(f"{model}: empty stream (finish_reason={reason or 'none'})")
    return None


def falls_back(exc: BaseException) -> bool:
    """Whether ``exc`` (as raised by a retry policy) sends the call to the fallback model:
    exhausted transient errors, a deadline, an open circuit, or a context overflow."""
    if isinstance(exc, CircuitOpenError | RetryExhaustedError | DeadlineExceededError):
        return True
    if isinstance(exc, ContextOverflowError):
        return True
    return classify(exc).kind in ("transient", "context_overflow")


class _Attempts:
    """Attempts of one logical call, across the primary and its fallbacks."""

    __slots__ = (
        "failed",
        "hops",
        "last",
        "lease",
        "opened",
        "producer",
        "total",
        "until",
        "usage",
    )

    def __init__(self, deadline: float | None = None) -> None:
        self.total = 0
        self.failed = 0
        self.usage: UsageMetadata | None = None  # tokens billed by a blocked/broken answer
        self.producer: ResilientChatModel | None = None  # the model that billed ``usage``
        self.last: ResilientChatModel | None = None  # the model of the latest attempt
        self.hops = 0  # fallbacks taken
        self.lease: QuotaLease | None = None  # the quota of the stream being read
        # a stream opened (its limiter slot held) but not yet handed to the caller
        self.opened: (
            tuple[AsyncGenerator[ChatGenerationChunk], Limiter, ChatGenerationChunk] | None
        ) = None
        # the one deadline of the whole call, fallbacks included (monotonic seconds)
        self.until = None if deadline is None else time.monotonic() + deadline


class ResilientChatModel(BaseChatModel):
    """A provider chat model with retries, a breaker, a concurrency cap, fallback and usage.

    Build it with :func:`~sight_core.llm.build_chat_model`; the constructor is for tests and
    custom wiring. It is a regular LangChain chat model: ``ainvoke``, ``abatch`` (each item
    takes the shared limiter, so the cap holds), ``astream``, ``bind_tools``,
    ``with_structured_output`` and ``prompt | llm | parser`` all work.

    Per-call keyword: ``response_cache=False`` bypasses (``True`` requires) the response cache.
    Call-time or bound SDK retry options (``max_retries``, ``http_options.retry_options``) raise
    :class:`ConfigurationError` before any request: the SDK makes a single attempt.

    Raises (from calls): the provider's permanent errors unchanged (a 400 is never retried);
    :class:`ContentBlockedError`; :class:`ContextOverflowError` (no fallback left);
    :class:`CircuitOpenError` (open circuit, no fallback); :class:`DeadlineExceededError`;
    the last transient error once attempts run out (see :class:`RetryPolicy`);
    :class:`BudgetExceededError`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    primary: BaseChatModel
    model_name: str
    provider: str = "custom"
    attempt_timeout: float | None = None

    limiter: SkipValidation[Limiter] = Field(exclude=True, repr=False)
    """The concurrency cap shared by every wrapper of this model in the process."""
    policy: SkipValidation[RetryPolicy] = Field(exclude=True, repr=False)
    breaker: SkipValidation[CircuitBreaker] = Field(exclude=True, repr=False)
    fallback: SkipValidation[ResilientChatModel | None] = Field(
        default=None, exclude=True, repr=False
    )
    """The model used when this one is exhausted, open or too small (``pro`` → ``flash``)."""
    response_cache: SkipValidation[ResponseCache | None] = Field(
        default=None, exclude=True, repr=False
    )
    prices: SkipValidation[Mapping[str, ModelPrice]] = Field(
        default_factory=dict, exclude=True, repr=False
    )
    price: SkipValidation[ModelPrice | None] = Field(default=None, exclude=True, repr=False)
    """This model's entry of ``prices`` (``None``: unpriced, recorded with ``priced=False``)."""
    quota: SkipValidation[QuotaGovernor | None] = Field(default=None, exclude=True, repr=False)
    """The model's shared quota: every attempt reserves one request and its tokens first."""
    quota_chars_per_token: float = 4.0

    def __init__(
        self,
        primary: BaseChatModel,
        *,
        model_name: str | None = None,
        provider: str = "custom",
        limiter: Limiter | None = None,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        attempt_timeout: float | None = None,
        fallback: ResilientChatModel | None = None,
        response_cache: ResponseCache | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        quota: QuotaGovernor | None = None,
        **kwargs: Any,
    ) -> None:
        name = normalize_model_name(
            model_name
            or str(getattr(primary, "model_name", None) or getattr(primary, "model", "model"))
        )
        table = prices if prices is not None else {}
        super().__init__(
            primary=primary,
            model_name=name,
            provider=provider,
            attempt_timeout=attempt_timeout,
            limiter=limiter if limiter is not None else SharedLimiter(f"llm:{name}", 16),
            policy=policy if policy is not None else RetryPolicy(name=f"llm:{name}"),
            breaker=breaker if breaker is not None else CircuitBreaker(f"llm:{name}"),
            fallback=fallback,
            response_cache=response_cache,
            prices=table,
            price=price_for(name, table),
            quota=quota,
            **kwargs,
        )

    async def aclose(self) -> None:
        """Close the provider's HTTP clients (this model's and its fallback's).

        Call it on the event loop that used the model, before that loop ends (application
        shutdown); :func:`~sight_core.llm.aclose_models` does it for every built model.
        """
        close = getattr(self.primary, "aclose", None)
        if close is not None:
            await close()
        if self.fallback is not None:
            await self.fallback.aclose()

    @property
    def _llm_type(self) -> str:
        return f"sight-resilient:{self.primary._llm_type}"

    @property
    def _operational(self) -> frozenset[str]:
        """:data:`_OPERATIONAL` plus the provider's own ``operational_fields``."""
        return _operational_of(type(self.primary))

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Model and sampling parameters only: timeouts and retries don't change answers.
        (LangChain reads it on every call: the common case, a provider that names no
        operational field there, is one copy.)"""
        provided = self.primary._identifying_params
        operational = _operational_of(type(self.primary))
        if operational.isdisjoint(provided):
            params = dict(provided)
        else:
            params = {k: v for k, v in provided.items() if k not in operational}
        params["model"] = self.model_name
        return params

    def answer_params(self) -> dict[str, Any]:
        """Everything on the provider model that can change an answer (the response-cache key).

        The provider's ``_identifying_params`` plus every other field of its own that is not
        operational (:data:`_OPERATIONAL` and the provider's ``operational_fields``):
        ``ChatGoogleGenerativeAI._identifying_params`` leaves out ``seed``, ``stop``,
        ``response_mime_type``, ``response_schema``, ``cached_content`` and ``model_kwargs``,
        which all change what Gemini answers.
        """
        primary = self.primary
        operational = self._operational
        params = {k: v for k, v in primary._identifying_params.items() if k not in operational}
        for name in type(primary).model_fields:
            if name not in _BASE_FIELDS and name not in operational and name not in params:
                params[name] = getattr(primary, name)
        params["model"] = self.model_name
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """The provider's own tracing parameters (provider name, model, temperature)."""
        return self.primary._get_ls_params(stop=stop, **kwargs)

    # ---------------------------------------------------------------- LangChain API

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools formatted by the provider's own ``bind_tools``, bound to this wrapper.

        The fallback is built from the same provider, so the formatted tools suit it too.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        binding = self.primary.bind_tools(tools, **kwargs)
        if not isinstance(binding, RunnableBinding):  # pragma: no cover - providers bind
            raise ConfigurationError(
                f"{type(self.primary).__name__}.bind_tools did not return a binding"
            )
        return self.bind(**binding.kwargs)

    def with_structured_output(
        self,
        schema: Any,
        *,
        method: Literal["json_schema", "json_mode", "function_calling", "auto", "json"]
        | None = None,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Validated objects of ``schema``: native JSON mode where the provider has it, else
        extraction + validation + one repair (see :func:`~sight_core.llm.structured_output`).
        ``method="function_calling"`` uses LangChain's tool-calling implementation instead."""
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        from ._structured import structured_output

        return structured_output(
            self,
            schema,
            method="json" if method == "json" else "auto",
            include_raw=include_raw,
            repair=bool(kwargs.pop("repair", True)),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Sync calls run the async path on the process's sync loop (see ``_sync``): same
        policy, breaker, shared cap, fallback and usage; the request uses the SDK's sync client.

        Raises :class:`ConfigurationError` inside a running event loop (use ``ainvoke``)."""
        return run_sync("invoke", lambda: self._agenerate(messages, stop, None, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if kwargs:
            _refuse_sdk_retries(kwargs, self.model_name)
        use_cache = kwargs.pop("response_cache", None)
        check_budget()
        cache = self.response_cache if use_cache is not False else None
        if use_cache is True and cache is None:
            raise ConfigurationError(
                f"response_cache=True but model {self.model_name!r} has no response cache; "
                "pass build_chat_model(..., response_cache=ResponseCache(cache))"
            )
        if cache is None:
            return (await self._accounted(messages, stop, kwargs))[0]
        started = time.perf_counter()
        served: list[ResilientChatModel] = []

        async def generate() -> ChatResult:
            result, by = await self._accounted(messages, stop, kwargs)
            served.append(by)
            return result

        # a fallback's answer is not this model's: shared with identical waiters, not stored
        result, hit = await cache.get_or_generate(
            self.model_name,
            self.answer_params(),
            messages,
            stop,
            kwargs,
            generate,
            storable=lambda _: served[-1] is self,
        )
        if hit:
            await self._record_hit(result, time.perf_counter() - started)
        return result

    async def _accounted(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[ChatResult, ResilientChatModel]:
        """:meth:`_run` with its usage record; returns the result and the model that served it."""
        attempts = _Attempts(self.policy.deadline)
        started = time.perf_counter()
        try:
            try:  # :meth:`_run`'s first step, inline: no extra coroutine on the common path
                result: ChatResult = await self.policy.call(
                    self.breaker.call,
                    self._attempt if self.quota is None else self._quota_attempt,
                    messages,
                    stop,
                    kwargs,
                    attempts,
                )
                served = self
            except Exception as exc:
                fallback = self._fallback_after(exc, attempts)
                result, served = await fallback._run(messages, stop, kwargs, attempts)
        except Exception as exc:
            await self._record_error(exc, attempts, time.perf_counter() - started)
            raise
        pending = self._record(
            served,
            getattr(result.generations[0].message, "usage_metadata", None),
            attempts,
            time.perf_counter() - started,
        )
        if pending is not None:
            await pending
        return result, served

    async def _run(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        attempts: _Attempts,
    ) -> tuple[ChatResult, ResilientChatModel]:
        """Policy → breaker → attempt on this model, then down its fallback chain.

        Returns the result and the model that served it; raises what :meth:`_fallback_after`
        lets through once no fallback is left or allowed.
        """
        try:
            result: ChatResult = await self._policy_within(attempts).call(
                self.breaker.call,
                self._attempt if self.quota is None else self._quota_attempt,
                messages,
                stop,
                kwargs,
                attempts,
            )
        except Exception as exc:
            return await self._fallback_after(exc, attempts)._run(messages, stop, kwargs, attempts)
        return result, self

    def _policy_within(self, attempts: _Attempts) -> RetryPolicy:
        """This model's policy, its deadline cut to what is left of the call's one deadline
        (a fallback never gets a fresh deadline)."""
        policy = self.policy
        if attempts.until is None or not attempts.hops:
            return policy  # the first model: its own deadline is the call's
        left = attempts.until - time.monotonic()
        if policy.deadline is not None and policy.deadline <= left:
            return policy
        return policy.with_options(deadline=max(left, 1e-3))

    def _fallback_after(self, exc: Exception, attempts: _Attempts) -> ResilientChatModel:
        """The model to try after ``exc`` (counted in ``sight_llm_fallbacks_total``), or raise
        what the caller should see: ``exc`` itself (with the circuit state attached when the
        circuit opened), :class:`RateLimitedError` when the model is cooling down,
        :class:`ContextOverflowError` when no model with a larger window is left, or
        :class:`DeadlineExceededError` when the call's deadline has passed."""
        kind = classify(exc).kind
        fallback = self.fallback
        if kind == "context_overflow" or isinstance(exc, ContextOverflowError):
            fallback = self._larger_window()
            if fallback is None:
                if isinstance(exc, ContextOverflowError):
                    raise exc
                raise ContextOverflowError(
                    f"{self.model_name}: the prompt does not fit the model"
                    + (" (no fallback has a larger context window)" if self.fallback else "")
                ) from exc
        if fallback is None or not falls_back(exc):
            circuit = circuit_of(exc)
            if circuit is not None and circuit.cooldown and not isinstance(exc, RateLimitedError):
                raise RateLimitedError(circuit.name, circuit.retry_after) from exc
            raise exc
        if attempts.until is not None and time.monotonic() >= attempts.until:
            if isinstance(exc, DeadlineExceededError):
                raise exc
            raise DeadlineExceededError(
                f"{self.model_name}: the call's {self.policy.deadline}s deadline passed before "
                f"the fallback to {fallback.model_name}"
            ) from exc
        _metrics.increment(
            "sight_llm_fallbacks_total",
            1,
            model=self.model_name,
            fallback=fallback.model_name,
            reason=classify(exc).reason,
        )
        attempts.hops += 1
        return fallback

    def _larger_window(self) -> ResilientChatModel | None:
        """The first model down the fallback chain with a larger context window than this one."""
        chain: list[ResilientChatModel] = []
        model = self.fallback
        while model is not None and len(chain) < 8:
            chain.append(model)
            model = model.fallback
        index = overflow_target(self.model_name, [m.model_name for m in chain])
        return None if index is None else chain[index]

    def _provider_generate(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, ChatResult]:
        """One request to the provider's async client (to await). A sync call uses its sync
        client in a worker thread instead (the async client belongs to the application's
        loop), through :func:`to_thread_holding` in :meth:`_attempt`."""
        return self.primary._agenerate(messages, stop, None, **kwargs)

    def _provider_stream(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AsyncGenerator[ChatGenerationChunk]:
        """The provider's stream: in a sync call, its sync stream in worker threads."""
        if in_sync_call():
            return _threaded_stream(self.primary, messages, stop, kwargs)
        return cast(
            "AsyncGenerator[ChatGenerationChunk]",
            self.primary._astream(messages, stop, None, **kwargs),
        )

    async def _attempt(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        attempts: _Attempts,
    ) -> ChatResult:
        attempts.total += 1
        attempts.last = self
        try:
            limiter = self.limiter
            await limiter.acquire()
            if in_sync_call():  # the SDK's sync client in a thread: it holds the slot until done
                request = to_thread_holding(
                    limiter.release, self.primary._generate, messages, stop, None, **kwargs
                )
                if self.attempt_timeout is None:
                    result = await request
                else:
                    async with asyncio.timeout(self.attempt_timeout):
                        result = await request
            else:
                try:
                    if self.attempt_timeout is None:
                        result = await self._provider_generate(messages, stop, kwargs)
                    else:
                        async with asyncio.timeout(self.attempt_timeout):
                            result = await self._provider_generate(messages, stop, kwargs)
                finally:
                    limiter.release()
            generation = result.generations[0] if result.generations else None
            if generation is None:
                raise ContentBlockedError(f"{self.model_name}: no candidates in the answer")
            try:
                check_content(
                    generation.message,
                    info=generation.generation_info,
                    llm_output=result.llm_output,
                    model=self.model_name,
                )
            except (ContentBlockedError, MalformedAnswerError):
                attempts.usage = getattr(generation.message, "usage_metadata", None)
                attempts.producer = self
                raise
        except BaseException:
            attempts.failed += 1
            raise
        return result

    async def _quota_attempt(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        attempts: _Attempts,
    ) -> ChatResult:
        """:meth:`_attempt` inside the model's quota: reserve (maybe wait), call, settle."""
        quota = cast("QuotaGovernor", self.quota)
        lease = await reserve_call(
            quota, messages, self._output_bound(kwargs), self.quota_chars_per_token, attempts.until
        )
        before = attempts.usage
        try:
            result = await self._attempt(messages, stop, kwargs, attempts)
        except BaseException as exc:
            billed = attempts.usage if attempts.usage is not before else None
            await close_failed_call(quota, lease, exc, billed)
            raise
        await settle_call(lease, getattr(result.generations[0].message, "usage_metadata", None))
        return result

    def _output_bound(self, kwargs: Mapping[str, Any]) -> int:
        """The most output tokens a request may bill: ``max_output_tokens`` (call or model)."""
        bound = kwargs.get("max_output_tokens", getattr(self.primary, "max_output_tokens", None))
        return int(bound) if isinstance(bound, int) else 0

    # ---------------------------------------------------------------- streaming

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Sync streaming: :meth:`_astream` on the sync loop, chunk by chunk (see
        :meth:`_generate`); leaving the loop early records the tokens seen, as incomplete."""
        chunks = iterate_sync("stream", lambda: self._astream(messages, stop, None, **kwargs))
        for chunk in chunks:
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if kwargs:
            _refuse_sdk_retries(kwargs, self.model_name)
        kwargs.pop("response_cache", None)  # streams are not cached
        check_budget()
        attempts = _Attempts(self.policy.deadline)
        started = time.perf_counter()
        try:
            served, first, stream = await self._open_stream(messages, stop, kwargs, attempts)
        except Exception as exc:
            await self._record_error(exc, attempts, time.perf_counter() - started)
            raise
        except BaseException as exc:  # cancelled before the first chunk: nothing seen yet
            await self._record_error(
                exc, attempts, time.perf_counter() - started, outcome="incomplete"
            )
            raise
        scopes = scopes_snapshot()
        usage: UsageMetadata | None = None
        text_seen = False
        tools_seen = False
        last: ChatGenerationChunk | None = None
        try:
            chunk: ChatGenerationChunk | None = first
            while chunk is not None:
                message = chunk.message
                usage = add_usage(usage, getattr(message, "usage_metadata", None))
                text_seen = text_seen or bool(message.text.strip())
                tools_seen = tools_seen or bool(getattr(message, "tool_call_chunks", None))
                last = chunk
                if run_manager is not None:
                    await run_manager.on_llm_new_token(message.text, chunk=chunk)
                yield chunk
                chunk = await anext(stream, None)
        except Exception as exc:
            attempts.failed += 1
            attempts.usage, attempts.producer = usage, served  # tokens streamed before the error
            await self._record_error(exc, attempts, time.perf_counter() - started)
            raise
        except BaseException as exc:  # the consumer left (GeneratorExit) or was cancelled
            attempts.usage, attempts.producer = usage, served  # billed whether read or not
            # an abandoned stream is closed by the loop's finalizer in the context of whoever
            # triggered garbage collection: charge the scopes the stream started in
            with restored_scopes(scopes):
                await self._record_error(
                    exc, attempts, time.perf_counter() - started, outcome="incomplete"
                )
            raise
        finally:
            try:
                await stream.aclose()
            finally:
                served.limiter.release()
                if attempts.lease is not None and served.quota is not None:
                    await served.quota.finish_stream(attempts.lease, usage)
        blocked = _stream_blocked(last, text_seen or tools_seen, served.model_name)
        if blocked is not None:
            attempts.usage, attempts.producer = usage, served
            await self._record_error(blocked, attempts, time.perf_counter() - started)
            raise blocked
        pending = self._record(served, usage, attempts, time.perf_counter() - started)
        if pending is not None:
            await pending

    async def _open_stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        attempts: _Attempts,
    ) -> tuple[ResilientChatModel, ChatGenerationChunk, AsyncGenerator[ChatGenerationChunk]]:
        async def open_once() -> tuple[ChatGenerationChunk, AsyncGenerator[ChatGenerationChunk]]:
            try:
                opened = await self.breaker.call(
                    self._first_chunk if self.quota is None else self._quota_first_chunk,
                    messages,
                    stop,
                    kwargs,
                    attempts,
                )
            except BaseException:
                # the stream opened, then the breaker's bookkeeping (a shared store's record)
                # was cancelled or failed: close it and free its slot, nobody else will
                if attempts.opened is not None:
                    stream, limiter, first = attempts.opened
                    attempts.opened = None
                    attempts.usage = getattr(first.message, "usage_metadata", None)
                    attempts.producer = self  # its first chunk was billed
                    try:
                        await stream.aclose()
                    finally:
                        limiter.release()
                raise
            attempts.opened = None  # handed over: the caller closes it and frees the slot
            return opened

        try:
            first, stream = await self._policy_within(attempts).call(open_once)
        except Exception as exc:
            fallback = self._fallback_after(exc, attempts)
            return await fallback._open_stream(messages, stop, kwargs, attempts)
        return self, first, stream

    async def _first_chunk(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        attempts: _Attempts,
    ) -> tuple[ChatGenerationChunk, AsyncGenerator[ChatGenerationChunk]]:
        """Open the provider stream and await its first chunk; the limiter stays held."""
        attempts.total += 1
        attempts.last = self
        await self.limiter.acquire()
        stream = self._provider_stream(messages, stop, kwargs)
        try:
            if self.attempt_timeout is None:
                first = await anext(stream, None)
            else:
                async with asyncio.timeout(self.attempt_timeout):
                    first = await anext(stream, None)
            if first is None:
                raise ContentBlockedError(f"{self.model_name}: the stream ended without a chunk")
        except BaseException:
            attempts.failed += 1
            try:
                await stream.aclose()
            finally:
                self.limiter.release()
            raise
        attempts.opened = (stream, self.limiter, first)
        return first, stream

    async def _quota_first_chunk(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        attempts: _Attempts,
    ) -> tuple[ChatGenerationChunk, AsyncGenerator[ChatGenerationChunk]]:
        """:meth:`_first_chunk` inside the model's quota; the lease is settled when the stream
        closes (``attempts.lease``)."""
        quota = cast("QuotaGovernor", self.quota)
        lease = await reserve_call(
            quota, messages, self._output_bound(kwargs), self.quota_chars_per_token, attempts.until
        )
        try:
            opened = await self._first_chunk(messages, stop, kwargs, attempts)
        except BaseException as exc:
            await close_failed_call(quota, lease, exc, None)
            raise
        attempts.lease = lease
        return opened

    # ---------------------------------------------------------------- accounting

    def _usage_record(
        self,
        served: ResilientChatModel,
        usage: Mapping[str, Any] | None,
        attempts: _Attempts,
        latency: float,
        *,
        outcome: Outcome,
        error: str | None = None,
    ) -> UsageRecord:
        input_tokens, output_tokens, reasoning, cached = tokens_of(usage)
        price = served.price
        cost = cost_of(price, input_tokens, output_tokens, cached) if price is not None else 0.0
        hit = outcome == "cache_hit"
        # positional, in field order (tests/llm/test_llm_usage.py pins it): a keyword call of a
        # 19-field dataclass costs about three times as much, on every recorded call
        return UsageRecord(
            served.model_name,  # model
            self.model_name,  # requested_model
            served.provider,  # provider
            outcome,
            input_tokens,
            output_tokens,
            reasoning,  # reasoning_tokens
            cached,  # cached_tokens
            0.0 if hit else cost,  # cost_usd
            cost if hit else 0.0,  # saved_usd
            not hit,  # billed
            price is not None,  # priced
            attempts.total,  # attempts
            attempts.failed,  # failed_attempts
            served is not self,  # fallback
            error,
            latency,  # latency_s
            active_labels(),  # labels
        )

    def _record(
        self,
        served: ResilientChatModel,
        usage: Mapping[str, Any] | None,
        attempts: _Attempts,
        latency: float,
    ) -> Awaitable[None] | None:
        """Account an answered call: its latency, and its record for the scopes and sinks.
        Returns what is left to await (async sinks), or ``None``: a plain function, so the
        common case costs no coroutine."""
        _metrics.call_seconds(served.model_name, latency)
        if served.price is None:
            note_unpriced(served.model_name)
        if not usage_wanted():
            return None
        return deliver_usage(self._usage_record(served, usage, attempts, latency, outcome="ok"))

    async def _record_hit(self, result: ChatResult, latency: float) -> None:
        usage = getattr(result.generations[0].message, "usage_metadata", None)
        _metrics.increment("sight_llm_calls_total", 1, model=self.model_name, outcome="cache_hit")
        if usage_wanted():
            record = self._usage_record(self, usage, _Attempts(), latency, outcome="cache_hit")
            await emit_usage(record)

    async def _record_error(
        self,
        exc: BaseException,
        attempts: _Attempts,
        latency: float,
        *,
        outcome: Literal["error", "incomplete"] = "error",
    ) -> None:
        """Record a call that failed (``error``) or a stream left early (``incomplete``), with
        the tokens billed so far. Never raises (it runs while a cancellation is unwinding)."""
        # priced as the model that billed the tokens, else named as the one that failed last
        producer = attempts.producer or attempts.last or self
        _metrics.increment("sight_llm_calls_total", 1, model=self.model_name, outcome=outcome)
        if producer.price is None and attempts.usage:
            note_unpriced(producer.model_name)
        if usage_wanted():
            record = self._usage_record(
                producer,
                attempts.usage,
                attempts,
                latency,
                outcome=outcome,
                error=type(exc).__name__,
            )
            await emit_usage(record)


async def _threaded_stream(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    kwargs: dict[str, Any],
) -> AsyncGenerator[ChatGenerationChunk]:
    """``model``'s sync stream, each chunk read in a worker thread; a model without a sync
    stream answers in one chunk. Closing it closes the sync stream (its HTTP response)."""
    if type(model)._stream is BaseChatModel._stream:
        result = await to_thread(model._generate, messages, stop, None, **kwargs)
        generation = result.generations[0]
        yield ChatGenerationChunk(
            message=_as_chunk(generation.message), generation_info=generation.generation_info
        )
        return
    iterator = await to_thread(lambda: iter(model._stream(messages, stop, None, **kwargs)))
    end = object()
    try:
        while True:
            chunk = await to_thread(next, iterator, end)
            if chunk is end:
                return
            yield cast("ChatGenerationChunk", chunk)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # a cancelled read still runs in its thread
                await to_thread(close)


def _as_chunk(message: BaseMessage) -> Any:
    from langchain_core.messages import AIMessageChunk

    return AIMessageChunk(
        content=message.content,
        usage_metadata=getattr(message, "usage_metadata", None),
        response_metadata=dict(message.response_metadata),
        tool_call_chunks=[
            {"name": c["name"], "args": orjson.dumps(c["args"]).decode(), "id": c["id"], "index": i}
            for i, c in enumerate(getattr(message, "tool_calls", []))
        ],
    )
