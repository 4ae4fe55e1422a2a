"""$input and $util: the objects API Gateway gives every mapping template.

Plain Python shared by both renderers (they call these through ordinary method calls).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import orjson

from .errors import RenderError
from .render import to_str

# ---------------------------------------------------------------------------------------------
# JSON values as AWS hands them to templates
# ---------------------------------------------------------------------------------------------


def parse_json_value(text: str) -> Any:
    """JSON text -> dict/list/str/int/float/bool/None (orjson; the stdlib for what orjson refuses, such as
    integers beyond 64 bits). Plain lists print as JSON, as AWS prints payload arrays."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def json_text(v: Any) -> str:
    try:
        return orjson.dumps(v, default=to_str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # integers beyond 64 bits
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=to_str)


# ---------------------------------------------------------------------------------------------
# JSONPath (the subset mapping templates use): $ .name ['name'] [n] [*] .* ..name
# ---------------------------------------------------------------------------------------------

_PATH_CACHE: dict[str, tuple[list[tuple[str, Any]], bool]] = {}
_NAME = re.compile(r"[^.\[\]\s]+")


def compile_jsonpath(path: str) -> tuple[list[tuple[str, Any]], bool]:
    """-> (steps, definite). Steps: ("key", name), ("idx", n), ("all", None), ("deep", name or None)."""
    hit = _PATH_CACHE.get(path)
    if hit is not None:
        return hit
    p = path.strip()
    if not p.startswith("$"):
        p = "$." + p if p and p[0] != "[" else "$" + p
    steps: list[tuple[str, Any]] = []
    i, n = 1, len(p)
    try:
        while i < n:
            c = p[i]
            if p.startswith("..", i):
                i += 2
                if i < n and p[i] == "*":
                    steps.append(("deep", None))
                    i += 1
                elif i < n and p[i] == "[":
                    steps.append(("deep", None))
                else:
                    m = _NAME.match(p, i)
                    if not m:
                        raise ValueError("a name after '..'")
                    steps.append(("deep", m.group()))
                    i = m.end()
            elif c == ".":
                i += 1
                if i < n and p[i] == "*":
                    steps.append(("all", None))
                    i += 1
                else:
                    m = _NAME.match(p, i)
                    if not m:
                        raise ValueError("a name after '.'")
                    steps.append(("key", m.group()))
                    i = m.end()
            elif c == "[":
                e = p.index("]", i)
                inner = p[i + 1:e].strip()
                if inner == "*":
                    steps.append(("all", None))
                elif inner[:1] in ("'", '"') and inner[-1:] == inner[:1] and len(inner) >= 2:
                    steps.append(("key", inner[1:-1]))
                else:
                    steps.append(("idx", int(inner)))
                i = e + 1
            else:
                raise ValueError(f"unexpected {c!r}")
    except ValueError as e:
        raise RenderError(f"invalid JSONPath {path!r}: {e}") from None
    definite = all(s[0] in ("key", "idx") for s in steps)
    out = (steps, definite)
    if len(_PATH_CACHE) < 1024:
        _PATH_CACHE[path] = out
    return out


def _children(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return list(v.values())
    if isinstance(v, list):
        return list(v)
    return []


def _deep(v: Any, name: str | None, acc: list[Any]) -> None:
    if isinstance(v, dict):
        if name is None:
            acc.extend(v.values())
        elif name in v:
            acc.append(v[name])
        for x in v.values():
            _deep(x, name, acc)
    elif isinstance(v, list):
        if name is None:
            acc.extend(v)
        for x in v:
            _deep(x, name, acc)


_NOTHING = object()


def eval_jsonpath(root: Any, path: str) -> Any:
    """A definite path gives its value (None when absent); a wildcard or deep scan gives a list."""
    steps, definite = compile_jsonpath(path)
    if definite:
        v = root
        for kind, arg in steps:
            if kind == "key":
                if not isinstance(v, dict):
                    return None
                v = v.get(arg)
            else:
                if not isinstance(v, list):
                    return None
                i = arg + len(v) if arg < 0 else arg
                if not 0 <= i < len(v):
                    return None
                v = v[i]
        return v
    cur = [root]
    for kind, arg in steps:
        nxt: list[Any] = []
        for v in cur:
            if kind == "key":
                if isinstance(v, dict) and arg in v:
                    nxt.append(v[arg])
            elif kind == "idx":
                if isinstance(v, list):
                    i = arg + len(v) if arg < 0 else arg
                    if 0 <= i < len(v):
                        nxt.append(v[i])
            elif kind == "all":
                nxt.extend(_children(v))
            else:
                _deep(v, arg, nxt)
        cur = nxt
    return cur


# ---------------------------------------------------------------------------------------------
# $input
# ---------------------------------------------------------------------------------------------


class Input:
    """``$input``: the payload and the request parameters of one request (make one per request)."""

    __slots__ = ("body", "_path", "_querystring", "_header", "_root", "_params", "_lower")

    def __init__(self, body: str = "", path: dict[str, str] | None = None,
                 querystring: dict[str, str] | None = None, header: dict[str, str] | None = None) -> None:
        self.body = body if body is not None else ""
        self._path = path if path is not None else {}
        self._querystring = querystring if querystring is not None else {}
        self._header = header if header is not None else {}
        self._root: Any = _NOTHING
        self._params: dict[str, dict[str, str]] | None = None
        self._lower: dict[str, str] | None = None

    def _doc(self) -> Any:
        """The payload as JSON, parsed once; a payload that is not JSON stands for itself (a string),
        an empty one for an empty object."""
        root = self._root
        if root is _NOTHING:
            body = self.body
            if not body.strip():
                root = {}
            else:
                try:
                    root = parse_json_value(body)
                except ValueError:
                    root = body
            self._root = root
        return root

    def json(self, path: str = "$") -> str:
        """``$input.json(x)``: the JSONPath's value as JSON text ("" when there is none)."""
        v = eval_jsonpath(self._doc(), to_str(path))
        if v is None and not self._has(path):
            return ""
        return json_text(v)

    def _has(self, path: Any) -> bool:
        steps, definite = compile_jsonpath(to_str(path))
        if not definite:
            return True
        v = self._doc()
        for kind, arg in steps:
            if kind == "key":
                if not isinstance(v, dict) or arg not in v:
                    return False
                v = v[arg]
            else:
                if not isinstance(v, list) or not -len(v) <= arg < len(v):
                    return False
                v = v[arg]
        return True

    def path(self, path: str) -> Any:
        """``$input.path(x)``: the JSONPath's value as an object the template can use."""
        if path == "$":
            return self._doc()
        return eval_jsonpath(self._doc(), to_str(path))

    def params(self, name: Any = None) -> Any:
        """``$input.params()``: {path, querystring, header}; ``$input.params(x)``: one value, searched in
        path, then query string, then header (header names case-insensitively); "" when absent."""
        if name is None:
            p = self._params
            if p is None:
                p = self._params = {"path": self._path, "querystring": self._querystring, "header": self._header}
            return p
        name = to_str(name)
        v = self._path.get(name)
        if v is None:
            v = self._querystring.get(name)
        if v is None:
            v = self._header.get(name)
            if v is None:
                low = self._lower
                if low is None:
                    low = self._lower = {k.lower(): x for k, x in self._header.items()}
                v = low.get(name.lower())
        return "" if v is None else v

    def getBody(self) -> str:  # noqa: N802 - Java bean name
        return self.body

    def __str__(self) -> str:
        return "$input"


# ---------------------------------------------------------------------------------------------
# $util
# ---------------------------------------------------------------------------------------------


def escape_javascript(s: str) -> str:
    """Apache commons-lang StringEscapeUtils.escapeJavaScript (what AWS runs): ' " \\ / escaped with a
    backslash, \\b \\t \\n \\f \\r by name, other control characters and everything above 0x7E as \\uXXXX
    (upper-case hex, UTF-16 units)."""
    out = []
    for ch in s:
        o = ord(ch)
        if 32 <= o < 0x7F:
            if ch == "'" or ch == '"' or ch == "\\" or ch == "/":
                out.append("\\" + ch)
            else:
                out.append(ch)
        elif o < 32:
            named = _CTRL.get(o)
            out.append(named if named is not None else f"\\u{o:04X}")
        elif o == 0x7F:
            out.append(ch)
        elif o > 0xFFFF:
            o -= 0x10000
            out.append(f"\\u{0xD800 + (o >> 10):04X}\\u{0xDC00 + (o & 0x3FF):04X}")
        else:
            out.append(f"\\u{o:04X}")
    return "".join(out)


_CTRL = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}


class Util:
    """``$util``: escapeJavaScript, parseJson, urlEncode, urlDecode, base64Encode, base64Decode (+ toJson)."""

    __slots__ = ()

    def escapeJavaScript(self, s: Any) -> str | None:  # noqa: N802 - AWS name
        if s is None:
            return None
        return escape_javascript(to_str(s))

    def parseJson(self, s: Any) -> Any:  # noqa: N802 - AWS name
        if s is None:
            return None
        try:
            return parse_json_value(to_str(s))
        except ValueError as e:
            raise RenderError(f"$util.parseJson: invalid JSON: {e}") from None

    def toJson(self, v: Any) -> str:  # noqa: N802 - LocalStack's extension
        return json_text(v)

    def urlEncode(self, s: Any) -> str | None:  # noqa: N802 - AWS name
        """java.net.URLEncoder.encode(s, "UTF-8"): letters, digits and .-*_ stay, space is +."""
        if s is None:
            return None
        return quote_plus(to_str(s), safe="*").replace("~", "%7E")

    def urlDecode(self, s: Any) -> str | None:  # noqa: N802 - AWS name
        if s is None:
            return None
        s = to_str(s)
        if re.search(r"%(?![0-9A-Fa-f]{2})", s):
            raise RenderError("$util.urlDecode: incomplete trailing escape (%) pattern")
        return unquote_plus(s, errors="replace")

    def base64Encode(self, s: Any) -> str | None:  # noqa: N802 - AWS name
        if s is None:
            return None
        return base64.b64encode(to_str(s).encode()).decode("ascii")

    def base64Decode(self, s: Any) -> str | None:  # noqa: N802 - AWS name
        if s is None:
            return None
        try:
            return base64.b64decode(to_str(s).encode(), validate=True).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError) as e:
            raise RenderError(f"$util.base64Decode: {e}") from None

    def __str__(self) -> str:
        return "$util"


UTIL = Util()
