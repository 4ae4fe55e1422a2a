#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up included.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
.venv/bin/ruff check fastgw tests benchmarks
# Kernel tests run against both the Cython core and the pure-Python twins (parametrized);
# everything else runs on the compiled build, as users run it.
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
