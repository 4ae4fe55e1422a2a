"""The Redis backend: the same limits and quotas shared by any number of gateway nodes, on one Redis
server or a Redis Cluster (`state.cluster`; connections: fastgw/state/redisconn.py).

* One atomic Lua script per check, timed by Redis's own clock (`TIME`), so there is no
  read-then-write race between nodes (Kong #5311, APISIX #12592, boulder#7780) and no clock skew.
* Keys are built for Redis Cluster: everything about one API key shares the hash tag
  `{k:<key id>}` (its plan and per-method buckets, quota counter, daily usage), so the per-key
  script touches one slot; key-independent buckets (gateway-wide, stage/method) share `{g}`.
  A request with both kinds makes two calls: `{g}` first (AWS's order), then the key's; when the
  key's script refuses, what `{g}` took is given back.
* Budget: all the Redis calls of one request together wait at most `state.timeoutMillis` (50 ms by
  default; also through a cluster client's redirects and slot-map reloads). A failure marks Redis
  down for one second: meanwhile `failMode: closed` answers 503, and `failMode: open` checks
  against the host's shared table, each throttle divided by `state.nodes`, and the quota limited
  to this node's share of what was left when Redis last answered (see `UsageStage._share`). What
  was admitted then is handed to Redis by the main process's Reconciler when Redis answers again,
  idempotently (a hand-over whose answer was lost is not counted twice).
* A check sent and not answered (Redis may have run it, or may still) is admitted by the local
  share and settled by its worker once Redis answers (`Epoch`, RESOLVE): counted exactly once.
* Counters never go backwards: each check carries the highest count this node has seen for the
  counter (a floor), so a counter that lost writes (a failover to a replica that lagged, a Redis
  restart without persistence) resumes from at least what the nodes saw.
* Quota counters live in Redis: they survive a Redis restart only with persistence on
  (`appendonly yes`; `appendfsync everysec` may lose the last second on a crash of Redis).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from ... import metrics
from ...state.channel import Subscriber, publish
from ...state.redisconn import ERRORS, Gate, async_client, link_of, sync_client
from ...state.store import KeyRecord
from .plan import RouteUsage, UsageSetup, day_text, ident, period_bounds, period_of

if TYPE_CHECKING:
    from ...state.shm import SharedTable
    from .stage import Binding, UsageStage

log = logging.getLogger("fastgw.state")

PREFIX = "fastgw:"
KEYS_HASH = PREFIX + "{keys}:all"
KEYS_VERSION = PREFIX + "{keys}:version"
DOWN_SECONDS = 1.0  # after a failure, Redis is left alone this long (no 50 ms wait per request)
USAGE_TTL = 400 * 86400  # daily usage kept for GetUsage
SECOND_US = 1_000_000

# KEYS: n TAT keys [, quota counter, initial-period marker, daily usage hash, adjustment version,
#       applied hash]
# ARGV: n, (interval_us, tolerance_us) x n, quota mode (-2: no quota part, -1: count only,
#       >= 0: limit), offset, period, counter ttl (s), day, floor (the highest count the node saw),
#       the adjustment version that floor was seen under (an UpdateUsage lowers a counter on
#       purpose: it moves the version, and a floor from before it no longer applies), origin (the
#       worker's name for the checks it sends: RESOLVE)
# -> {0, 0, used, version} admitted; {i, retry_us, 0, 0} level i refused; {n + 1, 0, used, version}
#    quota refused; {-1, 0, 0, 0} the origin was resolved (fenced): nothing done
CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local new = {}
local ttl = {}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  if tolerance < 0 then return {i, 1000000, 0, 0} end
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local next_tat = tat + interval
  local diff = next_tat - now
  if diff > tolerance then return {i, diff - tolerance, 0, 0} end
  new[i] = next_tat
  ttl[i] = math.floor(diff / 1000) + 1000
end
local q = 2 * n + 2
local mode = tonumber(ARGV[q])
local used = 0
local version = 0
if mode ~= -2 then
  local current = redis.call('GET', KEYS[n + 1])
  if current then
    used = tonumber(current)
  elseif redis.call('SET', KEYS[n + 2], ARGV[q + 2], 'NX') then
    used = tonumber(ARGV[q + 1])
  end
  version = tonumber(redis.call('GET', KEYS[n + 4]) or '0')
  if version == tonumber(ARGV[q + 6]) and used < tonumber(ARGV[q + 5]) then used = tonumber(ARGV[q + 5]) end
  if mode >= 0 and used + 1 > mode then return {n + 1, 0, used, version} end
  local applied = redis.call('HINCRBY', KEYS[n + 5], ARGV[q + 7], 1)
  if applied < 0 then return {-1, 0, 0, 0} end
  if applied == 1 then redis.call('EXPIRE', KEYS[n + 5], ARGV[q + 3]) end
end
for i = 1, n do redis.call('SET', KEYS[i], new[i], 'PX', ttl[i]) end
if mode ~= -2 then
  used = used + 1
  redis.call('SET', KEYS[n + 1], used, 'EX', ARGV[q + 3])
  redis.call('HINCRBY', KEYS[n + 3], ARGV[q + 4], 1)
  redis.call('EXPIRE', KEYS[n + 3], 34560000)
end
return {0, 0, used, version}
"""

# Give back what a CHECK took from TAT keys: KEYS: TAT keys; ARGV: interval_us per key.
REFUND = """
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then redis.call('SET', KEYS[i], tonumber(v) - tonumber(ARGV[i]), 'KEEPTTL') end
end
return 0
"""

# Up to `want` tokens of the key-independent levels at once (a worker's lease, state.leaseMillis): as
# many as every level allows now, each level's TAT advanced by that many intervals.
# KEYS: TAT keys; ARGV: want, (interval_us, tolerance_us) per key -> {granted, 0, 0} or {0, i, retry_us}
LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local want = tonumber(ARGV[1])
local tat = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  if tolerance < 0 then return {0, i, 1000000} end
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  if v < now then v = now end
  local room = math.floor((tolerance - (v - now)) / interval)
  if room < 1 then return {0, i, v + interval - now - tolerance} end
  if room < want then want = room end
  tat[i] = v
end
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local next_tat = tat[i] + want * interval
  redis.call('SET', KEYS[i], next_tat, 'PX', math.floor((next_tat - now) / 1000) + 1000)
end
return {want, 0, 0}
"""

# Usage admitted by one node while Redis was away, handed over idempotently: ARGV[2] is the node's
# running total for this counter (never a delta), and the hash KEYS[3] remembers the last total
# taken from each node, so a retry of a hand-over whose answer was lost adds nothing.
# KEYS: counter, daily hash, hand-over hash; ARGV: node, total, ttl, day, limit -> the counter's value
RECONCILE = """
local total = tonumber(ARGV[2])
local before = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if total <= before then return used end
local n = total - before
redis.call('HSET', KEYS[3], ARGV[1], total)
redis.call('EXPIRE', KEYS[3], ARGV[3])
if tonumber(ARGV[5]) >= 0 then
  used = redis.call('INCRBY', KEYS[1], n)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('HINCRBY', KEYS[2], ARGV[4], n)
redis.call('EXPIRE', KEYS[2], 34560000)
return used
"""

# The checks one origin sent whose outcome the worker does not know (their answer was lost, or the
# request gave up waiting) are settled once: how many of the origin's checks Redis counted is read
# from the applied hash, the origin is fenced (a check of it that arrives later is refused, so the
# number cannot grow), and what the worker admitted beyond that is added. `target` is what the
# origin's checks should have counted: those answered "counted" plus those the worker admitted
# locally. A retry after a lost answer finds the marker and adds nothing.
# KEYS: applied hash, counter, daily hash; ARGV: origin, target, ttl, day -> {added, counter}
RESOLVE = """
local done = redis.call('HGET', KEYS[1], ARGV[1] .. '!')
if done then return {tonumber(done), tonumber(redis.call('GET', KEYS[2]) or '0')} end
local applied = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local add = tonumber(ARGV[2]) - applied
if add < 0 then add = 0 end
redis.call('HSET', KEYS[1], ARGV[1], -1000000000000000, ARGV[1] .. '!', add)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if add > 0 then
  redis.call('INCRBY', KEYS[2], add)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[3], ARGV[4], add)
  redis.call('EXPIRE', KEYS[3], 34560000)
end
return {add, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""


def key_tag(key_id: str) -> str:
    return PREFIX + "{k:" + key_id + "}"


def quota_key(key_id: str, plan: str, period: int) -> str:
    return f"{key_tag(key_id)}:q:{plan}:{period}"


def usage_key(key_id: str, plan: str) -> str:
    return f"{key_tag(key_id)}:u:{plan}"


def handover_key(key_id: str, plan: str, period: int) -> str:
    return f"{key_tag(key_id)}:h:{plan}:{period}"


def version_key(key_id: str, plan: str) -> str:
    return f"{key_tag(key_id)}:v:{plan}"


def applied_key(key_id: str, plan: str, period: int) -> str:
    return f"{key_tag(key_id)}:a:{plan}:{period}"


def marker_key(key_id: str, plan: str) -> str:
    return f"{key_tag(key_id)}:q0:{plan}"


def level_key(level_ident: int) -> str:
    return f"{PREFIX}{{g}}:t:{level_ident & 0xFFFFFFFFFFFFFFFF:x}"


def gcra_us(rate: float, burst: int) -> tuple[int, int]:
    """(interval_us, tolerance_us): whole microseconds, so `burst` back-to-back requests always pass."""
    if not rate > 0 or burst <= 0:
        return 1, -1
    interval = max(1, int(SECOND_US / rate))
    return interval, interval * burst


def counter_ttl(kind: str, period: int, now: float) -> int:
    # Kept a day past the period's end so that GetUsage still finds the last count.
    return max(60, int(period_bounds(kind, period)[1] - now) + 86400)


POOL_SIZE = 32  # connections per worker; a burst queues for one instead of opening hundreds
FAILURES_TO_OPEN = 5  # consecutive failures before Redis is left alone for DOWN_SECONDS


def _link(setup: UsageSetup) -> Any:
    link = link_of(setup.state)
    assert link is not None  # the config requires state.url with backend: redis
    return link


def _record(raw: bytes) -> KeyRecord:
    data = orjson.loads(raw)
    return KeyRecord(data["id"], data["name"], bytes.fromhex(data["digest"]), tuple(data["plans"]),
                     bool(data["enabled"]), float(data["created"]))


# -- the worker side ---------------------------------------------------------------------------------
class Epoch:
    """The key checks a worker sends under one origin name. Each counted check adds one to the
    origin's field in the counter's applied hash (CHECK), so when some checks' outcome is unknown,
    Redis can say how many of the origin's checks it counted (RESOLVE). An epoch ends at its first
    unknown outcome (the worker goes on under a new origin) and is settled once none of its checks is
    in flight any more."""

    __slots__ = ("origin", "confirmed", "unknown", "inflight")

    def __init__(self, origin: str):
        self.origin = origin
        self.confirmed: dict[str, int] = {}  # quota key -> checks answered "counted"
        # quota key -> [binding, period, day, checks admitted locally after an unknown outcome]
        self.unknown: dict[str, list[Any]] = {}
        self.inflight = 0


class Lease:
    """Tokens of one route's key-independent levels this worker took from Redis and spends locally."""

    __slots__ = ("keys", "argv", "tokens", "expires", "demand", "since", "rate")

    def __init__(self, keys: list[str], argv: list[Any]) -> None:
        self.keys = keys  # the route's TAT keys and CHECK arguments (RedisLimiter._route)
        self.argv = argv
        self.tokens = 0
        self.expires = 0.0
        self.demand = 0  # requests since `since`: the worker's rate on these levels sizes the next lease
        self.since = time.monotonic()
        self.rate = 0.0


MAX_LEASE = 10_000  # tokens in one lease, whatever the rate
RATE_WINDOW = 0.1  # seconds of demand that size the next lease (or leaseMillis, if shorter)

MAX_UNSETTLED = 1000  # epochs waiting for Redis; beyond that the oldest is dropped (under-counted)


class RedisLimiter:
    """One worker's Redis client and scripts; decisions come back to UsageStage as exceptions."""

    def __init__(self, setup: UsageSetup, loop: asyncio.AbstractEventLoop, stage: UsageStage):
        self.setup = setup
        self.loop = loop
        self.stage = stage
        self.budget = setup.state.timeoutMillis / 1000
        # Socket operations get at least a second (the keys' poll, refunds, the cluster's slot map);
        # a request waits at most its budget (`asyncio.timeout` in `check`).
        # No client retries: a check sent again after its answer was lost would count twice.
        self.client = async_client(_link(setup), max(self.budget, 1.0), POOL_SIZE, retries=0)
        self.gate = Gate(POOL_SIZE)
        self.events = Subscriber(_link(setup), loop)
        self.events.on("keys", self._keys_changed)
        self._again = False
        self.check_script = self.client.register_script(CHECK)
        self.refund_script = self.client.register_script(REFUND)
        self.down_until = 0.0
        self.up = True
        self.failures = 0
        self.keys_version: int | None = None
        self._polling = False
        self._gauge = metrics.BACKEND_UP.labels("redis")
        self._errors = metrics.BACKEND_ERRORS
        self._route_args: dict[int, tuple[list[str], list[Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.resolve_script = self.client.register_script(RESOLVE)
        self.lease_script = self.client.register_script(LEASE)
        self.lease_s = setup.state.leaseMillis / 1000
        self._leases: dict[int, Lease] = {}
        self._origin = os.urandom(6).hex()  # this worker; an epoch's origin adds its number
        self._epochs = 0
        self.epoch = self._new_epoch()
        self.unsettled: list[Epoch] = []
        self._settling = False
        self._epoch_periods: tuple[int, ...] = ()

    def usable(self) -> bool:
        return self.up or time.monotonic() >= self.down_until

    def _failed(self, exc: BaseException) -> None:
        name = type(exc).__name__
        kind = "timeout" if isinstance(exc, TimeoutError) or "Timeout" in name else \
            "connection" if "Connection" in name or isinstance(exc, OSError) else "error"
        self._errors.labels("redis", kind).inc()
        self.failures += 1
        # One slow answer sends only its own request to the local fallback; a run of failures
        # (or any while down) leaves Redis alone for a second instead of paying the timeout again.
        if self.failures < FAILURES_TO_OPEN and self.up:
            return
        self.down_until = time.monotonic() + DOWN_SECONDS
        if self.up:
            self.up = False
            self._gauge.set(0)
            log.warning("Redis unreachable (%s); %s", kind, "using per-node local limits" if
                        self.setup.state.failMode == "open" else "answering 503 (failMode: closed)")

    def _recovered(self) -> None:
        self.failures = 0
        if not self.up:
            self.up = True
            self._gauge.set(1)
            log.warning("Redis answers again; shared limits are back")

    def _route(self, usage: RouteUsage) -> tuple[list[str], list[Any]]:
        args = self._route_args.get(id(usage))
        if args is None:
            keys = [level_key(level.ident) for level in usage.levels]
            argv: list[Any] = [len(keys)]
            for level in usage.levels:
                argv += gcra_us(level.rate, level.burst)
            args = self._route_args[id(usage)] = (keys, argv + [-2])
        return args

    def _key_args(self, usage: RouteUsage, binding: Binding, now: float,
                  origin: str) -> tuple[list[str], list[Any], list[str], int]:
        plan = binding.plan
        tag = key_tag(binding.key_id)
        keys: list[str] = []
        argv: list[Any] = [0]
        kinds: list[str] = []
        if plan.throttle is not None:
            keys.append(f"{tag}:t:{plan.name}")
            argv += gcra_us(plan.throttle.rateLimit, plan.throttle.burstLimit)
            kinds.append("plan")
        method = binding.methods.get(usage.route)
        if method is not None:
            keys.append(f"{tag}:m:{ident(plan.name, usage.api, usage.stage, usage.route) & 0xFFFFFFFFFFFFFFFF:x}")
            argv += gcra_us(method.rateLimit, method.burstLimit)
            kinds.append("plan-method")
        argv[0] = len(keys)
        period = period_of(binding.period_kind, now)
        keys += [quota_key(binding.key_id, plan.name, period), marker_key(binding.key_id, plan.name),
                 usage_key(binding.key_id, plan.name), version_key(binding.key_id, plan.name),
                 applied_key(binding.key_id, plan.name, period)]
        argv += [binding.quota_limit, binding.quota_offset, period, counter_ttl(binding.period_kind, period, now),
                 day_text(now), *self._seen(binding, period), origin]
        return keys, argv, kinds, period

    def _seen(self, binding: Binding, period: int) -> tuple[int, int]:
        """(the highest count of the key's counter this host saw in `period` (0: none), the adjustment
        version it was seen under); kept in the host's shared table: every worker's floor, and the
        fail-open share's base."""
        if binding.seen_slot < 0:
            binding.seen_slot = self.stage._find(ident("seen", binding.key_id, binding.plan.name))
            binding.version_slot = self.stage._find(ident("seenversion", binding.key_id, binding.plan.name))
        slots = self.stage.slots
        seen_period, count = slots.count_get(binding.seen_slot)
        version_period, version = slots.count_get(binding.version_slot)
        if seen_period != period:
            return 0, 0
        return count, version if version_period == period else 0

    def _saw(self, binding: Binding, period: int, used: int, version: int) -> None:
        seen, seen_version = self._seen(binding, period)
        if version != seen_version:  # an UpdateUsage moved the counter on purpose: follow it down
            self.stage.slots.count_set(binding.version_slot, period, version)
            self.stage.slots.count_set(binding.seen_slot, period, used)
        elif used > seen:
            self.stage.slots.count_set(binding.seen_slot, period, used)

    async def check(self, usage: RouteUsage, binding: Binding | None) -> None:
        stage = self.stage
        route_keys, route_argv = self._route(usage) if usage.levels else ((), ())
        epoch = self.epoch
        sent = False  # the key's script was written: Redis may have run it, whatever happens next
        qkey = ""
        epoch.inflight += 1
        try:
            async with asyncio.timeout(self.budget), self.gate:  # every call of this request, redirects included
                if route_keys:
                    if self.lease_s:
                        index, retry_us = await self._leased(usage, route_keys, route_argv)
                    else:
                        index, retry_us, _, _ = await self.check_script(keys=route_keys, args=route_argv)
                    if index:
                        level = usage.levels[index - 1]
                        self._recovered()
                        stage._throttled(usage, "", level.kind, retry_us * 1000,
                                         (0, *gcra_us(level.rate, level.burst)))
                if binding is not None:
                    now = time.time()
                    keys, argv, kinds, period = self._key_args(usage, binding, now, epoch.origin)
                    qkey = keys[len(kinds)]
                    sent = True
                    index, retry_us, used, version = await self.check_script(keys=keys, args=argv)
                    sent = False  # answered: the outcome is known
                    if index == 0:
                        epoch.confirmed[qkey] = epoch.confirmed.get(qkey, 0) + 1
                    if index == 0 or index == len(kinds) + 1:
                        self._saw(binding, period, used, version)
                    if index < 0:
                        # The origin was settled: nothing was counted. Cannot happen (an epoch is settled
                        # once none of its checks is in flight); if it did, this is counted locally, once.
                        stage.check_local(usage, binding, True)
                        return
                    if index:
                        if route_keys and self.lease_s:
                            self._leases[id(usage)].tokens += 1  # the token goes back to the lease
                        elif route_keys:
                            self._give_back(route_keys, route_argv)
                        self._recovered()
                        if index == len(kinds) + 1:
                            stage._quota_exceeded(usage, binding)
                        spec = (0, argv[1 + 2 * (index - 1)], argv[2 + 2 * (index - 1)])
                        stage._throttled(usage, binding.plan.name, kinds[index - 1], retry_us * 1000, spec)
        except ERRORS as exc:
            self._failed(exc)
            if self.setup.state.failMode == "closed":
                from ...errors import GatewayError

                raise GatewayError("SERVICE_UNAVAILABLE") from None
            # Sent and not answered: Redis may have counted it or not (or may still, if the command
            # is late). Admitted within the node's share, kept out of the Reconciler's hand-overs
            # (`unsure`), and settled with Redis once it answers again (`_settle`): counted once.
            stage.check_local(usage, binding, True, unsure=sent)
            if sent:
                assert binding is not None
                self._unknown(epoch, qkey, binding, period, now)
            return
        finally:
            epoch.inflight -= 1
        self._recovered()

    # -- checks whose outcome is unknown ----------------------------------------------------------
    def _new_epoch(self) -> Epoch:
        self._epochs += 1
        return Epoch(f"{self._origin}.{self._epochs}")

    def _unknown(self, epoch: Epoch, qkey: str, binding: Binding, period: int, now: float) -> None:
        """A request whose check's outcome is unknown was admitted locally: remember it for `_settle`,
        and send the next checks under a new origin (the settlement fences this one)."""
        entry = epoch.unknown.get(qkey)
        if entry is None:
            entry = epoch.unknown[qkey] = [binding, period, day_text(now), 0]
        entry[3] += 1
        if epoch is self.epoch:
            self.epoch = self._new_epoch()
        if epoch not in self.unsettled:
            self.unsettled.append(epoch)
            if len(self.unsettled) > MAX_UNSETTLED:
                dropped = self.unsettled.pop(0)
                log.warning("usage: %d checks of unknown outcome not settled with Redis (too many waiting)",
                            sum(e[3] for e in dropped.unknown.values()))

    def adopt(self, old: RedisLimiter) -> None:
        """A reload replaced `old` (same worker): its unsettled epochs are this one's to settle. The list
        is shared, so a check of `old` still in flight whose outcome turns out unknown lands here too;
        a settlement `old` had under way when it stopped is sent again (RESOLVE adds nothing twice)."""
        old.unsettled.extend(e for e in self.unsettled if e not in old.unsettled)
        self.unsettled = old.unsettled

    def _background(self, work: Any) -> None:
        """Run `work` off the request path; the task is kept (asyncio holds tasks weakly) until done."""
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def settle(self) -> None:
        """Called each second: settle the epochs that have unknown outcomes and nothing in flight."""
        if self._settling or not self.unsettled or not self.usable():
            return
        self._settling = True
        self._background(self._settle())

    async def _settle(self) -> None:
        try:
            for epoch in [e for e in self.unsettled if e.inflight == 0]:
                for qkey, (binding, period, day, admitted) in list(epoch.unknown.items()):
                    # What the origin's checks should have counted on this counter.
                    target = epoch.confirmed.get(qkey, 0) + admitted
                    plan = binding.plan.name
                    async with asyncio.timeout(max(self.budget, 1.0)), self.gate:
                        _, counter = await self.resolve_script(
                            keys=[applied_key(binding.key_id, plan, period), qkey, usage_key(binding.key_id, plan)],
                            args=[epoch.origin, target, counter_ttl(binding.period_kind, period, time.time()), day])
                    # The count Redis now has first, then the local share's `unsure` given back: a share
                    # computed in between counts these requests twice (too strict), never zero times.
                    seen_period, seen = self.stage.slots.count_get(binding.seen_slot)
                    if seen_period in (0, period) and counter > seen:
                        self.stage.slots.count_set(binding.seen_slot, period, counter)
                    self.stage.slots.count_release(self.stage._find(ident("unsure", binding.key_id, plan)), period,
                                                   admitted)
                    del epoch.unknown[qkey]
                self.unsettled.remove(epoch)
        except ERRORS as exc:
            self._failed(exc)  # the rest waits for the next round
        finally:
            self._settling = False

    # -- leases of the key-independent levels (state.leaseMillis) -----------------------------------
    async def _leased(self, usage: RouteUsage, keys: list[str], argv: list[Any]) -> tuple[int, int]:
        """One token of the route's levels from this worker's lease; a new lease from Redis when it is
        spent or expired, sized to about `leaseMillis` of this worker's traffic on the route (1 token
        while it is quiet, so a quiet route is as exact as without leases). (index, retry_us) as CHECK:
        index 0 admitted."""
        lease = self._leases.get(id(usage))
        if lease is None:
            lease = self._leases[id(usage)] = Lease(keys, argv)
        now = time.monotonic()
        lease.demand += 1
        if lease.tokens > 0 and now < lease.expires:
            lease.tokens -= 1
            return 0, 0
        if lease.tokens > 0:  # expired: what was not spent goes back, the next lease is fresh
            self._give_back(keys, argv, lease.tokens)
            lease.tokens = 0
        elapsed = now - lease.since
        if elapsed >= min(self.lease_s, RATE_WINDOW):
            lease.rate, lease.demand, lease.since = lease.demand / elapsed, 0, now
        want = max(1, min(MAX_LEASE, math.ceil(lease.rate * self.lease_s)))
        granted, index, retry_us = await self.lease_script(keys=keys, args=[want, *argv[1:-1]])
        if not granted:
            return index, retry_us
        # Requests that renewed at the same time each add what they got.
        lease.tokens += granted - 1
        lease.expires = time.monotonic() + self.lease_s
        return 0, 0

    def _expire_leases(self) -> None:
        """Tokens of leases that ran out of time go back to Redis (a route that went quiet)."""
        now = time.monotonic()
        for lease in self._leases.values():
            if lease.tokens > 0 and now >= lease.expires:
                self._give_back(lease.keys, lease.argv, lease.tokens)
                lease.tokens = 0

    def _give_back(self, keys: list[str], argv: list[Any], tokens: int = 1) -> None:
        intervals = [argv[1 + 2 * i] * tokens for i in range(len(keys))]
        self._background(self._refund(keys, intervals))

    async def _refund(self, keys: list[str], intervals: list[int]) -> None:
        try:
            async with self.gate:
                await self.refund_script(keys=keys, args=intervals)
        except ERRORS as exc:
            self._failed(exc)

    # -- runtime keys -------------------------------------------------------------------------------
    def _keys_changed(self, message: dict[str, Any]) -> None:
        if not message.get("resync"):
            metrics.STATE_EVENTS.labels("keys").inc()
        self.poll_keys(again=True)

    def poll_keys(self, again: bool = False) -> None:
        """Called each second, and at once when another node says the keys changed (`again`: a poll
        in flight may have read the version before the change, so it polls once more)."""
        if self._polling:
            self._again = self._again or again
            return
        if not self.usable():
            return
        self._polling = True
        self._background(self._poll())

    async def _poll(self) -> None:
        try:
            async with asyncio.timeout(max(self.budget, 1.0)), self.gate:  # off the request path: may wait longer
                version = await self.client.get(KEYS_VERSION)
                version_n = int(version or 0)
                records = None
                if version_n != self.keys_version:
                    records = [_record(raw) for raw in (await self.client.hgetall(KEYS_HASH)).values()]
            if records is not None:
                self.keys_version = version_n
                self.stage._build_keys(records)
            self._recovered()
        except ERRORS as exc:
            self._failed(exc)
        finally:
            self._polling = False
        if self._again:
            self._again = False
            self.poll_keys()

    def tick(self) -> None:
        if not self.up and time.monotonic() >= self.down_until:
            self.poll_keys()  # a cheap probe: reconnects, and flips the state back when it answers
        periods = tuple(self.stage.periods.current.values())
        if periods != self._epoch_periods:
            # A new period: the counts of checks answered are kept per epoch, so a fresh one bounds
            # them to the counters still in use (one more applied-hash field per longer period).
            self._epoch_periods = periods
            if not self.epoch.unknown:
                self.epoch = self._new_epoch()
        self.settle()
        if self._leases and self.usable():
            self._expire_leases()

    def close(self) -> None:
        self.events.close()
        for task in list(self._tasks):
            task.cancel()
        if self.loop.is_running():
            self.loop.create_task(self.client.aclose())


# -- the main process: usage counted during an outage goes to Redis when it is back -------------------
class Reconciler:
    def __init__(self, setup: UsageSetup, persister: Any):
        self.setup = setup
        self.persister = persister
        self.client = sync_client(_link(setup), 0.5)
        self._script: Any = None  # registered on first use: a cluster client is made then
        self.version: int | None = None
        self.runtime: list[KeyRecord] = []

    def _pairs(self) -> list[tuple[str, str]]:
        """Config keys and the runtime keys in Redis (the last list seen, while Redis is away)."""
        setup = self.persister.setup or self.setup
        try:
            version = int(self.client.get(KEYS_VERSION) or 0)
            if version != self.version:
                self.runtime = [_record(raw) for raw in self.client.hgetall(KEYS_HASH).values()]
                self.version = version
        except ERRORS:
            pass
        pairs = [(k.id, p) for k in setup.keys for p in k.plans if p in setup.plans]
        pairs += [(r.id, p) for r in self.runtime for p in r.plans if p in setup.plans]
        return pairs

    def _push(self, table: SharedTable) -> None:
        """Hand each counter's admitted-while-away total to Redis. `pending` (workers) is this table's
        running total per period, `pushed` what Redis confirmed; Redis keeps the last total per table
        (RECONCILE), so sending a total again after a lost answer adds nothing."""
        slots = table.slots
        now = time.time()
        setup = self.persister.setup or self.setup
        for key_id, plan_name in self._pairs():
            slot = slots.lookup(ident("pending", key_id, plan_name))
            if slot < 0:
                continue
            period, total = slots.count_get(slot)
            pushed_slot = slots.find(ident("pushed", key_id, plan_name))
            pushed_period, pushed = slots.count_get(pushed_slot)
            if total <= (pushed if pushed_period == period else 0):
                continue
            plan = setup.plans.get(plan_name)
            kind = plan.quota.period if plan is not None and plan.quota is not None else "DAY"
            limit = plan.quota.limit if plan is not None and plan.quota is not None else -1
            try:
                if self._script is None:
                    self._script = self.client.register_script(RECONCILE)
                used = int(self._script(keys=[quota_key(key_id, plan_name, period), usage_key(key_id, plan_name),
                                             handover_key(key_id, plan_name, period)],
                                       args=[table.identity, total, counter_ttl(kind, period, now), day_text(now),
                                             limit]))
            except ERRORS:
                return  # still away: the totals stay in the table for the next try
            # The count Redis now has first, then what it confirmed: a worker's share computed in
            # between counts the hand-over twice (too little allowed), never zero times.
            seen_slot = slots.find(ident("seen", key_id, plan_name))
            seen_period, seen = slots.count_get(seen_slot)
            if limit >= 0 and (seen_period != period or used > seen):
                slots.count_set(seen_slot, period, used)
            slots.count_set(pushed_slot, period, total)

    def tick(self, table: SharedTable, pairs: list[tuple[str, str]]) -> None:
        self._push(table)

    def recover(self, old: SharedTable, pairs: list[tuple[str, str]]) -> None:
        """A crashed gateway's table: push what it had not reconciled yet."""
        self._push(old)

    def close(self) -> None:
        self.client.close()


# -- the CLI and admin side ---------------------------------------------------------------------------
class RedisBackend:
    """UsageService's backend with state in Redis (keys are shared by every node)."""

    def __init__(self, setup: UsageSetup):
        self.setup = setup
        self.link = _link(setup)
        self.client = sync_client(self.link, 2.0)

    def list_keys(self) -> list[KeyRecord]:
        return sorted((_record(raw) for raw in self.client.hgetall(KEYS_HASH).values()), key=lambda r: r.created)

    def insert_key(self, record: KeyRecord) -> None:
        raw = orjson.dumps({"id": record.id, "name": record.name, "digest": record.digest.hex(),
                            "plans": list(record.plans), "enabled": record.enabled, "created": record.created})
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(KEYS_HASH, record.id, raw)
        pipe.incr(KEYS_VERSION)
        pipe.execute()
        publish(self.link, "keys", self.client)

    def update_key(self, key_id: str, *, enabled: bool | None = None, delete: bool = False) -> bool:
        raw = self.client.hget(KEYS_HASH, key_id)
        if raw is None:
            return False
        pipe = self.client.pipeline(transaction=True)
        if delete:
            pipe.hdel(KEYS_HASH, key_id)
        else:
            data = orjson.loads(raw)
            data["enabled"] = bool(enabled)
            pipe.hset(KEYS_HASH, key_id, orjson.dumps(data))
        pipe.incr(KEYS_VERSION)
        pipe.execute()
        publish(self.link, "keys", self.client)
        return True

    def daily_usage(self, key_id: str, plan: str, first: str, last: str) -> dict[str, int]:
        raw = self.client.hgetall(usage_key(key_id, plan))
        days = {k.decode(): int(v) for k, v in raw.items()}
        return {day: n for day, n in days.items() if first <= day <= last}

    def quota_used(self, key_id: str, plan: str, kind: str, period: int) -> int | None:
        value = self.client.get(quota_key(key_id, plan, period))
        return int(value) if value is not None else None

    def set_remaining(self, key_id: str, plan: str, kind: str, period: int, used: int) -> str:
        pipe = self.client.pipeline(transaction=True)  # one hash tag: one slot, so MULTI works on a cluster
        pipe.set(quota_key(key_id, plan, period), used, ex=counter_ttl(kind, period, time.time()))
        pipe.set(marker_key(key_id, plan), period, nx=True)
        pipe.incr(version_key(key_id, plan))  # the nodes' floors from before this change stop applying
        pipe.execute()
        return "applied"

    def close(self) -> None:
        self.client.close()
