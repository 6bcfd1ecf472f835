"""mkdocs hook: replace ``<!-- settings-fields -->`` with every setting, its variable and default.

Generated from ``SightSettings`` at build time, so the table cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

MARKER = "<!-- settings-fields -->"


def _default(info: Any, preset: Any) -> str:
    if info.default_factory is not None:
        return "(built in)"
    value = info.default
    if value is None:
        return "the preset's" if preset else "unset"
    if isinstance(value, SecretStr):
        return f"`{value}`"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("sight_core.settings.", "").replace("|", "\\|")


def settings_tables() -> str:
    from sight_core.settings import SightSettings

    parts = []
    for part, info in SightSettings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        rows = [
            f"### `{part}`: {model.__name__}",
            "",
            "| variable | type | default | notes |",
            "|---|---|---|---|",
        ]
        resolved = model().resolved() if hasattr(model, "resolved") else None
        for name, field in model.model_fields.items():
            preset = resolved is not None and hasattr(resolved, name)
            variable = f"`SIGHT_{part.upper()}__{name.upper()}`"
            notes = (field.description or "").replace("|", "\\|")
            rows.append(f"| {variable} | `{_type(field.annotation)}` | {_default(field, preset)} | {notes} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, settings_tables())
    return markdown
