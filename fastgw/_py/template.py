"""Pure-Python URI template / substitution (reference for the Cython build).

Placeholders: ``{name}``, ``{name+}`` (name is ``name``) and ``${dotted.name}``. Everything else is
literal text. Values are looked up by the full name (``values["stageVariables.backend"]``) and
inserted verbatim: no percent-encoding, non-str values go through ``str()``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class Placeholder(NamedTuple):
    name: str
    raw: str  # the source text, e.g. "${a.b}", kept so partial() templates print faithfully


Part = str | Placeholder


def parse(source: str) -> list[Part]:
    """Split source into literal strings and Placeholders; ValueError (1-based column) when malformed."""
    if not isinstance(source, str):
        raise TypeError(f"template must be str, not {type(source).__name__}")
    parts: list[Part] = []
    lit_start = 0
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "}":
            raise ValueError(f"unbalanced '}}' at column {i + 1} in template {source!r}")
        if ch != "{":
            i += 1
            continue
        dollar = i > lit_start and source[i - 1] == "$"
        start = i - 1 if dollar else i
        close = i + 1
        while close < n and source[close] not in "{}":
            close += 1
        if close == n or source[close] == "{":
            raise ValueError(f"unbalanced '{{' at column {i + 1} in template {source!r}")
        name = source[i + 1 : close]
        if not dollar and name.endswith("+"):
            name = name[:-1]
        if not _NAME.match(name):
            raise ValueError(f"invalid placeholder name {name!r} at column {i + 1} in template {source!r}")
        if start > lit_start:
            parts.append(source[lit_start:start])
        # Interned, like the router's parameter names: the params dict of a match then holds the
        # very same key objects, and dict lookups succeed on identity.
        parts.append(Placeholder(sys.intern(name), source[start : close + 1]))
        i = lit_start = close + 1
    if lit_start < n:
        parts.append(source[lit_start:])
    return parts


def _unique_names(parts: list[Part]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.name for p in parts if isinstance(p, Placeholder)))


class Template:
    """A parsed template; see docs/DESIGN.md."""

    __slots__ = ("_parts", "names")

    def __init__(self, source: str) -> None:
        self._parts: list[Part] = parse(source)
        self.names: tuple[str, ...] = _unique_names(self._parts)

    @classmethod
    def _from_parts(cls, parts: list[Part]) -> Template:
        self = cls.__new__(cls)
        merged: list[Part] = []
        for part in parts:
            if isinstance(part, str):
                if not part:
                    continue
                if merged and isinstance(merged[-1], str):
                    merged[-1] += part
                    continue
            merged.append(part)
        self._parts = merged
        self.names = _unique_names(merged)
        return self

    def partial(self, values: Mapping[str, Any]) -> Template:
        parts: list[Part] = []
        for part in self._parts:
            if isinstance(part, Placeholder) and part.name in values:
                value = values[part.name]
                parts.append(value if isinstance(value, str) else str(value))
            else:
                parts.append(part)
        return Template._from_parts(parts)

    def render(self, values: Mapping[str, Any]) -> str:
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                value = values[part.name]
            except KeyError:
                raise KeyError(part.name) from None
            out.append(value if isinstance(value, str) else str(value))
        return "".join(out)

    @property
    def source(self) -> str:
        return "".join(p if isinstance(p, str) else p.raw for p in self._parts)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"
