"""`fastgw canary show|set|promote|rollback|reset`: through the running gateway's admin API, or, when
none answers, stored for the next start (fastgw/canary.py). `running` in the output says which:
true when the admin API answered, false when the stored state was read or changed."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from .openapi import _pairs, load_options

if TYPE_CHECKING:
    pass


def _admin_call(base: str, token: str | None, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    import urllib.request

    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(f"{base.rstrip('/')}{path}", data=data, method=method)
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def cmd_canary(args: Any) -> int:
    # Imported here: building the command line must not import prometheus-client (fastgw serve sets
    # its multi-process directory first) nor the gateway's modules.
    from ..canary import CanaryError, change_canary, describe, stored_changes
    from ..compile import load_plan
    from ..config.loader import ConfigError, load_document

    path = args.config or os.environ.get("FASTGW_CONFIG")
    if not path:
        raise SystemExit("fastgw: give the gateway's config file with -c FILE (or FASTGW_CONFIG)")
    options = load_options(args)
    options.stage = None  # --stage names the canary's stage here
    try:
        plan = load_plan(load_document(path), options)
    except ConfigError as exc:
        print(f"fastgw: invalid config {exc}", file=sys.stderr)
        return 2
    server = plan.server
    host = "127.0.0.1" if server.adminHost in ("0.0.0.0", "::", "") else server.adminHost
    base = args.admin_url or f"http://{host}:{args.admin_port or server.adminPort}"
    token = args.admin_token or os.environ.get("FASTGW_ADMIN_TOKEN") or server.adminToken
    if args.op == "show":
        try:
            status, payload = _admin_call(base, token, "GET", "/canary", None)
            payload["running"] = True  # the admin API answered
        except OSError:
            status, payload = 200, {"items": describe(plan, stored_changes(path, options)), "running": False}
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0 if status == 200 else 1
    if args.op == "reset":
        return _reset(args, base, token, path, options)
    if not (args.api and args.stage):
        raise SystemExit("fastgw: --api and --stage name the stage")
    fields: dict[str, Any] = {}
    if args.op == "set":
        if args.deployment is not None:
            fields["deployment"] = args.deployment
        if args.percent is not None:
            fields["percentTraffic"] = args.percent
        if args.override:
            fields["stageVariableOverrides"] = _pairs(args.override, "--override")
        if args.use_stage_cache is not None:
            fields["useStageCache"] = args.use_stage_cache
    copy_variables = not getattr(args, "keep_variables", False)
    route = f"/canary/{quote(args.api, safe='')}/{quote(args.stage, safe='')}/{args.op}"
    try:
        status, payload = _admin_call(base, token, "POST", route, {**fields, "copyVariables": copy_variables})
        payload["running"] = True
    except OSError:
        # No gateway answers: store the change; the next `fastgw serve` starts with it.
        try:
            changed = change_canary(path, options, args.api, args.stage, args.op, fields, copy_variables)
        except CanaryError as exc:
            print(f"fastgw: {exc}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        entry = next((e for e in describe(changed) if (e["api"], e["stage"]) == (args.api, args.stage)), None)
        payload = {"stage": entry, "running": False}
        status = 200
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    if status != 200:
        return 1
    return 0


def _reset(args: Any, base: str, token: str | None, path: str, options: Any) -> int:
    """`fastgw canary reset --api A --stage S | --all`: drop stored canary state (the file's stage applies)."""
    from ..canary import CanaryError, describe, reset_canary, stored_changes

    if args.all == bool(args.api or args.stage) or (not args.all and not (args.api and args.stage)):
        print("fastgw: canary reset takes --api and --stage, or --all", file=sys.stderr)
        return 2
    route = "/canary/reset" if args.all else f"/canary/{quote(args.api, safe='')}/{quote(args.stage, safe='')}/reset"
    try:
        status, payload = _admin_call(base, token, "POST", route, {})
        payload["running"] = True
    except OSError:
        try:
            plan, stages = reset_canary(path, options, None if args.all else args.api,
                                        None if args.all else args.stage)
        except CanaryError as exc:
            print(f"fastgw: {exc}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        status, payload = 200, {"reset": stages, "items": describe(plan, stored_changes(path, options)),
                                "running": False}
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    if status != 200:
        print(f"fastgw: {payload.get('message', status)}", file=sys.stderr)
        return 1
    return 0


def add_parsers(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="the gateway's config file (env FASTGW_CONFIG)")
    common.add_argument("--admin-url", help="the running gateway's admin API (default: from the config)")
    common.add_argument("--admin-port", type=int, help="the admin port (default: from the config)")
    common.add_argument("--admin-token", help="the admin token (env FASTGW_ADMIN_TOKEN)")
    stage = argparse.ArgumentParser(add_help=False)
    stage.add_argument("--api", help="the API")
    stage.add_argument("--stage", dest="stage", help="the stage")
    canary = commands.add_parser("canary", help="canary releases: show, set, promote, rollback, reset (live in every "
                                                "worker; kept across restarts)")
    ops = canary.add_subparsers(dest="op", required=True)
    ops.add_parser("show", parents=[common], help="every stage's deployment and canary")
    set_op = ops.add_parser("set", parents=[common, stage], help="create or change a stage's canary")
    set_op.add_argument("--deployment", help="the canary's deployment")
    set_op.add_argument("--percent", type=float, help="percentTraffic, 0.0 - 100.0")
    set_op.add_argument("--override", action="append", metavar="NAME=VALUE",
                        help="a stage variable override for canary requests; repeatable")
    set_op.add_argument("--use-stage-cache", action=argparse.BooleanOptionalAction, default=None)
    promote = ops.add_parser("promote", parents=[common, stage],
                             help="the canary's deployment becomes the stage's; percentTraffic 0 (AWS)")
    promote.add_argument("--keep-variables", action="store_true",
                         help="do not copy the canary's stage variable overrides into the stage")
    ops.add_parser("rollback", parents=[common, stage], help="remove the canary: all traffic to the stage's deployment")
    reset = ops.add_parser("reset", parents=[common, stage],
                           help="drop the stored canary state of a stage: the config file's stage applies again")
    reset.add_argument("--all", action="store_true", help="every stage with stored state")
    for parser in ops.choices.values():
        parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="as for serve")
        parser.add_argument("--function", action="append", metavar="NAME=module:function", help="as for serve")
    canary.set_defaults(func=cmd_canary)
