"""In-process single flight: one computation per key at a time, joined by the other callers.

A caller that finds a :class:`Flight` for its key follows it (:meth:`Flights.follow`); the
others lead one (:meth:`Flights.lead`) and end it with :meth:`Flights.land` or
:meth:`Flights.fail`. Fencing shapes what a follower may take:

- ``sealed``: the leader sent its commit, so a caller arriving now may already have missed an
  invalidation that followed the commit; it waits, then reads again instead of taking the value;
- ``fenced``: the commit was refused (an invalidation came after the computation started), so
  nobody but the leader takes the value;
- ``unconfirmed``: nothing checked the value against the fence (Redis failed or was skipped,
  the value could not be encoded), so only a caller whose own call began before the
  computation started may take it: an invalidation another process completed before a later
  caller began may have come after the computation started. ``started`` is stamped when the
  computation starts, from one counter (:func:`arrival`) that callers also use to stamp when
  they began.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

__all__ = ["RETRY", "Flight", "Flights", "arrival"]

_STAMPS = itertools.count()


def arrival() -> int:
    """A stamp for "now", ordered with every flight's start (one process-wide counter)."""
    return next(_STAMPS)


#: What :meth:`Flights.follow` returns when the caller must read again (or lead).
RETRY: Any = object()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Flight:
    """One in-process computation of a key (see the module docstring)."""

    __slots__ = ("fenced", "future", "sealed", "started", "unconfirmed")

    def __init__(self) -> None:
        # Created with the flight, not on the first follow: a caller may hold the flight and
        # follow it only after it landed (it followed another flight first, or led its own
        # ids); a future made then would never be resolved.
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sealed = False
        self.fenced = False
        self.unconfirmed = False
        self.started = next(_STAMPS)

    @property
    def followed(self) -> bool:
        """Whether another caller joined (and waits for) this flight."""
        return self.future is not None


class Flights:
    """The flights of one cached function, by key."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> Flight | None:
        return self._by_key.get(key)

    def lead(self, key: str) -> Flight:
        """Start the flight of ``key`` (there is none)."""
        flight = self._by_key[key] = Flight()
        return flight

    async def follow(
        self, flight: Flight, sealed: bool | None = None, began: int | None = None
    ) -> Any:
        """The leader's value, or :data:`RETRY` when the caller must read again: the flight
        was sealed when joined, was fenced, its value is unconfirmed and the caller began
        after the flight started, or its leader was cancelled.

        ``sealed`` is ``flight.sealed`` as it was when the caller found the flight; a caller
        that found it earlier and follows it later passes it (default: as it is now).
        ``began`` is the caller's :func:`arrival` stamp, taken when its call began (default:
        now, which is never before the flight started).

        Raises:
            Exception: what the leader's computation raised.
        """
        if sealed is None:
            sealed = flight.sealed
        fut = flight.future
        try:
            value = await asyncio.shield(fut)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if fut.cancelled() and (task is None or not task.cancelling()):
                return RETRY  # the leader was cancelled, not us
            raise
        if sealed or flight.fenced:
            return RETRY
        if flight.unconfirmed and (began is None or began > flight.started):
            return RETRY
        return value

    def land(self, key: str, flight: Flight, value: Any, stood: bool | None = True) -> None:
        """End the flight with ``value``; ``stood`` False: it was fenced; None: nothing
        checked it against the fence (see ``unconfirmed``)."""
        flight.fenced = stood is False
        flight.unconfirmed = stood is None
        if self._by_key.get(key) is flight:
            del self._by_key[key]
        if not flight.future.done():
            flight.future.set_result(value)

    def fail(self, key: str, flight: Flight, exc: BaseException) -> None:
        """End the flight with the leader's error (a cancellation lets followers retry)."""
        if self._by_key.get(key) is flight:
            del self._by_key[key]
        fut = flight.future
        if fut.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            fut.cancel()
        else:
            fut.set_exception(exc)
            fut.add_done_callback(_consume)
