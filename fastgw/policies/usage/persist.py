"""Durability of the local state, owned by the main process.

Workers count in the shared table only (an atomic add per request, no I/O). A thread of the main
process copies every quota counter to SQLite once a second, attributing what was added since the
last copy to the current UTC day (per-key daily usage, AWS GetUsage). So:

* a graceful stop loses nothing: the last copy is made after the workers have stopped;
* a crash of the whole gateway (kill -9) loses at most the last second of counts in the worst
  case; in practice nothing, because the table is a file: the next start finds it, saves what it
  holds, and only then replaces it with a fresh one restored from SQLite;
* quota changes (UpdateUsage) made while the gateway runs are queued in SQLite and applied here.

The state directory is locked (flock) while a gateway uses it, so two gateways never share one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ...state.shm import SharedTable
from ...state.store import Store
from .plan import UsageSetup, day_text, ident, period_of

log = logging.getLogger("fastgw.state")

INTERVAL = 1.0
LOCK_NAME = "lock"


def quota_ident(key_id: str, plan: str) -> int:
    return ident("quota", key_id, plan)


def lock_state_dir(state_dir: str) -> int | None:
    """Take the directory's lock; None when another gateway holds it."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def gateway_running(state_dir: str) -> bool:
    fd = lock_state_dir(state_dir)
    if fd is None:
        return True
    os.close(fd)  # closing drops the flock
    return False


def key_plan_pairs(setup: UsageSetup, store: Store) -> list[tuple[str, str]]:
    pairs = []
    for key in setup.keys:
        pairs.extend((key.id, plan) for plan in key.plans if plan in setup.plans)
    for record in store.list_keys():
        pairs.extend((record.id, plan) for plan in record.plans if plan in setup.plans)
    return pairs


def harvest(table: SharedTable, store: Store, pairs: list[tuple[str, str]],
            last: dict[tuple[str, str], tuple[int, int]], day: str) -> dict[tuple[str, str], tuple[int, int]]:
    """Save every counter of `table` that moved since `last` (updated in place); returns what changed."""
    quota: dict[tuple[str, str], tuple[int, int]] = {}
    daily: dict[tuple[str, str, str], int] = {}
    slots = table.slots
    for pair in pairs:
        slot = slots.lookup(quota_ident(*pair))
        if slot < 0:
            continue
        period, count = slots.count_get(slot)
        if period == 0:
            continue
        before = last.get(pair)
        if before == (period, count):
            continue
        if before is None or period > before[0]:
            delta = count  # a new period (or a counter never saved): all of it is new
        elif period == before[0]:
            delta = max(0, count - before[1])  # a drop is a quota change, not negative usage
        else:
            continue  # older than what is saved: nothing to learn
        quota[pair] = (period, count)
        if delta:
            daily[(*pair, day)] = daily.get((*pair, day), 0) + delta
        last[pair] = (period, count)
    store.save(quota, daily)
    return quota


class Persister:
    """The main process's side of the local state: the shared table's lifecycle and its copy to SQLite."""

    def __init__(self, get_setup: Callable[[], UsageSetup | None], interval: float = INTERVAL):
        self.get_setup = get_setup
        self.interval = interval
        self.setup = get_setup()
        assert self.setup is not None
        self.state_dir = self.setup.state_dir
        self.table: SharedTable | None = None
        self.store: Store | None = None
        self.last: dict[tuple[str, str], tuple[int, int]] = {}
        self.pairs: list[tuple[str, str]] = []
        self._keys_version = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self.durable = True  # False with the Redis backend: Redis holds the counts
        self.reconciler: Any = None  # Redis backend: pushes usage counted during an outage

    def start(self) -> None:
        """Before the workers start: lock the directory, recover a crashed table, map a fresh one."""
        fd = lock_state_dir(self.state_dir)
        if fd is None:
            raise RuntimeError(f"state directory {self.state_dir} is in use by another fastgw serve "
                               "(give each gateway its own state.path)")
        self._lock_fd = fd
        self.store = Store(self.state_dir)
        self.last = self.store.load_quota()
        self._refresh_pairs()
        old = SharedTable.open(self.state_dir)
        if old is not None and not self.durable:
            if self.reconciler is not None:
                self.reconciler.recover(old, self.pairs)
            old.close()
            old.remove()
        elif old is not None:
            saved = harvest(old, self.store, self.pairs, self.last, day_text(time.time()))
            log.warning("recovered %d quota counter(s) from a gateway that did not stop cleanly", len(saved))
            old.close()
            old.remove()
        self.table = SharedTable.create(self.state_dir)
        slots = self.table.slots
        for pair, (period, used) in (self.last.items() if self.durable else ()):
            slot = slots.find(quota_ident(*pair))
            if slot >= 0:
                slots.count_set(slot, period, used)
        self._apply_adjustments()
        self._thread = threading.Thread(target=self._run, name="fastgw-state", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """After the workers stopped: a last copy, then the table goes (a clean stop leaves none)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.tick()
        finally:
            if self.table is not None:
                self.table.close()
                self.table.remove()
                self.table = None
            if self.store is not None:
                self.store.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep persisting; the next tick retries
                log.exception("could not save the usage state")

    def _refresh_pairs(self) -> None:
        assert self.store is not None
        setup = self.get_setup() or self.setup
        version = self.store.keys_version()
        if version != self._keys_version or setup is not self.setup:
            self.setup = setup
            self._keys_version = version
            self.pairs = key_plan_pairs(setup, self.store)

    def tick(self) -> None:
        with self._lock:
            if self.table is None or self.store is None:
                return
            self._refresh_pairs()
            if self.durable:
                harvest(self.table, self.store, self.pairs, self.last, day_text(time.time()))
                self._apply_adjustments()
            if self.reconciler is not None:
                self.reconciler.tick(self.table, self.pairs)

    def _apply_adjustments(self) -> None:
        assert self.store is not None
        for key_id, plan, remaining in self.store.take_adjustments():
            self._set_remaining(key_id, plan, remaining)

    def _set_remaining(self, key_id: str, plan_name: str, remaining: int) -> None:
        assert self.table is not None and self.store is not None
        plan = self.setup.plans.get(plan_name)
        if plan is None or plan.quota is None:
            return
        period = period_of(plan.quota.period, time.time())
        used = max(0, plan.quota.limit - remaining)
        slot = self.table.slots.find(quota_ident(key_id, plan_name))
        if slot < 0:
            return
        # Usage already counted stays counted; the new count is saved without adding daily usage.
        harvest(self.table, self.store, [(key_id, plan_name)], self.last, day_text(time.time()))
        self.table.slots.count_set(slot, period, used)
        self.last[(key_id, plan_name)] = (period, used)
        self.store.save({(key_id, plan_name): (period, used)}, {})

    def set_remaining(self, key_id: str, plan: str, remaining: int) -> None:
        with self._lock:
            self._set_remaining(key_id, plan, remaining)

    def live_count(self, key_id: str, plan: str) -> tuple[int, int] | None:
        with self._lock:
            if self.table is None:
                return None
            slot = self.table.slots.lookup(quota_ident(key_id, plan))
            return self.table.slots.count_get(slot) if slot >= 0 else None


class MainState:
    """Everything the main process runs for the usage state: the persister (local backend), or the
    table's lifecycle plus the reconciler of usage counted while Redis was away (Redis backend)."""

    def __init__(self, get_setup: Callable[[], UsageSetup | None]):
        self.get_setup = get_setup
        self.persister = Persister(get_setup)
        self.reconciler: object | None = None

    def start(self) -> None:
        setup = self.get_setup()
        assert setup is not None
        if setup.state.backend == "redis":
            from .redis import Reconciler

            self.persister.durable = False
            reconciler = Reconciler(setup, self.persister)
            self.persister.reconciler = reconciler
            self.reconciler = reconciler
        self.persister.start()

    def stop(self) -> None:
        self.persister.stop()
        if self.reconciler is not None:
            self.reconciler.close()  # type: ignore[attr-defined]


CURRENT: MainState | None = None


def start_main_state(get_setup: Callable[[], UsageSetup | None]) -> MainState | None:
    """Called by `fastgw serve` before granian forks the workers; None when nothing needs state."""
    global CURRENT
    if get_setup() is None:
        return None
    state = MainState(get_setup)
    try:
        state.start()
    except RuntimeError as exc:
        raise SystemExit(f"fastgw: {exc}") from None
    CURRENT = state
    return state


def stop_main_state(state: MainState | None) -> None:
    """Called by `fastgw serve` after the workers stopped."""
    global CURRENT
    if state is not None:
        state.stop()
    CURRENT = None
