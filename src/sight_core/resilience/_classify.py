"""One decision for every error: retry it, route it, or let it through.

:func:`classify` maps an exception to a :class:`Classification`. The retry policy retries only
``"transient"``; the circuit breaker counts only ``"transient"`` as a failure; the LLM layer
routes ``"context_overflow"`` to a bigger model. The table is data (:data:`STATUS_KINDS` and
the ordered rules in :func:`classify`) and is reproduced in ``docs/resilience.md``.

Exceptions are inspected along their ``__cause__`` chain (``raise ... from``), because
langchain-google-genai raises ``GoogleRateLimitError(...) from ClientError(...)``: the status
code, the body (with Gemini's ``RetryInfo.retryDelay``) and the HTTP response (with
``Retry-After``) live on the SDK's error underneath.

Cost: a few ``isinstance`` checks, plus parsing of the error body when a status is found;
called once per failed attempt, never on success.
"""

from __future__ import annotations

import email.utils
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from sight_core.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ContentBlockedError,
    ContextOverflowError,
    DeadlineExceededError,
    MalformedAnswerError,
    RetryExhaustedError,
    StructuredOutputError,
)

__all__ = [
    "STATUS_KINDS",
    "Classification",
    "Classifier",
    "ErrorKind",
    "classify",
    "cooldown_for",
    "parse_retry_after",
]

ErrorKind = Literal["transient", "permanent", "context_overflow", "blocked", "cancelled"]
"""``transient``: retry and count as a breaker failure; ``permanent``: neither;
``context_overflow``: route to a bigger model, don't retry; ``blocked``: a safety block or empty
answer, don't retry; ``cancelled``: the caller gave up, neutral everywhere."""


@dataclass(frozen=True, slots=True)
class Classification:
    """What :func:`classify` decided about one exception.

    Attributes:
        kind: see :data:`ErrorKind`.
        reason: short stable label for metrics and logs (``"http_429"``, ``"timeout"``, ...).
        status: the HTTP status found on the error or its causes, if any.
        retry_after: seconds the server asked us to wait (``Retry-After`` header or Gemini's
            ``RetryInfo.retryDelay``), if it said so.
        daily_quota: the error body's ``google.rpc.QuotaFailure`` names a per-day quota
            (``quotaId`` or ``quotaMetric`` containing ``PerDay``): waiting seconds won't help.
    """

    kind: ErrorKind
    reason: str
    status: int | None = None
    retry_after: float | None = None
    daily_quota: bool = False

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed (``kind == "transient"``)."""
        return self.kind == "transient"


Classifier = Callable[[BaseException], Classification]
"""Any function with :func:`classify`'s signature; wrap :func:`classify` to extend it."""

STATUS_KINDS: Final[Mapping[int, ErrorKind]] = {
    400: "permanent",  # invalid request (context overflow is detected from the message)
    401: "permanent",  # bad API key
    403: "permanent",  # permission denied, API disabled
    404: "permanent",  # unknown model
    408: "transient",  # request timeout
    409: "transient",  # aborted / conflict: Google APIs mean "try again"
    429: "transient",  # rate limit or quota (RESOURCE_EXHAUSTED); honours retryDelay
}
"""Explicit HTTP statuses. Any other 5xx is transient, any other 4xx permanent."""

_OVERFLOW_MARKERS: Final = ("exceeds the maximum number of tokens", "token limit", "context window")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*s\s*$")
_MAX_CHAIN: Final = 8


def classify(exc: BaseException) -> Classification:
    """Classify ``exc``; never raises. Unknown exceptions are ``permanent`` (not retried).

    Rules, first match wins:

    1. cancellation (``asyncio.CancelledError``, ``KeyboardInterrupt``, any non-``Exception``)
       → ``cancelled``;
    2. our own errors: ``ContextOverflowError`` → ``context_overflow``,
       ``ContentBlockedError`` → ``blocked``, ``MalformedAnswerError`` → ``transient``,
       ``DeadlineExceededError``,
       ``CircuitOpenError``, ``RetryExhaustedError``, ``BudgetExceededError``,
       ``StructuredOutputError`` → ``permanent`` (final: nested retries would multiply);
    3. LangChain's ``ContextOverflowError`` (``GoogleContextOverflowError``) →
       ``context_overflow``, unless it carries a transient status: langchain-google-genai
       decides "overflow" by matching ``"token limit"`` in the text of *any* client error, so a
       429 about a tokens-per-minute quota would otherwise never be retried;
    4. an HTTP status on the error or its causes (``google.genai.errors.APIError.code``,
       ``.status_code``, ``.response.status_code``) → :data:`STATUS_KINDS`, else 5xx transient,
       4xx permanent; a 400 whose message names the token limit → ``context_overflow``;
    5. LangChain ``ModelError`` subclasses by ``is_retryable`` (``ModelRateLimitError``,
       ``ModelAPIError``, ``ModelConnectionError``, ``ModelTimeoutError`` → transient);
    6. ``httpx.TimeoutException``, ``httpx.NetworkError`` (``ConnectError``, ``ReadError``,
       ...), ``httpx.RemoteProtocolError``, builtin ``TimeoutError`` and ``ConnectionError``,
       and, since google-genai switches its async transport to aiohttp whenever aiohttp is
       installed, ``aiohttp.ClientConnectionError`` (``ServerDisconnectedError``,
       ``ClientOSError``, ...) and ``aiohttp.ClientPayloadError`` → ``transient``;
    7. anything else → ``permanent`` (reason ``"unclassified"``).
    """
    if not isinstance(exc, Exception):
        return Classification("cancelled", "cancelled")
    own = _own(exc)
    if own is not None:
        return own
    chain = tuple(_chain(exc))
    for err in chain:
        if _is_langchain_overflow(err):
            status = _status(err)
            if status is None or _status_kind(status) != "transient":
                return Classification("context_overflow", "context_overflow", status)
            break  # LangChain's text match misfired on a 429/5xx: the status decides
    for err in chain:
        status = _status(err)
        if status is not None:
            return _from_status(status, chain)
    for err in chain:
        c = _from_type(err)
        if c is not None:
            return Classification(c[0], c[1], None, _retry_after(chain))
    return Classification("permanent", "unclassified")


_OWN_KINDS: Final[tuple[tuple[type[Exception], ErrorKind, str], ...]] = (
    (MalformedAnswerError, "transient", "malformed_answer"),
    (ContextOverflowError, "context_overflow", "context_overflow"),
    (ContentBlockedError, "blocked", "blocked"),
    (DeadlineExceededError, "permanent", "deadline"),
    (CircuitOpenError, "permanent", "circuit_open"),
    (RetryExhaustedError, "permanent", "retry_exhausted"),
    (BudgetExceededError, "permanent", "budget"),
    (StructuredOutputError, "permanent", "structured_output"),
)
"""Our own errors, first match wins: final (nested retries would multiply) or routed."""


def _own(exc: BaseException) -> Classification | None:
    for cls, kind, reason in _OWN_KINDS:
        if isinstance(exc, cls):
            hint = exc.retry_after if isinstance(exc, CircuitOpenError) else None
            return Classification(kind, reason, None, hint)
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__  # explicit ``raise ... from`` only: a bug raised in an except
        # block must not inherit the transient kind of the error it was handling


def _module(name: str) -> Any:
    """A module only if something already imported it: an error can't come from one that wasn't."""
    return sys.modules.get(name)


def _is_langchain_overflow(err: BaseException) -> bool:
    lc = _module("langchain_core.exceptions")
    return lc is not None and isinstance(err, lc.ContextOverflowError)


def _status(err: BaseException) -> int | None:
    for value in (
        getattr(err, "status_code", None),
        _google_code(err),
        getattr(getattr(err, "response", None), "status_code", None),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _google_code(err: BaseException) -> object:
    genai = _module("google.genai.errors")
    return err.code if genai is not None and isinstance(err, genai.APIError) else None


def _status_kind(status: int) -> ErrorKind:
    kind = STATUS_KINDS.get(status)
    if kind is None:
        kind = "transient" if status >= 500 else "permanent"
    return kind


def _from_status(status: int, chain: tuple[BaseException, ...]) -> Classification:
    kind = _status_kind(status)
    if status == 400:
        text = " ".join(str(e) for e in chain).lower()
        if any(m in text for m in _OVERFLOW_MARKERS):
            return Classification("context_overflow", "context_overflow", status)
    if kind != "transient":
        return Classification(kind, f"http_{status}", status)
    daily = status == 429 and any(_daily_quota(getattr(e, "details", None)) for e in chain)
    return Classification(kind, f"http_{status}", status, _retry_after(chain), daily)


def _from_type(err: BaseException) -> tuple[ErrorKind, str] | None:
    lc = _module("langchain_core.exceptions")
    if lc is not None:
        if isinstance(err, lc.ModelRateLimitError):
            return ("transient", "rate_limit")
        if isinstance(err, lc.ModelTimeoutError):
            return ("transient", "timeout")
        if isinstance(err, lc.ModelError):
            return ("transient" if err.is_retryable else "permanent", type(err).__name__)
    httpx = _module("httpx")
    if httpx is not None:
        if isinstance(err, httpx.TimeoutException):
            return ("transient", "timeout")
        if isinstance(err, httpx.NetworkError | httpx.RemoteProtocolError):
            return ("transient", "connect")
    if isinstance(err, TimeoutError):
        return ("transient", "timeout")
    aiohttp = _module("aiohttp")  # google-genai's async transport whenever it is installed
    if aiohttp is not None and isinstance(
        err, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
    ):
        return ("transient", "connect")
    if isinstance(err, ConnectionError):
        return ("transient", "connect")
    return None


def _retry_after(chain: tuple[BaseException, ...]) -> float | None:
    for err in chain:
        own = getattr(err, "retry_after", None)
        if isinstance(own, int | float) and not isinstance(own, bool) and own >= 0:
            return float(own)
        delay = _retry_delay(getattr(err, "details", None))
        if delay is not None:
            return delay
        headers = getattr(getattr(err, "response", None), "headers", None)
        if headers is not None:
            try:
                value = headers.get("retry-after")
            except Exception:  # an exotic headers object: ignore the hint
                value = None
            if isinstance(value, str):
                parsed = parse_retry_after(value)
                if parsed is not None:
                    return parsed
    return None


def _retry_delay(details: Any, depth: int = 0) -> float | None:
    """Find ``retryDelay`` of a ``google.rpc.RetryInfo`` anywhere in a Gemini error body."""
    if depth > 6:
        return None
    if isinstance(details, Mapping):
        if str(details.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return _duration(details.get("retryDelay"))
        for value in details.values():
            if isinstance(value, Mapping | list):
                found = _retry_delay(value, depth + 1)
                if found is not None:
                    return found
    elif isinstance(details, list):
        for item in details:
            found = _retry_delay(item, depth + 1)
            if found is not None:
                return found
    return None


def _daily_quota(details: Any, depth: int = 0) -> bool:
    """Whether a ``google.rpc.QuotaFailure`` in a Gemini error body names a per-day quota."""
    if depth > 6:
        return False
    if isinstance(details, Mapping):
        if str(details.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in details.get("violations") or ():
                if isinstance(violation, Mapping) and any(
                    "perday" in str(violation.get(k, "")).lower()
                    for k in ("quotaId", "quotaMetric", "quota_id", "quota_metric")
                ):
                    return True
            return False
        return any(
            _daily_quota(v, depth + 1) for v in details.values() if isinstance(v, Mapping | list)
        )
    if isinstance(details, list):
        return any(_daily_quota(item, depth + 1) for item in details)
    return False


def cooldown_for(
    classification: Classification, max_server_wait: float, quota_cooldown: float
) -> float | None:
    """Seconds the dependency should be left alone after this error, or ``None`` (retry as usual).

    A transient error whose server hint is longer than ``max_server_wait`` asks for that hint;
    one naming a per-day quota asks for ``quota_cooldown`` (or the hint, if longer). Retrying
    sooner only spends requests the server said it would refuse.
    """
    if classification.kind != "transient":
        return None
    hint = classification.retry_after
    if classification.daily_quota:
        return max(quota_cooldown, hint or 0.0)
    if hint is not None and hint > max_server_wait:
        return hint
    return None


def _duration(value: object) -> float | None:
    """A protobuf ``Duration`` as JSON (``"7s"``, ``"1.5s"``) or as ``{"seconds", "nanos"}``."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        return float(m.group(1)) if m else None
    if isinstance(value, Mapping):
        try:
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns ``None`` for anything unparsable; a date in the past gives ``0.0``.
    """
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
