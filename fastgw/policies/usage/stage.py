"""The usage stage of the pipeline: API key, then throttling, then quota (SPEC §3 step 5).

    API key   x-api-key (or the authorizer's usageIdentifierKey) -> SHA-256 digest -> the key's plan
              for this stage. Missing, unknown, disabled or not in a plan bound to the stage: 403.
    throttle  gateway-wide -> the stage's per-method setting -> the plan per key -> the plan per
              key and method (AWS's order). GCRA; excess: 429 Too Many Requests.
    quota     the plan's quota per key, across the plan's stages. Exceeded: 429 Limit Exceeded.

A rejected request consumes nothing: buckets already passed are refunded, and the quota (the
last check) is only counted when every throttle admitted the request.

Local backend: every bucket and counter lives in the host's shared table (fastgw/state/shm.py),
so all workers enforce one limit; a check is a few dict lookups and the kernels' atomic calls.
Redis backend: one Lua script per check (fastgw/policies/usage/redis.py), with the local table as the
fallback while Redis is unreachable (`failMode: open`: this node's share of every limit and of the
quota left) or a 503 (`failMode: closed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any

from ... import metrics
from ...errors import GatewayError
from ...state.shm import SharedTable
from ...state.store import KeyRecord, Store
from .plan import RouteUsage, UsagePlanDef, UsageSetup, gcra_params, ident, period_bounds, period_of

log = logging.getLogger("fastgw.usage")

FLUSH_SECONDS = 1.0
_monotonic_ns = time.monotonic_ns
UNLIMITED = -1
VERIFIED_MAX = 4096
SECOND_NS = 1_000_000_000

FORBIDDEN = GatewayError("INVALID_API_KEY")


class Binding:
    """One API key bound, through one usage plan, to one API stage. Slots are resolved on first use
    (idents are stable, slots never move) and kept: the next requests go straight to the kernels."""

    __slots__ = ("key_id", "plan", "quota_limit", "quota_offset", "period_kind", "plan_slot", "quota_slot",
                 "methods", "chains", "fallback_chains", "redis_tag", "seen_slot",
                 "version_slot")

    def __init__(self, key_id: str, plan: UsagePlanDef, methods: dict[str, Any]):
        self.key_id = key_id
        self.plan = plan
        quota = plan.quota
        self.quota_limit = quota.limit if quota is not None else UNLIMITED
        self.quota_offset = quota.offset if quota is not None else 0
        # Plans without a quota still count (daily usage for GetUsage), per day.
        self.period_kind = quota.period if quota is not None else "DAY"
        self.plan_slot = -1
        self.quota_slot = -1
        self.methods = methods  # route key -> Throttle
        # route key -> (SlotTable.admit levels, their kinds); full limits, and the Redis fallback's share
        self.chains: dict[str, tuple[tuple, tuple]] = {}
        self.fallback_chains: dict[str, tuple[tuple, tuple]] = {}
        self.redis_tag = "{k:" + key_id + "}"
        self.seen_slot = -1  # Redis backend: the highest count of the key's counter this host saw
        self.version_slot = -1  # and the counter's adjustment version then


class KeyEntry:
    __slots__ = ("id", "name", "digest", "enabled", "stages")

    def __init__(self, key_id: str, name: str, digest: bytes, enabled: bool):
        self.id = key_id
        self.name = name
        self.digest = digest
        self.enabled = enabled
        self.stages: dict[tuple[str, str], Binding] = {}


class Periods:
    """The current quota period of each kind, recomputed only when one ends (not per request)."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self.ends: dict[str, float] = {}
        self.until_ns = 0  # monotonic ns of the next period end (one clock read per request)
        self.refresh(time.time())

    def refresh(self, now: float) -> None:
        for kind in ("DAY", "WEEK", "MONTH"):
            period = period_of(kind, now)
            self.current[kind] = period
            self.ends[kind] = period_bounds(kind, period)[1]
        # Re-synced every second by the stage's timer, so a wall-clock step moves it at most 1 s late.
        self.until_ns = time.monotonic_ns() + int((min(self.ends.values()) - now) * SECOND_NS)


def _retry_headers(retry_s: float, limit: int, reset_s: float) -> tuple[tuple[str, str], ...]:
    retry = str(max(1, math.ceil(retry_s)))
    return (("retry-after", retry), ("ratelimit-limit", str(limit)), ("ratelimit-remaining", "0"),
            ("ratelimit-reset", str(max(1, math.ceil(reset_s)))))


class UsageStage:
    """One worker's usage stage. `check` raises GatewayError, or returns None (admitted) or an
    awaitable (Redis backend) that raises or returns when the shared decision is made."""

    def __init__(self, setup: UsageSetup):
        self.setup = setup
        self.keys: dict[bytes, KeyEntry] = {}
        self.verified: dict[str, KeyEntry] = {}  # see _remember
        self.table: SharedTable | None = None
        self.gcra: Any = None
        self.slots: Any = None
        self.store: Store | None = None
        self.keys_version = -1
        self.periods = Periods()
        self.throttled: dict[tuple[str, str, str, str], int] = {}
        self.exceeded: dict[tuple[str, str, str], int] = {}
        self.rejected: dict[tuple[str, str, str], int] = {}
        self.remote: Any = None  # RedisLimiter with the Redis backend
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local_divisor = setup.state.nodes if setup.state.backend == "redis" else 1
        self._build_keys([])

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        table = SharedTable.open(self.setup.state_dir)
        if table is None:
            # Not started by `fastgw serve` (e.g. an embedded test): a private table, per process.
            table = SharedTable.create(self.setup.state_dir + f"/worker-{id(self)}")
        self.table = table
        self.gcra = table.gcra
        self.slots = table.slots
        for level in self.setup.levels:
            level.slot = table.slots.find(level.ident)
        divisor = self._local_divisor
        for usage in self.setup.routes:
            usage.chains = [tuple((lv.slot, *gcra_params(lv.rate, lv.burst, d)) for lv in usage.levels)
                            for d in (1, divisor)]
        if self.setup.state.backend == "redis":
            from .redis import RedisLimiter

            self.remote = RedisLimiter(self.setup, loop, self)
            metrics.BACKEND_UP.labels("redis").set(1)
        else:
            self.store = Store(self.setup.state_dir)
        self._reload_keys()
        self._timer = loop.call_later(FLUSH_SECONDS, self._tick)

    def adopt(self, old: UsageStage) -> None:
        """A reload replaces `old` with this stage in the same worker: what `old` still owes Redis
        (checks whose outcome is unknown) is settled by this one."""
        if self.remote is not None and old.remote is not None:
            self.remote.adopt(old.remote)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self.remote is not None:
            self.remote.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    def _tick(self) -> None:
        assert self._loop is not None
        try:
            self.flush()
            self.periods.refresh(time.time())
            self._reload_keys()
            if self.remote is not None:
                self.remote.tick()
        except Exception:  # noqa: BLE001 - the timer must keep running
            log.exception("usage stage housekeeping failed")
        self._timer = self._loop.call_later(FLUSH_SECONDS, self._tick)

    # -- keys -------------------------------------------------------------------------------------
    def _reload_keys(self) -> None:
        """Runtime keys change without a restart: reload them when the store's version moved."""
        if self.remote is not None:
            self.remote.poll_keys()
            return
        if self.store is None:
            return
        version = self.store.keys_version()
        if version != self.keys_version:
            self.keys_version = version
            self._build_keys(self.store.list_keys())

    def _build_keys(self, runtime: list[KeyRecord]) -> None:
        setup = self.setup
        entries: dict[bytes, KeyEntry] = {}
        specs = [(k.id, k.name, k.digest, k.plans, k.enabled) for k in setup.keys]
        specs += [(r.id, r.name, r.digest, r.plans, r.enabled) for r in runtime]
        for key_id, name, digest, plans, enabled in specs:
            if digest in entries:
                continue  # a config key wins over a runtime key with the same value
            entry = KeyEntry(key_id, name, digest, enabled)
            for plan_name in plans:
                plan = setup.plans.get(plan_name)
                if plan is None:
                    continue
                for stage in plan.stages:
                    entry.stages.setdefault(stage, Binding(key_id, plan, plan.methods.get(stage, {})))
            entries[digest] = entry
        self.keys = entries
        self.verified = {}

    # -- the check --------------------------------------------------------------------------------
    def check(self, usage: RouteUsage, api_key: str, identity_key: str | None = None) -> Awaitable[None] | None:
        """`api_key`: the request's X-API-Key field ("" if none; the request scan read it);
        `identity_key`: the key an authorizer returned (apiKeySource AUTHORIZER)."""
        # PERF: this runs for every request of a route with usage settings; it is written flat
        # (no helper calls on the admitted path) to stay well under 2 us with the compiled core.
        binding: Binding | None = None
        if usage.key_required:
            value = api_key if usage.key_source == "HEADER" else identity_key
            if not value:
                self._reject(usage, "missing")
            entry: KeyEntry | None = self.verified.get(value)  # type: ignore[arg-type]
            if entry is None:
                digest = hashlib.sha256(value.encode("latin-1", "replace")).digest()  # type: ignore[union-attr]
                entry = self.keys.get(digest)
                # Found by digest; compare_digest keeps the final word constant-time.
                if entry is None or not hmac.compare_digest(entry.digest, digest):
                    self._reject(usage, "unknown")
                assert entry is not None
                self._remember(value, entry)  # type: ignore[arg-type]
            if not entry.enabled:
                self._reject(usage, "disabled")
            binding = entry.stages.get(usage.stage_key)
            if binding is None:
                self._reject(usage, "not_in_plan")
        if self.remote is not None:
            return self._check_remote(usage, binding)
        if binding is None:
            chain = usage.chains[0]
            index, retry_ns = self.slots.admit(_monotonic_ns(), chain)
            if index >= 0:
                self._throttled(usage, "", usage.levels[index].kind, retry_ns, chain[index])
            return None
        built = binding.chains.get(usage.route)
        if built is None:
            built = self._chain(usage, binding, False)
        now = _monotonic_ns()
        periods = self.periods
        if now >= periods.until_ns:
            periods.refresh(time.time())
        chain = built[0]
        index, value_ = self.slots.admit(now, chain, binding.quota_slot, periods.current[binding.period_kind],
                                         binding.quota_limit, binding.quota_offset)
        if index >= 0:
            self._refused(usage, binding, built, index, value_)
        return None

    def _check_remote(self, usage: RouteUsage, binding: Binding | None) -> Awaitable[None] | None:
        remote = self.remote
        if remote.usable():
            return remote.check(usage, binding)
        if self.setup.state.failMode == "closed":
            raise GatewayError("SERVICE_UNAVAILABLE")
        self.check_local(usage, binding, True)
        return None

    def _refused(self, usage: RouteUsage, binding: Binding, built: tuple[tuple, tuple], index: int,
                 value: int) -> None:
        chain, kinds = built
        if index == len(chain):
            self._quota_exceeded(usage, binding)
        plan = binding.plan.name if index >= len(usage.levels) else ""
        self._throttled(usage, plan, kinds[index], value, chain[index])

    def _remember(self, value: str, entry: KeyEntry) -> None:
        """PERF: hashing a value costs ~0.5-1 us, more than the rest of the check. Values that
        proved to be a known key are kept in this worker's memory (never written anywhere) so
        the next requests skip the hash. Unknown values are never kept, so guessing cannot fill
        it, and a dict lookup only compares strings whose (per-process keyed) hashes are equal,
        so its timing tells nothing about a guess. Cleared whenever the keys change."""
        if len(self.verified) >= VERIFIED_MAX:
            self.verified.clear()
        self.verified[value] = entry

    def _reject(self, usage: RouteUsage, reason: str) -> None:
        key = (usage.api, usage.stage, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1
        raise FORBIDDEN

    def check_local(self, usage: RouteUsage, binding: Binding | None, fallback: bool = False,
                    unsure: bool = False) -> None:
        """Every level and the quota against the host's shared table, in one kernel call.
        `fallback` (Redis unreachable, failMode open): each throttle is this node's share
        (limit / nodes), and so is the quota (`_share`)."""
        which = 1 if fallback else 0
        if binding is None:
            chain = usage.chains[which]
            index, retry_ns = self.slots.admit(_monotonic_ns(), chain)
            if index >= 0:
                self._throttled(usage, "", usage.levels[index].kind, retry_ns, chain[index])
            return
        cache = binding.fallback_chains if fallback else binding.chains
        built = cache.get(usage.route)
        if built is None:
            built = self._chain(usage, binding, fallback)
        now = _monotonic_ns()
        periods = self.periods
        if now >= periods.until_ns:
            periods.refresh(time.time())
        period = periods.current[binding.period_kind]
        if fallback:
            quota_slot, limit = self._share(binding, period, unsure)
            index, value = self.slots.admit(now, built[0], quota_slot, period, limit, 0)
        else:
            index, value = self.slots.admit(now, built[0], binding.quota_slot, period, binding.quota_limit,
                                            binding.quota_offset)
        if index >= 0:
            self._refused(usage, binding, built, index, value)

    def _share(self, binding: Binding, period: int, unsure: bool) -> tuple[int, int]:
        """Redis unreachable, failMode open: the counter a request is counted in, and its limit, so that
        this node admits at most its share, (quota - the highest count it saw) // nodes, of what was
        left. Counters in the host's table, per key and plan, for the current period:
            seen     the highest count Redis answered (workers; the Reconciler after a hand-over)
            pending  admitted here while Redis was away, a running total the Reconciler hands over
            pushed   the part of `pending` Redis confirmed
            unsure   admitted after a timeout (Redis may have counted it already): never handed over,
                     but part of the share used, so an ambiguous request is never counted twice
        Worst case, with every node cut off at once, the nodes together admit what was left (less the
        rounding); workers of one node racing here may pass it by one each."""
        slots = self.slots
        key_id, plan = binding.key_id, binding.plan.name
        pending = self._find(ident("pending", key_id, plan))
        unsure_slot = self._find(ident("unsure", key_id, plan))
        target = unsure_slot if unsure else pending
        if binding.quota_limit < 0:
            return target, UNLIMITED

        def count(slot: int) -> int:
            counted_period, n = slots.count_get(slot)
            return n if counted_period == period else 0

        seen = count(self._find(ident("seen", key_id, plan)))
        used_here = count(pending) - count(self._find(ident("pushed", key_id, plan))) + count(unsure_slot)
        left = max(0, binding.quota_limit - seen) // self._local_divisor - used_here
        return target, count(target) + max(0, left)

    def _chain(self, usage: RouteUsage, binding: Binding, fallback: bool) -> tuple[tuple, tuple]:
        """The levels of one key on one route: the route's own, then the plan's and the plan's
        per-method throttle; built on the first request and kept on the binding."""
        divisor = self._local_divisor if fallback else 1
        if binding.quota_slot < 0:
            binding.plan_slot = self._find(ident("plan", binding.key_id, binding.plan.name))
            binding.quota_slot = self._find(ident("quota", binding.key_id, binding.plan.name))
        chain = list(usage.chains[1 if fallback else 0])
        kinds = [level.kind for level in usage.levels]
        throttle = binding.plan.throttle
        if throttle is not None:
            chain.append((binding.plan_slot, *gcra_params(throttle.rateLimit, throttle.burstLimit, divisor)))
            kinds.append("plan")
        method = binding.methods.get(usage.route)
        if method is not None:
            slot = self._find(ident("planmethod", binding.key_id, binding.plan.name, usage.api, usage.stage,
                                    usage.route))
            chain.append((slot, *gcra_params(method.rateLimit, method.burstLimit, divisor)))
            kinds.append("plan-method")
        built = (tuple(chain), tuple(kinds))
        (binding.fallback_chains if fallback else binding.chains)[usage.route] = built
        return built

    def _find(self, ident_value: int) -> int:
        slot = self.slots.find(ident_value)
        if slot < 0:
            # The table is full (it holds ~100k keys x plans): refuse rather than share buckets.
            log.error("the shared usage table is full; raise its size or restart to compact it")
            raise GatewayError("SERVICE_UNAVAILABLE")
        return slot

    def _throttled(self, usage: RouteUsage, plan: str, level: str, retry_ns: int,
                   spec: tuple[int, int, int]) -> None:
        key = (usage.api, usage.stage, plan, level)
        self.throttled[key] = self.throttled.get(key, 0) + 1
        retry = retry_ns / SECOND_NS
        _, interval, tolerance = spec
        burst = tolerance // interval if tolerance >= 0 else 0
        raise GatewayError("THROTTLED", headers=_retry_headers(retry, burst, retry))

    def _quota_exceeded(self, usage: RouteUsage, binding: Binding, reset_at: float | None = None) -> None:
        key = (usage.api, usage.stage, binding.plan.name)
        self.exceeded[key] = self.exceeded.get(key, 0) + 1
        if reset_at is None:
            reset_at = self.periods.ends[binding.period_kind]
        reset = reset_at - time.time()
        raise GatewayError("QUOTA_EXCEEDED", headers=_retry_headers(reset, binding.quota_limit, reset))

    # -- metrics ----------------------------------------------------------------------------------
    def flush(self) -> None:
        """Per-request tallies go to the shared metric files once a second (metrics.py's pattern)."""
        throttled, self.throttled = self.throttled, {}
        for labels, n in throttled.items():
            metrics.THROTTLED.labels(*labels).inc(n)
        exceeded, self.exceeded = self.exceeded, {}
        for labels3, n in exceeded.items():
            metrics.QUOTA_EXCEEDED.labels(*labels3).inc(n)
        rejected, self.rejected = self.rejected, {}
        for labels3, n in rejected.items():
            metrics.KEY_REJECTED.labels(*labels3).inc(n)
