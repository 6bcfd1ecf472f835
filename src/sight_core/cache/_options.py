"""Per-function cache options, validated once at decoration time."""

from __future__ import annotations

import random
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sight_core.errors import ConfigurationError

from ._codecs import Codec
from ._keys import check_name

__all__ = ["Options", "return_annotation"]


@dataclass(frozen=True, slots=True)
class Options:
    """What ``@cache.cached(...)`` was given (see its docstring)."""

    namespace: str
    version: int
    ttl: float
    key: str | None
    tags: tuple[str, ...]
    condition: Callable[[Any], bool] | None
    cache_none: bool
    none_ttl: float | None
    stale_ttl: float
    early_refresh: float
    jitter: float
    lock: bool
    codec: Codec | None
    local: bool | None

    def __post_init__(self) -> None:
        check_name("namespace", self.namespace)
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 0:
            raise ConfigurationError(f"cache version must be an int >= 0, got {self.version!r}")
        for name in ("ttl", "stale_ttl", "early_refresh", "jitter"):
            value = getattr(self, name)
            if value < 0 or (name == "ttl" and value == 0):
                raise ConfigurationError(f"cache {name} must be positive, got {value!r}")
        if self.jitter >= 1:
            raise ConfigurationError(f"cache jitter is a fraction below 1, got {self.jitter!r}")
        if self.none_ttl is not None and self.none_ttl <= 0:
            raise ConfigurationError(f"cache none_ttl must be positive, got {self.none_ttl!r}")
        if isinstance(self.tags, str):
            raise ConfigurationError("cache tags must be a tuple of templates, not one string")

    def ttl_for(self, value: Any) -> float:
        """Seconds to keep ``value`` fresh, with jitter (up to ``jitter`` shorter)."""
        ttl = self.none_ttl if value is None and self.none_ttl is not None else self.ttl
        if self.jitter:
            ttl *= 1.0 - random.random() * self.jitter  # jitter, not security
        return ttl


def return_annotation(fn: Callable[..., Any]) -> Any:
    """The function's resolved return annotation (``Any`` when absent).

    Raises:
        NameError: a forward reference cannot be resolved yet.
    """
    hints = typing.get_type_hints(fn)
    return hints.get("return", Any)
