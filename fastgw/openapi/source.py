"""Config sources: an OpenAPI document served directly, or a native config that includes OpenAPI
documents per API (`openapi: FILE`) or per deployment (`deployments: {v2: {openapi: FILE}}`).

`expand()` turns either into one native document (plain data) that `read_config` and
`compile_config` then treat like any other, and remembers where each imported part came from, so
that a problem found later in the native data is reported at its place in the OpenAPI file.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.loader import ConfigError, Document, Problem, load_document
from .reader import Imported, is_openapi, read_openapi

log = logging.getLogger("fastgw")


@dataclass
class LoadOptions:
    """What the command line adds to a config: CloudFormation values, URI rewrites, handlers, and for
    an OpenAPI document served directly its stage."""

    params: dict[str, str] = field(default_factory=dict)
    upstreams: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    stage: str | None = None
    stage_variables: dict[str, str] = field(default_factory=dict)
    api_type: str | None = None
    name: str | None = None
    iam_credentials: str | None = None  # --iam-credentials: server.iam.credentialsFile (an absolute path)

    def is_empty(self) -> bool:
        return not (self.params or self.upstreams or self.functions or self.stage or self.stage_variables
                    or self.api_type or self.name or self.iam_credentials)


# The options `fastgw serve` was started with: every later load (reloads) uses them too.
DEFAULT_OPTIONS: LoadOptions | None = None


@dataclass
class Origin:
    prefix: str  # native path, e.g. "apis[0].routes[3].integration"
    document: Document
    path: str  # path in that document, e.g. "paths./pets.get.x-amazon-apigateway-integration"
    label: str  # "" for the config file itself, else the included file's name


@dataclass
class Expanded:
    """A config ready for read_config: native data, plus what it was made from."""

    data: Any
    source: str
    document: Document  # the file given
    files: list[str] = field(default_factory=list)  # every file read (for --watch)
    warnings: list[str] = field(default_factory=list)  # printed once per load
    origins: list[Origin] = field(default_factory=list)
    overlaid: bool = False  # the run-time canary changes are already in `data` (fastgw/state/canary.py)

    def line_of(self, path: str) -> int | None:
        return self.document.line_of(path)

    def locate(self, problem: Problem) -> Problem:
        """A problem in native terms, moved to its place in the file it came from."""
        best: Origin | None = None
        for origin in self.origins:
            p = origin.prefix
            if (problem.path == p or problem.path.startswith(p + ".") or problem.path.startswith(p + "[")) and (
                    best is None or len(p) > len(best.prefix)):
                best = origin
        if best is None:
            return Problem(problem.path, problem.message, problem.line or self.document.line_of(problem.path))
        rest = problem.path[len(best.prefix):]
        if best.prefix.endswith("]") and rest in (".route", ".operation"):
            rest = ""
        path = best.path + rest
        line = best.document.line_of(path)
        where = f"{best.label}: {path}" if best.label else path
        return Problem(where, problem.message, line)


def _located(document: Document, label: str, problems: list[Problem]) -> list[Problem]:
    out = []
    for p in problems:
        where = f"{label}: {p.path}" if label else p.path
        out.append(Problem(where, p.message, p.line or document.line_of(p.path)))
    return out


def format_unimplemented(label: str, items: list[tuple[str, str]]) -> str | None:
    if not items:
        return None
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for what, where in items:
        groups.setdefault(what, []).append(where)
    lines = [f"{label}: {len(items)} field(s) or extension(s) fastgw does not implement (kept in the model and "
             "exported back):"]
    for what, places in groups.items():
        lines.append(f"  - {what}: {', '.join(places)}")
    return "\n".join(lines)


def _import(document: Document, label: str, params: dict[str, str], api_type: str | None,
            problems: list[Problem]) -> Imported:
    imported = read_openapi(document, params, api_type)
    problems.extend(_located(document, label, imported.problems))
    return imported


def _include(path_text: Any, base: Path, where: str, problems: list[Problem]) -> tuple[Document, str] | None:
    if not isinstance(path_text, str) or not path_text:
        problems.append(Problem(where, "must be the path of an OpenAPI document"))
        return None
    path = (base / path_text) if not Path(path_text).is_absolute() else Path(path_text)
    try:
        document = load_document(path)
    except ConfigError as exc:
        problems.extend(Problem(f"{path_text}: {p.path}" if p.path else where, p.message, p.line)
                        for p in exc.problems)
        return None
    if not is_openapi(document.data):
        problems.append(Problem(where, f"'{path_text}' is not an OpenAPI 3.x or Swagger 2.0 document"))
        return None
    return document, path_text


def expand(document: Document | Expanded, options: LoadOptions | None = None) -> Expanded:
    """The native form of `document`; raises ConfigError (with located problems) when an included
    document cannot be read."""
    if isinstance(document, Expanded):
        return document
    options = options or LoadOptions()
    data = document.data
    problems: list[Problem] = []
    if is_openapi(data):
        imported = _import(document, "", options.params, options.api_type, problems)
        if problems:
            raise ConfigError(document.source, problems)
        api = imported.api
        if options.name:
            api["name"] = options.name
        stage = options.stage or ("$default" if api["type"] == "HTTP" else "prod")
        api["stages"] = {stage: {"variables": dict(options.stage_variables)} if options.stage_variables else {}}
        api["source"] = document.source
        native: dict[str, Any] = {"apis": [api]}
        _add_options(native, options)
        expanded = Expanded(native, document.source, document, [str(Path(document.source).resolve())])
        expanded.origins = [Origin(f"apis[0].{prefix}", document, path, "") for prefix, path in imported.origins]
        expanded.origins.append(Origin("apis[0]", document, "", ""))
        note = format_unimplemented(document.source, imported.unimplemented)
        if note:
            expanded.warnings.append(note)
        return expanded

    if options.stage or options.stage_variables or options.api_type or options.name:
        raise ConfigError(document.source, [Problem("", "--stage, --stage-variable, --api-type and --name apply to "
                                                    "an OpenAPI document; a native config names its stages")])
    expanded = Expanded(data, document.source, document, [str(Path(document.source).resolve())])
    if not isinstance(data, dict) or not isinstance(data.get("apis"), list):
        if not options.is_empty() and isinstance(data, dict):
            expanded.data = data = dict(data)
            _add_options(data, options)
        return expanded
    includes = any(isinstance(api, dict) and ("openapi" in api or any(
        isinstance(d, dict) and "openapi" in d for d in (api.get("deployments") or {}).values()
        if isinstance(api.get("deployments"), dict))) for api in data["apis"])
    if not includes and options.is_empty():
        return expanded
    data = dict(data)
    data["apis"] = list(data["apis"])
    base = Path(document.source).resolve().parent
    params = {**_string_map(data.get("parameters")), **options.params}
    for i, api in enumerate(data["apis"]):
        if not isinstance(api, dict):
            continue
        where = f"apis[{i}]"
        if "openapi" in api:
            api = dict(api)
            data["apis"][i] = api
            found = _include(api.pop("openapi"), base, f"{where}.openapi", problems)
            if found is not None:
                included, label = found
                expanded.files.append(str(Path(included.source).resolve()))
                imported = _import(included, label, params, api.get("type"), problems)
                if "routes" in api:
                    problems.append(Problem(f"{where}.routes", "give either routes or openapi, not both (the "
                                            "document's paths are the routes)"))
                for key, value in imported.api.items():
                    if key == "name" and "name" in api:
                        continue
                    if key not in api:
                        api[key] = value
                    elif isinstance(value, dict) and isinstance(api[key], dict) and key != "stages":
                        api[key] = {**value, **api[key]}  # the config's own settings win
                api["source"] = str(included.source)
                expanded.origins.extend(Origin(f"{where}.{prefix}", included, path, label)
                                        for prefix, path in imported.origins)
                note = format_unimplemented(label, imported.unimplemented)
                if note:
                    expanded.warnings.append(note)
        deployments = api.get("deployments")
        if isinstance(deployments, dict) and any(isinstance(d, dict) and "openapi" in d for d in deployments.values()):
            api = dict(api)
            data["apis"][i] = api
            api["deployments"] = deployments = dict(deployments)
            for name, spec in deployments.items():
                if not isinstance(spec, dict) or "openapi" not in spec:
                    continue
                dwhere = f"{where}.deployments.{name}"
                spec = dict(spec)
                deployments[name] = spec
                found = _include(spec.pop("openapi"), base, f"{dwhere}.openapi", problems)
                if found is None:
                    continue
                included, label = found
                expanded.files.append(str(Path(included.source).resolve()))
                imported = _import(included, label, params, api.get("type"), problems)
                if "routes" in spec:
                    problems.append(Problem(f"{dwhere}.routes", "give either routes or openapi, not both"))
                spec["routes"] = copy.deepcopy(imported.api.get("routes", []))
                spec["source"] = str(included.source)
                expanded.origins.extend(Origin(f"{dwhere}.{prefix}", included, path, label)
                                        for prefix, path in imported.origins if prefix.startswith("routes"))
                note = format_unimplemented(label, [u for u in imported.unimplemented
                                                    if u[1].startswith("paths.")])
                if note:
                    expanded.warnings.append(note)
    if problems:
        raise ConfigError(document.source, [Problem(p.path, p.message, p.line or document.line_of(p.path))
                                            for p in problems])
    _add_options(data, options)
    expanded.data = data
    return expanded


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float) and not isinstance(v, bool)}


def _add_options(data: dict[str, Any], options: LoadOptions) -> None:
    """Command-line values beat the file's."""
    for key, extra in (("parameters", options.params), ("upstreams", options.upstreams),
                       ("functions", options.functions)):
        if extra:
            current = data.get(key)
            data[key] = {**(current if isinstance(current, dict) else {}), **extra}
    server = data.get("server")
    if options.iam_credentials and (server is None or isinstance(server, dict)):
        server = dict(server or {})
        iam = server.get("iam")
        server["iam"] = {**(iam if isinstance(iam, dict) else {}), "credentialsFile": options.iam_credentials}
        data["server"] = server


def load_source(path: str | Path, options: LoadOptions | None = None) -> Expanded:
    """Read a config file (native or OpenAPI) into its native form."""
    return expand(load_document(path), options)
