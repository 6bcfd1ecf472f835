"""A stateful search for counterexamples to the cache's consistency contract, on real Redis.

Invariants, checked after every step:

- no read that started after an invalidation of an item returned (key, tag or namespace,
  from any version) returns a value computed from the source before that invalidation;
- one computation per flight: at no time do two computations of one entry run at once,
  across processes (two ``Cache`` objects on their own clients stand for two processes).

Rules interleave concurrent readers (two processes, two versions of one namespace), writers of
the source of truth followed by an invalidation of each kind, slow computations released in
any order, and steps where everything in flight makes progress.

:class:`FaultyCacheMachine` adds faults: each process reaches Redis through its own
:class:`~sight_core.testing.FaultProxy`, and rules make it slow (replies after the deadline),
black-hole it or reset its connections, then heal it. An invalidation that raises
``CacheError`` has not completed (it sets no requirement); reads meanwhile fail open and
compute. Exactly one computation per flight is promised only while Redis answers within the
deadline, so that invariant is checked while no operation has failed.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
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
from redis import RedisCluster as SyncRedisCluster
from redis.asyncio import Redis, RedisCluster

from sight_core.cache import Cache
from sight_core.errors import CacheError
from sight_core.testing import FaultProxy

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
    op_timeout = 2.0
    cluster = False  # a Redis Cluster node's URL: each "process" binds a RedisCluster

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
        self.clients: list[Any] = []
        self.fns: dict[tuple[int, int], Any] = {}
        self.faulted = False  # a fault was injected in this example

    @initialize()
    def bind(self) -> None:
        if self.cluster:
            with SyncRedisCluster.from_url(self.redis_url) as sync_cluster:
                sync_cluster.flushall(target_nodes=SyncRedisCluster.PRIMARIES)
        else:
            with SyncRedis.from_url(self.redis_url) as sync:
                sync.flushdb()
        for process in PROCESSES:
            client: Any = (
                RedisCluster.from_url(self.redis_url)
                if self.cluster
                else Redis.from_url(self._url(process), socket_timeout=5)
            )
            cache = Cache(prefix="machine", lock_ttl=5.0, op_timeout=self.op_timeout)
            cache.bind(client)
            self.clients.append(client)
            self.caches.append(cache)
            for version in VERSIONS:
                self.fns[process, version] = self._cached(cache, version)

    def _url(self, process: int) -> str:
        """The URL process ``process`` reaches Redis by."""
        return self.redis_url

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
        try:
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
        except CacheError:
            assert self.faulted  # only an injected fault may fail an invalidation
            return  # not completed: it promises nothing
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
        # Promised while Redis answers within the deadline: after any failed operation (an
        # injected fault, or a timeout on a loaded machine) callers compute without the lock.
        failed = any(n.errors for c in self.caches for n in c.stats().values())
        if not (self.faulted or failed):
            assert self.overlaps == []

    def _heal_all(self) -> None:
        """Make Redis reachable again for every process (nothing to do without faults)."""

    def teardown(self) -> None:
        try:
            if self.caches:
                self._heal_all()
                for gate in self.gates:
                    gate.set()

                async def settle() -> None:
                    while not all(r.task.done() for r in self.reads):
                        for gate in self.gates:
                            gate.set()
                        await asyncio.sleep(0.01)

                self._run(settle(), timeout=30.0)  # a lost commit costs a lease (5 s)
                self.reads_are_never_older_than_a_completed_invalidation()
                self.one_computation_per_flight()
        finally:
            for cache in self.caches:
                self._run(cache.aclose())
            for client in self.clients:
                self._run(client.aclose())
            self.loop.close()
            self._close()

    def _close(self) -> None:
        """Release what :meth:`_url` started."""


class FaultyCacheMachine(CacheMachine):
    """:class:`CacheMachine` with each process behind its own fault proxy."""

    op_timeout = 0.3  # a maintenance step gets 1.2 s; a black-holed step costs that once

    def __init__(self) -> None:
        super().__init__()
        self.proxies: dict[int, FaultProxy] = {}

    def _url(self, process: int) -> str:
        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        proxy = self.proxies[process] = FaultProxy(port).start()
        return proxy.url_for(self.redis_url)

    @rule(
        process=st.sampled_from(PROCESSES),
        kind=st.sampled_from(["slow", "blackhole", "reset"]),
    )
    def fault(self, process: int, kind: str) -> None:
        self.faulted = True
        proxy = self.proxies[process]
        if kind == "slow":
            proxy.set_latency(self.op_timeout * 1.5)  # every reply after the deadline
        elif kind == "blackhole":
            proxy.blackhole()
        else:
            proxy.reset()  # live connections die; new ones work
        self._run(asyncio.sleep(0.05))

    @rule(process=st.sampled_from(PROCESSES))
    def heal(self, process: int) -> None:
        self.proxies[process].restore()
        self._run(asyncio.sleep(0.02))

    def _heal_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.restore()

    def _close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()


def test_cache_consistency_machine(redis_url: str) -> None:
    CacheMachine.redis_url = redis_url
    run_state_machine_as_test(
        CacheMachine,
        settings=settings(max_examples=15, stateful_step_count=25, deadline=None),
    )


def test_cache_consistency_machine_with_faults(redis_url: str) -> None:
    FaultyCacheMachine.redis_url = redis_url
    run_state_machine_as_test(
        FaultyCacheMachine,
        settings=settings(max_examples=8, stateful_step_count=20, deadline=None),
    )


@pytest.mark.cluster
def test_cache_consistency_machine_on_a_cluster(redis_cluster: Any) -> None:
    """The same search on the 3-primary cluster: entries spread over hash-tag buckets, the
    fence clock in its own slot."""
    machine = type("ClusterCacheMachine", (CacheMachine,), {})
    machine.redis_url = redis_cluster.url
    machine.cluster = True
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=8, stateful_step_count=20, deadline=None),
    )
