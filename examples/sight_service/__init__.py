"""A small Sight-like service on sight-core: projects, personas, focus groups, usage.

``create_app(settings)`` builds the FastAPI app; see ``docs/quickstart.md``.
"""

from .app import create_app, resolve_settings
from .services import SightService, cache

__all__ = ["SightService", "cache", "create_app", "resolve_settings"]
