"""``RepositoryLoader``: N concurrent ``load(id)`` calls in one tick -> one ``get_many`` query."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sight_core.concurrency import BatchLoader
from sight_core.errors import NotFoundError

if TYPE_CHECKING:
    from ._repository import Repository

__all__ = ["RepositoryLoader"]

ModelT = TypeVar("ModelT")


class RepositoryLoader(Generic[ModelT]):
    """The DataLoader pattern over a :class:`Repository` (``repo.loader()``).

    ``await loader.load(id)`` calls made in the same event-loop tick (e.g. from
    ``asyncio.gather`` or resolvers of one GraphQL request) are coalesced into one
    :meth:`Repository.get_many` query per ``max_batch_size`` distinct ids; a missing id fails only
    its callers with :class:`~sight_core.errors.NotFoundError` (``load_or_none`` returns ``None``).
    Batches run one at a time because they share the repository's session, which must never
    see two queries at once. Nothing is cached between ticks.
    """

    def __init__(self, repository: Repository[ModelT], *, max_batch_size: int = 1000) -> None:
        self.repository = repository
        self._batches: BatchLoader[Hashable, ModelT | None] = BatchLoader(
            self._fetch, max_batch_size=max_batch_size, max_concurrency=1
        )

    async def _fetch(self, ids: list[Hashable]) -> list[ModelT | None]:
        return await self.repository.get_many(ids, missing="none")

    @property
    def queries(self) -> int:
        """How many ``get_many`` queries this loader has sent."""
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
            raise NotFoundError(self.repository.model.__name__, ident)
        return found

    async def load_many(self, ids: Iterable[Hashable]) -> list[ModelT]:
        """Rows for ``ids`` in order, in one batch. Raises the first ``NotFoundError``."""
        import asyncio

        return list(await asyncio.gather(*(self.load(i) for i in ids)))

    def __repr__(self) -> str:
        model: Any = self.repository.model
        return f"<RepositoryLoader {model.__name__} queries={self.queries}>"
