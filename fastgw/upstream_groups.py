"""Upstream groups (issue 17): an integration URI whose host names a group (`http://orders/items/{id}`)
is served by the group's targets, one keep-alive pool per target (fastgw/upstream.py), in each worker.

* Balancing: `round_robin` is nginx's smooth weighted round robin; `least_request` picks the less busy
  of two random targets (Envoy's power of two choices), busy counted per target and weighted.
* Active health checks (`healthCheck`): each worker checks each target every `intervalMs` on a
  connection of its own (so a check never counts as traffic); `unhealthyThreshold` failed checks in a
  row take a target out, `healthyThreshold` passed ones bring it back. Targets start healthy.
* Passive outlier ejection (`outlierDetection`): `consecutiveErrors` failed exchanges in a row (connect
  failures, resets, timeouts, invalid responses, and 502/503/504 answers) eject a target for
  `baseEjectionMs` times the number of its ejections so far (at most `maxEjectionMs`); at most
  `maxEjectionPercent` of the targets are out at once. Each worker decides from its own traffic.
* A connection that could not be made is tried on the next available target, whatever the method:
  nothing was sent. A request the upstream dropped without answering is sent again on another
  target for idempotent methods only (fastgw/upstream.py `exchange`).
* Circuit open: when no target is available the answer is an immediate 503 (SERVICE_UNAVAILABLE,
  `Retry-After`: seconds until the first target may be back), not a wait for timeouts per request.
* Circuit breaker (`circuitBreaker.maxRequests`, else `server.upstream.maxRequests`): past that many
  requests in flight to the group's targets together (per worker), the next is answered 503 at once
  (`Saturated`, fastgw/upstream.py), as Envoy's per-cluster `max_requests`.

A GroupPool has the UpstreamPool methods the pipeline calls (take_idle, connect, acquire, discard,
bind, close); connections belong to their target's pool, which releases them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import Any

from . import metrics
from ._accel import UpstreamError
from .config.model import UpstreamGroup, UpstreamSettings
from .upstream import DEFAULT_SETTINGS, Saturated, UpstreamPool, exchange, read_whole_response

log = logging.getLogger("fastgw.upstream")

HEALTH_RESPONSE_LIMIT = 64 * 1024
FAILURE_STATUSES = frozenset((502, 503, 504))


class CircuitOpen(UpstreamError):
    """No target of a group is available: answered at once with 503 and Retry-After."""

    def __init__(self, group: str, retry_after: int):
        super().__init__("SERVICE_UNAVAILABLE", f"no healthy target in upstream group '{group}'")
        self.headers = (("retry-after", str(retry_after)),)


class Member:
    """One target of a group in one worker: its pool, its health and its ejection state."""

    __slots__ = ("address", "checks_failed", "checks_passed", "current_weight", "ejected_until", "ejections",
                 "errors", "group", "healthy", "pool", "weight")

    def __init__(self, group: GroupPool, pool: UpstreamPool, address: str, weight: int):
        self.group = group
        self.pool = pool
        self.address = address
        self.weight = weight
        self.current_weight = 0
        self.healthy = True  # by the active health check
        self.checks_failed = 0
        self.checks_passed = 0
        self.errors = 0  # consecutive failed exchanges
        self.ejections = 0
        self.ejected_until = 0.0
        pool.member = self

    def available(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now

    def succeeded(self, status: int) -> None:
        """The target answered (UpstreamPool.release calls this for pools of a group)."""
        if status in FAILURE_STATUSES:
            self.failed()
        else:
            self.errors = 0

    def failed(self) -> None:
        self.group.failures.counts[self.address] = self.group.failures.counts.get(self.address, 0) + 1
        self.errors += 1
        if self.errors >= self.group.config.outlierDetection.consecutiveErrors:
            self.group.eject(self)


class GroupPool:
    def __init__(self, config: UpstreamGroup, scheme: str, connect_timeout: float,
                 settings: UpstreamSettings = DEFAULT_SETTINGS):
        self.config = config
        self.scheme = scheme
        self.host = config.name
        self.port = 0
        # A changed group (targets, checks...) is a new pool: a reload keeps a pool only when equal.
        self.key: tuple[str, str, int] = (f"group-{scheme}", config.name, hash(config))
        self.connect_timeout = connect_timeout
        self.settings = settings
        self.max_requests = config.maxRequests or settings.maxRequests
        self.members = [Member(self, UpstreamPool(scheme, t.host, t.port, connect_timeout, settings), t.address,
                               t.weight) for t in config.targets]
        for member in self.members:  # the group's limit is the one that counts (checked across targets)
            member.pool.max_requests = self.max_requests
        self.total_weight = sum(m.weight for m in self.members)
        self.loop: Any = None
        self.chosen: Member | None = None  # take_idle's choice, for the connect() that may follow it
        self.checks: list[asyncio.Task] = []
        labels = (config.name,)
        self.requests = metrics.PendingCounts(metrics.TARGET_REQUESTS, labels)
        self.failures = metrics.PendingCounts(metrics.TARGET_FAILURES, labels)

    # -- the pool interface the pipeline uses ---------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for member in self.members:
            member.pool.bind(loop)
            metrics.TARGET_AVAILABLE.labels(self.config.name, member.address).set(1)
        health = self.config.healthCheck
        if health is not None and not self.checks:
            self.checks = [loop.create_task(self._check_loop(member)) for member in self.members]

    def adopt(self, other: GroupPool) -> None:
        """A reload kept this group's pool (the group is unchanged): take the server's new settings."""
        self.connect_timeout = other.connect_timeout
        self.max_requests = other.max_requests
        for member, new in zip(self.members, other.members, strict=True):
            member.pool.adopt(new.pool)

    def in_flight(self) -> int:
        return sum(len(m.pool.busy) + m.pool.connecting for m in self.members)

    def _check_limit(self) -> None:
        if self.in_flight() >= self.max_requests:
            metrics.UPSTREAM_OVERFLOW.labels(self.config.name).inc()
            raise Saturated(self.config.name, self.max_requests)

    def take_idle(self) -> Any:
        self._check_limit()
        member = self.pick()
        self.chosen = member
        return member.pool.take_idle()

    async def connect(self) -> Any:
        """A new connection on the target take_idle chose (or the next one); a target that refuses the
        connection counts a failure and the next available one is tried."""
        member, self.chosen = self.chosen, None
        if member is None:  # not right after take_idle (which checked): a retry, or a fresh connection
            self._check_limit()
        tried: set[Member] = set()
        while True:
            if member is None or member in tried:
                member = self.pick(exclude=tried)
            tried.add(member)
            try:
                return await member.pool.connect()
            except UpstreamError:
                member.failed()
                if len(tried) >= len(self.members):
                    raise
                member = None

    async def acquire(self, fresh: bool = False) -> Any:
        return (None if fresh else self.take_idle()) or await self.connect()

    def discard(self, conn: Any) -> None:
        conn.pool.discard(conn)

    def close(self) -> None:
        for task in self.checks:
            task.cancel()
        self.checks = []
        for member in self.members:
            member.pool.close()

    # -- balancing, ejection -------------------------------------------------------------------------
    def pick(self, exclude: set[Member] | frozenset = frozenset()) -> Member:
        now = self.loop.time() if self.loop is not None else 0.0
        ready = [m for m in self.members if m not in exclude and m.available(now)]
        if not ready:
            raise CircuitOpen(self.config.name, self._retry_after(now))
        if len(ready) == 1:
            member = ready[0]
        elif self.config.balance == "least_request":
            a, b = random.sample(ready, 2)
            member = a if len(a.pool.busy) * b.weight <= len(b.pool.busy) * a.weight else b
        else:
            # nginx's smooth weighted round robin: every target gains its weight, the highest is chosen and
            # pays the total back, so weights 5:1:1 give a a b a c a a rather than a a a a a b c.
            total = 0
            member = ready[0]
            for m in ready:
                m.current_weight += m.weight
                total += m.weight
                if m.current_weight > member.current_weight:
                    member = m
            member.current_weight -= total
        self.requests.counts[member.address] = self.requests.counts.get(member.address, 0) + 1
        return member

    def eject(self, member: Member) -> None:
        outlier = self.config.outlierDetection
        now = self.loop.time()
        if member.ejected_until > now:
            return
        out = sum(1 for m in self.members if m.ejected_until > now)
        if (out + 1) * 100 > outlier.maxEjectionPercent * len(self.members):
            return
        member.ejections += 1
        seconds = min(outlier.baseEjectionMs * member.ejections, outlier.maxEjectionMs) / 1000
        member.ejected_until = now + seconds
        member.errors = 0
        metrics.TARGET_EJECTIONS.labels(self.config.name, member.address).inc()
        metrics.TARGET_AVAILABLE.labels(self.config.name, member.address).set(0)
        self.loop.call_later(seconds, self._publish_state, member)
        log.warning("upstream group %s: target %s ejected for %.1f s after %d errors in a row",
                    self.config.name, member.address, seconds, outlier.consecutiveErrors)

    def _publish_state(self, member: Member) -> None:
        available = member.available(self.loop.time())
        metrics.TARGET_AVAILABLE.labels(self.config.name, member.address).set(1 if available else 0)

    def _retry_after(self, now: float) -> int:
        waits = [m.ejected_until - now for m in self.members if m.ejected_until > now and m.healthy]
        health = self.config.healthCheck
        if health is not None and any(not m.healthy for m in self.members):
            waits.append(health.intervalMs * health.healthyThreshold / 1000)
        return max(1, math.ceil(min(waits))) if waits else 1

    # -- active health checks ------------------------------------------------------------------------
    async def _check_loop(self, member: Member) -> None:
        health = self.config.healthCheck
        assert health is not None
        # Checks go on a pool of their own: they never take a connection a request could use, and a
        # failed check is not a failed request (passive ejection counts requests only).
        pool = UpstreamPool(self.scheme, member.pool.host, member.pool.port, health.timeoutMs / 1000, self.settings)
        pool.bind(self.loop)
        host = member.address if member.pool.port != (443 if self.scheme == "https" else 80) else member.pool.host
        head = f"GET {health.path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: fastgw-health-check\r\n\r\n".encode()
        try:
            while True:
                passed = await self._check_once(pool, head, health.timeoutMs / 1000, health.expectedStatuses)
                self._record_check(member, passed)
                await asyncio.sleep(health.intervalMs / 1000)
        finally:
            pool.close()

    async def _check_once(self, pool: UpstreamPool, head: bytes, timeout: float, statuses: tuple[int, int]) -> bool:
        try:
            conn = await asyncio.wait_for(exchange(pool, head, b"", False, True, timeout), timeout + 0.5)
            status = conn.parser.status
            await read_whole_response(conn, HEALTH_RESPONSE_LIMIT)
        except (UpstreamError, TimeoutError, OSError):
            return False
        return statuses[0] <= status <= statuses[1]

    def _record_check(self, member: Member, passed: bool) -> None:
        health = self.config.healthCheck
        assert health is not None
        metrics.TARGET_HEALTH_CHECKS.labels(self.config.name, member.address, "pass" if passed else "fail").inc()
        if passed:
            member.checks_passed += 1
            member.checks_failed = 0
            if not member.healthy and member.checks_passed >= health.healthyThreshold:
                member.healthy = True
                log.warning("upstream group %s: target %s is healthy again", self.config.name, member.address)
        else:
            member.checks_failed += 1
            member.checks_passed = 0
            if member.healthy and member.checks_failed >= health.unhealthyThreshold:
                member.healthy = False
                log.warning("upstream group %s: target %s is unhealthy (%d failed checks)", self.config.name,
                            member.address, member.checks_failed)
        self._publish_state(member)
