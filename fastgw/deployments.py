"""Deployments, canaries and live config changes.

Canary changes made at run time (`fastgw canary set|promote|rollback`, the admin API's /canary) are
kept in the state directory's SQLite file (`STATE/state.sqlite3`, table `canary_changes`, one row
per API stage) and laid over the config file's stages every time the config is loaded, so a
restart keeps them. AWS's semantics (reference/aws.md c.12):

    set       the stage's canary: deployment, percentTraffic, stageVariableOverrides, useStageCache
              (given fields replace the current ones)
    promote   the stage's deployment becomes the canary's; the canary's stage variable overrides
              are copied into the stage's variables (unless --keep-variables); percentTraffic 0.
              The canary settings stay, as in AWS (disable them with rollback)
    rollback  the canary is removed: every request goes to the stage's own deployment

A change is validated by compiling the whole config with it, and refused with the problems when
it does not compile.

Live reloads (SIGHUP, POST /reload, --watch, canary changes): the main process compiles the config,
then publishes its native form as a numbered snapshot (`LiveChannel`); every worker checks the
number ten times a second, compiles the snapshot itself and swaps its plan between two requests.
No worker restarts, so no connection is dropped; a request sees the old or the new plan, never a
mix. Each worker acknowledges the generation it runs, and the admin API waits for all of them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import mmap
import os
import pickle
import sqlite3
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("fastgw.deployments")

STORE_FILE = "state.sqlite3"  # shared with fastgw/state/store.py (WAL mode: many connections)
SCHEMA = """CREATE TABLE IF NOT EXISTS canary_changes (
    api TEXT NOT NULL, stage TEXT NOT NULL, change TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (api, stage))"""
CANARY_FIELDS = ("deployment", "percentTraffic", "stageVariableOverrides", "useStageCache")


# -- where the state lives ---------------------------------------------------------------------------
def state_dir_of(data: Any, source: str) -> str:
    """The state directory of a (native) config: state.path relative to the config file."""
    path = ".fastgw"
    if isinstance(data, dict) and isinstance(data.get("state"), dict):
        path = str(data["state"].get("path") or path)
    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source)), path))
    return path


class CanaryStore:
    def __init__(self, state_dir: str, create: bool = True):
        self.path = os.path.join(state_dir, STORE_FILE)
        if create:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass
        self.db.execute(SCHEMA)

    @classmethod
    def open_existing(cls, state_dir: str) -> CanaryStore | None:
        if not os.path.exists(os.path.join(state_dir, STORE_FILE)):
            return None
        return cls(state_dir, create=False)

    def changes(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows = self.db.execute("SELECT api, stage, change FROM canary_changes").fetchall()
        return {(api, stage): orjson.loads(change) for api, stage, change in rows}

    def put(self, api: str, stage: str, change: dict[str, Any] | None) -> None:
        if change is None:
            self.db.execute("DELETE FROM canary_changes WHERE api = ? AND stage = ?", (api, stage))
        else:
            self.db.execute("INSERT OR REPLACE INTO canary_changes (api, stage, change, updated) VALUES (?, ?, ?, ?)",
                            (api, stage, orjson.dumps(change).decode(), time.time()))

    def close(self) -> None:
        self.db.close()


# -- the overlay ---------------------------------------------------------------------------------------
def apply_changes(data: Any, changes: dict[tuple[str, str], dict[str, Any]]) -> Any:
    """The native config data with the run-time stage changes laid over it (a copy when anything
    changes). A change for an API stage the config no longer has is ignored (and logged)."""
    if not changes or not isinstance(data, dict) or not isinstance(data.get("apis"), list):
        return data
    data = dict(data)
    data["apis"] = list(data["apis"])
    for (api_name, stage_name), change in changes.items():
        for i, api in enumerate(data["apis"]):
            if not isinstance(api, dict) or api.get("name") != api_name:
                continue
            stages = api.get("stages")
            if not isinstance(stages, dict) or stage_name not in stages:
                break
            api = data["apis"][i] = dict(api)
            api["stages"] = stages = dict(stages)
            spec = dict(stages[stage_name] or {})
            if "deployment" in change:
                spec["deployment"] = change["deployment"]
            if "variables" in change:
                spec["variables"] = change["variables"]
            if "canary" in change:
                if change["canary"] is None:
                    spec.pop("canary", None)
                else:
                    spec["canary"] = change["canary"]
            stages[stage_name] = spec
            break
        else:
            log.warning("a canary change for %s/%s is kept but the config has no such API", api_name, stage_name)
    return data


def overlay(data: Any, source: str) -> Any:
    """`apply_changes` with the changes stored in the config's state directory (if it has any)."""
    if not isinstance(data, dict) or not isinstance(data.get("apis"), list):
        return data
    store = CanaryStore.open_existing(state_dir_of(data, source))
    if store is None:
        return data
    try:
        return apply_changes(data, store.changes())
    finally:
        store.close()


class CanaryError(Exception):
    def __init__(self, message: str, status: int = 400, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []


def _stage_spec(data: Any, api: str, stage: str) -> dict[str, Any]:
    for entry in data.get("apis") or []:
        if isinstance(entry, dict) and entry.get("name") == api:
            stages = entry.get("stages") or {}
            if stage not in stages:
                raise CanaryError(f"API '{api}' has no stage '{stage}' (stages: {', '.join(stages)})", 404)
            return dict(stages[stage] or {})
    raise CanaryError(f"no API named '{api}'", 404)


def next_change(current: dict[str, Any], spec: dict[str, Any], op: str, fields: dict[str, Any],
                copy_variables: bool = True) -> dict[str, Any] | None:
    """The stored change after `op` on a stage whose effective settings are `spec`; None: no change left."""
    change = dict(current)
    canary = spec.get("canary")
    if op == "set":
        merged = dict(canary or {})
        for key, value in fields.items():
            if key not in CANARY_FIELDS:
                raise CanaryError(f"unknown canary field '{key}' (one of {', '.join(CANARY_FIELDS)})")
            if value is not None:
                merged[key] = value
        merged.setdefault("percentTraffic", 0.0)
        change["canary"] = merged
    elif op == "promote":
        if not canary:
            raise CanaryError("the stage has no canary to promote", 409)
        change["deployment"] = canary.get("deployment") or "current"
        if copy_variables and canary.get("stageVariableOverrides"):
            change["variables"] = {**(spec.get("variables") or {}), **canary["stageVariableOverrides"]}
        change["canary"] = {**canary, "percentTraffic": 0.0}
    elif op == "rollback":
        change["canary"] = None
    else:
        raise CanaryError(f"unknown operation '{op}' (set, promote, rollback)")
    return change


def describe(plan: Any) -> list[dict[str, Any]]:
    """Every stage's deployment and canary, as `GET /canary` and `fastgw canary show` print them."""
    out = []
    for stage in plan.stages:
        if stage.is_canary:
            continue
        entry: dict[str, Any] = {"api": stage.api.name, "stage": stage.name, "deployment": stage.deployment,
                                 "variables": stage.variables}
        if stage.canary is not None:
            entry["canary"] = {"deployment": stage.canary.deployment, "percentTraffic": stage.canary_percent,
                               "variables": stage.canary.variables}
        out.append(entry)
    return out


def change_canary(config_path: str, options: Any, api: str, stage: str, op: str, fields: dict[str, Any],
                  copy_variables: bool = True) -> Any:
    """Validate and store one canary change; returns the plan compiled with it (ConfigError -> CanaryError)."""
    from .config.compile import load_plan
    from .config.loader import ConfigError, load_document
    from .openapi.source import expand

    expanded = expand(load_document(config_path), options)
    data = expanded.data
    if not isinstance(data, dict) or "apis" not in data:
        raise CanaryError("canaries need a native config (an OpenAPI document has one deployment)")
    store = CanaryStore(state_dir_of(data, expanded.source))
    try:
        changes = store.changes()
        effective = apply_changes(data, changes)
        spec = _stage_spec(effective, api, stage)
        change = next_change(changes.get((api, stage), {}), spec, op, fields, copy_variables)
        trial = dict(changes)
        trial[(api, stage)] = change
        expanded.data = apply_changes(data, trial)
        expanded.overlaid = True
        try:
            plan = load_plan(expanded)
        except ConfigError as exc:
            raise CanaryError("the change does not compile", 400, [str(p) for p in exc.problems]) from None
        store.put(api, stage, change)
        return plan
    finally:
        store.close()


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
        import shutil

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
        try:
            generation = self.channel.current()
            if generation > self.generation:
                self.follow(generation)
        except Exception:  # noqa: BLE001 - keep serving the current plan; the next tick retries
            log.exception("could not apply config generation %s", self.channel.current())
        self._timer = self._loop.call_later(LiveChannel.POLL_SECONDS, self._tick)

    def follow(self, generation: int) -> None:
        from .config.compile import load_plan
        from .config.loader import Document
        from .openapi.source import Expanded

        snapshot = self.channel.load(generation)
        if snapshot is None:
            return
        document = Document(copy.deepcopy(snapshot.data), snapshot.source, {})
        expanded = Expanded(document.data, snapshot.source, document, snapshot.files, [], overlaid=True)
        plan = load_plan(expanded)
        from .server import RUNTIME, apply_overrides

        if RUNTIME is not None:
            apply_overrides(plan, RUNTIME.overrides)
        old, new = self.gateway.plan.server, plan.server
        if (new.host, new.port, new.workers, new.interface, new.adminPort) != (
                old.host, old.port, old.workers, old.interface, old.adminPort):
            plan.server = old  # listener, worker and interface settings change on restart only
        plan.interface = self.gateway.plan.interface
        self.gateway.swap(plan)
        self.generation = generation
        self.channel.ack(generation)


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
    from .config.model import default_workers

    return plan.server.workers or default_workers()


def wait_for_workers(generation: int, plan: Any, timeout: float = 10.0) -> int:
    if LIVE is None:
        return 0
    return LIVE.wait(generation, worker_count(plan), timeout)


def install(plan: Any) -> tuple[int, int]:
    """Make a plan compiled in the main process current: RUNTIME, then every worker. (generation, workers
    running it within 10 s)"""
    from . import server

    runtime = server.RUNTIME
    assert runtime is not None
    server.apply_overrides(plan, runtime.overrides)
    old, new = runtime.plan.server, plan.server
    if (new.host, new.port, new.workers, new.interface, new.adminPort) != (
            old.host, old.port, old.workers, old.interface, old.adminPort) or plan.interface != runtime.plan.interface:
        plan.server = old
        plan.interface = runtime.plan.interface
    runtime.plan = plan
    generation = published(plan)
    return generation, wait_for_workers(generation, plan)


def admin_canary(method: str, path: str, body: bytes) -> tuple[int, Any]:
    """GET /canary; POST /canary/{api}/{stage}/{set|promote|rollback} {percentTraffic, deployment,
    stageVariableOverrides, useStageCache, copyVariables}."""
    from . import server
    from .openapi import source

    runtime = server.RUNTIME
    assert runtime is not None
    parts = [p for p in path.split("/") if p]
    if method == "GET" and parts == ["canary"]:
        return 200, {"items": describe(runtime.plan)}
    if method != "POST" or len(parts) != 4:
        return 404, {"message": f"no {method} {path} (GET /canary, POST /canary/API/STAGE/set|promote|rollback)"}
    from urllib.parse import unquote

    _, api, stage, op = (unquote(p) for p in parts)
    try:
        spec = orjson.loads(body or b"{}")
        if not isinstance(spec, dict):
            raise ValueError("the body is a JSON object")
    except ValueError as exc:
        return 400, {"message": f"bad request: {exc}"}
    copy_variables = bool(spec.pop("copyVariables", True))
    try:
        plan = change_canary(runtime.config_path, source.DEFAULT_OPTIONS, api, stage, op, spec, copy_variables)
    except CanaryError as exc:
        return exc.status, {"message": str(exc), "problems": exc.problems}
    generation, workers = install(plan)
    entry = next((e for e in describe(plan) if (e["api"], e["stage"]) == (api, stage)), None)
    log.warning("canary %s on %s/%s: now %s", op, api, stage, orjson.dumps(entry).decode())
    return 200, {"stage": entry, "generation": generation, "workers": workers}


def _watched_files(plan: Any) -> list[str]:
    files = list(plan.files)
    import sys

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


def start_watch(interval: float = 0.3) -> threading.Thread:
    """--watch: reload when the config, an included OpenAPI document or a handler module changes."""
    from . import server

    def run() -> None:
        runtime = server.RUNTIME
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
                server.reload_config()
            except Exception:  # noqa: BLE001 - the watcher keeps watching
                log.exception("reload failed")
            seen = _mtimes(_watched_files(runtime.plan))

    thread = threading.Thread(target=run, name="fastgw-watch", daemon=True)
    thread.start()
    return thread


# -- `fastgw canary ...` ------------------------------------------------------------------------------
def _admin_call(base: str, token: str | None, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(f"{base.rstrip('/')}{path}", data=data, method=method)
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def cmd_canary(args: Any) -> int:
    import sys

    from .config.compile import load_plan
    from .config.loader import ConfigError, load_document
    from .openapi.commands import load_options

    path = args.config or os.environ.get("FASTGW_CONFIG")
    if not path:
        raise SystemExit("fastgw: give the gateway's config file with -c FILE (or FASTGW_CONFIG)")
    options = load_options(args)
    options.stage = None  # --stage names the canary's stage here
    try:
        plan = load_plan(load_document(path), options)
    except ConfigError as exc:
        print(f"fastgw: invalid config {exc}", file=sys.stderr)
        return 2
    server = plan.server
    host = "127.0.0.1" if server.adminHost in ("0.0.0.0", "::", "") else server.adminHost
    base = args.admin_url or f"http://{host}:{args.admin_port or server.adminPort}"
    token = args.admin_token or os.environ.get("FASTGW_ADMIN_TOKEN") or server.adminToken
    if args.op == "show":
        try:
            status, payload = _admin_call(base, token, "GET", "/canary", None)
        except OSError:
            status, payload = 200, {"items": describe(plan), "running": False}
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0 if status == 200 else 1
    if not (args.api and args.stage):
        raise SystemExit("fastgw: --api and --stage name the stage")
    fields: dict[str, Any] = {}
    if args.op == "set":
        if args.deployment is not None:
            fields["deployment"] = args.deployment
        if args.percent is not None:
            fields["percentTraffic"] = args.percent
        if args.override:
            from .openapi.commands import _pairs

            fields["stageVariableOverrides"] = _pairs(args.override, "--override")
        if args.use_stage_cache is not None:
            fields["useStageCache"] = args.use_stage_cache
    copy_variables = not getattr(args, "keep_variables", False)
    from urllib.parse import quote

    route = f"/canary/{quote(args.api, safe='')}/{quote(args.stage, safe='')}/{args.op}"
    try:
        status, payload = _admin_call(base, token, "POST", route, {**fields, "copyVariables": copy_variables})
    except OSError:
        # No gateway answers: store the change; the next `fastgw serve` starts with it.
        try:
            changed = change_canary(path, options, args.api, args.stage, args.op, fields, copy_variables)
        except CanaryError as exc:
            print(f"fastgw: {exc}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        entry = next((e for e in describe(changed) if (e["api"], e["stage"]) == (args.api, args.stage)), None)
        payload = {"stage": entry, "running": False}
        status = 200
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    if status != 200:
        return 1
    return 0


def add_parsers(commands: Any) -> None:
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="the gateway's config file (env FASTGW_CONFIG)")
    common.add_argument("--admin-url", help="the running gateway's admin API (default: from the config)")
    common.add_argument("--admin-port", type=int, help="the admin port (default: from the config)")
    common.add_argument("--admin-token", help="the admin token (env FASTGW_ADMIN_TOKEN)")
    stage = argparse.ArgumentParser(add_help=False)
    stage.add_argument("--api", help="the API")
    stage.add_argument("--stage", dest="stage", help="the stage")
    canary = commands.add_parser("canary", help="canary releases: show, set, promote, rollback (live in every "
                                                "worker; kept across restarts)")
    ops = canary.add_subparsers(dest="op", required=True)
    ops.add_parser("show", parents=[common], help="every stage's deployment and canary")
    set_op = ops.add_parser("set", parents=[common, stage], help="create or change a stage's canary")
    set_op.add_argument("--deployment", help="the canary's deployment")
    set_op.add_argument("--percent", type=float, help="percentTraffic, 0.0 - 100.0")
    set_op.add_argument("--override", action="append", metavar="NAME=VALUE",
                        help="a stage variable override for canary requests; repeatable")
    set_op.add_argument("--use-stage-cache", action=argparse.BooleanOptionalAction, default=None)
    promote = ops.add_parser("promote", parents=[common, stage],
                             help="the canary's deployment becomes the stage's; percentTraffic 0 (AWS)")
    promote.add_argument("--keep-variables", action="store_true",
                         help="do not copy the canary's stage variable overrides into the stage")
    ops.add_parser("rollback", parents=[common, stage], help="remove the canary: all traffic to the stage's deployment")
    for parser in ops.choices.values():
        parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="as for serve")
        parser.add_argument("--function", action="append", metavar="NAME=module:function", help="as for serve")
    canary.set_defaults(func=cmd_canary)
