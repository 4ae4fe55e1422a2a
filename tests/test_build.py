"""The compiled core must be present and usable unless FASTGW_NO_EXTENSIONS asks for the twins.

fastgw._accel falls back to the pure-Python twins when fastgw._core cannot be imported; this file
is what turns a silently missing build into a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastgw._accel as accel

ROOT = Path(__file__).resolve().parents[1]
NO_EXTENSIONS = bool(os.environ.get("FASTGW_NO_EXTENSIONS"))
needs_core = pytest.mark.skipif(NO_EXTENSIONS, reason="FASTGW_NO_EXTENSIONS is set: the twins are in use")


def test_impl_matches_the_environment() -> None:
    if NO_EXTENSIONS:
        assert accel.IMPL == "py"
        assert accel.NO_EXTENSIONS is True
    else:
        assert accel.IMPL == "c", (
            "fastgw._core is missing or failed to import, so fastgw._accel fell back to the "
            "pure-Python twins; build it with: python setup.py build_ext --inplace"
        )
        assert accel.NO_EXTENSIONS is False


def test_accel_exports_both_builds() -> None:
    from fastgw import _py

    assert (accel.PyRouter, accel.PyTemplate, accel.PyGcraTable, accel.PyLruTtlCache) == (
        _py.Router, _py.Template, _py.GcraTable, _py.LruTtlCache)
    expected = "fastgw._core" if accel.IMPL == "c" else "fastgw._py"
    for cls in (accel.Router, accel.Template, accel.GcraTable, accel.LruTtlCache):
        assert cls.__module__.startswith(expected), cls


def test_no_extensions_env_selects_the_twins() -> None:
    code = "import fastgw._accel as a; print(a.IMPL, a.NO_EXTENSIONS, a.Router.__module__)"
    env = {**os.environ, "FASTGW_NO_EXTENSIONS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["py", "True", "fastgw._py.router"]


@needs_core
def test_compiled_router() -> None:
    from fastgw._core import Router

    r = Router()
    r.add("GET", "/items/{id}", "item")
    r.add("ANY", "/files/{path+}", "files")
    assert r.match("GET", "/items/1") == (0, "item", {"id": "1"})
    assert r.match("POST", "/items/1") == (1, ("GET",), None)
    assert r.match("PUT", "/files/a/b") == (0, "files", {"path": "a/b"})
    assert r.match("GET", "/nope") == (2, None, None)
    assert r.routes() == [("GET", "/items/{id}", "item"), ("ANY", "/files/{path+}", "files")]
    r.set_default("dflt")
    assert r.match("GET", "/nope") == (0, "dflt", {})
    with pytest.raises(ValueError):
        r.add("GET", "/items/{other}", "dup")


@needs_core
def test_compiled_template() -> None:
    from fastgw._core import Template

    t = Template("http://${stageVariables.host}/items/{id}")
    assert t.names == ("stageVariables.host", "id")
    p = t.partial({"stageVariables.host": "h"})
    assert type(p) is Template and p.names == ("id",)
    assert p.render({"id": 5}) == "http://h/items/5"
    with pytest.raises(KeyError):
        t.render({})


@needs_core
def test_compiled_gcra_table() -> None:
    from fastgw._core import GcraTable

    t = GcraTable(bytearray(16), 2)
    assert t.nslots == 2
    assert t.acquire(1, 10**12, 1.0, 1) == (True, 0, 0)
    assert t.acquire(1, 10**12, 1.0, 1) == (False, 10**9, 0)
    t.reset(1)
    assert t.acquire(1, 10**12, 1.0, 1, 1) == (True, 0, 0)


@needs_core
def test_compiled_cache() -> None:
    from fastgw._core import LruTtlCache

    c = LruTtlCache(1 << 20)
    assert c.ENTRY_OVERHEAD == 128 and c.max_bytes == 1 << 20
    assert c.put("k", "v", 10, 1.0, 0.0) is True
    assert c.get("k", 0.5) == "v"
    assert len(c) == 1 and c.bytes_used == 10 + 1 + 128
    assert c.delete("k") is True
    c.put(b"k", "v", 10, 1.0, 0.0)
    c.clear()
    assert len(c) == 0 and c.bytes_used == 0


def test_vtl_renderer_matches_the_environment() -> None:
    import fastgw.vtl as vtl

    if NO_EXTENSIONS:
        assert vtl.IMPL == "py" and vtl.runtime.__name__ == "fastgw.vtl.render"
    else:
        assert vtl.IMPL == "c", (
            "fastgw.vtl._render is missing or failed to import, so fastgw.vtl fell back to the pure-Python "
            "renderer; build it with: python setup.py build_ext --inplace"
        )
        assert vtl.runtime.__name__ == "fastgw.vtl._render"


def test_plain_lane_matches_the_environment() -> None:
    """The plain lane runs compiled (fastgw._lane, from fastgw/lane.py) unless FASTGW_NO_EXTENSIONS asks for Python."""
    from fastgw import pipeline

    if NO_EXTENSIONS:
        assert pipeline.lane.__name__ == "fastgw.lane"
    else:
        assert pipeline.lane.__name__ == "fastgw._lane", (
            "fastgw._lane is missing or failed to import; build it with: python setup.py build_ext --inplace")
        assert pipeline.lane.PlainRoute.__dict__.get("__dict__") is None  # an extension type (fastgw/_lane.pxd)


def test_usage_check_matches_the_environment() -> None:
    """The usage check runs compiled (fastgw.policies.usage._stage, from stage.py) unless FASTGW_NO_EXTENSIONS
    asks for Python; the compiled lane calls it in C, so the two are chosen together."""
    from fastgw import pipeline

    if NO_EXTENSIONS:
        assert pipeline.UsageStage.__module__ == "fastgw.policies.usage.stage"
    else:
        assert pipeline.UsageStage.__module__ == "fastgw.policies.usage._stage", (
            "fastgw.policies.usage._stage is missing or failed to import; build it with: pip install -e .")
        assert pipeline.UsageStage.__dict__.get("__dict__") is None  # an extension type (its _stage.pxd)


@needs_core
def test_compiled_vtl_renderer() -> None:
    from fastgw.vtl import UTIL, Input, _render
    from fastgw.vtl.parser import compile_with

    t = compile_with("#set($b = $input.path('$'))#foreach($i in $b.l)$i#if($foreach.hasNext),#end#end "
                     "$util.escapeJavaScript(\"'\")", _render)
    assert type(t) is _render.Template
    assert t.render({"input": Input('{"l": [1, 2]}'), "util": UTIL}) == "1,2 \\'"
    # The augmenting _render.pxd was applied: the nodes are extension types (no instance __dict__).
    assert not hasattr(_render.Text("x"), "__dict__")


def test_one_chooser_knows_every_compiled_module() -> None:
    """fastgw/_accel.py chooses every compiled module (the core, the VTL renderer, the plain lane and the usage
    check) the same way, so the build_info metric cannot say "c" while one of them runs its pure-Python twin."""
    import fastgw.pipeline  # noqa: F401 - registers the plain lane's and the usage check's choice
    import fastgw.vtl  # noqa: F401 - registers the renderer's choice

    assert set(accel.KERNELS) == {"fastgw._core", "fastgw.vtl._render", "fastgw._lane",
                                  "fastgw.policies.usage._stage"}
    assert set(accel.KERNELS.values()) == {"py" if NO_EXTENSIONS else "c"}
    assert accel.impl() == ("py" if NO_EXTENSIONS else "c")
