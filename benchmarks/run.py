"""The benchmark harness: the scenario table and the run.

    python -m benchmarks                      # full run: 3 interleaved repetitions x 10 s, 3 body sizes
    python -m benchmarks --quick              # 1 x 1 s, 13-byte body only (CI: proves it works end to end)
    python -m benchmarks --only nginx,fastgw-plain --bodies 13,64k

Pinning (as in the anchor measurements): wrk and the fixed upstream share core 0; the contender under
test has core 1 to itself. Every server binds 127.0.0.1 and every load run is bounded (`wrk -d`).
To add a scenario, add a row to CONTENDERS (a fastgw scenario is a config builder plus the path to load).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from . import jwt_bench, measure, peers, readme, report, tools

BENCH_DIR, REPO_ROOT = tools.BENCH_DIR, tools.REPO_ROOT


# ---------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Body:
    key: str  # as given to --bodies
    path: str  # on the fixed upstream
    size: int
    label: str


BODIES: dict[str, Body] = {
    b.key: b
    for b in (
        Body("13", "/", 13, "13 B"),
        Body("1k", "/json", 1024, "1 KiB"),
        Body("64k", "/big", 65536, "64 KiB"),
    )
}


@dataclass(frozen=True)
class Check:
    """An extra check made before timing, proving that a scenario does what it claims."""

    what: str
    path: str
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)


ConfigBuilder = Callable[[str], "dict[str, Any] | str"]  # upstream base URL -> fastgw config (data or YAML text)


@dataclass(frozen=True)
class Contender:
    name: str  # the --only name
    label: str  # the table label
    kind: str  # nginx-proxy | haproxy | caddy | granian-hello | granian-floor | fastgw | direct
    bodies: tuple[str, ...] = ("13", "1k", "64k")
    paths: Mapping[str, str] = field(default_factory=dict)  # body key -> request path, if not the upstream's
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with every request (checks and wrk)
    config: ConfigBuilder | None = None  # fastgw scenarios
    checks: tuple[Check, ...] = ()
    upstream_share: str = "all"  # "all": every request must reach the upstream; "none": none may (cache hit)
    sizes: Mapping[str, int | None] = field(default_factory=dict)  # body key -> expected length (None: any)
    later_issue: int | None = None  # the issue that brings the features the config needs
    default: bool = True  # part of a run without --only
    note: str = ""
    dashboard: bool = False  # the admin dashboard is open (polled every 2 s) during the timed runs
    tuned: bool = True  # fastgw: served with --no-access-log --cpu-scheduling batch (False: as the file says)
    env: Mapping[str, str] = field(default_factory=dict)  # fastgw: environment the config needs
    redis_cluster: bool = False  # needs the harness's Redis Cluster (6 redis-server on the load side)

    def path_for(self, body: str) -> str:
        return self.paths.get(body, BODIES[body].path)


BENCH_API_KEY = "bench-key-0123456789abcdefghij"  # 30 characters (AWS: 20-128)
ROUTES = (("GET /", "/"), ("GET /json", "/json"), ("GET /big", "/big"))


def plain_config(upstream: str, rsgi: bool = True) -> dict[str, Any]:
    """HTTP API, $default stage (no prefix), one HTTP_PROXY route per body plus a path-parameter route."""
    api: dict[str, Any] = {"name": "bench", "type": "HTTP"}
    if rsgi:
        api["encodedSlashes"] = "DECODE"  # nginx-like %2F handling: lets fastgw use granian's RSGI
    api["stages"] = {"$default": {}}
    api["routes"] = [
        {"route": route, "integration": {"type": "HTTP_PROXY", "uri": upstream + path}} for route, path in ROUTES
    ] + [{"route": "GET /items/{id}", "integration": {"type": "HTTP_PROXY", "uri": upstream + "/"}}]
    return {"server": {"port": 8080, "workers": 1, "adminPort": 9901}, "apis": [api]}


def plain_asgi_config(upstream: str) -> dict[str, Any]:
    return plain_config(upstream, rsgi=False)


def traced_config(upstream: str) -> dict[str, Any]:
    """The plain route with OpenTelemetry export at 1 % sampling (issue 17's cost target): spans go to the
    upstream nginx, which answers the POST (405) as cheaply as a collector would take it."""
    config = plain_config(upstream)
    config["server"]["tracing"] = {"otlpEndpoint": upstream + "/v1/traces", "sampleRate": 0.01}
    return config


def full_config(upstream: str) -> dict[str, Any]:
    """The full gateway path: path parameter, API key, usage-plan throttle and quota, metrics (always on)."""
    return {
        "server": {"port": 8080, "workers": 1, "adminPort": 9901},
        "state": {"backend": "local", "path": ".fastgw-state"},
        "apis": [{
            "name": "bench",
            "type": "REST",
            "encodedSlashes": "DECODE",
            "apiKeySource": "HEADER",
            "stages": {"prod": {"throttle": {"rateLimit": 1_000_000_000, "burstLimit": 1_000_000_000}}},
            "routes": [{
                "route": "GET /items/{id}",
                "apiKeyRequired": True,
                "integration": {"type": "HTTP_PROXY", "uri": upstream + "/items/{id}"},
            }],
        }],
        "usagePlans": [{
            "name": "bench",
            "apiStages": [{"api": "bench", "stage": "prod"}],
            "throttle": {"rateLimit": 1_000_000_000, "burstLimit": 1_000_000_000},
            "quota": {"limit": 1_000_000_000, "period": "DAY", "offset": 0},
        }],
        "apiKeys": [{"name": "bench", "value": BENCH_API_KEY, "usagePlans": ["bench"]}],
    }


def readme_config(upstream: str) -> str:
    """README.md's first configuration example as written (benchmarks/readme.py), on the harness's upstream."""
    return readme.default_config(upstream.removeprefix("http://"))


REDIS_CLUSTER_URLS: list[str] = []  # the harness's Redis Cluster nodes, once started (Harness.start_redis_cluster)


def full_redis_cluster_config(upstream: str) -> dict[str, Any]:
    """The full path with its state on a Redis Cluster: two Lua calls per request (the stage's
    throttle under `{g}`, then the key's plan throttle and quota under `{k:<id>}`)."""
    config = full_config(upstream)
    urls = REDIS_CLUSTER_URLS or ["redis://127.0.0.1:1/0"]
    config["state"] = {"backend": "redis", "cluster": True, "url": urls[0],
                       "seeds": [u.removeprefix("redis://").removesuffix("/0") for u in urls[1:3]],
                       "path": ".fastgw-state-cluster", "timeoutMillis": 200}
    return config


def cache_hit_config(upstream: str) -> dict[str, Any]:
    """A stage cache in front of a path-parameter route; every timed request is a hit."""
    return {
        "server": {"port": 8080, "workers": 1, "adminPort": 9901},
        "apis": [{
            "name": "bench",
            "type": "REST",
            "encodedSlashes": "DECODE",
            "stages": {"prod": {"cache": {"enabled": True, "capacity": "64MiB", "ttlInSeconds": 3600}}},
            "routes": [{
                "route": "GET /items/{id}",
                "cache": {"ttlInSeconds": 3600, "keyParameters": ["method.request.path.id"]},
                "integration": {"type": "HTTP_PROXY", "uri": upstream + "/items/{id}"},
            }],
        }],
    }


# A typical response mapping template: about ten references and a #foreach over the 1 KiB
# document's items (the shape of AWS's PetStore transform).
MAPPING_TEMPLATE = """#set($root = $input.path('$'))
{"requestId": "$context.requestId", "item": "$input.params('id')", "stage": "$context.stage",
 "count": $root.items.size(),
 "items": [#foreach($item in $root.items){"id": $item.id, "label": "$util.escapeJavaScript($item.name)", \
"cost": $item.price, "tag": "$item.tags[0]"}#if($foreach.hasNext),#end#end]}
"""


def mapping_config(upstream: str) -> dict[str, Any]:
    """A REST non-proxy HTTP integration: a request parameter mapping and a response mapping template."""
    return {
        "server": {"port": 8080, "workers": 1, "adminPort": 9901},
        "apis": [{
            "name": "bench",
            "type": "REST",
            "encodedSlashes": "DECODE",
            "stages": {"prod": {}},
            "routes": [{
                "route": "GET /items/{id}",
                "integration": {
                    "type": "HTTP", "uri": upstream + "/json", "httpMethod": "GET",
                    "requestParameters": {"integration.request.header.x-item": "method.request.path.id"},
                    "responses": {"default": {"statusCode": "200",
                                              "responseTemplates": {"application/json": MAPPING_TEMPLATE}}},
                },
            }],
        }],
    }


def function_config(upstream: str, handler: str = "hello") -> dict[str, Any]:
    """A FUNCTION integration (Lambda proxy, payload 2.0): a Python handler answers, no upstream."""
    return {
        "server": {"port": 8080, "workers": 1, "adminPort": 9901},
        "functions": {"hello": {"handler": f"lambda_app:{handler}", "codeUri": str(BENCH_DIR)}},
        "apis": [{
            "name": "bench",
            "type": "HTTP",
            "encodedSlashes": "DECODE",
            "stages": {"$default": {}},
            "routes": [{"route": "GET /hello", "integration": {"type": "FUNCTION", "uri": "hello"}}],
        }],
    }


def function_async_config(upstream: str) -> dict[str, Any]:
    return function_config(upstream, "hello_async")


def lambda_auth_config(upstream: str) -> dict[str, Any]:
    """The plain scenario's routes behind a Lambda REQUEST authorizer whose result is cached (300 s): the
    authorizer runs once, every timed request is a cache hit of the worker's memory."""
    config = plain_config(upstream)
    api = config["apis"][0]
    config["functions"] = {"authorize": {"handler": "lambda_app:authorize", "codeUri": str(BENCH_DIR)}}
    api["authorizers"] = {"bench": {
        "type": "request", "authorizerUri": "authorize", "identitySource": ["$request.header.Authorization"],
        "authorizerPayloadFormatVersion": "2.0", "enableSimpleResponses": True,
        "authorizerResultTtlInSeconds": 300}}
    for route in api["routes"]:
        route["authorizer"] = "bench"
    return config


AUTH_HEADER = {"authorization": "Bearer bench-token"}


class JwtHeader(Mapping[str, str]):
    """The JWT scenario's Authorization header, made when first read (the key is made per run)."""

    def _value(self) -> dict[str, str]:
        return {"authorization": "Bearer " + jwt_bench.token()}

    def __getitem__(self, key: str) -> str:
        return self._value()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value())

    def __len__(self) -> int:
        return 1


def jwt_auth_config(upstream: str) -> dict[str, Any]:
    """The plain scenario's routes behind a JWT authorizer (RS256; keys from the upstream's JWKS): the
    token's signature is checked once per worker, then every request is a remembered token."""
    config = plain_config(upstream)
    api = config["apis"][0]
    api["authorizers"] = {"bench": {
        "type": "jwt", "identitySource": ["$request.header.Authorization"],
        "jwtConfiguration": {"issuer": jwt_bench.ISSUER, "audience": [jwt_bench.AUDIENCE]},
        "jwksUri": upstream + jwt_bench.JWKS_PATH}}
    for route in api["routes"]:
        route["authorizer"] = "bench"
        route["authorizationScopes"] = ["read"]
    return config

CONTENDERS: tuple[Contender, ...] = (
    Contender("nginx", "nginx proxy", "nginx-proxy"),
    Contender("haproxy", "HAProxy", "haproxy"),
    Contender("caddy", "Caddy (GOMAXPROCS=1)", "caddy"),
    Contender("granian", "granian RSGI app, no upstream (ceiling)", "granian-hello", upstream_share="none"),
    Contender("floor", "granian + C upstream protocol, no gateway logic (floor)", "granian-floor"),
    Contender("fastgw-plain", "fastgw plain HTTP_PROXY (RSGI)", "fastgw", config=plain_config,
              checks=(Check("unknown route is 404", "/no/such/route", 404),)),
    Contender("fastgw-plain-asgi", "fastgw plain HTTP_PROXY (ASGI)", "fastgw", config=plain_asgi_config,
              checks=(Check("unknown route is 404", "/no/such/route", 404),)),
    # README.md's first example exactly as a new user runs it (access log on, default CPU policy, the
    # interface `auto` picks), and the same file served with the documented fast settings (issue 18)
    Contender("fastgw-default", "fastgw default config (README's first example, as written)", "fastgw",
              bodies=("13",), paths={"13": readme.REQUEST_PATH}, config=readme_config, tuned=False, env=readme.ENV,
              checks=(Check("unknown route is 404", "/prod/no/such/route", 404),)),
    Contender("fastgw-default-tuned", "fastgw README example, tuned (no access log, cpuScheduling batch)", "fastgw",
              bodies=("13",), paths={"13": readme.REQUEST_PATH}, config=readme_config, env=readme.ENV),
    Contender("fastgw-full", "fastgw full path (param + API key + throttle + quota + metrics)", "fastgw",
              bodies=("13",), paths={"13": "/prod/items/42"}, headers={"x-api-key": BENCH_API_KEY},
              config=full_config, later_issue=4,
              checks=(Check("no API key is 403", "/prod/items/42", 403, {"x-api-key": ""}),
                      Check("wrong API key is 403", "/prod/items/42", 403, {"x-api-key": "x" * 30}))),
    Contender("fastgw-full-redis-cluster", "fastgw full path, state on a 6-node Redis Cluster (load side's core)",
              "fastgw", bodies=("13",), paths={"13": "/prod/items/42"}, headers={"x-api-key": BENCH_API_KEY},
              config=full_redis_cluster_config, later_issue=19, default=False, redis_cluster=True,
              checks=(Check("no API key is 403", "/prod/items/42", 403, {"x-api-key": ""}),)),
    Contender("fastgw-cache-hit", "fastgw cache hit", "fastgw", bodies=("13",),
              paths={"13": "/prod/items/42"}, config=cache_hit_config, upstream_share="none", later_issue=5),
    Contender("fastgw-mapping", "fastgw HTTP integration with a response mapping template (1 KiB JSON in)",
              "fastgw", bodies=("1k",), paths={"1k": "/prod/items/42"}, sizes={"1k": None}, config=mapping_config,
              later_issue=7),
    Contender("fastgw-function", "fastgw FUNCTION (sync Python handler, payload 2.0)", "fastgw", bodies=("13",),
              paths={"13": "/hello"}, config=function_config, upstream_share="none", later_issue=6),
    Contender("fastgw-function-async", "fastgw FUNCTION (async Python handler, payload 2.0)", "fastgw",
              bodies=("13",), paths={"13": "/hello"}, config=function_async_config, upstream_share="none",
              later_issue=6, default=False),
    Contender("fastgw-lambda-auth", "fastgw plain HTTP_PROXY behind a Lambda authorizer (cached result)", "fastgw",
              bodies=("13",), headers=AUTH_HEADER, config=lambda_auth_config, later_issue=15,
              checks=(Check("no token is 401", "/", 401, {"authorization": ""}),
                      Check("a wrong token is 403", "/", 403, {"authorization": "Bearer nope"}))),
    Contender("fastgw-jwt-auth", "fastgw plain HTTP_PROXY behind a JWT authorizer (RS256, remembered token)",
              "fastgw", bodies=("13",), headers=JwtHeader(), config=jwt_auth_config, later_issue=15,
              checks=(Check("no token is 401", "/", 401, {"authorization": ""}),
                      Check("a forged token is 401", "/", 401, {"authorization": "Bearer a.b.c"}))),
    Contender("fastgw-traced", "fastgw plain HTTP_PROXY (RSGI), OTLP export at 1 % sampling", "fastgw",
              bodies=("13",), config=traced_config, later_issue=17, default=False),
    Contender("fastgw-plain-dashboard", "fastgw plain HTTP_PROXY (RSGI), dashboard open (polled every 2 s)",
              "fastgw", bodies=("13",), config=plain_config, dashboard=True, later_issue=21, default=False),
    Contender("direct", "upstream nginx served directly on core 1 (reference)", "direct",
              upstream_share="none", default=False),
)

READY_TIMEOUT = 30.0  # seconds a server may take to answer its first request
FOREIGN_LOAD_FLAG = 0.05  # share of the contender's core used by anything else: the run is marked

KIND_PROGRAMS: dict[str, str] = {
    "nginx-proxy": "nginx", "haproxy": "haproxy", "caddy": "caddy", "direct": "nginx",
}


# ---------------------------------------------------------------------------------------- options
@dataclass
class Options:
    contenders: list[Contender]
    bodies: list[str]
    reps: int
    duration: float
    warmup: float
    connections: int
    quiet_wait: float
    retries: int
    quick: bool
    install: bool
    out_root: Path
    fastgw: str | None
    granian: str | None
    strict: bool
    chart: bool
    argv: list[str]
    cores: int = 1


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="fastgw against nginx, HAProxy, Caddy and a bare granian app, one core each.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition of 1 s, 0.5 s warm-up, 13-byte body only (the CI smoke run)")
    parser.add_argument("--only", metavar="NAME,...",
                        help="contenders to run (names or globs, e.g. nginx,fastgw-*); see --list")
    parser.add_argument("--bodies", metavar="13,1k,64k", help="body sizes (default: all; --quick: 13)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3; --quick: 1)")
    parser.add_argument("--duration", type=float, help="seconds per timed run (default 10; --quick: 1)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per cell (default 2; --quick: 0.5)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--cores", type=int, default=1, metavar="N",
                        help="give each contender N cores and N workers (nginx/granian/fastgw workers, HAProxy "
                             "threads, GOMAXPROCS), and the load side (wrk threads, upstream nginx workers) N "
                             "others: needs 2N CPUs (default 1)")
    parser.add_argument("--quiet-wait", type=float, metavar="SECONDS",
                        help="before each timed run, wait up to this long for other processes to leave the "
                             "cores idle (default 30; --quick: 0)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out",
                        help="results go to OUT/<timestamp>/ (default benchmarks/out)")
    parser.add_argument("--fastgw", help="the fastgw program (default: next to this Python, then "
                                         ".venv/bin/fastgw, then PATH)")
    parser.add_argument("--granian", help="the granian program for the ceiling app (default: fastgw's venv)")
    parser.add_argument("--retries", type=int, metavar="N",
                        help="repeat a run during which other processes used the cores, up to N times; the "
                             "discarded runs stay in results.json (default 2; --quick: 0)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install missing programs")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a fastgw contender (or the floor) fails its checks or a run of it has "
                             "non-2xx answers or connection errors; never on a timing or a peer's problem")
    parser.add_argument("--list", action="store_true", help="list the contenders and exit")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="only write DIR/results.md and chart.png again from DIR/results.json")
    args = parser.parse_args(argv)

    if args.report:
        if not (args.report / "results.json").is_file():
            parser.error(f"{args.report}/results.json does not exist")
        for path in report.rerender(args.report, chart_too=not args.no_chart).values():
            print(path)
        raise SystemExit(0)

    if args.list:
        for c in CONTENDERS:
            default = "" if c.default else "  (only with --only)"
            print(f"{c.name:20s} {c.label}; bodies {','.join(c.bodies)}{default}")
        raise SystemExit(0)

    if args.only:
        patterns = [p.strip() for p in args.only.split(",") if p.strip()]
        unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(c.name, p) for c in CONTENDERS)]
        if unknown:
            parser.error(f"unknown contender(s): {', '.join(unknown)}; known: "
                         + ", ".join(c.name for c in CONTENDERS))
        chosen = [c for c in CONTENDERS if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    else:
        chosen = [c for c in CONTENDERS if c.default]

    if args.bodies:
        bodies = [b.strip().lower() for b in args.bodies.split(",") if b.strip()]
        bad = [b for b in bodies if b not in BODIES]
        if bad:
            parser.error(f"unknown body size(s): {', '.join(bad)}; known: {', '.join(BODIES)}")
    else:
        bodies = ["13"] if args.quick else list(BODIES)

    for name in ("reps", "connections", "cores"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    return Options(
        contenders=chosen,
        bodies=bodies,
        reps=args.reps or (1 if args.quick else 3),
        duration=args.duration or (1.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0),
        connections=args.connections,
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 30.0),
        retries=args.retries if args.retries is not None else (0 if args.quick else 2),
        quick=args.quick,
        install=not args.no_install,
        out_root=args.out,
        fastgw=args.fastgw,
        granian=args.granian,
        strict=args.strict,
        chart=not args.no_chart,
        argv=list(argv) if argv is not None else sys.argv[1:],
        cores=args.cores,
    )


# ---------------------------------------------------------------------------------------- state
@dataclass
class Status:
    """What happened to a contender: ok, skipped (a program is missing), unavailable (not built yet),
    failed (it did not start or answered wrongly)."""

    state: str = "ok"
    reason: str = ""
    interface: str | None = None  # fastgw: what `fastgw validate` reported
    config: str | None = None
    checks: list[str] = field(default_factory=list)
    failed_bodies: dict[str, str] = field(default_factory=dict)


@dataclass
class Cell:
    contender: Contender
    body: str
    url: str
    server: measure.Server


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()

    def peek(self) -> str:
        return f"[{self.done + 1:>3}/{self.total}  eta ?]"

    def step(self) -> str:
        self.done += 1
        elapsed = time.monotonic() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        return f"[{self.done:>3}/{self.total}  eta {_fmt_secs(left)}]"


def _fmt_secs(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------- the run
class Harness:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = opts.out_root / stamp
        suffix = 1
        while self.out.exists():
            suffix += 1
            self.out = opts.out_root / f"{stamp}-{suffix}"
        self.work = self.out / "work"
        self.status: dict[str, Status] = {c.name: Status() for c in opts.contenders}
        self.runs: list[dict[str, Any]] = []
        self.versions: dict[str, str | None] = {}
        self.tools = tools.Toolbox()
        self.fastgw_bin: str | None = None
        self.fastgw_python: str | None = None
        self.granian_bin: str | None = None
        self.floor_dir: Path | None = None
        self.admin_ports: dict[str, int] = {}
        # wrk and the upstream on the first N CPUs, the contender on the next N (N = --cores)
        n = opts.cores
        self.load_cpus: str | None = ",".join(str(cpu) for cpu in range(n))
        self.subject_cpus: str | None = ",".join(str(cpu) for cpu in range(n, 2 * n))

    # -- set-up --------------------------------------------------------------------------------
    def prepare(self) -> bool:
        """Find or install every program; False when the harness itself cannot run."""
        if (os.cpu_count() or 1) < 2 * self.opts.cores:
            if self.opts.cores > 1:
                say(f"error: --cores {self.opts.cores} needs {2 * self.opts.cores} CPUs; this machine has "
                    f"{os.cpu_count()}")
                return False
            say("warning: fewer than 2 CPUs: nothing is pinned, the figures are not comparable")
            self.load_cpus = self.subject_cpus = None
        wanted = ["wrk", "nginx"] + (["taskset"] if self.load_cpus else [])
        wanted += [KIND_PROGRAMS[c.kind] for c in self.opts.contenders if c.kind in KIND_PROGRAMS]
        self.tools = tools.ensure_programs(wanted, self.opts.install, lambda m: say("  " + m))
        for name in ("wrk", "nginx", "taskset"):
            if name in wanted and self.tools.get(name) is None:
                say(f"error: {name} is required and {self.tools.missing.get(name, 'missing')}")
                return False
        for name, path in self.tools.paths.items():
            if name != "taskset":
                self.versions[name] = tools.program_version(name, path)
        for c in self.opts.contenders:
            program = KIND_PROGRAMS.get(c.kind)
            if program and self.tools.get(program) is None:
                self._skip(c, f"{program} {self.tools.missing.get(program, 'missing')}")
        if any(c.kind == "fastgw" for c in self.opts.contenders):
            self._find_fastgw()
        if any(c.kind in ("granian-hello", "granian-floor") for c in self.opts.contenders):
            self._find_granian()
        if any(c.kind == "granian-floor" for c in self.opts.contenders):
            self._build_floor()
        return True

    def _skip(self, c: Contender, reason: str, state: str = "skipped") -> None:
        status = self.status[c.name]
        status.state, status.reason = state, reason
        say(f"  {state}: {c.name}: {reason}")

    def _find_fastgw(self) -> None:
        candidates = [self.opts.fastgw] if self.opts.fastgw else [
            str(Path(sys.executable).parent / "fastgw"), str(REPO_ROOT / ".venv" / "bin" / "fastgw"),
            tools.which("fastgw"),
        ]
        problem = "fastgw is not installed (make the venv: scripts/bootstrap.sh, or pass --fastgw)"
        for cand in candidates:
            if not cand or not os.access(cand, os.X_OK):
                continue
            result = subprocess.run([cand, "--version"], capture_output=True, text=True, timeout=60)
            if result.returncode == 0:
                self.fastgw_bin = cand
                self.versions["fastgw"] = result.stdout.strip().removeprefix("fastgw ")
                break
            problem = f"`{cand} --version` failed: {_last_line(result.stderr or result.stdout)}"
        if self.fastgw_bin is None:
            for c in self.opts.contenders:
                if c.kind == "fastgw":
                    self._skip(c, problem)
            return
        say(f"  fastgw: {self.fastgw_bin} ({self.versions['fastgw']})")
        python = Path(self.fastgw_bin).parent / "python"
        self.fastgw_python = str(python) if os.access(python, os.X_OK) else None
        self.versions["fastgw_git_sha"] = tools.git_sha()
        if self.fastgw_python:
            self.versions["fastgw._accel.IMPL"] = tools.fastgw_accel_impl(self.fastgw_python)
            for package in ("granian", "uvloop", "httptools", "orjson"):
                self.versions[f"{package} (fastgw venv)"] = tools.python_package_version(self.fastgw_python, package)

    def _find_granian(self) -> None:
        candidates = [self.opts.granian] if self.opts.granian else [
            str(Path(self.fastgw_bin).parent / "granian") if self.fastgw_bin else None,
            str(Path(sys.executable).parent / "granian"), str(REPO_ROOT / ".venv" / "bin" / "granian"),
            tools.which("granian"),
        ]
        for cand in candidates:
            if cand and os.access(cand, os.X_OK):
                self.granian_bin = cand
                python = Path(cand).parent / "python"
                version = tools.python_package_version(str(python), "granian") if python.exists() else None
                self.versions["granian"] = version or tools.program_version("granian", cand)
                return
        for c in self.opts.contenders:
            if c.kind in ("granian-hello", "granian-floor"):
                self._skip(c, "granian is not installed (pip install granian uvloop, or pass --granian)")

    def _build_floor(self) -> None:
        """The floor app is compiled with the Cython of granian's interpreter (it imports fastgw._core)."""
        python = Path(self.granian_bin).parent / "python" if self.granian_bin else None
        floor = [c for c in self.opts.contenders if c.kind == "granian-floor" and self.status[c.name].state == "ok"]
        if not floor:
            return
        if python is None or not python.exists():
            reason = "no Python interpreter next to granian to build it with"
        else:
            say("  building the floor app (benchmarks/floor_app.pyx) with Cython")
            self.floor_dir, reason = tools.build_floor_app(str(python), self.work)
        for c in floor:
            if self.floor_dir is None:
                self._skip(c, reason)

    def start_redis_cluster(self, servers: measure.ServerSet) -> None:
        """6 redis-server in cluster mode (3 masters, 3 replicas) on the load side's core(s), stopped by
        PID with the other servers; a contender that needs it is skipped when it cannot be made."""
        wanted = [c for c in self.opts.contenders if c.redis_cluster]
        server, cli = tools.which("redis-server"), tools.which("redis-cli")
        if not server or not cli:
            for c in wanted:
                self._skip(c, "redis-server/redis-cli not installed (apt-get install redis-server)")
            return
        ports = []
        while len(ports) < 6:
            port = measure.free_port()
            if port < 55535 and port not in ports:
                ports.append(port)
        try:
            for port in ports:
                folder = self.work / f"redis-{port}"
                folder.mkdir(parents=True, exist_ok=True)
                servers.start(f"redis-{port}", [server, "--port", str(port), "--bind", "127.0.0.1",
                                                "--dir", str(folder), "--cluster-enabled", "yes",
                                                "--cluster-node-timeout", "2000", "--save", "", "--appendonly",
                                                "no", "--logfile", "redis.log"], port, self.load_cpus)
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas",
                            "1", "--cluster-yes"], capture_output=True, text=True, timeout=60, check=True)
            deadline = time.monotonic() + 30
            while True:
                states = [subprocess.run([cli, "-p", str(p), "cluster", "info"], capture_output=True, text=True,
                                         timeout=5).stdout for p in ports]
                if all("cluster_state:ok" in state for state in states):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok in 30 s")
                time.sleep(0.1)
        except (measure.ServerError, subprocess.SubprocessError, RuntimeError) as exc:
            for c in wanted:
                self._skip(c, f"the Redis Cluster did not start: {exc}", state="failed")
            return
        REDIS_CLUSTER_URLS[:] = [f"redis://127.0.0.1:{p}/0" for p in ports]
        say(f"  redis cluster: 6 nodes on 127.0.0.1:{','.join(map(str, ports))}, core {self.load_cpus}")

    def validate_fastgw(self) -> None:
        """Write each fastgw scenario's config; a config `fastgw validate` rejects is not run."""
        assert self.fastgw_bin is not None
        for c in self.opts.contenders:
            if c.kind != "fastgw" or self.status[c.name].state != "ok" or c.config is None:
                continue
            path = self.work / f"fastgw-{c.name}.yaml"
            config = c.config(f"http://127.0.0.1:{self.upstream_port}")
            comment = f"benchmark scenario {c.name}: {c.label}\nwritten by python -m benchmarks"
            if isinstance(config, str):
                path.write_text("".join(f"# {line}\n" for line in comment.splitlines()) + config)
            else:
                peers.write_yaml(path, config, comment=comment)
            self.status[c.name].config = path.read_text()
            result = subprocess.run([self.fastgw_bin, "validate", str(path)], capture_output=True, text=True,
                                    timeout=60, cwd=self.work, env={**os.environ, **c.env})
            if result.returncode == 0:
                out = result.stdout.strip()
                self.status[c.name].interface = out.rsplit("interface ", 1)[-1].rstrip(")") if "interface " in out \
                    else None
                say(f"  fastgw validate {c.name}: {out}")
                continue
            message = (result.stderr or result.stdout).strip()
            if result.returncode == 2 and c.later_issue is not None:
                self._skip(c, f"needs issue {c.later_issue}; `fastgw validate` rejects the config: "
                              + _first_problem(message), state="unavailable")
            else:
                self._skip(c, f"`fastgw validate` failed (exit {result.returncode}): {_first_problem(message)}",
                           state="failed")

    # -- servers -------------------------------------------------------------------------------
    def launch(self, c: Contender, port: int) -> peers.Launch:
        nginx = self.tools.get("nginx") or "nginx"
        workers = self.opts.cores
        if c.kind == "nginx-proxy":
            return peers.nginx_proxy(nginx, self.work, port, self.upstream_port, workers)
        if c.kind == "direct":
            return peers.nginx_upstream(nginx, self.work, "direct", port)
        if c.kind == "haproxy":
            return peers.haproxy(self.tools.get("haproxy") or "haproxy", self.work, port, self.upstream_port, workers)
        if c.kind == "caddy":
            return peers.caddy(self.tools.get("caddy") or "caddy", self.work, port, self.upstream_port, workers)
        if c.kind == "granian-hello":
            assert self.granian_bin is not None
            return peers.granian_hello(self.granian_bin, port, workers)
        if c.kind == "granian-floor":
            assert self.granian_bin is not None and self.floor_dir is not None
            return peers.granian_floor(self.granian_bin, port, self.floor_dir, self.upstream_port, workers)
        if c.kind == "fastgw":
            assert self.fastgw_bin is not None
            self.admin_ports[c.name] = measure.free_port()
            return peers.fastgw_serve(self.fastgw_bin, self.work / f"fastgw-{c.name}.yaml", port,
                                      self.admin_ports[c.name], workers, c.tuned, c.env)
        raise ValueError(f"unknown contender kind {c.kind!r}")

    def start_contenders(self, servers: measure.ServerSet) -> dict[str, measure.Server]:
        started = {}
        for c in self.opts.contenders:
            if self.status[c.name].state != "ok":
                continue
            port = measure.free_port()
            launch = self.launch(c, port)
            say(f"  start {c.name} on 127.0.0.1:{port}, core {self.subject_cpus}")
            try:
                started[c.name] = servers.start(c.name, launch.cmd, port, self.subject_cpus, env=launch.env,
                                                cwd=launch.cwd)
            except measure.ServerError as exc:
                self._skip(c, f"did not start: {exc}", state="failed")
        return started

    def check(self, c: Contender, server: measure.Server) -> list[str]:
        """Status and body length of every endpoint before timing; the bodies that pass."""
        status = self.status[c.name]
        passed = []
        for body in self.opts.bodies:
            if body not in c.bodies:
                continue
            result = measure.http_get(server.port, c.path_for(body), c.headers)
            deadline = time.monotonic() + READY_TIMEOUT
            while result.error and time.monotonic() < deadline:  # workers may still be starting
                time.sleep(0.5)
                result = measure.http_get(server.port, c.path_for(body), c.headers)
            size = c.sizes.get(body, BODIES[body].size)
            ok = result.ok(200, size)
            status.checks.append(("ok  " if ok else "BAD ") + result.describe())
            if ok:
                passed.append(body)
                say(f"  check {c.name} {BODIES[body].label}: {result.status}, {result.length} B ok")
            else:
                status.failed_bodies[body] = f"check failed: {result.describe()} (want 200, {size} B)"
                say(f"  check FAILED {c.name} {BODIES[body].label}: {result.describe()}")
        for extra in c.checks:
            headers = {**c.headers, **extra.headers}
            headers = {k: v for k, v in headers.items() if v != ""}  # "" removes a default header
            result = measure.http_get(server.port, extra.path, headers)
            ok = result.ok(extra.status, None)
            status.checks.append(("ok  " if ok else "BAD ") + f"{extra.what}: {result.describe()}")
            if ok:
                say(f"  check {c.name} {extra.what}: ok")
            if not ok:
                reason = f"check failed: {extra.what}: {result.describe()}"
                status.failed_bodies.update({b: reason for b in passed})
                say(f"  check FAILED {c.name}: {extra.what}: {result.describe()}")
                return []
        return passed

    # -- measuring -----------------------------------------------------------------------------
    def cells(self, started: Mapping[str, measure.Server]) -> list[Cell]:
        cells = []
        for c in self.opts.contenders:
            server = started.get(c.name)
            if server is None:
                continue
            for body in self.check(c, server):
                cells.append(Cell(c, body, f"http://127.0.0.1:{server.port}{c.path_for(body)}", server))
        # one body size after another, each contender within it, so a round is the same for everybody
        order = {b: i for i, b in enumerate(self.opts.bodies)}
        cells.sort(key=lambda cell: order[cell.body])
        return cells

    def measure(self, cells: Sequence[Cell], upstream: measure.Server) -> None:
        wrk = self.tools.get("wrk")
        assert wrk is not None
        script = measure.write_wrk_script(self.work)
        total = len(cells) * self.opts.reps
        say(f"warm-up: {len(cells)} x {self.opts.warmup:g} s")
        for cell in cells:
            measure.warm_up(wrk, cell.url, self.opts.warmup, self.opts.connections, self.load_cpus,
                            cell.contender.headers, threads=self.opts.cores)
        say(f"timing: {self.opts.reps} interleaved round(s) x {len(cells)} cells x {self.opts.duration:g} s "
            f"(about {_fmt_secs(total * (self.opts.duration + 0.5))})")
        progress = Progress(total)
        for rep in range(self.opts.reps):
            for cell in cells:
                for attempt in range(self.opts.retries + 1):
                    run = self._one_run(wrk, script, cell, upstream)
                    noise = self._noise(run)
                    record = {"contender": cell.contender.name, "body": cell.body, "rep": rep + 1,
                              "attempt": attempt + 1, **run.to_dict()}
                    record["flags"] = self._flags(cell, run)
                    record["noise"] = noise
                    self.runs.append(record)
                    retry = bool(noise) and attempt < self.opts.retries
                    if retry:
                        record["discarded"] = "; ".join(noise)
                    head = progress.step() if not retry else " " * len(progress.peek())
                    say(f"{head} round {rep + 1}/{self.opts.reps} {BODIES[cell.body].label:>6} "
                        f"{cell.contender.name:18s} {_line(run)}"
                        + (f"  [{'; '.join(record['flags'] + noise)}]" if record["flags"] or noise else "")
                        + ("  -> discarded, again" if retry else ""))
                    if not retry:
                        break

    def _one_run(self, wrk: str, script: Path, cell: Cell, upstream: measure.Server) -> measure.WrkRun:
        uses_upstream = cell.contender.kind not in ("granian-hello", "direct")
        waited, busy = (measure.wait_for_quiet(self.opts.quiet_wait) if self.opts.quiet_wait > 0
                        else (0.0, None))
        if busy is not None and waited >= self.opts.quiet_wait:
            say(f"  the machine is busy ({busy:.0%} of a core used by other processes); measuring anyway")
        viewer = measure.DashboardViewer(self.admin_ports[cell.contender.name]) if cell.contender.dashboard else None
        try:
            run = measure.run_wrk(
                wrk, cell.url, self.opts.duration, self.opts.connections, self.load_cpus,
                cell.contender.headers, script, subject=cell.server,
                upstream=upstream if uses_upstream else None, upstream_status_port=self.upstream_port,
                subject_core=_core_names(self.subject_cpus), load_core=_core_names(self.load_cpus),
                threads=self.opts.cores,
            )
        finally:
            if viewer is not None:
                viewer.stop()
        run.quiet_wait_s, run.busy_before = waited, busy
        return run

    def _noise(self, run: measure.WrkRun) -> list[str]:
        """Signs that something besides the benchmark used the cores during the run."""
        noise = []
        if run.foreign_cores is not None and run.foreign_cores > FOREIGN_LOAD_FLAG:
            noise.append(f"other processes took {run.foreign_cores:.0%} of the contender's core")
        if run.foreign_load_cores is not None and run.foreign_load_cores > FOREIGN_LOAD_FLAG:
            noise.append(f"other processes took {run.foreign_load_cores:.0%} of the load core")
        steal = max((shares["steal"] for shares in run.cores.values()), default=0.0)
        if steal > FOREIGN_LOAD_FLAG:
            noise.append(f"the hypervisor stole {steal:.0%} of a core")
        return noise

    def _flags(self, cell: Cell, run: measure.WrkRun) -> list[str]:
        flags = []
        if run.errors:
            socket = ", ".join(f"{k} {v}" for k, v in run.socket_errors.items() if v)
            flags.append(f"errors: {run.non2xx} non-2xx" + (f", socket: {socket}" if socket else ""))
        if run.requests == 0:
            flags.append(f"no requests completed (wrk exit {run.wrk_exit})")
        if run.upstream_requests is not None and run.requests:
            share = run.upstream_requests / run.requests
            if cell.contender.upstream_share == "all" and cell.contender.kind not in ("granian-hello", "direct") \
                    and share < 0.95:
                flags.append(f"only {share:.0%} of requests reached the upstream")
            if cell.contender.upstream_share == "none" and share > 0.01:
                flags.append(f"{share:.0%} of requests reached the upstream (expected none)")
        return flags

    # -- the whole thing -----------------------------------------------------------------------
    def run(self) -> int:
        opts = self.opts
        self.work.mkdir(parents=True, exist_ok=True)
        say(f"fastgw benchmarks -> {self.out}")
        say(f"plan: {', '.join(c.name for c in opts.contenders)}; bodies {','.join(opts.bodies)}; "
            f"{opts.reps} x {opts.duration:g} s after {opts.warmup:g} s warm-up; "
            f"wrk -t{opts.cores} -c{opts.connections}; {opts.cores} core(s) and worker(s) per contender")
        say("programs:")
        if not self.prepare():
            self._write_outputs(error="required programs are missing")
            return 2
        if self.load_cpus and hasattr(os, "sched_setaffinity"):
            # the harness (its RSS sampler, its checks) belongs to the load side too
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {int(cpu) for cpu in self.load_cpus.split(",")})
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        machine = tools.machine_info()
        machine["cpu_calibration_ms"] = tools.cpu_calibration_ms(self.subject_cpus)
        with measure.ServerSet(self.work) as servers:
            self.upstream_port = measure.free_port()
            upstream_launch = peers.nginx_upstream(self.tools.get("nginx") or "nginx", self.work, "upstream",
                                                   self.upstream_port, opts.cores)
            say(f"upstream: nginx on 127.0.0.1:{self.upstream_port}, core {self.load_cpus} (with wrk)")
            try:
                upstream = servers.start("upstream", upstream_launch.cmd, self.upstream_port, self.load_cpus)
            except measure.ServerError as exc:
                say(f"error: the upstream nginx did not start: {exc}")
                self._write_outputs(error=f"upstream did not start: {exc}")
                return 2
            for body in opts.bodies:
                result = measure.http_get(self.upstream_port, BODIES[body].path)
                if not result.ok(200, BODIES[body].size):
                    say(f"error: upstream check failed: {result.describe()}")
                    self._write_outputs(error=f"upstream check failed: {result.describe()}")
                    return 2
            if any(c.redis_cluster and self.status[c.name].state == "ok" for c in opts.contenders):
                self.start_redis_cluster(servers)
            if self.fastgw_bin:
                self.validate_fastgw()
            say("contenders:")
            started = self.start_contenders(servers)
            cells = self.cells(started)
            if cells:
                try:
                    self.measure(cells, upstream)
                except KeyboardInterrupt:
                    servers.stop_all()
                    paths = self._write_outputs(error=f"interrupted after {len(self.runs)} run(s)",
                                                started_at=started_at, machine=machine)
                    say(f"partial results: {paths['json']}")
                    raise
            else:
                say("nothing to measure")
        machine["loadavg_after"] = tools.machine_info()["loadavg"]
        machine["cpu_calibration_ms_after"] = tools.cpu_calibration_ms(self.subject_cpus)
        paths = self._write_outputs(started_at=started_at, machine=machine)
        say("")
        say(paths["markdown_text"])
        say(f"results: {paths['json']}\n         {paths['markdown']}"
            + (f"\n         {paths['chart']}" if paths.get("chart") else ""))
        if opts.strict:
            problems = self.strict_problems()
            for problem in problems:
                say(f"strict: {problem}")
            if problems:
                return 1
        return 0

    def strict_problems(self) -> list[str]:
        """What makes `--strict` fail: a fastgw contender (or the floor, built from fastgw's kernels)
        that did not validate, start or pass its checks, or a run of one that had a non-2xx answer, a
        connection error or no completed request, or whose requests did not reach the upstream as they
        should. Never a timing (wrk's socket timeouts on a loaded machine included), never a peer's
        problem (nginx, HAProxy, Caddy are not under test)."""
        ours = {c.name for c in self.opts.contenders if c.kind in ("fastgw", "granian-floor")}
        problems = []
        for name in sorted(ours):
            status = self.status[name]
            if status.state in ("failed", "unavailable"):
                problems.append(f"{name}: {status.state}: {status.reason}")
            problems += [f"{name} {body}: {reason}" for body, reason in status.failed_bodies.items()]
        for run in self.runs:
            if run["contender"] not in ours or run.get("discarded"):
                continue
            errors = {k: v for k, v in (run.get("socket_errors") or {}).items() if v and k != "timeout"}
            if run.get("non2xx") or errors or not run.get("requests"):
                problems.append(f"{run['contender']} {run['body']} round {run['rep']}: {run.get('non2xx') or 0} "
                                f"non-2xx, socket errors {errors or 'none'}, {run.get('requests')} requests")
            problems += [f"{run['contender']} {run['body']}: {flag}" for flag in run["flags"]
                         if "reached the upstream" in flag]
        return problems

    def _write_outputs(self, error: str | None = None, started_at: str | None = None,
                       machine: dict[str, Any] | None = None) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmarks " + " ".join(self.opts.argv),
            "error": error,
            "settings": {
                "reps": self.opts.reps, "duration_s": self.opts.duration, "warmup_s": self.opts.warmup,
                "connections": self.opts.connections, "wrk_threads": self.opts.cores, "cores": self.opts.cores,
                "quiet_wait_s": self.opts.quiet_wait,
                "retries": self.opts.retries,
                "bodies": self.opts.bodies,
                "load_cpus": self.load_cpus, "contender_cpus": self.subject_cpus, "quick": self.opts.quick,
            },
            "machine": machine or tools.machine_info(),
            "versions": self.versions,
            "contenders": [
                {"name": c.name, "label": c.label, "kind": c.kind, "bodies": [b for b in c.bodies
                                                                          if b in self.opts.bodies],
                 "paths": {b: c.path_for(b) for b in c.bodies}, "note": c.note,
                 **{k: v for k, v in vars(self.status[c.name]).items()}}
                for c in self.opts.contenders
            ],
            "bodies": {k: vars(b) for k, b in BODIES.items() if k in self.opts.bodies},
            "runs": self.runs,
        }
        data["summary"] = report.summarize(data)
        json_path = self.out / "results.json"
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        text = report.markdown(data)
        md_path = self.out / "results.md"
        md_path.write_text(text)
        out: dict[str, Any] = {"json": json_path, "markdown": md_path, "markdown_text": text}
        if self.opts.chart and self.runs:
            chart = self.out / "chart.png"
            problem = report.chart(data, chart)
            if problem:
                say(f"no chart: {problem}")
            else:
                out["chart"] = chart
        return out


def _core_names(cpus: str | None) -> str | None:
    """"2,3" -> "cpu2,cpu3" (the /proc/stat rows measure.run_wrk reads)."""
    return ",".join(f"cpu{cpu}" for cpu in cpus.split(",")) if cpus else None


def _line(run: measure.WrkRun) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return (f"{run.rps:>9,.0f} req/s  p50 {num(run.p50_ms, '.2f')} ms  p99 {num(run.p99_ms, '.2f')} ms  "
            f"cpu {num(run.cpu_us_per_req, '.1f')} us/req  rss {num(run.rss_peak_mib, '.0f')} MiB")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _first_problem(message: str) -> str:
    """The first concrete problem of a `fastgw validate` message (one line)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    if "Traceback" in lines[0]:
        return lines[-1]
    # "fastgw: invalid config /path/file.yaml: 2 problem(s)" then one problem a line
    head = re.sub(r"^fastgw: invalid config \S+: ", "", lines[0])
    return head + (": " + "; ".join(lines[1:4]) if len(lines) > 1 else "") + ("; ..." if len(lines) > 4 else "")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every server is stopped by the finally blocks."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. imported by a test runner's worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; 0 on success (also when contenders were skipped), 2 when it cannot run."""
    opts = parse_args(argv)
    with _terminate_as_interrupt():
        try:
            return Harness(opts).run()
        except KeyboardInterrupt:
            say("interrupted: every server started has been stopped")
            return 130
