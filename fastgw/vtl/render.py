"""The VTL renderer: compiled template nodes and the Java semantics they render with.

One source, two builds: this file runs as plain Python (the twin, ``fastgw.vtl.render``) and setup.py
also compiles it with Cython as ``fastgw.vtl._render``; ``_render.pxd`` next to it turns the classes
into extension types there. Keep it Cython-compatible Python (no code that needs the ``cython``
module). The parser (parser.py) builds these nodes once per template; rendering runs no parser and
no regular expression except those a template asks for (replaceAll, split, matches).

Semantics follow Apache Velocity 1.7 on Java, as AWS API Gateway runs it, with AWS's one difference:
a reference whose value is null renders as nothing (Velocity would print its source text).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from .errors import RenderError
from .types import Entry, JavaList

MAX_LOOPS = 1000  # AWS: a #foreach stops after 1,000 iterations

_MISSING = object()


class StopRender(Exception):
    """#stop: rendering ends here, the output so far is the result."""


class BreakLoop(Exception):
    """#break: leaves the innermost #foreach (or macro)."""


# ---------------------------------------------------------------------------------------------
# Java values: formatting, truth, equality, arithmetic
# ---------------------------------------------------------------------------------------------


def java_double(d):
    """Java's Double.toString."""
    if d != d:
        return "NaN"
    if d == math.inf:
        return "Infinity"
    if d == -math.inf:
        return "-Infinity"
    if d == 0.0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    a = abs(d)
    if 1e-3 <= a < 1e7:
        r = repr(d)
        if "e" in r or "E" in r:  # not reached for this range, kept for safety
            r = format(d, "f")
        if "." not in r:
            r += ".0"
        return r
    # Scientific: the shortest digits Python finds (what Java prints since JDK 19), in Java's layout.
    r = repr(a)
    if "e" in r:
        mant, _, exp = r.partition("e")
        if "." not in mant:
            mant += ".0"
        e = int(exp)
    else:  # positional repr (1e-4 <= a < 1e-3 or 1e7 <= a < 1e16): move the point
        ipart, _, fpart = r.partition(".")
        if ipart == "0":
            digits = fpart.lstrip("0")
            e = -(len(fpart) - len(digits)) - 1
        else:
            digits = ipart + fpart
            e = len(ipart) - 1
        digits = digits.rstrip("0") or "0"
        mant = digits[0] + "." + (digits[1:] or "0")
    sign = "-" if d < 0 else ""
    return sign + mant + "E" + str(e)


def to_str(v):
    """How Java's String.valueOf renders a value (for a null inside a container: ``null``)."""
    t = type(v)
    if t is str:
        return v
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return java_double(v)
    if t is list:
        return json_text(v)
    if isinstance(v, dict):
        return "{" + ", ".join([to_str(k) + "=" + to_str(x) for k, x in v.items()]) + "}"
    if isinstance(v, list) or t is tuple:
        return "[" + ", ".join([to_str(x) for x in v]) + "]"
    if t is Entry:
        return to_str(v.key) + "=" + to_str(v.value)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return java_double(float(v))
    return str(v)


def is_true(v):
    """Velocity 1.7: null is false, a Boolean is itself, anything else is true (even "" and 0)."""
    return v is not None and v is not False


def _is_num(v):
    t = type(v)
    return t is int or t is float


def _java_class(v):
    t = type(v)
    if t is str or t is bool or t is int or t is float:
        return t
    if isinstance(v, dict):
        return dict
    if isinstance(v, (list, tuple)):
        return list
    return t


def java_equals(a, b):
    """Velocity 1.7 ``==``: numbers by value, same classes by equals(), otherwise their strings.
    API Gateway's engine also takes null and the empty string as equal, both ways (recorded on AWS:
    tests/data/aws_vtl_input_path.json, `$input.path` of a missing or null value)."""
    if _is_num(a) and _is_num(b):
        return a == b
    if a is None or b is None:
        return (a is None and b is None) or a == "" or b == ""
    if _java_class(a) is _java_class(b):
        return a == b
    return to_str(a) == to_str(b)


def _trunc_div(a, b):
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _trunc_mod(a, b):
    r = abs(a) % abs(b)
    return -r if a < 0 else r


# ---------------------------------------------------------------------------------------------
# Java regular expressions and replacement strings (translated once per pattern, then cached)
# ---------------------------------------------------------------------------------------------

_POSIX = {
    "Lower": "a-z", "Upper": "A-Z", "ASCII": "\\x00-\\x7F", "Alpha": "a-zA-Z", "Digit": "0-9",
    "Alnum": "a-zA-Z0-9", "Punct": "!-/:-@\\[-`{-~", "Graph": "!-~", "Print": " -~", "Blank": " \\t",
    "Cntrl": "\\x00-\\x1F\\x7F", "XDigit": "0-9a-fA-F", "Space": " \\t\\n\\x0B\\f\\r",
    "L": "^\\W\\d_", "IsAlphabetic": "^\\W\\d_", "N": "\\d", "Nd": "\\d", "IsDigit": "\\d",
}

_regex_cache = {}
_repl_cache = {}


def _java_regex_to_python(p):
    out = []
    i = 0
    n = len(p)
    in_class = 0
    while i < n:
        c = p[i]
        if c == "\\" and i + 1 < n:
            d = p[i + 1]
            if d == "Q":
                j = p.find("\\E", i + 2)
                lit = p[i + 2:] if j < 0 else p[i + 2:j]
                out.append(re.escape(lit))
                i = n if j < 0 else j + 2
                continue
            if d in "pP" and i + 2 < n and p[i + 2] == "{":
                j = p.find("}", i + 3)
                name = p[i + 3:j] if j > 0 else ""
                if name.startswith("Is") and name[2:] in _POSIX:
                    name = name[2:]
                body = _POSIX.get(name)
                if body is None:
                    raise RenderError("unsupported regular expression class \\" + d + "{" + name + "}")
                neg = d == "P"
                if body.startswith("^"):  # a negated class of its own
                    body = body[1:]
                    neg = not neg
                if in_class:
                    if neg:
                        raise RenderError("unsupported negated class inside [] in regular expression")
                    out.append(body)
                else:
                    out.append(("[^" if neg else "[") + body + "]")
                i = j + 1
                continue
            if d == "z":
                out.append("\\Z")
                i += 2
                continue
            if d == "Z":
                out.append("(?=\\n?\\Z)")
                i += 2
                continue
            if d == "h":
                out.append("[ \\t\\xA0\\u1680\\u180e\\u2000-\\u200a\\u202f\\u205f\\u3000]")
                i += 2
                continue
            out.append(p[i:i + 2])
            i += 2
            continue
        if c == "[":
            if in_class and i + 1 < n and p[i + 1] == ":":
                out.append("\\[")
            elif in_class:
                # Java allows nested classes ([a-z[0-9]]): a union, flattened here.
                in_class += 1
                i += 1
                continue
            else:
                in_class = 1
                out.append(c)
                if i + 1 < n and p[i + 1] == "^":
                    out.append("^")
                    i += 1
                if i + 1 < n and p[i + 1] == "]":
                    out.append("\\]")
                    i += 1
            i += 1
            continue
        if c == "]" and in_class:
            in_class -= 1
            if in_class == 0:
                out.append("]")
            i += 1
            continue
        if c == "&" and in_class and p.startswith("&&", i):
            raise RenderError("unsupported class intersection (&&) in regular expression")
        if c == "(" and p.startswith("(?<", i) and i + 3 < n and p[i + 3] not in "=!":
            out.append("(?P<")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def java_regex(p):
    rx = _regex_cache.get(p)
    if rx is None:
        try:
            rx = re.compile(_java_regex_to_python(p))
        except re.error as e:
            raise RenderError("invalid regular expression " + repr(p) + ": " + str(e)) from None
        if len(_regex_cache) > 512:
            _regex_cache.clear()
        _regex_cache[p] = rx
    return rx


def _java_replacement(r):
    """Java's Matcher replacement syntax ($1, ${name}, backslash escapes) -> a list of parts:
    strings are literal, ints and names are groups."""
    parts = _repl_cache.get(r)
    if parts is not None:
        return parts
    parts = []
    lit = []
    i = 0
    n = len(r)
    while i < n:
        c = r[i]
        if c == "\\":
            i += 1
            if i >= n:
                raise RenderError("character to be escaped is missing")
            lit.append(r[i])
            i += 1
        elif c == "$":
            i += 1
            if i >= n:
                raise RenderError("Illegal group reference: group index is missing")
            if r[i] == "{":
                j = r.find("}", i)
                if j < 0:
                    raise RenderError("named capturing group is missing trailing '}'")
                if lit:
                    parts.append("".join(lit))
                    lit = []
                parts.append((r[i + 1:j],))
                i = j + 1
            elif "0" <= r[i] <= "9":
                j = i + 1
                while j < n and "0" <= r[j] <= "9":
                    j += 1
                if lit:
                    parts.append("".join(lit))
                    lit = []
                parts.append((None, r[i:j]))  # digits: resolved against the group count at match time
                i = j
            else:
                raise RenderError("Illegal group reference")
        else:
            lit.append(c)
            i += 1
    if lit:
        parts.append("".join(lit))
    _repl_cache[r] = parts
    return parts


def _expand(m, parts):
    out = []
    ngroups = m.re.groups
    for p in parts:
        if type(p) is str:
            out.append(p)
        elif p[0] is None:
            digits = p[1]
            # Java takes the longest prefix that is a valid group number.
            k = len(digits)
            while k > 1 and int(digits[:k]) > ngroups:
                k -= 1
            g = int(digits[:k])
            if g > ngroups:
                raise RenderError("No group " + str(g))
            v = m.group(g)
            out.append(v if v is not None else "")
            out.append(digits[k:])
        else:
            try:
                v = m.group(p[0])
            except IndexError:
                raise RenderError("No group with name {" + p[0] + "}") from None
            out.append(v if v is not None else "")
    return "".join(out)


def _replace_regex(s, regex, repl, count):
    rx = java_regex(regex)
    parts = _java_replacement(repl)
    if len(parts) == 1 and type(parts[0]) is str:
        lit = parts[0]
        return rx.sub(lambda m: lit, s, count=count)
    if not parts:
        return rx.sub("", s, count=count)
    return rx.sub(lambda m: _expand(m, parts), s, count=count)


def java_split(s, regex, limit=0):
    """String.split(regex, limit) as Java 8+ does it (trailing empty strings dropped for limit 0)."""
    if len(regex) == 1 and regex not in ".$|()[{^?*+\\":
        pieces = s.split(regex) if limit <= 0 else s.split(regex, limit - 1)
        if len(pieces) == 1:
            return [s]
    else:
        rx = java_regex(regex)
        pieces = []
        idx = 0
        for m in rx.finditer(s):
            if limit > 0 and len(pieces) >= limit - 1:
                break
            if m.end() == 0:  # a zero-width match at the start gives no leading empty string
                continue
            pieces.append(s[idx:m.start()])
            idx = m.end()
        if idx == 0 and not pieces:
            return [s]
        pieces.append(s[idx:])
    if limit == 0:
        while pieces and pieces[-1] == "":
            pieces.pop()
    return pieces


# ---------------------------------------------------------------------------------------------
# Java methods on strings, lists, maps and numbers
# ---------------------------------------------------------------------------------------------


def _s(v):
    return v if type(v) is str else to_str(v)


def _int(v):
    if type(v) is int:
        return v
    if type(v) is float and v == int(v):
        return int(v)
    raise TypeError("not an int")


def _str_substring(s, b, e=None):
    b = _int(b)
    e = len(s) if e is None else _int(e)
    if b < 0 or e > len(s) or b > e:
        raise RenderError("String index out of range: begin " + str(b) + ", end " + str(e) + ", length "
                          + str(len(s)))
    return s[b:e]


def _str_char_at(s, i):
    i = _int(i)
    if i < 0 or i >= len(s):
        raise RenderError("String index out of range: " + str(i))
    return s[i]


def _str_index_of(s, sub, start=0):
    return s.find(_s(sub), max(_int(start), 0))


def _str_last_index_of(s, sub, start=None):
    sub = _s(sub)
    if start is None:
        return s.rfind(sub)
    start = _int(start)
    if start < 0:
        return -1
    return s.rfind(sub, 0, start + len(sub))


def _java_trim(s):
    b = 0
    e = len(s)
    while b < e and s[b] <= " ":
        b += 1
    while e > b and s[e - 1] <= " ":
        e -= 1
    return s[b:e]


def _java_hash(s):
    h = 0
    for ch in s.encode("utf-16-le").decode("utf-16-le"):
        o = ord(ch)
        if o > 0xFFFF:  # a surrogate pair in Java
            o -= 0x10000
            for u in (0xD800 + (o >> 10), 0xDC00 + (o & 0x3FF)):
                h = (31 * h + u) & 0xFFFFFFFF
        else:
            h = (31 * h + o) & 0xFFFFFFFF
    return h - 0x100000000 if h > 0x7FFFFFFF else h


def _cmp(a, b):
    return (a > b) - (a < b)


def _str_compare(s, o):
    o = _s(o)
    a = s.encode("utf-16-be")
    b = o.encode("utf-16-be")
    for i in range(0, min(len(a), len(b)), 2):
        x = (a[i] << 8) | a[i + 1]
        y = (b[i] << 8) | b[i + 1]
        if x != y:
            return x - y
    return (len(a) - len(b)) // 2


def _str_starts(s, p, off=0):
    off = _int(off)
    return off >= 0 and s.startswith(_s(p), off)


def _str_equals(s, o):
    return type(o) is str and s == o


def _str_eq_ic(s, o):
    return type(o) is str and len(s) == len(o) and (s == o or s.upper() == o.upper() or s.lower() == o.lower())


def _str_matches(s, regex):
    return java_regex(_s(regex)).fullmatch(s) is not None


def _str_split(s, regex, limit=0):
    return JavaList(java_split(s, _s(regex), _int(limit)))


STR_METHODS = {
    "length": len,
    "isEmpty": lambda s: len(s) == 0,
    "substring": _str_substring,
    "indexOf": _str_index_of,
    "lastIndexOf": _str_last_index_of,
    "charAt": _str_char_at,
    "replace": lambda s, a, b: s.replace(_s(a), _s(b)),
    "replaceAll": lambda s, r, t: _replace_regex(s, _s(r), _s(t), 0),
    "replaceFirst": lambda s, r, t: _replace_regex(s, _s(r), _s(t), 1),
    "split": _str_split,
    "matches": _str_matches,
    "toLowerCase": lambda s: s.lower(),
    "toUpperCase": lambda s: s.upper(),
    "trim": _java_trim,
    "startsWith": _str_starts,
    "endsWith": lambda s, p: s.endswith(_s(p)),
    "contains": lambda s, p: _s(p) in s,
    "equals": _str_equals,
    "equalsIgnoreCase": _str_eq_ic,
    "concat": lambda s, o: s + _s(o),
    "toString": lambda s: s,
    "hashCode": _java_hash,
    "compareTo": _str_compare,
    "compareToIgnoreCase": lambda s, o: _str_compare(s.upper().lower(), _s(o).upper().lower()),
    "intern": lambda s: s,
    "isBlank": lambda s: _java_trim(s) == "",
    "strip": lambda s: s.strip(),
}


def _list_get(lst, i):
    i = _int(i)
    if i < 0 or i >= len(lst):
        raise RenderError("Index " + str(i) + " out of bounds for length " + str(len(lst)))
    return lst[i]


def _list_add(lst, a, b=_MISSING):
    if b is _MISSING:
        lst.append(a)
        return True
    i = _int(a)
    if i < 0 or i > len(lst):
        raise RenderError("Index: " + str(i) + ", Size: " + str(len(lst)))
    lst.insert(i, b)
    return None


def _list_add_all(lst, other):
    if not isinstance(other, (list, tuple)):
        raise TypeError("not a collection")
    lst.extend(other)
    return len(other) > 0


def _list_set(lst, i, v):
    old = _list_get(lst, i)
    lst[_int(i)] = v
    return old


def _list_remove(lst, x):
    if type(x) is int:
        old = _list_get(lst, x)
        del lst[x]
        return old
    for i, y in enumerate(lst):
        if java_equals(x, y) and _java_class(x) is _java_class(y):
            del lst[i]
            return True
    return False


def _list_index_of(lst, x):
    for i, y in enumerate(lst):
        if _java_class(x) is _java_class(y) and x == y:
            return i
    return -1


def _list_contains(lst, x):
    return _list_index_of(lst, x) >= 0


def _list_clear(c):
    c.clear()


def _list_sub(lst, a, b):
    a = _int(a)
    b = _int(b)
    if a < 0 or b > len(lst) or a > b:
        raise RenderError("subList index out of range")
    return JavaList(lst[a:b])


LIST_METHODS = {
    "size": len,
    "isEmpty": lambda c: len(c) == 0,
    "get": _list_get,
    "add": _list_add,
    "addAll": _list_add_all,
    "set": _list_set,
    "remove": _list_remove,
    "indexOf": _list_index_of,
    "contains": _list_contains,
    "clear": _list_clear,
    "subList": _list_sub,
    "toString": to_str,
    "equals": lambda c, o: isinstance(o, (list, tuple)) and list(c) == list(o),
}


def _map_put(m, k, v):
    old = m.get(k)
    m[k] = v
    return old


def _map_put_all(m, other):
    if not isinstance(other, dict):
        raise TypeError("not a map")
    m.update(other)


def _map_put_if_absent(m, k, v):
    old = m.get(k)
    if old is None:
        m[k] = v
    return old


def _map_get_or_default(m, k, d):
    return m.get(k, d)


def _map_contains_value(m, v):
    return any(_java_class(x) is _java_class(v) and x == v for x in m.values())


MAP_METHODS = {
    "get": lambda m, k: m.get(k),
    "put": _map_put,
    "putAll": _map_put_all,
    "putIfAbsent": _map_put_if_absent,
    "getOrDefault": _map_get_or_default,
    "remove": lambda m, k: m.pop(k, None),
    "keySet": lambda m: JavaList(m),
    "values": lambda m: JavaList(m.values()),
    "entrySet": lambda m: JavaList([Entry(k, v) for k, v in m.items()]),
    "containsKey": lambda m, k: k in m,
    "containsValue": _map_contains_value,
    "size": len,
    "isEmpty": lambda m: len(m) == 0,
    "clear": _list_clear,
    "toString": to_str,
    "equals": lambda m, o: isinstance(o, dict) and m == o,
}


def _num_int(v):
    if type(v) is float:
        if v != v:
            return 0
        if v in (math.inf, -math.inf):
            return 2147483647 if v > 0 else -2147483648
        v = int(v)
    v &= 0xFFFFFFFF
    return v - 0x100000000 if v > 0x7FFFFFFF else v


def _num_long(v):
    if type(v) is float:
        if v != v:
            return 0
        if v in (math.inf, -math.inf):
            return 9223372036854775807 if v > 0 else -9223372036854775808
        v = int(v)
    v &= 0xFFFFFFFFFFFFFFFF
    return v - 0x10000000000000000 if v > 0x7FFFFFFFFFFFFFFF else v


NUM_METHODS = {
    "intValue": _num_int,
    "longValue": _num_long,
    "doubleValue": float,
    "floatValue": float,
    "toString": to_str,
    "equals": lambda v, o: type(v) is type(o) and v == o,
    "compareTo": lambda v, o: _cmp(v, o),
    "hashCode": lambda v: _num_int(v) if type(v) is int else _java_hash(java_double(v)),
}

BOOL_METHODS = {
    "booleanValue": lambda b: b,
    "toString": to_str,
    "equals": lambda b, o: type(o) is bool and b == o,
}


def _lower_first(s):
    return s[:1].lower() + s[1:]


def get_property(obj, name):
    """``$obj.name`` on a value that is not a map: Java bean getters, as Velocity's introspection."""
    t = type(obj)
    if t is str:
        if name == "empty":
            return len(obj) == 0
        if name == "bytes" or name == "class":
            return None
        return None
    if isinstance(obj, (list, tuple)):
        if name == "empty":
            return len(obj) == 0
        return None
    if name[:1] == "_":
        return None
    v = getattr(obj, name, _MISSING)
    if v is _MISSING or callable(v):
        return None
    return v


def call_method(obj, name, args, table):
    """``$obj.name(args)``: a method of the Java class the value stands for, None when there is none."""
    if table is not None:
        f = table.get(name)
        if f is None:
            return None
        try:
            return f(obj, *args)
        except TypeError:
            return None  # no method of that name takes these arguments: Velocity gives null
    if name[:1] == "_":
        return None
    a = getattr(obj, name, _MISSING)
    if a is _MISSING:
        if not args:
            if name[:3] == "get" and len(name) > 3:
                a = getattr(obj, _lower_first(name[3:]), _MISSING)
            elif name[:2] == "is" and len(name) > 2:
                a = getattr(obj, _lower_first(name[2:]), _MISSING)
            if a is not _MISSING and not callable(a):
                return a
        return None
    if not callable(a):
        return a if not args else None
    try:
        return a(*args)
    except TypeError:
        return None


def _own_method(t, name):
    """A method of fastgw's own template objects ($input, $util: classes marked _vtl_methods), or None."""
    if name[:1] == "_" or not getattr(t, "_vtl_methods", False):
        return None
    f = getattr(t, name, None)
    if f is None or not callable(f) or isinstance(f, property):
        return None
    return f


def method_table(obj):
    t = type(obj)
    if t is str:
        return STR_METHODS
    if t is dict:
        return MAP_METHODS
    if t is list or t is JavaList:
        return LIST_METHODS
    if t is int or t is float:
        return NUM_METHODS
    if t is bool:
        return BOOL_METHODS
    if isinstance(obj, dict):
        return MAP_METHODS
    if isinstance(obj, (list, tuple)):
        return LIST_METHODS
    if isinstance(obj, str):
        return STR_METHODS
    return None


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------


class Expr:
    def value(self, ctx):
        raise NotImplementedError


class Const(Expr):
    def __init__(self, v):
        self.v = v

    def value(self, ctx):
        return self.v


class Interp(Expr):
    """A double-quoted string with references or directives: rendered like a small template."""

    def __init__(self, nodes):
        self.nodes = block_of(nodes)

    def value(self, ctx):
        out = []
        render_block(self.nodes, ctx, out)
        return "".join(out)


class ListLit(Expr):
    def __init__(self, items):
        self.items = items

    def value(self, ctx):
        out = JavaList()
        for e in self.items:
            out.append(e.value(ctx))
        return out


class MapLit(Expr):
    def __init__(self, keys, vals):
        self.keys = keys
        self.vals = vals

    def value(self, ctx):
        m = {}
        vals = self.vals
        i = 0
        for k in self.keys:
            v = vals[i]
            m[k.value(ctx)] = v.value(ctx)
            i += 1  # noqa: SIM113 - typed loop when compiled
        return m


class Range(Expr):
    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def value(self, ctx):
        a = self.lo.value(ctx)
        b = self.hi.value(ctx)
        if type(a) is str:
            a = _parse_int(a)
        if type(b) is str:
            b = _parse_int(b)
        if type(a) is not int or type(b) is not int:
            return None
        if a <= b:
            return JavaList(range(a, b + 1))
        return JavaList(range(a, b - 1, -1))


def _parse_int(s):
    try:
        return int(s.strip())
    except ValueError:
        return None


class Not(Expr):
    def __init__(self, a):
        self.a = a

    def value(self, ctx):
        return not is_true(self.a.value(ctx))


class And(Expr):
    def __init__(self, a, b):
        self.a = a
        self.b = b

    def value(self, ctx):
        return is_true(self.a.value(ctx)) and is_true(self.b.value(ctx))


class Or(Expr):
    def __init__(self, a, b):
        self.a = a
        self.b = b

    def value(self, ctx):
        return is_true(self.a.value(ctx)) or is_true(self.b.value(ctx))


class Cmp(Expr):
    """== != < > <= >= (op: 0..5)."""

    def __init__(self, op, a, b):
        self.op = op
        self.a = a
        self.b = b

    def value(self, ctx):
        x = self.a.value(ctx)
        y = self.b.value(ctx)
        op = self.op
        if op == 0:
            return java_equals(x, y)
        if op == 1:
            return not java_equals(x, y)
        if not (_is_num(x) and _is_num(y)):
            return False  # Velocity 1.7 compares numbers only
        if op == 2:
            return x < y
        if op == 3:
            return x > y
        if op == 4:
            return x <= y
        return x >= y


class Arith(Expr):
    """+ - * / % (op: 0..4) with Velocity's MathUtils: integers stay exact (they widen, never wrap),
    integer / and % truncate toward zero, a zero divisor gives null; + joins strings."""

    def __init__(self, op, a, b, lit_a, lit_b):
        self.op = op
        self.a = a
        self.b = b
        self.lit_a = lit_a
        self.lit_b = lit_b

    def value(self, ctx):
        x = self.a.value(ctx)
        y = self.b.value(ctx)
        op = self.op
        if op == 0 and (type(x) is str or type(y) is str):
            return (self.lit_a if x is None else to_str(x)) + (self.lit_b if y is None else to_str(y))
        if not (_is_num(x) and _is_num(y)):
            return None
        if type(x) is int and type(y) is int:
            if op == 0:
                return x + y
            if op == 1:
                return x - y
            if op == 2:
                return x * y
            if y == 0:
                return None
            if op == 3:
                return _trunc_div(x, y)
            return _trunc_mod(x, y)
        fx = float(x)
        fy = float(y)
        if op == 0:
            return fx + fy
        if op == 1:
            return fx - fy
        if op == 2:
            return fx * fy
        if fy == 0.0:
            return None
        if op == 3:
            return fx / fy
        return math.fmod(fx, fy)


# Reference steps: one object per `.name`, `.name(args)` and `[index]`.


class Step:
    def apply(self, obj, ctx):
        raise NotImplementedError


def _dget(d, k):
    return d.get(k)


class Prop(Step):
    def __init__(self, name):
        self.name = name

    def apply(self, obj, ctx):
        if type(obj) is dict:
            return _dget(obj, self.name)
        if type(obj) is ForeachScope:
            return foreach_property(obj, self.name)
        if isinstance(obj, dict):
            return obj.get(self.name)
        return get_property(obj, self.name)


class Call(Step):
    """A method call; the Java method of each value class is looked up once, here."""

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.f_str = STR_METHODS.get(name)
        self.f_map = MAP_METHODS.get(name)
        self.f_list = LIST_METHODS.get(name)
        # $input.path(x) / $input.params(x) (in nearly every template): called directly, not looked up
        self.input_method = 1 if name == "path" else 2 if name == "params" else 0
        # $input.json(...), $util.escapeJavaScript(...): the method of the last class seen here
        self.cached_type = None
        self.cached_func = None

    def apply(self, obj, ctx):
        args = []
        for a in self.args:
            args.append(a.value(ctx))
        t = type(obj)
        if t is Input and self.input_method != 0:
            inp = obj
            n = len(args)
            if self.input_method == 1:
                return inp.path(args[0]) if n == 1 else None
            if n == 0:
                return inp.params()
            return inp.params(args[0]) if n == 1 else None
        if t is str:
            f = self.f_str
        elif t is dict:
            f = self.f_map
        elif t is list or t is JavaList:
            f = self.f_list
        elif t is self.cached_type:
            f = self.cached_func
        else:
            f = _own_method(t, self.name)
            if f is None:
                return call_method(obj, self.name, args, method_table(obj))
            self.cached_type = t
            self.cached_func = f
        if f is None:
            return None
        try:
            return f(obj, *args)
        except TypeError:
            return None  # no method of that name takes these arguments: Velocity gives null


class Index(Step):
    def __init__(self, key):
        self.key = key

    def apply(self, obj, ctx):
        k = self.key.value(ctx)
        if isinstance(obj, dict):
            return obj.get(k)
        if isinstance(obj, (list, tuple)):
            if type(k) is not int:
                return None
            n = len(obj)
            if k < 0:
                k += n
            if k < 0 or k >= n:
                raise RenderError("index " + str(k) + " out of bounds for a list of " + str(n))
            return obj[k]
        return None


_SCOPE_PROPS = {"hasNext": 1, "index": 2, "count": 3, "first": 4, "last": 5}


class Ref(Expr):
    """$name followed by steps; evaluates to None as soon as one step gives null."""

    def __init__(self, name, steps):
        self.name = name
        self.steps = steps
        # $velocityCount / $velocityHasNext are read from the innermost #foreach's scope (PERF: a
        # loop then writes no context keys per iteration); a #set of the same name still wins.
        self.loop_var = 1 if name == "velocityCount" else 2 if name == "velocityHasNext" else 0
        # $foreach.hasNext and its kin (in every loop of AWS's examples): read the scope directly.
        self.scope_prop = 0
        if name == "foreach" and len(steps) == 1 and type(steps[0]) is Prop:
            self.scope_prop = _SCOPE_PROPS.get(steps[0].name, 0)
        # $a.b.c (properties only, the common case): the names, walked without the step objects
        self.prop_names = None
        if steps and all(type(step) is Prop for step in steps):
            self.prop_names = [step.name for step in steps]

    def value(self, ctx):
        v = ctx.get(self.name)
        if self.scope_prop != 0 and type(v) is ForeachScope:
            scope = v
            prop = self.scope_prop
            if prop == 1:
                return scope.hasNext
            if prop == 2:
                return scope.index
            if prop == 3:
                return scope.count
            if prop == 4:
                return scope.first
            return scope.last
        if v is None and self.loop_var != 0:
            found = ctx.get("foreach")
            if type(found) is ForeachScope:
                scope = found
                v = scope.count if self.loop_var == 1 else scope.hasNext
        names = self.prop_names
        if names is not None:
            for name in names:
                if v is None:
                    return None
                if type(v) is dict:
                    v = _dget(v, name)
                elif type(v) is ForeachScope:
                    v = foreach_property(v, name)
                elif isinstance(v, dict):
                    v = v.get(name)
                else:
                    v = get_property(v, name)
            return v
        for s in self.steps:
            if v is None:
                return None
            if type(v) is dict and type(s) is Prop:
                p = s
                v = _dget(v, p.name)
            else:
                v = s.apply(v, ctx)
        return v

    def assign(self, ctx, v):
        """#set($a.b.c = v): the last step sets, the others read."""
        n = len(self.steps)
        if n == 0:
            ctx[self.name] = v
            return
        obj = ctx.get(self.name)
        for i in range(n - 1):
            if obj is None:
                return
            obj = self.steps[i].apply(obj, ctx)
        if obj is None:
            return
        last = self.steps[n - 1]
        if type(last) is Prop:
            if isinstance(obj, dict):
                obj[last.name] = v
            elif last.name[:1] != "_" and hasattr(obj, last.name) and not callable(getattr(obj, last.name)):
                try:
                    setattr(obj, last.name, v)
                except (AttributeError, TypeError):
                    pass
        elif type(last) is Index:
            k = last.key.value(ctx)
            if isinstance(obj, dict) or isinstance(obj, list) and type(k) is int and -len(obj) <= k < len(obj):
                obj[k] = v


# ---------------------------------------------------------------------------------------------
# Template nodes
# ---------------------------------------------------------------------------------------------


class Node:
    def render(self, ctx, out):
        raise NotImplementedError


def block_of(nodes):
    """A block as the renderer keeps it: Text nodes become their plain strings (PERF: a literal is
    then one list append, not a method call; most of a template's nodes are literals)."""
    if nodes is None:
        return None
    return [n.s if type(n) is Text else n for n in nodes]


def render_block(block, ctx, out):
    for n in block:
        if type(n) is str:
            out.append(n)
        else:
            node = n
            node.render(ctx, out)


class Text(Node):
    def __init__(self, s):
        self.s = s

    def render(self, ctx, out):
        out.append(self.s)


class RefOut(Node):
    """A reference in the text: its value as Java prints it; null prints nothing (AWS)."""

    def __init__(self, ref):
        self.ref = ref

    def render(self, ctx, out):
        v = self.ref.value(ctx)
        if v is None:
            return
        if type(v) is str:
            out.append(v)
        elif type(v) is int:
            out.append(str(v))
        else:
            out.append(to_str(v))


class EscapedRef(Node):
    r"""\$name: the reference's own text; Velocity keeps the backslash when the reference is null."""

    def __init__(self, ref, prefix, literal):
        self.ref = ref
        self.prefix = prefix
        self.literal = literal

    def render(self, ctx, out):
        v = self.ref.value(ctx)
        out.append(self.prefix)
        if v is None:
            out.append("\\")
        out.append(self.literal)


class SetNode(Node):
    def __init__(self, target, expr):
        self.target = target
        self.expr = expr

    def render(self, ctx, out):
        v = self.expr.value(ctx)
        if v is None:
            return  # Velocity 1.7: a null right-hand side leaves the target unchanged
        self.target.assign(ctx, v)


class If(Node):
    def __init__(self, conds, blocks, else_block):
        self.conds = conds
        self.blocks = [block_of(b) for b in blocks]
        self.else_block = block_of(else_block)

    def render(self, ctx, out):
        i = 0
        for c in self.conds:
            if is_true(c.value(ctx)):
                render_block(self.blocks[i], ctx, out)
                return
            i += 1  # noqa: SIM113 - typed loop when compiled
        if self.else_block is not None:
            render_block(self.else_block, ctx, out)


class ForeachScope:
    """$foreach: index, count, hasNext, first, last, parent."""

    def __init__(self, parent):
        self.parent = parent
        self.index = -1
        self.count = 0
        self.hasNext = False
        self.first = False
        self.last = False

    def __str__(self):
        return "$foreach"


def foreach_property(scope, name):
    if name == "hasNext":
        return scope.hasNext
    if name == "index":
        return scope.index
    if name == "count":
        return scope.count
    if name == "first":
        return scope.first
    if name == "last":
        return scope.last
    if name == "parent":
        return scope.parent
    return None


def _iter_items(v):
    if isinstance(v, (list, tuple)):
        return v
    if isinstance(v, dict):
        return list(v.values())
    if type(v) is str or v is None:
        return None
    try:
        return list(iter(v))
    except TypeError:
        return None


class Foreach(Node):
    def __init__(self, var, expr, block):
        self.var = var
        self.expr = expr
        self.block = block_of(block)

    def render(self, ctx, out):
        items = _iter_items(self.expr.value(ctx))
        if items is None:
            return
        n = len(items)
        if n == 0:
            return
        var = self.var
        saved = ctx.get(var, _MISSING)
        saved_scope = ctx.get("foreach", _MISSING)
        scope = ForeachScope(None if saved_scope is _MISSING else saved_scope)
        ctx["foreach"] = scope
        limit = n if n < MAX_LOOPS else MAX_LOOPS
        block = self.block
        try:
            for i in range(limit):
                has_next = i + 1 < n
                scope.index = i
                scope.count = i + 1
                scope.hasNext = has_next
                scope.first = i == 0
                scope.last = not has_next
                ctx[var] = items[i]
                render_block(block, ctx, out)
        except BreakLoop:
            pass
        finally:
            _restore(ctx, var, saved)
            _restore(ctx, "foreach", saved_scope)


def _restore(ctx, name, v):
    if v is _MISSING:
        ctx.pop(name, None)
    else:
        ctx[name] = v


class Break(Node):
    def render(self, ctx, out):
        raise BreakLoop()


class Stop(Node):
    def render(self, ctx, out):
        raise StopRender()


class DefinedBlock:
    """The value #define gives its reference: the block, rendered when the reference is printed."""

    def __init__(self, block, ctx):
        self.block = block
        self.ctx = ctx

    def __str__(self):
        out = []
        render_block(self.block, self.ctx, out)
        return "".join(out)


class Define(Node):
    def __init__(self, name, block):
        self.name = name
        self.block = block_of(block)

    def render(self, ctx, out):
        ctx[self.name] = DefinedBlock(self.block, ctx)


class Macro:
    def __init__(self, name, params, block):
        self.name = name
        self.params = params
        self.block = block_of(block)


class MacroCall(Node):
    """#name(args): looks the macro up when rendering (so a macro may be defined after its use); an
    unknown name prints the call's own text."""

    def __init__(self, name, args, macros, literal):
        self.name = name
        self.args = args
        self.macros = macros
        self.literal = literal

    def render(self, ctx, out):
        m = self.macros.get(self.name)
        if m is None:
            out.append(self.literal)
            return
        params = m.params
        vals = []
        for a in self.args:
            vals.append(a.value(ctx))
        saved = [ctx.get(p, _MISSING) for p in params]
        for i in range(len(params)):
            if i < len(vals) and vals[i] is not None:
                ctx[params[i]] = vals[i]
            else:
                ctx.pop(params[i], None)
        try:
            render_block(m.block, ctx, out)
        except BreakLoop:
            pass
        finally:
            for i in range(len(params)):
                _restore(ctx, params[i], saved[i])


class Template:
    """A compiled template: ``render(variables) -> str``."""

    def __init__(self, nodes, source):
        self.nodes = block_of(nodes)
        self.source = source

    def render(self, variables):
        ctx = dict(variables)
        out = []
        try:
            render_block(self.nodes, ctx, out)
        except (StopRender, BreakLoop):
            pass
        except RecursionError:
            raise RenderError("template recursion too deep") from None
        return "".join(out)


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
    """A value as JSON text (what payload arrays print as, and $util.toJson / $input.json give)."""
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

    _vtl_methods = True  # Call.apply may cache its methods

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
