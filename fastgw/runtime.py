"""The main process's runtime: the config file, the current plan, readiness, and live reloads.

Live reloads (SIGHUP, POST /reload, --watch, canary changes): the main process compiles the config,
then publishes its native form as a numbered snapshot (`LiveChannel`); every worker checks the
number ten times a second, compiles the snapshot itself and swaps its plan between two requests.
No worker restarts, so no connection is dropped; a request sees the old or the new plan, never a
mix. Each worker acknowledges the generation it runs, and the admin API waits for all of them.

Settings that change listeners, workers or the server interface take effect on restart only
(`restart_only_changed`); a reload keeps the running ones.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import mmap
import os
import pickle
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compile import load_plan
from .config.loader import ConfigError, Document, Problem, load_document
from .config.model import default_workers, websocket_address
from .openapi import source
from .openapi.source import Expanded
from .plan import Plan
from .state import canary as canary_store
from .state import channel
from .state.redisconn import link_from_data

log = logging.getLogger("fastgw.deployments")


# -- where the state lives ---------------------------------------------------------------------------


# -- the overlay ---------------------------------------------------------------------------------------


# -- live plans: the main process publishes, every worker swaps ----------------------------------------
HEADER = struct.Struct("<q")  # the generation number, at the start of a shared page


@dataclass
class Snapshot:
    generation: int
    data: Any  # the native config data, canary changes included
    source: str
    files: list[str]
    warnings: list[str]


class LiveChannel:
    """Created by the main process before the workers fork: a private directory for snapshots and
    a shared page holding the current generation."""

    POLL_SECONDS = 0.1

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="fastgw-live-")
        self.page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared: inherited by the forked workers
        self.generation = 0
        self.lock = threading.Lock()

    # main process
    def publish(self, plan: Any) -> int:
        """Make `plan` (compiled by the main process) the one every worker runs; returns its generation."""
        with self.lock:
            generation = self.generation + 1
            snapshot = Snapshot(generation, plan.data, plan.source, list(plan.files), list(plan.notes))
            path = os.path.join(self.directory, f"gen-{generation}.pickle")
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                pickle.dump(snapshot, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
            self.generation = generation
            HEADER.pack_into(self.page, 0, generation)
            old = os.path.join(self.directory, f"gen-{generation - 2}.pickle")
            if os.path.exists(old):
                os.unlink(old)
            return generation

    def current(self) -> int:
        return HEADER.unpack_from(self.page, 0)[0]

    # WebSocket connections at shutdown: the main process asks, each worker closes its own (1001, then
    # $disconnect) and says when it has none left, before granian stops the workers.
    def drain(self) -> None:
        HEADER.pack_into(self.page, HEADER.size, 1)

    def draining(self) -> bool:
        return HEADER.unpack_from(self.page, HEADER.size)[0] == 1

    def drained(self) -> None:
        Path(self.directory, f"drained-{os.getpid()}").touch()

    def wait_drained(self, timeout: float) -> int:
        """Wait until every live worker has closed its WebSocket connections; returns how many have."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.acks()
            done = sum(1 for pid in pids if os.path.exists(os.path.join(self.directory, f"drained-{pid}")))
            if done >= len(pids) or time.monotonic() > deadline:
                return done
            time.sleep(0.02)

    def acks(self) -> dict[int, int]:
        """pid -> generation, for the workers that are alive."""
        out = {}
        for name in os.listdir(self.directory):
            # A worker writes "ack-PID.tmp" and renames it: skip the temporary files.
            if not name.startswith("ack-") or not name[4:].isdigit():
                continue
            pid = int(name[4:])
            try:
                os.kill(pid, 0)
            except OSError:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass
                continue
            try:
                out[pid] = int(Path(self.directory, name).read_text() or 0)
            except (OSError, ValueError):
                continue
        return out

    def wait(self, generation: int, workers: int, timeout: float = 10.0) -> int:
        """Wait until `workers` live workers run `generation` (or later); returns how many do."""
        deadline = time.monotonic() + timeout
        while True:
            done = sum(1 for g in self.acks().values() if g >= generation)
            if done >= workers or time.monotonic() > deadline:
                return done
            time.sleep(0.02)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # worker process
    def ack(self, generation: int) -> None:
        path = os.path.join(self.directory, f"ack-{os.getpid()}")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(generation))
        os.replace(tmp, path)

    def load(self, generation: int) -> Snapshot | None:
        try:
            with open(os.path.join(self.directory, f"gen-{generation}.pickle"), "rb") as f:
                return pickle.load(f)
        except OSError:
            return None


class WorkerFollower:
    """In a worker: follow the channel; compile and swap in each new generation."""

    def __init__(self, channel: LiveChannel, gateway: Any, generation: int):
        self.channel = channel
        self.gateway = gateway
        self.generation = generation
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.drained = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.channel.ack(self.generation)
        self._timer = loop.call_later(LiveChannel.POLL_SECONDS, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        assert self._loop is not None
        if not self.drained and self.channel.draining():
            self.drained = True
            drain = getattr(self.gateway, "drain", None)
            if drain is not None:
                drain(self.channel.drained)
        try:
            generation = self.channel.current()
            if generation > self.generation:
                self.follow(generation)
        except Exception:  # noqa: BLE001 - keep serving the current plan; the next tick retries
            log.exception("could not apply config generation %s", self.channel.current())
        self._timer = self._loop.call_later(LiveChannel.POLL_SECONDS, self._tick)

    def follow(self, generation: int) -> None:
        snapshot = self.channel.load(generation)
        if snapshot is None:
            return
        document = Document(copy.deepcopy(snapshot.data), snapshot.source, {})
        expanded = Expanded(document.data, snapshot.source, document, snapshot.files, [], overlaid=True)
        plan = load_plan(expanded)
        if RUNTIME is not None:
            apply_overrides(plan, RUNTIME.overrides)
        keep_restart_only(plan, self.gateway.plan)
        self.gateway.swap(plan)
        self.generation = generation
        self.channel.ack(generation)


RESTART_ONLY = ("host", "port", "workers", "interface", "adminPort", "cpuScheduling", "webSocket")


def keep_restart_only(plan: Plan, running: Plan) -> bool:
    """A newly compiled plan keeps the running plan's listener, worker and interface settings (they
    change on restart only). True when the new plan had asked for different ones."""
    old, new = running.server, plan.server
    changed = any(getattr(new, name) != getattr(old, name) for name in RESTART_ONLY) or \
        plan.interface != running.interface
    if any(stage.websocket is not None for stage in plan.stages) and \
            not any(stage.websocket is not None for stage in running.stages):
        log.warning("a WebSocket API was added: its listener starts after a restart only")
    if changed:
        plan.server = old
        plan.interface = running.interface
    return changed


# -- the main process's side -------------------------------------------------------------------------
LIVE: LiveChannel | None = None
WATCH = False  # fastgw serve --watch


def start_live() -> LiveChannel:
    """Called by `fastgw serve` before granian forks the workers."""
    global LIVE
    LIVE = LiveChannel()
    return LIVE


def stop_live() -> None:
    global LIVE
    if LIVE is not None:
        LIVE.close()
        LIVE = None


def attach(gateway: Any) -> None:
    """In a freshly forked worker: follow the live channel from the generation its plan is."""
    if LIVE is not None:
        gateway.follower = WorkerFollower(LIVE, gateway, LIVE.current())


def published(plan: Any) -> int:
    """The main process installed `plan` (RUNTIME.plan): every worker follows."""
    return LIVE.publish(plan) if LIVE is not None else 0


def worker_count(plan: Any) -> int:
    return plan.server.workers or default_workers()


def wait_for_workers(generation: int, plan: Any, timeout: float = 10.0) -> int:
    if LIVE is None:
        return 0
    return LIVE.wait(generation, worker_count(plan), timeout)


def install(plan: Any) -> tuple[int, int]:
    """Make a plan compiled in the main process current: RUNTIME, then every worker. (generation, workers
    running it within 10 s)"""
    runtime = RUNTIME
    assert runtime is not None
    apply_overrides(plan, runtime.overrides)
    keep_restart_only(plan, runtime.plan)
    runtime.plan = plan
    generation = published(plan)
    return generation, wait_for_workers(generation, plan)


def _watched_files(plan: Any) -> list[str]:
    files = list(plan.files)
    for stage in plan.stages:
        for route in stage.routes:
            handler = getattr(route.integration, "handler", None)
            module = sys.modules.get(getattr(handler, "__module__", "") or "")
            path = getattr(module, "__file__", None)
            if path and path not in files:
                files.append(path)
    return files


def _mtimes(files: list[str]) -> dict[str, float]:
    out = {}
    for path in files:
        try:
            out[path] = os.stat(path).st_mtime_ns
        except OSError:
            out[path] = -1
    return out


FOLLOW_STOP = threading.Event()


def start_follow() -> threading.Thread | None:
    """With the Redis state backend: reload when another node announces a canary change (they are
    stored in Redis, and the reload lays them over the config file: fastgw/state/canary.py)."""
    runtime = RUNTIME
    assert runtime is not None
    data = runtime.plan.data
    link = link_from_data(data.get("state")) if isinstance(data, dict) else None
    if link is None:
        return None

    def changed(message: dict[str, Any]) -> None:
        if message.get("origin") == canary_store.ORIGIN:
            return  # this process made it, and installed it already
        what = "reconnected to Redis" if message.get("resync") else \
            f"canary change on {message.get('api')}/{message.get('stage')} announced by {message.get('origin')}"
        try:
            reload_config(what)
        except Exception:  # noqa: BLE001 - the listener keeps listening
            log.exception("reload failed")

    FOLLOW_STOP.clear()
    thread = threading.Thread(target=channel.follow, args=(link, {"canary": changed}, FOLLOW_STOP),
                              name="fastgw-follow", daemon=True)
    thread.start()
    return thread


def stop_follow() -> None:
    FOLLOW_STOP.set()


def start_watch(interval: float = 0.3) -> threading.Thread:
    """--watch: reload when the config, an included OpenAPI document or a handler module changes."""
    def run() -> None:
        runtime = RUNTIME
        assert runtime is not None
        seen = _mtimes(_watched_files(runtime.plan))
        while True:
            time.sleep(interval)
            files = _watched_files(runtime.plan)
            now = _mtimes(files)
            if now == seen:
                continue
            time.sleep(interval)  # let the editor finish writing
            now = _mtimes(files)
            seen = now
            log.warning("changed: %s; reloading", ", ".join(p for p in files if now.get(p) != -2))
            try:
                reload_config("--watch")
            except Exception:  # noqa: BLE001 - the watcher keeps watching
                log.exception("reload failed")
            seen = _mtimes(_watched_files(runtime.plan))

    thread = threading.Thread(target=run, name="fastgw-watch", daemon=True)
    thread.start()
    return thread


# -- `fastgw canary ...` ------------------------------------------------------------------------------


@dataclass(slots=True)
class Runtime:
    """What the main process knows: the config file, the current plan, readiness."""

    config_path: str
    plan: Plan
    overrides: dict[str, Any]
    ready: bool = False
    draining: bool = False
    reloads_ok: int = 0
    reloads_failed: int = 0
    confirmed: Any = None  # (generation, worker pids) a connection to the data port was accepted for


RUNTIME: Runtime | None = None


def compile_file(path: str, overrides: dict[str, Any], options: Any = None) -> Plan:
    """Load (native or OpenAPI, with the command line's load options) and compile a config file."""
    plan = load_plan(load_document(path), options if options is not None else source.DEFAULT_OPTIONS)
    apply_overrides(plan, overrides)
    return plan


def apply_overrides(plan: Plan, overrides: dict[str, Any]) -> None:
    """The command line's server settings over a compiled plan's. `--interface asgi|rsgi` also sets the
    interface the plan runs on (compiling chose it from the file's setting)."""
    for name, value in overrides.items():
        if value is not None:
            section, _, field = name.rpartition(".")  # "webSocket.port": a field of a section
            setattr(getattr(plan.server, section) if section else plan.server, field, value)
    interface = overrides.get("interface")
    if interface in ("asgi", "rsgi") and interface != plan.interface:
        raw_path = sorted({stage.api.name for stage in plan.stages if stage.api.encoded_slashes != "DECODE"})
        if interface == "rsgi" and raw_path:
            # As compiling refuses `interface: rsgi` in the file: RSGI hands over decoded paths only.
            raise ConfigError("--interface rsgi", [Problem("server.interface", (
                f"rsgi cannot see encoded slashes (%2F) in paths; set encodedSlashes: DECODE on API(s) "
                f"{', '.join(raw_path)} or use asgi/auto"))])
        plan.interface = interface


def reload_rejected(exc: ConfigError, trigger: str) -> None:
    """Count and log a reload whose config did not compile (the old one keeps serving)."""
    assert RUNTIME is not None
    RUNTIME.reloads_failed += 1
    problems = "; ".join(str(p) for p in exc.problems) or str(exc)
    generation = LIVE.generation if LIVE is not None else 0
    log.error("config reload rejected (%s), still serving generation %d: %s: %s", trigger, generation,
              exc.source, problems)


def reload_config(trigger: str = "reload") -> bool:
    """Compile the config file again; install it only when it is valid."""
    assert RUNTIME is not None
    try:
        plan = compile_file(RUNTIME.config_path, RUNTIME.overrides)
    except ConfigError as exc:
        reload_rejected(exc, trigger)
        return False
    if keep_restart_only(plan, RUNTIME.plan):
        log.warning("listener, worker or interface settings changed: they take effect on restart only")
    RUNTIME.plan = plan
    RUNTIME.reloads_ok += 1
    generation = published(plan)
    log.info("config reload accepted (%s): %s is generation %d", trigger, RUNTIME.config_path, generation)
    return True


# -- readiness ---------------------------------------------------------------------------------------
def connect_address(host: str, port: int) -> tuple[str, int]:
    """Where the main process connects to reach a listener on host:port (a wildcard: loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1", port
    if host == "::":
        return "::1", port
    return host, port


def accepts_connections(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(connect_address(host, port), timeout=timeout):
            return True
    except OSError:
        return False


def readiness() -> tuple[bool, str]:
    """(ready, status). Ready: not draining, every expected worker acknowledged the current generation
    (it started its app with that plan), and a connection to the data port was accepted (confirmed
    once per generation and set of workers)."""
    current = RUNTIME
    assert current is not None
    if current.draining:
        return False, "draining"
    if not current.ready:
        return False, "starting"
    if LIVE is None:
        return True, "ready"
    generation = LIVE.generation
    running = tuple(sorted(pid for pid, g in LIVE.acks().items() if g >= generation))
    if len(running) < worker_count(current.plan):
        return False, "starting" if generation == 0 else "reloading"
    key = (generation, running)
    if current.confirmed != key:
        server = current.plan.server
        if not accepts_connections(server.host, server.port):
            return False, "starting"
        if any(stage.websocket is not None for stage in current.plan.stages) and \
                not accepts_connections(*websocket_address(server)):  # the WebSocket APIs' listener
            return False, "starting"
        current.confirmed = key
        log.debug("ready: generation %d runs in worker(s) %s, and %s:%d accepts connections", generation,
                  ", ".join(map(str, running)), server.host, server.port)
    return True, "ready"
