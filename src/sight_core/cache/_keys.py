"""Cache keys: canonical, collision-free rendering of arguments and key templates.

A key is ``{prefix}:v{version}:{namespace}:{rendered}``. ``rendered`` comes from a template such
as ``"{persona_id}:project:{project_id}"`` or, without one, from every argument in signature
order joined by ``:`` (a method's ``self`` too, through :class:`CacheKeyed`). Each value
renders to a *part* that never contains ``:``, so parts cannot bleed into each other:

- ``str``: kept as is when it only holds ``[A-Za-z0-9_.@+-]``; otherwise percent-encoded
  (UTF-8); longer than 64 characters once encoded: ``#`` + a 128-bit BLAKE2b digest;
  the empty string is ``!e``.
- ``int`` decimal, ``float`` ``repr``, ``bool`` ``!t``/``!f``, ``None`` ``!n``, ``UUID``,
  ``Decimal``, dates and times in ISO form, ``Enum`` by value, ``bytes`` ``!b`` + hex.
- sequences ``[a,b]``, sets sorted, mappings ``{k=v,...}`` sorted; pydantic models and
  dataclasses by the parts of *every* field (excluded fields included: two values that differ
  only there are different arguments), digested; anything longer than 64 characters is
  digested with ``#``.
- secrets (pydantic ``SecretStr``, ``SecretBytes``, ``Secret``): always a digest of the secret,
  never the secret itself.
- an object whose class defines ``__cache_key__`` (see :class:`CacheKeyed`): its class name and
  the part of what ``__cache_key__()`` returns; a class: its qualified name.

The marker characters (``!#[]{},=%``) are always percent-encoded inside strings, so a string
never renders like a value of another kind or like a digest. Values of *different* types that
print alike (``1`` and ``"1"``) do share a part: annotate parameters with one type.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import inspect
import re
import string
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import pydantic_core
from pydantic import BaseModel, Secret, SecretBytes, SecretStr

from sight_core.errors import ConfigurationError

__all__ = ["CacheKeyed", "KeyRenderer", "check_name", "render_part", "tag_name", "tag_part"]

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@+-")
_SAFE_RE = re.compile(r"[A-Za-z0-9_.@+\-]*")
_TAG_SAFE = _SAFE | {":"}
_TAG_SAFE_RE = re.compile(r"[A-Za-z0-9_.@+\-:]+")
_MAX_TAG = 200
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_MAX_PART = 64
_MISSING: Any = object()
_SECRETS = (SecretStr, SecretBytes, Secret)


@runtime_checkable
class CacheKeyed(Protocol):
    """An object that says what identifies it in a cache key.

    Define ``__cache_key__`` on a class whose instances are arguments of cached functions, most
    often the ``self`` of a cached method: ``Repo("tenant-a").get(1)`` and
    ``Repo("tenant-b").get(1)`` then get different entries. Return what identifies the
    instance for the result (a tenant id, a tuple of settings), in any type a key argument may
    have; return ``()`` for a stateless service whose results never depend on the instance.
    """

    def __cache_key__(self) -> Any: ...


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid prefix or namespace (``[A-Za-z0-9_.-]+``).

    Raises:
        ConfigurationError: it is not.
    """
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(f"cache {kind} {value!r} must match [A-Za-z0-9_.-]+")
    return value


def _digest(text: str) -> str:
    return "#" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _secret_digest(value: Any) -> str:
    secret = render_part(value.get_secret_value())
    return (
        "!s" + hashlib.blake2b(secret.encode(), digest_size=16, person=b"sight-secret").hexdigest()
    )


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_PART else _digest(text)


def _quote(value: str) -> str:
    if not value:
        return "!e"  # so that [""] and [] differ
    if len(value) <= _MAX_PART and _SAFE_RE.fullmatch(value):
        return value
    return _bounded(_percent_encode(value, _SAFE))


def _percent_encode(value: str, safe: frozenset[str]) -> str:
    """``value`` with every character outside ``safe`` as ``%XX`` UTF-8 bytes (injective
    while ``%`` is not in ``safe``)."""
    out = []
    for ch in value:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def tag_part(value: Any) -> str:
    """How one argument renders inside a tag: a ``str`` as it is (so an f-string of the same
    words names the same tag), anything else as :func:`render_part`.

    Raises:
        TypeError: the value's type has no canonical form.
    """
    return value if type(value) is str else render_part(value)


def tag_name(tag: str) -> str:
    """The form of a rendered tag inside Redis key names, used by the write and by every
    invalidation alike: characters outside ``[A-Za-z0-9_.@+:-]`` percent-encoded (no glob
    character, brace or space ever reaches a key name), ``!e`` for the empty tag, and
    ``#`` + a 128-bit digest past 200 characters. Distinct tags get distinct names."""
    if not tag:
        return "!e"
    if len(tag) <= _MAX_TAG and _TAG_SAFE_RE.fullmatch(tag):
        return tag
    encoded = _percent_encode(tag, _TAG_SAFE)
    return encoded if len(encoded) <= _MAX_TAG else _digest(encoded)


def _field_part(value: Any) -> str:
    """The part of a model or dataclass field: canonical when it has one, else pydantic's JSON."""
    try:
        return render_part(value)
    except TypeError:
        try:
            body = pydantic_core.to_json(value)
        except Exception:
            raise TypeError(
                f"no canonical cache-key form for a field of type {type(value).__name__}"
            ) from None
        return _digest("!j" + body.decode())


def _record_part(value: Any, fields: list[tuple[str, Any]]) -> str:
    body = ",".join(f"{name}={_field_part(field)}" for name, field in fields)
    return _digest(f"{type(value).__module__}.{type(value).__qualname__}|{body}")


def render_part(value: Any) -> str:
    """The canonical key part of one value (never contains ``:``).

    Raises:
        TypeError: the value's type has no canonical form (a client, a session...).
    """
    cls = type(value)
    if cls is str:
        return _quote(value)
    if cls is int or cls is UUID:
        return str(value)
    renderer = _RENDERERS.get(cls)
    if renderer is None:
        if len(_RENDERERS) >= _MAX_RENDERERS:
            _RENDERERS.clear()  # classes made at run time must not grow it without bound
        renderer = _RENDERERS[cls] = _renderer_for(cls)
    return renderer(value)


_Renderer = Callable[[Any], str]
_RENDERERS: dict[type, _Renderer] = {}
_MAX_RENDERERS = 4096


def _model_part(value: BaseModel) -> str:
    # Every field (excluded ones too) and the extras: the serialized form would hide excluded
    # fields and mask secrets, so two different arguments would share a key.
    fields = list(value.__dict__.items())
    if value.__pydantic_extra__:
        fields.extend(sorted(value.__pydantic_extra__.items()))
    return _record_part(value, fields)


def _dataclass_part(value: Any) -> str:
    return _record_part(
        value, [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    )


def _mapping_part(value: Mapping[Any, Any]) -> str:
    items = sorted(f"{render_part(k)}={render_part(v)}" for k, v in value.items())
    return _bounded("{" + ",".join(items) + "}")


def _set_part(value: Any) -> str:
    return _bounded("[" + ",".join(sorted(render_part(v) for v in value)) + "]!s")


def _sequence_part(value: Sequence[Any]) -> str:
    return _bounded("[" + ",".join(render_part(v) for v in value) + "]")


def _renderer_for(cls: type) -> _Renderer:
    """How values of ``cls`` render; decided once per class (``render_part`` remembers it)."""
    if cls is type(None):
        return lambda value: "!n"
    if issubclass(cls, bool):
        return lambda value: "!t" if value else "!f"
    if issubclass(cls, enum.Enum):
        return lambda value: render_part(value.value)
    if issubclass(cls, str):
        return lambda value: _quote(str(value))
    if issubclass(cls, int):
        return lambda value: str(int(value))
    if issubclass(cls, UUID | Decimal):
        return lambda value: _quote(str(value))
    if issubclass(cls, float):
        return lambda value: _quote(repr(value))
    if issubclass(cls, dt.datetime | dt.date | dt.time):
        return lambda value: _quote(value.isoformat())
    if issubclass(cls, dt.timedelta):
        return lambda value: f"!d{value.days}.{value.seconds}.{value.microseconds}"
    if issubclass(cls, bytes | bytearray | memoryview):
        return lambda value: _bounded("!b" + bytes(value).hex())
    hook = getattr(cls, "__cache_key__", None)
    if hook is not None:
        name = _quote(cls.__name__)
        return lambda value: _bounded("!o" + name + "=" + render_part(hook(value)))
    if issubclass(cls, _SECRETS):
        return _secret_digest
    if issubclass(cls, type):
        return lambda value: "!c" + _quote(f"{value.__module__}.{value.__qualname__}")
    if issubclass(cls, BaseModel):
        return _model_part
    if dataclasses.is_dataclass(cls):
        return _dataclass_part
    if issubclass(cls, Mapping):
        return _mapping_part
    if issubclass(cls, set | frozenset):
        return _set_part
    if issubclass(cls, Sequence):
        return _sequence_part
    message = (
        f"no canonical cache-key form for {cls.__name__} (define {cls.__name__}.__cache_key__() "
        "returning what identifies it)"
    )

    def refuse(value: Any) -> str:
        raise TypeError(message)

    return refuse


_Getter = Callable[[Sequence[Any]], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    index: int
    attrs: tuple[str, ...]


class KeyRenderer:
    """Renders the variable part of a key from a call's arguments; built once per function.

    The common calls (all positional, or all by keyword, no ``*args``/``**kwargs``) are mapped
    to parameters by index without ``inspect.Signature.bind``; anything else binds once.

    Raises (at construction):
        ConfigurationError: the template names an argument ``fn`` doesn't have, or two
            placeholders are not separated by a literal ``:``.
    """

    __slots__ = (
        "_defaults",
        "_fast_kw",
        "_index",
        "_names",
        "_nparams",
        "_part",
        "_pieces",
        "_signature",
        "_simple",
        "_used",
        "qualname",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        template: str | None,
        part: Callable[[Any], str] = render_part,
    ) -> None:
        self._part = part  # render_part for keys, tag_part for tags
        self.qualname = getattr(fn, "__qualname__", repr(fn))
        self._signature = inspect.signature(fn)
        params = list(self._signature.parameters.values())
        self._names = tuple(p.name for p in params)
        self._index = frozenset(self._names)
        self._nparams = len(params)
        self._simple = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) for p in params)
        self._fast_kw = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        self._defaults = tuple(_MISSING if p.default is p.empty else p.default for p in params)
        self._pieces: tuple[str | _Field, ...]
        if template is None:
            # Every argument, ``self``/``cls`` included: a method's instance takes part
            # through ``__cache_key__`` (a class by its name), never silently left out.
            used = range(len(params))
            pieces: list[str | _Field] = []
            for n, i in enumerate(used):
                if n:
                    pieces.append(":")
                pieces.append(_Field(i, ()))
            self._pieces = tuple(pieces) if pieces else ("!",)
        else:
            self._pieces = self._parse(template)
        self._used = tuple(p.index for p in self._pieces if isinstance(p, _Field))

    def _parse(self, template: str) -> tuple[str | _Field, ...]:
        pieces: list[str | _Field] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigurationError(
                f"cache key template {template!r} of {self.qualname}: {exc}"
            ) from None
        previous_field = False
        for literal, field, spec, conv in parsed:
            if literal:
                if any(c.isspace() for c in literal) or "{" in literal or "}" in literal:
                    raise ConfigurationError(
                        f"cache key template {template!r} of {self.qualname}: literal text "
                        "must not contain whitespace or braces"
                    )
                pieces.append(literal)
            if field is None:
                continue
            if spec or conv:
                raise ConfigurationError(
                    f"cache key template {template!r} of {self.qualname}: format specs and "
                    "conversions are not supported; values render canonically"
                )
            if previous_field and (not literal or ":" not in literal):
                raise ConfigurationError(
                    f"cache key template {template!r} of {self.qualname}: separate "
                    "placeholders with ':' so keys stay unambiguous"
                )
            base, *attrs = field.split(".")
            if base not in self._names:
                raise ConfigurationError(
                    f"cache key template {template!r} names argument {base!r}, which "
                    f"{self.qualname} does not have (arguments: {', '.join(self._names)})"
                )
            pieces.append(_Field(self._names.index(base), tuple(attrs)))
            previous_field = True
        if not pieces:
            raise ConfigurationError(f"cache key template of {self.qualname} is empty")
        return tuple(pieces)

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names, in signature order."""
        return self._names

    @property
    def signature(self) -> inspect.Signature:
        """The function's signature."""
        return self._signature

    @property
    def first_name(self) -> str:
        """The first parameter's name (``self`` of a method)."""
        return self._names[0]

    def placeholders(self) -> frozenset[str]:
        """Names of the arguments the template uses."""
        return frozenset(self._names[i] for i in self._used)

    def values(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Sequence[Any]:
        """Argument values in signature order (defaults applied).

        Raises:
            TypeError: the arguments do not match the signature (as calling would).
        """
        if not kwargs and self._simple:
            n = len(args)
            if n == self._nparams:
                return args
            if n < self._nparams:
                tail = self._defaults[n:]
                if not any(v is _MISSING for v in tail):
                    return (*args, *tail)
        elif not args and self._fast_kw and len(kwargs) <= self._nparams:
            values = [
                kwargs.get(name, d) for name, d in zip(self._names, self._defaults, strict=True)
            ]
            if not any(v is _MISSING for v in values) and all(k in self._index for k in kwargs):
                return values
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        return [arguments[name] for name in self._names]

    def render_values(self, values: Sequence[Any]) -> str:
        """The rendered key part for argument ``values`` in signature order."""
        out = []
        for piece in self._pieces:
            if piece.__class__ is str:
                out.append(piece)
                continue
            field: _Field = piece  # type: ignore[assignment]
            value = values[field.index]
            for attr in field.attrs:
                value = getattr(value, attr)
            try:
                out.append(self._part(value))
            except TypeError as exc:
                raise ConfigurationError(
                    f"argument {self._names[field.index]!r} of {self.qualname}: {exc}; name "
                    "the arguments that identify the result with key='...'"
                ) from None
        return "".join(out)

    def compile(self, base: str) -> Callable[[Sequence[Any], Mapping[str, Any]], str]:
        """A function ``(args, kwargs) -> base + rendered``, generated once for speed."""
        namespace: dict[str, Any] = {"_rp": self._part, "_rv": self.render_values}
        exprs = [repr(base)]
        for piece in self._pieces:
            if isinstance(piece, str):
                exprs.append(repr(piece))
                continue
            if not all(a.isidentifier() for a in piece.attrs):
                return lambda args, kwargs: base + self.render_values(self.values(args, kwargs))
            access = "".join(f".{a}" for a in piece.attrs)
            exprs.append(f"_rp(a[{piece.index}]{access})")
        body = " + ".join(exprs)
        # Positional arguments are the values by index only when every parameter is a plain
        # positional one: with ``*rest``, ``f(1, [2, 3])`` and ``f(1, 2, 3)`` both have two
        # or three items but different values, so those calls always bind.
        fast = f"kw or len(a) != {self._nparams}" if self._simple else "True"
        source = (
            "def _render(a, kw):\n"
            f"    if {fast}:\n"
            "        a = _values(a, kw)\n"
            "    try:\n"
            f"        return {body}\n"
            "    except TypeError:\n"
            f"        return {base!r} + _rv(a)\n"
        )
        namespace["_values"] = self.values
        exec(source, namespace)  # the template was validated; only indexes and literals
        render: Callable[[Sequence[Any], Mapping[str, Any]], str] = namespace["_render"]
        return render

    def render(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The rendered key part for one call."""
        return self.render_values(self.values(args, kwargs))

    def render_partial(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """Render from the arguments the template uses; others may be left out.

        Raises:
            TypeError: an argument the key needs is missing (or the call does not bind).
        """
        bound = self._signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        values: list[Any] = [None] * self._nparams
        for i in self._used:
            name = self._names[i]
            if name not in arguments:
                raise TypeError(f"{self.qualname}: the cache key needs argument {name!r}")
            values[i] = arguments[name]
        return self.render_values(values)
