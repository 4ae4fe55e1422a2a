"""Chaos under load and a soak (issue #20; RELIABILITY.md §c F-21, F-22, F-14/F-16, F-12 and the
"nothing lost" figure). Loopback only; every scenario is bounded and stops by itself.

    .venv/bin/python -m benchmarks.chaos                    # every scenario, ~2 minutes
    .venv/bin/python -m benchmarks.chaos kill-worker reloads
    .venv/bin/python -m benchmarks.chaos soak --soak-seconds 600   # the 10-minute soak

Scenarios (each prints sent / failed / lost and its own checks):
  kill-worker      SIGKILL one of two granian workers under load: granian respawns it; failed
                   requests are those the killed worker held (reported, not hidden).
  sigterm          SIGTERM under load with a 200 ms upstream: no request that started before the
                   signal fails (granian stops accepting; in-flight requests finish).
  reloads          100 live reloads (POST /reload) under load: 0 failed.
  upstream-restart the upstream stops for 1 s and comes back on the same port: 502s during the gap
                   only, then all served again.
  redis-restart    Redis stopped for 2 s and restarted under a quota (failMode: open): 0 failed,
                   and the usage counted equals the requests the upstream saw (nothing lost,
                   nothing counted twice).
  soak             steady load on a cached route and a proxied route: worker RSS drift after the
                   warm-up (first 20 %) and file-descriptor growth, sampled every second.

"failed" = an answer other than the scenario expects (or a connection error), "lost" = a request
written whose connection died before any answer. Figures from this machine are rough: it has 2
cores shared with other work.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.gateway import GatewayProcess  # noqa: E402
from support.redis import RedisServer  # noqa: E402
from support.upstream import Action, RecordingUpstream  # noqa: E402

ALICE = "alice-key-0123456789abcdefghij"


def config(upstream: str, *, state: str = "", quota: str = "", version: str = "v0", cache: bool = False) -> str:
    """A REST API on stage `prod`: /prod/items/{id} proxied, /prod/cached/{id} through the stage
    cache (when `cache`), /prod/keyed/{id} behind an API key and a usage plan (when `quota`)."""
    stage_cache = "{ttlInSeconds: 2}" if cache else "{enabled: false}"
    text = f"""
server: {{accessLog: false, drainSeconds: 20}}
{state}
apis:
  - name: chaos
    type: REST
    stages:
      prod:
        variables: {{version: {version}}}
        cache: {stage_cache}
    routes:
      - route: GET /items/{{id}}
        cache: {{enabled: false}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/items/{{id}}"}}
      - route: GET /cached/{{id}}
        cache: {{keyParameters: [method.request.path.id]}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/cached/{{id}}"}}
      - route: GET /keyed/{{id}}
        cache: {{enabled: false}}
        apiKeyRequired: {"true" if quota else "false"}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/keyed/{{id}}"}}
"""
    if quota:
        text += f"""usagePlans:
  - name: basic
    apiStages: [{{api: chaos, stage: prod}}]
    {quota}
apiKeys:
  - {{name: alice, value: "{ALICE}", usagePlans: [basic]}}
"""
    return text


@dataclass
class Load:
    """Keep-alive clients in threads, each sending GETs one after another until stopped."""

    port: int
    path: str = "/prod/items/1"
    clients: int = 8
    headers: dict[str, str] = field(default_factory=dict)
    ok_statuses: tuple[int, ...] = (200,)
    counts: Counter = field(default_factory=Counter)
    started_before: Counter = field(default_factory=Counter)  # outcomes of requests started before `mark`
    mark: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self

    def _record(self, outcome: str, began: float) -> None:
        with self._lock:
            self.counts[outcome] += 1
            if self.mark is not None and began < self.mark:
                self.started_before[outcome] += 1

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    conn.connect()
                except OSError:
                    conn = None
                    self._record("refused", time.monotonic())
                    time.sleep(0.05)
                    continue
            began = time.monotonic()
            try:
                conn.request("GET", self.path, headers=self.headers)
            except OSError:
                conn.close()
                conn = None
                self._record("refused", began)  # nothing was written: not a sent request
                continue
            try:
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                self._record("lost", began)
                continue
            self._record("ok" if response.status in self.ok_statuses else f"status {response.status}", began)
            if response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def summary(self) -> dict[str, int]:
        sent = sum(v for k, v in self.counts.items() if k != "refused")
        failed = sum(v for k, v in self.counts.items() if k not in ("ok", "refused", "lost"))
        return {"sent": sent, "ok": self.counts["ok"], "failed": failed, "lost": self.counts["lost"],
                "refused_connects": self.counts["refused"]}


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- scenarios ------------------------------------------------------------------------------------------
def kill_worker(tmp: Path, seconds: float) -> dict:
    upstream = RecordingUpstream().start()
    gateway = GatewayProcess(config(upstream.address), tmp, workers=2).start()
    try:
        before = gateway.worker_pids()
        load = Load(gateway.port).start()
        time.sleep(seconds / 3)
        os.kill(before[0], signal.SIGKILL)
        respawned = wait_until(lambda: len(gateway.worker_pids()) == 2 and before[0] not in gateway.worker_pids(),
                               30)
        time.sleep(seconds / 3)
        result = load.stop().summary()
        result["respawned"] = respawned
        result["upstream_saw"] = len(upstream.requests)
        return result
    finally:
        gateway.stop()
        upstream.stop()


def sigterm(tmp: Path, seconds: float) -> dict:
    upstream = RecordingUpstream(lambda request: Action(delay=0.2)).start()
    gateway = GatewayProcess(config(upstream.address), tmp, workers=1).start()
    try:
        load = Load(gateway.port, clients=8).start()
        time.sleep(seconds / 2)
        load.mark = time.monotonic()
        gateway.signal(signal.SIGTERM)
        code = gateway.proc.wait(30)
        time.sleep(0.5)
        load.stop()
        result = load.summary()
        result["exit_code"] = code
        started = load.started_before
        result["started_before_signal"] = sum(v for k, v in started.items() if k != "refused")
        result["failed_or_lost_of_those"] = sum(v for k, v in started.items() if k not in ("ok", "refused"))
        return result
    finally:
        gateway.stop()
        upstream.stop()


def reloads(tmp: Path, count: int) -> dict:
    import httpx

    upstream = RecordingUpstream().start()
    gateway = GatewayProcess(config(upstream.address), tmp, workers=2).start()
    try:
        load = Load(gateway.port).start()
        time.sleep(1)
        refused = 0
        for i in range(1, count + 1):
            gateway.config_path.write_text(config(upstream.address, version=f"v{i}"))
            answer = httpx.post(f"{gateway.admin}/reload", timeout=30)
            refused += answer.status_code != 202
        time.sleep(1)
        result = load.stop().summary()
        result["reloads"] = count
        result["reloads_refused"] = refused
        return result
    finally:
        gateway.stop()
        upstream.stop()


def upstream_restart(tmp: Path, seconds: float) -> dict:
    upstream = RecordingUpstream().start()
    port = upstream.port
    gateway = GatewayProcess(config(upstream.address), tmp, workers=1).start()
    try:
        load = Load(gateway.port, ok_statuses=(200,)).start()
        time.sleep(seconds / 3)
        upstream.stop()
        time.sleep(1.0)
        upstream = RecordingUpstream(port=port).start()
        load.mark = None
        recovered_at = time.monotonic()
        # "After the restart" starts once the upstream answers again: requests sent while it was down may
        # still be failing (a 502 on their refused connect) for a moment after it is back.
        ok_at_restart = load.counts["ok"]
        deadline = time.monotonic() + 10
        while load.counts["ok"] < ok_at_restart + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        counts_at_restart = Counter(load.counts)
        time.sleep(seconds / 3)
        result = load.stop().summary()
        after = load.counts - counts_at_restart
        result["failed_after_restart"] = sum(v for k, v in after.items() if k not in ("ok", "refused"))
        result["statuses"] = dict(load.counts)
        result["recovery_window_s"] = round(time.monotonic() - recovered_at, 1)
        return result
    finally:
        gateway.stop()
        upstream.stop()


def redis_restart(tmp: Path, seconds: float) -> dict:
    import httpx

    upstream = RecordingUpstream().start()
    redis = RedisServer(tmp / "redis").start()
    state = f'state: {{backend: redis, url: "{redis.url}", path: state, failMode: open, nodes: 1}}'
    gateway = GatewayProcess(config(upstream.address, state=state, quota="quota: {limit: 10000000, period: DAY}"),
                             tmp, workers=2).start()
    try:
        load = Load(gateway.port, path="/prod/keyed/1", headers={"x-api-key": ALICE}).start()
        time.sleep(seconds / 3)
        redis.stop()
        time.sleep(2.0)
        redis.start()
        time.sleep(seconds / 3)
        result = load.stop().summary()
        upstream_saw = sum(1 for r in upstream.requests if r.target.startswith("/keyed/"))
        counted = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the usage buffered while Redis was away is flushed back
            today = time.strftime("%Y-%m-%d", time.gmtime())
            body = httpx.get(f"{gateway.admin}/usage", params={"keyId": "alice", "startDate": today,
                                                                "endDate": today}, timeout=10).json()
            # GetUsage: per plan, {keyId: [[used, remaining] per day]}
            counted = sum(days[-1][0] for plan in body["items"] for days in plan["items"].values())
            if counted == upstream_saw:
                break
            time.sleep(0.5)
        result["upstream_saw"] = upstream_saw
        result["usage_counted"] = counted
        # A check Redis ran whose answer was lost when it stopped is settled once when Redis is back
        # (docs/DESIGN.md, "Checks whose outcome is unknown"): 0 expected.
        result["usage_overcount"] = None if counted is None else counted - upstream_saw
        return result
    finally:
        gateway.stop()
        redis.stop()
        upstream.stop()


def soak(tmp: Path, seconds: float) -> dict:
    upstream = RecordingUpstream().start()
    gateway = GatewayProcess(config(upstream.address, cache=True), tmp, workers=1).start()
    try:
        (worker,) = gateway.worker_pids()
        loads = [Load(gateway.port, path="/prod/items/1", clients=3).start(),
                 Load(gateway.port, path="/prod/cached/2", clients=3).start()]
        samples: list[tuple[float, int, int]] = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(1.0)
            samples.append((time.monotonic() - started, rss_kib(worker), fds(worker)))
        for load in loads:
            load.stop()
        warm = [s for s in samples if s[0] >= seconds * 0.2]
        base_rss = warm[0][1]
        totals = {k: sum(load.summary()[k] for load in loads) for k in ("sent", "failed", "lost")}
        result: dict = {"seconds": seconds, **totals}
        result["rss_kib_after_warmup"] = base_rss
        result["rss_kib_end"] = warm[-1][1]
        result["rss_kib_max"] = max(s[1] for s in warm)
        result["rss_drift_pct"] = round(100.0 * (warm[-1][1] - base_rss) / base_rss, 2)
        result["fds_after_warmup"] = warm[0][2]
        result["fds_end"] = warm[-1][2]
        result["rate_per_s"] = round(result["sent"] / seconds)
        return result
    finally:
        gateway.stop()
        upstream.stop()


SCENARIOS = ["kill-worker", "sigterm", "reloads", "upstream-restart", "redis-restart", "soak"]


def judge(name: str, r: dict) -> list[str]:
    """The acceptance of each scenario (issue #20); an empty list means it held."""
    problems = []
    if name == "kill-worker" and not r["respawned"]:
        problems.append("the killed worker was not respawned")
    if name == "sigterm" and (r["failed_or_lost_of_those"] or r["exit_code"] != 0):
        problems.append("requests started before SIGTERM failed, or the exit code was not 0")
    if name == "reloads" and (r["failed"] or r["lost"] or r["reloads_refused"]):
        problems.append("a request failed during the reloads")
    if name == "upstream-restart" and r["ok"] == 0:
        problems.append("nothing was served")
    if name == "redis-restart" and (r["failed"] or r["lost"] or r["usage_counted"] is None
                                    or r["usage_counted"] != r["upstream_saw"]):
        problems.append("a request failed, or usage was lost or counted twice (not what the upstream saw)")
    if name == "soak" and (r["failed"] or r["lost"] or r["rss_drift_pct"] > 5
                           or r["fds_end"] > r["fds_after_warmup"] + 8):
        problems.append("failures, RSS drift over 5 %, or fd growth")
    return problems


def run(names: list[str], soak_seconds: float, quick: bool) -> dict[str, dict]:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fastgw-chaos-") as tmp_name:
        tmp = Path(tmp_name)
        for name in names:
            (tmp / name).mkdir()
            if name in ("kill", "kill-worker"):
                result = kill_worker(tmp / name, 6 if quick else 12)
            elif name == "sigterm":
                result = sigterm(tmp / name, 4)
            elif name == "reloads":
                result = reloads(tmp / name, 20 if quick else 100)
            elif name == "upstream-restart":
                result = upstream_restart(tmp / name, 6)
            elif name == "redis-restart":
                result = redis_restart(tmp / name, 6)
            elif name == "soak":
                result = soak(tmp / name, soak_seconds)
            else:
                raise SystemExit(f"unknown scenario {name!r}: {', '.join(SCENARIOS)}")
            result["problems"] = judge(name, result)
            results[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS)
    parser.add_argument("--soak-seconds", type=float, default=float(os.environ.get("FASTGW_SOAK_SECONDS", 30)))
    parser.add_argument("--quick", action="store_true", help="shorter runs (the CI test's mode)")
    args = parser.parse_args()
    results = run(args.scenarios, args.soak_seconds, args.quick)
    failed = [name for name, r in results.items() if r["problems"]]
    print("chaos: " + ("all held" if not failed else f"FAILED: {', '.join(failed)}"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
