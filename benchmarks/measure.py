"""Processes, /proc accounting and wrk runs.

* Servers are started in their own session, pinned with `taskset`, and stopped by PID: SIGTERM to the
  process we started, then SIGKILL to whatever is left of the process tree we recorded (checked by
  start time, so a reused PID is never hit).
* CPU per request is utime+stime of the whole process tree (/proc/<pid>/stat) over the run, divided by
  the requests wrk completed. Peak RSS is the largest sum of VmRSS over the tree, sampled every 0.25 s
  (and the largest single process: a fastgw worker or its main process).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------- /proc
def _stat_fields(pid: int, task: int | None = None) -> list[str] | None:
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    return text[text.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out = [root]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], ()))
        i += 1
    return out


def cpu_ticks(pids: Sequence[int]) -> int:
    """utime+stime (clock ticks) summed over `pids`; a process that has exited counts 0."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total


def main_thread_ticks(pids: Sequence[int]) -> int:
    """utime+stime of each process's main thread (for granian: the Python event-loop thread)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid, task=pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total


def rss_kib(pids: Sequence[int]) -> int:
    return sum(rss_each_kib(pids))


def rss_each_kib(pids: Sequence[int]) -> list[int]:
    """VmRSS of each process (0 for one that is gone)."""
    sizes = []
    for pid in pids:
        size = 0
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        size = int(line.split()[1])
                        break
        except OSError:
            pass
        sizes.append(size)
    return sizes


@dataclass(frozen=True)
class CoreTimes:
    """Jiffies of one core from /proc/stat, grouped."""

    task: int  # user + nice + system: time spent running processes
    irq: int  # irq + softirq (loopback networking is largely softirq)
    steal: int  # taken by the hypervisor for other guests
    total: int


def core_times() -> dict[str, CoreTimes]:
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                n = [int(v) for v in values] + [0] * 10
                # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
                out[name] = CoreTimes(task=n[0] + n[1] + n[2], irq=n[5] + n[6], steal=n[7], total=sum(n[:8]))
    return out


def core_shares(before: Mapping[str, CoreTimes], after: Mapping[str, CoreTimes]) -> dict[str, dict[str, float]]:
    """Per core, the share of the interval spent on processes, interrupts and steal."""
    out = {}
    for core, a in after.items():
        b = before.get(core)
        if b is None:
            continue
        total = max(1, a.total - b.total)
        out[core] = {"task": round((a.task - b.task) / total, 3), "irq": round((a.irq - b.irq) / total, 3),
                     "steal": round((a.steal - b.steal) / total, 3)}
    return out


def wait_for_quiet(max_wait_s: float, threshold: float = 0.10, window_s: float = 0.5) -> tuple[float, float]:
    """Wait (at most `max_wait_s`) until no core is more than `threshold` busy with processes.

    Between runs every server the harness started is idle, so what shows here is somebody else's work
    on the machine. Returns (seconds waited, busiest core's share in the last window)."""
    t0 = time.monotonic()
    while True:
        before = core_times()
        time.sleep(window_s)
        shares = core_shares(before, core_times())
        busiest = max((s["task"] for s in shares.values()), default=0.0)
        waited = time.monotonic() - t0
        if busiest <= threshold or waited >= max_wait_s:
            return round(waited, 1), busiest


# ---------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerError(RuntimeError):
    pass


@dataclass
class Server:
    """A server process the harness started (the root of a process tree)."""

    name: str
    cmd: list[str]
    port: int
    cpus: str | None
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _known: dict[int, int | None] = field(default_factory=dict)  # pid -> start time, every pid seen

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tree(self) -> list[int]:
        pids = process_tree(self.pid)
        for pid in pids:
            if pid not in self._known:
                self._known[pid] = start_time(pid)
        return pids

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


class ServerSet:
    """Starts servers and guarantees they are all stopped (use as a context manager)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: dict[str, Server] = {}

    def __enter__(self) -> ServerSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        port: int,
        cpus: str | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 30.0,
    ) -> Server:
        full = (["taskset", "-c", cpus] if cpus else []) + list(cmd)
        log_path = self.workdir / f"{name}.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")}
        child_env.update({"HOME": str(self.workdir), "XDG_CONFIG_HOME": str(self.workdir),
                          "XDG_DATA_HOME": str(self.workdir)})
        if env:
            child_env.update(env)
        log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        log.write(("$ " + " ".join(full) + "\n").encode())
        log.flush()
        server = Server(name=name, cmd=full, port=port, cpus=cpus, log_path=log_path)
        try:
            server.proc = subprocess.Popen(
                full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env,
                cwd=str(cwd or self.workdir), start_new_session=True,
            )
        finally:
            log.close()
        self.servers[name] = server
        self._wait_ready(server, ready_timeout)
        server.tree()
        return server

    def _wait_ready(self, server: Server, timeout: float) -> None:
        assert server.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise ServerError(f"{server.name} exited with status {server.proc.returncode}:\n"
                                  + server.log_tail())
            try:
                socket.create_connection(("127.0.0.1", server.port), 0.2).close()
            except OSError:
                time.sleep(0.1)
                continue
            time.sleep(0.3)  # let multi-process servers finish spawning their workers
            server.tree()
            return
        raise ServerError(f"{server.name} did not listen on 127.0.0.1:{server.port} within {timeout:.0f} s:\n"
                          + server.log_tail())

    def stop(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server is None or server.proc is None:
            return
        proc = server.proc
        if proc.poll() is None:
            server.tree()  # record the latest descendants before the root goes away
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        # descendants that outlived their parent: same PID *and* same start time, so never a stranger
        deadline = time.monotonic() + 5
        for pid, started in server._known.items():
            if pid == proc.pid:
                continue
            while started is not None and start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.05)
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in reversed(list(self.servers)):
            try:
                self.stop(name)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {name}: {exc}", flush=True)


# ---------------------------------------------------------------------------------------- checks
@dataclass
class CheckResult:
    url: str
    status: int | None
    length: int | None
    content_type: str | None
    error: str | None = None

    def ok(self, want_status: int, want_length: int | None) -> bool:
        return (self.error is None and self.status == want_status
                and (want_length is None or self.length == want_length))

    def describe(self) -> str:
        if self.error:
            return f"{self.url}: {self.error}"
        return f"{self.url}: status {self.status}, {self.length} bytes, {self.content_type}"


def http_get(port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> CheckResult:
    url = f"http://127.0.0.1:{port}{path}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        body = resp.read()
        return CheckResult(url, resp.status, len(body), resp.getheader("content-type"))
    except (OSError, http.client.HTTPException) as exc:
        return CheckResult(url, None, None, None, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def nginx_stub_requests(port: int) -> int | None:
    """The upstream nginx's request counter (stub_status), to see how many requests reached it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/__stub_status")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    # Active connections: N \n server accepts handled requests \n A H R \n ...
    match = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
    return int(match.group(3)) if match else None


# ---------------------------------------------------------------------------------------- wrk
# wrk's done() hook prints exact figures as JSON, so nothing depends on its human-readable rounding
WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"lat_mean_us":%.2f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass
class WrkRun:
    url: str
    duration_s: float
    requests: int = 0
    rps: float = 0.0
    bytes: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    lat_max_ms: float | None = None
    non2xx: int = 0  # wrk counts status >= 400 here ("Non-2xx or 3xx responses")
    socket_errors: dict[str, int] = field(default_factory=dict)
    cpu_us_per_req: float | None = None
    cpu_cores: float | None = None
    main_thread_cores: float | None = None
    rss_peak_mib: float | None = None
    rss_process_peak_mib: float | None = None  # the largest single process (a fastgw worker, its main process)
    upstream_cpu_cores: float | None = None
    upstream_requests: int | None = None
    wrk_cpu_cores: float | None = None
    cores: dict[str, dict[str, float]] = field(default_factory=dict)  # per core: task / irq / steal shares
    foreign_cores: float | None = None  # others' processes on the contender's core (cores)
    foreign_load_cores: float | None = None  # others' processes on the load core (beside wrk and upstream)
    quiet_wait_s: float | None = None
    busy_before: float | None = None
    wrk_exit: int | None = None
    raw: str = ""

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = self.errors
        return out


def write_wrk_script(workdir: Path) -> Path:
    path = workdir / "wrk_report.lua"
    path.write_text(WRK_LUA)
    return path


def wrk_command(
    wrk: str, url: str, duration_s: float, connections: int, threads: int, cpus: str | None,
    headers: Mapping[str, str], script: Path | None, timeout_s: int = 5,
) -> list[str]:
    cmd = ["taskset", "-c", cpus] if cpus else []
    cmd += [wrk, f"-t{threads}", f"-c{connections}", f"-d{_wrk_duration(duration_s)}", f"--timeout={timeout_s}s",
            "--latency"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    return cmd


def _wrk_duration(seconds: float) -> str:
    # wrk takes whole seconds ("1s"); a fraction is rounded up, never down to zero
    whole = max(1, int(-(-seconds // 1)))
    return f"{whole}s"


def run_wrk(
    wrk: str,
    url: str,
    duration_s: float,
    connections: int,
    cpus: str | None,
    headers: Mapping[str, str],
    script: Path,
    subject: Server | None,
    upstream: Server | None,
    upstream_status_port: int | None,
    subject_core: str | None = None,
    load_core: str | None = None,
    threads: int = 1,
) -> WrkRun:
    """One bounded wrk run, with /proc accounting of the subject's process tree."""
    subject_pids = subject.tree() if subject else []
    upstream_pids = upstream.tree() if upstream else []
    cmd = wrk_command(wrk, url, duration_s, connections, threads, cpus, headers, script)
    sizes = rss_each_kib(subject_pids)
    peak = [sum(sizes), max(sizes, default=0)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            sizes = rss_each_kib(subject_pids)
            peak[0] = max(peak[0], sum(sizes))
            peak[1] = max(peak[1], max(sizes, default=0))

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    up_req0 = nginx_stub_requests(upstream_status_port) if upstream_status_port else None
    sampler.start()
    main0 = main_thread_ticks(subject_pids)
    subject0, upstream0, cores0, t0 = cpu_ticks(subject_pids), cpu_ticks(upstream_pids), core_times(), time.monotonic()
    try:
        raw, exit_code, wrk_cpu_s = _run_bounded(cmd, _bound(duration_s))
    finally:
        stop.set()
    elapsed = time.monotonic() - t0
    subject1, upstream1, cores1 = cpu_ticks(subject_pids), cpu_ticks(upstream_pids), core_times()
    main1 = main_thread_ticks(subject_pids)
    sampler.join()
    up_req1 = nginx_stub_requests(upstream_status_port) if upstream_status_port else None

    run = WrkRun(url=url, duration_s=duration_s, raw=raw, wrk_exit=exit_code)
    _parse_wrk(run, raw)
    if subject_pids:
        ticks = subject1 - subject0
        run.cpu_cores = round(ticks / CLK_TCK / elapsed, 3)
        run.main_thread_cores = round((main1 - main0) / CLK_TCK / elapsed, 3)
        run.cpu_us_per_req = round(ticks / CLK_TCK / run.requests * 1e6, 2) if run.requests else None
        run.rss_peak_mib = round(peak[0] / 1024, 1)
        run.rss_process_peak_mib = round(peak[1] / 1024, 1)
    if upstream_pids:
        run.upstream_cpu_cores = round((upstream1 - upstream0) / CLK_TCK / elapsed, 3)
    if up_req0 is not None and up_req1 is not None:
        run.upstream_requests = max(0, up_req1 - up_req0 - 1)  # minus our own second status request
    run.wrk_cpu_cores = round(wrk_cpu_s / elapsed, 3)
    run.cores = core_shares(cores0, cores1)
    # subject_core / load_core: one /proc/stat row ("cpu1") or several ("cpu2,cpu3": --cores)
    subject_busy = _task_share(run.cores, subject_core)
    if subject_busy is not None and run.cpu_cores is not None:
        run.foreign_cores = round(max(0.0, subject_busy - run.cpu_cores), 3)
    load_busy = _task_share(run.cores, load_core)
    if load_busy is not None:
        ours = run.wrk_cpu_cores + (run.upstream_cpu_cores or 0.0)
        run.foreign_load_cores = round(max(0.0, load_busy - ours), 3)
    return run


def _task_share(cores: Mapping[str, Mapping[str, float]], names: str | None) -> float | None:
    """The summed task share of the named cores, or None when any is unknown."""
    if not names:
        return None
    rows = [cores.get(name) for name in names.split(",")]
    return sum(row["task"] for row in rows if row is not None) if all(rows) else None


def _bound(duration_s: float) -> float:
    """A hard limit on a wrk run: its duration, its connect/latency timeout and a margin."""
    return max(1.0, duration_s) + 30.0


def _run_bounded(cmd: list[str], limit_s: float) -> tuple[str, int, float]:
    """Run `cmd` to completion (killed after `limit_s`); returns its output, exit code and CPU seconds."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        killer = threading.Timer(limit_s, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM: wrk is ours to stop too
            killer.cancel()
            proc.kill()
            proc.wait()
            raise
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return text, proc.returncode, usage.ru_utime + usage.ru_stime


_LAT_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _parse_latency(text: str) -> float | None:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(match.group(1)) * _LAT_UNITS[match.group(2)] if match else None


def _parse_wrk(run: WrkRun, raw: str) -> None:
    match = re.search(r"^WRKJSON (\{.*\})\s*$", raw, re.M)
    if match:
        data = json.loads(match.group(1))
        run.requests = int(data["requests"])
        run.bytes = int(data["bytes"])
        seconds = data["duration_us"] / 1e6
        run.rps = round(run.requests / seconds, 1) if seconds > 0 else 0.0
        run.p50_ms = round(data["p50_us"] / 1000, 3)
        run.p90_ms = round(data["p90_us"] / 1000, 3)
        run.p99_ms = round(data["p99_us"] / 1000, 3)
        run.lat_max_ms = round(data["lat_max_us"] / 1000, 3)
        run.non2xx = int(data["status"])
        run.socket_errors = {k: int(data[k]) for k in ("connect", "read", "write", "timeout")}
        return
    # fallback: wrk's text report (a wrk without Lua support)
    if m := re.search(r"(\d+) requests in", raw):
        run.requests = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", raw):
        run.rps = float(m.group(1))
    for q, attr in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{q}%\s+(\S+)", raw, re.M):
            setattr(run, attr, _parse_latency(m.group(1)))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", raw):
        run.non2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", raw):
        run.socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))


def warm_up(wrk: str, url: str, duration_s: float, connections: int, cpus: str | None,
            headers: Mapping[str, str], threads: int = 1) -> None:
    cmd = wrk_command(wrk, url, duration_s, connections, threads, cpus, headers, None)
    _run_bounded(cmd, _bound(duration_s))


class DashboardViewer:
    """What a browser with the dashboard open does: GET /dashboard/data on the admin port every 2 s,
    from a thread of the harness (on the load core), until stopped. Counts the snapshots it got."""

    def __init__(self, admin_port: int, every: float = 2.0) -> None:
        self.admin_port = admin_port
        self.every = every
        self.polls = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-viewer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
                conn.request("GET", "/dashboard/data")
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            self.polls += 1
            self.failures += 0 if ok else 1
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
