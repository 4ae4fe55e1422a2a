"""Finding (and, on Debian, installing) the programs the harness drives, and describing the machine.

Nothing here is faked: a program that cannot be found or installed is reported as missing, and the
contenders that need it are skipped with that reason.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# program -> Debian package that provides it
APT_PACKAGES: dict[str, str] = {
    "wrk": "wrk",
    "nginx": "nginx",
    "haproxy": "haproxy",
    "caddy": "caddy",
    "taskset": "util-linux",
}

# sbin directories are not always on PATH (nginx and haproxy live in /usr/sbin)
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Toolbox:
    """Absolute paths of the programs found; `missing` says why the others are absent."""

    paths: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.paths.get(name)


def ensure_programs(
    names: Iterable[str], install: bool, say: Callable[[str], None]
) -> Toolbox:
    """Find each program; install the missing ones with apt-get (one `apt-get update` first)."""
    box = Toolbox()
    wanted = list(dict.fromkeys(names))
    missing = []
    for name in wanted:
        path = which(name)
        if path:
            box.paths[name] = path
        else:
            missing.append(name)
    if missing and install:
        _apt_install(missing, say)
        still_missing = []
        for name in missing:  # look for every one again: the install may have brought any of them
            path = which(name)
            if path:
                box.paths[name] = path
            else:
                still_missing.append(name)
        missing = still_missing
    for name in missing:
        if name not in box.missing:
            box.missing[name] = "not installed" + ("" if install else " (--no-install)")
    return box


def _apt_install(names: list[str], say: Callable[[str], None]) -> list[str]:
    """Install the Debian packages for `names`; returns the names still missing."""
    apt = which("apt-get")
    if apt is None:
        say("apt-get is not available: cannot install " + ", ".join(names))
        return names
    if os.geteuid() != 0:
        say("not root: cannot apt-get install " + ", ".join(names))
        return names
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    say("apt-get update (to install: " + ", ".join(names) + ")")
    update = subprocess.run([apt, "update", "-qq"], env=env, capture_output=True, text=True, timeout=600)
    if update.returncode != 0:
        say("apt-get update failed: " + _last_line(update.stderr))
    # one package at a time, so that one unavailable package does not block the others
    for name in names:
        package = APT_PACKAGES.get(name, name)
        say(f"apt-get install {package}")
        result = subprocess.run(
            [apt, "install", "-y", "-qq", "--no-install-recommends", package],
            env=env, capture_output=True, text=True, timeout=900,
        )
        if result.returncode != 0:
            say(f"  could not install {package}: {_last_line(result.stderr)}")
    return [name for name in names if which(name) is None]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run_text(cmd: list[str], timeout: float = 20) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    return (result.stdout + result.stderr).strip()


def program_version(name: str, path: str) -> str:
    """One line naming the version of a peer program."""
    if name == "nginx":
        out = _run_text([path, "-v"])
        match = re.search(r"nginx/(\S+)(.*)", out)
        return (match.group(1) + match.group(2)).strip() if match else out
    if name == "haproxy":
        out = _run_text([path, "-v"])
        match = re.search(r"version (\S+)", out)
        return match.group(1) if match else out.splitlines()[0] if out else out
    if name == "caddy":
        out = _run_text([path, "version"])
        return out.split()[0] if out else out
    if name == "wrk":
        out = _run_text([path, "-v"])
        match = re.search(r"wrk (\S+)", out)
        return match.group(1) if match else out.splitlines()[0] if out else out
    out = _run_text([path, "--version"])
    return out.splitlines()[0] if out else out


def python_package_version(python: str, package: str) -> str | None:
    """The version of `package` as seen by the interpreter `python` (None when it is absent)."""
    code = (
        "import importlib.metadata as m, sys\n"
        "try:\n    print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError:\n    sys.exit(1)\n"
    )
    try:
        result = subprocess.run([python, "-c", code, package], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def fastgw_accel_impl(python: str) -> str | None:
    """`fastgw._accel.IMPL` as the fastgw interpreter sees it, when that module exists."""
    code = "import fastgw._accel as a; print(getattr(a, 'IMPL', '?'))"
    try:
        result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def build_floor_app(python: str, work: Path) -> tuple[Path | None, str]:
    """Compile benchmarks/floor_app.pyx with the fastgw interpreter's Cython into `work`/floor.
    Returns (the folder to give granian as its working dir, "") or (None, why not)."""
    target = work / "floor"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH_DIR / "floor_app.pyx", target / "floor_app.pyx")
    try:
        result = subprocess.run([python, "-m", "Cython.Build.Cythonize", "-i", "-3", "floor_app.pyx"],
                                cwd=target, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not run Cython: {exc}"
    if result.returncode != 0:
        if "No module named Cython" in result.stderr:
            return None, "Cython is not installed in fastgw's venv (pip install cython)"
        return None, f"Cython build failed: {_last_line(result.stderr or result.stdout)}"
    if not any(target.glob("floor_app*.so")):
        return None, "Cython build produced no module"
    return target, ""


def git_sha(repo: Path = REPO_ROOT) -> str | None:
    out = _run_text(["git", "-C", str(repo), "rev-parse", "HEAD"])
    if not re.fullmatch(r"[0-9a-f]{40}", out):
        return None
    dirty = _run_text(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--", "fastgw",
                       "src_ext", "setup.py", "pyproject.toml"])
    return out + ("-dirty" if dirty else "")


def machine_info() -> dict[str, object]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    distro = None
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "os": distro,
        "python": platform.python_version(),
        "harness_python": sys.executable,
        "loadavg": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        with open("/proc/loadavg") as fh:
            return [float(x) for x in fh.read().split()[:3]]
    except OSError:
        return None


_CALIBRATION = (
    "import time\n"
    "best = None\n"
    "for _ in range(5):\n"
    "    t = time.perf_counter()\n"
    "    n = 0\n"
    "    for i in range(2_000_000):\n"
    "        n += i & 7\n"
    "    d = time.perf_counter() - t\n"
    "    best = d if best is None else min(best, d)\n"
    "print(round(best * 1000, 1))\n"
)


def cpu_calibration_ms(cpus: str | None) -> float | None:
    """Milliseconds for a fixed pure-Python loop on the contender's core (best of 5).

    A yardstick of how fast the (virtual) CPU was during this run, to compare runs made at different
    times: a loaded host makes every figure slower, including the peers'."""
    cmd = (["taskset", "-c", cpus] if cpus else []) + [sys.executable, "-c", _CALIBRATION]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return float(result.stdout.strip()) if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
