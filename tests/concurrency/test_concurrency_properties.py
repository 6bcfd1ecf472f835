"""Property tests: random per-item delays (event-loop yields) and failures."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Coroutine, Iterator
from typing import Any

from concurrency_probe import Boom, Probe, settle
from hypothesis import given, settings
from hypothesis import strategies as st

from sight_core.concurrency import Limiter, gather_limited, map_limited

# each item: (how many loop iterations it takes, whether it fails)
items = st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=40)
limits = st.integers(1, 12)
examples = settings(max_examples=60, deadline=None)


class Recorder(Probe):
    """A Probe that also keeps every coroutine it created and a log of starts and failures."""

    def __init__(self) -> None:
        super().__init__()
        self.coros: list[Coroutine[Any, Any, int]] = []
        self.log: list[tuple[str, int]] = []

    async def step(self, i: int, yields: int, fail: bool) -> int:
        self.log.append(("start", i))
        try:
            return await self.work(i, yields=yields, fail=fail)
        except Boom:
            self.log.append(("fail", i))
            raise

    def specs(self, specs: list[tuple[int, bool]]) -> Iterator[Coroutine[Any, Any, int]]:
        for i, (yields, fail) in enumerate(specs):
            self.pulled += 1
            self.max_ahead = max(self.max_ahead, self.pulled - len(self.finished))
            coro = self.step(i, yields, fail)
            self.coros.append(coro)
            yield coro

    def all_closed(self) -> bool:
        return all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in self.coros)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@examples
@given(specs=items, limit=limits)
def test_return_exceptions_keeps_order_bound_and_laziness(
    specs: list[tuple[int, bool]], limit: int
) -> None:
    async def main() -> None:
        rec = Recorder()
        results = await gather_limited(rec.specs(specs), limit=limit, return_exceptions=True)
        assert len(results) == len(specs)
        for i, ((_, fail), result) in enumerate(zip(specs, results, strict=True)):
            if fail:
                assert isinstance(result, Boom)
                assert result.args == (i,)
            else:
                assert result == i
        assert rec.peak <= limit
        if specs and all(yields > 0 for yields, _ in specs):
            assert rec.peak == min(limit, len(specs))
        assert rec.max_ahead <= limit
        assert rec.in_flight == 0
        assert rec.all_closed()

    run(main())


@examples
@given(specs=items, limit=limits)
def test_fail_fast_raises_a_real_failure_and_leaves_nothing_behind(
    specs: list[tuple[int, bool]], limit: int
) -> None:
    async def main() -> None:
        rec = Recorder()
        try:
            results = await gather_limited(rec.specs(specs), limit=limit)
        except Boom as exc:
            (index,) = exc.args
            assert specs[index][1]
            first_fail = rec.log.index(("fail", index))
            assert ("start", index) in rec.log
            # nothing started once the first failure happened
            assert all(event != "start" for event, _ in rec.log[first_fail:])
            assert next(e for e in rec.log if e[0] == "fail") == ("fail", index)
        else:
            assert not any(fail for _, fail in specs)
            assert results == list(range(len(specs)))
        assert rec.peak <= limit
        assert rec.in_flight == 0
        assert rec.all_closed()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(main())


@examples
@given(specs=items, limit=limits, ticks=st.integers(0, 10))
def test_outer_cancellation_at_any_point_stops_everything(
    specs: list[tuple[int, bool]], limit: int, ticks: int
) -> None:
    async def main() -> None:
        rec = Recorder()
        call = asyncio.ensure_future(
            gather_limited(rec.specs(specs), limit=limit, return_exceptions=True)
        )
        await settle(ticks)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        assert rec.in_flight == 0
        assert rec.all_closed()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(main())


@examples
@given(specs=items, limit=limits, ordered=st.booleans())
def test_map_limited_yields_every_item_once(
    specs: list[tuple[int, bool]], limit: int, ordered: bool
) -> None:
    async def main() -> None:
        rec = Recorder()

        async def fn(i: int) -> int:
            yields, fail = specs[i]
            return await rec.step(i, yields, fail)

        pairs = [
            pair
            async for pair in map_limited(
                fn, range(len(specs)), limit=limit, ordered=ordered, return_exceptions=True
            )
        ]
        indexes = [i for i, _ in pairs]
        assert sorted(indexes) == list(range(len(specs)))
        if ordered:
            assert indexes == list(range(len(specs)))
        for i, result in pairs:
            assert isinstance(result, Boom) if specs[i][1] else result == i
        assert rec.peak <= limit
        assert rec.in_flight == 0

    run(main())


@examples
@given(first=items, second=items, cap=st.integers(1, 6))
def test_a_shared_limiter_bounds_concurrent_fan_outs_together(
    first: list[tuple[int, bool]], second: list[tuple[int, bool]], cap: int
) -> None:
    async def main() -> None:
        rec = Recorder()
        shared = Limiter("shared", cap)
        await asyncio.gather(
            gather_limited(rec.specs(first), limit=10, limiter=shared, return_exceptions=True),
            gather_limited(rec.specs(second), limiter=shared, return_exceptions=True),
        )
        assert rec.peak <= cap
        assert len(rec.finished) == len(first) + len(second)
        assert (shared.in_flight, shared.waiting) == (0, 0)

    run(main())


@examples
@given(
    specs=st.lists(st.tuples(st.integers(0, 6), st.booleans(), st.booleans()), max_size=30),
    limit=limits,
    kind=st.sampled_from(["list", "generator", "async generator"]),
    return_exceptions=st.booleans(),
    cap=st.none() | st.integers(1, 6),
    timeout=st.none() | st.just(60.0),
    cancel_after=st.none() | st.just(0) | st.integers(1, 10),
)
def test_nothing_it_created_or_received_is_left_running_or_unawaited(
    specs: list[tuple[int, bool, bool]],
    limit: int,
    kind: str,
    return_exceptions: bool,
    cap: int | None,
    timeout: float | None,
    cancel_after: int | None,
) -> None:
    """Invariant: once gather_limited has returned or raised (an item's error, or the caller's
    cancellation at any point, before its first step included), every task created meanwhile
    is done, every coroutine it received was awaited or closed, a generator source is closed
    or was never advanced, and no limiter slot is held. Items may be coroutines or callables."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        created: list[asyncio.Future[Any]] = []

        def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
            task = asyncio.Task(coro, loop=loop, **kw)
            created.append(task)
            return task

        rec = Recorder()
        source_done: list[bool] = []

        def item(i: int, yields: int, fail: bool, lazy: bool) -> Any:
            if not lazy:
                coro = rec.step(i, yields, fail)
                rec.coros.append(coro)
                return coro

            def call() -> Coroutine[Any, Any, int]:
                coro = rec.step(i, yields, fail)
                rec.coros.append(coro)
                return coro

            return call

        def generator() -> Iterator[Any]:
            try:
                for i, (yields, fail, lazy) in enumerate(specs):
                    yield item(i, yields, fail, lazy)
            finally:
                source_done.append(True)

        async def async_generator() -> Any:
            try:
                for i, (yields, fail, lazy) in enumerate(specs):
                    await asyncio.sleep(0)
                    yield item(i, yields, fail, lazy)
            finally:
                source_done.append(True)

        if kind == "list":
            source: Any = [item(i, y, f, lazy) for i, (y, f, lazy) in enumerate(specs)]
            source_done.append(True)
        elif kind == "generator":
            source = generator()
        else:
            source = async_generator()
        limiter = None if cap is None else Limiter("shared", cap)

        loop.set_task_factory(counting_factory)
        try:
            call = loop.create_task(
                gather_limited(
                    source,
                    limit=limit,
                    return_exceptions=return_exceptions,
                    timeout=timeout,
                    limiter=limiter,
                )
            )
            if cancel_after is not None:
                await settle(cancel_after)  # 0: cancelled before its first step
                call.cancel()
            with contextlib.suppress(Boom, asyncio.CancelledError):
                await call
        finally:
            loop.set_task_factory(None)

        assert [t for t in created if not t.done()] == []
        assert rec.all_closed(), "a coroutine it received was neither awaited nor closed"
        assert rec.in_flight == 0
        if specs and kind != "list" and not call.cancelled() and call.exception() is None:
            assert source_done == [True]  # exhausted
        assert len(source_done) <= 1
        if kind == "generator":
            assert inspect.getgeneratorstate(source) in (inspect.GEN_CLOSED, inspect.GEN_CREATED)
        if limiter is not None:
            assert (limiter.in_flight, limiter.waiting) == (0, 0)

    run(main())
