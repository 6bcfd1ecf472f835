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


def test_a_late_success_during_half_open_does_not_close_it() -> None:
    # An operation started while closed; the breaker opens, cools down, a probe is claimed;
    # then the old operation's success arrives: only the probe's outcome may decide.
    breaker = Breaker(threshold=3, cooldown=60)
    old = breaker.epoch
    assert breaker.failure(unreachable=True)
    breaker._probe_at = 0.0
    assert breaker.allow() and breaker.state == "half-open"
    probe = breaker.epoch
    breaker.success(old)
    assert breaker.state == "half-open"
    assert not breaker.allow()  # still one probe at a time
    breaker.success(probe)
    assert breaker.state == "closed"


def test_late_failures_of_one_outage_open_it_once() -> None:
    breaker = Breaker(threshold=3, cooldown=60)
    started = breaker.epoch  # many operations in flight when Redis stalls
    assert breaker.failure(unreachable=True, epoch=started)
    breaker._probe_at = 0.0
    assert breaker.allow()
    probe = breaker.epoch
    for _ in range(10):  # their timeouts trickle in during the half-open probe
        assert not breaker.failure(unreachable=True, epoch=started)
    assert breaker.state == "half-open" and breaker.opened == 1
    breaker.success(probe)
    assert breaker.state == "closed" and breaker.opened == 1
