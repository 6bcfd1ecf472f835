"""What the library knows about each model: context window, output cap, input modalities.

A small, static registry consulted by the resilient wrapper (a prompt too long for a model
falls back only to a model with a *larger* window: same-size windows would refuse it again,
a wasted request) and available to services (``model_info("gemini-2.5-pro").context_window``).
Prices are not duplicated here: :func:`model_price` reads them from the usage price table
(``SIGHT_LLM__PRICES`` merged over the built-in one), the single place prices live.

Names are matched like prices: exact, else the longest known name the model is a release of
(``gemini-2.5-flash-preview-09-2025`` is a ``gemini-2.5-flash``; ``gemini-2.5-flash-image`` is
not). Figures from Google's model
pages (input token limit, output token limit, inputs accepted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Final

from ._usage import is_release_of, normalize_model_name, price_for

if TYPE_CHECKING:
    from sight_core.settings import ModelPrice

__all__ = ["MODELS", "ModelInfo", "model_info", "model_price", "overflow_target"]

_GEMINI_INPUTS: Final = frozenset({"text", "image", "audio", "video", "pdf"})


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model's limits.

    Attributes:
        name: the model name (as priced and recorded).
        context_window: input tokens the model accepts.
        max_output_tokens: output tokens it can produce.
        modalities: input kinds it accepts (``"text"``, ``"image"``, ``"audio"``, ...).
    """

    name: str
    context_window: int
    max_output_tokens: int
    modalities: frozenset[str]


def _info(name: str, window: int, output: int, inputs: frozenset[str]) -> tuple[str, ModelInfo]:
    return name, ModelInfo(name, window, output, inputs)


MODELS: Final[Mapping[str, ModelInfo]] = dict(
    [
        _info("gemini-2.5-pro", 1_048_576, 65_536, _GEMINI_INPUTS),
        _info("gemini-2.5-flash", 1_048_576, 65_536, _GEMINI_INPUTS),
        _info("gemini-2.5-flash-lite", 1_048_576, 65_536, _GEMINI_INPUTS),
        _info("gemini-2.0-flash", 1_048_576, 8_192, _GEMINI_INPUTS),
        _info("gemini-2.0-flash-lite", 1_048_576, 8_192, _GEMINI_INPUTS),
        _info("gemini-1.5-pro", 2_097_152, 8_192, _GEMINI_INPUTS),
        _info("gemini-1.5-flash", 1_048_576, 8_192, _GEMINI_INPUTS),
        # the fake provider mirrors the Gemini tiers it stands in for
        _info("fake-pro", 1_048_576, 65_536, frozenset({"text"})),
        _info("fake-flash", 1_048_576, 65_536, frozenset({"text"})),
    ]
)
"""The known models, by normalized name."""


def model_info(name: str) -> ModelInfo | None:
    """The registry entry of ``name`` (exact, else the longest known name it is a release of), or
    ``None`` for a model the library does not know."""
    key = normalize_model_name(name)
    found = MODELS.get(key)
    if found is not None:
        return found
    best: str | None = None
    for known in MODELS:
        if is_release_of(key, known) and (best is None or len(known) > len(best)):
            best = known
    return MODELS[best] if best is not None else None


@cache
def _builtin_prices() -> Mapping[str, ModelPrice]:
    from sight_core.settings import LLMSettings

    return LLMSettings.model_fields["prices"].get_default(call_default_factory=True)  # type: ignore[no-any-return]


def model_price(name: str, prices: Mapping[str, ModelPrice] | None = None) -> ModelPrice | None:
    """The price of ``name`` from ``prices`` (default: the built-in table), via the usage
    module's :func:`~sight_core.llm.price_for`: the one place prices are looked up."""
    return price_for(name, prices if prices is not None else _builtin_prices())


def overflow_target(model: str, candidates: list[str]) -> int | None:
    """Index of the first of ``candidates`` whose context window is larger than ``model``'s, or
    ``None``: a prompt that overflows ``model`` cannot fit a same-size (or unknown) window."""
    current = model_info(model)
    if current is None:
        return None
    for i, name in enumerate(candidates):
        info = model_info(name)
        if info is not None and info.context_window > current.context_window:
            return i
    return None
