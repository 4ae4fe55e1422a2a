"""The VTL parser: template text -> a tree of renderer nodes, once per template (config load).

It follows the Apache Velocity 1.7 grammar (Parser.jjt) where it decides what text a template
produces:

* ``#set(...)``, ``#if(...)``, ``#elseif(...)``, ``#foreach(...)``, ``#macro(...)``, ``#define(...)``
  and macro calls eat what follows their closing parenthesis up to and including the newline, when
  only spaces or tabs stand between (the lexer's RPAREN token); ``#else`` and ``#end`` do the same.
* ``#set`` also eats the spaces and tabs before it, but only when they start a token: after a
  directive, a reference or a comment, not when they follow other text on the line (in Velocity 1.7
  the indentation of ``{\\n    #set(...)`` stays in the output; that of a line after another
  ``#set(...)`` line goes).
* ``## comment`` vanishes with its newline; ``#* *#`` and ``#[[ ]]#`` as in Velocity.
* Identifiers may contain ``-`` (``$a-b`` is one name) and a ``.`` starts a property only before a
  letter.

Nodes come from the renderer module given (the compiled ``_render`` or the ``render`` twin).
"""

from __future__ import annotations

import re
import sys
from types import ModuleType
from typing import Any

from .errors import TemplateError

_SPECIAL = re.compile(r"[$#\\]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_WORD = re.compile(r"[A-Za-z_@][A-Za-z0-9_@]*")
_NUMBER = re.compile(r"-?(?:\d+\.(?!\.)\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)")
_EOL = re.compile(r"[ \t]*(?:\r\n|\n|\r)")
_BLANK = re.compile(r"[ \t]+")
_WS = " \t\r\n"

_DIRECTIVES = frozenset(
    {"if", "elseif", "else", "end", "set", "foreach", "macro", "define", "break", "stop", "include", "parse",
     "evaluate", "literal"})
_IDENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class _Fail(Exception):
    """Not VTL after all: the caller treats the text as plain text."""


class Parser:
    def __init__(self, src: str, rt: ModuleType, macros: dict[str, Any], start: int = 0, end: int | None = None):
        self.src = src
        self.rt = rt
        self.macros = macros
        self.pos = start
        self.end = len(src) if end is None else end

    # -- errors and small helpers ---------------------------------------------------------------

    def error(self, message: str, pos: int | None = None) -> TemplateError:
        p = self.pos if pos is None else pos
        p = min(p, len(self.src))
        line = self.src.count("\n", 0, p) + 1
        col = p - (self.src.rfind("\n", 0, p) + 1) + 1
        return TemplateError(message, line, col)

    def peek(self, k: int = 0) -> str:
        p = self.pos + k
        return self.src[p] if p < self.end else ""

    def skip_ws(self) -> None:
        src, end = self.src, self.end
        p = self.pos
        while p < end and src[p] in _WS:
            p += 1
        self.pos = p

    def expect(self, ch: str, what: str) -> None:
        self.skip_ws()
        if self.peek() != ch:
            got = self.peek()
            raise self.error(f"expected {ch!r} {what}, found {got!r}" if got else f"expected {ch!r} {what}, found end")
        self.pos += 1

    def eat_eol(self) -> None:
        """After a directive's closing parenthesis, #else or #end: spaces/tabs and one newline."""
        m = _EOL.match(self.src, self.pos, self.end)
        if m:
            self.pos = m.end()

    def word_at(self, p: int) -> bool:
        """Is a keyword operator (and/or/not/eq...) ending at p a whole word?"""
        return p >= self.end or self.src[p] not in _IDENT_CHARS

    # -- template text --------------------------------------------------------------------------

    def parse_block(self, in_block: bool) -> tuple[list[Any], str | None]:
        """Nodes up to #else/#elseif/#end (returned as the terminator) or the end of the text."""
        rt, src, end = self.rt, self.src, self.end
        nodes: list[Any] = []
        pending: list[str] = []
        seg_start = self.pos  # where the current run of text started (for #set's whitespace)

        def flush() -> None:
            if pending:
                s = "".join(pending)
                pending.clear()
                if s:
                    if nodes and type(nodes[-1]) is rt.Text:
                        nodes[-1] = rt.Text(nodes[-1].s + s)
                    else:
                        nodes.append(rt.Text(s))

        while self.pos < end:
            i = self.pos
            m = _SPECIAL.search(src, i, end)
            j = m.start() if m else end
            if j > i:
                pending.append(src[i:j])
                self.pos = j
            if j >= end:
                break
            c = src[j]
            if c == "$":
                r = self.try_reference(j)
                if r is None:
                    pending.append("$")
                    self.pos = j + 1
                    continue
                flush()
                nodes.append(rt.RefOut(r))
                seg_start = self.pos
            elif c == "\\":
                k = j
                while k < end and src[k] == "\\":
                    k += 1
                nb = k - j
                self.pos = k
                nxt = src[k] if k < end else ""
                if nxt == "$":
                    r = self.try_reference(k)
                    if r is None:
                        pending.append("\\" * nb)
                        self.pos = k
                    else:
                        flush()
                        prefix = "\\" * (nb // 2)
                        if nb % 2:
                            nodes.append(rt.EscapedRef(r, prefix, src[k:self.pos]))
                        else:
                            if prefix:
                                pending.append(prefix)
                                flush()
                            nodes.append(rt.RefOut(r))
                elif nxt == "#":
                    wm = self.directive_word(k)
                    if wm is None:
                        pending.append("\\" * nb)
                    else:
                        word, wend = wm
                        known = word in _DIRECTIVES or word in self.macros
                        if nb % 2:  # an escaped directive: its text, with half the backslashes when known
                            pending.append(("\\" * (nb // 2) if known else "\\" * nb) + src[k:wend])
                            self.pos = wend
                        else:  # pairs of backslashes before a live directive
                            pending.append("\\" * (nb // 2) if known else "\\" * nb)
                else:
                    pending.append("\\" * nb)
                seg_start = self.pos
            else:  # "#"
                nxt = src[j + 1] if j + 1 < end else ""
                if nxt == "#":  # line comment, with its newline
                    e = src.find("\n", j, end)
                    self.pos = end if e < 0 else e + 1
                    seg_start = self.pos
                    continue
                if nxt == "*":
                    e = src.find("*#", j + 2, end)
                    if e < 0:
                        raise self.error("unterminated comment #* ... *#", j)
                    self.pos = e + 2
                    seg_start = self.pos
                    continue
                if src.startswith("#[[", j):
                    e = src.find("]]#", j + 3, end)
                    if e < 0:
                        raise self.error("unterminated unparsed block #[[ ... ]]#", j)
                    pending.append(src[j + 3:e])
                    self.pos = e + 3
                    seg_start = self.pos
                    continue
                wm = self.directive_word(j)
                if wm is None:
                    pending.append("#")
                    self.pos = j + 1
                    continue
                word, wend = wm
                if word in ("end", "else", "elseif"):
                    if not in_block:
                        raise self.error(f"#{word} without a matching #if, #foreach, #macro or #define", j)
                    self.pos = wend
                    if word != "elseif":
                        self.eat_eol()
                    flush()
                    return nodes, word
                if word == "set":
                    p = wend
                    while p < end and src[p] == " ":
                        p += 1
                    if p >= end or src[p] != "(":
                        pending.append(src[j:wend])
                        self.pos = wend
                        continue
                    if seg_start < j and _BLANK.fullmatch(src, seg_start, j):
                        # Velocity 1.7's SET_DIRECTIVE token takes the blanks that start a token.
                        lead = j - seg_start
                        last = pending[-1] if pending else ""
                        if len(last) >= lead:
                            pending[-1] = last[:-lead]
                    flush()
                    self.pos = p + 1
                    nodes.append(self.parse_set(j))
                    seg_start = self.pos
                    continue
                node = self.parse_directive(word, j, wend)
                if node is None:  # not a directive: its text
                    pending.append(src[j:wend])
                    self.pos = wend
                    continue
                flush()
                if node is not True:
                    nodes.append(node)
                seg_start = self.pos
        flush()
        return nodes, None

    def directive_word(self, j: int) -> tuple[str, int] | None:
        """At '#': the directive's name and where it ends (``#name`` or ``#{name}``)."""
        src, end = self.src, self.end
        k = j + 1
        if k < end and src[k] == "{":
            m = _WORD.match(src, k + 1, end)
            if not m or m.group()[0] == "@" or m.end() >= end or src[m.end()] != "}":
                return None
            return m.group(), m.end() + 1
        m = _WORD.match(src, k, end)
        if not m:
            return None
        return m.group(), m.end()

    def parse_directive(self, word: str, start: int, wend: int) -> Any:
        rt = self.rt
        self.pos = wend
        if word == "if":
            return self.parse_if(start)
        if word == "foreach":
            return self.parse_foreach(start)
        if word == "macro":
            return self.parse_macro(start)
        if word == "define":
            return self.parse_define(start)
        if word == "stop":
            return rt.Stop()
        if word == "break":
            save = self.pos
            self.skip_ws()
            if self.peek() == "(":
                self.pos += 1
                self.skip_ws()
                if self.peek() == "$":
                    self.parse_reference_expr()
                self.expect(")", "to close #break(")
                self.eat_eol()
            else:
                self.pos = save
            return rt.Break()
        if word in ("include", "parse", "evaluate", "literal"):
            raise self.error(f"#{word} is not supported in mapping templates", start)
        # A macro call: #name(args); anything else is text.
        save = self.pos
        self.skip_ws()
        if self.peek() != "(":
            self.pos = save
            return None
        self.pos += 1
        try:
            args = self.parse_macro_args()
        except (_Fail, TemplateError):
            if word in self.macros:
                raise
            self.pos = save
            return None
        self.eat_eol()
        return rt.MacroCall(word, args, self.macros, self.src[start:self.pos])

    def parse_macro_args(self) -> list[Any]:
        args = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c == ")":
                self.pos += 1
                return args
            if c == ",":
                self.pos += 1
                continue
            if not c:
                raise _Fail()
            if c.isalpha() and not self.src.startswith(("true", "false"), self.pos):
                raise _Fail()  # a bare word: not a call
            args.append(self.parse_primary())

    def open_paren(self, what: str, start: int) -> None:
        self.skip_ws()
        if self.peek() != "(":
            raise self.error(f"{what} needs '(' after it", start)
        self.pos += 1

    def close_paren(self, what: str) -> None:
        self.expect(")", f"to close {what}")
        self.eat_eol()

    def parse_set(self, start: int) -> Any:
        self.skip_ws()
        if self.peek() != "$":
            raise self.error("#set needs a reference on the left of '='")
        target = self.parse_reference_expr()
        if type(target) is not self.rt.Ref or (target.steps and type(target.steps[-1]) is self.rt.Call):
            raise self.error("#set cannot assign to a method call", start)
        self.expect("=", "in #set")
        expr = self.parse_expr()
        self.close_paren("#set(")
        return self.rt.SetNode(target, expr)

    def parse_if(self, start: int) -> Any:
        conds, blocks = [], []
        self.open_paren("#if", start)
        conds.append(self.parse_expr())
        self.close_paren("#if(")
        while True:
            body, term = self.parse_block(True)
            if term is None:
                raise self.error("#if without #end", start)
            blocks.append(body)
            if term == "end":
                return self.rt.If(conds, blocks, None)
            if term == "else":
                body, term = self.parse_block(True)
                if term != "end":
                    raise self.error("#else must be followed by #end" if term else "#if without #end", start)
                return self.rt.If(conds, blocks, body)
            self.open_paren("#elseif", self.pos)
            conds.append(self.parse_expr())
            self.close_paren("#elseif(")

    def block_to_end(self, what: str, start: int) -> list[Any]:
        body, term = self.parse_block(True)
        if term != "end":
            raise self.error(f"#{term} inside {what}" if term else f"{what} without #end", start)
        return body

    def parse_foreach(self, start: int) -> Any:
        self.open_paren("#foreach", start)
        self.skip_ws()
        var = self.simple_name("#foreach")
        self.skip_ws()
        if not (self.src.startswith("in", self.pos) and self.word_at(self.pos + 2)):
            raise self.error("expected 'in' in #foreach")
        self.pos += 2
        expr = self.parse_expr()
        self.close_paren("#foreach(")
        body = self.block_to_end("#foreach", start)
        return self.rt.Foreach(var, expr, body)

    def simple_name(self, what: str) -> str:
        p = self.pos
        if self.peek() != "$":
            raise self.error(f"{what} needs a $name here")
        p += 1
        if self.src.startswith("!", p):
            p += 1
        braced = self.src.startswith("{", p)
        if braced:
            p += 1
        m = _IDENT.match(self.src, p, self.end)
        if not m:
            raise self.error(f"{what} needs a $name here")
        p = m.end()
        if braced:
            if not self.src.startswith("}", p):
                raise self.error("expected '}'", p)
            p += 1
        self.pos = p
        return sys.intern(m.group())

    def parse_macro(self, start: int) -> Any:
        self.open_paren("#macro", start)
        self.skip_ws()
        m = _WORD.match(self.src, self.pos, self.end)
        if not m:
            raise self.error("#macro needs a name as its first argument")
        name = m.group()
        self.pos = m.end()
        params = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c == ",":
                self.pos += 1
                continue
            if c == ")":
                break
            if c == "$":
                params.append(self.simple_name("#macro"))
                continue
            raise self.error(f"unexpected {c!r} in #macro arguments" if c else "#macro( without ')'")
        self.close_paren("#macro(")
        body = self.block_to_end("#macro", start)
        self.macros[name] = self.rt.Macro(name, params, body)
        return True  # nothing to render where it is defined

    def parse_define(self, start: int) -> Any:
        self.open_paren("#define", start)
        self.skip_ws()
        name = self.simple_name("#define")
        self.close_paren("#define(")
        body = self.block_to_end("#define", start)
        return self.rt.Define(name, body)

    # -- references -----------------------------------------------------------------------------

    def try_reference(self, j: int) -> Any:
        """At '$' in text: the reference (pos moves past it), or None when it is not one."""
        save = self.pos
        self.pos = j
        try:
            return self.reference()
        except _Fail:
            self.pos = save
            return None

    def parse_reference_expr(self) -> Any:
        start = self.pos
        try:
            return self.reference()
        except _Fail:
            raise self.error("malformed reference", start) from None

    def reference(self) -> Any:
        rt, src, end = self.rt, self.src, self.end
        p = self.pos + 1
        if p < end and src[p] == "!":
            p += 1
        formal = p < end and src[p] == "{"
        if formal:
            p += 1
        m = _IDENT.match(src, p, end)
        if not m:
            raise _Fail()
        name = sys.intern(m.group())  # interned: dict lookups then compare pointers
        self.pos = m.end()
        steps: list[Any] = []
        while self.pos < end:
            c = src[self.pos]
            if c == "[":
                save = self.pos
                self.pos += 1
                try:
                    self.skip_ws()
                    key = self.parse_expr()
                    self.skip_ws()
                    if self.peek() != "]":
                        raise _Fail()
                    self.pos += 1
                except (_Fail, TemplateError):
                    self.pos = save
                    break
                steps.append(rt.Index(key))
            elif c == "." and self.pos + 1 < end and src[self.pos + 1].isascii() and src[self.pos + 1].isalpha():
                m = _IDENT.match(src, self.pos + 1, end)
                assert m is not None
                self.pos = m.end()
                if self.peek() == "(":
                    open_at = self.pos
                    self.pos += 1
                    args = []
                    self.skip_ws()
                    if self.peek() == ")":
                        self.pos += 1
                    else:
                        while True:
                            args.append(self.parse_expr())
                            self.skip_ws()
                            c2 = self.peek()
                            if c2 == ",":
                                self.pos += 1
                                continue
                            if c2 == ")":
                                self.pos += 1
                                break
                            raise self.error(f"expected ',' or ')' in the arguments of .{m.group()}(", open_at)
                    steps.append(rt.Call(sys.intern(m.group()), args))
                else:
                    steps.append(rt.Prop(sys.intern(m.group())))
            else:
                break
        if formal:
            if self.peek() != "}":
                raise _Fail()
            self.pos += 1
        return rt.Ref(name, steps)

    # -- expressions ----------------------------------------------------------------------------

    def kw(self, *words: str) -> str | None:
        """A keyword operator at pos (symbols or whole words); pos moves past it."""
        src = self.src
        for w in words:
            if src.startswith(w, self.pos):
                e = self.pos + len(w)
                if w[0].isalpha() and not self.word_at(e):
                    continue
                self.pos = e
                return w
        return None

    def parse_expr(self) -> Any:
        rt = self.rt
        self.skip_ws()
        a = self.parse_and()
        while True:
            self.skip_ws()
            if not self.kw("||", "or"):
                return a
            self.skip_ws()
            a = rt.Or(a, self.parse_and())

    def parse_and(self) -> Any:
        rt = self.rt
        a = self.parse_eq()
        while True:
            self.skip_ws()
            if not self.kw("&&", "and"):
                return a
            self.skip_ws()
            a = rt.And(a, self.parse_eq())

    def parse_eq(self) -> Any:
        rt = self.rt
        a = self.parse_rel()
        while True:
            self.skip_ws()
            op = self.kw("==", "!=", "eq", "ne")
            if op is None:
                return a
            self.skip_ws()
            a = rt.Cmp(0 if op in ("==", "eq") else 1, a, self.parse_rel())

    def parse_rel(self) -> Any:
        rt = self.rt
        a = self.parse_add()
        ops = {"<=": 4, "le": 4, ">=": 5, "ge": 5, "<": 2, "lt": 2, ">": 3, "gt": 3}
        while True:
            self.skip_ws()
            op = self.kw("<=", ">=", "<", ">", "le", "ge", "lt", "gt")
            if op is None:
                return a
            self.skip_ws()
            a = rt.Cmp(ops[op], a, self.parse_add())

    def parse_add(self) -> Any:
        rt = self.rt
        s0 = self.pos
        a = self.parse_mul()
        lit_a = self.src[s0:self.pos].strip()
        while True:
            self.skip_ws()
            c = self.peek()
            if c not in ("+", "-"):
                return a
            self.pos += 1
            self.skip_ws()
            s1 = self.pos
            b = self.parse_mul()
            lit_b = self.src[s1:self.pos].strip()
            a = rt.Arith(0 if c == "+" else 1, a, b, lit_a, lit_b)
            lit_a = self.src[s0:self.pos].strip()

    def parse_mul(self) -> Any:
        rt = self.rt
        s0 = self.pos
        a = self.parse_unary()
        while True:
            self.skip_ws()
            c = self.peek()
            if c not in ("*", "/", "%"):
                return a
            lit_a = self.src[s0:self.pos].strip()
            self.pos += 1
            self.skip_ws()
            s1 = self.pos
            b = self.parse_unary()
            a = rt.Arith({"*": 2, "/": 3, "%": 4}[c], a, b, lit_a, self.src[s1:self.pos].strip())

    def parse_unary(self) -> Any:
        self.skip_ws()
        if self.peek() == "!" and self.peek(1) != "=":
            self.pos += 1
            return self.rt.Not(self.parse_unary())
        if self.kw("not"):
            return self.rt.Not(self.parse_unary())
        return self.parse_primary()

    def parse_primary(self) -> Any:
        rt, src = self.rt, self.src
        self.skip_ws()
        start = self.pos
        c = self.peek()
        if c == "$":
            return self.parse_reference_expr()
        if c == '"' or c == "'":
            return self.parse_string()
        if c == "(":
            self.pos += 1
            e = self.parse_expr()
            self.expect(")", "to close '('")
            return e
        if c == "[":
            self.pos += 1
            self.skip_ws()
            if self.peek() == "]":
                self.pos += 1
                return rt.ListLit([])
            first = self.parse_expr()
            self.skip_ws()
            if src.startswith("..", self.pos):
                self.pos += 2
                hi = self.parse_expr()
                self.expect("]", "to close the range [a..b]")
                return rt.Range(first, hi)
            items = [first]
            while True:
                self.skip_ws()
                c2 = self.peek()
                if c2 == ",":
                    self.pos += 1
                    items.append(self.parse_expr())
                    continue
                if c2 == "]":
                    self.pos += 1
                    return rt.ListLit(items)
                raise self.error("expected ',' or ']' in a list")
        if c == "{":
            self.pos += 1
            keys, vals = [], []
            self.skip_ws()
            if self.peek() == "}":
                self.pos += 1
                return rt.MapLit(keys, vals)
            while True:
                keys.append(self.parse_expr())
                self.expect(":", "in a map literal")
                vals.append(self.parse_expr())
                self.skip_ws()
                c2 = self.peek()
                if c2 == ",":
                    self.pos += 1
                    continue
                if c2 == "}":
                    self.pos += 1
                    return rt.MapLit(keys, vals)
                raise self.error("expected ',' or '}' in a map literal")
        m = _NUMBER.match(src, self.pos, self.end)
        if m:
            self.pos = m.end()
            t = m.group()
            if src.startswith("..", self.pos) or not any(ch in t for ch in ".eE"):
                return rt.Const(int(t))
            return rt.Const(float(t))
        if self.kw("true"):
            return rt.Const(True)
        if self.kw("false"):
            return rt.Const(False)
        if not c:
            raise self.error("unexpected end of the template in an expression", start)
        raise self.error(f"unexpected {c!r} in an expression", start)

    def parse_string(self) -> Any:
        src, end = self.src, self.end
        q = src[self.pos]
        start = self.pos
        p = self.pos + 1
        if q == "'":
            e = src.find("'", p, end)
            if e < 0:
                raise self.error("unterminated string", start)
            self.pos = e + 1
            return self.rt.Const(src[p:e])
        while p < end and src[p] != '"':
            p += 2 if src[p] == "\\" else 1
        if p >= end:
            raise self.error("unterminated string", start)
        self.pos = p + 1
        body = src[start + 1:p]
        if "$" not in body and "#" not in body:
            return self.rt.Const(body)
        sub = Parser(src, self.rt, self.macros, start + 1, p)
        nodes, term = sub.parse_block(False)
        if len(nodes) == 1 and type(nodes[0]) is self.rt.Text:
            return self.rt.Const(nodes[0].s)
        if not nodes:
            return self.rt.Const("")
        return self.rt.Interp(nodes)


def compile_with(text: str, rt: ModuleType) -> Any:
    """Parse ``text`` into a ``rt.Template`` (rt: a renderer module)."""
    if not isinstance(text, str):
        raise TypeError("a template is a str")
    macros: dict[str, Any] = {}
    p = Parser(text, rt, macros)
    nodes, _ = p.parse_block(False)
    return rt.Template(nodes, text)
