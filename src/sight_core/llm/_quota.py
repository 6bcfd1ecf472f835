"""A model's quota (requests and tokens per minute, requests per day) shared by every worker.

:class:`QuotaGovernor` books each request into a sliding-window ledger kept in Redis: one Lua
script takes every dimension (requests per minute, input and output tokens per minute,
requests per day) at once or none, and answers *when* the caller may start. The caller then
sleeps locally, once; nobody polls. Bookings are made in start-time order, which gives the
invariant the tests check with a hypothesis state machine:

    In every window of length ``window``, the tokens (and requests) of the admitted requests,
    counted at their settled usage or, until settled, their reservation, are at most the limit
    plus what settles charged above their reservations; when estimates are at least the real
    usage, at most the limit.

Why it holds: a booking at start ``s`` is admitted only if the amounts booked in
``(s - window, s]`` plus its own fit every limit, and every later booking starts at ``s`` or
after; so any window ending at a booking's start holds only amounts that were checked when
that booking was made, changed since only by refunds (down) and charges (up).

Keys are hash-tagged per (project, model), ``{quota:<project>:<model>}:...``, so the four keys of
one model live in one Redis Cluster slot. Time comes from the Redis server (``TIME``) unless a
clock is given (tests). When Redis fails or is slower than ``op_timeout``, the governor books
into a process-local ledger holding ``limit / workers`` of each dimension for
``retry_interval`` seconds, then tries Redis again (fail-open; ``sight_llm_quota_admitted_total``
says ``mode="local"``): a Redis outage never blocks a call.

Costs: one round trip (one ``EVALSHA``) per :meth:`QuotaGovernor.reserve` and one per
:meth:`QuotaLease.settle` or :meth:`QuotaLease.release`; a caller that has to wait makes the
same two. The script walks only the oldest bookings that must age out before the caller fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

from sight_core.errors import ConfigurationError, RateLimitedError
from sight_core.settings import LLMSettings, QuotaLimit

from . import _metrics
from ._limit import SharedLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "QuotaDimension",
    "QuotaGovernor",
    "QuotaLease",
    "close_failed_call",
    "estimate_tokens",
    "next_pacific_midnight",
    "prompt_chars",
    "reserve_call",
    "settle_call",
]

_log = logging.getLogger("sight_core.llm.quota")

QuotaDimension = Literal["rpm", "tpm", "output_tpm", "rpd"]
"""``rpm`` requests, ``tpm`` input tokens and ``output_tpm`` output tokens per window (a minute
by default); ``rpd`` requests per day."""

_REASONS: Final = ("ok", "deadline", "too_large", "exhausted")
_PATIENCE: Final = 8
"""``op_timeout`` periods a round trip may take while other round trips complete (load)."""
_IN_FLIGHT: Final = 8
"""Quota round trips on the wire at once per governor (others queue before their timeout)."""

# KEYS: 1 log (zset: lease id -> start ms), 2 amounts (hash: lease id -> "r i o day"),
# 3 state (hash: r i o totals of the log, last = latest start, d<day> requests booked that day,
# x_<dim> = exhausted until ms), 4 leases (zset: lease id -> expiry ms).
# ARGV: op, now_ms (< 0: server TIME), window_ms, day_ms, day_offset_ms, lease_ttl_ms, key_ttl_ms,
# then per op: reserve: id, r, i, o, limit_r, limit_i, limit_o, limit_d (< 0: none),
# max_wait_ms (< 0: none); settle: id, actual_i, actual_o; release: id;
# exhaust: dimension, for_ms (< 0: until the next day boundary); inspect: -.
# Returns: reserve {admitted 0/1, wait or retry-after ms (-1: never), reason 0..3, start ms};
# settle {settled 0/1, charged_i, charged_o}; release {released 0/1}; exhaust {until};
# inspect {outstanding leases, log entries, r, i, o}.
_LUA: Final = """
local log, amt, st, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local now = tonumber(ARGV[2])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[3])
local day = tonumber(ARGV[4])
local offset = tonumber(ARGV[5])
local lease_ttl = tonumber(ARGV[6])
local key_ttl = tonumber(ARGV[7])

local function parse(v)
  local r, i, o, d = string.match(v, '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)$')
  return tonumber(r), tonumber(i), tonumber(o), tonumber(d)
end

-- the totals hash lost alone (evicted, or expired apart from the ledger): rebuild it from the
-- amounts, or the age-outs below would drive the totals negative and admit past the limit
if redis.call('EXISTS', st) == 0 and redis.call('EXISTS', amt) == 1 then
  local vals = redis.call('HVALS', amt)
  local sr, si, so, days = 0, 0, 0, {}
  for k = 1, #vals do
    local r, i, o, d = parse(vals[k])
    sr = sr + r; si = si + i; so = so + o
    if d >= 0 then days[d] = (days[d] or 0) + r end
  end
  redis.call('HSET', st, 'r', sr, 'i', si, 'o', so)
  for d, n in pairs(days) do redis.call('HSET', st, 'd' .. d, n) end
  local top = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #top > 0 then redis.call('HSET', st, 'last', top[2]) end
end

-- forget what aged out of every window, and leases whose holder is gone
local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
if #old > 0 then
  local dr, di, dout = 0, 0, 0
  for k = 1, #old do
    local v = redis.call('HGET', amt, old[k])
    if v then
      local r, i, o = parse(v)
      dr = dr + r; di = di + i; dout = dout + o
    end
    redis.call('HDEL', amt, old[k])
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  redis.call('HINCRBY', st, 'r', -dr)
  redis.call('HINCRBY', st, 'i', -di)
  redis.call('HINCRBY', st, 'o', -dout)
end
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)

local function touch()
  redis.call('PEXPIRE', log, key_ttl)
  redis.call('PEXPIRE', amt, key_ttl)
  redis.call('PEXPIRE', st, key_ttl)
  redis.call('PEXPIRE', leases, key_ttl)
end

if op == 'reserve' then
  local id = ARGV[8]
  local nr, ni, no = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  local lr, li = tonumber(ARGV[12]), tonumber(ARGV[13])
  local lo, ld = tonumber(ARGV[14]), tonumber(ARGV[15])
  local max_wait = tonumber(ARGV[16])
  if (lr >= 0 and nr > lr) or (li >= 0 and ni > li) or (lo >= 0 and no > lo)
      or (ld >= 0 and nr > ld) then
    return {0, -1, 2}
  end
  local h = redis.call('HMGET', st, 'r', 'i', 'o', 'last',
                       'x_rpm', 'x_tpm', 'x_output_tpm', 'x_rpd')
  local tr, ti, to = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  local s = math.max(now, tonumber(h[4]) or 0)
  local exhausted = false
  for k = 5, 8 do
    local x = tonumber(h[k])
    if x and x > s then s = x; exhausted = true end
  end
  local function fits()
    return (lr < 0 or tr + nr <= lr) and (li < 0 or ti + ni <= li) and (lo < 0 or to + no <= lo)
  end
  local index = 0
  local done = false
  while not done do
    local batch = redis.call('ZRANGE', log, index, index + 63, 'WITHSCORES')
    if #batch == 0 then break end
    for k = 1, #batch, 2 do
      local start = tonumber(batch[k + 1])
      if start > s - window then
        if fits() then done = true; break end
        s = start + window
      end
      local v = redis.call('HGET', amt, batch[k])
      if v then
        local r, i, o = parse(v)
        tr = tr - r; ti = ti - i; to = to - o
      end
    end
    index = index + 64
  end
  local dayid = -1
  if ld >= 0 then
    for _ = 1, 4 do
      dayid = math.floor((s + offset) / day)
      local used = tonumber(redis.call('HGET', st, 'd' .. dayid)) or 0
      if used + nr <= ld then break end
      s = (dayid + 1) * day - offset
      exhausted = true
      dayid = -2
    end
    if dayid == -2 then return {0, s - now, 3} end
  end
  if max_wait >= 0 and s - now > max_wait then
    if exhausted then return {0, s - now, 3} end
    return {0, s - now, 1}
  end
  redis.call('ZADD', log, s, id)
  redis.call('HSET', amt, id, nr .. ' ' .. ni .. ' ' .. no .. ' ' .. dayid)
  redis.call('HINCRBY', st, 'r', nr)
  redis.call('HINCRBY', st, 'i', ni)
  redis.call('HINCRBY', st, 'o', no)
  redis.call('HSET', st, 'last', s)
  if dayid >= 0 then
    redis.call('HINCRBY', st, 'd' .. dayid, nr)
    redis.call('HDEL', st, 'd' .. (math.floor((now + offset) / day) - 1))
  end
  redis.call('ZADD', leases, s + lease_ttl, id)
  touch()
  return {1, s - now, 0, s}
elseif op == 'settle' then
  local id = ARGV[8]
  if redis.call('ZREM', leases, id) == 0 then return {0, 0, 0} end
  local v = redis.call('HGET', amt, id)
  if not v then return {1, 0, 0} end
  local r, i, o, d = parse(v)
  local ai, ao = tonumber(ARGV[9]), tonumber(ARGV[10])
  redis.call('HSET', amt, id, r .. ' ' .. ai .. ' ' .. ao .. ' ' .. d)
  redis.call('HINCRBY', st, 'i', ai - i)
  redis.call('HINCRBY', st, 'o', ao - o)
  touch()
  return {1, ai - i, ao - o}
elseif op == 'release' then
  local id = ARGV[8]
  if redis.call('ZREM', leases, id) == 0 then return {0} end
  local v = redis.call('HGET', amt, id)
  if v then
    local r, i, o, d = parse(v)
    redis.call('HINCRBY', st, 'r', -r)
    redis.call('HINCRBY', st, 'i', -i)
    redis.call('HINCRBY', st, 'o', -o)
    if d >= 0 and redis.call('HEXISTS', st, 'd' .. d) == 1 then
      redis.call('HINCRBY', st, 'd' .. d, -r)
    end
    redis.call('HDEL', amt, id)
    redis.call('ZREM', log, id)
    -- later bookings start after the latest one still held, not after the released one
    local top = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
    if #top > 0 then redis.call('HSET', st, 'last', top[2]) else redis.call('HDEL', st, 'last') end
  end
  return {1}
elseif op == 'exhaust' then
  local until_ms = tonumber(ARGV[9])
  if until_ms < 0 then
    until_ms = (math.floor((now + offset) / day) + 1) * day - offset
  else
    until_ms = now + until_ms
  end
  local field = 'x_' .. ARGV[8]
  local known = tonumber(redis.call('HGET', st, field)) or 0
  if until_ms > known then redis.call('HSET', st, field, until_ms) else until_ms = known end
  touch()
  return {until_ms - now}
end
local h = redis.call('HMGET', st, 'r', 'i', 'o')
return {redis.call('ZCARD', leases), redis.call('ZCARD', log),
        tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0}
"""


def estimate_tokens(text_chars: int, chars_per_token: float = 4.0) -> int:
    """The local input estimate: ``ceil(characters / chars_per_token)``.

    Gemini's tokenizer averages about four characters per token on English text; other
    scripts (CJK, code with many symbols) use fewer characters per token, so lower
    ``chars_per_token`` (``SIGHT_LLM__QUOTA_CHARS_PER_TOKEN``) when prompts are not English.
    Settled with the answer's ``usage_metadata``: an under-estimate is charged afterwards.
    """
    return math.ceil(max(0, text_chars) / chars_per_token)


def next_pacific_midnight(now: float | None = None) -> float:
    """Seconds from ``now`` (Unix time) to the next midnight in America/Los_Angeles, when
    Gemini's per-day quotas reset."""
    current = time.time() if now is None else now
    zone = _pacific()
    here = _dt.datetime.fromtimestamp(current, zone)
    midnight = (here + _dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.timestamp() - current


def _pacific() -> _dt.tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database (slim images): Pacific standard time
        return _dt.timezone(_dt.timedelta(hours=-8))


def _day_offset_ms(now: float) -> int:
    """UTC offset of Pacific time now, in ms: day ``n`` is ``floor((t + offset) / day)``."""
    offset = _dt.datetime.fromtimestamp(now, _pacific()).utcoffset()
    return int(offset.total_seconds() * 1000) if offset is not None else 0


@dataclass(frozen=True, slots=True)
class _Booking:
    admitted: bool
    wait: float
    reason: str
    start: float  # Unix seconds (the Redis server's clock, or the given clock)


class _LocalLedger:
    """The same booking rule as the Lua script, in process memory (the fail-open share)."""

    __slots__ = ("entries", "exhausted", "last", "leases", "per_day")

    def __init__(self) -> None:
        # lease id -> [start_ms, r, i, o, day]
        self.entries: dict[str, list[int]] = {}
        self.leases: dict[str, int] = {}
        self.per_day: dict[int, int] = {}
        self.exhausted: dict[str, int] = {}
        self.last = 0

    def _prune(self, now: int, window: int) -> None:
        for key in [k for k, e in self.entries.items() if e[0] <= now - window]:
            del self.entries[key]
        for key in [k for k, until in self.leases.items() if until <= now]:
            del self.leases[key]

    def reserve(
        self,
        lease: str,
        amounts: tuple[int, int, int],
        limits: tuple[int, int, int, int],
        now: int,
        window: int,
        day: int,
        offset: int,
        lease_ttl: int,
        max_wait: int,
    ) -> tuple[int, ...]:
        self._prune(now, window)
        nr, ni, no = amounts
        lr, li, lo, ld = limits
        if (
            (lr >= 0 and nr > lr)
            or (li >= 0 and ni > li)
            or (lo >= 0 and no > lo)
            or (ld >= 0 and nr > ld)
        ):
            return 0, -1, 2
        start = max(now, self.last, *self.exhausted.values())
        exhausted = start > max(now, self.last)
        booked = sorted(self.entries.values())
        totals = [sum(e[1] for e in booked), sum(e[2] for e in booked), sum(e[3] for e in booked)]

        def fits() -> bool:
            return all(
                limit < 0 or total + need <= limit
                for limit, total, need in zip((lr, li, lo), totals, amounts, strict=True)
            )

        for entry in booked:
            if entry[0] > start - window:
                if fits():
                    break
                start = entry[0] + window
            totals = [totals[0] - entry[1], totals[1] - entry[2], totals[2] - entry[3]]
        day_id = -1
        if ld >= 0:
            for _ in range(4):
                day_id = (start + offset) // day
                if self.per_day.get(day_id, 0) + nr <= ld:
                    break
                start = (day_id + 1) * day - offset
                exhausted = True
                day_id = -2
            if day_id == -2:
                return 0, start - now, 3
        if max_wait >= 0 and start - now > max_wait:
            return 0, start - now, 3 if exhausted else 1
        self.entries[lease] = [start, nr, ni, no, day_id]
        self.last = start
        if day_id >= 0:
            self.per_day[day_id] = self.per_day.get(day_id, 0) + nr
        self.leases[lease] = start + lease_ttl
        return 1, start - now, 0, start

    def settle(self, lease: str, actual_i: int, actual_o: int) -> bool:
        if self.leases.pop(lease, None) is None:
            return False
        entry = self.entries.get(lease)
        if entry is not None:
            entry[2], entry[3] = actual_i, actual_o
        return True

    def release(self, lease: str) -> bool:
        if self.leases.pop(lease, None) is None:
            return False
        entry = self.entries.pop(lease, None)
        if entry is not None:
            if entry[4] >= 0 and entry[4] in self.per_day:
                self.per_day[entry[4]] -= entry[1]
            self.last = max((e[0] for e in self.entries.values()), default=0)
        return True

    def exhaust(self, dimension: str, until: int) -> None:
        self.exhausted[dimension] = max(self.exhausted.get(dimension, 0), until)

    def outstanding(self, now: int, window: int) -> int:
        self._prune(now, window)
        return len(self.leases)


class QuotaLease:
    """One admitted request's reservation. Settle it with the real usage, or release it.

    ``async with await governor.reserve(...) as lease:`` releases it if the block raises or is
    cancelled, and otherwise keeps the reservation as made unless :meth:`settle` ran inside.
    Settling or releasing happens once: later calls (and calls after the lease's TTL, when
    Redis has forgotten it) do nothing and return ``False``.

    Attributes:
        wait: seconds the caller was told to wait before starting (0 when admitted at once).
        starts_at: the booked start, Unix seconds (Redis server's clock, or the local one).
        input_tokens, output_tokens, requests: what was reserved.
        local: booked in the process-local share because Redis was unreachable.
    """

    __slots__ = (
        "_done",
        "_governor",
        "id",
        "input_tokens",
        "local",
        "output_tokens",
        "requests",
        "starts_at",
        "wait",
    )

    def __init__(
        self,
        governor: QuotaGovernor,
        lease_id: str,
        requests: int,
        input_tokens: int,
        output_tokens: int,
        wait: float,
        local: bool,
    ) -> None:
        self._governor = governor
        self.id = lease_id
        self.requests = requests
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.wait = wait
        self.local = local
        self.starts_at = 0.0
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the lease was settled or released (by this process)."""
        return self._done

    async def settle(self, input_tokens: int, output_tokens: int) -> bool:
        """Replace the reservation by the real usage: refunds what was reserved and not used,
        charges what was used beyond it. One round trip; ``False`` if already done or expired.

        Raises:
            ValueError: a count that is not a whole number or above 10**12 (the lease stays
                open); negative counts are taken as 0."""
        _check_count("QuotaLease.settle", "input_tokens", input_tokens, negative_ok=True)
        _check_count("QuotaLease.settle", "output_tokens", output_tokens, negative_ok=True)
        if self._done:
            return False
        self._done = True
        governor = self._governor
        return await governor._finish(
            governor._settle(self, max(0, input_tokens), max(0, output_tokens))
        )

    async def release(self) -> bool:
        """Give the whole reservation back (the request was not made, or was refused). One
        round trip; ``False`` if already done or expired."""
        if self._done:
            return False
        self._done = True
        return await self._governor._finish(self._governor._release(self.id, self.local))

    async def __aenter__(self) -> QuotaLease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            await self._governor._release_shielded(self)
        elif not self._done:
            await self.settle(self.input_tokens, self.output_tokens)


class QuotaGovernor:
    """Requests and tokens per window, and requests per day, of one (project, model), shared
    through Redis by every worker process.

    Args:
        redis: a ``redis.asyncio`` client (``decode_responses`` either way), or ``None`` to use
            only the process-local share (``limit / workers``).
        model: the model the limits belong to (its usage is counted under this name).
        limits: a :class:`~sight_core.settings.QuotaLimit` (``rpm``, ``tpm`` input tokens,
            ``output_tpm``, ``rpd``; ``None`` = not limited).
        project: the quota's owner; with ``model`` it names the keys
            ``{quota:<project>:<model>}:log|amt|st|leases``.
        window: seconds of the per-minute window (60; scaled down in tests and benchmarks).
        margin: seconds added to the window, for the jitter between the booked start and the
            request's arrival at the provider (a request that arrives earlier than the one
            whose place it takes would otherwise land in the same provider window).
        day: seconds of the per-day window (86400), aligned on midnight Pacific time.
        workers: how many processes share the quota; the local share is ``limit / workers``.
        lease_ttl: seconds after its start a reservation may still be settled or released;
            after that a crashed holder's reservation stays as booked and ages out.
        op_timeout: seconds one Redis round trip may take, while no other round trip
            completes, before the local share answers (1 s: a loaded 2-core machine stalled
            connection set-up past 0.25 s).
        retry_interval: seconds to stay on the local share after a Redis failure.
        clock: Unix seconds used instead of the Redis server's ``TIME`` (tests).
        sleep: how a waiter sleeps (tests with a fake clock pass a no-op).

    Raises:
        ConfigurationError: a non-positive window, day, TTL or timeout; a project or model
            name with ``{`` or ``}`` (they would break the hash tag).
    """

    __slots__ = (
        "_clock",
        "_completed",
        "_day",
        "_down_until",
        "_lease_ttl",
        "_limits",
        "_local",
        "_local_limits",
        "_loop",
        "_op_timeout",
        "_pending",
        "_probing",
        "_redis",
        "_retry_interval",
        "_script",
        "_sleep",
        "_slots",
        "_window",
        "model",
        "prefix",
        "project",
        "workers",
    )

    def __init__(
        self,
        redis: Redis | None,
        *,
        model: str,
        limits: QuotaLimit,
        project: str = "default",
        window: float = 60.0,
        margin: float = 0.0,
        day: float = 86400.0,
        workers: int = 1,
        lease_ttl: float = 600.0,
        op_timeout: float = 1.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        for label, value in (
            ("window", window),
            ("day", day),
            ("lease_ttl", lease_ttl),
            ("op_timeout", op_timeout),
            ("retry_interval", retry_interval),
        ):
            if not value > 0 or math.isinf(value):
                raise ConfigurationError(f"QuotaGovernor({label}={value!r}): must be > 0")
        if not margin >= 0 or math.isinf(margin):
            raise ConfigurationError(f"QuotaGovernor(margin={margin!r}): must be >= 0")
        if workers < 1:
            raise ConfigurationError(f"QuotaGovernor(workers={workers!r}): must be >= 1")
        for label, name in (("project", project), ("model", model)):
            if not name or "{" in name or "}" in name:
                raise ConfigurationError(
                    f"QuotaGovernor({label}={name!r}): a non-empty name without {{ or }} "
                    "(it is the Redis hash tag)"
                )
        if ":" in project:
            raise ConfigurationError(
                f"QuotaGovernor(project={project!r}): a name without ':' (project 'a:b' with "
                "model 'c' and project 'a' with model 'b:c' would share one ledger)"
            )
        self._redis = redis
        self.model = model
        self.project = project
        self.prefix = f"{{quota:{project}:{model}}}"
        self._limits = _limit_tuple(limits, 1)
        self._local_limits = _limit_tuple(limits, workers)
        self.workers = workers
        self._window = int((window + margin) * 1000)
        self._day = int(day * 1000)
        self._lease_ttl = int(lease_ttl * 1000)
        self._op_timeout = op_timeout
        self._retry_interval = retry_interval
        self._clock = clock
        self._sleep = sleep
        self._script = redis.register_script(_LUA) if redis is not None else None
        self._local = _LocalLedger()
        self._down_until = -math.inf
        self._pending: set[asyncio.Future[Any]] = set()
        self._probing = False
        self._completed = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # where the Redis client answered
        self._slots = SharedLimiter(f"quota:{model}", _IN_FLIGHT)

    @classmethod
    def from_settings(
        cls, redis: Redis | None, model: str, settings: LLMSettings, **options: Any
    ) -> QuotaGovernor | None:
        """The governor of ``model`` from ``SIGHT_LLM__QUOTAS__<model>__*``, or ``None`` when
        the settings give that model no quota. ``options`` override the other arguments."""
        from ._usage import normalize_model_name

        name = normalize_model_name(model)
        limits = settings.quotas.get(name)
        if limits is None:
            return None
        params: dict[str, Any] = {
            "project": settings.quota_project,
            "window": settings.quota_window,
            "margin": settings.quota_margin,
            "workers": settings.quota_workers,
            "lease_ttl": settings.deadline + settings.timeout,
            "op_timeout": settings.quota_op_timeout,
        }
        params.update(options)
        return cls(redis, model=name, limits=limits, **params)

    # ------------------------------------------------------------------ public

    @property
    def keys(self) -> tuple[str, str, str, str]:
        """The four Redis keys of this quota (one hash slot)."""
        p = self.prefix
        return (f"{p}:log", f"{p}:amt", f"{p}:st", f"{p}:leases")

    @property
    def degraded(self) -> bool:
        """Whether reservations are booked in the local share after a Redis failure."""
        return self._redis is None or self._local_now()

    async def reserve(
        self,
        requests: int = 1,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        deadline: float | None = None,
    ) -> QuotaLease:
        """Book every dimension at once, sleep until the booked start, return the lease.

        ``deadline``: seconds the caller may wait at most; a booking that cannot start
        within it is not made. Cancelled while waiting, the reservation is released.

        Raises:
            RateLimitedError: no start before ``deadline`` (``retry_after`` = when one would
                be possible), a dimension marked exhausted until after it, or a request larger
                than a limit (``retry_after=None``: it can never be admitted). Nothing booked.
            ValueError: a count that is negative, not a whole number, or above 10**12.
        """
        for label, value in (
            ("requests", requests),
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
        ):
            _check_count("QuotaGovernor.reserve", label, value, negative_ok=False)
        lease_id = uuid.uuid4().hex
        amounts = (requests, input_tokens, output_tokens)
        max_wait = -1 if deadline is None else max(0, int(deadline * 1000))
        booking, local = await self._book(lease_id, amounts, max_wait)
        model = self.model
        if not booking.admitted:
            _metrics.increment(
                "sight_llm_quota_refused_total", 1, model=model, reason=booking.reason
            )
            raise RateLimitedError(f"quota:{model}", booking.wait if booking.wait >= 0 else None)
        lease = QuotaLease(
            self, lease_id, requests, input_tokens, output_tokens, booking.wait, local
        )
        lease.starts_at = booking.start
        mode = "local" if local else "shared"
        _metrics.increment("sight_llm_quota_admitted_total", 1, model=model, mode=mode)
        _metrics.increment(
            "sight_llm_quota_tokens_reserved_total", input_tokens, model=model, kind="input"
        )
        _metrics.increment(
            "sight_llm_quota_tokens_reserved_total", output_tokens, model=model, kind="output"
        )
        if booking.wait > 0:
            _metrics.increment("sight_llm_quota_waited_total", 1, model=model)
            _metrics.observe("sight_llm_quota_wait_seconds", booking.wait, model=model)
            try:
                await self._sleep(booking.wait)
            except BaseException:
                await self._release_shielded(lease)
                raise
        return lease

    async def exhaust(self, dimension: QuotaDimension, seconds: float | None = None) -> float:
        """Mark ``dimension`` used up for every worker: for ``seconds``, or (``None``) until
        the next day boundary (midnight Pacific, when Gemini resets per-day quotas). Returns
        the seconds it stays exhausted. Reservations until then wait or fail at once."""
        if dimension not in ("rpm", "tpm", "output_tpm", "rpd"):
            raise ValueError(f"QuotaGovernor.exhaust: unknown dimension {dimension!r}")
        until = -1 if seconds is None else max(0, int(seconds * 1000))
        now = self._now_ms()
        raw = await self._shared("exhaust", (dimension, until))
        if raw is not None:
            return int(raw[0]) / 1000.0
        local_until = (
            ((now[0] + self._offset(now[0])) // self._day + 1) * self._day - self._offset(now[0])
            if until < 0
            else now[0] + until
        )
        self._local.exhaust(dimension, local_until)
        return (local_until - now[0]) / 1000.0

    async def outstanding(self) -> int:
        """Reservations neither settled, released nor expired (shared ledger, or local share
        when Redis is unreachable)."""
        raw = await self._shared("inspect", ())
        if raw is not None:
            return int(raw[0])
        return self._local.outstanding(self._now_ms()[0], self._window)

    async def aclose(self) -> None:
        """Wait for releases still in flight (started by cancellations) and for round trips
        that ran past ``op_timeout``."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # ------------------------------------------------------------------ internals

    def _now_ms(self) -> tuple[int, bool]:
        """(now in ms, whether it is the given clock's) — without a clock, Redis decides."""
        if self._clock is not None:
            return round(self._clock() * 1000), True
        return int(time.time() * 1000), False

    def _offset(self, now_ms: int) -> int:
        return _day_offset_ms(now_ms / 1000.0) if self._day == 86_400_000 else 0

    def _local_now(self) -> bool:
        """Whether the local share answers without trying Redis: it failed less than
        ``retry_interval`` ago, or another caller is probing it."""
        return self._down_until != -math.inf and (
            self._probing or time.monotonic() < self._down_until
        )

    async def _shared(
        self, op: str, args: Sequence[Any], *, booked: bool = False
    ) -> list[Any] | None:
        """One script call, or ``None`` when Redis is down (then the local share answers).

        At most :data:`_IN_FLIGHT` round trips are on the wire at once; the others queue
        before their ``op_timeout`` starts (a burst that waits for a connection is load, not
        an outage). After a failure, one caller probes Redis when ``retry_interval`` is over;
        the others stay local until it answers. ``booked``: the settle or release of a
        booking made in Redis, tried there whatever the state (it cannot be done locally)."""
        script = self._script
        if script is None or (self._local_now() and not booked):
            return None
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            return None  # another event loop (the sync API's): its client is not this one's
        slots = self._slots
        await slots.acquire()
        try:
            probe = False
            if self._down_until != -math.inf and not booked:
                if self._local_now():
                    return None
                self._probing = probe = True
            try:
                result = await self._round_trip(script, op, args)
            except Exception as exc:  # any Redis trouble: degrade, never fail the call
                self._degrade(exc)
                return None
            finally:
                if probe:
                    self._probing = False
            self._down_until = -math.inf
            self._loop = loop
            return result
        finally:
            slots.release()

    async def _round_trip(self, script: Any, op: str, args: Sequence[Any]) -> list[Any]:
        now, given = self._now_ms()
        argv = (
            op,
            now if given else -1,
            self._window,
            self._day,
            self._offset(now),
            self._lease_ttl,
            max(self._window, self._day) + self._lease_ttl,
            *args,
        )
        # never cancelled mid-command: a call given up on runs on, detached, until the
        # client's own socket timeout; a booking it made late is released (see _late)
        call: asyncio.Future[Any] = asyncio.ensure_future(script(keys=list(self.keys), args=argv))
        seen = self._completed
        ticks = 0
        try:
            while not call.done():
                done, _ = await asyncio.wait((call,), timeout=self._op_timeout)
                if done:
                    break
                for _ in range(2):  # a reply read in this loop turn is not a timeout
                    await asyncio.sleep(0)
                if call.done():
                    break
                ticks += 1
                # nothing else answered meanwhile: an outage; others did: load, wait on
                if self._completed == seen or ticks >= _PATIENCE:
                    raise TimeoutError(f"quota round trip over {ticks * self._op_timeout}s")
                seen = self._completed
        except BaseException:  # given up, or the caller was cancelled: it finishes on its own
            self._late(call, op, args)
            raise
        result = list(call.result())
        self._completed += 1
        return result

    def _degrade(self, exc: Exception) -> None:
        """Answer from the local share for ``retry_interval``; logged once per outage."""
        first = self._down_until == -math.inf
        self._down_until = time.monotonic() + self._retry_interval
        _metrics.increment("sight_llm_quota_redis_errors_total", 1, model=self.model)
        if first:
            _log.warning(
                "quota %s: Redis failed (%s); using the local share (1/%d) until it answers",
                self.model,
                type(exc).__name__,
                self.workers,
            )

    def _late(self, call: asyncio.Future[Any], op: str, args: Sequence[Any]) -> None:
        """Follow a call its caller stopped waiting for: a booking it made is released (the
        caller went on without it); its error is consumed."""
        self._pending.add(call)

        def finished(done: asyncio.Future[Any]) -> None:
            self._pending.discard(done)
            if done.cancelled() or done.exception() is not None:
                return
            if op == "reserve" and int(done.result()[0]) == 1:
                self._detach(self._shared("release", (args[0],), booked=True))

        call.add_done_callback(finished)

    async def _book(
        self, lease_id: str, amounts: tuple[int, int, int], max_wait: int
    ) -> tuple[_Booking, bool]:
        raw = await self._shared("reserve", (lease_id, *amounts, *self._limits, max_wait))
        local = raw is None
        if raw is None:
            now = self._now_ms()[0]
            raw = list(
                self._local.reserve(
                    lease_id,
                    amounts,
                    self._share_for(amounts),
                    now,
                    self._window,
                    self._day,
                    self._offset(now),
                    self._lease_ttl,
                    max_wait,
                )
            )
        admitted, wait_ms, reason = (int(x) for x in raw[:3])
        wait = wait_ms / 1000.0 if wait_ms >= 0 else -1.0
        start = int(raw[3]) / 1000.0 if len(raw) > 3 else 0.0
        return _Booking(bool(admitted), wait, _REASONS[reason], start), local

    def _share_for(self, amounts: tuple[int, int, int]) -> tuple[int, int, int, int]:
        """The local share's limits for one request: a request above ``limit / workers`` that
        the whole limit admits gets a window to itself (the share plus one request's maximum),
        instead of being refused as never admissible because Redis is down."""
        needs = (*amounts, amounts[0])
        return tuple(  # type: ignore[return-value]
            max(share, need) if 0 <= need <= full else share
            for share, full, need in zip(self._local_limits, self._limits, needs, strict=True)
        )

    async def _settle(self, lease: QuotaLease, input_tokens: int, output_tokens: int) -> bool:
        model = self.model
        _metrics.increment(
            "sight_llm_quota_tokens_settled_total", input_tokens, model=model, kind="input"
        )
        _metrics.increment(
            "sight_llm_quota_tokens_settled_total", output_tokens, model=model, kind="output"
        )
        if lease.local:
            return self._local.settle(lease.id, input_tokens, output_tokens)
        raw = await self._shared("settle", (lease.id, input_tokens, output_tokens), booked=True)
        return raw is not None and bool(int(raw[0]))

    async def _release(self, lease_id: str, local: bool) -> bool:
        if local:
            return self._local.release(lease_id)
        raw = await self._shared("release", (lease_id,), booked=True)
        return raw is not None and bool(int(raw[0]))

    async def _release_shielded(self, lease: QuotaLease) -> None:
        """Release ``lease`` even while a cancellation unwinds (see :meth:`_shielded`)."""
        await self._shielded(lease, lease.release)

    async def keep(self, lease: QuotaLease) -> None:
        """Close ``lease`` at its reservation (the request may have been served), even while a
        cancellation unwinds (see :meth:`_shielded`)."""
        await self._shielded(lease, lambda: lease.settle(lease.input_tokens, lease.output_tokens))

    async def _shielded(
        self, lease: QuotaLease, finish: Callable[[], Coroutine[Any, Any, bool]]
    ) -> None:
        """Await ``finish`` (a settle or release, which runs in its own task, see
        :meth:`_finish`), ignoring a second cancellation of the caller and Redis errors."""
        if lease.done:
            return
        with contextlib.suppress(BaseException):  # cancelled again, or Redis failed
            await finish()

    async def _finish(self, coro: Coroutine[Any, Any, bool]) -> bool:
        """Run a settle or release to its end in its own task: a caller cancelled while it is
        in flight (even still queued for a connection) stops waiting, the round trip does
        not."""
        return bool(await asyncio.shield(self._detach(coro)))

    async def finish_stream(self, lease: QuotaLease, usage: Mapping[str, Any] | None) -> None:
        """Settle a stream's lease with the usage seen (kept as reserved when none was), even
        while the stream's consumer is being cancelled; never raises."""
        tokens = _billed(lease, usage)
        await self._shielded(lease, lambda: lease.settle(*tokens))

    def _detach(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task


_MAX_COUNT: Final = 10**12
"""Above this a count would not print exactly from the script's Lua numbers (``%.14g``)."""


def _check_count(where: str, label: str, value: object, *, negative_ok: bool) -> None:
    """Refuse what the shared ledger cannot store exactly: a NaN, fractional or huge count
    written there would make every later script call of every worker fail."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value > _MAX_COUNT
        or (value < 0 and not negative_ok)
    ):
        raise ValueError(
            f"{where}({label}={value!r}): a whole number of requests or tokens "
            f"{'' if negative_ok else '>= 0 '}and <= {_MAX_COUNT} (round estimates with math.ceil)"
        )


def _limit_tuple(limits: QuotaLimit, workers: int) -> tuple[int, int, int, int]:
    """(rpm, tpm, output_tpm, rpd) for the script, ``-1`` = none; ``/ workers`` for a share."""
    values = (limits.rpm, limits.tpm, limits.output_tpm, limits.rpd)
    return tuple(-1 if v is None else max(1, v // workers) for v in values)  # type: ignore[return-value]


# ---------------------------------------------------------------------- a model call's quota


def prompt_chars(messages: Sequence[Any]) -> int:
    """Characters of the prompt's text (every message's ``.text``), the input estimate's base."""
    return sum(len(getattr(message, "text", "") or "") for message in messages)


async def reserve_call(
    governor: QuotaGovernor,
    messages: Sequence[Any],
    output_bound: int,
    chars_per_token: float,
    until: float | None,
) -> QuotaLease:
    """Reserve one request of a model call: input estimated from ``messages``
    (:func:`estimate_tokens`), output bounded by ``output_bound`` (``max_output_tokens``),
    waiting at most until the monotonic time ``until`` (the call's one deadline)."""
    deadline = None if until is None else max(0.0, until - time.monotonic())
    return await governor.reserve(
        1,
        estimate_tokens(prompt_chars(messages), chars_per_token),
        max(0, output_bound),
        deadline=deadline,
    )


async def settle_call(lease: QuotaLease, usage: Mapping[str, Any] | None) -> None:
    """Settle with the answer's ``usage_metadata`` (input and output tokens as billed); an
    answer without usage keeps the reservation as made."""
    await lease.settle(*_billed(lease, usage))


def _billed(lease: QuotaLease, usage: Mapping[str, Any] | None) -> tuple[int, int]:
    """(input, output) tokens from ``usage_metadata``; the reservation when there is none."""
    if not usage:
        return lease.input_tokens, lease.output_tokens
    return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)


async def close_failed_call(
    governor: QuotaGovernor,
    lease: QuotaLease,
    exc: BaseException,
    usage: Mapping[str, Any] | None,
) -> None:
    """Close the lease of a call that raised ``exc``; never raises.

    - the server answered with an error status (the request was refused, nothing billed):
      release it; a 429 whose ``QuotaFailure`` names a per-day quota also marks the day
      exhausted for every worker until midnight Pacific (:meth:`QuotaGovernor.exhaust`);
    - the answer came and was blocked or malformed (billed): settle with its ``usage``;
    - otherwise (timeout, dropped connection, cancellation: the request may have been
      served) the reservation stays as made.
    """
    from sight_core.resilience import classify

    found = classify(exc)
    try:
        if usage:
            await settle_call(lease, usage)
        elif found.status is not None:
            if found.status == 429 and found.daily_quota:
                await governor.exhaust("rpd")
            await lease.release()
        elif isinstance(exc, Exception):
            await lease.settle(lease.input_tokens, lease.output_tokens)
        else:
            await governor.keep(lease)
    except Exception:  # quota bookkeeping never hides the call's own error
        _log.warning(
            "quota %s: closing a failed call's lease failed", governor.model, exc_info=True
        )
