"""In-process driver of the RSGI app, for deterministic instruction counts of the request path.

    python -m benchmarks.inproc hit 3000                       # N cache hits, no server, no client
    python -m benchmarks.inproc plain 3000 --upstream-port P   # N plain HTTP_PROXY requests to 127.0.0.1:P
    python -m benchmarks.inproc --count hit                    # instructions per request (needs valgrind)

It calls ``RsgiApp.__rsgi__(scope, proto)`` the way granian does, with a stand-in scope (three header
fields) and a protocol object that drops the response, so what it measures is fastgw's Python and
kernel work per request: not granian's Rust side, not the kernel's sockets. ``--count`` runs it
under ``valgrind --tool=callgrind`` twice (300 and 3,300 requests) and divides the difference by
3,000, so start-up cancels out. Scenarios: ``hit`` (the harness's cache-hit route, filled once),
``plain`` (the same route without the cache), ``full`` (API key, usage-plan throttle and quota) and
``jwt`` (``plain`` behind a JWT authorizer, one remembered token: its keys are put in place, no issuer),
``default`` (README.md's first configuration example as written, on whichever interface it compiles
to, with its access log written to /dev/null; benchmarks/readme.py) and ``default-tuned`` (the same
without the access log, as the harness's fastgw-default-tuned; CPU policy does not apply in-process),
``traced`` (``plain`` with OTLP span export at 1 % sampling; the exporter thread is counted too) and
``xray`` (``plain`` on a stage with ``tracingEnabled``: X-Ray and traceparent headers on every request).
Without ``--upstream-port`` a small asyncio upstream runs in the same process (its own cost is then
counted too; give the port of a real upstream such as the harness's nginx for ``plain``/``full``).
docs/PERF.md records what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

KEY = "bench-key-0123456789abcdefghij"
ISSUER = "https://issuer.bench.invalid"


class _Headers:
    def __init__(self, items: list[tuple[str, str]]):
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)  # granian builds a new list per call


class _Scope:
    proto = "http"
    method = "GET"
    path = "/prod/items/42"  # benchmarks/readme.py REQUEST_PATH too
    query_string = ""
    client = "127.0.0.1:50000"
    scheme = "http"
    http_version = "1.1"
    authority = None

    def __init__(self, headers: list[tuple[str, str]]):
        self.headers = _Headers(headers)


class _Receive:
    async def __call__(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}


async def _asgi_send(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise SystemExit(f"the gateway answered {message['status']}")


def _asgi_scope(scope: _Scope) -> dict[str, Any]:
    """granian's ASGI scope for the same request (granian builds it in Rust: not counted)."""
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000), "scheme": "http", "method": scope.method,
            "root_path": "", "path": scope.path, "raw_path": scope.path.encode(), "query_string": b"",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()], "state": {}}


class _Proto:
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if status != 200:
            raise SystemExit(f"the gateway answered {status}: {body[:200]!r}")


def config(scenario: str, port: int, state_dir: str) -> dict[str, Any]:
    route: dict[str, Any] = {"route": "GET /items/{id}",
                             "integration": {"type": "HTTP_PROXY", "uri": f"http://127.0.0.1:{port}/items/{{id}}"}}
    api: dict[str, Any] = {"name": "bench", "type": "REST", "encodedSlashes": "DECODE", "stages": {"prod": {}},
                           "routes": [route]}
    data: dict[str, Any] = {"server": {"port": 8080, "workers": 1, "accessLog": False}, "apis": [api]}
    if scenario == "hit":
        api["stages"]["prod"]["cache"] = {"enabled": True, "capacity": "64MiB", "ttlInSeconds": 3600}
        route["cache"] = {"ttlInSeconds": 3600, "keyParameters": ["method.request.path.id"]}
    elif scenario == "jwt":
        api["authorizers"] = {"main": {"type": "jwt", "jwtConfiguration": {"issuer": ISSUER, "audience": ["bench"]}}}
        route["authorizer"] = "main"
        route["authorizationScopes"] = ["read"]
    elif scenario == "traced":  # `plain` with OTLP export at 1 % sampling (to a port nobody listens on)
        data["server"]["tracing"] = {"otlpEndpoint": "http://127.0.0.1:9/v1/traces", "sampleRate": 0.01}
    elif scenario == "xray":  # `plain` on a stage with tracingEnabled: trace headers on every request
        api["stages"]["prod"]["tracingEnabled"] = True
    elif scenario == "full":
        data["state"] = {"backend": "local", "path": state_dir}
        api["apiKeySource"] = "HEADER"
        api["stages"]["prod"]["throttle"] = {"rateLimit": 1_000_000_000, "burstLimit": 1_000_000_000}
        route["apiKeyRequired"] = True
        data["usagePlans"] = [{"name": "bench", "apiStages": [{"api": "bench", "stage": "prod"}],
                               "throttle": {"rateLimit": 1_000_000_000, "burstLimit": 1_000_000_000},
                               "quota": {"limit": 1_000_000_000, "period": "DAY", "offset": 0}}]
        data["apiKeys"] = [{"name": "bench", "value": KEY, "usagePlans": ["bench"]}]
    return data


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def drive(scenario: str, n: int, upstream_port: int | None) -> None:
    from fastgw.accesslog import AccessLog
    from fastgw.pipeline import Gateway
    from fastgw.runtime import compile_file
    from fastgw.server import GC_THRESHOLD, AsgiApp, RsgiApp

    from .readme import ENV, default_config

    server = await asyncio.start_server(_upstream, "127.0.0.1", 0)
    port = upstream_port or server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="fastgw-inproc-") as work:
        if scenario.startswith("default"):
            os.environ.update(ENV)
            path = os.path.join(work, "gateway.yaml")
            with open(path, "w") as f:
                f.write(default_config(f"127.0.0.1:{port}"))
        else:
            path = os.path.join(work, "gateway.json")
            with open(path, "w") as f:
                json.dump(config(scenario, port, os.path.join(work, "state")), f)
        plan = compile_file(path, {})
        logged = plan.server.accessLog and scenario != "default-tuned"
        access_log = AccessLog(os.open(os.devnull, os.O_WRONLY)) if logged else None
        gateway = Gateway(plan, access_log)
        loop = asyncio.get_running_loop()
        headers = [("host", "127.0.0.1:8080"), ("user-agent", "wrk"), ("accept", "*/*")]
        if scenario == "full":
            headers.append(("x-api-key", KEY))
        if scenario == "jwt":
            headers.append(("authorization", "Bearer " + _jwt_token()))
        scope = _Scope(headers)
        if plan.interface == "rsgi":
            app = RsgiApp(gateway)
            app.__rsgi_init__(loop)
            proto = _Proto()
            callback = app.__rsgi__  # read once, as granian does (granian/rsgi.py _callbacks_from_target)

            def one() -> Any:
                return callback(scope, proto)
        else:
            asgi = AsgiApp(gateway)
            gateway.start(loop)
            asgi_scope, receive = _asgi_scope(scope), _Receive()

            def one() -> Any:
                return asgi(asgi_scope, receive, _asgi_send)
        # as the worker does at start (fastgw/server.py load_app)
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        try:
            started = time.perf_counter()
            for _ in range(n):
                await one()
            elapsed = time.perf_counter() - started
            if os.environ.get("FASTGW_INPROC_TIME"):
                print(f"{scenario} ({plan.interface}): {elapsed / n * 1e6:.1f} µs per request ({n} requests)")
        finally:
            gateway.stop()
            server.close()


def _jwt_token() -> str:
    """A token of a fresh key, whose JWKS is put in this process's key set (no issuer is contacted)."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from fastgw.policies.authorizers.jwt import key_set

    private = ec.generate_private_key(ec.SECP256R1())  # an RSA key's generation time varies too much for --count
    jwk = {**json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(private.public_key())), "kid": "bench"}
    keys = key_set(ISSUER, None)
    keys.keys = {"bench": jwk}
    keys.fetched_at = time.monotonic()
    claims = {"iss": ISSUER, "aud": "bench", "sub": "bench-user", "scope": "read", "exp": int(time.time()) + 3600}
    return pyjwt.encode(claims, private, algorithm="ES256", headers={"kid": "bench"})


def count(scenario: str, upstream_port: int | None) -> int:
    def instructions(n: int) -> int:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
               "benchmarks.inproc", scenario, str(n)]
        if upstream_port:
            cmd += ["--upstream-port", str(upstream_port)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
        found = re.search(r"Collected : (\d+)", out)
        if found is None:
            raise SystemExit(f"no instruction count in valgrind's output:\n{out[-2000:]}")
        return int(found.group(1))

    return (instructions(3300) - instructions(300)) // 3000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=("hit", "plain", "full", "jwt", "default", "default-tuned", "traced", "xray"))
    ap.add_argument("n", type=int, nargs="?", default=3000, help="requests (default 3000)")
    ap.add_argument("--upstream-port", type=int, help="a real upstream on 127.0.0.1 (default: one in-process)")
    ap.add_argument("--count", action="store_true", help="instructions per request under callgrind")
    args = ap.parse_args()
    if args.count:
        print(f"{args.scenario}: {count(args.scenario, args.upstream_port):,} instructions per request")
        return
    import uvloop

    uvloop.run(drive(args.scenario, args.n, args.upstream_port))


if __name__ == "__main__":
    main()
