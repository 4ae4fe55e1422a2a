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
gateway's req/s and doubled its median latency (docs/PERF.md). Hence opt-in: "batch" for hosts or cores given to the
gateway, "normal" (the default) elsewhere. SCHED_BATCH needs no privilege; the nice value is kept.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("fastgw.scheduling")

POLICIES = ("normal", "batch")


def cpu_scheduling_policy(value: str) -> str:
    """A `--cpu-scheduling` / FASTGW_CPU_SCHEDULING value, checked."""
    if value not in POLICIES:
        raise ValueError(f"{value!r} is not one of {', '.join(POLICIES)}")
    return value


def apply(policy: str) -> bool:
    """Give every thread of this process `policy`; threads started later inherit it. False when
    nothing was changed ("normal", or a platform without SCHED_BATCH)."""
    if policy != "batch" or not hasattr(os, "SCHED_BATCH"):
        return False
    param = os.sched_param(0)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    changed = False
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_BATCH, param)
            changed = True
        except OSError as exc:  # a thread that ended meanwhile, or a policy a sandbox refuses
            log.debug("SCHED_BATCH not applied to thread %d: %s", tid, exc)
    return changed
