"""The WebSocket scenario: echo messages per second through fastgw's pass-through next to nginx proxying
the same WebSocket echo upstream, and the memory an idle connection costs each of them.

    python -m benchmarks.ws                       # echo: 64 connections, 64-byte messages, 5 s per contender
    python -m benchmarks.ws --quick               # 1 s per contender (about 10 s in all)
    python -m benchmarks.ws --idle 10000          # memory per idle connection (10,000 held open)
    python -m benchmarks.ws --only nginx,fastgw-ws-rsgi --duration 10

Pinning as in the main harness: the load client and the upstream share core 0, the contender has core 1.
The upstream is granian with benchmarks/ws_echo_app.py; the load client is benchmarks/wsload.py (asyncio
+ websockets: Debian has no tcpkali), which caps what the fastest contender can show (marked † when
its core 0 was the busy one). `--idle N` opens N connections (one echo each) and compares the
contender's resident memory before and after; the contender then runs 2 workers, because N client
plus N upstream connections do not fit one process's descriptor limit (20,000 here, and the harness
cannot raise the hard limit). Results: benchmarks/out/ws-<timestamp>/results.json and results.md.

Contenders: `granian` (the echo app itself on core 1: the ceiling, and in `--idle` granian's own cost
per WebSocket connection, which every granian-served contender pays), `nginx` (proxy_http_version 1.1
with the Upgrade/Connection fields), `fastgw-ws-rsgi` and
`fastgw-ws-asgi` (an HTTP API `GET /echo` HTTP_PROXY route, pass-through), and `fastgw-ws-api`: a
WebSocket API whose `$default` route is a MOCK that answers each message with the same text (issue 16's
API type); skipped, saying so, when `fastgw validate` does not accept WebSocket APIs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import measure, peers, tools

BENCH_DIR, REPO_ROOT = tools.BENCH_DIR, tools.REPO_ROOT
LOAD_CPUS, CONTENDER_CPUS = "0", "1"
IDLE_WORKERS = 2  # the descriptor limit: N client + N upstream sockets per worker
IDLE_TARGET_KIB = 8.0


def say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    kind: str  # granian | nginx | fastgw
    path: str  # the client connects to ws://127.0.0.1:PORT/PATH
    config: Callable[[int, int], dict[str, Any]] | None = None  # fastgw: (upstream port, message size) -> config
    text: bool = False  # text messages (a MOCK template answers text), else binary
    ws_listener: bool = False  # a WebSocket API: PORT is fastgw's --ws-port (its own listener), not --port


def passthrough_config(upstream_port: int, size: int, rsgi: bool = True) -> dict[str, Any]:
    api: dict[str, Any] = {"name": "ws", "type": "HTTP", "stages": {"$default": {}}, "routes": [
        {"route": "GET /echo", "integration": {"type": "HTTP_PROXY", "uri": f"http://127.0.0.1:{upstream_port}/echo"}}]}
    if rsgi:
        api["encodedSlashes"] = "DECODE"  # lets fastgw serve through granian's RSGI
    return {"server": {"workers": 1, "accessLog": False}, "apis": [api]}


def ws_api_config(upstream_port: int, size: int) -> dict[str, Any]:
    """A WebSocket API (issue 16's API type) whose `$default` route answers each message through a MOCK
    integration: the cost of the gateway's own WebSocket path, with no upstream. A MOCK's response
    template cannot see the client's message (`$input` is the integration's empty response, as on AWS),
    so it answers the load client's own message as a constant: what the client checks is an echo."""
    return {"server": {"workers": 1, "accessLog": False}, "apis": [{
        "name": "wsapi", "type": "WEBSOCKET", "routeSelectionExpression": "$request.body.action",
        "webSocket": {"managementAuthorization": "NONE"},
        "stages": {"prod": {}},
        "routes": [{
            "route": "$default", "routeResponseSelectionExpression": "$default",
            "integration": {"type": "MOCK", "requestTemplates": {"$default": '{"statusCode": 200}'},
                            "responses": {"$default": {"responseTemplates": {"$default": "m" * size}}}},
        }],
    }]}


CONTENDERS: tuple[Contender, ...] = (
    Contender("granian", "granian echo app served directly, no proxy (ceiling; granian's own cost)", "granian",
              "/echo"),
    Contender("nginx", "nginx proxy (Upgrade/Connection, HTTP/1.1)", "nginx", "/echo"),
    Contender("fastgw-ws-rsgi", "fastgw pass-through, HTTP_PROXY route (RSGI)", "fastgw", "/echo",
              lambda port, size: passthrough_config(port, size, rsgi=True)),
    Contender("fastgw-ws-asgi", "fastgw pass-through, HTTP_PROXY route (ASGI)", "fastgw", "/echo",
              lambda port, size: passthrough_config(port, size, rsgi=False)),
    Contender("fastgw-ws-api", "fastgw WebSocket API, $default MOCK echo (no upstream; text)", "fastgw", "/prod",
              ws_api_config, text=True, ws_listener=True),
)


def nginx_ws_proxy(nginx: str, work: Path, port: int, upstream_port: int, workers: int) -> peers.Launch:
    tmp = work / "nginx-ws"
    tmp.mkdir(parents=True, exist_ok=True)
    block = f"""    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
        }}
    }}"""
    conf = peers._nginx_conf(tmp, block, workers).replace("worker_connections 8192", "worker_connections 16384")
    conf = conf.replace("daemon off;", f"daemon off;\nworker_rlimit_nofile {_nofile()};")
    path = work / "nginx-ws.conf"
    path.write_text(conf)
    return peers.Launch(cmd=[nginx, "-e", str(tmp / "error.log"), "-c", str(path)], config=path)


def _nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_nofile() -> int:
    """The soft descriptor limit up to the hard one (the children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        self.out = args.out / f"ws-{stamp}"
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.python = sys.executable
        self.fastgw = str(Path(sys.executable).parent / "fastgw")
        self.granian = str(Path(sys.executable).parent / "granian")
        self.results: list[dict[str, Any]] = []

    def contender_launch(self, c: Contender, port: int, upstream_port: int, workers: int) -> peers.Launch | str:
        """How to start `c`, or why it cannot be run."""
        if c.kind == "granian":
            return peers.Launch(cmd=self.echo_app(port, workers))
        if c.kind == "nginx":
            nginx = tools.ensure_programs(["nginx"], not self.args.no_install, say).get("nginx")
            if nginx is None:
                return "nginx is not installed"
            return nginx_ws_proxy(nginx, self.work, port, upstream_port, workers)
        assert c.config is not None
        config = c.config(upstream_port, self.args.size)
        config["server"]["workers"] = workers
        path = peers.write_yaml(self.work / f"{c.name}.yaml", config)
        check = subprocess.run([self.fastgw, "validate", str(path)], capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            problem = (check.stderr or check.stdout).strip().splitlines()
            reason = problem[-1] if problem else f"exit {check.returncode}"
            if c.name == "fastgw-ws-api":
                return f"this fastgw does not serve WebSocket APIs yet (`fastgw validate`: {reason})"
            return f"`fastgw validate` rejects the config: {reason}"
        ports = ["--port", str(measure.free_port()), "--ws-port", str(port)] if c.ws_listener else ["--port", str(port)]
        return peers.Launch(cmd=[
            self.fastgw, "serve", str(path), "--host", "127.0.0.1", *ports, "--workers", str(workers),
            "--admin-port", str(measure.free_port()), "--no-access-log", "--cpu-scheduling", peers.CPU_SCHEDULING,
        ], config=path)

    def run(self) -> int:
        hard = raise_nofile()
        chosen = [c for c in CONTENDERS if not self.args.only or c.name in self.args.only.split(",")]
        say(f"WebSocket scenario: {'idle ' + str(self.args.idle) if self.args.idle else 'echo'}; "
            f"descriptors {hard}; out {self.out}")
        with measure.ServerSet(self.work) as servers:
            upstream_port = measure.free_port()
            servers.start("ws-echo-upstream", self.echo_app(upstream_port, 1), upstream_port, LOAD_CPUS)
            for c in chosen:
                port = measure.free_port()
                workers = IDLE_WORKERS if self.args.idle else 1
                launch = self.contender_launch(c, port, upstream_port, workers)
                if isinstance(launch, str):
                    say(f"  skipped: {c.name}: {launch}")
                    self.results.append({"contender": c.name, "label": c.label, "skipped": launch})
                    continue
                server = servers.start(c.name, launch.cmd, port, CONTENDER_CPUS, env=launch.env)
                try:
                    url = f"ws://127.0.0.1:{port}{c.path}"
                    result = self.idle(server, url) if self.args.idle else self.echo(server, url, c.text)
                except Exception as exc:  # noqa: BLE001 - reported, the others still run
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                finally:
                    servers.stop(c.name)
                result.update({"contender": c.name, "label": c.label})
                say(f"  {c.name}: {json.dumps({k: v for k, v in result.items() if k not in ('label',)})}")
                self.results.append(result)
        self.write()
        return 0

    def echo_app(self, port: int, workers: int) -> list[str]:
        return [self.granian, "--interface", "rsgi", "--workers", str(workers), "--loop", "uvloop", "--http", "1",
                "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
                "--working-dir", str(BENCH_DIR), "ws_echo_app:app"]

    def load(self, *args: str) -> list[str]:
        return ["taskset", "-c", LOAD_CPUS, self.python, "-m", "benchmarks.wsload", *args]

    def echo(self, server: measure.Server, url: str, text: bool = False) -> dict[str, Any]:
        a = self.args
        pids = server.tree()
        ticks = measure.cpu_ticks(pids)
        cores = measure.core_times()
        out = subprocess.run(self.load("echo", url, "--connections", str(a.connections), "--duration", str(a.duration),
                                       "--size", str(a.size), "--warmup", str(a.warmup), *(["--text"] if text else [])),
                             capture_output=True, text=True, timeout=a.duration + a.warmup + 60, cwd=REPO_ROOT)
        busy = measure.cpu_ticks(server.tree()) - ticks
        shares = measure.core_shares(cores, measure.core_times())
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
        result: dict[str, Any] = json.loads(out.stdout)
        hz = os.sysconf("SC_CLK_TCK")
        if result["messages"]:
            result["cpu_us_per_message"] = round(busy / hz / result["messages"] * 1e6, 1)
        result["core_task_share"] = {core: share["task"] for core, share in shares.items()}
        return result

    def idle(self, server: measure.Server, url: str) -> dict[str, Any]:
        a = self.args
        before = measure.rss_kib(server.tree())
        hold_file = self.work / "idle-hold.json"
        hold_file.unlink(missing_ok=True)
        client = subprocess.Popen(self.load("idle", url, "--connections", str(a.idle), "--hold-file", str(hold_file),
                                            "--hold", "600"), cwd=REPO_ROOT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not hold_file.exists() and time.monotonic() < deadline and client.poll() is None:
                time.sleep(0.5)
            if not hold_file.exists():
                return {"error": "the idle client did not open its connections within 300 s"}
            time.sleep(1.0)  # let the hand-shakes' garbage go
            opened = json.loads(hold_file.read_text())
            after = measure.rss_kib(server.tree())
        finally:
            client.terminate()
            try:
                client.wait(60)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait(10)
        per = (after - before) / opened["opened"] if opened["opened"] else None
        return {"connections": opened["opened"], "errors": opened["errors"], "first_errors": opened["first_errors"],
                "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_connection": round(per, 2) if per is not None else None,
                "target_kib": IDLE_TARGET_KIB, "workers": IDLE_WORKERS}

    def write(self) -> None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
        data = {"settings": settings, "machine": tools.machine_info(), "git_sha": tools.git_sha(),
                "results": self.results}
        (self.out / "results.json").write_text(json.dumps(data, indent=2))
        mode = "idle" if self.args.idle else "echo"
        lines = [f"# WebSocket scenario ({mode}), {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
                 "", f"`python -m benchmarks.ws {' '.join(self.args.argv)}`", ""]
        if self.args.idle:
            lines += ["| contender | connections | RSS before KiB | RSS after KiB | KiB per connection |",
                      "|---|---:|---:|---:|---:|"]
            for r in self.results:
                if "skipped" in r or "error" in r:
                    lines.append(f"| {r['label']} | {r.get('skipped') or r.get('error')} | | | |")
                else:
                    lines.append(f"| {r['label']} | {r['connections']} | {r['rss_before_kib']} | {r['rss_after_kib']} "
                                 f"| {r['kib_per_connection']} |")
        else:
            base = next((r for r in self.results if r["contender"] == "nginx" and "per_second" in r), None)
            # the × nginx column of the granian row is the ceiling, not a proxy's ratio
            lines += ["| contender | messages/s | × nginx | CPU µs/msg | p50 ms | p99 ms | errors |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for r in self.results:
                if "per_second" not in r:
                    lines.append(f"| {r['label']} | {r.get('skipped') or r.get('error')} | | | | | |")
                    continue
                ratio = f"{r['per_second'] / base['per_second']:.2f}" if base else ""
                lines.append(f"| {r['label']} | {r['per_second']:,.0f} | {ratio} | {r.get('cpu_us_per_message', '')} "
                             f"| {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
        (self.out / "results.md").write_text("\n".join(lines) + "\n")
        say("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ws", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s per contender, no warm-up")
    parser.add_argument("--only", help="contenders, comma-separated: " + ",".join(c.name for c in CONTENDERS))
    parser.add_argument("--duration", type=float, help="seconds of echo load per contender (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up (default 1; --quick 0)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="message bytes (default 64)")
    parser.add_argument("--idle", type=int, metavar="N", help="measure memory per idle connection with N open")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install nginx")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.0 if args.quick else 1.0)
    return Run(args).run()


if __name__ == "__main__":
    sys.exit(main())
