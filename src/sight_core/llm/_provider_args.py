"""The keyword arguments a provider model refuses, the same for every provider.

``build_chat_model(..., **overrides)`` hands overrides to the provider's constructor. Two
mistakes must fail at build time, with the fix in the message, whatever the provider:
turning the SDK's own retries back on (``max_retries``, ``retries``: sight-core's policy
retries, the SDK makes one attempt), and a misspelt field (``temprature=0.2`` would otherwise
be ignored with at most a log line, and the model would run with its default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from difflib import get_close_matches
from typing import Any

from sight_core.errors import ConfigurationError

__all__ = ["SDK_RETRY_ARGS", "check_provider_kwargs", "field_names"]

SDK_RETRY_ARGS = frozenset({"max_retries", "retries"})


def field_names(model_type: type) -> frozenset[str]:
    """Field names and aliases of a pydantic model class."""
    fields: Mapping[str, Any] = getattr(model_type, "model_fields", {})
    names = set(fields)
    names.update(f.alias for f in fields.values() if getattr(f, "alias", None))
    return frozenset(names)


def check_provider_kwargs(provider: str, kwargs: Iterable[str], valid: frozenset[str]) -> None:
    """Raise :class:`ConfigurationError` for SDK retry options or unknown keywords.

    Raises:
        ConfigurationError: names the argument, and the closest valid one for a typo.
    """
    given = set(kwargs)
    retries = SDK_RETRY_ARGS & given
    if retries:
        raise ConfigurationError(
            f"{provider}: {', '.join(sorted(retries))} cannot be set; retries are done by "
            "sight-core's policy (SIGHT_LLM__MAX_ATTEMPTS), the SDK makes a single attempt"
        )
    for name in sorted(given - valid):
        close = get_close_matches(name, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(f"{provider}: unknown argument {name!r}{hint}")
