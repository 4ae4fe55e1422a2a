"""The `fastgw` command: serve, validate, routes, keys, usage.

Server settings come from, in order of precedence: command-line flags, FASTGW_* environment
variables (every `server` setting has one: fastgw/config/model/server.py), the config file's `server:`
section, defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any

from ._version import __version__
from .scheduling import POLICIES, cpu_scheduling_policy

# flag name -> (ServerConfig field, type)
SERVER_FLAGS: dict[str, tuple[str, Any]] = {
    "host": ("host", str),
    "port": ("port", int),
    "workers": ("workers", int),
    "admin_host": ("adminHost", str),
    "admin_port": ("adminPort", int),
    "admin_token": ("adminToken", str),
    "ws_port": ("webSocket.port", int),
    "interface": ("interface", str),
    "tls_cert": ("tlsCert", str),
    "tls_key": ("tlsKey", str),
    "drain_seconds": ("drainSeconds", float),
    "cpu_scheduling": ("cpuScheduling", cpu_scheduling_policy),
}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags beat FASTGW_* environment variables (read with the file's `server` section, where each is
    checked: fastgw/config/model/server.py); both beat the file."""
    result: dict[str, Any] = {}
    for flag, (field, kind) in SERVER_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            result[field] = kind(value)
    if getattr(args, "no_access_log", False) or os.environ.get("FASTGW_NO_ACCESS_LOG"):
        result["accessLog"] = False
    if getattr(args, "reuse_port", False):
        result["reusePort"] = True
    return result


def _config_path(args: argparse.Namespace) -> str:
    """The config file: the argument, else FASTGW_CONFIG (a container image's mounted file)."""
    path = args.config or os.environ.get("FASTGW_CONFIG")
    if not path:
        raise SystemExit("fastgw: give the gateway's config file (or set FASTGW_CONFIG)")
    args.config = path
    return path


def _load(path: str, overrides: dict[str, Any], args: argparse.Namespace | None = None) -> Any:
    from .commands.openapi import load_options, print_notes
    from .config.loader import ConfigError
    from .openapi import source
    from .runtime import compile_file

    if args is not None:
        source.DEFAULT_OPTIONS = load_options(args)  # reloads use them too
    try:
        plan = compile_file(path, overrides)
    except ConfigError as exc:
        print(f"fastgw: invalid config {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print_notes(plan.notes)
    return plan


def cmd_validate(args: argparse.Namespace) -> int:
    plan = _load(_config_path(args), _overrides(args), args)
    # A canary is compiled as a plan of its own; it is reported apart, not as a stage.
    stages = [stage for stage in plan.stages if not stage.is_canary]
    canaries = len(plan.stages) - len(stages)
    routes = sum(len(stage.routes) for stage in stages)
    print(f"{args.config}: OK ({len(stages)} stage(s), {canaries} canar{'y' if canaries == 1 else 'ies'}, "
          f"{routes} route(s), interface {plan.interface})")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    from .plan import route_table

    plan = _load(_config_path(args), _overrides(args), args)
    rows = [("API", "STAGE", "PATH PREFIX", "ROUTE", "INTEGRATION")]
    rows += [(r["api"], r["stage"], r["prefix"], r["route"], r["integration"]) for r in route_table(plan)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if any(stage.websocket is not None for stage in plan.stages):
        from .config.model import websocket_address

        host, port = websocket_address(plan.server)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        print(f"WebSocket APIs listen on {'wss' if plan.server.tlsCert else 'ws'}://{where} "
              f"(@connections: the HTTP port {plan.server.port})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # prometheus-client picks its multi-process mode when first imported: set the directory
    # before anything imports it, and start from an empty one (stale files would add up).
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="fastgw-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    else:
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    try:
        overrides = _overrides(args)
        plan = _load(_config_path(args), overrides, args)
        from . import runtime

        runtime.WATCH = bool(getattr(args, "watch", False))
        from .server import serve

        try:
            serve(args.config, plan, overrides, log_level=args.log_level)
        except OSError as exc:  # a start-up failure no check foresaw: still one line, no traceback
            print(f"fastgw: cannot start: {exc}", file=sys.stderr)
            return 1
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """`fastgw cache flush`: AWS FlushStageCache, through the running gateway's admin API."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    path = args.config or os.environ.get("FASTGW_CONFIG")
    if not path:
        raise SystemExit("fastgw: give the gateway's config file with -c FILE (or FASTGW_CONFIG)")
    plan = _load(path, _overrides(args))
    if plan.cache is None:
        raise SystemExit(f"fastgw: {path} gives no stage a cache")
    if not any((args.api in (None, sc.api)) and (args.stage in (None, sc.stage)) for sc in plan.cache.stages):
        raise SystemExit(f"fastgw: no cached stage {args.api or '*'}/{args.stage or '*'} in {path}")
    server = plan.server
    host = "127.0.0.1" if server.adminHost in ("0.0.0.0", "::", "") else server.adminHost
    base = args.admin_url or f"http://{host}:{server.adminPort}"
    query = urlencode([(k, v) for k, v in (("api", args.api), ("stage", args.stage)) if v])
    request = urllib.request.Request(f"{base.rstrip('/')}/cache/flush?{query}", data=b"", method="POST")
    if server.adminToken:
        request.add_header("authorization", f"Bearer {server.adminToken}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            sys.stdout.write(response.read().decode() + "\n")
        return 0
    except urllib.error.HTTPError as exc:
        print(f"fastgw: cache flush refused ({exc.code}): {exc.read().decode(errors='replace')}", file=sys.stderr)
    except OSError as exc:
        print(f"fastgw: the gateway's admin API at {base} does not answer ({exc})", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgw", description="A fast, self-hosted API gateway (AWS API Gateway model)"
    )
    parser.add_argument("--version", action="version", version=f"fastgw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    from .commands.openapi import add_load_flags

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("config", nargs="?",
                       help="native YAML/JSON config file, or an OpenAPI document (x-amazon-apigateway-*); "
                            "default: env FASTGW_CONFIG")
    serve.add_argument("--host", help="listen address (default 0.0.0.0; env FASTGW_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8080; env FASTGW_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per CPU; env FASTGW_WORKERS)")
    serve.add_argument("--admin-host", help="admin listen address (default 127.0.0.1)")
    serve.add_argument("--admin-port", type=int, help="admin port (default 9901; env FASTGW_ADMIN_PORT)")
    serve.add_argument("--ws-port", type=int,
                       help="port of the WebSocket APIs (default: --port + 1; env FASTGW_WEB_SOCKET_PORT)")
    serve.add_argument("--admin-token", help="bearer token for the admin API (env FASTGW_ADMIN_TOKEN)")
    serve.add_argument("--interface", choices=("auto", "asgi", "rsgi"), help="granian interface (default auto)")
    serve.add_argument("--tls-cert", help="TLS certificate (PEM)")
    serve.add_argument("--tls-key", help="TLS private key (PEM)")
    serve.add_argument("--drain-seconds", type=float, help="SIGTERM drain deadline (default 25)")
    serve.add_argument("--cpu-scheduling", choices=POLICIES,
                       help="worker CPU policy: auto (default: batch while other programs leave the "
                            "worker's CPUs idle, normal otherwise), normal, or batch (env FASTGW_CPU_SCHEDULING)")
    serve.add_argument("--no-access-log", action="store_true", help="no JSON access log on stdout")
    serve.add_argument("--iam-credentials", metavar="FILE",
                       help="AWS shared-credentials file of the principals AWS_IAM routes trust (server.iam)")
    serve.add_argument("--reuse-port", action="store_true",
                       help="start even if another process listens on the port, and share it with it "
                            "(zero-downtime handover; server.reusePort, env FASTGW_REUSE_PORT)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       help="fastgw's log level (default info; granian's own default: warning)")
    add_load_flags(serve)
    serve.add_argument("--watch", action="store_true",
                       help="reload when the config, an included OpenAPI document or a handler module changes")
    serve.set_defaults(func=cmd_serve)

    validate = commands.add_parser("validate", help="check a config file and exit (0: valid, 2: invalid)")
    validate.add_argument("config", nargs="?", help="the config file (default: env FASTGW_CONFIG)")
    validate.add_argument("--iam-credentials", metavar="FILE",
                       help="AWS shared-credentials file of the principals AWS_IAM routes trust (server.iam)")
    add_load_flags(validate)
    validate.set_defaults(func=cmd_validate)

    routes = commands.add_parser("routes", help="print the compiled route table")
    routes.add_argument("config", nargs="?", help="the config file (default: env FASTGW_CONFIG)")
    routes.add_argument("--iam-credentials", metavar="FILE",
                       help="AWS shared-credentials file of the principals AWS_IAM routes trust (server.iam)")
    add_load_flags(routes)
    routes.set_defaults(func=cmd_routes)

    from .commands.openapi import add_parsers as add_openapi_parsers

    add_openapi_parsers(commands)  # import, export
    from .commands.canary import add_parsers as add_canary_parsers

    add_canary_parsers(commands)  # canary show|set|promote|rollback

    cache = commands.add_parser("cache", help="flush a stage cache of the running gateway (every worker)")
    cache.add_argument("op", choices=("flush",))
    cache.add_argument("-c", "--config", help="the gateway's config file (or FASTGW_CONFIG)")
    cache.add_argument("--api", help="the API (default: every API)")
    cache.add_argument("--stage", help="the stage (default: every cached stage of the API)")
    cache.add_argument("--admin-url", help="the admin API (default: from the config, like serve)")
    cache.add_argument("--admin-host", help=argparse.SUPPRESS)
    cache.add_argument("--admin-port", type=int, help="the admin port (env FASTGW_ADMIN_PORT)")
    cache.add_argument("--admin-token", help="the admin token (env FASTGW_ADMIN_TOKEN)")
    cache.set_defaults(func=cmd_cache)

    from .commands.usage import add_parsers as add_usage_parsers

    add_usage_parsers(commands)  # keys, usage
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
