"""placeholder"""

from __future__ import annotations

from typing import Any


class ResponseCache:
    async def get_or_generate(
        self, model: Any, messages: Any, stop: Any, kwargs: Any, compute: Any
    ) -> tuple[Any, bool]:
        raise NotImplementedError
