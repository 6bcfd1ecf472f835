"""One exception tree for the whole library.

Every error sight-core raises derives from :class:`SightError`, and where a builtin exception
already means the same thing the class derives from it too, so ``except ValueError`` and
``except SightError`` both work::

    SightError
    ├── ConfigurationError (ValueError)        bad settings, arguments or decoration
    │   └── MissingDependencyError (ImportError)  an optional extra is not installed
    ├── NotBoundError (RuntimeError)           a Cache used before ``bind()``
    ├── CacheError                             a cache backend failed (never reaches callers
    │   └── CacheSerializationError (TypeError)  of ``@cached``; they fail open)
    ├── ResilienceError
    │   ├── CircuitOpenError                   the breaker refused the call, no attempt made
    │   │   └── RateLimitedError               ... during a server-requested cooldown (quota)
    │   ├── RetryExhaustedError                every attempt failed with a transient error
    │   ├── DeadlineExceededError (TimeoutError)  the overall deadline ran out
    │   └── BudgetExceededError                a usage scope's hard budget refused the call
    ├── LLMError
    │   ├── ContentBlockedError                empty or safety-blocked answer
    │   ├── ContextOverflowError               the prompt does not fit the model
    │   ├── MalformedAnswerError               a malformed function call (transient, retried)
    │   └── StructuredOutputError (ValueError) the answer does not match the schema
    ├── DatabaseError
    │   ├── NotFoundError (LookupError)        ``Repository.get`` found no row
    │   ├── IntegrityViolationError
    │   │   ├── DuplicateError                 unique constraint, names the constraint
    │   │   └── ForeignKeyError                foreign-key constraint, names the constraint
    │   └── UnloadedRelationError              touched a relation no query loaded (never an
    │                                          AttributeError: it must not read as "absent")
    ├── GraphError                             Neo4j driver errors, wrapped
    └── ServiceUnavailableError (ConnectionError)  a server could not be reached in time

Driver errors are wrapped with ``raise ... from`` so the original stays on ``__cause__``.
Messages never contain passwords, API keys, prompts or cached payloads.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "CacheError",
    "CacheSerializationError",
    "CircuitOpenError",
    "ConfigurationError",
    "ContentBlockedError",
    "ContextOverflowError",
    "DatabaseError",
    "DeadlineExceededError",
    "DuplicateError",
    "ForeignKeyError",
    "GraphError",
    "IntegrityViolationError",
    "LLMError",
    "MalformedAnswerError",
    "MissingDependencyError",
    "NotBoundError",
    "NotFoundError",
    "RateLimitedError",
    "ResilienceError",
    "RetryExhaustedError",
    "ServiceUnavailableError",
    "SightError",
    "StructuredOutputError",
    "UnloadedRelationError",
]


class SightError(Exception):
    """Root of every error raised by sight-core."""


class ConfigurationError(SightError, ValueError):
    """A setting, argument or decoration is invalid; the message names the value and the fix."""


class MissingDependencyError(SightError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is not installed; install it with `pip install 'sight-core[{extra}]'`"
        )
        self.package = package
        self.extra = extra


class NotBoundError(SightError, RuntimeError):
    """An object that needs a backend was used before one was bound."""


class CacheError(SightError):
    """A cache backend operation failed. ``@cached`` functions never raise it: they fail open."""


class CacheSerializationError(CacheError, TypeError):
    """A value could not be encoded or decoded by the cache codec."""


class ResilienceError(SightError):
    """Base for errors raised by retry policies, circuit breakers and budgets."""


class CircuitOpenError(ResilienceError):
    """The circuit breaker is open; the call was refused without any attempt."""

    def __init__(self, name: str, retry_after: float | None = None) -> None:
        hint = f"; next probe in {retry_after:.1f}s" if retry_after is not None else ""
        super().__init__(f"circuit {name!r} is open{hint}")
        self.name = name
        self.retry_after = retry_after


class RateLimitedError(CircuitOpenError):
    """The server refused for longer than we wait (a long ``retryDelay`` or a per-day quota), so
    the circuit is held open for that time (a cooldown, shared through the breaker's store); no
    request was made. ``retry_after`` is the time left, in seconds."""

    def __init__(self, name: str, retry_after: float | None = None) -> None:
        super().__init__(name, retry_after)
        hint = f"; retry in {retry_after:.1f}s" if retry_after is not None else ""
        self.args = (f"{name!r} is rate limited by the server (cooldown){hint}",)


class RetryExhaustedError(ResilienceError):
    """All attempts failed with transient errors; ``__cause__`` is the last one."""

    def __init__(self, attempts: int, last: BaseException | None = None) -> None:
        what = f": {type(last).__name__}" if last is not None else ""
        super().__init__(f"gave up after {attempts} attempt(s){what}")
        self.attempts = attempts


class DeadlineExceededError(ResilienceError, TimeoutError):
    """The overall deadline ran out, or a server's retry hint exceeds what remains of it."""


class BudgetExceededError(ResilienceError):
    """A usage scope's hard budget would be exceeded; the call was refused."""


class LLMError(SightError):
    """Base for errors about a model's answer or request."""


class ContentBlockedError(LLMError):
    """The model returned an empty or safety-blocked answer; it is never returned as text."""


class ContextOverflowError(LLMError):
    """The request does not fit the model's context window (routed to a fallback, not retried)."""


class MalformedAnswerError(LLMError):
    """The model produced a malformed answer (Gemini's ``MALFORMED_FUNCTION_CALL``): a transient
    model error, retried and then routed to the fallback like a 503."""


class StructuredOutputError(LLMError, ValueError):
    """The model's answer does not validate against the requested schema."""


class DatabaseError(SightError):
    """Base for errors raised by the data-access layer."""


class NotFoundError(DatabaseError, LookupError):
    """No row with the given identity."""

    def __init__(self, model: str, ident: object) -> None:
        super().__init__(f"{model} with id {ident!r} not found")
        self.model = model
        self.ident = ident


class IntegrityViolationError(DatabaseError):
    """A constraint was violated; ``constraint`` names it when the server reports it."""

    def __init__(self, message: str, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class DuplicateError(IntegrityViolationError):
    """A unique or primary-key constraint was violated."""


class ForeignKeyError(IntegrityViolationError):
    """A foreign-key constraint was violated."""


class UnloadedRelationError(DatabaseError):
    """A relationship that no query loaded was accessed, and loading it now would be N+1.

    Deliberately not an ``AttributeError``: ``hasattr()``, ``getattr(obj, name, default)`` and
    pydantic's ``from_attributes`` treat an ``AttributeError`` as "no such attribute" and would
    silently read an unloaded collection as absent or empty.
    """


class GraphError(SightError):
    """A Neo4j/Bolt operation failed; the driver's error is on ``__cause__``."""


class ServiceUnavailableError(SightError, ConnectionError):
    """A server could not be reached within its deadline."""
