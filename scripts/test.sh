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
# --strict fails the run when a fastgw contender errs or answers non-2xx (never on a timing).
if [ $# -eq 0 ]; then
  timeout 600 .venv/bin/python -m benchmarks --quick --strict
fi
# Kernel tests run against both the Cython core and the pure-Python twins (parametrized);
# everything else runs on the compiled build, as users run it.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
# The pure-Python build end to end (FASTGW_NO_EXTENSIONS=1: every gateway these tests start runs
# the twins): a representative part of the suite, ~1.5 min, that crosses every kernel (router,
# template, request scan, upstream connection and parser, limiter and slot table, cache, tally, VTL, and the
# plain lane as Python, fastgw/lane.py).
# Usage tests with one worker only: the twins are not atomic across workers (README says so).
if [ $# -eq 0 ]; then
  FASTGW_NO_EXTENSIONS=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_build.py tests/test_proxy.py tests/test_mapping_templates.py tests/test_faults.py tests/test_plain_lane.py \
    "tests/test_usage.py::test_missing_wrong_disabled_and_other_plan_keys_are_403" \
    "tests/test_usage.py::test_quota_is_exact_and_survives_a_restart" \
    "tests/test_cache.py::test_repeated_gets_miss_then_hit_until_the_ttl_and_metrics_agree_with_the_upstream" \
    "tests/test_cache.py::test_flush_empties_the_stage_in_every_worker"
fi
