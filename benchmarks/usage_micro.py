"""Micro-benchmark of the usage stage: API key + throttle + quota checks per request.

    python -m benchmarks.usage_micro            # local state (shared table), the issue-4 budget: <= 2 us
    python -m benchmarks.usage_micro --redis redis://127.0.0.1:6379/0   # also the Redis round trip

It runs `UsageStage.check` in-process on the full gateway path's config (the harness's
fastgw-full scenario): a key required, a stage throttle, a plan throttle, a per-method plan
throttle and a quota, with a realistic header list (the key is the 6th of 8 headers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

import yaml

KEY = "bench-key-0123456789abcdefghij"
HUGE = 1_000_000_000

CONFIG = {
    "state": {"backend": "local", "path": "state"},
    "throttle": {"rateLimit": HUGE, "burstLimit": HUGE},
    "apis": [{
        "name": "bench", "type": "REST",
        "stages": {"prod": {"throttle": {"rateLimit": HUGE, "burstLimit": HUGE}}},
        "routes": [{"route": "GET /items/{id}", "apiKeyRequired": True,
                    "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:9/items/{id}"}}],
    }],
    "usagePlans": [{
        "name": "bench", "apiStages": [{"api": "bench", "stage": "prod",
                                        "throttle": {"GET /items/{id}": {"rateLimit": HUGE, "burstLimit": HUGE}}}],
        "throttle": {"rateLimit": HUGE, "burstLimit": HUGE},
        "quota": {"limit": (1 << 40) - 1, "period": "DAY"},
    }],
    "apiKeys": [{"name": "bench", "value": KEY, "usagePlans": ["bench"]}],
}

def build(directory: str, redis_url: str | None) -> Any:
    from fastgw.compile import load_plan
    from fastgw.config.loader import Document

    config = json.loads(json.dumps(CONFIG))
    if redis_url:
        config["state"] = {"backend": "redis", "url": redis_url, "path": "state"}
    path = os.path.join(directory, "bench.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return load_plan(Document(config, path))


def measure_local(n: int) -> float:
    from fastgw.policies.usage.stage import UsageStage
    from fastgw.state.shm import SharedTable

    with tempfile.TemporaryDirectory() as directory:
        plan = build(directory, None)
        table = SharedTable.create(plan.usage.state_dir)
        stage = UsageStage(plan.usage)
        loop = asyncio.new_event_loop()
        stage.start(loop)
        route = plan.stages[0].routes[0].usage
        check = stage.check
        for _ in range(10_000):
            check(route, KEY)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n):
                check(route, KEY)
            best = min(best, (time.perf_counter() - started) / n)
        stage.stop()
        loop.close()
        table.close()
    return best


def measure_redis(url: str, n: int) -> float:
    from fastgw.policies.usage.stage import UsageStage
    from fastgw.state.shm import SharedTable

    with tempfile.TemporaryDirectory() as directory:
        plan = build(directory, url)
        table = SharedTable.create(plan.usage.state_dir)
        loop = asyncio.new_event_loop()
        stage = UsageStage(plan.usage)
        stage.start(loop)
        route = plan.stages[0].routes[0].usage

        async def run() -> float:
            for _ in range(200):
                await stage.check(route, KEY)
            started = time.perf_counter()
            for _ in range(n):
                await stage.check(route, KEY)
            return (time.perf_counter() - started) / n

        try:
            return loop.run_until_complete(run())
        finally:
            stage.stop()
            loop.close()
            table.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--redis", help="also measure the Redis backend at this URL")
    args = parser.parse_args(argv)
    from fastgw import _accel

    local = measure_local(args.n)
    result: dict[str, Any] = {"impl": _accel.IMPL, "local_us_per_check": round(local * 1e6, 3), "budget_us": 2.0}
    if args.redis:
        result["redis_us_per_check"] = round(measure_redis(args.redis, min(args.n, 20_000)) * 1e6, 1)
    print(json.dumps(result))
    return 0 if local * 1e6 <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
