"""Each concern has its own seam: providers declare what they need, nobody reads privates.

- native structured output: a provider implements ``NativeStructuredOutput``; the structured
  module does not know the fake;
- what is operational (not part of the cache key): a provider's ``operational_fields``;
- the response cache takes the request's ingredients (model name, answer parameters), not the
  wrapper; it can serve any caller;
- LangChain's per-call signature inspection of ``_agenerate`` is not short-circuited by a
  patched ``__signature__``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel

import sight_core.llm._structured as structured_module
from sight_core.cache import Cache, MemoryBackend
from sight_core.llm import FakeChatModel, ResilientChatModel, ResponseCache
from sight_core.llm._resilient import _OPERATIONAL
from sight_core.llm._structured import NativeStructuredOutput, native_kwargs


class Pet(BaseModel):
    name: str


class SchemaAwareModel(FakeChatModel):
    """A custom provider: its own operational field, native structured output."""

    operational_fields: ClassVar[frozenset[str]] = frozenset({"pool_size"})
    pool_size: int = 4

    def native_structured_kwargs(self, json_schema: dict[str, Any]) -> dict[str, Any]:
        return {"response_json_schema": json_schema, "strict": True}


def test_structured_output_does_not_import_the_fake() -> None:
    source = Path(structured_module.__file__).read_text()
    modules = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, re.MULTILINE)
    assert "langchain_core.messages" in modules  # the pattern sees the imports
    assert not [m for m in modules if "_fake" in m]


async def test_a_custom_provider_gets_native_structured_output_through_the_protocol() -> None:
    model = SchemaAwareModel()
    assert isinstance(model, NativeStructuredOutput)
    wrapped = ResilientChatModel(model)
    kwargs = native_kwargs(wrapped, Pet.model_json_schema())
    assert kwargs == {"response_json_schema": Pet.model_json_schema(), "strict": True}
    pet = await wrapped.with_structured_output(Pet).ainvoke("a pet")
    assert isinstance(pet, Pet)


def test_the_wrapper_lists_no_fake_fields_and_providers_declare_their_own() -> None:
    assert not _OPERATIONAL & set(FakeChatModel.model_fields) - {"timeout"}
    wrapped = ResilientChatModel(SchemaAwareModel(pool_size=8))
    params = wrapped.answer_params()
    assert "pool_size" not in params  # the provider said it is operational
    assert "latency" not in params and "script" not in params  # the fake said so
    assert "temperature" in params


async def test_the_response_cache_serves_any_caller_from_request_ingredients() -> None:
    cache = Cache(prefix="seam")
    cache.bind(MemoryBackend())
    responses = ResponseCache(cache)
    calls = 0

    async def generate() -> ChatResult:
        nonlocal calls
        calls += 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage("hi"))])

    messages = [HumanMessage("hello")]
    _, hit1 = await responses.get_or_generate("m", {"t": 0}, messages, None, {}, generate)
    second, hit2 = await responses.get_or_generate("m", {"t": 0}, messages, None, {}, generate)
    assert (hit1, hit2, calls) == (False, True, 1)
    assert second.generations[0].message.text == "hi"


def test_no_signature_is_patched_onto_agenerate() -> None:
    assert "__signature__" not in vars(ResilientChatModel._agenerate)
    assert "run_manager" in inspect.signature(ResilientChatModel._agenerate).parameters


async def test_langchains_call_machinery_runs_once_per_wrapped_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wrapper calls the provider's ``_agenerate`` directly: LangChain's per-call work
    (callbacks, run manager, the signature inspection of ``_agenerate``) runs once, for the
    wrapper, never a second time for the provider. (The overhead benchmark relies on it.)"""
    entered: list[str] = []
    original = BaseChatModel._agenerate_with_cache

    async def counting(self: BaseChatModel, *args: Any, **kwargs: Any) -> ChatResult:
        entered.append(type(self).__name__)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(BaseChatModel, "_agenerate_with_cache", counting)
    wrapped = ResilientChatModel(FakeChatModel())
    assert (await wrapped.ainvoke("hello")).text
    assert entered == ["ResilientChatModel"]
