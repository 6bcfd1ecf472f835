"""An asyncio-native circuit breaker: closed → open → half-open, local or shared through Redis.

Why not pybreaker's breaker: its ``call_async`` needs Tornado, and wrapping an ``async def``
with ``call`` counts the *un-awaited coroutine* as a success. We keep pybreaker's ideas where
they fit: the listener interface shape (``before_call``/``failure``/``success``/
``state_change``), exclusion of errors by type or predicate, state names, and a pluggable store.

Admission reads a local mirror of the state, so a call refused by an open circuit never awaits
anything: it costs a clock read and a comparison (well under a millisecond), and no attempt is
made. The store decides every transition atomically (see :mod:`._store`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sight_core.errors import (
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    RateLimitedError,
)

from . import _obs
from ._classify import Classifier, classify, cooldown_for
from ._decorate import through
from ._marks import CircuitInfo, mark_circuit
from ._store import (
    BreakerConfig,
    BreakerState,
    BreakerStore,
    Grant,
    MemoryBreakerStore,
    Snapshot,
)

if TYPE_CHECKING:
    from sight_core.settings import LLMSettings

__all__ = ["BreakerListener", "CircuitBreaker", "ExcludeRule"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("sight_core.resilience")

ExcludeRule = type[BaseException] | Callable[[BaseException], bool]
"""An error type, or a predicate, whose matches are neutral (neither failure nor success)."""

_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
# A shared store's reply older than the newest applied one by at most this much (microseconds)
# was overtaken in transit and is ignored; a larger gap means the server clock stepped back.
_REORDER_WINDOW_US = 10_000_000

_live: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


_dropped: deque[tuple[str, int]] = deque()  # (name, calls) of breakers garbage-collected
_dropped_totals: dict[str, int] = {}  # their calls by name, drained from :data:`_dropped`
_drain_lock = threading.Lock()


def _samples() -> Iterator[Any]:
    """``sight_breaker_calls_total{name}``: admitted calls, counted as a plain int on the hot
    path and pulled at export (breakers sharing a name are summed by the registry). The calls
    of a breaker that was garbage-collected stay counted: a counter never goes down."""
    from sight_core.observability import Sample

    live = list(_live)  # held strongly: none of these is dropped while we read them
    with _drain_lock:
        while _dropped:
            name, calls = _dropped.popleft()
            _dropped_totals[name] = _dropped_totals.get(name, 0) + calls
        dropped = list(_dropped_totals.items())
    for breaker in live:
        yield Sample("sight_breaker_calls_total", {"name": breaker.name}, breaker._calls, "counter")
    for name, calls in dropped:
        yield Sample("sight_breaker_calls_total", {"name": name}, calls, "counter")


class BreakerListener:
    """Hooks on a breaker's events; subclass and override what you need.

    Same method names and arguments as ``pybreaker.CircuitBreakerListener``, except that
    states are :class:`BreakerState` strings (``"closed"``, ``"open"``, ``"half-open"``) rather
    than pybreaker state objects, and ``before_call``'s ``breaker`` and ``func`` are
    positional-only (the call's keyword arguments may use those names). Hooks run synchronously
    on the event loop: keep them cheap and plain ``def`` (an ``async def`` hook is never
    awaited). An exception in a hook is logged and ignored; it never fails the call.
    """

    def before_call(
        self, breaker: CircuitBreaker, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> None:
        """An admitted call is about to start; ``args``/``kwargs`` are the call's own (they may
        hold prompts or personal data: don't log them)."""

    def failure(self, breaker: CircuitBreaker, exc: BaseException) -> None:
        """A call failed with an error that counts (transient, not excluded)."""

    def success(self, breaker: CircuitBreaker) -> None:
        """A call returned."""

    def state_change(
        self, breaker: CircuitBreaker, old_state: BreakerState, new_state: BreakerState
    ) -> None:
        """The state this process sees changed (also when another process caused it)."""


class CircuitBreaker:
    """Stop calling a dependency that keeps failing; probe it again after a pause.

    Args:
        name: identifies the circuit; breakers with the same name and a shared store share
            state (e.g. ``"gemini-2.5-pro"`` in every worker process).
        failure_threshold: consecutive counted failures that open the circuit (``None``: only
            the failure rate decides).
        recovery_timeout: seconds the circuit stays open before half-open probes.
        half_open_max_calls: probes admitted while half-open, in total: in flight plus
            succeeded (a probe ending neutrally gives its slot back); that many successes close
            the circuit, one failure opens it again.
        failure_rate: open when this fraction (0 < rate <= 1) of the calls in the last
            ``window`` seconds failed, once there were at least ``minimum_calls``.
        window: seconds of the failure-rate window.
        minimum_calls: calls in the window before the rate is judged.
        classifier: counted failures are what it calls ``transient``; permanent errors,
            context overflow, blocks and cancellation are neutral.
        exclude: error types or predicates that are neutral even if transient (pybreaker's
            ``exclude``).
        store: :class:`MemoryBreakerStore` (default, per process) or
            :class:`RedisBreakerStore` (shared across processes).
        sync_interval: while closed, re-read a shared store at most this often (seconds), so a
            circuit opened by another process is seen within it.
        probe_lease: seconds after which a probe that never reported frees its slot
            (default ``max(60, recovery_timeout)``).
        listeners: initial :class:`BreakerListener` objects.
        max_server_wait: a transient error whose server hint (``Retry-After``/``retryDelay``)
            is longer than this puts the circuit in a **cooldown** for the hinted time: held
            open, in the store (so every process sharing it stops too), refusing with
            :class:`~sight_core.errors.RateLimitedError`; ``None`` (default): no cooldowns.
        quota_cooldown: the cooldown after an error naming a per-day quota (when
            ``max_server_wait`` is set), seconds.
        clock: monotonic seconds, injectable for tests (used by the default store too).

    An error after which the circuit is open (it opened it, or the circuit was opened or put in
    a cooldown meanwhile) carries the circuit's state (:func:`~sight_core.resilience.circuit_of`),
    so a retry policy around the breaker stops instead of sleeping into a refusal.

    Raises:
        ConfigurationError: an argument is out of range.
    """

    __slots__ = (
        "__weakref__",
        "_calls",
        "_cfg",
        "_classifier",
        "_clock",
        "_cooldown",
        "_deny_until",
        "_exclude",
        "_failures_counted",
        "_failures_seen",
        "_listeners",
        "_max_server_wait",
        "_open_until",
        "_quota_cooldown",
        "_rejected",
        "_seq",
        "_shared",
        "_state",
        "_store",
        "_successes",
        "_sync_interval",
        "_synced_at",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int | None = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        failure_rate: float | None = None,
        window: float = 60.0,
        minimum_calls: int = 10,
        classifier: Classifier = classify,
        exclude: Iterable[ExcludeRule] = (),
        store: BreakerStore | None = None,
        sync_interval: float = 1.0,
        probe_lease: float | None = None,
        listeners: Iterable[BreakerListener] = (),
        max_server_wait: float | None = None,
        quota_cooldown: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        def bad(what: str) -> ConfigurationError:
            return ConfigurationError(f"CircuitBreaker({name!r}, {what})")

        if not name:
            raise ConfigurationError("CircuitBreaker: name must not be empty")
        if failure_threshold is not None and failure_threshold < 1:
            raise bad(f"failure_threshold={failure_threshold}: must be >= 1 or None")
        if failure_threshold is None and failure_rate is None:
            raise bad("failure_threshold=None needs a failure_rate")
        if not recovery_timeout > 0:
            raise bad(f"recovery_timeout={recovery_timeout}: must be > 0")
        if half_open_max_calls < 1:
            raise bad(f"half_open_max_calls={half_open_max_calls}: must be >= 1")
        if failure_rate is not None and not 0 < failure_rate <= 1:
            raise bad(f"failure_rate={failure_rate}: must be in (0, 1]")
        if not window > 0:
            raise bad(f"window={window}: must be > 0")
        if minimum_calls < 1:
            raise bad(f"minimum_calls={minimum_calls}: must be >= 1")
        if not sync_interval >= 0:
            raise bad(f"sync_interval={sync_interval}: must be >= 0")
        if max_server_wait is not None and not max_server_wait >= 0:
            raise bad(f"max_server_wait={max_server_wait}: must be >= 0 or None")
        if not quota_cooldown > 0:
            raise bad(f"quota_cooldown={quota_cooldown}: must be > 0")
        lease = max(60.0, recovery_timeout) if probe_lease is None else probe_lease
        if not lease > 0:
            raise bad(f"probe_lease={probe_lease}: must be > 0")
        self.name = name
        self._cfg = BreakerConfig(
            failure_threshold=failure_threshold,
            recovery_timeout=float(recovery_timeout),
            half_open_max_calls=half_open_max_calls,
            failure_rate=failure_rate,
            window=float(window),
            minimum_calls=minimum_calls,
            probe_lease=float(lease),
        )
        self._classifier = classifier
        self._exclude = tuple(exclude)
        self._store: BreakerStore = store if store is not None else MemoryBreakerStore(clock=clock)
        self._shared = bool(getattr(self._store, "shared", False))
        self._sync_interval = float(sync_interval)
        self._listeners: list[BreakerListener] = list(listeners)
        self._clock = clock
        self._max_server_wait = max_server_wait
        self._quota_cooldown = float(quota_cooldown)
        self._cooldown = False  # the open state is a server-requested cooldown
        self._state = BreakerState.CLOSED
        self._failures_seen = 0  # the store's consecutive count as last seen
        self._open_until = 0.0
        self._synced_at = -float("inf")  # first call reads the store
        self._deny_until = -float("inf")
        self._seq = 0  # ordering stamp of the newest shared-store snapshot applied
        self._calls = self._successes = self._failures_counted = self._rejected = 0
        _live.add(self)
        _obs.register_collector(_samples)  # again after a registry reset dropped it

    def __del__(self) -> None:
        # keep this breaker's calls in ``sight_breaker_calls_total`` (see :func:`_samples`); a
        # deque append: no lock, since the collector may run anywhere, even mid-export
        calls = getattr(self, "_calls", 0)
        if calls:
            _dropped.append((self.name, calls))

    @classmethod
    def from_settings(
        cls, name: str, llm: LLMSettings, *, store: BreakerStore | None = None, **overrides: Any
    ) -> CircuitBreaker:
        """A breaker from ``SightSettings.llm`` (``breaker_failure_threshold``,
        ``breaker_recovery_timeout``, ``breaker_half_open_max_calls``); ``overrides`` win."""
        values: dict[str, Any] = {
            "failure_threshold": llm.breaker_failure_threshold,
            "recovery_timeout": llm.breaker_recovery_timeout,
            "half_open_max_calls": llm.breaker_half_open_max_calls,
            "store": store,
        }
        values.update(overrides)
        return cls(name, **values)

    # state -----------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state as this process last saw it (open turns half-open once the pause is over;
        call :meth:`refresh` to read a shared store now)."""
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def config(self) -> BreakerConfig:
        """The thresholds in force."""
        return self._cfg

    def stats(self) -> dict[str, int | str]:
        """Counts since creation, in this process: admitted ``calls``, ``successes``, counted
        ``failures``, ``rejected`` calls, and the current ``state``."""
        return {
            "state": str(self.state),
            "calls": self._calls,
            "successes": self._successes,
            "failures": self._failures_counted,
            "rejected": self._rejected,
        }

    async def refresh(self) -> BreakerState:
        """Read the store now and return the state."""
        self._apply(await self._store.load(self.name, self._cfg))
        return self._state

    async def reset(self) -> None:
        """Close the circuit and forget its counts (in the store too)."""
        await self._store.reset(self.name)
        self._deny_until = -float("inf")
        self._apply(Snapshot(BreakerState.CLOSED))

    def add_listener(self, listener: BreakerListener) -> None:
        """Register a :class:`BreakerListener`."""
        self._listeners.append(listener)

    def remove_listener(self, listener: BreakerListener) -> None:
        """Unregister a listener; a missing one is ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def listeners(self) -> tuple[BreakerListener, ...]:
        """The registered listeners."""
        return tuple(self._listeners)

    # calls -----------------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Use the breaker as a decorator: ``@breaker``; keeps the signature."""

        return through(self.call, fn)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` if the circuit admits it, and record the outcome.

        Raises:
            CircuitOpenError: the circuit is open, or half-open with every probe slot taken;
                ``fn`` was not called. ``retry_after`` says when probes may start.
            Exception: whatever ``fn`` raises, unchanged.
        """
        now = self._clock()
        state = self._state
        if state is BreakerState.OPEN and now < self._open_until:
            raise self._refusal(self._open_until - now)
        probe = False
        epoch: int | None = None
        if state is not BreakerState.CLOSED or now - self._synced_at >= self._sync_interval:
            if now < self._deny_until:
                raise self._refusal(None)
            if state is BreakerState.CLOSED:
                # single flight: while one caller syncs with the store, the others are admitted
                # on the state it last saw (a hung store stalls one caller, not all of them)
                self._synced_at = now
            grant, snap = await self._store.acquire(self.name, self._cfg)
            self._apply(snap)
            if grant is Grant.DENIED:
                if self._shared and snap.state is BreakerState.HALF_OPEN:
                    # every probe slot is taken elsewhere: don't ask the store on each call
                    self._deny_until = self._clock() + min(self._sync_interval, 0.25)
                raise self._refusal(snap.open_remaining or None)
            if grant is Grant.PROBE:
                probe, epoch = True, snap.epoch
        self._calls += 1  # ``sight_breaker_calls_total``, pulled at export by :func:`_samples`
        if self._listeners:
            self._notify("before_call", fn, *args, **kwargs)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            await self._on_error(exc, probe, epoch)
            raise
        self._successes += 1
        if self._listeners:
            self._notify("success")
        if probe or self._failures_seen or self._cfg.failure_rate is not None:
            self._apply(
                await self._store.record(
                    self.name, self._cfg, failure=False, probe=probe, epoch=epoch
                )
            )
        return result

    async def cool_down(self, seconds: float) -> BreakerState:
        """Hold the circuit open for at least ``seconds`` (in the store: every process sharing
        it stops too); calls meanwhile raise :class:`~sight_core.errors.RateLimitedError`.
        Afterwards the circuit is half-open, as after any opening."""
        if not seconds > 0:
            raise ConfigurationError(f"circuit {self.name!r}: cool_down({seconds}): must be > 0")
        self._apply(await self._store.cool_down(self.name, self._cfg, float(seconds)))
        _obs.increment("sight_breaker_cooldowns_total", 1, name=self.name)
        _log.warning("circuit %r: cooling down for %.1fs (server quota)", self.name, seconds)
        return self._state

    def _refusal(self, retry_after: float | None) -> CircuitOpenError:
        self._rejected += 1
        _obs.increment("sight_breaker_rejected_total", 1, name=self.name)
        if self._cooldown:
            return RateLimitedError(self.name, retry_after)
        return CircuitOpenError(self.name, retry_after)

    def cooldown_after(self, exc: BaseException) -> float | None:
        """Seconds of cooldown that ``exc`` asks for (see ``max_server_wait``), or ``None``."""
        if self._max_server_wait is None or not isinstance(exc, Exception):
            return None
        return cooldown_for(self._classifier(exc), self._max_server_wait, self._quota_cooldown)

    def counts_as_failure(self, exc: BaseException) -> bool:
        """Whether ``exc`` counts against the circuit: transient per the classifier and not
        excluded. A ``DeadlineExceededError`` counts when the error behind it was transient."""
        if not isinstance(exc, Exception):
            return False
        for rule in self._exclude:
            if isinstance(rule, type):
                if isinstance(exc, rule):
                    return False
            elif rule(exc):
                return False
        if self._classifier(exc).kind == "transient":
            return True
        cause = exc.__cause__
        return (
            isinstance(exc, DeadlineExceededError)
            and cause is not None
            and self._classifier(cause).kind == "transient"
        )

    async def _on_error(self, exc: BaseException, probe: bool, epoch: int | None) -> None:
        try:
            cooldown = self.cooldown_after(exc)
            failure = cooldown is None and self.counts_as_failure(exc)
        except Exception:  # a broken predicate must not hide the call's own error
            _log.warning("circuit %r: exclude rule or classifier failed", self.name, exc_info=True)
            cooldown, failure = None, False
        if cooldown is not None:
            await self.cool_down(cooldown)
        elif failure:
            self._failures_counted += 1
            _obs.increment("sight_breaker_failures_total", 1, name=self.name)
            if self._listeners:
                self._notify("failure", exc)
            snap = await self._store.record(
                self.name, self._cfg, failure=True, probe=probe, epoch=epoch
            )
            self._apply(snap)
        elif probe:
            self._apply(await self._store.release(self.name, self._cfg, epoch))
        if self._state is BreakerState.OPEN:  # refused from now on: say so to the layers around
            remaining = max(0.0, self._open_until - self._clock())
            mark_circuit(exc, CircuitInfo(self.name, BreakerState.OPEN, remaining, self._cooldown))

    def _apply(self, snap: Snapshot) -> None:
        if snap.seq:
            if 0 < self._seq - snap.seq <= _REORDER_WINDOW_US:
                return  # a late reply: a newer state was applied already
            self._seq = snap.seq
        now = self._clock()
        old = self._state
        self._state = snap.state
        self._cooldown = snap.cooldown
        self._failures_seen = snap.failures
        self._synced_at = now
        if snap.state is BreakerState.OPEN:
            self._open_until = now + snap.open_remaining
        if snap.state is not old:
            self._deny_until = -float("inf")
            _log.info("circuit %r: %s -> %s", self.name, old, snap.state)
            _obs.set_gauge("sight_breaker_state", _GAUGE[snap.state], name=self.name)
            _obs.increment(
                "sight_breaker_transitions_total", 1, name=self.name, state=str(snap.state)
            )
            if self._listeners:
                self._notify("state_change", old, snap.state)

    def _notify(self, hook: str, /, *args: Any, **kwargs: Any) -> None:
        # positional-only: the call's own keyword arguments may be named ``hook`` or ``self``
        for listener in tuple(self._listeners):
            try:
                getattr(listener, hook)(self, *args, **kwargs)
            except Exception:
                _log.warning("circuit %r: listener %s failed", self.name, hook, exc_info=True)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state}>"
