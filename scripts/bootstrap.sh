#!/usr/bin/env bash
# Set up everything fastgw needs on a fresh Debian machine: Debian packages (only those missing),
# a virtual environment in .venv, and fastgw itself built from this checkout (with its Cython core).
#   scripts/bootstrap.sh          # to run the gateway
#   scripts/bootstrap.sh test     # also what the test suite needs
#   FASTGW_CONTAINER_TEST=1 scripts/bootstrap.sh test   # and the container engine for tests/test_container.py
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-run}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: a compiler and Python headers for the Cython core; the servers the tests start.
packages=()
command -v gcc >/dev/null || packages+=(gcc)
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' \
  || packages+=(python3-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
if [ "$want" = test ]; then
  command -v redis-server >/dev/null || packages+=(redis-server)
  command -v wrk >/dev/null || packages+=(wrk)
  command -v nginx >/dev/null || packages+=(nginx-light)
  # The reference proxy of the differential upstream tests (tests/test_upstream_differential.py), with nginx.
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || packages+=(haproxy)
  # The dashboard's page is rendered in a real headless browser (tests/test_dashboard.py).
  command -v chromium >/dev/null || packages+=(chromium)
  # The container image test (tests/test_container.py, FASTGW_CONTAINER_TEST=1): an engine, the runtime
  # that runs here (runc), and debootstrap for a local base image (no registry but the package ones).
  if [ -n "${FASTGW_CONTAINER_TEST:-}" ]; then
    command -v podman >/dev/null || packages+=(podman)
    command -v runc >/dev/null || packages+=(runc)
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || packages+=(debootstrap)
  fi
fi
if [ ${#packages[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The virtual environment, rebuilt when the sources of the compiled core or the deps change.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# A test set-up includes everything a run set-up needs, so either satisfies "run".
stamp=.venv/.fastgw-build
digest=$(cat pyproject.toml setup.py src_ext/*.pyx src_ext/*.pxi fastgw/vtl/render.py fastgw/vtl/_render.pxd fastgw/lane.py fastgw/_lane.pxd fastgw/_core.pxd fastgw/policies/usage/stage.py fastgw/policies/usage/_stage.pxd 2>/dev/null \
  | sha256sum | cut -c1-16)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" != "$digest-test" ] && { [ "$want" = test ] || [ "$have" != "$digest-run" ]; } \
   || ! .venv/bin/python -c 'import fastgw._core, fastgw.vtl._render, fastgw._lane, fastgw.policies.usage._stage' 2>/dev/null; then
  extras=""
  [ "$want" = test ] && extras="[test]"
  echo "bootstrap: building fastgw$extras into .venv (Cython core)"
  .venv/bin/pip install -q -e ".$extras"
  echo "$digest-$want" > "$stamp"
fi
