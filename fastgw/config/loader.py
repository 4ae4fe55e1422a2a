"""Reading a config file: YAML or JSON into plain data, with `${env:NAME}` resolved and the
line/column of every value kept so that errors can point into the file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # e.g. "apis[0].routes[2].integration.uri"
    message: str
    line: int | None = None  # 1-based, when known

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """A config that cannot be loaded; carries every problem found, not just the first."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


@dataclass(slots=True)
class Document:
    """Parsed file content plus where each value came from."""

    data: Any
    source: str
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        # The nearest enclosing value that has a position.
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _construct(
    node: yaml.Node, path: str, lines: dict[str, int], problems: list[Problem], loader: yaml.SafeLoader
) -> Any:
    """Build plain data from a composed YAML node, recording positions by path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(path, "a key must be a plain value", key_node.start_mark.line + 1))
                continue
            key = _text(str(key_node.value), path, key_node.start_mark.line + 1, problems)
            child = _child(path, key)
            if key in result:
                problems.append(Problem(child, "duplicate key", key_node.start_mark.line + 1))
            result[key] = _construct(value_node, child, lines, problems, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, _child(path, i), lines, problems, loader) for i, item in enumerate(node.value)]
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:  # a tag YAML's safe loader has no constructor for (`!true`, `!!python/...`)
        problem = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(path, f"not valid YAML/JSON: {problem}", lines[path]))
        return None
    return _text(value, path, lines[path], problems) if isinstance(value, str) else value


def _text(value: str, path: str, line: int, problems: list[Problem]) -> str:
    """A scalar as text. YAML leaves a JSON escape of a character outside the BMP ("\\ud800\\udc00")
    as two UTF-16 surrogates: joined here into the one character JSON means. A lone surrogate is not
    text (it cannot be encoded, as a file name, a header or a log line): refused with its place."""
    if not any("\ud800" <= c <= "\udfff" for c in value):
        return value
    try:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        problems.append(Problem(path, "not valid text: a lone UTF-16 surrogate (\\ud800-\\udfff)", line))
        return value


def parse_text(text: str, source: str) -> Document:
    """YAML (a superset of JSON) with positions; a syntax error becomes a ConfigError."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem("", f"not valid YAML/JSON: {problem}", line)]) from None
    lines: dict[str, int] = {}
    problems: list[Problem] = []
    loader = yaml.SafeLoader("")
    try:
        data = _construct(root, "", lines, problems, loader) if root is not None else None
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(source, problems)
    return Document(data=data, source=source, lines=lines)


def resolve_env(value: Any, path: str, problems: list[Problem], env: dict[str, str] | None = None) -> Any:
    """Replace `${env:NAME}` (or `${env:NAME:-default}`) in every string value."""
    env = os.environ if env is None else env
    if isinstance(value, str):
        if "${env:" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(path, f"environment variable {name} is not set"))
            return ""

        return ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: resolve_env(v, _child(path, k), problems, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, _child(path, i), problems, env) for i, v in enumerate(value)]
    return value


def load_document(path: str | Path) -> Document:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [Problem("", f"not UTF-8 text: {exc}")]) from None
    return parse_text(text, source)
