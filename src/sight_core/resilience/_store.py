"""Where a circuit breaker keeps its state: the store protocol and the in-memory store.

A store applies the breaker's state machine atomically; the breaker only mirrors the result
for fast admission. The same transitions are implemented here in Python and in Lua by
:class:`~sight_core.resilience.RedisBreakerStore`:

- closed: a failure adds to the consecutive count and to the window; the circuit opens when
  the count reaches ``failure_threshold`` or, with ``failure_rate``, when at least
  ``minimum_calls`` calls in the last ``window`` seconds failed at that rate. A success resets
  the consecutive count.
- open: nothing is admitted until ``recovery_timeout`` has passed; then it is half-open.
- half-open: at most ``half_open_max_calls`` probes are admitted in total (in flight plus
  succeeded), so no more probes reach a recovering dependency than the decision needs. Any
  probe failure opens the circuit again; ``half_open_max_calls`` probe successes close it. A
  probe whose outcome is neutral gives its slot back; a probe that never reports (its process
  died) loses the slot after ``probe_lease`` seconds. Each opening starts a new *epoch*; the
  outcome of a probe admitted in an earlier epoch is ignored, so a late success of a call
  started before the circuit (re)opened never closes it nor frees a current probe's slot.
- cooldown: the circuit is held open for a time the server named (a quota refusal, see
  :meth:`BreakerStore.cool_down`); afterwards it is half-open like after any opening.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStore",
    "Grant",
    "MemoryBreakerStore",
    "Snapshot",
]

BUCKETS: Final = 10  # the failure-rate window is kept as this many time buckets


class BreakerState(enum.StrEnum):
    """Circuit state; the values equal pybreaker's ``STATE_*`` strings."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Grant(enum.IntEnum):
    """Answer of :meth:`BreakerStore.acquire`."""

    DENIED = 0
    CALL = 1  # closed: an ordinary call
    PROBE = 2  # half-open: one of the bounded probes


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The thresholds a store applies; built by :class:`CircuitBreaker`."""

    failure_threshold: int | None
    recovery_timeout: float
    half_open_max_calls: int
    failure_rate: float | None
    window: float
    minimum_calls: int
    probe_lease: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state after an operation. ``open_remaining`` is seconds until probes are allowed.

    ``epoch`` counts the openings (a probe reports with the epoch it was admitted in);
    ``cooldown`` says the open state is a server-requested cooldown.

    ``seq`` orders the snapshots of a shared store (the server's clock when it ran the
    operation, in microseconds): replies can arrive out of order over several connections, and
    a breaker ignores one that is older than a snapshot it already applied. ``0`` (the memory
    store, the local fallback) is always applied.
    """

    state: BreakerState
    failures: int = 0
    open_remaining: float = 0.0
    seq: int = 0
    epoch: int = 0
    cooldown: bool = False


CLOSED_SNAPSHOT: Final = Snapshot(BreakerState.CLOSED)


class BreakerStore(Protocol):
    """State of named breakers. Every method is atomic per ``name`` and never raises for
    backend trouble (a shared store falls back to local state)."""

    async def load(self, name: str, cfg: BreakerConfig) -> Snapshot:
        """Current state (moving open → half-open when the recovery time has passed)."""
        ...

    async def acquire(self, name: str, cfg: BreakerConfig) -> tuple[Grant, Snapshot]:
        """Admit a call: ``CALL`` when closed, ``PROBE`` for a free half-open slot, else
        ``DENIED``."""
        ...

    async def record(
        self,
        name: str,
        cfg: BreakerConfig,
        *,
        failure: bool,
        probe: bool,
        epoch: int | None = None,
    ) -> Snapshot:
        """Record a counted outcome (``failure`` or success) of a call or probe; a probe's
        outcome is ignored when ``epoch`` (the one it was admitted in) is not the current one."""
        ...

    async def release(self, name: str, cfg: BreakerConfig, epoch: int | None = None) -> Snapshot:
        """Give back a probe slot whose call ended neutrally (cancelled, permanent error)."""
        ...

    async def cool_down(self, name: str, cfg: BreakerConfig, seconds: float) -> Snapshot:
        """Hold the circuit open for at least ``seconds`` (never shortens an opening)."""
        ...

    async def reset(self, name: str) -> None:
        """Forget the breaker's state: closed, no counts."""
        ...


class _Entry:
    __slots__ = (
        "bucket_calls",
        "bucket_fails",
        "bucket_ids",
        "cooldown",
        "epoch",
        "failures",
        "open_until",
        "probe_until",
        "probes",
        "state",
        "successes",
    )

    def __init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.open_until = 0.0
        self.probes = 0
        self.successes = 0
        self.probe_until = 0.0
        self.epoch = 0
        self.cooldown = False
        self.bucket_ids = [-1] * BUCKETS
        self.bucket_calls = [0] * BUCKETS
        self.bucket_fails = [0] * BUCKETS


class MemoryBreakerStore:
    """Process-local state (the default). Operations never suspend, so they are atomic on an
    event loop; share one instance between breakers only within one loop.

    Args:
        clock: monotonic seconds; injectable for tests.
    """

    __slots__ = ("_clock", "_entries")

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def _entry(self, name: str, cfg: BreakerConfig, now: float) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        if entry.state is BreakerState.OPEN and now >= entry.open_until:
            entry.state = BreakerState.HALF_OPEN
            entry.probes = entry.successes = 0
            entry.cooldown = False
        if entry.state is BreakerState.HALF_OPEN and entry.probes > 0 and now >= entry.probe_until:
            entry.probes = 0  # probes that never reported: their slots are free again
        return entry

    @staticmethod
    def _snapshot(entry: _Entry, now: float) -> Snapshot:
        remaining = max(0.0, entry.open_until - now) if entry.state is BreakerState.OPEN else 0.0
        return Snapshot(entry.state, entry.failures, remaining, 0, entry.epoch, entry.cooldown)

    def snapshot_now(self, name: str, cfg: BreakerConfig) -> Snapshot:
        """:meth:`load` without the coroutine (used by the fallback path of shared stores)."""
        now = self._clock()
        return self._snapshot(self._entry(name, cfg, now), now)

    async def load(self, name: str, cfg: BreakerConfig) -> Snapshot:
        return self.snapshot_now(name, cfg)

    def acquire_now(self, name: str, cfg: BreakerConfig) -> tuple[Grant, Snapshot]:
        """:meth:`acquire` without the coroutine (the shared stores' local fallback)."""
        now = self._clock()
        entry = self._entry(name, cfg, now)
        grant = Grant.DENIED
        if entry.state is BreakerState.CLOSED:
            grant = Grant.CALL
        elif (
            entry.state is BreakerState.HALF_OPEN
            and entry.probes + entry.successes < cfg.half_open_max_calls
        ):
            entry.probes += 1
            entry.probe_until = now + cfg.probe_lease
            grant = Grant.PROBE
        return grant, self._snapshot(entry, now)

    async def acquire(self, name: str, cfg: BreakerConfig) -> tuple[Grant, Snapshot]:
        return self.acquire_now(name, cfg)

    def record_now(
        self,
        name: str,
        cfg: BreakerConfig,
        *,
        failure: bool,
        probe: bool,
        epoch: int | None = None,
    ) -> Snapshot:
        """:meth:`record` without the coroutine (the shared stores' local fallback)."""
        now = self._clock()
        entry = self._entry(name, cfg, now)
        if probe and epoch is not None and epoch != entry.epoch:
            pass  # admitted before the circuit last opened: its outcome says nothing now
        elif entry.state is BreakerState.CLOSED:
            if failure:
                entry.failures += 1
                calls, fails = self._count(entry, cfg, now, failed=True)
                by_count = (
                    cfg.failure_threshold is not None and entry.failures >= cfg.failure_threshold
                )
                by_rate = (
                    cfg.failure_rate is not None
                    and calls >= cfg.minimum_calls
                    and fails >= cfg.failure_rate * calls
                )
                if by_count or by_rate:
                    self._open(entry, cfg, now)
            else:
                entry.failures = 0
                if cfg.failure_rate is not None:
                    self._count(entry, cfg, now, failed=False)
        elif entry.state is BreakerState.HALF_OPEN and probe:
            entry.probes = max(0, entry.probes - 1)
            if failure:
                self._open(entry, cfg, now)
            else:
                entry.successes += 1
                if entry.successes >= cfg.half_open_max_calls:
                    self._close(entry)
        return self._snapshot(entry, now)

    async def record(
        self,
        name: str,
        cfg: BreakerConfig,
        *,
        failure: bool,
        probe: bool,
        epoch: int | None = None,
    ) -> Snapshot:
        return self.record_now(name, cfg, failure=failure, probe=probe, epoch=epoch)

    def release_now(self, name: str, cfg: BreakerConfig, epoch: int | None = None) -> Snapshot:
        """:meth:`release` without the coroutine (the shared stores' local fallback)."""
        now = self._clock()
        entry = self._entry(name, cfg, now)
        if entry.state is BreakerState.HALF_OPEN and (epoch is None or epoch == entry.epoch):
            entry.probes = max(0, entry.probes - 1)
        return self._snapshot(entry, now)

    async def release(self, name: str, cfg: BreakerConfig, epoch: int | None = None) -> Snapshot:
        return self.release_now(name, cfg, epoch)

    def cool_down_now(self, name: str, cfg: BreakerConfig, seconds: float) -> Snapshot:
        """:meth:`cool_down` without the coroutine (the shared stores' local fallback)."""
        now = self._clock()
        entry = self._entry(name, cfg, now)
        until = now + seconds
        if entry.state is not BreakerState.OPEN:
            self._open(entry, cfg, now)
        entry.open_until = max(entry.open_until, until)
        entry.cooldown = True
        return self._snapshot(entry, now)

    async def cool_down(self, name: str, cfg: BreakerConfig, seconds: float) -> Snapshot:
        return self.cool_down_now(name, cfg, seconds)

    def mirror(self, name: str, snap: Snapshot) -> None:
        """Adopt a shared store's answer as the local state, so that when the shared store
        fails the local one goes on from the last known state (an open circuit stays open until
        its time is over, then admits at most ``half_open_max_calls`` probes)."""
        now = self._clock()
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        if entry.state is not snap.state or entry.epoch != snap.epoch:
            entry.probes = entry.successes = 0
        entry.state = snap.state
        entry.failures = snap.failures
        entry.epoch = snap.epoch
        entry.cooldown = snap.cooldown
        if snap.state is BreakerState.OPEN:
            entry.open_until = now + snap.open_remaining

    def admit_probe(self, name: str, cfg: BreakerConfig) -> bool:
        """Count a probe that a shared store granted (after :meth:`mirror` of its answer)
        against the local cap too, so that if the shared store fails while it runs, the local
        state does not grant its slot again. False when the local cap is full: probes were
        granted locally while the shared store was unreachable, and this one would exceed it."""
        now = self._clock()
        entry = self._entry(name, cfg, now)
        if entry.state is not BreakerState.HALF_OPEN:
            return True
        if entry.probes + entry.successes >= cfg.half_open_max_calls:
            return False
        entry.probes += 1
        entry.probe_until = now + cfg.probe_lease
        return True

    def settle_probe(
        self, name: str, cfg: BreakerConfig, epoch: int | None, *, succeeded: bool
    ) -> None:
        """A probe counted by :meth:`admit_probe` ended in the shared store (after
        :meth:`mirror` of its answer): free its local slot, and count its success while the
        circuit is still half-open."""
        entry = self._entry(name, cfg, self._clock())
        if entry.state is BreakerState.HALF_OPEN and (epoch is None or epoch == entry.epoch):
            entry.probes = max(0, entry.probes - 1)
            if succeeded:
                entry.successes += 1

    async def reset(self, name: str) -> None:
        self._entries.pop(name, None)

    @staticmethod
    def _count(entry: _Entry, cfg: BreakerConfig, now: float, *, failed: bool) -> tuple[int, int]:
        """Add one call to the window; return ``(calls, failures)`` inside the window."""
        width = cfg.window / BUCKETS
        current = math.floor(now / width)
        slot = current % BUCKETS
        if entry.bucket_ids[slot] != current:
            entry.bucket_ids[slot] = current
            entry.bucket_calls[slot] = 0
            entry.bucket_fails[slot] = 0
        entry.bucket_calls[slot] += 1
        if failed:
            entry.bucket_fails[slot] += 1
        calls = fails = 0
        for i in range(BUCKETS):
            if current - entry.bucket_ids[i] < BUCKETS:
                calls += entry.bucket_calls[i]
                fails += entry.bucket_fails[i]
        return calls, fails

    @staticmethod
    def _open(entry: _Entry, cfg: BreakerConfig, now: float) -> None:
        entry.state = BreakerState.OPEN
        entry.open_until = now + cfg.recovery_timeout
        entry.epoch += 1
        entry.cooldown = False
        entry.failures = entry.probes = entry.successes = 0
        entry.bucket_ids = [-1] * BUCKETS

    @staticmethod
    def _close(entry: _Entry) -> None:
        entry.state = BreakerState.CLOSED
        entry.cooldown = False
        entry.failures = entry.probes = entry.successes = 0
        entry.bucket_ids = [-1] * BUCKETS
