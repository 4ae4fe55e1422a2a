"""$util, the helper object API Gateway gives every mapping template (plain Python, shared by both
renderers; $input is in render.py, compiled with it).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from .errors import RenderError
from .render import Input, compile_jsonpath, eval_jsonpath, json_text, parse_json_value, to_str

# ---------------------------------------------------------------------------------------------
# $util
# ---------------------------------------------------------------------------------------------


def escape_javascript(s: str) -> str:
    """Apache commons-lang StringEscapeUtils.escapeJavaScript (what AWS runs): ' " \\ / escaped with a
    backslash, \\b \\t \\n \\f \\r by name, other control characters and everything above 0x7E as \\uXXXX
    (upper-case hex, UTF-16 units)."""
    # PERF: most values need nothing; the rest are translated in C (str.translate, re.sub)
    # rather than character by character (that loop was the largest cost of typical templates).
    if _NEEDS_ESCAPE.search(s) is None:
        return s
    s = s.translate(_ASCII_ESCAPES)
    return s if s.isascii() else _NON_ASCII.sub(_unicode_escape, s)


def _unicode_escape(match: re.Match[str]) -> str:
    o = ord(match.group())
    if o > 0xFFFF:
        o -= 0x10000
        return f"\\u{0xD800 + (o >> 10):04X}\\u{0xDC00 + (o & 0x3FF):04X}"
    return f"\\u{o:04X}"


_NEEDS_ESCAPE = re.compile("[^\x20-\x7f]|['\"\\\\/]")
_NON_ASCII = re.compile("[^\x00-\x7f]")
_ASCII_ESCAPES = {o: f"\\u{o:04X}" for o in range(32)}
_ASCII_ESCAPES.update({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r", ord("'"): "\\'", ord('"'): '\\"',
                       ord("\\"): "\\\\", ord("/"): "\\/"})


class Util:
    """``$util``: escapeJavaScript, parseJson, urlEncode, urlDecode, base64Encode, base64Decode (+ toJson)."""

    __slots__ = ()
    _vtl_methods = True  # Call.apply may cache its methods

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

__all__ = ["UTIL", "Input", "Util", "compile_jsonpath", "escape_javascript", "eval_jsonpath", "json_text",
           "parse_json_value"]
