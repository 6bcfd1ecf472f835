"""The decorator form shared by :class:`RetryPolicy` and :class:`CircuitBreaker`."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["through"]

P = ParamSpec("P")
T = TypeVar("T")


def through(
    call: Callable[Concatenate[Callable[P, Awaitable[T]], P], Awaitable[T]],
    fn: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """``fn`` with every call routed through ``call(fn, *args, **kwargs)``; keeps the name,
    docstring and signature (``__wrapped__``). Costs one extra coroutine frame per call."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await call(fn, *args, **kwargs)

    return wrapper
