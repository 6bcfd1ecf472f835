"""sight-core: the Sight platform's shared async infrastructure.

The names most services need are importable from their modules (``sight_core.cache``,
``sight_core.concurrency``, ``sight_core.llm``, ``sight_core.db``, ``sight_core.graph``);
this package exposes only the version, the settings object and the error root, so that
``import sight_core`` stays cheap.
"""

from importlib.metadata import PackageNotFoundError, version

from sight_core.errors import ConfigurationError, SightError
from sight_core.settings import SightSettings

try:
    __version__ = version("sight-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["ConfigurationError", "SightError", "SightSettings", "__version__"]
