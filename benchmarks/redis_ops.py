"""Redis operations per request, per feature, measured (docs/CAPACITY.md).

    .venv/bin/python -m benchmarks.redis_ops [--requests N]

Starts one redis-server and, per scenario, one `fastgw serve` (1 worker) against a small upstream on
loopback; sends N requests one at a time after a warm-up, and reads Redis's own count of commands
(INFO commandstats) before and after. Every process is stopped by its PID. Counts, not timings: the
figures do not depend on the machine's load (the once-a-second background reads do depend on the
run's length, and are reported apart as per-second figures)."""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KEY = "bench-key-0123456789abcdefghij"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 65536  # the head and the body in one write (no delayed-ACK stall)

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.send_response(200)
        self.send_header("content-length", "2")
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


SCENARIOS = {
    "API key + quota": ("", "quota: {limit: 1000000000, period: DAY}", ""),
    "API key + plan throttle + quota": ("", "throttle: {rateLimit: 1000000, burstLimit: 1000000}\n    "
                                        "quota: {limit: 1000000000, period: DAY}", ""),
    "stage throttle + API key + plan throttle + quota": (
        "throttle: {rateLimit: 1000000, burstLimit: 1000000}",
        "throttle: {rateLimit: 1000000, burstLimit: 1000000}\n    quota: {limit: 1000000000, period: DAY}", ""),
    "stage throttle + API key + plan throttle + quota, leaseMillis 100": (
        "throttle: {rateLimit: 1000000, burstLimit: 1000000}",
        "throttle: {rateLimit: 1000000, burstLimit: 1000000}\n    quota: {limit: 1000000000, period: DAY}", "",
        "leaseMillis: 100"),
    "stage throttle only (no API key)": ("throttle: {rateLimit: 1000000, burstLimit: 1000000}", "", ""),
    "stage throttle only (no API key), leaseMillis 100": (
        "throttle: {rateLimit: 1000000, burstLimit: 1000000}", "", "", "leaseMillis: 100"),
    "cache (Redis tier), every request a local hit": ("", "", "cache: {backend: redis, ttlInSeconds: 300}"),
    "cache (Redis tier), every request a miss (new id)": ("", "", "cache: {backend: redis, ttlInSeconds: 300}"),
}


def config(upstream: int, redis_url: str, stage_throttle: str, plan: str, cache: str, state: str = "") -> str:
    keyed = "true" if plan else "false"
    extra = f", {state}" if state else ""
    return f"""
state: {{backend: redis, url: "{redis_url}", path: state{extra}}}
apis:
  - name: shop
    type: REST
    stages:
      prod:
        {stage_throttle}
        {cache}
    routes:
      - route: GET /items/{{id}}
        cache: {{keyParameters: [method.request.path.id]}}
        apiKeyRequired: {keyed}
        integration: {{type: HTTP_PROXY, uri: "http://127.0.0.1:{upstream}/items/{{id}}"}}
usagePlans:
  - name: bench
    apiStages: [{{api: shop, stage: prod}}]
    {plan}
apiKeys:
  - {{name: bench, value: "{KEY}", usagePlans: [bench]}}
"""


def commandstats(port: int) -> dict[str, int]:
    text = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"], capture_output=True, text=True,
                          timeout=10).stdout
    counts = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            counts[name.removeprefix("cmdstat_")] = int(rest.split(",")[0].split("=")[1])
    return counts


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def measure(name: str, parts: tuple[str, ...], requests: int, work: Path, upstream: int, redis_port: int,
            fastgw: str) -> tuple[dict[str, float], float]:
    folder = work / name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
    folder.mkdir()
    path = folder / "config.yaml"
    path.write_text(config(upstream, f"redis://127.0.0.1:{redis_port}/0", *parts))
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([fastgw, "serve", str(path), "--port", str(port), "--admin-port", str(admin),
                             "--workers", "1", "--no-access-log"], stdout=subprocess.DEVNULL,
                            stderr=(folder / "stderr").open("wb"), start_new_session=True)
    try:
        wait_port(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        miss = "miss" in name

        def get(i: int) -> None:
            conn.request("GET", f"/prod/items/{i if miss else 1}", headers={"x-api-key": KEY})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{name}: status {answer.status}")

        for i in range(20):  # warm-up: connections, scripts loaded, the cached entry stored
            get(-i - 1)
        time.sleep(1.2)
        before, started = commandstats(redis_port), time.monotonic()
        for i in range(requests):
            get(i)
        elapsed = time.monotonic() - started
        after = commandstats(redis_port)
        conn.close()
    finally:
        stop(proc)
    delta = {k: (after.get(k, 0) - before.get(k, 0)) for k in after if after.get(k, 0) != before.get(k, 0)}
    delta.pop("info", None)
    return {k: v / requests for k, v in delta.items()}, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    opts = parser.parse_args(argv)
    fastgw = str(Path(sys.executable).parent / "fastgw")
    if shutil.which("redis-server") is None:
        print("redis-server is not installed")
        return 2
    with tempfile.TemporaryDirectory(prefix="fastgw-redis-ops-") as tmp:
        work = Path(tmp)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL,
                                 start_new_session=True)
        try:
            wait_port(redis_port)
            print(f"{opts.requests} requests per scenario, one at a time; Redis commands per request "
                  "(INFO commandstats deltas; background reads included)")
            for name, parts in SCENARIOS.items():
                per_request, elapsed = measure(name, parts, opts.requests, work, server.server_port, redis_port,
                                               fastgw)
                total = sum(per_request.values())
                detail = ", ".join(f"{k} {v:.3f}" for k, v in sorted(per_request.items()))
                print(f"- {name}: {total:.3f} ({detail}) [{elapsed:.1f} s]")
        finally:
            stop(redis)
            server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
