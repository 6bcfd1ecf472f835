"""``RepositoryLoader``: N concurrent ``load(id)`` calls in one tick -> one batch call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from sight_core.concurrency import BatchLoader
from sight_core.errors import NotFoundError

__all__ = ["BatchFetch", "RepositoryLoader"]

ModelT = TypeVar("ModelT")

#: ``fetch(ids)`` returns one row (or ``None`` when absent) per id, in the order asked.
BatchFetch = Callable[[list[Hashable]], Awaitable[list[ModelT | None]]]


class RepositoryLoader(Generic[ModelT]):
    """The DataLoader pattern over a batch function (``repo.loader()`` hands it ``get_many``).

    ``await loader.load(id)`` calls made in the same event-loop tick (e.g. from
    ``asyncio.gather`` or resolvers of one GraphQL request) are coalesced into one ``fetch``
    call per ``max_batch_size`` distinct ids; a missing id fails only its callers with
    :class:`~sight_core.errors.NotFoundError` naming ``model_name`` (``load_or_none`` returns
    ``None``). Batches run one at a time because a repository's ``fetch`` shares one session,
    which must never see two queries at once. Nothing is cached between ticks.
    """

    def __init__(
        self,
        fetch: BatchFetch[ModelT],
        *,
        model_name: str,
        max_batch_size: int = 1000,
    ) -> None:
        self.model_name = model_name
        self._batches: BatchLoader[Hashable, ModelT | None] = BatchLoader(
            fetch, max_batch_size=max_batch_size, max_concurrency=1
        )

    @property
    def queries(self) -> int:
        """How many batch calls (for a repository: ``get_many`` queries) this loader made."""
        return self._batches.batch_calls

    async def load_or_none(self, ident: Hashable) -> ModelT | None:
        """The row ``ident`` or ``None``, fetched with the other loads of this tick."""
        return await self._batches.load(ident)

    async def load(self, ident: Hashable) -> ModelT:
        """The row ``ident``, fetched with the other loads of this tick.

        Raises:
            NotFoundError: no such row (only this key's callers fail).
        """
        found = await self._batches.load(ident)
        if found is None:
            raise NotFoundError(self.model_name, ident)
        return found

    async def load_many(self, ids: Iterable[Hashable]) -> list[ModelT]:
        """Rows for ``ids`` in order, in one batch. Raises the first ``NotFoundError``."""
        return list(await asyncio.gather(*(self.load(i) for i in ids)))

    def __repr__(self) -> str:
        return f"<RepositoryLoader {self.model_name} queries={self.queries}>"
