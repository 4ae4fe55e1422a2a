"""VTL (Apache Velocity 1.7, API Gateway dialect) for mapping templates.

    t = compile_template(text)          # TemplateError(message, line, column) when it does not parse
    out = t.render({"input": Input(body, path, querystring, header), "context": {...},
                    "stageVariables": {...}, "util": UTIL})   # RenderError on a runtime failure

Templates are parsed once (parser.py, pure Python) into nodes of the renderer: the compiled
``fastgw.vtl._render`` (render.py built by Cython), or the same file as plain Python
(``fastgw.vtl.render``) when FASTGW_NO_EXTENSIONS is set or the build is missing: chosen by
fastgw/_accel.py like every compiled kernel. ``IMPL`` says which one ("c" or "py"). The ``context``
dict is used as is, so #set($context.responseOverride...) is seen by the caller; top-level #set never
changes the caller's ``variables``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

from .._accel import compiled
from . import render as py_render
from .errors import RenderError, TemplateError
from .parser import compile_with
from .values import UTIL, Util

runtime: ModuleType = compiled("fastgw.vtl._render") or py_render
IMPL = "py" if runtime is py_render else "c"

Input = runtime.Input  # $input, from the chosen build (either build renders with either one)


class CompiledTemplate(Protocol):
    source: str

    def render(self, variables: dict[str, Any]) -> str: ...


def compile_template(text: str) -> CompiledTemplate:
    """Parse a mapping template once; render it with ``.render(variables) -> str``."""
    return compile_with(text, runtime)  # type: ignore[no-any-return]


__all__ = ["IMPL", "UTIL", "CompiledTemplate", "Input", "RenderError", "TemplateError", "Util", "compile_template",
           "compile_with", "py_render", "runtime"]
