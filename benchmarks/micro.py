"""Micro-benchmarks of the kernels: compiled fastgw._core against the fastgw._py twins.

    python benchmarks/micro.py [--quick] [--json FILE]

Every case times the same Python-level loop over both builds (so the loop overhead is in both
numbers, as it is for real callers) and reports the best of several repeats in ns per operation.
The router runs the same request mix against 10 and against 1,000 routes: a trie walk costs the
path depth, not the route count, so the two numbers should be close.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastgw import _py  # noqa: E402

Loop = Callable[[], int]  # runs one timed batch, returns the number of operations done


def best_ns_per_op(loops: dict[str, Loop], repeats: int) -> dict[str, float]:
    """Best ns/op of each loop. Batches alternate between the loops so that a busy spell on the
    machine hits both builds alike instead of skewing the ratio."""
    best = dict.fromkeys(loops, float("inf"))
    for loop in loops.values():
        loop()  # warm up
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection landing in one build's batch would skew the ratio
    try:
        for _ in range(repeats):
            for name, loop in loops.items():
                t0 = time.perf_counter_ns()
                ops = loop()
                best[name] = min(best[name], (time.perf_counter_ns() - t0) / ops)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


# ---------------------------------------------------------------- workloads


def router_routes(n: int) -> list[tuple[str, str]]:
    """n routes shaped like a real API: services with static, parameter and greedy routes."""
    shapes = [
        ("GET", "/svc{i}/items"),
        ("GET", "/svc{i}/items/{{id}}"),
        ("PUT", "/svc{i}/items/{{id}}"),
        ("GET", "/svc{i}/items/{{id}}/parts/{{part}}"),
        ("ANY", "/svc{i}/files/{{path+}}"),
    ]
    routes = []
    i = 0
    while len(routes) < n:
        for method, template in shapes:
            if len(routes) < n:
                routes.append((method, template.format(i=i)))
        i += 1
    return routes


def router_requests(n_routes: int) -> list[tuple[str, str]]:
    """A fixed mix (static, 1 and 2 parameters, greedy, 405) spread over the services."""
    services = max(1, n_routes // 5)
    reqs = []
    for k in range(64):
        s = (k * 7919) % services
        reqs += [
            ("GET", f"/svc{s}/items"),
            ("GET", f"/svc{s}/items/{k}"),
            ("GET", f"/svc{s}/items/{k}/parts/p{k}"),
            ("POST", f"/svc{s}/files/a/b/c{k}.txt"),
            ("DELETE", f"/svc{s}/items/{k}"),
        ]
    return reqs


def bench_router(mod: ModuleType, n_routes: int, batch: int) -> Loop:
    router = mod.Router()
    for method, template in router_routes(n_routes):
        router.add(method, template, template)
    reqs = router_requests(n_routes)
    reqs = (reqs * (batch // len(reqs) + 1))[:batch]
    match = router.match

    def loop() -> int:
        for method, path in reqs:
            match(method, path)
        return len(reqs)

    return loop


def bench_template(mod: ModuleType, batch: int) -> Loop:
    template = mod.Template("http://${stageVariables.backend}:8080/v1/items/{id}/{proxy+}?src=${context.stage}")
    values = [
        {"stageVariables.backend": "backend.internal", "id": str(k), "proxy": f"a/b/{k}", "context.stage": "prod"}
        for k in range(64)
    ]
    values = (values * (batch // len(values) + 1))[:batch]
    render = template.render

    def loop() -> int:
        for v in values:
            render(v)
        return len(values)

    return loop


def bench_gcra(mod: ModuleType, batch: int) -> Loop:
    nslots = 1024
    table = mod.GcraTable(bytearray(8 * nslots), nslots)
    acquire = table.acquire
    start = time.time_ns()
    # Slots cycle and the clock advances, so that allowed and denied answers both occur.
    calls = [(k % nslots, start + k * 1000) for k in range(batch)]

    def loop() -> int:
        for slot, now in calls:
            acquire(slot, now, 50.0, 10)
        return len(calls)

    return loop


def cache_keys(n: int) -> list[str]:
    return [f"GET /svc{k % 50}/items/{k}?page={k % 7}" for k in range(n)]


def bench_cache_get(mod: ModuleType, batch: int) -> Loop:
    keys = cache_keys(512)
    cache = mod.LruTtlCache(1 << 30)
    for k in keys:
        cache.put(k, b"x" * 100, 100, 1e9, 0.0)
    seq = (keys * (batch // len(keys) + 1))[:batch]
    get = cache.get

    def loop() -> int:
        for k in seq:
            get(k, 1.0)
        return len(seq)

    return loop


def bench_cache_put(mod: ModuleType, batch: int) -> Loop:
    keys = cache_keys(4096)
    # Room for ~1,000 entries: most puts evict the least recently used one.
    cache = mod.LruTtlCache(1000 * (100 + 40 + mod.LruTtlCache.ENTRY_OVERHEAD))
    seq = (keys * (batch // len(keys) + 1))[:batch]
    value = b"x" * 100
    put = cache.put

    def loop() -> int:
        for k in seq:
            put(k, value, 100, 60.0, 1.0)
        return len(seq)

    return loop


def bench_slots_admit(mod: ModuleType, batch: int) -> Loop:
    """The usage stage's one kernel call per request: four throttle levels, then the quota counter."""
    nslots = 1024
    table = mod.SlotTable(bytearray(16 * nslots), nslots)
    admit = table.admit
    huge = 1 << 40
    levels = tuple((table.find(k + 1), 1, huge) for k in range(4))  # never refused: the admitted path
    quota = table.find(99)
    start = time.monotonic_ns()
    nows = [start + k for k in range(batch)]

    def loop() -> int:
        for now in nows:
            admit(now, levels, quota, 20_000, -1, 0)
        return len(nows)

    return loop


RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\nServer: nginx\r\n"
            b"Date: Wed, 25 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n\r\n{\"ok\": true}\n\n")
REQUEST_HEADERS = [("host", "api.example.com"), ("user-agent", "curl/8.5.0"), ("accept", "*/*"),
                   ("x-api-key", "k" * 40), ("content-type", "application/json"), ("content-length", "13")]


def bench_response_parser(mod: ModuleType, batch: int) -> Loop:
    """The upstream leg's parse of one small response (head + body in one read)."""
    parser = mod.ResponseParser()
    reset, feed, take = parser.reset, parser.feed, parser.take_body

    def loop() -> int:
        for _ in range(batch):
            reset(False)
            feed(RESPONSE)
            take()
        return batch

    return loop


def bench_request_scan(mod: ModuleType, batch: int) -> Loop:
    """The receive stage's header scan: limits, framing, and the forwardable block."""
    scan = mod.scan_request_headers
    headers = REQUEST_HEADERS

    def loop() -> int:
        for _ in range(batch):
            scan(headers, 100, 61440, 16384, 10 << 20)
        return batch

    return loop


def bench_request_line_and_scan(mod: ModuleType, batch: int) -> Loop:
    """What the pipeline calls: the request line's checks, then the header scan."""
    scan = mod.scan_request
    headers = REQUEST_HEADERS
    limits = (8192, 100, 61440, 16384, 10 << 20)

    def loop() -> int:
        for _ in range(batch):
            scan("GET", "/prod/items/42", "lang=en", False, headers, limits)
        return batch

    return loop


def bench_upstream_request_head(mod: ModuleType, batch: int) -> Loop:
    """The head of the request to the upstream (the proxy path builds one per request), from the
    client's address as RSGI gives it."""
    build = mod.upstream_request_head
    forward = b"user-agent: wrk\r\naccept: */*\r\nx-api-key: bench-key-0123456789abcdefghij\r\n"

    def loop() -> int:
        for _ in range(batch):
            build("GET", "/items/42?lang=en", "127.0.0.1:8080", forward, "127.0.0.1:50412", "", "http",
                  "api.example.com", "\r\n")
        return batch

    return loop


def bench_request_ids(mod: ModuleType, batch: int) -> Loop:
    next_id = mod.RequestIds("0123abcd-4567-89ef-0123-").next

    def loop() -> int:
        for _ in range(batch):
            next_id()
        return batch

    return loop


def bench_tally(mod: ModuleType, batch: int) -> Loop:
    tally = mod.Tally(("api", "stage", "GET /x", "GET"), (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
    record = tally.record

    def loop() -> int:
        for _ in range(batch):
            record(200, 0.0021, 0.0017)
        tally.drain()
        return batch

    return loop


# ---------------------------------------------------------------- driver


def cases(batch: int) -> list[tuple[str, str, Callable[[ModuleType], Loop]]]:
    return [
        ("Router", "match, 10 routes", lambda m: bench_router(m, 10, batch)),
        ("Router", "match, 1,000 routes", lambda m: bench_router(m, 1000, batch)),
        ("Template", "render, 4 placeholders", lambda m: bench_template(m, batch)),
        ("GcraTable", "acquire", lambda m: bench_gcra(m, batch)),
        ("SlotTable", "admit, 4 levels + quota", lambda m: bench_slots_admit(m, batch)),
        ("LruTtlCache", "get (hit)", lambda m: bench_cache_get(m, batch)),
        ("LruTtlCache", "put (with eviction)", lambda m: bench_cache_put(m, batch)),
        ("ResponseParser", "small response (twin: httptools)", lambda m: bench_response_parser(m, batch)),
        ("scan_request_headers", "6 header fields", lambda m: bench_request_scan(m, batch)),
        ("scan_request", "request line + 6 header fields", lambda m: bench_request_line_and_scan(m, batch)),
        ("upstream_request_head", "3 fields + forwarding", lambda m: bench_upstream_request_head(m, batch)),
        ("RequestIds", "next", lambda m: bench_request_ids(m, batch)),
        ("Tally", "record", lambda m: bench_tally(m, batch)),
    ]


def run(quick: bool) -> dict[str, Any]:
    try:
        from fastgw import _core
    except ImportError as exc:
        raise SystemExit(f"fastgw._core is not built ({exc}); run: python setup.py build_ext --inplace") from exc
    # Short batches, many of them: on a shared machine the best batch is the one no other process
    # disturbed, and short ones are more likely to get through undisturbed.
    batch, repeats = (1_000, 40) if quick else (1_000, 300)
    results = []
    for kernel, case, make in cases(batch):
        best = best_ns_per_op({"py": make(_py), "c": make(_core)}, repeats)
        py_ns, c_ns = best["py"], best["c"]
        results.append({"kernel": kernel, "case": case, "py_ns": round(py_ns, 1), "c_ns": round(c_ns, 1),
                        "speedup": round(py_ns / c_ns, 2)})
    by_case = {r["case"]: r for r in results}
    small, large = by_case["match, 10 routes"], by_case["match, 1,000 routes"]
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": quick,
        "batch": batch,
        "repeats": repeats,
        "cases": results,
        "router_scaling": {
            "c_1000_over_10": round(large["c_ns"] / small["c_ns"], 2),
            "py_1000_over_10": round(large["py_ns"] / small["py_ns"], 2),
        },
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| kernel | case | twin (ns/op) | compiled (ns/op) | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for r in report["cases"]:
        lines.append(f"| {r['kernel']} | {r['case']} | {r['py_ns']:.0f} | {r['c_ns']:.0f} | {r['speedup']:.1f}x |")
    s = report["router_scaling"]
    lines += [
        "",
        f"Router, 1,000 routes vs 10 routes: compiled {s['c_1000_over_10']:.2f}x, "
        f"twin {s['py_1000_over_10']:.2f}x the time per lookup (1.00x = no growth).",
        f"Python {report['python']} on {report['machine']}; best of {report['repeats']} batches of "
        f"{report['batch']} operations.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smaller batches, fewer repeats)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    report = run(args.quick)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
