"""Every kernel test runs against both builds: the compiled fastgw._core and the fastgw._py twins."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

NO_EXTENSIONS = bool(os.environ.get("FASTGW_NO_EXTENSIONS"))


# Session scope: the modules are stateless, and Hypothesis rejects function-scoped fixtures.
@pytest.fixture(params=["c", "py"], scope="session")
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The kernel module under test: ``impl.Router``, ``impl.Template``, ..."""
    if request.param == "c":
        if NO_EXTENSIONS:
            pytest.skip("FASTGW_NO_EXTENSIONS is set: only the pure-Python twins are tested")
        # No fallback on purpose: a missing build must fail here, not be skipped.
        return importlib.import_module("fastgw._core")
    return importlib.import_module("fastgw._py")


def is_compiled(impl: ModuleType) -> bool:
    return impl.__name__ == "fastgw._core"
