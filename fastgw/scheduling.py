"""CPU scheduling policy of a worker process (`server.cpuScheduling`, applied once at worker start).

PERF: a granian worker is two threads that hand every request to each other: granian's I/O thread
(Rust) and the Python loop thread, each waking the other through an eventfd. With Linux's default
policy (SCHED_OTHER) a woken thread preempts the running one at once, so on a busy core the two
threads switch for nearly every request. Under SCHED_BATCH a woken thread does not preempt: the
running thread carries on with what is ready (more requests, more responses) and the other then
finds a batch waiting. Measured with the harness's set-up (one worker on its own core, wrk -t1 -c64,
13-byte bodies, same-run A/B, docs/PERF.md): 32.0 → 29.6 µs of CPU per request for plain
HTTP_PROXY, 33.8 → 30.7 for the full gateway path, and a lower p99.

The cost: the workers no longer preempt other programs on wake-up either, so where the gateway
shares its cores with other busy processes (a sidecar beside its application), a request waits for
the running program's time slice: beside a CPU-bound program on the same core, `batch` halved the
gateway's req/s and doubled its median latency (docs/PERF.md).

Hence "auto", the default: each worker watches, twice a second, how much CPU *other* programs use on
the CPUs it may run on (/proc/stat's user+nice+system time of those CPUs, minus the time of the
gateway's own workers, this one and its siblings under granian's process). While they use more than
BUSY_SHARE of them the worker runs under "normal"; once they have used under QUIET_SHARE for
QUIET_CHECKS checks in a row it switches to "batch". So a gateway given its own cores batches, and a
gateway beside a busy application gives way within half a second. "normal" and "batch" fix the policy.
SCHED_BATCH needs no privilege; the nice value is kept.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("fastgw.scheduling")

POLICIES = ("auto", "normal", "batch")
CHECK_SECONDS = 0.5
BUSY_SHARE = 0.10  # others' share of our CPUs above which "auto" gives up batch at once
QUIET_SHARE = 0.03  # ... and under which, QUIET_CHECKS times in a row, it takes it
QUIET_CHECKS = 2  # a second of quiet
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_scheduling_policy(value: str) -> str:
    """A `--cpu-scheduling` / FASTGW_CPU_SCHEDULING value, checked."""
    if value not in POLICIES:
        raise ValueError(f"{value!r} is not one of {', '.join(POLICIES)}")
    return value


def apply(policy: str) -> bool:
    """Give every thread of this process `policy` ("auto": start the watcher, under "normal" until it
    decides); threads started later inherit it. False when nothing was changed ("normal", or a platform
    without SCHED_BATCH)."""
    if policy == "auto":
        return AutoPolicy().start()
    if policy != "batch" or not hasattr(os, "SCHED_BATCH"):
        return False
    return _set_all(os.SCHED_BATCH)


def _set_all(kind: int) -> bool:
    param = os.sched_param(0)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    changed = False
    for tid in threads:
        try:
            os.sched_setscheduler(tid, kind, param)
            changed = True
        except OSError as exc:  # a thread that ended meanwhile, or a policy a sandbox refuses
            log.debug("CPU policy %d not applied to thread %d: %s", kind, tid, exc)
    return changed


def busy_seconds(cpus: Iterable[int], stat: str = "/proc/stat") -> float:
    """CPU time spent running programs (user, nice, system) on `cpus` since boot. Interrupt time is left
    out: much of it is the gateway's own network traffic."""
    wanted = {f"cpu{cpu}" for cpu in cpus}
    total = 0
    with open(stat) as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in wanted:
                total += int(fields[1]) + int(fields[2]) + int(fields[3])
    return total / TICKS


def gateway_pids(pid: int | None = None) -> list[int]:
    """A worker (this process by default) and its siblings: the children of its parent (granian's main
    process) that run the same command line; just the worker when that cannot be read."""
    me = pid or os.getpid()
    try:
        with open(f"/proc/{me}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            children = [int(child) for child in f.read().split()]
        with open(f"/proc/{me}/cmdline", "rb") as f:
            mine = f.read()
    except OSError:
        return [me]
    pids = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if f.read() == mine:
                    pids.append(child)
        except OSError:
            continue
    return pids or [me]


def process_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system) of `pids`, their threads included."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a worker that ended
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / TICKS


class AutoPolicy:
    """The "auto" policy's watcher: one daemon thread per worker (see the module's text)."""

    def __init__(self, busy: Callable[[], float] | None = None, own: Callable[[], float] | None = None,
                 cpus: int | None = None, set_policy: Callable[[int], bool] = _set_all):
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self.cpus = cpus or len(allowed)
        self.busy = busy or (lambda: busy_seconds(allowed))
        self.own = own or (lambda: process_seconds(gateway_pids()))
        self.set_policy = set_policy
        self.batch = False
        self.quiet = 0
        self.stop = threading.Event()

    def start(self) -> bool:
        if not hasattr(os, "SCHED_BATCH") or not os.path.exists("/proc/stat"):
            return False
        threading.Thread(target=self.run, name="fastgw-cpu-policy", daemon=True).start()
        return True

    def decide(self, others_share: float) -> bool | None:
        """The next policy for what others used (a share of our CPUs' time): True batch, False normal,
        None no change."""
        if others_share > BUSY_SHARE:
            self.quiet = 0
            return False if self.batch else None
        self.quiet = self.quiet + 1 if others_share < QUIET_SHARE else 0
        return True if not self.batch and self.quiet >= QUIET_CHECKS else None

    def check(self, interval: float, busy: float, own: float) -> None:
        """One check: `busy` and `own` are the CPU seconds used in the last `interval` seconds."""
        share = max(0.0, busy - own) / (interval * self.cpus)
        batch = self.decide(share)
        if batch is not None and self.set_policy(os.SCHED_BATCH if batch else os.SCHED_OTHER):
            self.batch = batch
            log.info("CPU policy: %s (other programs used %.0f %% of this worker's CPUs)",
                     "batch" if batch else "normal", share * 100)

    def run(self) -> None:
        try:
            last, busy, own = time.monotonic(), self.busy(), self.own()
            while not self.stop.wait(CHECK_SECONDS):
                now, busy_now, own_now = time.monotonic(), self.busy(), self.own()
                self.check(now - last, busy_now - busy, own_now - own)
                last, busy, own = now, busy_now, own_now
        except Exception:  # noqa: BLE001 - the watcher must never take a worker down; the policy stays
            log.exception("CPU policy watcher stopped (the policy stays %s)", "batch" if self.batch else "normal")
