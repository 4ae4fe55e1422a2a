"""`server.cpuScheduling` (fastgw/scheduling.py): "batch" puts every thread of every worker under
SCHED_BATCH, "normal" leaves them alone, "auto" (the default) switches between the two by what other
programs use of the worker's CPUs; bad values are refused with their place."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from fastgw import scheduling
from fastgw.scheduling import QUIET_CHECKS, AutoPolicy, busy_seconds, gateway_pids, process_seconds

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies only")

CONFIG = """
server:
  cpuScheduling: {policy}
apis:
  - name: sched
    type: HTTP
    stages: {{$default: {{}}}}
    routes:
      - route: GET /ping
        integration:
          type: MOCK
          requestTemplates:
            application/json: '{{"statusCode": 200}}'
          responses:
            default:
              statusCode: "200"
              responseTemplates:
                application/json: '{{"pong": true}}'
"""


def _policies(pid: int) -> set[int]:
    policies = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policies.add(os.sched_getscheduler(int(tid)))
        except OSError:  # a thread that ended meanwhile
            pass
    return policies


@pytest.mark.parametrize(("policy", "args", "expected"), [
    ("batch", (), os.SCHED_BATCH),
    ("normal", ("--cpu-scheduling", "batch"), os.SCHED_BATCH),  # the flag beats the file
    ("normal", (), os.SCHED_OTHER),
])
def test_worker_threads_get_the_policy(start_gateway, policy, args, expected):
    gw = start_gateway(CONFIG.format(policy=policy), args=args)
    assert httpx.get(f"{gw.url}/ping", timeout=10).json() == {"pong": True}
    assert gw.proc is not None
    (worker,) = gw.worker_pids()
    threads = os.listdir(f"/proc/{worker}/task")
    assert len(threads) >= 2  # the Python loop thread and granian's runtime thread at least
    assert _policies(worker) == {expected}
    assert _policies(gw.proc.pid) == {os.SCHED_OTHER}  # the main process (admin API) is left alone


def test_an_unknown_policy_is_refused_with_its_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.format(policy="fifo"))
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert "server.cpuScheduling (line 3)" in run.stderr and "batch" in run.stderr
    path.write_text(CONFIG.format(policy="normal"))
    run = subprocess.run([sys.executable, "-m", "fastgw", "serve", str(path), "--port", "0"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "FASTGW_CPU_SCHEDULING": "idle"})
    assert run.returncode != 0
    assert "FASTGW_CPU_SCHEDULING='idle'" in run.stderr


class _Recorder:
    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, kind: int) -> bool:
        self.calls.append(kind)
        return True


def test_auto_batches_after_quiet_checks_and_gives_way_at_once():
    """Two CPUs; the gateway's own time is not "others"."""
    recorder = _Recorder()
    policy = AutoPolicy(busy=lambda: 0.0, own=lambda: 0.0, cpus=2, set_policy=recorder)
    for _ in range(QUIET_CHECKS - 1):
        policy.check(1.0, busy=1.9, own=1.88)  # the workers busy, nobody else
    assert recorder.calls == [] and not policy.batch
    policy.check(1.0, busy=1.9, own=1.88)
    assert recorder.calls == [os.SCHED_BATCH] and policy.batch
    policy.check(1.0, busy=0.15, own=0.0)  # 7.5 %: between the thresholds, no change
    policy.check(1.0, busy=0.05, own=0.0)
    assert recorder.calls == [os.SCHED_BATCH]
    policy.check(1.0, busy=1.5, own=1.2)  # others 0.3 s of 2 CPU-seconds: 15 % > BUSY_SHARE
    assert recorder.calls == [os.SCHED_BATCH, os.SCHED_OTHER] and not policy.batch
    policy.check(1.0, busy=0.0, own=0.0)
    policy.check(1.0, busy=0.5, own=0.0)  # a busy moment restarts the count of quiet checks
    for _ in range(QUIET_CHECKS - 1):
        policy.check(1.0, busy=0.0, own=0.0)
    assert recorder.calls[-1] == os.SCHED_OTHER
    policy.check(1.0, busy=0.0, own=0.0)
    assert recorder.calls[-1] == os.SCHED_BATCH


def test_auto_keeps_its_state_when_the_policy_cannot_be_set():
    policy = AutoPolicy(busy=lambda: 0.0, own=lambda: 0.0, cpus=1, set_policy=lambda kind: False)
    for _ in range(QUIET_CHECKS + 2):
        policy.check(1.0, busy=0.0, own=0.0)
    assert not policy.batch


def test_the_readers_see_a_busy_program_on_its_cpu():
    """/proc as the watcher reads it: a spinning child pinned to one CPU shows in that CPU's busy time
    and in its own process time."""
    cpu = min(os.sched_getaffinity(0))
    spin = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    burner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        busy, own, started = busy_seconds([cpu]), process_seconds([burner.pid]), time.monotonic()
        deadline = started + 30
        while time.monotonic() < deadline and process_seconds([burner.pid]) - own < 0.3:
            time.sleep(0.05)
        used = process_seconds([burner.pid]) - own
        assert used >= 0.3
        assert busy_seconds([cpu]) - busy >= used - 0.05  # the CPU's time includes the child's (clock ticks)
    finally:
        burner.kill()
        burner.wait()


def test_the_gateway_time_is_its_workers(start_gateway):
    """What "auto" subtracts as the gateway's own: every worker of the server, not its main process."""
    gw = start_gateway(CONFIG.format(policy="normal"), workers=2)
    workers = sorted(gw.worker_pids())
    assert len(workers) == 2
    assert sorted(gateway_pids(workers[0])) == workers == sorted(gateway_pids(workers[1]))


def test_auto_is_the_default(tmp_path):
    from fastgw.config.model.server import ServerConfig

    assert ServerConfig().cpuScheduling == "auto" and "auto" in scheduling.POLICIES
