"""A stateful search for counterexamples to the cache's consistency contract, on real Redis.

Invariants, checked after every step:

- no read that started after an invalidation of an item returned (key, tag or namespace,
  from any version) returns a value computed from the source before that invalidation;
- one computation per flight: at no time do two computations of one entry run at once,
  across processes (two ``Cache`` objects on their own clients stand for two processes).

Rules interleave concurrent readers (two processes, two versions of one namespace), writers of
the source of truth followed by an invalidation of each kind, slow computations released in
any order, and steps where everything in flight makes progress.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from sight_core.cache import Cache

ITEMS = (1, 2, 3)
VERSIONS = (1, 2)
PROCESSES = (0, 1)


class Read:
    __slots__ = ("item", "required", "task")

    def __init__(self, item: int, required: int, task: asyncio.Task[dict[str, int]]) -> None:
        self.item = item
        self.required = required
        self.task = task


class CacheMachine(RuleBasedStateMachine):
    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.source = dict.fromkeys(ITEMS, 0)  # the row each item is computed from
        self.required = dict.fromkeys(ITEMS, 0)  # version every later read must reach
        self.running: dict[tuple[int, int], int] = {}
        self.overlaps: list[tuple[int, int]] = []
        self.gates: list[asyncio.Event] = []
        self.reads: list[Read] = []
        self.ids = itertools.count()
        self.caches: list[Cache] = []
        self.clients: list[Redis] = []
        self.fns: dict[tuple[int, int], Any] = {}

    @initialize()
    def bind(self) -> None:
        with SyncRedis.from_url(self.redis_url) as sync:
            sync.flushdb()
        for process in PROCESSES:
            client = Redis.from_url(self.redis_url)
            cache = Cache(prefix="machine", lock_ttl=5.0, op_timeout=2.0)
            cache.bind(client)
            self.clients.append(client)
            self.caches.append(cache)
            for version in VERSIONS:
                self.fns[process, version] = self._cached(cache, version)

    def _cached(self, cache: Cache, version: int) -> Any:
        machine = self

        @cache.cached(
            namespace="machine",
            version=version,
            key="{item}",
            tags=("item:{item}", "group:{group}"),
            ttl=60,
            jitter=0,
        )
        async def get(item: int, group: int) -> dict[str, int]:
            entry = (version, item)
            machine.running[entry] = machine.running.get(entry, 0) + 1
            if machine.running[entry] > 1:
                machine.overlaps.append(entry)
            try:
                seen = machine.source[item]
                gate = asyncio.Event()
                machine.gates.append(gate)
                await gate.wait()
                return {"seen": seen, "id": next(machine.ids)}
            finally:
                machine.running[entry] -= 1

        return get

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(timeout):
                return await coro

        return self.loop.run_until_complete(bounded())

    @rule(
        process=st.sampled_from(PROCESSES),
        version=st.sampled_from(VERSIONS),
        item=st.sampled_from(ITEMS),
        copies=st.integers(1, 3),
    )
    def read(self, process: int, version: int, item: int, copies: int) -> None:
        fn = self.fns[process, version]
        for _ in range(copies):
            task = self.loop.create_task(fn(item, item % 2))
            self.reads.append(Read(item, self.required[item], task))
        self._run(asyncio.sleep(0.01))  # let them reach Redis (and start computing)

    @rule(
        item=st.sampled_from(ITEMS),
        kind=st.sampled_from(["key", "tag", "group", "namespace"]),
        process=st.sampled_from(PROCESSES),
        version=st.sampled_from(VERSIONS),
    )
    def write_then_invalidate(self, item: int, kind: str, process: int, version: int) -> None:
        self.source[item] += 1
        written = self.source[item]
        cache, fn = self.caches[process], self.fns[process, version]
        if kind == "key":
            self._run(fn.invalidate(item))
            reached = [item]
        elif kind == "tag":
            self._run(cache.invalidate_tags(f"item:{item}"))
            reached = [item]
        elif kind == "group":
            self._run(cache.invalidate_tags(f"group:{item % 2}"))
            reached = [i for i in ITEMS if i % 2 == item % 2]
        else:
            self._run(cache.invalidate_namespace("machine"))
            reached = list(ITEMS)
        for other in reached:  # every item it reached must now be as new as its source
            self.required[other] = max(self.required[other], self.source[other])
        assert self.required[item] == written

    @rule(index=st.integers(0, 7))
    def finish_a_computation(self, index: int) -> None:
        # Drawn independently of what is waiting: which computations exist depends on timing,
        # and hypothesis needs the same draws to replay a failing example.
        waiting = [g for g in self.gates if not g.is_set()]
        if waiting:
            waiting[index % len(waiting)].set()
        self._run(asyncio.sleep(0.01))

    @rule()
    def progress(self) -> None:
        self._run(asyncio.sleep(0.02))

    @invariant()
    def reads_are_never_older_than_a_completed_invalidation(self) -> None:
        for read in self.reads:
            if read.task.done():
                value = read.task.result()
                assert value["seen"] >= read.required, (read.item, value, read.required)

    @invariant()
    def one_computation_per_flight(self) -> None:
        assert self.overlaps == []

    def teardown(self) -> None:
        try:
            if self.caches:
                for gate in self.gates:
                    gate.set()

                async def settle() -> None:
                    while not all(r.task.done() for r in self.reads):
                        for gate in self.gates:
                            gate.set()
                        await asyncio.sleep(0.01)

                self._run(settle())
                self.reads_are_never_older_than_a_completed_invalidation()
                self.one_computation_per_flight()
        finally:
            for cache in self.caches:
                self._run(cache.aclose())
            for client in self.clients:
                self._run(client.aclose())
            self.loop.close()


def test_cache_consistency_machine(redis_url: str) -> None:
    CacheMachine.redis_url = redis_url
    run_state_machine_as_test(
        CacheMachine,
        settings=settings(max_examples=15, stateful_step_count=25, deadline=None),
    )
