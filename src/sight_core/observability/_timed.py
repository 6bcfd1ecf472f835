"""``timed``: one way to time a call, a block or a coroutine into a latency histogram."""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from sight_core.errors import ConfigurationError

from ._histogram import LatencyHistogram
from ._registry import LabelValue, MetricsRegistry, _key, check_labels, get_registry

__all__ = ["metric_name", "timed"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_:]")
_log = logging.getLogger("sight_core.observability")


def metric_name(name: str) -> str:
    """``"persona.generate"`` → ``"sight_persona_generate_seconds"`` (idempotent)."""
    base = _UNSAFE.sub("_", name)
    if not base.startswith("sight_"):
        base = "sight_" + base
    if not base.endswith("_seconds"):
        base += "_seconds"
    return base


class timed:  # lower case: used like a function, @timed("x") and with timed("x")
    """Time a function, coroutine function or block into histogram ``sight_<name>_seconds``.

    - ``@timed("persona.generate", tier="flash")`` on a sync or ``async def`` function keeps its
      signature (ParamSpec) and records every call's duration, including failed and cancelled
      ones (a timed-out call is exactly the slow call you want to see).
    - ``with timed("db.flush"):`` / ``async with timed("llm.call"):`` record the block;
      ``.elapsed`` holds the duration (seconds) after exit.
    - Failures also increment ``sight_<name>_errors_total`` with ``error=<ExceptionClass>``.
    - Calls slower than the registry's ``slow_call_seconds`` (``slow_call_ms`` in settings, see
      :func:`configure_observability`) log a warning naming the metric and labels, never the
      arguments.

    Cost: two ``perf_counter()`` calls and one histogram record; the series is resolved once
    and cached. A ``timed`` object used as a context manager is single-use at a time: create one
    per block (nested or concurrent reuse of one instance raises ``ConfigurationError``).
    """

    __slots__ = (
        "_errors",
        "_gen",
        "_hist",
        "_key",
        "_labels",
        "_registry",
        "_start",
        "elapsed",
        "name",
    )

    def __init__(self, name: str, /, **labels: LabelValue) -> None:
        """Raises ``ConfigurationError`` for an invalid label (or one named ``error``, which
        the errors counter sets), here rather than after the first timed call has run."""
        self.name = metric_name(name)
        self._errors = self.name.removesuffix("_seconds") + "_errors_total"
        self._labels = labels
        self._key = _key(labels)
        check_labels(self.name, self._key)
        if "error" in labels:
            raise ConfigurationError(
                f"timed({self.name!r}) cannot take a label named 'error': its errors counter "
                "sets it to the exception class"
            )
        self._registry: MetricsRegistry = get_registry()
        self._hist: LatencyHistogram | None = None
        self._gen = -1
        self._start: float | None = None
        self.elapsed: float | None = None

    # -- recording -------------------------------------------------------------------------

    def _record(self, seconds: float, exc: BaseException | None) -> None:
        registry = self._registry
        hist = self._hist
        if hist is None or self._gen != registry.generation:
            self._gen = registry.generation
            hist = self._hist = registry._histogram(self.name, self._key)
        hist.record(seconds)
        if exc is not None:
            registry.increment(self._errors, 1, error=type(exc).__name__, **self._labels)
        if seconds >= registry.slow_call_seconds:
            _log.warning(
                "slow call: %s%s took %.0f ms",
                self.name,
                "".join(f" {k}={v}" for k, v in self._labels.items()),
                seconds * 1000.0,
                extra={"metric": self.name, "duration_ms": seconds * 1000.0},
            )

    # -- decorator -------------------------------------------------------------------------

    @overload
    def __call__(
        self, fn: Callable[_P, Coroutine[Any, Any, _R]]
    ) -> Callable[_P, Coroutine[Any, Any, _R]]: ...
    @overload
    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]: ...
    def __call__(self, fn: Callable[_P, Any]) -> Callable[_P, Any]:
        """Decorate ``fn`` (sync or async); the wrapper has ``fn``'s signature.

        Raises:
            ConfigurationError: ``fn`` is a (async) generator function.
        """
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigurationError(
                f"@timed({self.name!r}) cannot time generator function {fn.__qualname__!r}: "
                "its body runs while the caller iterates; time the consuming loop with "
                "`with timed(...)` instead"
            )
        record = self._record
        if inspect.iscoroutinefunction(fn):
            afn: Callable[_P, Awaitable[Any]] = fn

            @functools.wraps(fn)
            async def awrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                start = perf_counter()
                try:
                    result = await afn(*args, **kwargs)
                except BaseException as exc:
                    record(perf_counter() - start, exc)
                    raise
                record(perf_counter() - start, None)
                return result

            return awrapper

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            start = perf_counter()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                record(perf_counter() - start, exc)
                raise
            record(perf_counter() - start, None)
            return result

        return wrapper

    # -- context managers ------------------------------------------------------------------

    def __enter__(self) -> timed:
        if self._start is not None:
            raise ConfigurationError(
                f"timed({self.name!r}) is already timing a block; create one timed() per block"
            )
        self.elapsed = None
        self._start = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        start = self._start
        self._start = None
        if start is None:  # pragma: no cover - __exit__ without __enter__
            return
        self.elapsed = perf_counter() - start
        self._record(self.elapsed, exc)

    async def __aenter__(self) -> timed:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
