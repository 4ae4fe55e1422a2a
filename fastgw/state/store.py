"""The durable local store: one SQLite file under the state directory.

    api_keys     runtime-created keys (id, name, SHA-256 digest, plans, enabled); never the value
    quota        the latest (period, used) of each key's quota counter per plan
    usage_daily  requests per key, plan and UTC day (AWS GetUsage)
    adjustments  quota changes asked for (UpdateUsage) while a gateway runs; its main process
                 applies them to the shared table within a second
    meta         keys_version: bumped on every key change, so that running workers reload keys

WAL mode lets the CLI, the admin API, the main process's persister and the workers use the file
at once. Every process opens its own connection (SQLite connections do not survive a fork).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass

import orjson

FILE_NAME = "state.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, digest BLOB NOT NULL UNIQUE, plans TEXT NOT NULL,
    enabled INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS quota (
    key_id TEXT NOT NULL, plan TEXT NOT NULL, period INTEGER NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (key_id, plan));
CREATE TABLE IF NOT EXISTS usage_daily (
    key_id TEXT NOT NULL, plan TEXT NOT NULL, day TEXT NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (key_id, plan, day));
CREATE TABLE IF NOT EXISTS adjustments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL, plan TEXT NOT NULL, remaining INTEGER NOT NULL);
"""


@dataclass(slots=True)
class KeyRecord:
    id: str
    name: str
    digest: bytes
    plans: tuple[str, ...]
    enabled: bool
    created: float
    source: str = "runtime"  # "runtime" (this store) or "config" (the config file)

    def public(self) -> dict[str, object]:
        """What the CLI and the admin API show: never the value, nor its digest."""
        return {"id": self.id, "name": self.name, "usagePlans": list(self.plans), "enabled": self.enabled,
                "createdDate": int(self.created) if self.created else None, "source": self.source}


class Store:
    def __init__(self, state_dir: str):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, FILE_NAME)
        self._lock = threading.Lock()  # one connection, shared by the admin threads and the persister
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        with self._lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # -- keys ------------------------------------------------------------------------------------
    def keys_version(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT v FROM meta WHERE k = 'keys_version'").fetchone()
        return row[0] if row else 0

    def list_keys(self) -> list[KeyRecord]:
        with self._lock:
            rows = self.db.execute("SELECT id, name, digest, plans, enabled, created FROM api_keys ORDER BY created")
            return [KeyRecord(r[0], r[1], bytes(r[2]), tuple(orjson.loads(r[3])), bool(r[4]), r[5]) for r in rows]

    def insert_key(self, record: KeyRecord) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?)",
                                (record.id, record.name, record.digest, orjson.dumps(list(record.plans)).decode(),
                                 int(record.enabled), record.created))
                self._bump()
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def update_key(self, key_id: str, *, enabled: bool | None = None, delete: bool = False) -> bool:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if delete:
                    cur = self.db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
                else:
                    cur = self.db.execute("UPDATE api_keys SET enabled = ? WHERE id = ?", (int(bool(enabled)), key_id))
                if cur.rowcount:
                    self._bump()
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return cur.rowcount > 0

    def _bump(self) -> None:
        self.db.execute("INSERT INTO meta VALUES ('keys_version', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1")

    # -- quota counters and usage ------------------------------------------------------------------
    def load_quota(self) -> dict[tuple[str, str], tuple[int, int]]:
        with self._lock:
            rows = self.db.execute("SELECT key_id, plan, period, used FROM quota").fetchall()
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def save(self, quota: dict[tuple[str, str], tuple[int, int]], daily: dict[tuple[str, str, str], int]) -> None:
        """One transaction: the latest counters, and usage added per key, plan and day."""
        if not quota and not daily:
            return
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT INTO quota VALUES (?, ?, ?, ?) ON CONFLICT(key_id, plan) DO UPDATE SET "
                    "period = excluded.period, used = excluded.used",
                    [(k, p, period, used) for (k, p), (period, used) in quota.items()])
                self.db.executemany(
                    "INSERT INTO usage_daily VALUES (?, ?, ?, ?) ON CONFLICT(key_id, plan, day) DO UPDATE SET "
                    "used = used + excluded.used",
                    [(k, p, day, n) for (k, p, day), n in daily.items() if n])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def daily_usage(self, key_id: str, plan: str, first: str, last: str) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute(
                "SELECT day, used FROM usage_daily WHERE key_id = ? AND plan = ? AND day BETWEEN ? AND ?",
                (key_id, plan, first, last)).fetchall()
        return {r[0]: r[1] for r in rows}

    def queue_adjustment(self, key_id: str, plan: str, remaining: int) -> None:
        with self._lock:
            self.db.execute("INSERT INTO adjustments (key_id, plan, remaining) VALUES (?, ?, ?)",
                            (key_id, plan, remaining))

    def take_adjustments(self) -> list[tuple[str, str, int]]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                rows = self.db.execute("SELECT seq, key_id, plan, remaining FROM adjustments ORDER BY seq").fetchall()
                if rows:
                    self.db.execute("DELETE FROM adjustments WHERE seq <= ?", (rows[-1][0],))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return [(r[1], r[2], r[3]) for r in rows]
