"""fastgw's benchmark harness: `python -m benchmarks` (see benchmarks/README.md).

Importable by tests: `from benchmarks import main; main(["--quick"])` returns the exit code.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from .run import main as run_main

    return run_main(argv)


__all__ = ["main"]
