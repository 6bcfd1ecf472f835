"""Log context: ids (request, project, ...) carried by a contextvar into every log line.

The context is a ``ContextVar`` holding an immutable-by-convention dict, so it follows the
``asyncio`` task that set it (each task starts with a copy of its creator's context) and never
leaks between concurrent requests. Put identifiers here, never arguments or payloads: prompts
and personal data must not reach logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_FIELDS",
    "LogContextFilter",
    "bind_log_context",
    "get_log_context",
    "install_log_context",
    "log_context",
    "structlog_processor",
    "uninstall_log_context",
]

DEFAULT_FIELDS: Mapping[str, str] = MappingProxyType({"request_id": "-", "project_id": "-"})
"""Fields every record gets (with these placeholders) so ``%(request_id)s`` always formats."""

_EMPTY: Mapping[str, object] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, object]] = ContextVar("sight_log_context", default=_EMPTY)


def _merged(values: Mapping[str, object]) -> Mapping[str, object]:
    merged = dict(_CONTEXT.get())
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return MappingProxyType(merged)


@contextmanager
def log_context(**values: object) -> Iterator[Mapping[str, object]]:
    """Add ``values`` to the log context for the ``with`` block (a ``None`` value removes a key).

    On exit the previous context is restored, including anything :func:`bind_log_context` added
    inside the block. Works in sync and async code; tasks created inside inherit the values.
    """
    token = _CONTEXT.set(_merged(values))
    try:
        yield _CONTEXT.get()
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**values: object) -> None:
    """Add ``values`` to the current context until the enclosing :func:`log_context` block, the
    current task, or the current ``contextvars`` context ends (``None`` removes a key)."""
    _CONTEXT.set(_merged(values))


def get_log_context() -> Mapping[str, object]:
    """The current log context (read-only)."""
    return _CONTEXT.get()


class LogContextFilter(logging.Filter):
    """A stdlib ``logging.Filter`` that copies the log context onto each record as attributes.

    Attach it to handlers (it then sees records from every logger). Values already on the
    record (from ``extra=``) win. ``defaults`` fill fields absent from the context, so a format
    string such as ``"%(request_id)s %(message)s"`` never fails. Always lets the record through.
    """

    def __init__(self, defaults: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.defaults: Mapping[str, object] = DEFAULT_FIELDS if defaults is None else defaults

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        for key, value in _CONTEXT.get().items():
            attrs.setdefault(key, value)
        for key, value in self.defaults.items():
            attrs.setdefault(key, value)
        return True


def install_log_context(
    *handlers: logging.Handler, defaults: Mapping[str, object] | None = None
) -> LogContextFilter:
    """Attach one :class:`LogContextFilter` to ``handlers`` (default: the root logger's handlers).

    Idempotent per handler. Call it after ``logging.basicConfig``/``dictConfig``; handlers added
    later need their own call (or ``"()": "sight_core.observability.LogContextFilter"`` in a
    dictConfig ``filters`` section). Returns the filter.
    """
    targets = handlers or tuple(logging.getLogger().handlers)
    log_filter = LogContextFilter(defaults)
    for handler in targets:
        if not any(isinstance(f, LogContextFilter) for f in handler.filters):
            handler.addFilter(log_filter)
    return log_filter


def uninstall_log_context(*handlers: logging.Handler) -> None:
    """Remove every :class:`LogContextFilter` from ``handlers`` (default: root's handlers)."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        for log_filter in [f for f in handler.filters if isinstance(f, LogContextFilter)]:
            handler.removeFilter(log_filter)


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor adding the log context to the event dict (explicit keys win).

    Needs no structlog import: add it to ``processors=[...]`` before the renderer.
    """
    for key, value in _CONTEXT.get().items():
        event_dict.setdefault(key, value)
    return event_dict
