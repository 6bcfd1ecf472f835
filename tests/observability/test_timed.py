import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest

from sight_core.errors import ConfigurationError
from sight_core.observability import _timed as timed_module
from sight_core.observability import metric_name, reset, snapshot, timed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timed_module, "perf_counter", fake)
    return fake


def test_metric_name() -> None:
    assert metric_name("persona.generate") == "sight_persona_generate_seconds"
    assert metric_name("sight_persona_generate_seconds") == "sight_persona_generate_seconds"
    assert metric_name("http request-time") == "sight_http_request_time_seconds"


def test_sync_decorator_records_each_call_and_keeps_signature(clock: FakeClock) -> None:
    @timed("persona.generate", tier="flash")
    def generate(n: int, *, style: str = "short") -> str:
        """Doc."""
        clock.advance(0.25 * n)
        return style * n

    assert generate(2, style="a") == "aa"
    assert generate(1) == "short"
    assert generate.__name__ == "generate"
    assert generate.__doc__ == "Doc."
    assert str(inspect.signature(generate)) == "(n: int, *, style: str = 'short') -> str"
    hist = snapshot().histogram("sight_persona_generate_seconds", tier="flash")
    assert (hist.count, hist.sum, hist.min, hist.max) == (2, 0.75, 0.25, 0.5)
    assert snapshot().counters == {}


async def test_async_decorator_records_awaited_time(clock: FakeClock) -> None:
    @timed("llm.call", model="flash")
    async def call(prompt: str) -> int:
        await asyncio.sleep(0)
        clock.advance(1.5)
        return len(prompt)

    assert inspect.iscoroutinefunction(call)
    assert await call("abc") == 3
    assert list(await asyncio.gather(call("a"), call("bb"))) == [1, 2]
    hist = snapshot().histogram("sight_llm_call_seconds", model="flash")
    assert hist.count == 3
    assert hist.max >= 1.5


def test_sync_exception_records_duration_and_counts_error(clock: FakeClock) -> None:
    @timed("db.flush")
    def flush() -> None:
        clock.advance(2.0)
        raise KeyError("x")

    with pytest.raises(KeyError):
        flush()
    snap = snapshot()
    assert snap.histogram("sight_db_flush_seconds").sum == 2.0
    assert snap.counter("sight_db_flush_errors_total", error="KeyError") == 1


async def test_async_exception_and_cancellation_are_recorded(clock: FakeClock) -> None:
    started = asyncio.Event()

    @timed("llm.call", model="pro")
    async def call(fail: bool) -> None:
        if fail:
            clock.advance(0.5)
            raise TimeoutError
        started.set()
        await asyncio.sleep(3600)

    with pytest.raises(TimeoutError):
        await call(True)
    task = asyncio.create_task(call(False))
    await started.wait()
    clock.advance(4.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snap = snapshot()
    hist = snap.histogram("sight_llm_call_seconds", model="pro")
    assert (hist.count, hist.max) == (2, 4.0)
    assert snap.counter("sight_llm_call_errors_total", error="TimeoutError", model="pro") == 1
    assert snap.counter("sight_llm_call_errors_total", error="CancelledError", model="pro") == 1


def test_context_manager_sets_elapsed(clock: FakeClock) -> None:
    with timed("persona.render", step="prompt") as t:
        clock.advance(0.125)
    assert t.elapsed == 0.125
    with pytest.raises(ValueError), timed("persona.render", step="prompt"):
        clock.advance(1.0)
        raise ValueError
    snap = snapshot()
    assert snap.histogram("sight_persona_render_seconds", step="prompt").count == 2
    assert snap.counter("sight_persona_render_errors_total", error="ValueError", step="prompt") == 1


async def test_async_context_manager(clock: FakeClock) -> None:
    async with timed("focus_group.answer") as t:
        await asyncio.sleep(0)
        clock.advance(3.0)
    assert t.elapsed == 3.0
    assert snapshot().histogram("sight_focus_group_answer_seconds").sum == 3.0


def test_one_instance_cannot_time_two_blocks_at_once(clock: FakeClock) -> None:
    timer = timed("x")
    with timer, pytest.raises(ConfigurationError, match="one timed"), timer:
        pass
    with timer:  # reusable once the previous block ended
        clock.advance(1.0)
    assert snapshot().histogram("sight_x_seconds").count == 2


def test_decorated_function_keeps_recording_after_reset(clock: FakeClock) -> None:
    @timed("cached.series")
    def work() -> None:
        clock.advance(1.0)

    work()
    reset()
    work()
    work()
    assert snapshot().histogram("sight_cached_series_seconds").count == 2


def test_decoration_does_no_work_until_called() -> None:
    @timed("never.called")
    def idle() -> None: ...

    assert "sight_never_called_seconds" not in snapshot().histograms


def test_generator_functions_are_refused() -> None:
    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ConfigurationError, match="generator"):
        timed("x")(gen)
    with pytest.raises(ConfigurationError, match="generator"):
        timed("x")(agen)


@pytest.mark.parametrize(
    ("labels", "named"),
    [({"le": "1"}, "le"), ({"bad-name": "x"}, "bad-name"), ({"error": "x"}, "error")],
)
def test_bad_labels_fail_at_construction_not_after_the_timed_call(
    labels: dict[str, str], named: str
) -> None:
    ran = []
    with pytest.raises(ConfigurationError, match=named):

        @timed("checkout.pay", **labels)
        def pay() -> None:
            ran.append(1)  # a side effect that must not be followed by an instrumentation error

        pay()
    assert ran == []
