"""Structured output: native JSON mode where the provider has it, else JSON extraction.

:func:`structured_output` wraps a chat model into a Runnable that returns validated objects:

1. if the provider constrains output natively (Gemini's ``response_json_schema``, the fake
   model), the schema is sent with the request; otherwise an instruction with the JSON schema
   is appended to the prompt;
2. the answer's JSON is extracted (:func:`extract_json`: the whole text, a fenced
   ```` ```json ```` block, or the first JSON value after leading prose) and validated with
   pydantic;
3. on failure the model is asked **once** to repair its answer (the validation errors are
   sent back, the answer's values are not logged); a second failure raises
   :class:`~sight_core.errors.StructuredOutputError` naming the schema, with a redacted
   excerpt (keys kept, values masked) and no personal data.

:func:`parse_structured` is the parsing half alone, for text you already have.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol, cast, runtime_checkable

import orjson
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import Input, Output
from pydantic import BaseModel, TypeAdapter, ValidationError

from sight_core.errors import StructuredOutputError

__all__ = [
    "NativeStructuredOutput",
    "StructuredMethod",
    "StructuredOutput",
    "extract_json",
    "json_schema_of",
    "parse_structured",
    "redact_excerpt",
    "schema_name",
    "structured_output",
]

StructuredMethod = Literal["auto", "native", "json"]

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"(?P<key>\s*:)?|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?'
    r"|\b(?:true|false|null)\b|[^\W\d_]+"
)
_decoder = json.JSONDecoder()


def schema_name(schema: Any) -> str:
    """A readable name for a schema: the class name or the JSON schema's ``title``."""
    if isinstance(schema, Mapping):
        return str(schema.get("title") or "json-schema")
    return str(getattr(schema, "__name__", None) or schema)


def json_schema_of(schema: Any) -> dict[str, Any]:
    """The JSON schema of a pydantic model, TypedDict, dataclass or type; dicts pass through."""
    if isinstance(schema, Mapping):
        return dict(schema)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return _adapter(schema).json_schema()


@lru_cache(maxsize=256)
def _adapter(schema: Any) -> TypeAdapter[Any]:
    return TypeAdapter(schema)


def redact_excerpt(text: str, limit: int = 160) -> str:
    """``text`` with JSON keys kept and everything else masked, cut to ``limit`` characters.

    String values become ``"***"``, numbers ``#`` and prose words ``…``: enough to see the
    answer's shape (a missing key, prose around the JSON, truncation) without its content.
    """

    def mask(m: re.Match[str]) -> str:
        token = m.group(0)
        if token.startswith('"'):
            return token if m.group("key") else '"***"'
        if token in ("true", "false", "null"):
            return token
        if token[0].isdigit() or token[0] == "-":
            return "#"
        return "…"

    masked = _TOKEN.sub(mask, text.strip())
    masked = re.sub(r"\s+", " ", masked)
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer.

    Tries, in order: the whole text; each fenced code block; the first ``{``/``[`` from which
    a complete JSON value decodes (leading and trailing prose are ignored).

    Raises:
        ValueError: no JSON value was found.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("the answer is empty")
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        pass
    for block in _FENCE.findall(stripped):
        try:
            return orjson.loads(block.strip())
        except orjson.JSONDecodeError:
            continue
    for i, char in enumerate(stripped):
        if char in "{[":
            try:
                value, _ = _decoder.raw_decode(stripped, i)
            except ValueError:
                continue
            return value
    raise ValueError("no JSON value found in the answer")


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in error["loc"]) or "<root>"
        parts.append(f"{loc}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_structured(text: str, schema: Any) -> Any:
    """Extract the JSON in ``text`` and validate it against ``schema``.

    ``schema`` may be a pydantic model (an instance is returned), any type pydantic can
    validate (TypedDict, dataclass, ``list[Model]``), or a JSON-schema dict (the decoded
    value is returned after checking its top-level type and required keys).

    Raises:
        StructuredOutputError: no JSON, or it does not validate; the message names the
            schema and the failing fields and shows a redacted excerpt of the answer.
    """
    name = schema_name(schema)
    try:
        value = extract_json(text)
    except ValueError as exc:
        raise StructuredOutputError(
            f"answer is not valid JSON for schema {name}: {exc} (excerpt: {redact_excerpt(text)!r})"
        ) from None
    if isinstance(schema, Mapping):
        problem = _check_dict_schema(value, schema)
        if problem is not None:
            raise StructuredOutputError(
                f"answer does not match schema {name}: {problem} "
                f"(excerpt: {redact_excerpt(text)!r})"
            )
        return value
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return schema.model_validate(value)
        return _adapter(schema).validate_python(value)
    except ValidationError as exc:
        raise StructuredOutputError(
            f"answer does not match schema {name}: {_summarise(exc)} "
            f"(excerpt: {redact_excerpt(text)!r})"
        ) from None


def _check_dict_schema(value: Any, schema: Mapping[str, Any]) -> str | None:
    expected = schema.get("type")
    if expected == "object" or (expected is None and "properties" in schema):
        if not isinstance(value, dict):
            return f"expected an object, got {type(value).__name__}"
        missing = [k for k in schema.get("required", ()) if k not in value]
        return f"missing required key(s) {', '.join(missing)}" if missing else None
    if expected == "array" and not isinstance(value, list):
        return f"expected an array, got {type(value).__name__}"
    return None


def _innermost(model: Runnable[Any, Any]) -> Runnable[Any, Any]:
    seen = 0
    while seen < 4:
        inner = getattr(model, "primary", None)
        if not isinstance(inner, Runnable):
            return model
        model, seen = inner, seen + 1
    return model


@runtime_checkable
class NativeStructuredOutput(Protocol):
    """A provider model that constrains its answers to a JSON schema itself.

    :func:`native_kwargs` asks it for the request keywords that do so; the fake provider
    implements it, and a custom provider can too.
    """

    def native_structured_kwargs(self, json_schema: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for a request whose answer must match ``json_schema``."""
        ...


def native_kwargs(model: Runnable[Any, Any], json_schema: dict[str, Any]) -> dict[str, Any] | None:
    """Request kwargs that make ``model``'s provider constrain its answer, or ``None``: Gemini's
    JSON mode, or what a :class:`NativeStructuredOutput` provider asks for."""
    inner = _innermost(model)
    google = sys.modules.get("langchain_google_genai.chat_models")
    if google is not None and isinstance(inner, google.ChatGoogleGenerativeAI):
        return {"response_mime_type": "application/json", "response_json_schema": json_schema}
    if isinstance(inner, NativeStructuredOutput):
        return inner.native_structured_kwargs(json_schema)
    return None


def _instruction(json_schema: dict[str, Any], name: str) -> str:
    return (
        f"Answer with a single JSON value for the schema {name!r} and nothing else "
        f"(no prose, no code fences). JSON schema:\n{orjson.dumps(json_schema).decode()}"
    )


def _repair_prompt(error: StructuredOutputError, name: str) -> str:
    return (
        f"Your previous answer could not be used: {error}. Reply again with only a JSON value "
        f"that validates against the schema {name!r}."
    )


def _as_messages(value: LanguageModelInput) -> list[BaseMessage]:
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(value)]
    return convert_to_messages(cast("Sequence[Any]", value))


class StructuredOutput(Runnable[LanguageModelInput, Any]):
    """A Runnable returning validated objects; see :func:`structured_output`."""

    def __init__(
        self,
        model: BaseChatModel,
        schema: Any,
        *,
        method: StructuredMethod = "auto",
        include_raw: bool = False,
        repair: bool = True,
    ) -> None:
        self.model = model
        self.schema = schema
        self.include_raw = include_raw
        self.repair = repair
        self.name_ = schema_name(schema)
        json_schema = json_schema_of(schema)
        native = native_kwargs(model, json_schema) if method != "json" else None
        if method == "native" and native is None:
            from sight_core.errors import ConfigurationError

            raise ConfigurationError(
                f"structured_output(method='native'): {type(_innermost(model)).__name__} has "
                "no native structured output; use method='auto' or 'json'"
            )
        self.native = native is not None
        self._instruction = None if native is not None else _instruction(json_schema, self.name_)
        ls_format = {"kwargs": {"method": "json_schema"}, "schema": json_schema}
        self.bound: Runnable[LanguageModelInput, BaseMessage] = model.bind(
            ls_structured_output_format=ls_format, **(native or {})
        )

    @property
    def InputType(self) -> Any:
        return self.model.InputType

    def _prompt(self, value: LanguageModelInput) -> list[BaseMessage]:
        messages = _as_messages(value)
        if self._instruction is not None:
            messages.append(HumanMessage(self._instruction))
        return messages

    def _result(self, raw: BaseMessage, parsed: Any, error: Exception | None) -> Any:
        if self.include_raw:
            return {"raw": raw, "parsed": parsed, "parsing_error": error}
        if error is not None:
            raise error
        return parsed

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        messages = self._prompt(input)
        raw = self.bound.invoke(messages, config, **kwargs)
        try:
            return self._result(raw, parse_structured(raw.text, self.schema), None)
        except StructuredOutputError as first:
            if not self.repair:
                return self._result(raw, None, first)
            retry = [*messages, _as_ai(raw), HumanMessage(_repair_prompt(first, self.name_))]
            raw = self.bound.invoke(retry, config, **kwargs)
            return self._second(raw)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        messages = self._prompt(input)
        raw = await self.bound.ainvoke(messages, config, **kwargs)
        try:
            return self._result(raw, parse_structured(raw.text, self.schema), None)
        except StructuredOutputError as first:
            if not self.repair:
                return self._result(raw, None, first)
            retry = [*messages, _as_ai(raw), HumanMessage(_repair_prompt(first, self.name_))]
            raw = await self.bound.ainvoke(retry, config, **kwargs)
            return self._second(raw)

    def _second(self, raw: BaseMessage) -> Any:
        try:
            parsed = parse_structured(raw.text, self.schema)
        except StructuredOutputError as exc:
            error = StructuredOutputError(f"{exc} (after one repair attempt)")
            return self._result(raw, None, error)
        return self._result(raw, parsed, None)


def _as_ai(message: BaseMessage) -> AIMessage:
    if isinstance(message, AIMessage):
        return AIMessage(content=message.content)
    return AIMessage(content=message.text)


def structured_output(
    model: BaseChatModel,
    schema: Any,
    *,
    method: StructuredMethod = "auto",
    include_raw: bool = False,
    repair: bool = True,
) -> Runnable[Input, Output]:
    """``model`` answering with ``schema`` objects, validated, with one repair attempt.

    Args:
        model: any LangChain chat model (a model from ``build_chat_model`` keeps its retries,
            breaker and usage accounting for both the first call and the repair).
        schema: a pydantic model, a type pydantic validates, or a JSON-schema dict.
        method: ``"auto"`` uses the provider's native JSON mode when it has one, else prompt
            instructions + extraction; ``"native"`` requires it; ``"json"`` never uses it.
        include_raw: return ``{"raw", "parsed", "parsing_error"}`` instead of raising.
        repair: ask the model once to fix an invalid answer (costs one more call).

    Raises (on invoke):
        StructuredOutputError: still invalid after the repair attempt.
        ConfigurationError: ``method="native"`` on a provider without it (at build time).
    """
    return cast(
        "Runnable[Input, Output]",
        StructuredOutput(model, schema, method=method, include_raw=include_raw, repair=repair),
    )
