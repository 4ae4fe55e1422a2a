#!/usr/bin/env bash
# Run the gateway on examples/gateway.yaml with the example upstream beside it.
#   scripts/run-example.sh        then: curl -i localhost:8080/prod/items/42
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh run
.venv/bin/python examples/upstream.py --port 9001 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT INT TERM
exec_status=0
.venv/bin/fastgw serve examples/gateway.yaml "$@" || exec_status=$?
exit $exec_status
