"""Configurations and command lines of every server the harness starts.

The settings follow the earlier anchor measurements on this machine (shared/anchors/run_anchors.sh):
one worker each, keep-alive everywhere (clients and upstream), no access logs, loopback only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hello_app, jwt_bench
from .tools import BENCH_DIR

STUB_STATUS_PATH = "/__stub_status"


@dataclass
class Launch:
    """How to start one server."""

    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    config: Path | None = None


def write_static_files(www: Path) -> None:
    www.mkdir(parents=True, exist_ok=True)
    (www / "1k.json").write_bytes(hello_app.BODY_1K)
    (www / "64k.bin").write_bytes(hello_app.BODY_64K)
    (www / "jwks.json").write_text(jwt_bench.jwks_json())


# ---------------------------------------------------------------------------------------- nginx
def _nginx_conf(tmp: Path, server_block: str, workers: int = 1) -> str:
    return f"""daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    open_file_cache max=64;
    client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/px; fastcgi_temp_path {tmp}/fc;
    uwsgi_temp_path {tmp}/uw; scgi_temp_path {tmp}/sc;
{server_block}
}}
"""


def _nginx_launch(nginx: str, work: Path, name: str, server_block: str, workers: int = 1) -> Launch:
    tmp = work / f"nginx-{name}"
    tmp.mkdir(parents=True, exist_ok=True)
    path = work / f"nginx-{name}.conf"
    path.write_text(_nginx_conf(tmp, server_block, workers))
    return Launch(cmd=[nginx, "-e", str(tmp / "error.log"), "-c", str(path)], config=path)


def nginx_upstream(nginx: str, work: Path, name: str, port: int, workers: int = 1) -> Launch:
    """The fixed upstream: 13 B text at /, 1 KiB JSON at /json, 64 KiB at /big (and stub_status)."""
    www = work / "www"
    write_static_files(www)
    body = hello_app.BODY_13.decode()
    block = f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{body}"; }}
        location = /json {{ default_type application/json; alias {www}/1k.json; }}
        location = /big  {{ default_type application/octet-stream; alias {www}/64k.bin; }}
        location = {STUB_STATUS_PATH} {{ stub_status; }}
        location = {jwt_bench.JWKS_PATH} {{ default_type application/json; alias {www}/jwks.json; }}
    }}"""
    return _nginx_launch(nginx, work, name, block, workers)


def nginx_proxy(nginx: str, work: Path, port: int, upstream_port: int, workers: int = 1) -> Launch:
    block = f"""    upstream be {{
        server 127.0.0.1:{upstream_port};
        keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 16 16k;
        }}
    }}"""
    return _nginx_launch(nginx, work, "proxy", block, workers)


# ---------------------------------------------------------------------------------------- haproxy
def haproxy(haproxy_bin: str, work: Path, port: int, upstream_port: int, workers: int = 1) -> Launch:
    conf = f"""global
    nbthread {workers}
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 120s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{upstream_port} maxconn 10000
"""
    path = work / "haproxy.cfg"
    path.write_text(conf)
    return Launch(cmd=[haproxy_bin, "-f", str(path), "-db"], config=path)


# ---------------------------------------------------------------------------------------- caddy
def caddy(caddy_bin: str, work: Path, port: int, upstream_port: int, workers: int = 1) -> Launch:
    conf = f"""{{
\tadmin off
\tauto_https off
}}
http://127.0.0.1:{port} {{
\tbind 127.0.0.1
\treverse_proxy 127.0.0.1:{upstream_port} {{
\t\ttransport http {{
\t\t\tkeepalive 120s
\t\t\tkeepalive_idle_conns 512
\t\t\tkeepalive_idle_conns_per_host 512
\t\t}}
\t}}
}}
"""
    path = work / "Caddyfile"
    path.write_text(conf)
    return Launch(cmd=[caddy_bin, "run", "--config", str(path), "--adapter", "caddyfile"],
                  env={"GOMAXPROCS": str(workers)}, config=path)


# ---------------------------------------------------------------------------------------- granian
# fastgw's workers and the floor's run under SCHED_BATCH (fastgw/scheduling.py): each contender has
# a core of its own here, which is what that setting is for. nginx, HAProxy and the hello app are
# single-threaded event loops with no thread hand-offs for it to save.
CPU_SCHEDULING = "batch"


def granian_hello(granian_bin: str, port: int, workers: int = 1) -> Launch:
    """The ceiling: granian's RSGI server with an app that answers from memory."""
    return Launch(cmd=[
        granian_bin, "--interface", "rsgi", "--workers", str(workers), "--loop", "uvloop", "--http", "1", "--no-ws",
        "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
        "--working-dir", str(BENCH_DIR), "hello_app:app",
    ])


def granian_floor(granian_bin: str, port: int, app_dir: Path, upstream_port: int, workers: int = 1) -> Launch:
    """The floor: granian with the smallest upstream leg it can have (benchmarks/floor_app.pyx)."""
    return Launch(cmd=[
        granian_bin, "--interface", "rsgi", "--workers", str(workers), "--loop", "uvloop", "--http", "1", "--no-ws",
        "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
        "--working-dir", str(app_dir), "floor_app:app",
    ], env={"FLOOR_UPSTREAM_PORT": str(upstream_port), "FLOOR_CPU_SCHEDULING": CPU_SCHEDULING})


# ---------------------------------------------------------------------------------------- fastgw
def fastgw_serve(fastgw_bin: str, config: Path, port: int, admin_port: int, workers: int = 1,
                 tuned: bool = True, env: Mapping[str, str] | None = None) -> Launch:
    """fastgw started the way users start it. `tuned`: with the documented fast settings (no access log,
    SCHED_BATCH workers); without, the config file alone decides (the `default` scenarios)."""
    tuning = ["--no-access-log", "--cpu-scheduling", CPU_SCHEDULING] if tuned else []
    return Launch(cmd=[
        fastgw_bin, "serve", str(config), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--admin-port", str(admin_port), *tuning,
    ], env=dict(env or {}), config=config)


def write_yaml(path: Path, data: Mapping[str, Any], comment: str = "") -> Path:
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(head + to_yaml(data))
    return path


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for plain data (strings are JSON-quoted, which YAML reads as is)."""
    pad = "  " * indent
    if isinstance(value, Mapping):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            if _is_scalar(item) or (isinstance(item, Mapping | list) and not item):
                out.append(f"{pad}{_key(key)}: {_scalar(item)}\n")
            else:
                out.append(f"{pad}{_key(key)}:\n{to_yaml(item, indent + 1)}")
        return "".join(out)
    if isinstance(value, list):
        out = []
        for item in value:
            if _is_scalar(item):
                out.append(f"{pad}- {_scalar(item)}\n")
            else:
                nested = to_yaml(item, indent + 1)
                out.append(f"{pad}- {nested.lstrip()}")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _key(key: Any) -> str:
    text = str(key)
    plain = text.replace("_", "").replace("-", "").isalnum() and not text[0].isdigit()
    return text if plain else json.dumps(text)


def _scalar(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)
