"""Opt-in caching of model answers through :mod:`sight_core.cache`.

:class:`ResponseCache` is given to ``build_chat_model(..., response_cache=...)``. The key is a
digest of what decides the answer: the model, its sampling parameters, the normalised messages
and the request's tools/schema/stop words; not timeouts, retries or callbacks. Entries live in
a versioned namespace (``{prefix}:v{version}:llm:{digest}``), identical concurrent requests
reach the model once (the cache's single-flight and cross-process stampede lock), and an
empty or blocked answer is never stored (it raises before anything is written), nor is an
answer a fallback model gave (it is not the requested model's). A hit is recorded as served,
not billed.

:class:`SightLLMCache` is a LangChain ``BaseCache`` over the same backend for code that uses
``set_llm_cache(...)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, ChatResult, Generation

from sight_core.errors import ConfigurationError

if TYPE_CHECKING:
    from sight_core.cache import Cache

__all__ = ["ResponseCache", "SightLLMCache", "request_digest"]

_FORMAT = "llm-response-1"
_SKIP_KWARGS = frozenset(
    {"response_cache", "timeout", "max_retries", "http_options", "labels", "callbacks", "run_id"}
)


def _normalise(message: BaseMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, str):
        content = "\n".join(line.rstrip() for line in content.strip().splitlines())
    entry: dict[str, Any] = {"type": message.type, "content": content}
    if message.name:
        entry["name"] = message.name
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        entry["tool_calls"] = [{"name": c["name"], "args": c["args"]} for c in tool_calls]
    tool_call_id = getattr(message, "tool_call_id", None)
    if tool_call_id:
        entry["tool_call_id"] = tool_call_id
    return entry


def request_digest(
    model: str,
    params: Mapping[str, Any],
    messages: Sequence[BaseMessage],
    stop: Sequence[str] | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> str:
    """SHA-256 of everything that decides an answer (see the module doc); 64 hex chars."""
    payload = {
        "f": _FORMAT,
        "model": model,
        "params": {k: v for k, v in params.items() if v is not None},
        "messages": [_normalise(m) for m in messages],
        "stop": list(stop) if stop else None,
        "kwargs": {k: v for k, v in (kwargs or {}).items() if k not in _SKIP_KWARGS},
    }
    raw = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
    return hashlib.sha256(raw).hexdigest()


def _plain(value: Any) -> Any:
    """JSON-safe copy (enums and other objects become strings)."""
    return orjson.loads(orjson.dumps(value, default=str))


def _dump(result: ChatResult) -> dict[str, Any]:
    generation = result.generations[0]
    return {
        "message": _plain(message_to_dict(generation.message)),
        "info": _plain(generation.generation_info or {}),
    }


def _load(data: Mapping[str, Any]) -> ChatResult:
    [message] = messages_from_dict([data["message"]])
    return ChatResult(
        generations=[ChatGeneration(message=message, generation_info=data.get("info") or None)]
    )


def _storable(data: Mapping[str, Any]) -> bool:
    return bool(data) and data.get("store", True) is not False


class _Flag:
    __slots__ = ("computed",)

    def __init__(self) -> None:
        self.computed = False


class ResponseCache:
    """Cache model answers in ``cache`` (a bound :class:`~sight_core.cache.Cache`).

    Args:
        cache: the cache to store into (Redis in services, ``MemoryBackend`` in tests).
        ttl: seconds an answer stays fresh.
        namespace: key namespace (``llm``).
        version: bump it to drop every cached answer at once (e.g. after a prompt change).

    Per call, ``await llm.ainvoke(..., response_cache=False)`` bypasses it. Costs one cache
    read per call; a miss also writes once. Backend errors are misses (fail open).
    """

    def __init__(
        self, cache: Cache, *, ttl: float = 3600.0, namespace: str = "llm", version: int = 1
    ) -> None:
        self.cache = cache
        self.ttl = ttl
        self.namespace = namespace
        self.version = version

        async def answer(
            digest: str, compute: Callable[[], Awaitable[dict[str, Any]]]
        ) -> dict[str, Any]:
            return await compute()

        self._cached = cache.cached(
            namespace=namespace, version=version, ttl=ttl, key="{digest}", condition=_storable
        )(answer)

    def key(self, digest: str) -> str:
        """The full cache key of a request digest."""
        return self._cached.key(digest=digest, compute=None)

    async def get_or_generate(
        self,
        model: str,
        params: Mapping[str, Any],
        messages: Sequence[BaseMessage],
        stop: Sequence[str] | None,
        kwargs: Mapping[str, Any],
        generate: Callable[[], Awaitable[ChatResult]],
        *,
        storable: Callable[[ChatResult], bool] | None = None,
    ) -> tuple[ChatResult, bool]:
        """``(result, hit)``: the cached answer for this request, or ``generate()``'s.

        The request is ``model`` (its normalised name), ``params`` (what on the model can
        change an answer: ``ResilientChatModel.answer_params()``), ``messages``, ``stop`` and
        the call's ``kwargs`` (see :func:`request_digest`).

        Identical concurrent requests share one ``generate()`` (single flight, across processes
        through the cache's lock). Its result is stored unless ``storable(result)`` is false
        (e.g. a fallback model answered): it is then handed to the waiters but not kept.
        ``generate()`` raising (a blocked or empty answer) stores nothing.
        """
        digest = request_digest(model, params, messages, stop, kwargs)
        flag = _Flag()
        produced: list[ChatResult] = []

        async def compute() -> dict[str, Any]:
            flag.computed = True
            result = await generate()
            produced.append(result)
            data = _dump(result)
            if storable is not None and not storable(result):
                data["store"] = False
            return data

        data = await self._cached(digest, compute)
        if produced:
            return produced[0], False
        return _load(data), not flag.computed


class SightLLMCache(BaseCache):
    """A LangChain ``BaseCache`` on a sight-core :class:`~sight_core.cache.Cache` backend.

    ``set_llm_cache(SightLLMCache(cache))`` makes every LangChain model consult it on
    ``ainvoke``. Async only: the sync ``lookup``/``update`` are misses/no-ops, because a sync
    call would block the event loop on Redis. Backend errors are misses (fail open).
    """

    def __init__(
        self, cache: Cache, *, ttl: float = 3600.0, namespace: str = "llm-lc", version: int = 1
    ) -> None:
        if not namespace.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"SightLLMCache namespace {namespace!r}: use [A-Za-z0-9_-]")
        self.cache = cache
        self.ttl = ttl
        self._base = f"{cache.prefix}:v{version}:{namespace}:"
        self.hits = 0
        self.misses = 0

    def _key(self, prompt: str, llm_string: str) -> str:
        raw = orjson.dumps([_FORMAT, llm_string, prompt])
        return self._base + hashlib.sha256(raw).hexdigest()

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Sync lookups are always misses (see the class doc)."""
        return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Sync updates are ignored (see the class doc)."""

    def clear(self, **kwargs: Any) -> None:
        """Bump ``version`` instead: entries of other versions are never read."""

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The stored generations, or ``None`` (absent, unreadable, or the backend failed or
        passed ``cache.op_timeout``); counted in ``hits``/``misses``. One ``GET``."""
        try:
            async with asyncio.timeout(self.cache.op_timeout):
                raw = await self.cache.backend.get(self._key(prompt, llm_string))
        except Exception:
            raw = None
        if raw is None:
            self.misses += 1
            return None
        try:
            entries = orjson.loads(raw)
            generations: list[Generation] = []
            for entry in entries:
                if "message" in entry:
                    [message] = messages_from_dict([entry["message"]])
                    generations.append(ChatGeneration(message=message))
                else:
                    generations.append(Generation(text=entry["text"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return generations

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store ``return_val`` for ``ttl`` seconds, unless any generation is empty (no text,
        no tool call); backend errors are ignored. One write."""
        entries: list[dict[str, Any]] = []
        for generation in return_val:
            if isinstance(generation, ChatGeneration):
                if not generation.message.text.strip() and not getattr(
                    generation.message, "tool_calls", None
                ):
                    return  # never store an empty or blocked answer
                entries.append({"message": _plain(message_to_dict(generation.message))})
            else:
                if not generation.text.strip():
                    return
                entries.append({"text": generation.text})
        if not entries:
            return
        from sight_core.cache import Write

        write = Write(self._key(prompt, llm_string), orjson.dumps(entries), int(self.ttl * 1000))
        try:
            async with asyncio.timeout(self.cache.op_timeout):
                await self.cache.backend.write([write], int(time.time() * 1000))
        except Exception:
            return

    async def aclear(self, **kwargs: Any) -> None:
        """See :meth:`clear`."""
