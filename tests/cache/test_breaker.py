"""The cache's backend breaker: only the half-open probe closes it."""

from __future__ import annotations

from sight_core.cache._breaker import Breaker


def test_a_late_success_does_not_close_an_open_breaker() -> None:
    breaker = Breaker(threshold=3, cooldown=60)
    assert breaker.failure(unreachable=True)  # opened by a timeout
    breaker.success()  # the reply of an operation sent before it opened, arriving late
    assert breaker.state == "open"
    assert not breaker.allow()
    breaker._probe_at = 0.0  # cooldown over
    assert breaker.allow() and breaker.state == "half-open"
    breaker.success()  # the probe's success closes it
    assert breaker.state == "closed"
    assert breaker.opened == 1
