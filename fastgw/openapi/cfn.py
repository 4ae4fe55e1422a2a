"""CloudFormation intrinsics found in exported or SAM-embedded OpenAPI documents.

A document pulled out of a CloudFormation/SAM template (`AWS::Include`, `DefinitionBody`) still
carries `Fn::Sub`, `Ref`, `Fn::GetAtt`, `Fn::Join` and pseudo parameters such as `${AWS::Region}`.
They are resolved here from values the user gives (`--param NAME=VALUE`, `parameters:` in a native
config); a missing value is an error that names it and says where it was needed.

    Ref: Name                      -> parameters["Name"]
    Fn::GetAtt: [Res, Attr]        -> parameters["Res.Attr"]   (also "Res.Attr" as one string)
    Fn::Sub: "text ${Name} ${Res.Attr} ${!Literal}"  or  [text, {Name: value, ...}]
    Fn::Join: [delimiter, [parts]]
    Fn::Select / Fn::Split / Fn::If / Fn::ImportValue / Fn::FindInMap: refused with a clear message

`AWS::Partition` (aws) and `AWS::URLSuffix` (amazonaws.com) have defaults; every other value,
`AWS::Region` and `AWS::AccountId` included, must be given.
"""

from __future__ import annotations

import re
from typing import Any

from ..config.loader import Problem

DEFAULTS = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": ""}
SUB_VAR = re.compile(r"\$\{(!?)([^}]*)\}")
INTRINSICS = ("Ref", "Fn::Sub", "Fn::GetAtt", "Fn::Join", "Fn::Select", "Fn::Split", "Fn::If",
              "Fn::ImportValue", "Fn::FindInMap", "Fn::Base64", "Fn::GetAZs", "Fn::Cidr", "Fn::Length",
              "Fn::ToJsonString", "Fn::Transform")
# A `${name}` placeholder outside Fn::Sub (Terraform's templatefile, or AWS's own examples such
# as `"uri": "${uri}"`): resolved when a value is given, otherwise left as written.
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_:.\-]*)\}")
RUNTIME_PREFIXES = ("stageVariables.", "env:", "context.", "request.")


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Resolver:
    def __init__(self, params: dict[str, str]):
        self.params = {**DEFAULTS, **params}
        self.problems: list[Problem] = []
        self.used: set[str] = set()
        self.found = 0  # intrinsics seen

    def lookup(self, name: str, path: str, what: str) -> str:
        if name in self.params:
            self.used.add(name)
            return str(self.params[name])
        self.problems.append(Problem(path, f"{what} needs the value of '{name}': give it with --param "
                                     f"{name}=VALUE (or parameters: {{{name}: VALUE}} in the config)"))
        return "${" + name + "}"

    def resolve(self, value: Any, path: str = "") -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                (key, arg), = value.items()
                if key in INTRINSICS:
                    self.found += 1
                    return self.intrinsic(key, arg, _child(path, key))
            return {k: self.resolve(v, _child(path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, _child(path, i)) for i, v in enumerate(value)]
        return value

    def intrinsic(self, key: str, arg: Any, path: str) -> Any:
        if key == "Ref":
            if not isinstance(arg, str):
                self.problems.append(Problem(path, "Ref takes a name"))
                return ""
            return self.lookup(arg, path, "Ref")
        if key == "Fn::GetAtt":
            if isinstance(arg, str) and "." in arg:
                name = arg
            elif isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, str) for a in arg):
                name = f"{arg[0]}.{arg[1]}"
            else:
                self.problems.append(Problem(path, "Fn::GetAtt takes [Resource, Attribute]"))
                return ""
            return self.lookup(name, path, "Fn::GetAtt")
        if key == "Fn::Sub":
            local: dict[str, Any] = {}
            text = arg
            if isinstance(arg, list):
                if len(arg) != 2 or not isinstance(arg[0], str) or not isinstance(arg[1], dict):
                    self.problems.append(Problem(path, "Fn::Sub takes a string or [string, {NAME: value}]"))
                    return ""
                text = arg[0]
                local = {k: self.resolve(v, _child(_child(path, 1), k)) for k, v in arg[1].items()}
            if not isinstance(text, str):
                self.problems.append(Problem(path, "Fn::Sub takes a string"))
                return ""
            return self.sub(text, local, path)
        if key == "Fn::Join":
            if (not isinstance(arg, list) or len(arg) != 2 or not isinstance(arg[0], str)
                    or not isinstance(arg[1], list)):
                self.problems.append(Problem(path, "Fn::Join takes [delimiter, [values]]"))
                return ""
            parts = [self.resolve(v, _child(_child(path, 1), i)) for i, v in enumerate(arg[1])]
            return arg[0].join(str(p) for p in parts)
        self.problems.append(Problem(path, f"{key} is not supported in an imported document; resolve it "
                                     "before import (supported: Ref, Fn::Sub, Fn::GetAtt, Fn::Join)"))
        return ""

    def sub(self, text: str, local: dict[str, Any], path: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1):  # ${!Literal} stays as ${Literal}
                return "${" + match.group(2) + "}"
            name = match.group(2).strip()
            if name in local:
                return str(local[name])
            return self.lookup(name, path, "Fn::Sub")

        return SUB_VAR.sub(one, text)

    def placeholders(self, text: str, path: str, required: bool) -> str:
        """`${name}` outside Fn::Sub: substituted from the parameters; left as written when no value
        is given, unless `required` (then the missing name is reported)."""
        if "${" not in text:
            return text

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith(RUNTIME_PREFIXES):
                return match.group(0)
            if name in self.params:
                self.used.add(name)
                return str(self.params[name])
            if required:
                return self.lookup(name, path, "the placeholder")
            return match.group(0)

        return PLACEHOLDER.sub(one, text)


def has_intrinsics(value: Any) -> bool:
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in INTRINSICS:
            return True
        return any(has_intrinsics(v) for v in value.values())
    if isinstance(value, list):
        return any(has_intrinsics(v) for v in value)
    return False
