"""In-process single flight: a caller that found a flight always gets its outcome.

Invariant: whatever order flights land in, and however late a caller that found a flight
follows it, ``follow`` returns the leader's value (or RETRY), never waits for ever.
"""

from __future__ import annotations

import asyncio

from sight_core.cache._flight import RETRY, Flights


async def test_a_flight_followed_after_it_landed_returns_its_value() -> None:
    flights = Flights()
    first, second = flights.lead("a"), flights.lead("b")
    found = [(f, f.sealed) for f in (flights.get("a"), flights.get("b")) if f is not None]

    async def follower() -> list[object]:
        return [await flights.follow(f, sealed) for f, sealed in found]

    task = asyncio.ensure_future(follower())
    await asyncio.sleep(0)  # the follower waits on "a"
    flights.land("b", second, "B")  # "b" lands while nobody waits on it yet
    flights.land("a", first, "A")
    assert await asyncio.wait_for(task, 2) == ["A", "B"]


async def test_a_flight_sealed_after_it_was_found_still_hands_its_value() -> None:
    flights = Flights()
    flight = flights.lead("a")
    found = flights.get("a")
    assert found is flight
    sealed_when_found = found.sealed
    flight.sealed = True  # the leader sent its commit after the caller found the flight
    flights.land("a", flight, "A")
    assert await flights.follow(found, sealed_when_found) == "A"
    assert await flights.follow(found) is RETRY  # found only now: read again
