"""Decoration-time checks of ``@cache.cached``: what a function may cache, and under which keys.

What can be known before the first call is checked once, when the decorator runs, and refused
with a :class:`~sight_core.errors.ConfigurationError` that names the function, the problem and
the fix:

- a key template does not forget its braces (``key="persona_id"`` would serve one entry to
  every caller);
- no two functions share a namespace and version on one ``Cache`` (they would read each
  other's entries);
- the return annotation round-trips through JSON: no bare ``BaseModel``, no pydantic field
  with ``exclude=True`` or a masked secret, no alias without ``populate_by_name``, and a type
  pydantic can build a schema for (else the error names :class:`PickleCodec`);
- a method's default key can identify its instance: the class defines ``__cache_key__``
  (checked when the class is created).

A return annotation that cannot be resolved yet (a forward reference, a name imported under
``TYPE_CHECKING``) is resolved before the first computation (or decode), and refused then the
same way, before the function runs.
What only a value can show (a subclass of the annotated model, a tuple under ``-> dict``) is
caught by :meth:`JsonCodec.encode`, which refuses values that do not round-trip.
"""

from __future__ import annotations

import dataclasses
import inspect
import string
import typing
import weakref
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.types import _SecretBase

from sight_core.errors import ConfigurationError

from ._codecs import Codec, JsonCodec, type_name
from ._options import Options, return_annotation

__all__ = ["DeferredJsonCodec", "check_cached", "check_method_owner", "ensure_resolved"]

# Which function holds each (kind, namespace, version) of a Cache. Weak: a Cache that is
# dropped (a test's) takes its registrations with it.
_REGISTERED: weakref.WeakKeyDictionary[object, dict[tuple[str, str, int], str]] = (
    weakref.WeakKeyDictionary()
)


def _identity(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def check_cached(
    cache: object,
    fn: Callable[..., Any],
    options: Options,
    *,
    many: bool = False,
) -> Codec:
    """Check ``fn`` decorated with ``options`` on ``cache``; return the codec for its values.

    ``many`` is for ``cached_many``: the values are those of the returned ``dict[K, V]``, and
    one batch function may share a namespace with one single-value function (its documented
    pairing), not with another batch function.

    Raises:
        ConfigurationError: a key or tag template without braces, a namespace and version
            already used by another function of ``cache``, or a return annotation whose values
            would not round-trip.
    """
    qualname = getattr(fn, "__qualname__", repr(fn))
    names = list(inspect.signature(fn).parameters)
    if options.key is not None:
        _check_template(qualname, names, options.key, "key", constant_ok=False)
    for tag in options.tags:
        _check_template(qualname, names, tag, "tag", constant_ok=True)
    _register(cache, fn, options, "cached_many" if many else "cached")
    if options.codec is not None:
        return options.codec
    pick = _mapping_value if many else _same
    try:
        annotation = pick(return_annotation(fn))
    except NameError:
        return DeferredJsonCodec(fn, pick)
    return json_codec(qualname, annotation)


def check_method_owner(owner: type, name: str, options: Options) -> None:
    """A cached function became method ``name`` of ``owner``: its default key renders the
    instance, which needs ``owner.__cache_key__``.

    Raises:
        ConfigurationError: no ``key=`` and ``owner`` does not define ``__cache_key__``.
    """
    if options.key is not None or hasattr(owner, "__cache_key__"):
        return
    cls = owner.__name__
    raise ConfigurationError(
        f"@cache.cached on {owner.__qualname__}.{name}: the default key includes the "
        f"instance, and {cls} does not say what identifies it, so two instances would share "
        f"entries. Define {cls}.__cache_key__(self) returning what the results depend on "
        "(e.g. the tenant id; () for a stateless service), or pass key='{...}' naming the "
        "arguments that identify the result"
    )


def _check_template(
    qualname: str, names: list[str], template: str, what: str, *, constant_ok: bool
) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return  # KeyRenderer reports malformed templates
    fields = [field for _, field, _, _ in parsed if field is not None]
    literals = [part for literal, _, _, _ in parsed for part in literal.split(":") if part]
    used = {field.split(".")[0] for field in fields}
    bare = [part for part in literals if part in names and part not in used]
    identifying = [n for n in names if n not in ("self", "cls")]
    if bare:
        fixed = template
        for part in bare:
            fixed = ":".join("{" + p + "}" if p == part else p for p in fixed.split(":"))
        raise ConfigurationError(
            f"{what}={template!r} of {qualname} names the argument {bare[0]!r} without braces, "
            f"so it is literal text and every call shares it; write {what}={fixed!r}"
        )
    if not fields and not constant_ok and identifying:
        suggestion = ":".join("{" + n + "}" for n in identifying)
        raise ConfigurationError(
            f"key={template!r} of {qualname} has no {{placeholder}}, so every call would share "
            f"one entry; name the arguments that identify the result, e.g. key={suggestion!r}"
        )


def _register(cache: object, fn: Callable[..., Any], options: Options, kind: str) -> None:
    registered = _REGISTERED.setdefault(cache, {})
    slot = (kind, options.namespace, options.version)
    identity = _identity(fn)
    holder = registered.get(slot)
    if holder is not None and holder != identity:
        raise ConfigurationError(
            f"{identity} and {holder} are both cached under namespace={options.namespace!r} "
            f"version={options.version} of one Cache: they would read each other's entries. "
            "Give each function its own namespace"
        )
    registered[slot] = identity  # the same function decorated again (a reload) replaces it


def _same(annotation: Any) -> Any:
    return annotation


def _mapping_value(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    return args[1] if len(args) == 2 else Any


def json_codec(qualname: str, annotation: Any) -> JsonCodec:
    """A :class:`JsonCodec` for ``annotation``, once it is known to round-trip.

    Raises:
        ConfigurationError: values of ``annotation`` would not round-trip, or pydantic has no
            schema for it.
    """
    problem = _round_trip_problem(annotation, set())
    if problem is not None:
        raise ConfigurationError(
            f"@cache.cached {qualname} -> {type_name(annotation)}: {problem}; a hit would "
            "differ from the miss"
        )
    try:
        return JsonCodec(annotation)
    except Exception as exc:  # pydantic's PydanticSchemaGenerationError and relatives
        raise ConfigurationError(
            f"@cache.cached {qualname} -> {type_name(annotation)}: pydantic cannot store this "
            f"type as JSON ({type(exc).__name__}). Return a model, dataclass or JSON type, or "
            "pass codec=PickleCodec(secret_key) for values only pickle can carry"
        ) from None


def _round_trip_problem(annotation: Any, seen: set[int]) -> str | None:
    """Why values of ``annotation`` would not come back equal from JSON, or None."""
    if id(annotation) in seen:
        return None
    seen.add(id(annotation))
    if annotation is BaseModel:
        return (
            "a bare BaseModel decodes every model as an empty BaseModel; annotate the "
            "concrete model class"
        )
    if inspect.isclass(annotation):
        if issubclass(annotation, _SecretBase):
            return (
                f"a {annotation.__name__} is masked when serialized; cache the value it "
                "protects elsewhere, or leave it out of the result"
            )
        if issubclass(annotation, BaseModel):
            return _model_problem(annotation, seen)
        if dataclasses.is_dataclass(annotation):
            try:
                hints = typing.get_type_hints(annotation)
            except NameError:
                return None  # pydantic will say
            for field in dataclasses.fields(annotation):
                problem = _round_trip_problem(hints.get(field.name, Any), seen)
                if problem is not None:
                    return problem
        return None
    for arg in typing.get_args(annotation):
        problem = _round_trip_problem(arg, seen)
        if problem is not None:
            return problem
    return None


def _model_problem(model: type[BaseModel], seen: set[int]) -> str | None:
    config = model.model_config
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    by_alias = bool(config.get("serialize_by_alias"))
    for name, field in model.model_fields.items():
        where = f"field {model.__qualname__}.{name}"
        if field.exclude:
            return (
                f"{where} has exclude=True, so a hit would come back without it; drop "
                "exclude=True, or cache a model without the field"
            )
        alias = field.validation_alias if field.validation_alias is not None else field.alias
        if alias is not None and alias != name and not by_name and not by_alias:
            return (
                f"{where} has the alias {alias!r} and {model.__qualname__} does not set "
                "populate_by_name=True, so stored values (written by field name) would never "
                "decode; add model_config = ConfigDict(populate_by_name=True)"
            )
        problem = _round_trip_problem(field.annotation, seen)
        if problem is not None:
            return problem
    if model.model_computed_fields and config.get("extra") == "forbid":
        return (
            f"{model.__qualname__} has computed fields and extra='forbid', so its own JSON "
            "would not validate; allow or ignore extra fields"
        )
    return None


class DeferredJsonCodec:
    """The JSON codec of a function whose return annotation could not be resolved when it
    was decorated (a forward reference); resolved, and checked, at the first encode or decode.

    Raises (from ``encode``/``decode``):
        ConfigurationError: the annotation still names something undefined (e.g. imported
            only under ``TYPE_CHECKING``), or would not round-trip.
    """

    __slots__ = ("_codec", "_fn", "_pick")

    def __init__(self, fn: Callable[..., Any], pick: Callable[[Any], Any]) -> None:
        self._fn = fn
        self._pick = pick
        self._codec: JsonCodec | None = None

    def resolve(self) -> JsonCodec:
        """The codec, resolving the annotation now if not done yet."""
        codec = self._codec
        if codec is None:
            qualname = getattr(self._fn, "__qualname__", repr(self._fn))
            try:
                annotation = self._pick(return_annotation(self._fn))
            except NameError as exc:
                missing = getattr(exc, "name", None) or str(exc)
                raise ConfigurationError(
                    f"@cache.cached {qualname}: its return annotation names {missing!r}, which "
                    "is not defined at run time (imported only under TYPE_CHECKING?), so its "
                    "values cannot be decoded. Import it at run time, or pass "
                    "codec=JsonCodec(<the return type>)"
                ) from None
            codec = self._codec = json_codec(qualname, annotation)
        return codec

    def encode(self, value: Any) -> bytes:
        return self.resolve().encode(value)

    def decode(self, data: bytes) -> Any:
        return self.resolve().decode(data)


def ensure_resolved(codec: Codec) -> None:
    """Resolve ``codec`` now if it is deferred: called before computing, so a return annotation
    that still names something undefined is refused before the function runs.

    Raises:
        ConfigurationError: as :meth:`DeferredJsonCodec.resolve`.
    """
    if type(codec) is DeferredJsonCodec:
        codec.resolve()
