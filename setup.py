"""Build the Cython core (src_ext/_core.pyx -> fastgw._core), the VTL renderer (fastgw.vtl._render), the
plain lane (fastgw._lane) and the usage check (fastgw.policies.usage._stage).

FASTGW_NO_EXTENSIONS=1 builds a pure-Python package (the twins in fastgw/_py are used);
FASTGW_CYTHON_ANNOTATE=1 writes the Cython HTML annotation next to the sources.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("FASTGW_NO_EXTENSIONS"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("fastgw._core", ["src_ext/_core.pyx"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3", "embedsignature": True},
        annotate=bool(os.environ.get("FASTGW_CYTHON_ANNOTATE")),
    )
    # The VTL renderer: one source, fastgw/vtl/render.py, runs as Python and is also compiled here
    # (fastgw/vtl/_render.pxd makes its classes extension types); the C goes to build/.
    ext_modules += cythonize(
        [Extension("fastgw.vtl._render", ["fastgw/vtl/render.py"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3", "binding": False, "annotation_typing": False},
        build_dir="build/cython",
        force=True,  # cythonize's dependency scan misses the _name.pxd of a name.py: always regenerate
        annotate=bool(os.environ.get("FASTGW_CYTHON_ANNOTATE")),
    )

    # Issue 18, compiled the same way, with their annotations typing locals: the plain lane (fastgw/lane.py,
    # fastgw/_lane.pxd: its PlainRoute's fields read without a lookup) and the usage check
    # (fastgw/policies/usage/stage.py, its _stage.pxd: the check's fields and SlotTable.admit in C).
    ext_modules += cythonize(
        [Extension("fastgw._lane", ["fastgw/lane.py"], extra_compile_args=["-O3"]),
         Extension("fastgw.policies.usage._stage", ["fastgw/policies/usage/stage.py"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3", "binding": False},
        build_dir="build/cython",
        force=True,  # cythonize's dependency scan misses the _name.pxd of a name.py: always regenerate
        annotate=bool(os.environ.get("FASTGW_CYTHON_ANNOTATE")),
    )

setup(ext_modules=ext_modules)
