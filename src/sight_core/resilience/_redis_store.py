"""Breaker state shared by every process through Redis: one hash per breaker, one Lua script.

Each operation is a single ``EVALSHA`` of :data:`_LUA`, so a transition is atomic across
processes; time comes from the Redis server (``TIME``), so processes whose clocks disagree
still agree on when the circuit may be probed; every write refreshes a TTL on the key, so an
idle breaker's state disappears. When Redis fails or is slower than ``op_timeout``, the store
answers from a process-local :class:`MemoryBreakerStore` for ``retry_interval`` seconds and
then tries Redis again: the breaker keeps working, with per-process state meanwhile. Every
answer from Redis is mirrored into that local store, so it starts from the last known state:
an open circuit (or a cooldown) stays open until its time is over and then admits at most
``half_open_max_calls`` probes from this process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from sight_core.errors import ConfigurationError

from . import _obs
from ._store import BreakerConfig, BreakerState, Grant, MemoryBreakerStore, Snapshot

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBreakerStore"]

_log = logging.getLogger("sight_core.resilience")

_STATES: Final = (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)

# KEYS[1] = the breaker's hash. ARGV: op, threshold (0 = none), recovery_ms, max_probes,
# rate (< 0 = none), window_ms, min_calls, lease_ms, ttl_ms, probe (1/0),
# epoch of the reporting probe (< 0 = unchecked), cooldown_ms.
# Fields: st (0 closed, 1 open, 2 half-open), f consecutive failures, ou open-until ms,
# p probes in flight, s probe successes, pu probe lease end ms, e epoch (openings so far),
# cd (1: the opening is a cooldown), bi/bc/bf<i> window buckets.
# Returns {state, failures, open_remaining_ms, grant (0 denied, 1 call, 2 probe),
# seq (server time in microseconds: orders replies that arrive out of order), epoch, cooldown}.
_LUA: Final = """
local key = KEYS[1]
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local recovery_ms = tonumber(ARGV[3])
local max_probes = tonumber(ARGV[4])
local rate = tonumber(ARGV[5])
local window_ms = tonumber(ARGV[6])
local min_calls = tonumber(ARGV[7])
local lease_ms = tonumber(ARGV[8])
local ttl_ms = tonumber(ARGV[9])
local probe = ARGV[10] == '1'
local call_epoch = tonumber(ARGV[11])
local cooldown_ms = tonumber(ARGV[12])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', key, 'st', 'f', 'ou', 'p', 's', 'pu', 'e', 'cd')
local st = tonumber(h[1]) or 0
local f = tonumber(h[2]) or 0
local ou = tonumber(h[3]) or 0
local p = tonumber(h[4]) or 0
local s = tonumber(h[5]) or 0
local pu = tonumber(h[6]) or 0
local e = tonumber(h[7]) or 0
local cd = tonumber(h[8]) or 0
local dirty = false

if st == 1 and now >= ou then st = 2; p = 0; s = 0; cd = 0; dirty = true end
if st == 2 and p > 0 and now >= pu then p = 0; dirty = true end

local function clear_window()
  local fields = {}
  for i = 0, 9 do
    fields[#fields + 1] = 'bi' .. i
    fields[#fields + 1] = 'bc' .. i
    fields[#fields + 1] = 'bf' .. i
  end
  redis.call('HDEL', key, unpack(fields))
end

local function open_circuit()
  st = 1; ou = now + recovery_ms; f = 0; p = 0; s = 0; e = e + 1; cd = 0; dirty = true
  clear_window()
end

local function close_circuit()
  st = 0; f = 0; p = 0; s = 0; cd = 0; dirty = true
  clear_window()
end

local function count(failed)
  local cur = math.floor(now * 10 / window_ms)
  local slot = cur % 10
  if tonumber(redis.call('HGET', key, 'bi' .. slot)) ~= cur then
    redis.call('HSET', key, 'bi' .. slot, cur, 'bc' .. slot, 0, 'bf' .. slot, 0)
  end
  redis.call('HINCRBY', key, 'bc' .. slot, 1)
  if failed then redis.call('HINCRBY', key, 'bf' .. slot, 1) end
  local calls, fails = 0, 0
  for i = 0, 9 do
    local v = redis.call('HMGET', key, 'bi' .. i, 'bc' .. i, 'bf' .. i)
    local bi = tonumber(v[1])
    if bi and cur - bi < 10 then
      calls = calls + (tonumber(v[2]) or 0)
      fails = fails + (tonumber(v[3]) or 0)
    end
  end
  dirty = true
  return calls, fails
end

local stale = probe and call_epoch >= 0 and call_epoch ~= e
local grant = 0
if stale then
  -- a probe admitted before the circuit last opened: its outcome says nothing now
elseif op == 'acquire' then
  if st == 0 then
    grant = 1
  elseif st == 2 and p + s < max_probes then
    p = p + 1; pu = now + lease_ms; grant = 2; dirty = true
  end
elseif op == 'fail' then
  if st == 0 then
    f = f + 1; dirty = true
    local trip = threshold > 0 and f >= threshold
    if rate >= 0 then
      local calls, fails = count(true)
      if calls >= min_calls and fails >= rate * calls then trip = true end
    end
    if trip then open_circuit() end
  elseif st == 2 and probe then
    open_circuit()
  end
elseif op == 'ok' then
  if st == 0 then
    if f ~= 0 then f = 0; dirty = true end
    if rate >= 0 then count(false) end
  elseif st == 2 and probe then
    if p > 0 then p = p - 1 end
    s = s + 1; dirty = true
    if s >= max_probes then close_circuit() end
  end
elseif op == 'release' then
  if st == 2 and p > 0 then p = p - 1; dirty = true end
elseif op == 'cooldown' then
  if st ~= 1 then open_circuit() end
  if now + cooldown_ms > ou then ou = now + cooldown_ms end
  cd = 1; dirty = true
end

if dirty then
  redis.call('HSET', key, 'st', st, 'f', f, 'ou', ou, 'p', p, 's', s, 'pu', pu, 'e', e, 'cd', cd)
  redis.call('PEXPIRE', key, ttl_ms)
end
local remaining = 0
if st == 1 then remaining = ou - now end
return {st, f, remaining, grant, seq, e, cd}
"""


class RedisBreakerStore:
    """Breaker state in Redis, shared by every process that uses the same ``prefix``.

    Args:
        redis: a ``redis.asyncio.Redis`` client (``decode_responses`` either way).
        prefix: key prefix; the state of breaker ``name`` is the hash ``{prefix}:{name}``.
        op_timeout: seconds one Redis operation may take before the local fallback answers.
        key_ttl: seconds an untouched breaker's state is kept (raised to cover the recovery
            timeout, the window and the probe lease).
        retry_interval: seconds to stay on local state after a Redis error before trying again.
        clock: monotonic seconds for the local fallback and the retry interval.

    Cost: one round trip per admitted call while half-open or once per ``sync_interval``,
    and one per counted failure or needed success (every success with ``failure_rate``); none
    for a call refused while open.
    """

    shared: Final = True

    __slots__ = (
        "_clock",
        "_down_until",
        "_key_ttl",
        "_local",
        "_op_timeout",
        "_prefix",
        "_redis",
        "_retry_interval",
        "_script",
    )

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "sight:breaker",
        op_timeout: float = 0.25,
        key_ttl: float = 3600.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for label, value in (
            ("op_timeout", op_timeout),
            ("key_ttl", key_ttl),
            ("retry_interval", retry_interval),
        ):
            if not value > 0 or math.isinf(value):
                raise ConfigurationError(f"RedisBreakerStore({label}={value}): must be > 0")
        self._redis = redis
        self._prefix = prefix
        self._op_timeout = op_timeout
        self._key_ttl = key_ttl
        self._retry_interval = retry_interval
        self._clock = clock
        self._script = redis.register_script(_LUA)
        self._local = MemoryBreakerStore(clock=clock)
        self._down_until = -math.inf

    @property
    def degraded(self) -> bool:
        """Whether the store is answering from local state after a Redis failure."""
        return self._clock() < self._down_until

    def key(self, name: str) -> str:
        """The Redis key holding breaker ``name``."""
        return f"{self._prefix}:{name}"

    async def _run(
        self,
        op: str,
        name: str,
        cfg: BreakerConfig,
        *,
        probe: bool = False,
        epoch: int | None = None,
        cooldown: float = 0.0,
    ) -> tuple[Grant, Snapshot] | None:
        if self._clock() < self._down_until:
            return None
        ttl = max(self._key_ttl, cfg.recovery_timeout + cfg.probe_lease + cfg.window)
        ttl = max(ttl, cooldown + cfg.probe_lease + cfg.window)
        args: Sequence[Any] = (
            op,
            cfg.failure_threshold or 0,
            int(cfg.recovery_timeout * 1000),
            cfg.half_open_max_calls,
            -1 if cfg.failure_rate is None else cfg.failure_rate,
            int(cfg.window * 1000),
            cfg.minimum_calls,
            int(cfg.probe_lease * 1000),
            int(ttl * 1000),
            1 if probe else 0,
            -1 if epoch is None else epoch,
            int(cooldown * 1000),
        )
        try:
            async with asyncio.timeout(self._op_timeout):
                raw = await self._script(keys=[self.key(name)], args=args)
            state, failures, remaining_ms, grant, seq, opened, cooling = (int(x) for x in raw)
            snap = Snapshot(
                _STATES[state],
                failures,
                max(0, remaining_ms) / 1000.0,
                seq,
                opened,
                bool(cooling),
            )
        except Exception as exc:  # any Redis trouble: degrade, never fail the call
            self._down_until = self._clock() + self._retry_interval
            _obs.increment("sight_breaker_store_errors_total", 1, store="redis")
            _log.warning(
                "breaker store: Redis failed (%s); using local state for %.1fs",
                type(exc).__name__,
                self._retry_interval,
            )
            return None
        self._local.mirror(name, snap)
        return Grant(grant), snap

    async def load(self, name: str, cfg: BreakerConfig) -> Snapshot:
        res = await self._run("load", name, cfg)
        return res[1] if res is not None else self._local.snapshot_now(name, cfg)

    async def acquire(self, name: str, cfg: BreakerConfig) -> tuple[Grant, Snapshot]:
        res = await self._run("acquire", name, cfg)
        if res is None:
            return self._local.acquire_now(name, cfg)
        grant, snap = res
        if grant is Grant.PROBE and not self._local.admit_probe(name, cfg):
            # Redis was unreachable a moment ago and the local state gave the probe slots out
            # meanwhile: this grant would exceed the cap. Hand it back (best effort).
            await self._run("release", name, cfg, probe=True, epoch=snap.epoch)
            return Grant.DENIED, snap
        return res

    async def record(
        self,
        name: str,
        cfg: BreakerConfig,
        *,
        failure: bool,
        probe: bool,
        epoch: int | None = None,
    ) -> Snapshot:
        res = await self._run("fail" if failure else "ok", name, cfg, probe=probe, epoch=epoch)
        if res is not None:
            if probe:
                self._local.settle_probe(name, cfg, epoch, succeeded=not failure)
            return res[1]
        return self._local.record_now(name, cfg, failure=failure, probe=probe, epoch=epoch)

    async def release(self, name: str, cfg: BreakerConfig, epoch: int | None = None) -> Snapshot:
        res = await self._run("release", name, cfg, probe=True, epoch=epoch)
        if res is None:
            return self._local.release_now(name, cfg, epoch)
        self._local.settle_probe(name, cfg, epoch, succeeded=False)
        return res[1]

    async def cool_down(self, name: str, cfg: BreakerConfig, seconds: float) -> Snapshot:
        res = await self._run("cooldown", name, cfg, cooldown=seconds)
        return res[1] if res is not None else self._local.cool_down_now(name, cfg, seconds)

    async def reset(self, name: str) -> None:
        await self._local.reset(name)
        try:
            async with asyncio.timeout(self._op_timeout):
                await self._redis.delete(self.key(name))
        except Exception as exc:
            _log.warning(
                "breaker store: reset of %r failed in Redis (%s)", name, type(exc).__name__
            )
