"""`fastgw import` and `fastgw export`, and the load flags shared by serve, validate and routes.

    fastgw import api.yaml [-o gateway.yaml] [--param NAME=VALUE ...] [--stage prod] [--name NAME]
    fastgw export gateway.yaml [--api NAME] [--deployment NAME] [--format oas30|swagger] [-o api.json]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from ..openapi.source import LoadOptions


def _pairs(values: list[str] | None, flag: str, separator: str = "=") -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values or []:
        name, sep, rest = value.partition(separator)
        if not sep or not name:
            raise SystemExit(f"fastgw: {flag} takes NAME{separator}VALUE; got '{value}'")
        result[name] = rest
    return result


def _upstream_pairs(values: list[str] | None) -> dict[str, str]:
    """--upstream FROM=TO; FROM and TO are URLs, so split at the '=' that is followed by a scheme."""
    result: dict[str, str] = {}
    for value in values or []:
        cut = max(value.rfind("=http://"), value.rfind("=https://"))
        if cut <= 0:
            raise SystemExit(f"fastgw: --upstream takes FROM=TO (TO an http:// or https:// URL); got '{value}'")
        result[value[:cut]] = value[cut + 1:]
    return result


def add_load_flags(parser: argparse.ArgumentParser, openapi_only: bool = True) -> None:
    group = parser.add_argument_group("AWS API definitions")
    group.add_argument("--param", action="append", metavar="NAME=VALUE",
                       help="a CloudFormation value (Fn::Sub, Ref, Fn::GetAtt, ${AWS::Region}) or ${name} placeholder "
                            "of an OpenAPI document; repeatable")
    group.add_argument("--upstream", action="append", metavar="FROM=TO",
                       help="rewrite integration URIs starting with FROM to start with TO; repeatable")
    group.add_argument("--function", action="append", metavar="NAME=module:function",
                       help="the Python handler of a Lambda function (name or ARN); repeatable")
    group.add_argument("--stage", help="OpenAPI document: the stage name (default prod; HTTP APIs $default)")
    group.add_argument("--stage-variable", action="append", metavar="NAME=VALUE",
                       help="OpenAPI document: a stage variable; repeatable")
    group.add_argument("--api-type", choices=("REST", "HTTP"), help="OpenAPI document: REST or HTTP API (default: "
                                                                    "detected from the document)")
    group.add_argument("--name", dest="api_name", help="OpenAPI document: the API's name (default: info.title)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    functions = _pairs(getattr(args, "function", None), "--function")
    for name, handler in functions.items():
        if ":" not in handler:
            raise SystemExit(f"fastgw: --function {name}={handler}: the handler is module:function")
    return LoadOptions(
        params=_pairs(getattr(args, "param", None), "--param"),
        upstreams=_upstream_pairs(getattr(args, "upstream", None)),
        functions=functions,
        stage=getattr(args, "stage", None),
        stage_variables=_pairs(getattr(args, "stage_variable", None), "--stage-variable"),
        api_type=getattr(args, "api_type", None),
        name=getattr(args, "api_name", None),
        iam_credentials=os.path.abspath(args.iam_credentials) if getattr(args, "iam_credentials", None) else None,
    )


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"fastgw: warning: {note}", file=sys.stderr)


def _read(path: str, options: LoadOptions) -> tuple[Any, Any]:
    """(expanded, GatewayConfig) without compiling (handlers need not exist to import or export)."""
    from ..config.loader import ConfigError, Problem, resolve_env
    from ..config.model import read_config
    from ..openapi.source import load_source

    try:
        expanded = load_source(path, options)
        problems: list[Problem] = []
        data = resolve_env(expanded.data, "", problems)
        config, found = read_config(data)
        problems.extend(found)
        if problems:
            raise ConfigError(expanded.source, [expanded.locate(p) for p in problems])
    except ConfigError as exc:
        print(f"fastgw: invalid config {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return expanded, config


def _write(text: str, output: str | None) -> None:
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(output).write_text(text)


def _dump(data: Any, output: str | None, as_yaml: bool) -> None:
    if as_yaml:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    else:
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    _write(text, output)


def cmd_import(args: argparse.Namespace) -> int:
    options = load_options(args)
    expanded, _ = _read(args.file, options)
    print_notes(expanded.warnings)
    api = dict(expanded.data["apis"][0])
    api.pop("source", None)
    native: dict[str, Any] = {"version": 1, "apis": [api]}
    for key in ("functions", "upstreams"):
        if expanded.data.get(key):
            native[key] = expanded.data[key]
    as_yaml = not (args.output or "").endswith(".json")
    _dump(native, args.output, as_yaml)
    functions, params = bindings_needed(native)
    if functions or params:
        flags = [f"--function {name}=module:function" for name in functions]
        flags += [f"--param {name}=VALUE" for name in params]
        print("fastgw: to serve it, bind (serve, validate, routes): " + " ".join(flags), file=sys.stderr)
    return 0


PLACEHOLDER = re.compile(r"\$\{([^{}]+)\}")
BOUND_URIS = ("uri", "authorizerUri", "authorizerCredentials", "credentials")


def bindings_needed(native: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(the Lambda functions with no handler, the `${name}` placeholders with no value) of an imported
    config: what `--function NAME=module:function` and `--param NAME=VALUE` must give to serve it."""
    from ..openapi.reader import lambda_function

    bound = set((native.get("functions") or {}) if isinstance(native.get("functions"), dict) else ())
    functions: list[str] = []
    params: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in BOUND_URIS and isinstance(value, str):
                    found(value)
                else:
                    walk(value)

    def found(uri: str) -> None:
        for name in PLACEHOLDER.findall(uri):
            if not name.startswith(("stageVariables.", "env:")) and name not in params:
                params.append(name)
        arn = lambda_function(uri)
        if arn is not None and not PLACEHOLDER.search(uri):
            name = arn.split(":function:", 1)[1].split(":", 1)[0] if ":function:" in arn else arn
            if name not in bound and arn not in bound and name not in functions:
                functions.append(name)

    walk(native.get("apis"))
    return functions, params


FORMATS = {"oas30": "OpenAPI 3.0", "swagger": "Swagger 2.0"}


def cmd_export(args: argparse.Namespace) -> int:
    from ..openapi.convert import ConversionError
    from ..openapi.export import export_api

    options = load_options(args)
    _, config = _read(args.config, options)
    apis = config.apis
    if args.api:
        apis = [a for a in apis if a.name == args.api]
        if not apis:
            raise SystemExit(f"fastgw: no API named '{args.api}' (APIs: {', '.join(a.name for a in config.apis)})")
    elif len(apis) > 1:
        raise SystemExit(f"fastgw: the config has {len(apis)} APIs; choose one with --api "
                         f"({', '.join(a.name for a in apis)})")
    api = apis[0]
    if api.type == "WEBSOCKET":
        raise SystemExit(f"fastgw: API '{api.name}' is a WebSocket API: it has no OpenAPI form (AWS exports "
                         "REST and HTTP APIs only)")
    if args.deployment and args.deployment not in api.deployments and args.deployment != "current":
        raise SystemExit(f"fastgw: API '{api.name}' has no deployment '{args.deployment}'")
    try:
        document = export_api(api, config, args.deployment, args.format)
    except ConversionError as exc:
        print(f"fastgw: cannot export API '{api.name}' as {FORMATS[args.format]}: {exc}", file=sys.stderr)
        return 2
    as_yaml = (args.output or "").endswith((".yaml", ".yml"))
    _dump(document, args.output, as_yaml)
    return 0


def add_parsers(commands: Any) -> None:
    imp = commands.add_parser("import", help="an OpenAPI document (x-amazon-apigateway-*) -> native config (YAML)")
    imp.add_argument("file", help="OpenAPI 3.x or Swagger 2.0 document (JSON or YAML)")
    imp.add_argument("-o", "--output", help="write here (default stdout; .json writes JSON)")
    add_load_flags(imp)
    imp.set_defaults(func=cmd_import)

    exp = commands.add_parser("export", help="a config's API -> OpenAPI with x-amazon-apigateway-* extensions")
    exp.add_argument("config", help="native config or OpenAPI document")
    exp.add_argument("--api", help="which API (when the config has several)")
    exp.add_argument("--deployment", help="which deployment's routes (default: the API's own)")
    exp.add_argument("--format", choices=("oas30", "swagger"),
                     help="OpenAPI 3.0 or Swagger 2.0 (default: the imported document's, else oas30)")
    exp.add_argument("-o", "--output", help="write here (default stdout; .yaml/.yml writes YAML)")
    add_load_flags(exp)
    exp.set_defaults(func=cmd_export)
