"""`fastgw keys ...` and `fastgw usage ...`: API keys and usage from the command line.

Both read the config file (for the usage plans and where the state lives: `-c FILE` or
FASTGW_CONFIG) and work whether the gateway runs or not; a running gateway picks up key changes
within a second. Output is JSON, like the AWS CLI's.

Exit codes, the same for every `keys` and `usage` command: 0 done; 2 a usage or config error (a bad
flag or value (a date that is not YYYY-MM-DD, a key value of the wrong length), no config file given, an
invalid config, a config with no usage plans, keys or throttles, --remaining without --plan); 1 an
operational failure (an unknown key, a key not in the plan, a name that exists, a key the config file
declares).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from typing import Any

import orjson

USAGE_ERROR, FAILURE = 2, 1


def _usage_error(message: str) -> SystemExit:
    print(f"fastgw: {message}", file=sys.stderr)
    return SystemExit(USAGE_ERROR)


def _service(args: argparse.Namespace) -> Any:
    from ..compile import load_plan
    from ..config.loader import ConfigError, load_document
    from ..policies.usage.service import UsageService

    path = args.config or os.environ.get("FASTGW_CONFIG")
    if not path:
        raise _usage_error("give the gateway's config file with -c FILE (or FASTGW_CONFIG)")
    try:
        plan = load_plan(load_document(path))
    except ConfigError as exc:
        print(f"fastgw: invalid config {exc}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
    if plan.usage is None:
        raise _usage_error(f"{path} declares no usage plans, API keys or throttles")
    return UsageService.open(plan.usage)


def _print(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _run(args: argparse.Namespace, action: Any) -> int:
    from ..policies.usage.service import UsageError

    service = _service(args)
    try:
        _print(action(service))
    except UsageError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        # 400: the command's own values are wrong (a bad date, name or value): a usage error.
        return USAGE_ERROR if exc.status == 400 else FAILURE
    finally:
        service.close()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    op = args.op
    if op == "list":
        return _run(args, lambda s: {"items": [r.public() for r in s.list_keys()]})
    if op == "create":
        def create(s: Any) -> Any:
            record, value = s.create_key(args.name, args.plan or [], args.value, not args.disabled)
            # The value is shown this once; only its SHA-256 digest is kept.
            return {**record.public(), "value": value}
        return _run(args, create)
    if op in ("disable", "revoke", "enable"):
        return _run(args, lambda s: s.set_enabled(args.key, op == "enable").public())
    return _run(args, lambda s: s.delete_key(args.key).public())


def cmd_usage(args: argparse.Namespace) -> int:
    if args.remaining is not None:
        if not args.plan:
            raise _usage_error("--remaining needs --plan")
        return _run(args, lambda s: s.update_usage(args.key, args.plan, args.remaining))
    today = dt.datetime.now(dt.UTC).date()
    start = args.start or (today - dt.timedelta(days=6)).isoformat()
    end = args.end or today.isoformat()
    return _run(args, lambda s: {"items": s.get_usage(args.key, start, end, args.plan)})


def add_parsers(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="the gateway's config file (env FASTGW_CONFIG)")

    keys = commands.add_parser("keys", help="API keys: create, list, enable, disable (revoke), delete")
    ops = keys.add_subparsers(dest="op", required=True)
    ops.add_parser("list", parents=[common], help="list keys (never their values)")
    create = ops.add_parser("create", parents=[common], help="create a key; prints its value once")
    create.add_argument("--name", required=True)
    create.add_argument("--plan", action="append", help="usage plan (repeat for several)")
    create.add_argument("--value", help="the key's value (20-128 characters); generated when absent")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    for name, text in (("enable", "enable a key"), ("disable", "disable a key (403 until enabled)"),
                       ("revoke", "same as disable"), ("delete", "delete a key")):
        op = ops.add_parser(name, parents=[common], help=text)
        op.add_argument("key", help="key id or name")
    keys.set_defaults(func=cmd_keys)

    usage = commands.add_parser("usage", parents=[common],
                                help="a key's daily usage (AWS GetUsage) or a quota change (UpdateUsage)")
    usage.add_argument("key", help="key id or name")
    usage.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: 6 days ago, UTC)")
    usage.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: today, UTC)")
    usage.add_argument("--plan", help="one usage plan (default: all of the key's plans)")
    usage.add_argument("--remaining", type=int,
                       help="UpdateUsage: set the requests left in this quota period (needs --plan)")
    usage.set_defaults(func=cmd_usage)
