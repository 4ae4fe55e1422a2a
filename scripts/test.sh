#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up included.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
.venv/bin/ruff check fastgw tests benchmarks
# The import contract in pyproject.toml: dependencies point one way (docs/DESIGN.md "Layers").
.venv/bin/lint-imports --no-cache
# The benchmark harness end to end, one second per contender: proves it works, judges no timing.
if [ $# -eq 0 ]; then
  timeout 600 .venv/bin/python -m benchmarks --quick
fi
# Kernel tests run against both the Cython core and the pure-Python twins (parametrized);
# everything else runs on the compiled build, as users run it.
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
