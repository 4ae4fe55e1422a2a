"""A real Redis Cluster for tests: 6 `redis-server --cluster-enabled yes` processes on free loopback
ports (3 masters, 3 replicas, made by `redis-cli --cluster create`), each stopped by its PID.

`cluster-node-timeout` is short (1 s) so that a killed master's replica is promoted within a few
seconds; persistence is off except where a test turns it on (a node started again is empty)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .gateway import free_port

NODE_TIMEOUT_MS = 1000


def _ask(port: int, *command: str, timeout: float = 2.0) -> str:
    """One command through redis-cli (its output, or "" when the node does not answer)."""
    try:
        done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 else ""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisNode:
    def __init__(self, directory: Path, port: int):
        self.directory = directory
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0",
             "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", "redis.log", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, as a crash."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.proc = None


class RedisCluster:
    def __init__(self, directory: Path, size: int = 6):
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server/redis-cli are not installed (scripts/bootstrap.sh test installs them)")
        ports: list[int] = []
        while len(ports) < size:
            port = free_port()
            # The cluster bus listens on port + 10000: both must be free.
            if port < 55535 and port not in ports and self._free(port + 10000):
                ports.append(port)
        self.nodes = [RedisNode(directory / f"node-{port}", port) for port in ports]

    @staticmethod
    def _free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes[1:3]]

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                while not _answers(node.port):
                    if not node.alive():
                        raise RuntimeError(f"redis-server on port {node.port} exited")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {node.port} did not answer")
                    time.sleep(0.02)
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True,
                timeout=max(1.0, deadline - time.monotonic()))
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}{created.stderr}")
            self.wait_ok(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and every slot has a live master."""
        deadline = time.monotonic() + timeout
        while True:
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok in time")
            time.sleep(0.05)

    def healthy(self) -> bool:
        live = [n for n in self.nodes if n.alive()]
        if not live or not all("cluster_state:ok" in _ask(n.port, "cluster", "info") for n in live):
            return False
        return len(self.masters()) == 3

    def masters(self) -> list[RedisNode]:
        """The live masters that serve slots, as the first live node sees it."""
        live = [n for n in self.nodes if n.alive()]
        by_port = {n.port: n for n in live}
        text = _ask(live[0].port, "cluster", "nodes") if live else ""
        masters = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            if port in by_port:
                masters.append(by_port[port])
        return masters

    def master_of(self, key: str) -> RedisNode:
        slot = int(_ask(self.nodes[0].port, "cluster", "keyslot", key).strip())
        for line in _ask(self.nodes[0].port, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no master serves slot {slot}")

    def flushall(self) -> None:
        for node in self.masters():
            _ask(node.port, "flushall")

    def revive(self, timeout: float = 30.0) -> None:
        """Start again every node that was stopped or killed (it rejoins from its nodes.conf, as a
        replica of whoever took its slots), and wait for the whole cluster."""
        for node in self.nodes:
            if not node.alive():
                node.start()
        self.wait_ok(timeout)
        deadline = time.monotonic() + timeout
        while not all(_answers(n.port) for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("a revived Redis node did not answer")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
