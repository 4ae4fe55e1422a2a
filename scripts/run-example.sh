#!/usr/bin/env bash
# Run the gateway on examples/gateway.yaml with the example upstream beside it.
#   scripts/run-example.sh        then: curl -i localhost:8080/prod/items/42
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh run
.venv/bin/python examples/upstream.py --port 9001 &
upstream=$!
.venv/bin/fastgw serve examples/gateway.yaml "$@" &
gateway=$!
# Ctrl-C or a TERM to this script stops both, gracefully (the gateway drains first).
trap 'kill -TERM $gateway 2>/dev/null; wait $gateway; kill $upstream 2>/dev/null; exit 0' INT TERM
status=0
wait $gateway || status=$?
kill $upstream 2>/dev/null || true
exit $status
