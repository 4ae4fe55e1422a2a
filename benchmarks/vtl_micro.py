"""Micro-benchmark of mapping-template rendering: fastgw's VTL engine against airspeed (LocalStack's).

    python -m benchmarks.vtl_micro            # compiled, pure-Python and airspeed; renders/s and ratios
    python -m benchmarks.vtl_micro --seconds 5 --rounds 10

The template is a typical request template: about ten references ($context, $input.params,
$stageVariables, the body) and a #foreach over ten items with $foreach.hasNext. Each render gets a
fresh $input (as each request does), so the body's JSON is parsed inside the timed loop for every
engine. Both fastgw builds are timed in this process: the compiled renderer (fastgw.vtl._render)
and its pure-Python twin (fastgw.vtl.render), parsed once each.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

TEMPLATE = """#set($body = $input.path('$'))
{
  "requestId": "$context.requestId",
  "stage": "$context.stage",
  "method": "$context.httpMethod",
  "sourceIp": "$context.identity.sourceIp",
  "userAgent": "$context.identity.userAgent",
  "user": "$input.params('user')",
  "backend": "$stageVariables.backend",
  "name": "$body.name",
  "count": $body.items.size(),
  "items": [
#foreach($item in $body.items)
    {"id": $item.id, "name": "$item.name"}#if($foreach.hasNext),#end
#end
  ]
}
"""

BODY = json.dumps({"name": "order-42", "items": [{"id": i, "name": f"item-{i}"} for i in range(10)]})
CONTEXT = {"requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "stage": "prod", "httpMethod": "POST",
           "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"}}
STAGE_VARIABLES = {"backend": "10.0.0.12:8080"}


def _rate(fn: Callable[[], Any], seconds: float) -> float:
    n = 0
    batch = 50
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        t = time.perf_counter()
        if t >= deadline:
            return n / (t - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per engine (default 3)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best one counts (default 5)")
    args = ap.parse_args()

    from fastgw.vtl import UTIL, Input, parser
    from fastgw.vtl import render as py_render

    engines: dict[str, Callable[[], str]] = {}

    def variables(input_class: Any = Input) -> dict[str, Any]:
        return {"input": input_class(BODY, {"id": "42"}, {"user": "alice"}, {"Content-Type": "application/json"}),
                "context": CONTEXT, "stageVariables": STAGE_VARIABLES, "util": UTIL}

    try:
        from fastgw.vtl import _render as c_render

        t_c = parser.compile_with(TEMPLATE, c_render)
        engines["fastgw (compiled)"] = lambda: t_c.render(variables(c_render.Input))
    except ImportError:
        print("fastgw.vtl._render is not built (python setup.py build_ext --inplace): compiled row skipped")
    t_py = parser.compile_with(TEMPLATE, py_render)
    engines["fastgw (pure Python)"] = lambda: t_py.render(variables(py_render.Input))
    try:
        import airspeed

        from fastgw.vtl.types import JavaList

        # As LocalStack does for its own list class: airspeed looks Java methods up by exact type.
        airspeed.__additional_methods__.setdefault(JavaList, airspeed.__additional_methods__[list])
        t_air = airspeed.Template(TEMPLATE)
        engines["airspeed"] = lambda: t_air.merge(variables())
    except ImportError:
        print("airspeed is not installed (pip install airspeed): its row skipped")

    # Every engine must produce the same JSON document (the whitespace differs: airspeed keeps the
    # newline after #end, which Velocity 1.7 and so AWS remove).
    docs = {name: json.loads(fn()) for name, fn in engines.items()}
    for name, doc in docs.items():
        if doc != docs["fastgw (pure Python)"]:
            raise SystemExit(f"{name} renders a different document: {doc}")

    # Rounds interleave the engines and each keeps its best round: the machine is shared, and a busy
    # moment should not land on one engine only.
    rates = dict.fromkeys(engines, 0.0)
    for _ in range(args.rounds):
        for name, fn in engines.items():
            rates[name] = max(rates[name], _rate(fn, args.seconds / args.rounds))
    base = rates.get("airspeed")
    print(f"{'engine':<22} {'renders/s':>12} {'us/render':>10} {'x airspeed':>11}")
    for name, r in rates.items():
        ratio = f"{r / base:10.1f}x" if base else "-"
        print(f"{name:<22} {r:12,.0f} {1e6 / r:10.2f} {ratio:>11}")


if __name__ == "__main__":
    main()
