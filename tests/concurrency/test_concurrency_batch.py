"""BatchLoader: coalescing, splitting, the concurrency cap, per-key errors."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence

import pytest
from concurrency_probe import settle

from sight_core.concurrency import BatchLoader
from sight_core.errors import ConfigurationError


class Backend:
    """A fake store that records each batch call and how many run at once."""

    def __init__(self, missing: frozenset[int] = frozenset()) -> None:
        self.calls: list[list[int]] = []
        self.in_flight = 0
        self.peak = 0
        self.missing = missing

    async def fetch(self, keys: list[int]) -> Mapping[int, str | Exception]:
        self.calls.append(list(keys))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await settle(3)
            return {
                k: (ValueError(f"bad {k}") if k % 10 == 7 else f"v{k}")
                for k in keys
                if k not in self.missing
            }
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("size", [1, 7, 25, 100, 150])
async def test_100_concurrent_loads_cost_ceil_100_over_size_calls(size: int) -> None:
    backend = Backend()
    loader = BatchLoader(backend.fetch, max_batch_size=size, max_concurrency=100)
    keys = list(range(100))
    results = await asyncio.gather(*(loader.load(k) for k in keys), return_exceptions=True)
    assert len(backend.calls) == math.ceil(100 / size) == loader.batch_calls
    assert all(len(call) <= size for call in backend.calls)
    assert sorted(k for call in backend.calls for k in call) == keys
    for k, result in zip(keys, results, strict=True):
        if k % 10 == 7:
            assert isinstance(result, ValueError)
        else:
            assert result == f"v{k}"


async def test_batches_run_under_max_concurrency() -> None:
    backend = Backend()
    loader = BatchLoader(backend.fetch, max_batch_size=5, max_concurrency=3)
    await asyncio.gather(*(loader.load(k) for k in range(0, 60, 2)))
    assert len(backend.calls) == 6
    assert backend.peak == 3


async def test_a_per_key_error_fails_only_its_callers() -> None:
    loader = BatchLoader(Backend().fetch, max_batch_size=50, max_concurrency=1)
    ok, bad, also_bad = await asyncio.gather(
        loader.load(1), loader.load(7), loader.load(7), return_exceptions=True
    )
    assert ok == "v1"
    assert isinstance(bad, ValueError)
    assert also_bad is bad


async def test_a_missing_key_is_a_key_error_for_that_caller() -> None:
    loader = BatchLoader(Backend(missing=frozenset({3})).fetch, max_batch_size=50)
    found, missing = await asyncio.gather(loader.load(2), loader.load(3), return_exceptions=True)
    assert found == "v2"
    assert isinstance(missing, KeyError)
    assert missing.args == (3,)


async def test_a_failing_batch_fails_its_callers_only() -> None:
    calls = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        calls.append(keys)
        if 0 in keys:
            raise ConnectionError("db down")
        return {k: k for k in keys}

    loader = BatchLoader(fetch, max_batch_size=2, max_concurrency=2)
    results = await asyncio.gather(*(loader.load(k) for k in range(4)), return_exceptions=True)
    assert [type(r).__name__ for r in results[:2]] == ["ConnectionError", "ConnectionError"]
    assert results[2:] == [2, 3]
    assert len(calls) == 2


async def test_duplicate_keys_in_a_tick_are_fetched_once() -> None:
    backend = Backend()
    loader = BatchLoader(backend.fetch)
    results = await asyncio.gather(*(loader.load(k % 3) for k in range(9)))
    assert backend.calls == [[0, 1, 2]]
    assert results == ["v0", "v1", "v2"] * 3


async def test_loads_in_different_ticks_are_different_batches() -> None:
    backend = Backend()
    loader = BatchLoader(backend.fetch)
    assert await loader.load(1) == "v1"
    assert await loader.load_many([2, 3, 4]) == ["v2", "v3", "v4"]
    assert backend.calls == [[1], [2, 3, 4]]


async def test_sequence_results_are_matched_to_keys_in_order() -> None:
    async def fetch(keys: list[str]) -> Sequence[str | Exception]:
        return [k.upper() if k != "x" else LookupError(k) for k in keys]

    loader: BatchLoader[str, str] = BatchLoader(fetch)
    results = await asyncio.gather(*(loader.load(k) for k in "abx"), return_exceptions=True)
    assert results[:2] == ["A", "B"]
    assert isinstance(results[2], LookupError)


@pytest.mark.parametrize("bad", ["abc", [1], 42])
async def test_a_malformed_batch_result_is_a_type_error(bad: object) -> None:
    async def fetch(keys: list[int]) -> object:
        return bad

    loader: BatchLoader[int, object] = BatchLoader(fetch, max_batch_size=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch_fn returned"):
        await loader.load_many([1, 2])


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    backend = Backend()
    loader = BatchLoader(backend.fetch)
    doomed = asyncio.create_task(loader.load(1))
    kept = asyncio.create_task(loader.load(1))
    alone = asyncio.create_task(loader.load(2))
    await asyncio.sleep(0)  # both loads queued, dispatch not yet run
    doomed.cancel()
    alone.cancel()
    assert await kept == "v1"
    assert doomed.cancelled()
    assert alone.cancelled()
    assert backend.calls == [[1]]  # key 2 had no caller left and was not fetched


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_batch_size": 0}, ConfigurationError, "max_batch_size"),
        ({"max_concurrency": 0}, ConfigurationError, "max_concurrency"),
        ({"max_batch_size": 2.0}, TypeError, "max_batch_size"),
    ],
)
def test_bad_arguments_name_themselves(
    kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        BatchLoader(Backend().fetch, **kwargs)  # type: ignore[arg-type]


def test_batch_fn_must_be_callable() -> None:
    with pytest.raises(TypeError, match="batch_fn"):
        BatchLoader(None)  # type: ignore[arg-type]
