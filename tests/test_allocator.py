"""The worker's glibc malloc settings (fastgw/allocator.py): applied on glibc, left to the environment
when it sets glibc's own tunables. Each case runs in a fresh interpreter: mallopt changes the process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

PROGRAM = "from fastgw import allocator; print(allocator.tune_for_proxy())"


def run(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env={**clean, **env}, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


def test_applied_on_glibc() -> None:
    assert run({}) == "True"


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"])
def test_environment_wins(name: str) -> None:
    assert run({name: "131072"}) == "False"
