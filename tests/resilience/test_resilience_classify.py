"""The classifier table, on the real exception classes of google-genai, LangChain and httpx."""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

import httpx
import pytest
from google.genai.errors import ClientError, ServerError
from langchain_core.exceptions import ModelConnectionError, ModelTimeoutError
from langchain_google_genai.chat_models import (
    GoogleAPIError,
    GoogleContextOverflowError,
    GoogleRateLimitError,
    _handle_client_error,
    _handle_server_error,
)

from sight_core.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ContentBlockedError,
    ContextOverflowError,
    DeadlineExceededError,
    RetryExhaustedError,
    ServiceUnavailableError,
    StructuredOutputError,
)
from sight_core.resilience import STATUS_KINDS, Classification, classify, parse_retry_after

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def gemini_body(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def through_langchain(err: ClientError | ServerError) -> BaseException:
    """What langchain-google-genai 4.x raises for an SDK error (its own handlers)."""
    try:
        if isinstance(err, ClientError):
            _handle_client_error(err, {"model": "models/gemini-2.5-flash"})
        else:
            _handle_server_error(err)
    except Exception as exc:
        return exc
    raise AssertionError("the handler always raises")


def rate_limited(delay: str | None = "7s", header: str | None = None) -> ClientError:
    details = [{"@type": RETRY_INFO, "retryDelay": delay}] if delay is not None else []
    body = gemini_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", *details)
    headers = {"retry-after": header} if header is not None else {}
    response = httpx.Response(429, json=body, headers=headers)
    return ClientError(429, body, response)


def test_rate_limit_through_langchain_is_transient_with_retry_delay() -> None:
    exc = through_langchain(rate_limited("7s"))
    assert isinstance(exc, GoogleRateLimitError)  # the class langchain-google-genai raises
    assert classify(exc) == Classification("transient", "http_429", 429, 7.0)


def test_fractional_retry_delay_and_header_fallback() -> None:
    assert classify(rate_limited("1.5s")).retry_after == 1.5
    assert classify(rate_limited(None, header="3")).retry_after == 3.0
    assert classify(rate_limited(None)).retry_after is None


def test_retry_delay_as_duration_object() -> None:
    body = gemini_body(
        429, "RESOURCE_EXHAUSTED", "quota", {"@type": RETRY_INFO, "retryDelay": {"seconds": 2}}
    )
    assert classify(ClientError(429, body)).retry_after == 2.0


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_server_errors_are_transient(code: int) -> None:
    exc = through_langchain(ServerError(code, gemini_body(code, "UNAVAILABLE", "overloaded")))
    assert isinstance(exc, GoogleAPIError)
    assert classify(exc).kind == "transient"
    assert classify(exc).status == code


@pytest.mark.parametrize(
    ("code", "kind"),
    [(400, "permanent"), (401, "permanent"), (403, "permanent"), (404, "permanent"),
     (408, "transient"), (429, "transient"), (422, "permanent")],
)  # fmt: skip
def test_client_error_statuses(code: int, kind: str) -> None:
    raw = ClientError(code, gemini_body(code, "X", "message"))
    assert classify(raw).kind == kind
    assert classify(through_langchain(raw)).kind == kind
    if code in STATUS_KINDS:
        assert STATUS_KINDS[code] == kind


def test_context_overflow_is_routed_not_retried() -> None:
    msg = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    raw = ClientError(400, gemini_body(400, "INVALID_ARGUMENT", msg))
    exc = through_langchain(raw)
    assert isinstance(exc, GoogleContextOverflowError)
    assert classify(exc).kind == "context_overflow"
    assert classify(raw).kind == "context_overflow"  # the bare SDK error too
    assert classify(ContextOverflowError("too long")).kind == "context_overflow"


def test_permanent_errors_carry_no_retry_hint() -> None:
    body = gemini_body(400, "INVALID_ARGUMENT", "bad", {"@type": RETRY_INFO, "retryDelay": "5s"})
    assert classify(ClientError(400, body)).retry_after is None


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("t"),
        httpx.ReadTimeout("t"),
        httpx.ConnectError("refused"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("eof"),
        TimeoutError(),
        ConnectionResetError(),
        ServiceUnavailableError("redis"),
        ModelConnectionError("down"),
        ModelTimeoutError("slow"),
    ],
    ids=type,
)
def test_network_and_timeouts_are_transient(exc: Exception) -> None:
    assert classify(exc).kind == "transient"


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (ContentBlockedError("safety"), "blocked", "blocked"),
        (DeadlineExceededError("late"), "permanent", "deadline"),
        (CircuitOpenError("gemini", 3.0), "permanent", "circuit_open"),
        (RetryExhaustedError(3), "permanent", "retry_exhausted"),
        (BudgetExceededError("budget"), "permanent", "budget"),
        (StructuredOutputError("schema"), "permanent", "structured_output"),
        (ValueError("bug"), "permanent", "unclassified"),
        (asyncio.CancelledError(), "cancelled", "cancelled"),
        (KeyboardInterrupt(), "cancelled", "cancelled"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_own_errors_and_the_rest(exc: BaseException, kind: str, reason: str) -> None:
    c = classify(exc)
    assert (c.kind, c.reason) == (kind, reason)
    assert c.retryable is (kind == "transient")


def test_wrapped_errors_are_found_on_the_cause_chain() -> None:
    outer = RuntimeError("sdk wrapper")
    outer.__cause__ = httpx.ConnectError("refused")
    assert classify(outer).kind == "transient"
    implicit = RuntimeError("a bug in an except block")  # implicit context is not followed
    implicit.__context__ = TimeoutError()
    assert classify(implicit).kind == "permanent"


def test_status_code_attribute_of_other_libraries() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/x")
    err = httpx.HTTPStatusError(
        "503", request=request, response=httpx.Response(503, headers={"Retry-After": "2"})
    )
    assert classify(err) == Classification("transient", "http_503", 503, 2.0)


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-1") is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 GMT
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == 10.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:10 GMT", now=now) == 0.0


def test_a_rate_limit_that_langchain_takes_for_an_overflow_stays_transient() -> None:
    # langchain-google-genai matches "token limit" in any ClientError's text, 429s included
    body = gemini_body(
        429, "RESOURCE_EXHAUSTED", "You exceeded the input token limit per minute",
        {"@type": RETRY_INFO, "retryDelay": "20s"},
    )  # fmt: skip
    exc = through_langchain(ClientError(429, body))
    assert isinstance(exc, GoogleContextOverflowError)
    assert classify(exc) == Classification("transient", "http_429", 429, 20.0)
    overflow = gemini_body(400, "INVALID_ARGUMENT", "input exceeds the token limit")
    assert classify(through_langchain(ClientError(400, overflow))).kind == "context_overflow"


def test_aiohttp_connection_errors_are_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    """google-genai sends async calls through aiohttp whenever it is installed (it is not in
    this environment: a stand-in module with aiohttp's class layout takes its place)."""

    class ClientError(Exception):
        pass

    class ClientConnectionError(ClientError):
        pass

    class ClientOSError(ClientConnectionError, OSError):
        pass

    class ServerDisconnectedError(ClientConnectionError):
        pass

    class ClientPayloadError(ClientError):
        pass

    class ContentTypeError(ClientError):
        pass

    aiohttp = types.ModuleType("aiohttp")
    for cls in (ClientError, ClientConnectionError, ClientOSError, ServerDisconnectedError,
                ClientPayloadError, ContentTypeError):  # fmt: skip
        setattr(aiohttp, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "aiohttp", aiohttp)
    assert classify(ServerDisconnectedError("Server disconnected")).kind == "transient"
    assert classify(ClientOSError(104, "Connection reset by peer")).kind == "transient"
    assert classify(ClientPayloadError("truncated body")).kind == "transient"
    assert classify(ContentTypeError("not json")).kind == "permanent"
