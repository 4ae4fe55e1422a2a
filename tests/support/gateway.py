"""Start `fastgw serve` as users do: a real process on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayProcess:
    def __init__(self, config: str, directory: Path, workers: int = 1, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, name: str = "gateway", host: str = "127.0.0.1"):
        self.name = name
        self.host = host  # the listen address (the admin API stays on 127.0.0.1)
        self.config_path = directory / f"{name}.yaml"
        self.config_path.write_text(config)
        self.log_path = directory / f"{name}.stdout"
        self.err_path = directory / f"{name}.stderr"
        self.port = free_port()
        self.admin_port = free_port()
        self.ws_port = free_port()  # WebSocket APIs' own listener (fastgw/websocket/listener.py)
        self.workers = workers
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket APIs' endpoint (their own port, as in AWS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.ws_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "fastgw", "serve", str(self.config_path),
            "--host", self.host, "--port", str(self.port), "--admin-port", str(self.admin_port),
            "--ws-port", str(self.ws_port),
            "--workers", str(self.workers), *self.args,
        ]

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self.proc = subprocess.Popen(
            self.command(), stdout=self.log_path.open("wb"), stderr=self.err_path.open("wb"), env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastgw exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                ready = httpx.get(f"{self.admin}/readyz", timeout=1).status_code == 200
                if ready and self._workers_answer():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fastgw did not become ready:\n{self.stderr()}")

    def _workers_answer(self) -> bool:
        # A plain TCP connect: the listener may speak TLS.
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        """The worker processes granian forked (children of the main process)."""
        assert self.proc is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # granian workers are in the same session: make sure none outlives the test.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.returncode

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def stdout(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
