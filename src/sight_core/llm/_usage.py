"""Token usage and cost of every model call, collected per scope through contextvars.

One :class:`UsageRecord` is written per logical call (after its retries and fallbacks), priced
as the model that actually served it. ``async with usage_scope(project_id=...) as usage``
collects the records of every call made inside it (including from tasks it spawns, which copy
the context) and keeps totals; scopes nest and a record goes to every enclosing scope. Sinks
(global through :func:`add_usage_sink`, or per scope) receive each record to persist it.

Where a sink runs: a sync sink is called where the call ends (for ``invoke``/``stream``/
``batch``, on sight-core's sync loop thread). An async sink belongs to the event loop it was
registered from (the loop running :func:`add_usage_sink`, or the scope's ``async with``),
where its clients (a database pool, a Redis client) live: a call on that loop awaits it; a
call that ends anywhere else (a sync call, another loop) hands it to its loop and does not wait
for it. An async sink registered outside any loop, or whose loop has closed or is not
running (it would never await a record handed to it), is awaited by the call itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from sight_core.errors import BudgetExceededError, ConfigurationError
from sight_core.settings import ModelPrice

from . import _metrics

__all__ = [
    "ModelUsage",
    "Outcome",
    "Usage",
    "UsageRecord",
    "UsageSink",
    "active_labels",
    "add_usage_sink",
    "check_budget",
    "cost_of",
    "current_usage",
    "deliver_usage",
    "is_release_of",
    "emit_usage",
    "normalize_model_name",
    "note_unpriced",
    "price_for",
    "remove_usage_sink",
    "restored_scopes",
    "scopes_snapshot",
    "tokens_of",
    "usage_scope",
    "usage_wanted",
]

_log = logging.getLogger("sight_core.llm.usage")

Outcome = Literal["ok", "error", "cache_hit", "incomplete"]
"""``incomplete``: a stream the consumer left or cancelled; its record has the tokens seen."""
UsageSink = Callable[["UsageRecord"], Awaitable[None] | None]
"""Receives each record; may be sync or async. Its errors are logged, never raised."""
_LoopRef = weakref.ref[asyncio.AbstractEventLoop]

_PATH_PREFIX = re.compile(r"^.*?models/", re.IGNORECASE)


def normalize_model_name(name: str) -> str:
    """``models/gemini-2.5-pro`` (or a Vertex resource path) → ``gemini-2.5-pro``."""
    return _PATH_PREFIX.sub("", name.strip()).lower()


_RELEASE_WORD = re.compile(r"^(preview|exp|experimental|latest|stable|\d+)$")


def is_release_of(name: str, base: str) -> bool:
    """Whether ``name`` is ``base`` itself or a release of it: ``base`` followed only by
    version words (``-preview``, ``-exp``, ``-latest``, numbers and dates such as
    ``-09-2025``, ``-001``). ``gemini-2.5-flash-image`` or ``-tts`` is another model, with its
    own price and limits, not a release of ``gemini-2.5-flash``."""
    if name == base:
        return True
    if not name.startswith(base + "-"):
        return False
    return all(_RELEASE_WORD.match(word) for word in name[len(base) + 1 :].split("-"))


def price_for(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: exact name, else the longest priced name it is a release of.

    ``gemini-2.5-flash-preview-09-2025`` is priced as ``gemini-2.5-flash``; a model with no
    entry (``gemini-2.5-flash-image``: another model, billed at other rates) returns ``None``
    (recorded with ``priced=False`` and zero cost, never another model's price).
    """
    name = normalize_model_name(model)
    price = prices.get(name)
    if price is not None:
        return price
    best: str | None = None
    for key in prices:
        if is_release_of(name, key) and (best is None or len(key) > len(best)):
            best = key
    return prices[best] if best is not None else None


_warned_unpriced: set[str] = set()


def note_unpriced(model: str) -> None:
    """Count a billed call of a model without a price (``sight_llm_unpriced_calls_total``) and
    log a warning the first time each model is seen: its cost is missing, not zero."""
    _metrics.increment("sight_llm_unpriced_calls_total", 1, model=model)
    if model in _warned_unpriced:
        return
    _warned_unpriced.add(model)
    _log.warning(
        "model %r has no price: its calls are recorded with priced=False and no cost; add it "
        "to SIGHT_LLM__PRICES (merged over the built-in table), e.g. "
        '\'{"%s": {"input": 0.30, "output": 2.50}}\' (USD per million tokens)',
        model,
        model,
    )


def tokens_of(usage_metadata: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    """``(input, output, reasoning, cached)`` from a LangChain ``AIMessage.usage_metadata``.

    ``input`` includes cached tokens and ``output`` includes reasoning tokens, as Gemini
    reports and bills them.
    """
    if not usage_metadata:
        return 0, 0, 0, 0
    in_details = usage_metadata.get("input_token_details") or {}
    out_details = usage_metadata.get("output_token_details") or {}
    return (
        int(usage_metadata.get("input_tokens") or 0),
        int(usage_metadata.get("output_tokens") or 0),
        int(out_details.get("reasoning") or 0),
        int(in_details.get("cache_read") or 0),
    )


def cost_of(
    price: ModelPrice, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> float:
    """USD for one call: uncached input + cached input (at its own rate) + output, at the
    rates of the prompt's size (:meth:`ModelPrice.rates`: e.g. Pro over 200k tokens)."""
    rates = price.rates(input_tokens)
    cached = min(max(cached_tokens, 0), input_tokens)
    cached_rate = rates.cached_input if rates.cached_input is not None else rates.input
    return (
        (input_tokens - cached) * rates.input + cached * cached_rate + output_tokens * rates.output
    ) / 1_000_000


@dataclass(slots=True)
class UsageRecord:
    """One logical model call, after its retries and fallbacks.

    ``model`` is the normalised name of the model that served the answer, or billed the tokens
    of a failed call (the fallback if one was taken); ``requested_model`` the one asked for;
    the cost is at ``model``'s price. ``billed`` is False for response-cache
    hits, whose ``cost_usd`` is 0 and whose avoided cost is ``saved_usd``. ``failed_attempts``
    counts attempts that raised before the outcome (Gemini does not bill them).

    A record is a value handed to every scope and sink: read it, do not change it. (It is not
    a frozen dataclass because those are several times slower to build, on every call.)
    """

    model: str
    requested_model: str
    provider: str
    outcome: Outcome
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    billed: bool = True
    priced: bool = True
    attempts: int = 1
    failed_attempts: int = 0
    fallback: bool = False
    error: str | None = None
    latency_s: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class ModelUsage:
    """Totals of one model inside a scope."""

    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    incomplete: int = 0
    unpriced: int = 0
    failed_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0

    def _add(self, record: UsageRecord) -> None:
        self.failed_attempts += record.failed_attempts
        if not record.priced:
            self.unpriced += 1
        if record.outcome == "cache_hit":
            self.cache_hits += 1
            return
        if record.outcome == "error":
            self.errors += 1  # its tokens (a blocked answer, a broken stream) are billed too
        elif record.outcome == "incomplete":
            self.incomplete += 1  # a stream left early: the tokens seen are billed
        else:
            self.calls += 1
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.reasoning_tokens += record.reasoning_tokens
        self.cached_tokens += record.cached_tokens
        self.cost_usd += record.cost_usd


@dataclass(slots=True)
class Usage(ModelUsage):
    """Totals of a :func:`usage_scope`: billed calls and tokens, cost, and per-model rows.

    ``calls`` counts answered calls; ``*_tokens``/``cost_usd`` everything billed: answers, and
    the tokens a failed call was billed for (a blocked answer, a stream broken mid-way), so
    they equal the sums over ``records``. Cache hits are in ``cache_hits`` and their avoided
    cost in ``saved_usd``; ``errors`` counts calls that failed for good, ``incomplete``
    streams the consumer left or cancelled (their tokens so far are in the totals) and
    ``failed_attempts`` every attempt that raised (retried or not). ``unpriced`` counts records
    of models without a price (their tokens are counted, their cost is missing from
    ``cost_usd``): nonzero means the total understates the bill.

    ``records`` keeps the most recent ``max_records`` records (the scope's bound; older ones
    are counted in ``dropped_records`` and stay in every total). Once the scope has exited
    (``closed``) it admits nothing: a record from a task that outlived it is counted in
    ``late`` and goes to the enclosing open scopes only.
    """

    labels: dict[str, str] = field(default_factory=dict)
    budget_usd: float | None = None
    budget_tokens: int | None = None
    saved_usd: float = 0.0
    by_model: dict[str, ModelUsage] = field(default_factory=dict)
    records: deque[UsageRecord] = field(default_factory=deque)
    sinks: tuple[UsageSink, ...] = ()
    _home: _LoopRef | None = field(default=None, repr=False, compare=False)
    """The loop the scope was entered on: where its async ``sinks`` are awaited."""
    dropped_records: int = 0
    late: int = 0
    closed: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, record: UsageRecord) -> None:
        """Account ``record`` in the totals and the per-model row."""
        self._add(record)
        self.saved_usd += record.saved_usd
        row = self.by_model.get(record.model)
        if row is None:
            row = self.by_model[record.model] = ModelUsage()
        row._add(record)
        records = self.records
        if records.maxlen is not None and len(records) == records.maxlen:
            self.dropped_records += 1  # the oldest record (or this one, with a bound of 0)
        records.append(record)

    def exhausted(self) -> str | None:
        """Why this scope refuses new calls, or ``None`` while it is within budget."""
        if self.budget_usd is not None and self.cost_usd >= self.budget_usd:
            return f"spent ${self.cost_usd:.6f} of a ${self.budget_usd:.6f} budget"
        if self.budget_tokens is not None and self.total_tokens >= self.budget_tokens:
            return f"used {self.total_tokens} of a {self.budget_tokens}-token budget"
        return None


_scopes: ContextVar[tuple[Usage, ...]] = ContextVar("sight_usage_scopes", default=())
_sinks: list[tuple[UsageSink, _LoopRef | None]] = []


def _running_loop() -> _LoopRef | None:
    """A weak reference to the running event loop (the home of async sinks registered now)."""
    try:
        return weakref.ref(asyncio.get_running_loop())
    except RuntimeError:
        return None


def add_usage_sink(sink: UsageSink) -> None:
    """Send every record (inside a scope or not) to ``sink`` too, e.g. to persist it.

    An async ``sink`` added from a running event loop is always awaited on that loop (see the
    module doc): a sync call hands the record over to it and returns without waiting."""
    _sinks.append((sink, _running_loop()))


def remove_usage_sink(sink: UsageSink) -> None:
    """Undo :func:`add_usage_sink`; unknown sinks are ignored."""
    for index, (added, _) in enumerate(_sinks):
        if added == sink:
            del _sinks[index]
            return


def current_usage() -> Usage | None:
    """The innermost active scope, or ``None`` outside any."""
    scopes = _scopes.get()
    return scopes[-1] if scopes else None


@contextmanager
def _pushed(usage: Usage) -> Iterator[Usage]:
    token = _scopes.set((*_scopes.get(), usage))
    try:
        yield usage
    finally:
        _scopes.reset(token)


def scopes_snapshot() -> tuple[Usage, ...]:
    """The scopes active here, to account a call whose end may run in another context."""
    return _scopes.get()


@contextmanager
def restored_scopes(scopes: tuple[Usage, ...]) -> Iterator[None]:
    """Make ``scopes`` (a :func:`scopes_snapshot`) the active ones for the block.

    A stream's record is written when the stream ends, which may be in whatever task closes
    it: the loop's finalizer of an abandoned async generator runs in the context of the code
    that happened to trigger garbage collection (another request's scope). Restoring the
    stream's own scopes charges its tokens to the scopes it started in.
    """
    token = _scopes.set(scopes)
    try:
        yield
    finally:
        _scopes.reset(token)


DEFAULT_MAX_RECORDS = 1000
"""How many records a scope keeps by default (its totals count every record)."""


@asynccontextmanager
async def usage_scope(
    *,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    sink: UsageSink | None = None,
    max_records: int | None = DEFAULT_MAX_RECORDS,
    **labels: object,
) -> AsyncIterator[Usage]:
    """Collect the usage of every model call made inside the block.

    ``labels`` (``project_id=...``, ``operation="personas"``) are stringified and stamped on
    each record, merged with those of enclosing scopes. With ``budget_usd``/``budget_tokens``
    a call that starts once the scope has spent that much raises
    :class:`~sight_core.errors.BudgetExceededError` before any request (calls already in
    flight finish, so a scope can overshoot by their cost). ``sink`` receives this scope's
    records. ``max_records`` bounds ``usage.records`` to the most recent ones (``None``: keep
    all; ``0``: totals only); totals stay exact. When the block exits the scope closes:
    records of calls still running in tasks spawned inside it go to the enclosing open scopes
    (or, with none, are refused with a warning), and its budget no longer applies. Costs one
    contextvar set/reset; records are appended in memory.

    Raises:
        ConfigurationError: ``max_records`` is negative.
    """
    if max_records is not None and max_records < 0:
        raise ConfigurationError(
            f"usage_scope(max_records={max_records}): use a count >= 0, or None to keep all"
        )
    outer = current_usage()
    merged = {**(outer.labels if outer else {}), **{k: str(v) for k, v in labels.items()}}
    usage = Usage(
        labels=merged,
        budget_usd=budget_usd,
        budget_tokens=budget_tokens,
        sinks=(sink,) if sink is not None else (),
        records=deque(maxlen=max_records),
        _home=_running_loop() if sink is not None else None,
    )
    try:
        with _pushed(usage):
            yield usage
    finally:
        usage.closed = True


_NO_LABELS: Mapping[str, str] = MappingProxyType({})


def active_labels() -> Mapping[str, str]:
    """Labels of the innermost scope (already merged with the enclosing ones); the scope's own
    mapping, shared by its records: read it, do not change it."""
    scopes = _scopes.get()
    return scopes[-1].labels if scopes else _NO_LABELS


def usage_wanted() -> bool:
    """Whether a record would reach anyone (an active scope or a global sink)."""
    return bool(_sinks) or bool(_scopes.get())


def check_budget() -> None:
    """Raise :class:`BudgetExceededError` if any active scope has exhausted its budget."""
    for usage in _scopes.get():
        if (usage.budget_usd is None and usage.budget_tokens is None) or usage.closed:
            continue
        reason = usage.exhausted()
        if reason is not None:
            labels = ", ".join(f"{k}={v}" for k, v in usage.labels.items()) or "unlabelled"
            raise BudgetExceededError(f"usage scope ({labels}) {reason}; call refused")


def deliver_usage(record: UsageRecord) -> Awaitable[None] | None:
    """Add ``record`` to every open scope of the context and hand it to the global sinks and
    theirs (sink errors are logged). Exited scopes count it in ``late`` and skip it; with no
    open scope left it is refused with a warning (the global sinks still get it).

    Synchronous: returns an awaitable only when an async sink needs awaiting here (the hot
    path, scopes without async sinks, awaits nothing). An async sink whose home loop is another
    live loop is handed to it instead (see the module doc)."""
    scopes = _scopes.get()
    sinks: list[tuple[UsageSink, _LoopRef | None]] | None = [*_sinks] if _sinks else None
    refused = bool(scopes)
    for usage in scopes:
        if usage.closed:
            usage.late += 1
            continue
        refused = False
        usage.add(record)
        if usage.sinks:
            home = usage._home
            sinks = [*(sinks or ()), *((sink, home) for sink in usage.sinks)]
    if refused:
        _warn_refused(record)
    if sinks is None:
        return None
    pending: list[tuple[UsageSink, Awaitable[None]]] = []
    for sink, home in sinks:
        try:
            result = sink(record)
        except Exception:
            _log.exception("usage sink %r failed; record dropped for it", sink)
            continue
        if result is None or not inspect.isawaitable(result):
            continue
        loop = home() if home is not None else None
        # a loop that is closed, or stopped (``run_until_complete`` returned), would never
        # await a record handed to it: the call awaits the sink itself
        if loop is None or not loop.is_running() or _is_running(loop):
            pending.append((sink, result))
        else:
            _hand_over(sink, result, loop)
    return _await_sinks(pending) if pending else None


def _is_running(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the loop running here."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _hand_over(sink: UsageSink, result: Awaitable[None], loop: asyncio.AbstractEventLoop) -> None:
    """Await ``result`` (``sink``'s) on its home ``loop``, from any thread, without waiting."""
    awaiting = _await_sinks([(sink, result)])
    try:
        asyncio.run_coroutine_threadsafe(awaiting, loop)
    except RuntimeError:  # the loop closed since we looked: await it nowhere, say so
        awaiting.close()
        if inspect.iscoroutine(result):
            result.close()
        _log.warning(
            "usage sink %r: its event loop closed before the record could be handed to it; "
            "record dropped for it",
            sink,
        )


async def _await_sinks(pending: list[tuple[UsageSink, Awaitable[None]]]) -> None:
    for sink, result in pending:
        try:
            await result
        except Exception:
            _log.exception("usage sink %r failed; record dropped for it", sink)


def _warn_refused(record: UsageRecord) -> None:
    labels = ", ".join(f"{k}={v}" for k, v in record.labels.items()) or "unlabelled"
    _log.warning(
        "usage record of %s (%d tokens, $%.6f) arrived after its usage scope (%s) exited "
        "and no enclosing scope is open: refused by the scope (global sinks still get "
        "it); await the tasks you spawn inside a scope before leaving it",
        record.model,
        record.total_tokens,
        record.cost_usd,
        labels,
    )


async def emit_usage(record: UsageRecord) -> None:
    """:func:`deliver_usage`, awaiting its async sinks."""
    pending = deliver_usage(record)
    if pending is not None:
        await pending
