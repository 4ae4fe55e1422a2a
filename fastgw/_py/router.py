"""Pure-Python router: a trie of path segments (reference for the Cython build).

Precedence per segment is literal > ``{param}`` > ``{greedy+}``, tried depth-first so that a
dead end further down falls back to the next kind (backtracking). At the matching node an exact
method beats ``ANY``.
"""

from __future__ import annotations

import re
import sys
from typing import Any

_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+\Z")

LITERAL, PARAM, GREEDY = 0, 1, 2

NOT_FOUND = (2, None, None)


def parse_template(template: str) -> list[tuple[int, str]]:
    """Split a route template into (kind, text) segments; raise ValueError when malformed.

    text is the literal for LITERAL and the parameter name for PARAM/GREEDY. ``/`` gives [].
    """
    if not isinstance(template, str):
        raise TypeError(f"route template must be str, not {type(template).__name__}")
    if not template.startswith("/"):
        raise ValueError(f"route template must start with '/': {template!r}")
    body = template[1:]
    if len(body) > 1 and body.endswith("/"):  # one trailing slash is insignificant; "//" is not
        body = body[:-1]
    if not body:
        return []
    segments: list[tuple[int, str]] = []
    seen: set[str] = set()
    raw = body.split("/")
    for i, seg in enumerate(raw):
        if not seg:
            raise ValueError(f"empty path segment in route template {template!r}")
        if "{" not in seg and "}" not in seg:
            segments.append((LITERAL, seg))
            continue
        if not (seg.startswith("{") and seg.endswith("}")):
            raise ValueError(f"a parameter must be a whole path segment in route template {template!r}")
        name = seg[1:-1]
        kind = PARAM
        if name.endswith("+"):
            kind = GREEDY
            name = name[:-1]
            if i != len(raw) - 1:
                raise ValueError(f"greedy parameter {seg} must be the last segment in {template!r}")
        if not _NAME.match(name):
            raise ValueError(f"invalid parameter name {name!r} in route template {template!r}")
        if name in seen:
            raise ValueError(f"duplicate parameter name {name!r} in route template {template!r}")
        seen.add(name)
        segments.append((kind, sys.intern(name)))  # shared with Template names: identity lookups
    return segments


def check_method(method: str) -> None:
    if not isinstance(method, str) or not _METHOD.match(method):
        raise ValueError(f"invalid method {method!r}: expected an upper-case token such as 'GET', or 'ANY'")


def split_path(path: str) -> list[str]:
    """Path segments with the leading slash and one trailing slash dropped; '/' gives []."""
    segs = path.split("/")
    start = 1 if path.startswith("/") else 0
    end = len(segs)
    if end > start and segs[end - 1] == "":
        end -= 1
    return segs[start:end]


class _Route:
    __slots__ = ("method", "template", "target", "names", "node")

    def __init__(self, method: str, template: str, target: Any, names: tuple[str, ...], node: _Node) -> None:
        self.method = method
        self.template = template
        self.target = target
        self.names = names
        self.node = node


class _Node:
    __slots__ = ("literals", "param", "greedy", "methods")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.greedy: _Node | None = None
        self.methods: dict[str, _Route] = {}

    def lookup(self, method: str | None) -> _Route | None:
        if method is None:  # the 405 search: any route on this node will do
            return next(iter(self.methods.values()), None)
        route = self.methods.get(method)
        if route is None:
            route = self.methods.get("ANY")
        return route

    def allowed(self) -> tuple[str, ...]:
        return tuple(sorted(m for m in self.methods if m != "ANY"))


def _find(node: _Node, segs: list[str], i: int, method: str | None, caps: list[str]) -> _Route | None:
    if i == len(segs):
        return node.lookup(method)
    seg = segs[i]
    child = node.literals.get(seg)
    if child is not None:
        route = _find(child, segs, i + 1, method, caps)
        if route is not None:
            return route
    # Empty segments only come from un-normalised paths; never bind them to a parameter.
    if node.param is not None and seg:
        caps.append(seg)
        route = _find(node.param, segs, i + 1, method, caps)
        if route is not None:
            return route
        caps.pop()
    if node.greedy is not None and seg:
        route = node.greedy.lookup(method)
        if route is not None:
            caps.append("/".join(segs[i:]))
            return route
    return None


class Router:
    """HTTP API style router. See docs/DESIGN.md for the interface."""

    def __init__(self) -> None:
        self._root = _Node()
        self._routes: list[tuple[str, str, Any]] = []
        self._default: Any = None
        self._has_default = False

    def add(self, method: str, template: str, target: Any) -> None:
        check_method(method)
        segments = parse_template(template)
        node = self._root
        names: list[str] = []
        for kind, text in segments:
            if kind == LITERAL:
                child = node.literals.get(text)
                if child is None:
                    child = node.literals[text] = _Node()
            elif kind == PARAM:
                names.append(text)
                child = node.param
                if child is None:
                    child = node.param = _Node()
            else:
                names.append(text)
                child = node.greedy
                if child is None:
                    child = node.greedy = _Node()
            node = child
        old = node.methods.get(method)
        if old is not None:
            raise ValueError(f"duplicate route {method} {template} (conflicts with {old.method} {old.template})")
        node.methods[method] = _Route(method, template, target, tuple(names), node)
        self._routes.append((method, template, target))

    def set_default(self, target: Any) -> None:
        self._default = target
        self._has_default = True

    def match(self, method: str, path: str) -> tuple[int, Any, dict[str, str] | None]:
        if not isinstance(path, str) or not isinstance(method, str):
            raise TypeError("method and path must be str")
        segs = split_path(path)
        caps: list[str] = []
        route = _find(self._root, segs, 0, method, caps)
        if route is not None:
            return (0, route.target, dict(zip(route.names, caps, strict=True)))
        if self._has_default:
            return (0, self._default, {})
        route = _find(self._root, segs, 0, None, [])
        if route is not None:
            return (1, route.node.allowed(), None)
        return NOT_FOUND

    def routes(self) -> list[tuple[str, str, Any]]:
        return list(self._routes)

    def __len__(self) -> int:
        return len(self._routes)
