"""The container image (issue 17): built from the repository's Dockerfile with podman, run as the
README says, probed, served through, and stopped with a drain.

Slow (a Debian rootfs by debootstrap, then the image build compiles the Cython core: ~6-8 min the
first time, ~3 min with the base image cached), so it runs only with FASTGW_CONTAINER_TEST=1
(`FASTGW_CONTAINER_TEST=1 scripts/bootstrap.sh test` installs podman, runc and debootstrap). No
registry but the package registries is reachable here, so the base image is made locally: a
debootstrapped Debian 12 (its python3 is 3.11, as the official python:3.11-slim-bookworm the
Dockerfile defaults to), imported as localhost/fastgw-base:bookworm and given to the build as BASE.

What this machine's engine needed (found by trying; each attempt is in ENGINE_OPTIONS): crun refuses
hybrid cgroups ("cgroups in hybrid mode not supported"); runc with the cgroupfs manager runs, once the
ulimits are below the sandbox's hard limits (podman's defaults need CAP_SYS_RESOURCE, which the sandbox
drops); builds use `--isolation chroot`; the network is the host's (loopback upstreams, no CNI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support.gateway import free_port
from support.upstream import Action, RecordingUpstream

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/fastgw-base:bookworm"
IMAGE = "localhost/fastgw:test"
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
ENGINE_OPTIONS = [  # global options, run options: tried in order until a container starts
    ([], []),
    ([], ["--cgroups=disabled", *LIMITS]),
    (["--runtime", "runc", "--cgroup-manager", "cgroupfs"], LIMITS),
]

pytestmark = [pytest.mark.skipif(not os.environ.get("FASTGW_CONTAINER_TEST"),
                                 reason="slow (debootstrap + image build, minutes): set FASTGW_CONTAINER_TEST=1"),
              pytest.mark.timeout(3000)]  # the first build: debootstrap and the Cython core

CONFIG = """
server: {{drainSeconds: 20}}
apis:
  - name: shop
    type: REST
    stages: {{prod: {{}}}}
    routes:
      - route: ANY /{{proxy+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/{{proxy}}"}}
"""


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {run.returncode}\n{run.stderr[-3000:]}")
    return run


def ensure_base(tmp: Path) -> None:
    """A Debian 12 rootfs with Python 3.11 (and gcc for the builder stage), trusting this machine's CA
    bundle (PyPI is reached through it)."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        pytest.skip("no base image and no debootstrap to make one (FASTGW_CONTAINER_TEST=1 scripts/bootstrap.sh test)")
    rootfs = tmp / "rootfs"
    run = subprocess.run(["debootstrap", "--variant=minbase",
                          "--include=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates",
                          "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                         capture_output=True, text=True, timeout=1500)
    if run.returncode != 0:
        pytest.skip(f"debootstrap failed (is the Debian mirror reachable?): {run.stderr[-500:]}")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["podman", "import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
                               "-", BASE], stdin=tar.stdout, capture_output=True, text=True, timeout=600)
    tar.wait(600)
    shutil.rmtree(rootfs, ignore_errors=True)
    assert imported.returncode == 0, imported.stderr


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (FASTGW_CONTAINER_TEST=1 scripts/bootstrap.sh test)")
    ensure_base(tmp_path_factory.mktemp("base"))
    build = subprocess.run(["podman", "build", "--isolation", "chroot", "--format", "docker", "--network", "host",
                            "--build-arg", f"BASE={BASE}", "-t", IMAGE, str(ROOT)],
                           capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def test_the_image_is_configured_as_documented(image):
    config = podman("image", "inspect", image, "--format",
                    "{{.Config.User}}|{{.Config.StopSignal}}|{{json .Config.Healthcheck.Test}}|"
                    "{{json .Config.Entrypoint}}|{{json .Config.Env}}").stdout.strip().split("|")
    user, stop, health, entrypoint, env = config
    assert user == "10001:10001"
    assert stop == "SIGTERM"
    assert "/readyz" in health
    assert entrypoint == '["fastgw"]'
    assert "FASTGW_CONFIG=/etc/fastgw/gateway.yaml" in env
    # the runtime stage holds no compiler and no sources, only the virtual environment
    listing = podman("run", "--rm", "--network", "host", *ENGINE_OPTIONS[-1][1], "--entrypoint", "python3", image,
                     "-c", "import fastgw._core, fastgw.vtl._render, os; print(os.path.exists('/src'))",
                     check=False)
    if listing.returncode == 0:
        assert listing.stdout.strip() == "False"


def start_container(image: str, name: str, config: Path, port: int, admin: int) -> list[str]:
    """Start the image as the README shows; returns the global options the engine needed."""
    failures = []
    for global_options, run_options in ENGINE_OPTIONS:
        podman("rm", "-f", name, check=False)
        run = podman(*global_options, "run", "-d", "--name", name, "--network", "host", *run_options,
                     "-v", f"{config}:/etc/fastgw/gateway.yaml:ro",
                     "-e", f"FASTGW_PORT={port}", "-e", f"FASTGW_ADMIN_PORT={admin}", "-e", "FASTGW_WORKERS=1",
                     "-e", "FASTGW_ADMIN_TOKEN=secret-token", image, check=False)
        if run.returncode == 0:
            return global_options
        failures.append(f"{' '.join(global_options + run_options) or 'defaults'}: {run.stderr.strip()[-300:]}")
    podman("rm", "-f", name, check=False)
    pytest.skip("no way to run a container on this machine: " + " | ".join(failures))


def test_the_image_serves_probes_and_drains(image, tmp_path):
    upstream = RecordingUpstream(lambda r: Action(delay=2.0) if "slow" in r.target else Action()).start()
    name = f"fastgw-test-{os.getpid()}"
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(upstream=upstream.address))
    config.chmod(0o644)  # read by the image's non-root user
    port, admin = free_port(), free_port()
    try:
        options = start_container(image, name, config, port, admin)
        # HEALTHCHECK: the image's own command, run by the engine, turns 0 once /readyz says ready
        deadline = time.monotonic() + 60
        while podman(*options, "healthcheck", "run", name, check=False).returncode != 0:
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr[-2000:]
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=5).json() == {"status": "ready"}
        assert httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).status_code == 401  # FASTGW_ADMIN_TOKEN
        response = httpx.get(f"http://127.0.0.1:{port}/prod/items/1", timeout=5)
        assert response.status_code == 200 and response.json()["target"] == "/items/1"
        assert podman(*options, "exec", name, "id", "-u").stdout.strip() == "10001"
        # SIGTERM (STOPSIGNAL) while a request is in flight: it finishes, then the gateway exits 0
        with httpx.Client(timeout=15) as client:
            import threading

            result: dict = {}
            slow = threading.Thread(target=lambda: result.setdefault(
                "status", client.get(f"http://127.0.0.1:{port}/prod/slow").status_code))
            slow.start()
            deadline = time.monotonic() + 10
            while not any("slow" in r.target for r in upstream.requests):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            stopped = podman(*options, "stop", "-t", "30", name, timeout=60)
            slow.join(15)
        assert stopped.returncode == 0
        assert result.get("status") == 200
        state = podman(*options, "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert state == "0"
        logs = podman(*options, "logs", name, check=False)
        assert "in-flight requests get up to 20s" in logs.stdout + logs.stderr
    finally:
        podman("rm", "-f", name, check=False)
        upstream.stop()
