"""`server.cpuScheduling` (fastgw/scheduling.py): "batch" puts every thread of every worker under
SCHED_BATCH, the default leaves them alone; bad values are refused with their place."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

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
