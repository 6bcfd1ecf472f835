"""The breaker's invariant, as a hypothesis state machine over concurrent calls.

Invariant: in half-open, the probes admitted since the circuit became half-open never exceed
``half_open_max_calls``; a success only closes a half-open breaker (never an open one); and a
late success of a call started before the breaker (last) opened never closes it: closing takes
``half_open_max_calls`` successes of probes admitted after the latest opening.

Calls are real ``CircuitBreaker.call`` coroutines on one event loop, each blocked on a future
the machine resolves later (success, or a transient 503), so outcomes arrive in any order,
including long after the circuit has opened and reopened. The clock is injected.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from resilience_support import Clock, unavailable

from sight_core.errors import CircuitOpenError
from sight_core.resilience import BreakerListener, BreakerState, CircuitBreaker

RECOVERY = 10.0
MAX_PROBES = 2


@dataclass
class Call:
    task: asyncio.Task[str]
    gate: asyncio.Future[None]
    started_in: BreakerState | None = None  # the state when the dependency was entered
    openings: int = 0  # how many times the circuit had opened when it was entered


@dataclass
class Watcher(BreakerListener):
    openings: int = 0
    probes_since_half_open: int = 0
    probe_successes_this_epoch: int = 0
    transitions: list[tuple[BreakerState, BreakerState]] = field(default_factory=list)
    closed_by_stale_success: bool = False

    def state_change(
        self, breaker: CircuitBreaker, old_state: BreakerState, new_state: BreakerState
    ) -> None:
        self.transitions.append((old_state, new_state))
        if new_state is BreakerState.OPEN:
            self.openings += 1
            self.probe_successes_this_epoch = 0
        if new_state is BreakerState.HALF_OPEN:
            self.probes_since_half_open = 0
            self.probe_successes_this_epoch = 0


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.watch = Watcher()
        self.breaker = CircuitBreaker(
            "machine",
            failure_threshold=1,
            recovery_timeout=RECOVERY,
            half_open_max_calls=MAX_PROBES,
            probe_lease=1e9,  # slots are freed by outcomes only in this machine
            listeners=[self.watch],
            clock=self.clock,
        )
        self.calls: list[Call] = []

    def settle(self) -> None:
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))

    @rule()
    def start(self) -> None:
        gate: asyncio.Future[None] = self.loop.create_future()
        call = Call(task=None, gate=gate)  # type: ignore[arg-type]

        async def dependency() -> str:
            call.started_in = self.breaker.state
            call.openings = self.watch.openings
            if call.started_in is BreakerState.HALF_OPEN:
                self.watch.probes_since_half_open += 1
            await gate
            return "ok"

        call.task = self.loop.create_task(self.breaker.call(dependency))
        self.calls.append(call)
        self.settle()
        if call.task.done():  # refused (or, impossibly, finished already)
            assert isinstance(call.task.exception(), CircuitOpenError)
            self.calls.remove(call)

    def has_running_calls(self) -> bool:
        return any(c.started_in is not None for c in self.calls)

    # a named precondition: hypothesis < 6.1xx re-parses a lambda's source on every draw
    @precondition(has_running_calls)
    @rule(data=st.data(), succeed=st.booleans())
    def finish(self, data: st.DataObject, succeed: bool) -> None:
        running = [c for c in self.calls if c.started_in is not None]
        call = data.draw(st.sampled_from(running))
        self.calls.remove(call)
        before = self.breaker.state
        transitions = len(self.watch.transitions)
        stale = call.openings != self.watch.openings
        if succeed:
            if call.started_in is BreakerState.HALF_OPEN and not stale:
                self.watch.probe_successes_this_epoch += 1
            call.gate.set_result(None)
        else:
            call.gate.set_exception(unavailable())
        self.settle()
        assert call.task.done()
        if not succeed:
            assert isinstance(call.task.exception(), Exception)
        closed = any(new is BreakerState.CLOSED for _, new in self.watch.transitions[transitions:])
        if closed:
            assert succeed  # only a success closes
            assert before is BreakerState.HALF_OPEN  # and only a half-open breaker
            assert not stale  # a call from before the latest opening never closes it
            assert self.watch.probe_successes_this_epoch >= MAX_PROBES

    @rule()
    def recovery_time_passes(self) -> None:
        self.clock.now += RECOVERY

    @invariant()
    def probes_are_capped(self) -> None:
        assert self.watch.probes_since_half_open <= MAX_PROBES

    @invariant()
    def open_never_closes_directly(self) -> None:
        assert (BreakerState.OPEN, BreakerState.CLOSED) not in self.watch.transitions

    def teardown(self) -> None:
        for call in self.calls:
            if not call.gate.done():
                call.gate.set_result(None)
        pending = [c.task for c in self.calls]
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


BreakerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestBreakerInvariant = BreakerMachine.TestCase


def test_a_probe_from_before_the_reopening_does_not_count() -> None:
    """The sequence the machine looks for, spelled out: probes A and B; B fails (reopen); a new
    probe C; A's late success must not count towards closing, nor free C's slot."""
    machine = BreakerMachine()
    try:
        machine.start()
        machine.calls[0].gate.set_exception(unavailable())  # opens (threshold 1)
        machine.settle()
        assert machine.calls.pop().task.exception() is not None
        machine.recovery_time_passes()
        machine.start()
        machine.start()
        a, b = machine.calls
        assert a.started_in is b.started_in is BreakerState.HALF_OPEN
        b.gate.set_exception(unavailable())  # reopens
        machine.settle()
        assert b.task.exception() is not None
        machine.calls.remove(b)
        machine.recovery_time_passes()
        machine.start()
        c = machine.calls[-1]
        assert c.started_in is BreakerState.HALF_OPEN
        a.gate.set_result(None)  # late success of a probe admitted before the reopening
        machine.settle()
        machine.calls.remove(a)
        machine.start()  # one more probe fits (C + D = 2): A's success freed nothing
        machine.start()  # a third does not
        assert len([x for x in machine.calls if x.started_in is not None]) == 2
        c.gate.set_result(None)
        machine.settle()
        assert machine.breaker.state is BreakerState.HALF_OPEN  # 1 current success of 2
    finally:
        machine.teardown()
