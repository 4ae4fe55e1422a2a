"""Load shedding per worker (`server.overload`, RELIABILITY.md F-23): past a number of requests in
flight, or past a resident memory size, a new request is answered 503 (SERVICE_UNAVAILABLE, with
Retry-After) before its body is read or any upstream is contacted; requests already admitted finish.

The request path pays one compare (`Gateway.handle`: requests in flight > `guard.limit`). The memory
side is a timer: every SAMPLE_SECONDS the worker's RSS is read from /proc/self/statm; at 95 % of
`maxRssBytes` the heap's free memory is given back to the system (malloc_trim), at 100 % `limit`
drops to 0 (every new request shed) until the RSS is below 95 % again. Envoy's overload manager does
the same with its heap: shrink at 95 %, stop accepting at 98 %.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from . import metrics
from .allocator import give_back
from .config.model import OverloadSettings
from .errors import GatewayError

log = logging.getLogger("fastgw")

SAMPLE_SECONDS = 0.25
SHRINK_AT = 0.95  # of maxRssBytes: give free heap memory back; below it again, admit again
TRIM_EVERY_SECONDS = 1.0  # malloc_trim walks the heap: not more often than this
STATM = "/proc/self/statm"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def memory_limit_supported() -> bool:
    return os.path.exists(STATM)


class OverloadGuard:
    # PERF: slots: every request reads `limit` (the compiled plain lane through a generic attribute lookup)
    __slots__ = ("limit", "max_in_flight", "max_rss", "retry_after", "shedding_memory", "rss", "loop", "_timer",
                 "_statm", "_trimmed_at")

    def __init__(self, settings: OverloadSettings):
        self.limit = sys.maxsize  # requests in flight admitted (the request path reads only this)
        self.max_in_flight = sys.maxsize
        self.max_rss = 0
        self.retry_after = (("retry-after", "1"),)
        self.shedding_memory = False
        self.rss = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._statm: int | None = None
        self._trimmed_at = 0.0
        self.configure(settings)

    def configure(self, settings: OverloadSettings) -> None:
        """The settings of a (re)loaded plan."""
        self.max_in_flight = settings.maxRequestsInFlight or sys.maxsize
        self.max_rss = settings.maxRssBytes
        self.retry_after = (("retry-after", str(settings.retryAfterSeconds)),)
        if not self.max_rss:
            self.shedding_memory = False
        self.limit = 0 if self.shedding_memory else self.max_in_flight
        if self.loop is not None:
            self._arm()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None

    def refuse(self) -> GatewayError:
        """The error for a request past the limits (counted by reason)."""
        reason = "memory" if self.shedding_memory else "requests"
        metrics.OVERLOAD_SHED.labels(reason).inc()
        return GatewayError("SERVICE_UNAVAILABLE", "Service Unavailable", self.retry_after)

    # -- memory --------------------------------------------------------------------------------------
    def _arm(self) -> None:
        if self.max_rss and self._timer is None and self.loop is not None:
            self._timer = self.loop.call_later(SAMPLE_SECONDS, self._sample)

    def read_rss(self) -> int:
        if self._statm is None:
            self._statm = os.open(STATM, os.O_RDONLY)
        return int(os.pread(self._statm, 128, 0).split()[1]) * PAGE_SIZE

    def _sample(self) -> None:
        self._timer = None
        if not self.max_rss:
            return
        self.rss = rss = self.read_rss()
        high = self.max_rss
        if rss >= SHRINK_AT * high:
            now = self.loop.time()
            if now - self._trimmed_at >= TRIM_EVERY_SECONDS:
                self._trimmed_at = now
                give_back()
                rss = self.read_rss()
        if rss >= high and not self.shedding_memory:
            self.shedding_memory = True
            self.limit = 0
            log.warning("worker %d: resident memory %d MiB is past server.overload.maxRssBytes (%d MiB): "
                        "new requests are answered 503", os.getpid(), rss >> 20, high >> 20)
        elif rss < SHRINK_AT * high and self.shedding_memory:
            self.shedding_memory = False
            self.limit = self.max_in_flight
            log.warning("worker %d: resident memory %d MiB: admitting requests again", os.getpid(), rss >> 20)
        self._arm()
